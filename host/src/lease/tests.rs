use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;

use super::elector::{Action, Elector, Record};
use super::*;

fn config(identity: &str) -> LeaseConfig {
    LeaseConfig {
        name: "edgemeter".into(),
        namespace: "metering".into(),
        identity: identity.into(),
        duration: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_secs(2),
    }
}

fn marks(t: i64) -> BTreeMap<String, i64> {
    BTreeMap::from([("kubernetes".to_owned(), t)])
}

fn wall() -> Timestamp {
    Timestamp::from_second(1_800_000_000).expect("ts")
}

/// Applies an action's write as the API server would: returns the stored record and its
/// new resourceVersion, or `None` when the guard fails.
fn store(
    lease: &mut Option<(Record, String)>,
    action: &Action,
    next_rv: &mut u64,
) -> Option<Record> {
    let record = match (action, &*lease) {
        (Action::Create(r), None) => r.clone(),
        (
            Action::Update {
                record,
                resource_version,
            },
            Some((_, rv)),
        ) if rv == resource_version => record.clone(),
        _ => return None,
    };
    *next_rv += 1;
    *lease = Some((record.clone(), next_rv.to_string()));
    Some(record)
}

#[test]
fn only_one_of_two_replicas_holds_the_lease_and_the_other_takes_over_after_it_expires() {
    let t0 = Instant::now();
    let mut a = Elector::new(&config("a"));
    let mut b = Elector::new(&config("b"));
    let mut lease = None;
    let mut rv = 0;

    // a creates it; b, reading after, waits.
    let act = a.decide(lease.clone(), t0, wall(), &marks(100));
    let rec = store(&mut lease, &act, &mut rv).expect("created");
    a.written(rec, t0);
    assert!(a.is_leader(t0));
    assert_eq!(b.decide(lease.clone(), t0, wall(), &marks(0)), Action::Wait);
    assert!(!b.is_leader(t0));

    // a renews every 2 s with its advancing watermark; b keeps seeing changes and waits.
    for k in 1..=5u64 {
        let now = t0 + Duration::from_secs(2 * k);
        let act = a.decide(lease.clone(), now, wall(), &marks(100 + 15 * k as i64));
        let rec = store(&mut lease, &act, &mut rv).expect("renewed");
        a.written(rec, now);
        assert_eq!(
            b.decide(lease.clone(), now, wall(), &marks(0)),
            Action::Wait
        );
    }
    assert_eq!(
        lease.as_ref().map(|(r, _)| r.watermarks.clone()),
        Some(marks(175))
    );

    // a dies at +10 s. b has seen the last change at +10 s: it waits until +25 s.
    let dead = t0 + Duration::from_secs(10);
    assert!(
        !a.is_leader(dead + Duration::from_secs(10)),
        "a stops billing at its renew deadline"
    );
    assert_eq!(
        b.decide(
            lease.clone(),
            dead + Duration::from_secs(14),
            wall(),
            &marks(0)
        ),
        Action::Wait
    );
    let act = b.decide(
        lease.clone(),
        dead + Duration::from_secs(15),
        wall(),
        &marks(0),
    );
    let Action::Update { record, .. } = &act else {
        panic!("b should take over: {act:?}");
    };
    assert_eq!(record.holder.as_deref(), Some("b"));
    assert_eq!(record.transitions, 1);
    assert_eq!(record.watermarks, marks(175), "b inherits a's watermark");
    let rec = store(&mut lease, &act, &mut rv).expect("taken over");
    b.written(rec, dead + Duration::from_secs(15));
    assert!(b.is_leader(dead + Duration::from_secs(16)));
    assert_eq!(b.status().watermark("kubernetes"), Some(175));
}

