//! The real queue and the real OpenMeter sink against a real loopback receiver.

use std::time::Duration;

use edgemeter::http::{HttpState, readiness, serve};
use edgemeter::metrics::Metrics;
use edgemeter::queue::{CommitOutcome, Queue, QueueConfig};
use edgemeter::sinks::openmeter::{self, OpenMeterConfig, SinkError, Token, Url};
use edgemeter_tests::{REDIRECT_TARGET, Receiver, Reply, SYNTHETIC_SOURCE, synthetic_event};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(30);

struct Harness {
    _dir: tempfile::TempDir,
    queue: Queue,
    metrics: Metrics,
    shutdown: CancellationToken,
    sink: Option<JoinHandle<Result<(), SinkError>>>,
}

fn config(url: &str) -> anyhow::Result<OpenMeterConfig> {
    let mut c = OpenMeterConfig::new(Url::parse(url)?);
    c.token = Some(Token::new("test-token"));
    c.batch_size = 100;
    c.batch_period = Duration::from_millis(50);
    c.request_timeout = Duration::from_secs(5);
    c.retry_initial = Duration::from_millis(10);
    c.retry_max = Duration::from_secs(2);
    c.pause_retry = Duration::from_millis(50);
    Ok(c)
}

/// A queue with `windows` windows of `per_window` events committed.
fn filled(windows: i64, per_window: usize) -> anyhow::Result<(tempfile::TempDir, Queue)> {
    let dir = tempfile::tempdir()?;
    let queue = Queue::open(&QueueConfig::new(dir.path().join("q")))?;
    for k in 0..windows {
        let events: Vec<_> = (0..per_window).map(|i| synthetic_event(k, i, 0)).collect();
        let outcome = queue.commit_window(SYNTHETIC_SOURCE, (k + 1) * 60, &events)?;
        anyhow::ensure!(outcome == CommitOutcome::Committed);
    }
    Ok((dir, queue))
}

impl Harness {
    fn start(windows: i64, per_window: usize, config: OpenMeterConfig) -> anyhow::Result<Self> {
        let (dir, queue) = filled(windows, per_window)?;
        let metrics = Metrics::new();
        let shutdown = CancellationToken::new();
        let sink = tokio::spawn(openmeter::run(
            queue.clone(),
            config,
            metrics.clone(),
            shutdown.clone(),
        ));
        Ok(Harness {
            _dir: dir,
            queue,
            metrics,
            shutdown,
            sink: Some(sink),
        })
    }

