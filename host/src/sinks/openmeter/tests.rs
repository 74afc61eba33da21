//! Pure tests of the retry decision and the delivery state machine (no I/O, no clock).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

use super::*;
use crate::queue::{Queue, QueueConfig};

fn headers(retry_after: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(Ok(v)) = retry_after.map(HeaderValue::from_str) {
        h.insert(RETRY_AFTER, v);
    }
    h
}

fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT)
}

#[test]
fn classify_maps_each_answer_to_its_action() {
    let none = headers(None);
    let now = at(0);
    for code in [200, 202, 204] {
        assert_eq!(
            classify(status(code), &none, 10, now),
            Action::Ack,
            "{code}"
        );
    }
    let problem = content_type("application/problem+json");
    for code in [400, 413, 422] {
        assert_eq!(
            classify(status(code), &problem, 2, now),
            Action::Split,
            "{code}"
        );
        assert_eq!(
            classify(status(code), &problem, 1, now),
            Action::DeadLetter,
            "{code}"
        );
    }
    for code in [408, 425, 429, 500, 502, 503, 504] {
        assert_eq!(
            classify(status(code), &none, 10, now),
            Action::Retry { after: None },
            "{code}"
        );
    }
    for code in [401, 403] {
        assert_eq!(
            classify(status(code), &none, 1, now),
            Action::Pause { auth: true }
        );
    }
    for code in [301, 302, 303, 307, 308, 404, 405, 415] {
        assert_eq!(
            classify(status(code), &none, 1, now),
            Action::Pause { auth: false },
            "{code}: a misconfiguration must never dead-letter data"
        );
    }
    assert_eq!(classify_transport_error(), Action::Retry { after: None });
}

fn content_type(value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(reqwest::header::CONTENT_TYPE, v);
    }
    h
}

#[test]
fn a_400_without_a_problem_body_is_a_refused_request_not_refused_events() {
    let now = at(0);
    // A proxy's or WAF's page, plain text, or no body type at all: nothing says the events
    // are invalid, so nothing may be dead-lettered on it.
    for ct in [
        "text/html",
        "text/html; charset=utf-8",
        "text/plain",
        "application/json",
    ] {
        for n in [1, 10] {
            assert_eq!(
                classify(status(400), &content_type(ct), n, now),
                Action::Pause { auth: false },
                "400 {ct} for {n} events"
            );
        }
    }
    assert_eq!(
        classify(status(400), &headers(None), 1, now),
        Action::Pause { auth: false }
    );
    // The ingest API's own answer, with or without parameters and in any case.
    for ct in [
        "application/problem+json",
        "Application/Problem+JSON; charset=utf-8",
    ] {
        assert_eq!(
            classify(status(400), &content_type(ct), 10, now),
            Action::Split,
            "{ct}"
        );
        assert_eq!(
            classify(status(400), &content_type(ct), 1, now),
            Action::DeadLetter,
            "{ct}"
        );
    }
    // 413 is about size whoever says it (a proxy's body limit): halves still fit.
    assert_eq!(
        classify(status(413), &content_type("text/html"), 10, now),
        Action::Split
    );
}