#[test]
fn a_lost_race_is_a_conflict_and_the_leader_stops_before_another_may_take_over() {
    let t0 = Instant::now();
    let mut a = Elector::new(&config("a"));
    let mut b = Elector::new(&config("b"));
    let mut lease = None;
    let mut rv = 0;
    // Both read "no lease"; a creates first, b's create fails.
    let act_a = a.decide(None, t0, wall(), &marks(0));
    let act_b = b.decide(None, t0, wall(), &marks(0));
    let rec = store(&mut lease, &act_a, &mut rv).expect("a created");
    a.written(rec, t0);
    assert!(
        store(&mut lease, &act_b, &mut rv).is_none(),
        "b's create conflicts"
    );
    assert!(!b.is_leader(t0));

    // a can no longer reach the API server: every renewal fails. It bills until its renew
    // deadline (10 s after the start of its last successful write) and not after; b can take
    // over only 15 s after it last saw the record change.
    assert!(a.is_leader(t0 + Duration::from_millis(9_999)));
    assert!(!a.is_leader(t0 + Duration::from_secs(10)));
    assert_eq!(b.decide(lease.clone(), t0, wall(), &marks(0)), Action::Wait);
    assert!(matches!(
        b.decide(
            lease.clone(),
            t0 + Duration::from_secs(15),
            wall(),
            &marks(0)
        ),
        Action::Update { .. }
    ));
}

#[test]
fn a_replica_that_lost_the_lease_acquires_it_again_later() {
    let t0 = Instant::now();
    let mut a = Elector::new(&config("a"));
    let mut lease = None;
    let mut rv = 0;
    let act = a.decide(None, t0, wall(), &marks(0));
    let rec = store(&mut lease, &act, &mut rv).expect("created");
    a.written(rec, t0);
    // b took it over meanwhile.
    let (mut taken, rv_b) = lease.clone().expect("lease");
    taken.holder = Some("b".into());
    taken.renew_time = Some(Timestamp::from_second(1_800_000_100).expect("ts"));
    let later = t0 + Duration::from_secs(30);
    assert_eq!(
        a.decide(
            Some((taken.clone(), rv_b.clone())),
            later,
            wall(),
            &marks(0)
        ),
        Action::Wait
    );
    assert!(
        !a.is_leader(later),
        "seeing another holder ends a's leadership at once"
    );
    // b stops renewing: 15 s after a saw its last record, a takes it back.
    let act = a.decide(
        Some((taken.clone(), rv_b.clone())),
        later + Duration::from_secs(15),
        wall(),
        &marks(0),
    );
    let Action::Update { record, .. } = act else {
        panic!("a should take it back");
    };
    assert_eq!(record.holder.as_deref(), Some("a"));
    assert_eq!(record.transitions, taken.transitions + 1);
}

#[test]
fn a_released_lease_is_taken_at_once_with_the_final_watermark() {
    let t0 = Instant::now();
    let mut a = Elector::new(&config("a"));
    let mut b = Elector::new(&config("b"));
    let mut lease = None;
    let mut rv = 0;
    let act = a.decide(None, t0, wall(), &marks(90));
    let rec = store(&mut lease, &act, &mut rv).expect("created");
    a.written(rec, t0);
    assert_eq!(b.decide(lease.clone(), t0, wall(), &marks(0)), Action::Wait);
    // a commits up to 120, then releases.
    let released = a.release(wall(), &marks(120)).expect("a holds it");
    assert_eq!(released.holder, None);
    let (_, rv_now) = lease.clone().expect("lease");
    let rec = store(
        &mut lease,
        &Action::Update {
            record: released,
            resource_version: rv_now,
        },
        &mut rv,
    )
    .expect("released");
    a.written(rec, t0);
    assert!(!a.is_leader(t0));
    let act = b.decide(
        lease.clone(),
        t0 + Duration::from_millis(10),
        wall(),
        &marks(0),
    );
    let Action::Update { record, .. } = act else {
        panic!("b takes a released lease at once");
    };
    assert_eq!(record.watermarks, marks(120));
    // A follower never releases.
    assert_eq!(Elector::new(&config("c")).release(wall(), &marks(0)), None);
}