    async fn drained(&self) -> bool {
        for _ in 0..3000 {
            if self.queue.pending_events() == 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    async fn stop(&mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(sink) = self.sink.take() {
            tokio::time::timeout(LIMIT, sink).await???;
        }
        Ok(())
    }

    fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let text = self.metrics.encode()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .ok_or_else(|| anyhow::anyhow!("no metric {name} in\n{text}"))
    }
}

fn expected_ids(windows: i64, per_window: usize) -> Vec<(String, String)> {
    let mut ids: Vec<_> = (0..windows)
        .flat_map(|k| {
            (0..per_window).map(move |i| (SYNTHETIC_SOURCE.to_owned(), format!("w{k}-e{i}")))
        })
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_every_event_in_batches_with_the_exact_headers_then_deletes_them()
-> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    let mut h = Harness::start(5, 50, config(&receiver.url())?)?;
    assert!(h.drained().await, "queue did not drain");
    h.stop().await?;
    let s = receiver.state();
    let got: Vec<_> = s.ingested.keys().cloned().collect();
    assert_eq!(got, expected_ids(5, 50));
    assert_eq!(s.copies(), 250, "no duplicates without failures");
    assert_eq!(s.requests.len(), 3, "250 events in batches of 100");
    for r in &s.requests {
        assert_eq!(
            r.content_type.as_deref(),
            Some("application/cloudevents-batch+json")
        );
        assert_eq!(r.authorization.as_deref(), Some("Bearer test-token"));
        assert!(r.ids.len() <= 100);
        assert_eq!(r.status, 204);
    }
    // Oldest first: the first request carries window 0.
    assert_eq!(s.requests[0].ids[0], "w0-e0");
    assert_eq!(h.metric("edgemeter_sink_events_delivered_total")?, 250.0);
    assert_eq!(h.queue.peek(10)?.len(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_ingestion_with_500_resends_the_whole_batch_and_dedupe_completes_it()
-> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    receiver.state().script.extend([
        Reply::PartialThen500,
        Reply::Status(503),
        Reply::PartialThen500,
    ]);
    let mut h = Harness::start(1, 30, config(&receiver.url())?)?;
    assert!(h.drained().await, "queue did not drain");
    h.stop().await?;
    let s = receiver.state();
    assert_eq!(
        s.ingested.keys().cloned().collect::<Vec<_>>(),
        expected_ids(1, 30)
    );
    let statuses: Vec<u16> = s.requests.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 503, 500, 204]);
    // Every attempt carried the same whole batch, byte for byte.
    assert!(s.requests.iter().all(|r| r.body == s.requests[0].body));
    assert_eq!(s.requests[0].ids.len(), 30);
    // The first half was ingested three times (two partial ingestions, one success).
    assert_eq!(
        s.ingested[&(SYNTHETIC_SOURCE.to_owned(), "w0-e0".to_owned())].len(),
        3
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_retried_until_the_receiver_comes_up() -> anyhow::Result<()> {
    // Reserve a loopback port, then free it: connecting to it is refused.
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await?
        .local_addr()?;
    let mut h = Harness::start(1, 10, config(&format!("http://{addr}"))?)?;
    let mut refused = 0.0;
    for _ in 0..3000 {
        refused = h
            .metric("edgemeter_sink_requests_total{result=\"transport_error\"}")
            .unwrap_or(0.0);
        if refused >= 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused >= 3.0, "sink did not retry refused connections");
    assert_eq!(
        h.queue.pending_events(),
        10,
        "nothing is deleted without a 2xx"
    );
    let receiver = Receiver::start_on(addr).await?;
    assert!(
        h.drained().await,
        "queue did not drain once the receiver came up"
    );
    h.stop().await?;
    assert_eq!(
        receiver
            .state()
            .ingested
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        expected_ids(1, 10)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_retry_after_is_honoured_before_the_resend() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    receiver.state().script.push_back(Reply::TooManyRequests {
        retry_after: "1".into(),
    });
    // Backoff alone would retry within ~20 ms; the server asked for one second.
    let mut h = Harness::start(1, 5, config(&receiver.url())?)?;
    assert!(h.drained().await, "queue did not drain");
    h.stop().await?;
    let s = receiver.state();
    assert_eq!(s.requests.len(), 2);
    assert_eq!((s.requests[0].status, s.requests[1].status), (429, 204));
    let waited = s.requests[1].at.duration_since(s.requests[0].at);
    assert!(
        waited >= Duration::from_millis(1000),
        "re-sent after only {waited:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_isolated_and_dead_lettered_while_the_rest_is_delivered()
-> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    receiver.state().poison_prefix = Some("w0-e13".into());
    let mut h = Harness::start(1, 40, config(&receiver.url())?)?;
    assert!(h.drained().await, "queue did not drain");
    h.stop().await?;
    let s = receiver.state();
    let mut expected = expected_ids(1, 40);
    expected.retain(|(_, id)| id != "w0-e13");
    assert_eq!(s.ingested.keys().cloned().collect::<Vec<_>>(), expected);
    assert_eq!(
        s.copies(),
        39,
        "healthy events are sent once they are in an accepted slice"
    );
    let dead = h.queue.dead_letters()?;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event["id"], "w0-e13");
    assert_eq!(dead[0].status, Some(400));
    assert_eq!(dead[0].reason, "refused with 400: poison or scripted");
    assert_eq!(h.metric("edgemeter_sink_events_dead_lettered_total")?, 1.0);
    // Bisection: log2(40) rounds of splitting, not one request per event.
    assert!(s.requests.len() < 20, "{} requests", s.requests.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_pauses_delivery_and_readiness_until_the_server_accepts_again() -> anyhow::Result<()>
{
    let receiver = Receiver::start().await?;
    receiver.state().default = Some(Reply::Status(401));
    let mut h = Harness::start(1, 10, config(&receiver.url())?)?;
    // No source runs here: stand in for one that has listed and bills, as in the daemon.
    h.metrics.billing.source_synced.set(1);
    h.metrics.billing.leader.set(1);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let http_addr = listener.local_addr()?;
    let http_stop = CancellationToken::new();
    let server = tokio::spawn(serve(
        listener,
        HttpState {
            queue: h.queue.clone(),
            metrics: h.metrics.clone(),
        },
        http_stop.clone(),
    ));
    let probes = receiver
        .wait_until(LIMIT, |s| {
            s.requests.iter().filter(|r| r.status == 401).count() >= 3
        })
        .await;
    assert!(probes, "sink did not keep probing while paused");
    let ready = get(http_addr, "/readyz").await?;
    assert_eq!(ready.0, 503, "{}", ready.1);
    assert!(ready.1.contains("paused"), "{}", ready.1);
    assert_eq!(get(http_addr, "/healthz").await?.0, 200);
    assert_eq!(
        h.queue.pending_events(),
        10,
        "a 401 must not delete or dead-letter anything"
    );
    assert!(h.queue.dead_letters()?.is_empty());
    assert_eq!(h.metric("edgemeter_sink_paused")?, 1.0);

    receiver.state().default = Some(Reply::Accept);
    assert!(
        h.drained().await,
        "queue did not drain after the token was accepted"
    );
    assert_eq!(h.metric("edgemeter_sink_paused")?, 0.0);
    assert_eq!(get(http_addr, "/readyz").await?.0, 200);
    let metrics = get(http_addr, "/metrics").await?;
    assert_eq!(metrics.0, 200);
    assert!(
        metrics
            .1
            .contains("edgemeter_sink_events_delivered_total 10"),
        "{}",
        metrics.1
    );
    assert!(
        metrics.1.contains("edgemeter_queue_pending_events 0"),
        "{}",
        metrics.1
    );
    assert!(
        metrics
            .1
            .contains("edgemeter_sink_requests_total{result=\"paused\"}"),
        "{}",
        metrics.1
    );
    h.stop().await?;
    http_stop.cancel();
    tokio::time::timeout(LIMIT, server).await???;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_pauses_delivery_and_keeps_the_batch_queued() -> anyhow::Result<()> {
    // A same-host 302: a client that follows it turns the POST into a GET of a page that
    // answers 200, and would take that for "ingested".
    let receiver = Receiver::start().await?;
    receiver.state().default = Some(Reply::Found {
        location: REDIRECT_TARGET.into(),
    });
    let mut h = Harness::start(1, 10, config(&receiver.url())?)?;
    let seen = receiver
        .wait_until(LIMIT, |s| {
            s.redirect_followed > 0 || s.requests.iter().filter(|r| r.status == 302).count() >= 3
        })
        .await;
    assert!(seen, "sink did not send or did not keep probing");
    assert_eq!(
        receiver.state().redirect_followed,
        0,
        "the sink followed the redirect (POST became GET)"
    );
    assert_eq!(
        h.queue.pending_events(),
        10,
        "a redirect must not delete or dead-letter anything"
    );
    assert!(h.queue.dead_letters()?.is_empty());
    assert_eq!(h.metric("edgemeter_sink_paused")?, 1.0);
    let (ready, reason) = readiness(&HttpState {
        queue: h.queue.clone(),
        metrics: h.metrics.clone(),
    });
    assert!(!ready, "readiness must show the pause");
    assert!(reason.contains("paused"), "{reason}");
    h.stop().await?;
    assert!(receiver.state().ingested.is_empty());
    Ok(())
}

/// Events that arrive one by one while the sink runs go out together: the sink holds a
/// partial batch for the batch period, collecting what comes meanwhile. The sink starts on an
/// empty queue and the three windows are committed 20 ms apart, so one request carrying all
/// three — sent after the last commit — is only possible if the sink waited (sending a
/// partial batch at once gives three requests). The period is long (1.5 s) against the 40 ms
/// of commits so that a loaded machine does not split the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_batch_waits_for_the_batch_period_and_goes_out_as_one_request()
-> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    let mut c = config(&receiver.url())?;
    c.batch_period = Duration::from_millis(1500);
    let mut h = Harness::start(0, 0, c)?;
    let mut last_commit = std::time::Instant::now();
    for k in 0..3 {
        if k > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let q = h.queue.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            q.commit_window(SYNTHETIC_SOURCE, (k + 1) * 60, &[synthetic_event(k, 0, 0)])
        })
        .await??;
        anyhow::ensure!(outcome == CommitOutcome::Committed);
        last_commit = std::time::Instant::now();
        assert!(
            receiver.state().requests.is_empty(),
            "a partial batch went out before the batch period"
        );
    }
    assert!(h.drained().await, "queue did not drain");
    h.stop().await?;
    let s = receiver.state();
    assert_eq!(s.requests.len(), 1, "one request for the three events");
    assert_eq!(s.requests[0].ids, ["w0-e0", "w1-e0", "w2-e0"]);
    assert!(
        s.requests[0].at >= last_commit,
        "sent after the last commit"
    );
    Ok(())
}

/// On shutdown the sink drains what is queued — the last window's events included — without
/// waiting for the batch period, and then stops (the daemon bounds how long it waits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_the_queue_at_once_including_a_partial_batch() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    let mut c = config(&receiver.url())?;
    c.batch_period = Duration::from_secs(3600);
    c.batch_size = 10;
    // 25 events: two full batches and a partial one the batch period would hold for an hour.
    let mut h = Harness::start(5, 5, c)?;
    let started = std::time::Instant::now();
    assert!(receiver.wait_until(LIMIT, |s| s.requests.len() >= 2).await);
    h.stop().await?;
    assert!(started.elapsed() < LIMIT, "stopped promptly");
    assert_eq!(h.queue.pending_events(), 0, "drained on shutdown");
    let s = receiver.state();
    let delivered: usize = s.requests.iter().map(|r| r.ids.len()).sum();
    assert_eq!(delivered, 25);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_a_long_backoff_returns_promptly_and_keeps_the_events() -> anyhow::Result<()>
{
    let receiver = Receiver::start().await?;
    receiver.state().default = Some(Reply::TooManyRequests {
        retry_after: "3600".into(),
    });
    let mut c = config(&receiver.url())?;
    c.retry_max = Duration::from_secs(3600);
    let mut h = Harness::start(1, 4, c)?;
    assert!(receiver.wait_until(LIMIT, |s| !s.requests.is_empty()).await);
    // stop() waits at most LIMIT: the hour-long Retry-After must not hold shutdown.
    h.stop().await?;
    assert_eq!(h.queue.pending_events(), 4);
    assert_eq!(receiver.state().requests.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_hangs_past_the_request_timeout_gets_the_batch_again() -> anyhow::Result<()>
{
    let receiver = Receiver::start().await?;
    receiver.state().delay = Duration::from_secs(2);
    let mut c = config(&receiver.url())?;
    c.request_timeout = Duration::from_millis(200);
    let mut h = Harness::start(1, 6, c)?;
    let mut timeouts = 0.0;
    for _ in 0..3000 {
        timeouts = h
            .metric("edgemeter_sink_requests_total{result=\"transport_error\"}")
            .unwrap_or(0.0);
        if timeouts >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(timeouts >= 2.0, "requests did not time out");
    assert_eq!(
        h.queue.pending_events(),
        6,
        "a timed-out batch is not deleted"
    );
    receiver.state().delay = Duration::ZERO;
    assert!(
        h.drained().await,
        "queue did not drain once the receiver answered in time"
    );
    h.stop().await?;
    let s = receiver.state();
    assert_eq!(
        s.ingested.keys().cloned().collect::<Vec<_>>(),
        expected_ids(1, 6)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_file_is_re_read_when_the_server_answers_401() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    // The server already wants the new token: the old one is revoked.
    receiver.state().required_token = Some("rotated-token".into());
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("token");
    std::fs::write(&file, "first-token\n")?;
    let mut c = config(&receiver.url())?;
    c.token = None;
    c.token_file = Some(file.clone());
    let mut h = Harness::start(1, 5, c)?;
    assert!(receiver.wait_until(LIMIT, |s| s.requests.len() >= 2).await);
    assert_eq!(h.queue.pending_events(), 5);
    // The Secret is rotated (kubelet rewrites the mounted file).
    std::fs::write(&file, "  rotated-token \n")?;
    assert!(h.drained().await, "queue did not drain after the rotation");
    h.stop().await?;
    let s = receiver.state();
    assert_eq!(
        s.requests[0].authorization.as_deref(),
        Some("Bearer first-token")
    );
    let accepted: Vec<_> = s.requests.iter().filter(|r| r.status == 204).collect();
    assert_eq!(accepted.len(), 1);
    assert_eq!(
        accepted[0].authorization.as_deref(),
        Some("Bearer rotated-token"),
        "the 401 made the sink re-read the token file"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_stopped_makes_readiness_false() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    let mut c = config(&receiver.url())?;
    let dir = tempfile::tempdir()?;
    c.ca_bundle = Some(dir.path().join("missing.pem"));
    let mut h = Harness::start(1, 3, c)?;
    let ended = tokio::time::timeout(
        LIMIT,
        h.sink.take().ok_or_else(|| anyhow::anyhow!("no sink"))?,
    )
    .await??;
    assert!(ended.is_err(), "the sink cannot run without its CA bundle");
    let (ready, reason) = readiness(&HttpState {
        queue: h.queue.clone(),
        metrics: h.metrics.clone(),
    });
    assert!(
        !ready,
        "nothing drains the queue, yet readiness says: {reason}"
    );
    assert!(reason.contains("delivery is not running"), "{reason}");
    assert_eq!(h.metric("edgemeter_sink_up")?, 0.0);
    assert_eq!(h.queue.pending_events(), 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_report_the_age_of_the_oldest_undelivered_event() -> anyhow::Result<()> {
    // Events of windows ending at 60 s, 120 s after the epoch: decades old.
    let (_dir, queue) = filled(2, 1)?;
    let metrics = Metrics::new();
    metrics.observe_queue(&queue);
    let text = metrics.encode()?;
    let lag: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("edgemeter_delivery_lag_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no delivery lag in\n{text}"))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    assert!((lag - (now.as_secs_f64() - 60.0)).abs() < 5.0, "lag {lag}");
    // Delivered: no lag.
    queue.ack(&queue.peek(10)?)?;
    metrics.observe_queue(&queue);
    assert!(
        metrics
            .encode()?
            .contains("edgemeter_delivery_lag_seconds 0\n")
    );
    Ok(())
}

/// A plain HTTP/1.1 GET over a loopback TCP stream: (status, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(LIMIT, stream.read_to_end(&mut response)).await??;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("bad response {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A proxy or WAF in front of the ingest API: `400 text/html` to every request, ingests nothing.
async fn html_400_proxy() -> anyhow::Result<(String, std::sync::Arc<std::sync::atomic::AtomicUsize>)>
{
    use axum::http::{StatusCode, header};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    let app = axum::Router::new().route(
        "/api/v1/events",
        axum::routing::post(move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                (
                    StatusCode::BAD_REQUEST,
                    [(header::CONTENT_TYPE, "text/html")],
                    "<html><body><h1>400 Bad Request</h1>Request blocked by the WAF</body></html>",
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, requests))
}

/// Waits until `pred` holds (up to [`LIMIT`]).
async fn eventually(mut pred: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + LIMIT;
    while tokio::time::Instant::now() < deadline {
        if pred() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_answering_400_html_to_everything_pauses_and_dead_letters_nothing()
-> anyhow::Result<()> {
    let (url, requests) = html_400_proxy().await?;
    let mut h = Harness::start(1, 40, config(&url)?)?;
    h.metrics.billing.source_synced.set(1);
    // Several probes, each answered 400: the sink keeps probing after its pause.
    let probed = eventually(|| requests.load(std::sync::atomic::Ordering::SeqCst) >= 3).await;
    assert!(probed, "the sink did not probe again after its pause");
    assert!(
        h.queue.dead_letters()?.is_empty(),
        "a proxy's 400 is no verdict on the events"
    );
    assert_eq!(h.queue.pending_events(), 40, "the queue is intact");
    assert_eq!(h.metric("edgemeter_sink_paused")?, 1.0);
    let (ready, reason) = readiness(&HttpState {
        queue: h.queue.clone(),
        metrics: h.metrics.clone(),
    });
    assert!(!ready, "{reason}");
    assert!(reason.contains("paused"), "{reason}");
    h.stop().await?;
    assert_eq!(h.queue.pending_events(), 40);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_problem_400_for_every_event_of_a_batch_pauses_instead_of_dead_lettering_it()
-> anyhow::Result<()> {
    // problem+json, but for every slice of the bisection down to single events: the request
    // is refused, not the events (a proxy speaking problem+json, a wrong endpoint version).
    let receiver = Receiver::start().await?;
    receiver.state().default = Some(Reply::Status(400));
    let mut h = Harness::start(1, 8, config(&receiver.url())?)?;
    let probed = receiver
        .wait_until(LIMIT, |s| {
            // The whole batch sent again after a pause.
            s.requests.iter().filter(|r| r.ids.len() == 8).count() >= 2
        })
        .await;
    assert!(probed, "the sink did not probe again with the whole batch");
    assert!(h.queue.dead_letters()?.is_empty());
    assert_eq!(h.queue.pending_events(), 8);
    assert_eq!(h.metric("edgemeter_sink_paused")?, 1.0);
    assert_eq!(h.metric("edgemeter_sink_events_dead_lettered_total")?, 0.0);
    h.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_at_their_bound_pause_the_sink_and_lose_nothing() -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    receiver.state().poison_prefix = Some("w0-e13".into());
    let dir = tempfile::tempdir()?;
    let mut qc = QueueConfig::new(dir.path().join("q"));
    qc.max_dead_bytes = 16; // less than any dead letter
    let queue = Queue::open(&qc)?;
    let events: Vec<_> = (0..40).map(|i| synthetic_event(0, i, 0)).collect();
    anyhow::ensure!(
        queue.commit_window(SYNTHETIC_SOURCE, 60, &events)? == CommitOutcome::Committed
    );
    let metrics = Metrics::new();
    metrics.billing.source_synced.set(1);
    let shutdown = CancellationToken::new();
    let sink = tokio::spawn(openmeter::run(
        queue.clone(),
        config(&receiver.url())?,
        metrics.clone(),
        shutdown.clone(),
    ));
    let mut h = Harness {
        _dir: dir,
        queue,
        metrics,
        shutdown,
        sink: Some(sink),
    };
    // The healthy events go out; the poison one stays queued, not moved aside.
    let delivered = receiver.wait_until(LIMIT, |s| s.distinct() == 39).await;
    assert!(delivered, "the healthy events were not delivered");
    let full = eventually(|| {
        h.metric("edgemeter_sink_dead_letters_full")
            .is_ok_and(|v| v == 1.0)
    })
    .await;
    assert!(full, "{}", h.metrics.encode()?);
    assert!(h.queue.dead_letters()?.is_empty());
    let left = h.queue.peek(10)?;
    assert_eq!(
        left.len(),
        1,
        "nothing lost: the poison event is still queued"
    );
    assert!(String::from_utf8_lossy(left[0].json()).contains("\"w0-e13\""));
    let (ready, reason) = readiness(&HttpState {
        queue: h.queue.clone(),
        metrics: h.metrics.clone(),
    });
    assert!(!ready, "{reason}");
    assert!(reason.contains("dead letters"), "{reason}");
    assert_eq!(h.metric("edgemeter_sink_events_dead_lettered_total")?, 0.0);
    h.stop().await?;
    assert_eq!(h.queue.pending_events(), 1);
    Ok(())
}