#[test]
fn retry_after_reads_seconds_and_http_dates() {
    let now = at(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
    assert_eq!(
        retry_after(&headers(Some("120")), now),
        Some(Duration::from_secs(120))
    );
    assert_eq!(
        retry_after(&headers(Some("Sun, 06 Nov 1994 08:50:07 GMT")), now),
        Some(Duration::from_secs(30))
    );
    // A date in the past means "now".
    assert_eq!(
        retry_after(&headers(Some("Sun, 06 Nov 1994 08:00:00 GMT")), now),
        Some(Duration::ZERO)
    );
    assert_eq!(retry_after(&headers(Some("soon")), now), None);
    assert_eq!(retry_after(&headers(Some("-5")), now), None);
    assert_eq!(retry_after(&headers(None), now), None);
    assert_eq!(
        classify(status(429), &headers(Some("7")), 3, now),
        Action::Retry {
            after: Some(Duration::from_secs(7))
        }
    );
}

#[test]
fn retry_delay_honours_the_server_but_never_exceeds_the_cap() {
    let s = Duration::from_secs;
    assert_eq!(retry_delay(s(2), None, s(300)), s(2));
    assert_eq!(retry_delay(s(2), Some(s(30)), s(300)), s(30));
    assert_eq!(retry_delay(s(40), Some(s(30)), s(300)), s(40));
    assert_eq!(retry_delay(s(2), Some(s(86_400)), s(300)), s(300));
    assert_eq!(retry_delay(s(900), None, s(300)), s(300));
}

#[test]
fn backoff_delays_are_jittered_from_zero_and_capped() {
    let mut config = OpenMeterConfig::new(
        reqwest::Url::parse("http://127.0.0.1:1").unwrap_or_else(|_| unreachable!()),
    );
    config.retry_initial = Duration::from_millis(100);
    config.retry_max = Duration::from_secs(1);
    let mut b = new_backoff(&config);
    let mut seen = Vec::new();
    for _ in 0..200 {
        let d = b.next_backoff().unwrap_or(Duration::MAX);
        seen.push(retry_delay(d, None, config.retry_max));
    }
    assert!(seen.iter().all(|d| *d <= Duration::from_secs(1)));
    // Full jitter: late delays (interval at the cap) spread over [0, cap], not bunched at it.
    let late = &seen[50..];
    assert!(
        late.iter().any(|d| *d < Duration::from_millis(500)),
        "{late:?}"
    );
    assert!(
        late.iter().any(|d| *d >= Duration::from_millis(500)),
        "{late:?}"
    );
}

#[test]
fn a_redirect_detail_names_the_location_and_the_variable_to_fix() {
    let location = HeaderValue::from_static("https://openmeter.example/api/v1/events");
    let detail = redirect_detail(Some(&location));
    assert!(
        detail.contains("https://openmeter.example/api/v1/events"),
        "{detail}"
    );
    assert!(detail.contains("OPENMETER_URL"), "{detail}");
    assert!(redirect_detail(None).contains("no Location header"));
}

#[test]
fn problem_detail_prefers_detail_then_title_then_the_body() {
    assert_eq!(
        problem_detail(
            r#"{"type":"about:blank","title":"Bad Request","status":400,"detail":"data must be an object"}"#
        ),
        "data must be an object"
    );
    assert_eq!(
        problem_detail(r#"{"title":"Unauthorized"}"#),
        "Unauthorized"
    );
    assert_eq!(problem_detail("  plain text \n"), "plain text");
    assert_eq!(problem_detail(&"x".repeat(10_000)).len(), 2000);
}

#[test]
fn config_reads_the_environment_names_and_go_durations() -> anyhow::Result<()> {
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        om: OpenMeterConfig,
    }
    let cli = Cli::try_parse_from([
        "x",
        "--openmeter-url",
        "https://openmeter.example/prefix/",
        "--openmeter-token",
        "s3cret",
        "--batch-size",
        "250",
        "--batch-period",
        "1m30s",
        "--request-timeout",
        "5s",
    ])?;
    assert_eq!(cli.om.batch_size, 250);
    assert_eq!(cli.om.batch_period, Duration::from_secs(90));
    assert_eq!(cli.om.request_timeout, Duration::from_secs(5));
    assert_eq!(
        cli.om.events_url().as_deref(),
        Some("https://openmeter.example/prefix/api/v1/events")
    );
    let shown = format!("{:?}", cli.om);
    assert!(
        !shown.contains("s3cret"),
        "token leaked into Debug: {shown}"
    );
    assert!(
        Cli::try_parse_from(["x", "--openmeter-url", "http://a", "--batch-size", "0"]).is_err()
    );
    assert!(
        Cli::try_parse_from(["x", "--openmeter-url", "http://a", "--batch-period", "ten"]).is_err()
    );
    let defaults = Cli::try_parse_from(["x", "--openmeter-url", "http://a"])?;
    assert_eq!(defaults.om.batch_size, 100);
    assert_eq!(defaults.om.batch_period, Duration::from_secs(10));
    Ok(())
}

/// Real queued events to drive the state machine with (the machine only moves them around).
fn queued(n: usize) -> anyhow::Result<(tempfile::TempDir, Vec<QueuedEvent>)> {
    let dir = tempfile::tempdir()?;
    let q = Queue::open(&QueueConfig::new(dir.path().join("q")))?;
    let events: Vec<_> = (0..n)
        .map(|i| crate::event::CloudEvent {
            specversion: "1.0".into(),
            id: format!("e{i}"),
            source: "s".into(),
            event_type: "t".into(),
            subject: "x".into(),
            time: "2026-01-01T00:00:00Z".into(),
            data: serde_json::Map::new(),
            extensions: Default::default(),
        })
        .collect();
    q.commit_window("s", 60, &events)?;
    let batch = q.peek(n)?;
    Ok((dir, batch))
}

fn answered(action: Action) -> Input {
    Input::Answered {
        action,
        status: Some(400),
        detail: "bad".into(),
    }
}

#[test]
fn a_full_batch_is_sent_at_once_and_acked() -> anyhow::Result<()> {
    let (_dir, ev) = queued(3)?;
    let (out, s) = start(3);
    assert_eq!(out, Output::Load { max: 3 });
    let (out, s) = step(s, Input::Loaded(ev.clone()), 3);
    assert_eq!(out, Output::Send(ev.clone()));
    let (out, s) = step(s, answered(Action::Ack), 3);
    assert_eq!(out, Output::Ack(ev));
    let (out, s) = step(s, Input::Done, 3);
    assert_eq!(out, Output::Load { max: 3 });
    assert_eq!(s, State::Load { lingered: false });
    Ok(())
}

#[test]
fn an_empty_queue_waits_and_a_partial_batch_lingers_once() -> anyhow::Result<()> {
    let (_dir, ev) = queued(2)?;
    let (_, s) = start(5);
    let (out, s) = step(s, Input::Loaded(vec![]), 5);
    assert_eq!(out, Output::WaitForEvents);
    let (out, s) = step(s, Input::Done, 5);
    assert_eq!(out, Output::Load { max: 5 });
    let (out, s) = step(s, Input::Loaded(ev.clone()), 5);
    assert_eq!(out, Output::Linger);
    let (out, s) = step(s, Input::Done, 5);
    assert_eq!(out, Output::Load { max: 5 });
    // After the batch period, a partial batch goes out.
    let (out, _) = step(s, Input::Loaded(ev.clone()), 5);
    assert_eq!(out, Output::Send(ev));
    Ok(())
}

#[test]
fn a_poisoned_batch_is_bisected_until_only_the_poison_is_dead_lettered() -> anyhow::Result<()> {
    let (_dir, ev) = queued(4)?;
    let poison = 2; // e2
    let (_, mut s) = start(4);
    let mut out;
    (out, s) = step(s, Input::Loaded(ev.clone()), 4);
    let (mut acked, mut dead) = (Vec::new(), Vec::new());
    for _ in 0..50 {
        let input = match &out {
            Output::Send(batch) => {
                let has_poison = batch.iter().any(|e| e.seq() == ev[poison].seq());
                answered(if !has_poison {
                    Action::Ack
                } else if batch.len() > 1 {
                    Action::Split
                } else {
                    Action::DeadLetter
                })
            }
            Output::Ack(batch) => {
                acked.extend(batch.iter().map(QueuedEvent::seq));
                Input::Done
            }
            Output::DeadLetter {
                events,
                status,
                reason,
            } => {
                assert_eq!((*status, reason.as_str()), (Some(400), "bad"));
                dead.extend(events.iter().map(QueuedEvent::seq));
                Input::Done
            }
            Output::Load { .. } => break,
            other => anyhow::bail!("unexpected {other:?}"),
        };
        (out, s) = step(s, input, 4);
    }
    assert_eq!(dead, vec![ev[poison].seq()]);
    let mut expected: Vec<u64> = ev.iter().map(QueuedEvent::seq).collect();
    expected.remove(poison);
    acked.sort_unstable();
    assert_eq!(acked, expected, "every healthy event acked exactly once");
    assert_eq!(s, State::Load { lingered: false });
    Ok(())
}

#[test]
fn a_batch_refused_event_by_event_pauses_and_resends_it_whole() -> anyhow::Result<()> {
    // Every slice refused down to single events, none accepted: the request is refused, not
    // the events. Nothing is dead-lettered; after the pause the whole batch is probed again.
    let (_dir, ev) = queued(4)?;
    let (_, mut s) = start(4);
    let mut out;
    (out, s) = step(s, Input::Loaded(ev.clone()), 4);
    let mut sends = 0;
    for _ in 0..50 {
        let input = match &out {
            Output::Send(batch) => {
                sends += 1;
                answered(if batch.len() > 1 {
                    Action::Split
                } else {
                    Action::DeadLetter
                })
            }
            Output::Pause { auth: false } => break,
            other => anyhow::bail!("unexpected {other:?} after {sends} sends"),
        };
        (out, s) = step(s, input, 4);
    }
    assert_eq!(out, Output::Pause { auth: false });
    assert_eq!(sends, 7, "4 + 2 + 1 slices of a bisection to the end");
    let (out, _) = step(s, Input::Done, 4);
    assert_eq!(out, Output::Send(ev), "probe again with the whole batch");
    Ok(())
}

#[test]
fn a_single_event_batch_refused_with_a_problem_is_dead_lettered() -> anyhow::Result<()> {
    let (_dir, ev) = queued(1)?;
    let (_, s) = start(1);
    let (_, s) = step(s, Input::Loaded(ev.clone()), 1);
    let (out, _) = step(s, answered(Action::DeadLetter), 1);
    assert_eq!(
        out,
        Output::DeadLetter {
            events: ev,
            status: Some(400),
            reason: "bad".into()
        }
    );
    Ok(())
}

#[test]
fn retries_and_pauses_resend_the_same_slice() -> anyhow::Result<()> {
    let (_dir, ev) = queued(2)?;
    let (_, s) = start(2);
    let (_, s) = step(s, Input::Loaded(ev.clone()), 2);
    let after = Some(Duration::from_secs(3));
    let (out, s) = step(s, answered(Action::Retry { after }), 2);
    assert_eq!(out, Output::Retry { after });
    let (out, s) = step(s, Input::Done, 2);
    assert_eq!(out, Output::Send(ev.clone()));
    let (out, s) = step(s, answered(Action::Pause { auth: true }), 2);
    assert_eq!(out, Output::Pause { auth: true });
    let (out, _) = step(s, Input::Done, 2);
    assert_eq!(out, Output::Send(ev));
    Ok(())
}

#[test]
fn shutdown_stops_from_any_state_and_wrong_inputs_stop_too() -> anyhow::Result<()> {
    let (_dir, ev) = queued(1)?;
    let (_, s) = start(1);
    assert_eq!(
        step(s.clone(), Input::Shutdown, 1),
        (Output::Stop, State::Stopped)
    );
    let (_, busy) = step(s.clone(), Input::Loaded(ev.clone()), 1);
    assert_eq!(
        step(busy.clone(), Input::Shutdown, 1),
        (Output::Stop, State::Stopped)
    );
    assert_eq!(
        step(State::Stopped, Input::Done, 1),
        (Output::Stop, State::Stopped)
    );
    assert_eq!(step(busy, Input::Loaded(ev), 1).1, State::Stopped);
    assert_eq!(step(s, answered(Action::Ack), 1).1, State::Stopped);
    Ok(())
}

#[test]
fn a_token_over_plain_http_to_a_remote_host_is_warned_about() -> anyhow::Result<()> {
    let warn = |url: &str, token: bool| -> anyhow::Result<Option<String>> {
        Ok(cleartext_token_warning(&reqwest::Url::parse(url)?, token))
    };
    for remote in [
        "http://openmeter.example",
        "http://10.0.0.7:8888/prefix",
        "http://[2001:db8::1]",
        "http://localhost.example.com",
    ] {
        let w = warn(remote, true)?;
        let text = w.unwrap_or_default();
        assert!(text.contains("OPENMETER_URL"), "{remote}: {text:?}");
        assert!(text.contains("https"), "{remote}: {text:?}");
    }
    for fine in [
        ("https://openmeter.example", true),
        ("http://openmeter.example", false),
        ("http://127.0.0.1:8888", true),
        ("http://127.8.9.10", true),
        ("http://[::1]:8888", true),
        ("http://localhost:8888", true),
        ("http://LOCALHOST", true),
    ] {
        assert_eq!(warn(fine.0, fine.1)?, None, "{fine:?}");
    }
    Ok(())
}

#[test]
fn delivery_refuses_a_url_it_cannot_post_to_naming_the_variable() -> anyhow::Result<()> {
    for bad in [
        "ftp://openmeter.example",
        "file:///tmp/events",
        "https://openmeter.example/?org=1",
        "https://openmeter.example/#x",
    ] {
        let err = Delivery::new(OpenMeterConfig::new(reqwest::Url::parse(bad)?));
        let text = err
            .as_ref()
            .map(|_| String::new())
            .unwrap_or_else(|e| e.to_string());
        assert!(
            matches!(err, Err(SinkError::InvalidUrl { .. })),
            "{bad}: {text}"
        );
        assert!(text.contains("OPENMETER_URL"), "{text}");
    }
    let mut none = OpenMeterConfig::new(reqwest::Url::parse("https://openmeter.example")?);
    none.url = None;
    assert!(matches!(Delivery::new(none), Err(SinkError::MissingUrl)));
    let ok = Delivery::new(OpenMeterConfig::new(reqwest::Url::parse(
        "https://openmeter.example/prefix/",
    )?))?;
    assert_eq!(
        ok.events_url(),
        "https://openmeter.example/prefix/api/v1/events"
    );
    Ok(())
}

#[test]
fn a_ca_bundle_that_is_missing_or_holds_no_certificate_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = OpenMeterConfig::new(reqwest::Url::parse("https://127.0.0.1:1")?);
    config.ca_bundle = Some(dir.path().join("missing.pem"));
    let missing = build_client(&config);
    assert!(
        matches!(missing, Err(SinkError::ReadCaBundle { .. })),
        "{missing:?}"
    );
    let text = missing.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(text.contains("OPENMETER_CA_BUNDLE"), "{text}");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n")?;
    config.ca_bundle = Some(empty);
    let err = build_client(&config);
    assert!(
        matches!(
            err,
            Err(SinkError::EmptyCaBundle { .. }) | Err(SinkError::ParseCaBundle { .. })
        ),
        "{err:?}"
    );
    config.ca_bundle = None;
    assert!(build_client(&config).is_ok());
    Ok(())
}