#[test]
fn records_round_trip_through_a_lease_and_keep_other_annotations() {
    let mut lease = Lease::default();
    lease.metadata.annotations = Some(BTreeMap::from([
        ("team".to_owned(), "billing".to_owned()),
        (
            format!("{WATERMARK_ANNOTATION_PREFIX}old"),
            "not a time".to_owned(),
        ),
    ]));
    let record = Record {
        holder: Some("edgemeter-0".into()),
        duration_seconds: 15,
        acquire_time: Some(wall()),
        renew_time: Some(wall()),
        transitions: 3,
        watermarks: marks(1_800_000_000),
    };
    record.apply(&mut lease);
    let annotations = lease.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(annotations.get("team").map(String::as_str), Some("billing"));
    assert_eq!(
        annotations
            .get("watermark.edgemeter.io/kubernetes")
            .map(String::as_str),
        Some("2027-01-15T08:00:00Z")
    );
    assert!(!annotations.contains_key("watermark.edgemeter.io/old"));
    assert_eq!(Record::from_lease(&lease), record);
    // An empty holder is no holder; a malformed watermark is ignored.
    let mut odd = lease.clone();
    if let Some(spec) = odd.spec.as_mut() {
        spec.holder_identity = Some(String::new());
    }
    odd.metadata.annotations = Some(BTreeMap::from([(
        "watermark.edgemeter.io/kubernetes".to_owned(),
        "yesterday".to_owned(),
    )]));
    let read = Record::from_lease(&odd);
    assert_eq!(read.holder, None);
    assert!(read.watermarks.is_empty());
}

#[test]
fn config_is_validated_naming_the_key() {
    let env = |k: &str| match k {
        "POD_NAMESPACE" => Some("metering".to_owned()),
        "POD_NAME" => Some("edgemeter-1".to_owned()),
        _ => None,
    };
    let no_file = |_: &Path| None;
    let on = LeaseArgs {
        leader_election: true,
        lease_name: "edgemeter".into(),
        lease_duration: "15s".into(),
        lease_renew_deadline: "10s".into(),
        lease_retry_period: "2s".into(),
        ..LeaseArgs::default()
    };
    let c = on.config(&env, &no_file).expect("valid").expect("on");
    assert_eq!(
        (c.namespace.as_str(), c.identity.as_str()),
        ("metering", "edgemeter-1")
    );
    assert_eq!(
        LeaseArgs {
            leader_election: false,
            ..on.clone()
        }
        .config(&env, &no_file)
        .expect("off"),
        None
    );
    let from_file = |p: &Path| {
        (p == Path::new("/var/run/secrets/kubernetes.io/serviceaccount/namespace"))
            .then(|| "sa-ns\n".to_owned())
    };
    let c = on.config(&|_| None, &from_file);
    assert!(matches!(c, Err(LeaseConfigError::NoIdentity)), "{c:?}");
    let c = LeaseArgs {
        lease_identity: Some("me".into()),
        ..on.clone()
    }
    .config(&|_| None, &from_file)
    .expect("valid")
    .expect("on");
    assert_eq!(c.namespace, "sa-ns");
    assert!(matches!(
        on.config(&|_| None, &no_file),
        Err(LeaseConfigError::NoNamespace)
    ));
    for (args, key) in [
        (
            LeaseArgs {
                lease_renew_deadline: "15s".into(),
                ..on.clone()
            },
            "EDGEMETER_LEASE_RENEW_DEADLINE",
        ),
        (
            LeaseArgs {
                lease_retry_period: "10s".into(),
                ..on.clone()
            },
            "EDGEMETER_LEASE_RETRY_PERIOD",
        ),
        (
            LeaseArgs {
                lease_duration: "soon".into(),
                ..on.clone()
            },
            "EDGEMETER_LEASE_DURATION",
        ),
        (
            LeaseArgs {
                lease_name: "Bad_Name".into(),
                ..on.clone()
            },
            "EDGEMETER_LEASE_NAME",
        ),
        (
            LeaseArgs {
                lease_namespace: Some("NS!".into()),
                ..on.clone()
            },
            "EDGEMETER_LEASE_NAMESPACE",
        ),
    ] {
        let e = args.config(&env, &no_file).expect_err("invalid");
        assert!(e.to_string().contains(key), "{e} should name {key}");
    }
}
