//! The biller end to end, with real parts: the built-in WASM mapper (and the hostile one), a
//! real sled queue in a temporary directory, and pods with known allocation intervals. The sum
//! of billed `duration_seconds` per pod must equal its true allocation inside the billed span,
//! across consecutive windows, restarts, downtime catch-ups, mapper failures and a full queue.
//! Windows lie on the 15 s grid from T0 (itself on the grid): a tick at `now` bills up to the
//! last boundary at or before `now`.

use std::collections::BTreeMap;

use edgemeter::accounting::{self, Observations};
use edgemeter::daemon::{Biller, Idle, MeteredSource, Plan, TickOutcome};
use edgemeter::mapper::bindings::{Item, SourceKind};
use edgemeter::mapper::{LoadedMapper, MapperLimits, MapperRuntime, builtin};
use edgemeter::metrics::Metrics;
use edgemeter::queue::{LedgerWrites, Queue, QueueConfig};
use edgemeter::snapshot::{self, Identity, PodObject};
use edgemeter::window::Window;
use edgemeter_tests::{hostile_wasm, shared_cache_dir};
use serde_json::{Value, json};

const T0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

fn rfc(t: i64) -> String {
    edgemeter::window::rfc3339(t)
}

/// A pod scheduled at `from` (relative to T0), finished at `until` (None = running).
fn pod(name: &str, from: i64, until: Option<i64>, cpu: &str) -> PodObject {
    pod_with(name, from, until, json!({"cpu": cpu}), json!({}))
}

/// [`pod`] with these container requests and pod annotations.
fn pod_with(
    name: &str,
    from: i64,
    until: Option<i64>,
    requests: Value,
    annotations: Value,
) -> PodObject {
    let mut status = json!({
        "phase": "Running",
        "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": rfc(T0 + from)}],
    });
    if let Some(u) = until {
        status["phase"] = json!("Succeeded");
        status["containerStatuses"] = json!([{"name": "c", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "finishedAt": rfc(T0 + u)}}}]);
    }
    PodObject::from_value(json!({
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"), "annotations": annotations},
        "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": requests}}]},
        "status": status,
    }))
    .expect("pod")
}

struct FixedSource {
    pods: Vec<PodObject>,
    in_sync: bool,
    forgotten: Vec<String>,
    /// Per window start, inputs the source could not turn into items.
    unreadable: BTreeMap<i64, Vec<(String, serde_json::Value)>>,
}

impl MeteredSource for FixedSource {
    fn name(&self) -> &str {
        "kubernetes"
    }
    fn kind(&self) -> SourceKind {
        SourceKind::Kubernetes
    }
    fn in_sync(&self) -> bool {
        self.in_sync
    }
    fn items(&self, window: &Window) -> Vec<Item> {
        let env = snapshot::envelope(SourceKind::Kubernetes, window, &Identity::default(), "{}");
        snapshot::pod_snapshot(env, &self.pods, &BTreeMap::new(), false)
            .0
            .items
    }
    fn dead_letters(&self, window: &Window) -> Vec<(String, serde_json::Value)> {
        self.unreadable
            .get(&window.start())
            .cloned()
            .unwrap_or_default()
    }
    fn forget_billed(&mut self, watermark: i64) {
        let (gone, kept): (Vec<PodObject>, Vec<PodObject>) = self.pods.drain(..).partition(|p| {
            accounting::allocation(&p.pod, &Observations::default(), None)
                .ok()
                .flatten()
                .and_then(|a| a.interval.until)
                .is_some_and(|u| u <= watermark)
        });
        self.forgotten
            .extend(gone.into_iter().filter_map(|p| p.pod.metadata.name));
        self.pods = kept;
    }
}

fn source() -> FixedSource {
    FixedSource {
        pods: vec![
            pod("short", 3, Some(7), "100m"), // shorter than an interval
            pod("spanning", 10, Some(95), "250m"),
            pod("running", 20, None, "1"),
            pod("late", 130, Some(200), "500m"), // starts after the first windows
        ],
        in_sync: true,
        forgotten: vec![],
        unreadable: BTreeMap::new(),
    }
}

fn mapper(wasm: &[u8], name: &str) -> LoadedMapper {
    MapperRuntime::new(MapperLimits::default(), Some(shared_cache_dir()))
        .expect("runtime")
        .load(name, wasm)
        .expect("mapper loads")
}

fn builtin_mapper() -> LoadedMapper {
    mapper(builtin::KUBERNETES_WASM, builtin::KUBERNETES)
}

fn plan() -> Plan {
    Plan {
        interval: 15,
        max_window: 3600,
        settle: 0,
    }
}

fn biller(queue: &Queue, m: LoadedMapper, config: &str) -> Biller {
    Biller::new(
        plan(),
        m,
        queue.clone(),
        Identity::default(),
        config.to_owned(),
        "kubernetes",
        T0,
    )
    .expect("biller")
}

/// Drains the queue: (pod name → total duration_seconds, pod name → total cpu millicore-seconds).
fn drain(queue: &Queue) -> (BTreeMap<String, u64>, BTreeMap<String, u64>, usize) {
    let mut secs = BTreeMap::new();
    let mut cpu = BTreeMap::new();
    let mut n = 0;
    loop {
        let batch = queue.peek(1000).expect("peek");
        if batch.is_empty() {
            break;
        }
        for e in &batch {
            let v: Value = serde_json::from_slice(e.json()).expect("json");
            let name = v["data"]["pod_name"].as_str().expect("pod_name").to_owned();
            *secs.entry(name.clone()).or_insert(0) +=
                v["data"]["duration_seconds"].as_u64().expect("int");
            *cpu.entry(name).or_insert(0) += v["data"]["cpu_request_millicores_per_second"]
                .as_u64()
                .expect("int");
            n += 1;
        }
        queue.ack(&batch).expect("ack");
    }
    (secs, cpu, n)
}

/// The grid boundary at or before `t` (relative to T0).
fn grid(t: i64) -> i64 {
    t - t.rem_euclid(15)
}

fn truth(until: i64) -> BTreeMap<String, u64> {
    // Allocation of each pod inside [T0, T0 + until), by hand from the intervals above.
    let clip = |from: i64, to: Option<i64>| {
        let to = to.unwrap_or(until).min(until);
        u64::try_from((to - from.min(to)).max(0)).expect("non-negative")
    };
    [
        ("short", clip(3, Some(7))),
        ("spanning", clip(10, Some(95))),
        ("running", clip(20, None)),
        ("late", clip(130, Some(200))),
    ]
    .into_iter()
    .filter(|(_, s)| *s > 0)
    .map(|(n, s)| (n.to_owned(), s))
    .collect()
}

#[test]
fn consecutive_ticks_bill_every_second_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = Queue::open(&QueueConfig::new(dir.path())).expect("queue");
    let mut b = biller(&queue, builtin_mapper(), "{}");
    let mut src = source();
    let mut billed = 0;
    for now in [5, 17, 40, 41, 100, 150, 250] {
        match b.tick(&mut src, T0 + now) {
            TickOutcome::Billed {
                windows, watermark, ..
            } => {
                assert_eq!(watermark, T0 + grid(now), "tick at {now}");
                billed += windows;
            }
            // No boundary passed since the last tick.
            TickOutcome::Idle(Idle::NothingNew) => assert!(matches!(now, 5 | 41), "tick at {now}"),
            other => panic!("tick at {now}: {other:?}"),
        }
    }
    assert_eq!(billed, 16, "[0, 240) in 15 s windows");
    assert!(matches!(
        b.tick(&mut src, T0 + 250),
        TickOutcome::Idle(Idle::NothingNew)
    ));
    let (secs, cpu, _) = drain(&queue);
    assert_eq!(secs, truth(240));
    assert_eq!(cpu["spanning"], 250 * 85, "millicore-seconds too");
    assert_eq!(cpu["running"], 1000 * 220);
    assert_eq!(queue.watermark("kubernetes").expect("wm"), Some(T0 + 240));
    // Finished pods billed to their end are forgotten; the running one is kept.
    src.forgotten.sort();
    assert_eq!(src.forgotten, ["late", "short", "spanning"]);
}

/// Issue "Exactly once", scenario 2: the first start's watermark is stored before any window,
/// so a collector killed before its first commit resumes from where it first started.
#[test]
fn a_first_start_is_stored_before_the_first_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let queue = Queue::open(&QueueConfig::new(dir.path())).expect("queue");
        let b = biller(&queue, builtin_mapper(), "{}");
        assert_eq!(b.watermark(), T0);
        assert_eq!(queue.watermark("kubernetes").expect("wm"), Some(T0));
        // Killed before the first window is committed.
    }
    let queue = Queue::open(&QueueConfig::new(dir.path())).expect("reopen");
    let mut b = Biller::new(
        plan(),
        builtin_mapper(),
        queue.clone(),
        Identity::default(),
        "{}".into(),
        "kubernetes",
        T0 + 300,
    )
    .expect("biller");
    assert_eq!(b.watermark(), T0, "not the second start's time");
    let mut src = source();
    for _ in 0..5 {
        if matches!(
            b.tick(&mut src, T0 + 250),
            TickOutcome::Idle(Idle::NothingNew)
        ) {
            break;
        }
    }
    assert_eq!(
        drain(&queue).0,
        truth(240),
        "the span before the kill is billed"
    );
}

#[test]
fn a_restart_resumes_from_the_stored_watermark() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let queue = Queue::open(&QueueConfig::new(dir.path())).expect("queue");
        let mut b = biller(&queue, builtin_mapper(), "{}");
        assert!(matches!(
            b.tick(&mut source(), T0 + 60),
            TickOutcome::Billed { .. }
        ));
    }
    let queue = Queue::open(&QueueConfig::new(dir.path())).expect("reopen");
    let mut b = biller(&queue, builtin_mapper(), "{}");
    assert_eq!(
        b.watermark(),
        T0 + 60,
        "not the start time: the stored watermark"
    );
    assert!(matches!(
        b.tick(&mut source(), T0 + 250),
        TickOutcome::Billed { windows: 12, .. }
    ));
    let (secs, _, _) = drain(&queue);
    assert_eq!(
        secs,
        truth(240),
        "no second billed twice or lost across the restart"
    );
}

#[test]
fn a_long_downtime_is_caught_up_in_grid_windows_at_most_max_window_per_tick() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = Queue::open(&QueueConfig::new(dir.path())).expect("queue");
    let mut b = Biller::new(
        Plan {
            interval: 15,
            max_window: 60,
            settle: 0,
        },
        builtin_mapper(),
        queue.clone(),
        Identity::default(),
        "{}".into(),
        "kubernetes",
        T0,
    )
    .expect("biller");
    let mut src = source();
    let mut ticks = Vec::new();
    for _ in 0..10 {
        match b.tick(&mut src, T0 + 250) {
            TickOutcome::Billed { windows, .. } => ticks.push(windows),
            TickOutcome::Idle(Idle::NothingNew) => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        ticks,
        [4, 4, 4, 4],
        "[0, 240) in 15 s windows, 60 s per tick"
    );
    let (secs, _, events) = drain(&queue);
    assert_eq!(secs, truth(240));
    assert!(events > 16, "fine-grained events, one per pod per window");
}

#[test]
fn nothing_is_billed_while_the_source_is_out_of_sync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = Queue::open(&QueueConfig::new(dir.path())).expect("queue");
    let mut b = biller(&queue, builtin_mapper(), "{}");
    let mut src = source();
    src.in_sync = false;
    assert!(matches!(
        b.tick(&mut src, T0 + 100),
        TickOutcome::Idle(Idle::NotInSync)
    ));
    assert_eq!(b.watermark(), T0);
    src.in_sync = true;
    assert!(matches!(
        b.tick(&mut src, T0 + 100),
        TickOutcome::Billed { .. }
    ));
    assert_eq!(
        drain(&queue).0,
        truth(90),
        "the outage is covered by the next windows"
    );
}

#[test]
fn a_failing_mapper_keeps_the_watermark_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = Queue::open(&QueueConfig::new(dir.path())).expect("queue");
    let mut bad = biller(&queue, mapper(&hostile_wasm(), "hostile"), "trap");
    let mut src = source();
    match bad.tick(&mut src, T0 + 100) {
        TickOutcome::MapperFailed {
            windows: 0,
            watermark,
            ..
        } => assert_eq!(watermark, T0),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        queue.watermark("kubernetes").expect("wm"),
        Some(T0),
        "nothing committed but the first start"
    );
    assert_eq!(drain(&queue).2, 0);
    // The operator fixes the mapper: the whole span is billed.
    let mut good = biller(&queue, builtin_mapper(), "{}");
    assert!(matches!(
        good.tick(&mut src, T0 + 100),
        TickOutcome::Billed { .. }
    ));
    assert_eq!(drain(&queue).0, truth(90));
}

#[test]
fn a_full_queue_stops_windows_and_catches_up_after_delivery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = QueueConfig::new(dir.path());
    cfg.max_bytes = 1; // full as soon as anything is pending
    let queue = Queue::open(&cfg).expect("queue");
    let mut b = biller(&queue, builtin_mapper(), "{}");
    let mut src = source();
    // The first window fills the queue; the second is refused at the same tick.
    match b.tick(&mut src, T0 + 40) {
        TickOutcome::QueueFull {
            windows: 1,
            watermark,
        } => assert_eq!(watermark, T0 + 15),
        other => panic!("{other:?}"),
    }
    match b.tick(&mut src, T0 + 100) {
        TickOutcome::QueueFull {
            windows: 0,
            watermark,
        } => assert_eq!(watermark, T0 + 15),
        other => panic!("{other:?}"),
    }
    // Each delivery frees space for one more window, until everything is billed.
    let mut secs: BTreeMap<String, u64> = BTreeMap::new();
    let mut rounds = 0;
    loop {
        for (k, v) in drain(&queue).0 {
            *secs.entry(k).or_insert(0) += v;
        }
        match b.tick(&mut src, T0 + 250) {
            TickOutcome::QueueFull { windows: 1, .. } => {}
            TickOutcome::Billed { windows: 1, .. } => {}
            TickOutcome::Idle(Idle::NothingNew) => break,
            other => panic!("{other:?}"),
        }
        rounds += 1;
        assert!(rounds < 50, "the catch-up does not end");
    }
    assert_eq!(rounds, 15, "one window per delivery: [15, 240)");
    assert_eq!(secs, truth(240));
}

/// A source with state to persist: every window it records one change (a record named after
/// the number of calls), and forgets its pending changes only when told they were committed.
struct StatefulSource {
    inner: FixedSource,
    pending: Vec<(Vec<u8>, Vec<u8>)>,
    handed: usize,
    changes: usize,
}

impl MeteredSource for StatefulSource {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn kind(&self) -> SourceKind {
        self.inner.kind()
    }
    fn in_sync(&self) -> bool {
        self.inner.in_sync()
    }
    fn items(&self, window: &Window) -> Vec<Item> {
        self.inner.items(window)
    }
    fn forget_billed(&mut self, watermark: i64) {
        self.inner.forget_billed(watermark);
    }
    fn ledger_writes(&mut self) -> LedgerWrites {
        self.changes += 1;
        self.pending
            .push((format!("k{}", self.changes).into_bytes(), b"v".to_vec()));
        self.handed = self.pending.len();
        LedgerWrites {
            removes: vec![],
            puts: self.pending.clone(),
        }
    }
    fn ledger_committed(&mut self) {
        self.pending.drain(..self.handed);
    }
}

/// A full queue refuses a window before it is mapped or its state taken; the next window
/// that commits writes the state.
#[test]
fn a_window_the_full_queue_refuses_takes_no_state_and_a_later_one_writes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = QueueConfig::new(dir.path());
    cfg.max_bytes = 1;
    let queue = Queue::open(&cfg).expect("queue");
    let mut b = biller(&queue, builtin_mapper(), "{}");
    let mut src = StatefulSource {
        inner: source(),
        pending: vec![],
        handed: 0,
        changes: 0,
    };
    let stored = |q: &Queue| -> Vec<String> {
        q.ledger_records("kubernetes")
            .expect("records")
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect()
    };
    assert!(matches!(
        b.tick(&mut src, T0 + 15),
        TickOutcome::Billed { windows: 1, .. }
    ));
    assert_eq!(stored(&queue), ["k1"]);
    assert!(matches!(
        b.tick(&mut src, T0 + 100),
        TickOutcome::QueueFull { windows: 0, .. }
    ));
    assert_eq!(
        stored(&queue),
        ["k1"],
        "nothing written with a refused window"
    );
    // The queue refuses before the window is mapped, so the source is not even asked for its
    // changes. (Changes handed to a commit that then fails stay pending in the source:
    // `sources::kubernetes::source` tests `stale_records_and_changes_are_written_until_a_commit_is_confirmed`.)
    assert_eq!(
        src.changes, 1,
        "a refused window asked for the source's state"
    );
    assert!(src.pending.is_empty());
    drain(&queue);
    assert!(matches!(
        b.tick(&mut src, T0 + 30),
        TickOutcome::Billed { windows: 1, .. }
    ));
    assert_eq!(stored(&queue), ["k1", "k2"]);
    assert!(src.pending.is_empty());
}

/// All events committed so far, in queue order, as JSON values.
fn committed(queue: &Queue) -> Vec<Value> {
    queue
        .peek(10_000)
        .expect("peek")
        .iter()
        .map(|e| serde_json::from_slice(e.json()).expect("json"))
        .collect()
}

/// A window mapped one item per call (the built-in mapper declares its items independent)
/// commits exactly the events, in the same order, that one call per window commits.
#[test]
fn a_window_mapped_in_slices_commits_the_events_of_one_call() {
    let whole_dir = tempfile::tempdir().expect("tempdir");
    let whole = Queue::open(&QueueConfig::new(whole_dir.path())).expect("queue");
    let sliced_dir = tempfile::tempdir().expect("tempdir");
    let sliced = Queue::open(&QueueConfig::new(sliced_dir.path())).expect("queue");
    let mut one_call = biller(&whole, builtin_mapper(), "{}");
    let mut per_item = biller(&sliced, builtin_mapper(), "{}");
    per_item.set_slice_items(1);
    let (mut a, mut b) = (source(), source());
    for now in [T0 + 40, T0 + 100, T0 + 220] {
        assert!(matches!(
            one_call.tick(&mut a, now),
            TickOutcome::Billed { .. }
        ));
        assert!(matches!(
            per_item.tick(&mut b, now),
            TickOutcome::Billed { .. }
        ));
    }
    let events = committed(&sliced);
    assert!(
        events.len() > 4,
        "too few events to compare: {}",
        events.len()
    );
    assert_eq!(events, committed(&whole));
    assert_eq!(drain(&sliced).0, truth(210));
}

/// A slice that fails after earlier slices of its window were staged: nothing of that window
/// becomes visible (not even after a reopen), the watermark stays at the window's start, and
/// a working mapper later bills every second once.
#[test]
fn a_failed_slice_leaves_no_part_of_its_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("q");
    let queue = Queue::open(&QueueConfig::new(&path)).expect("queue");
    let mut good = biller(&queue, builtin_mapper(), "{}");
    let mut src = source();
    assert!(matches!(
        good.tick(&mut src, T0 + 135),
        TickOutcome::Billed { .. }
    ));
    let before = committed(&queue);
    // "late" starts at +130 and comes after "running" in the snapshot: with one item per call
    // the window [135, 150) stages "running" then fails on "late".
    let mut bad = biller(&queue, mapper(&hostile_wasm(), "hostile"), "fail-item:late");
    bad.set_slice_items(1);
    match bad.tick(&mut src, T0 + 150) {
        TickOutcome::MapperFailed {
            windows: 0,
            watermark,
            error,
        } => {
            assert_eq!(watermark, T0 + 135);
            assert!(error.to_string().contains("refusing item late"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        committed(&queue),
        before,
        "a part of the failed window is visible"
    );
    assert_eq!(queue.watermark("kubernetes").expect("wm"), Some(T0 + 135));
    drop((good, bad));
    drop(queue);
    let queue = Queue::open(&QueueConfig::new(&path)).expect("reopen");
    assert_eq!(
        committed(&queue),
        before,
        "the reopen published staged events"
    );
    let mut good = biller(&queue, builtin_mapper(), "{}");
    assert!(matches!(
        good.tick(&mut src, T0 + 220),
        TickOutcome::Billed { .. }
    ));
    assert_eq!(drain(&queue).0, truth(210));
}

/// A mapper that declares its items independent but gives events of different items the same
/// id: each call alone is valid, the window is not (the ingest API would keep one event and
/// drop the others' usage). The window fails and nothing of it is committed.
#[test]
fn the_same_id_in_two_slices_fails_the_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = Queue::open(&QueueConfig::new(dir.path())).expect("queue");
    let mut b = biller(&queue, mapper(&hostile_wasm(), "hostile"), "fixed-id");
    b.set_slice_items(1);
    let mut src = source();
    match b.tick(&mut src, T0 + 100) {
        TickOutcome::MapperFailed {
            windows: 0, error, ..
        } => {
            assert!(error.to_string().contains("across slices"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        queue.watermark("kubernetes").expect("wm"),
        Some(T0),
        "only the first start is stored"
    );
    assert!(committed(&queue).is_empty());
}

// Containment (issue "Containment", scenario 1): one item that cannot be billed as it is must
// not stop the window, and with it every other tenant's billing. Ticks are on the 15 s grid:
// from T0, a tick at T0 + 90 bills the six windows up to T0 + 90.

/// The four pods of [`source`] and one more pod, `extra`, running from T0.
fn source_with(extra: PodObject) -> FixedSource {
    let mut s = source();
    s.pods.push(extra);
    s
}

/// The committed event of the pod named `name`, summed over the windows: its data fields of
/// the first event and the total `duration_seconds`.
fn event_of(events: &[Value], name: &str) -> Option<(Value, u64)> {
    let mine: Vec<&Value> = events
        .iter()
        .filter(|e| e["data"]["pod_name"] == name)
        .collect();
    let first = (*mine.first()?).clone();
    let secs = mine
        .iter()
        .map(|e| e["data"]["duration_seconds"].as_u64().expect("int"))
        .sum();
    Some((first, secs))
}

/// The truth of [`source`] up to T0 + 90 plus the extra pod's 90 s.
fn truth_with(extra: &str) -> BTreeMap<String, u64> {
    let mut t = truth(90);
    t.insert(extra.to_owned(), 90);
    t
}

/// A pod with a 70 KB `data.openmeter.io/x` annotation (the API allows 256 KiB of
/// annotations): the built-in mapper used to copy it into an event over the 64 KiB cap, the
/// host failed the snapshot, and no window was ever committed again.
#[test]
fn a_pod_with_a_70_kb_data_annotation_does_not_stop_the_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = Queue::open(&QueueConfig::new(dir.path())).expect("queue");
    let mut b = biller(&queue, builtin_mapper(), "{}");
    let mut src = source_with(pod_with(
        "poison",
        0,
        None,
        json!({"cpu": "200m"}),
        json!({"data.openmeter.io/x": "x".repeat(70 * 1024), "data.openmeter.io/team": "blue"}),
    ));
    match b.tick(&mut src, T0 + 90) {
        TickOutcome::Billed {
            windows: 6,
            watermark,
            ..
        } => assert_eq!(watermark, T0 + 90),
        other => panic!("{other:?}"),
    }
    let events = committed(&queue);
    let (poison, secs) = event_of(&events, "poison").expect("the poison pod is billed");
    assert_eq!(secs, 90);
    assert_eq!(poison["data"]["cpu_request_millicores"], 200);
    assert_eq!(poison["data"]["team"], "blue", "small annotations are kept");
    assert!(
        poison["data"].get("x").is_none(),
        "the 70 KB value is dropped"
    );
    assert_eq!(poison["data"]["annotations_dropped"], "x");
    assert_eq!(
        drain(&queue).0,
        truth_with("poison"),
        "every pod billed exactly"
    );
}

/// A malformed Run:ai annotation used to fail the pod's allocation: it was skipped (its CPU
/// and memory unbilled) with an ERROR every window. It is billed what can be computed.
#[test]
fn a_pod_with_an_unreadable_gpu_fraction_is_billed_its_cpu_memory_and_seconds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = Queue::open(&QueueConfig::new(dir.path())).expect("queue");
    let mut b = biller(&queue, builtin_mapper(), "{}");
    let mut src = source_with(pod_with(
        "bad-gpu",
        0,
        None,
        json!({"cpu": "500m", "memory": "1Gi"}),
        json!({"gpu-fraction": "x"}),
    ));
    assert!(matches!(
        b.tick(&mut src, T0 + 90),
        TickOutcome::Billed { windows: 6, .. }
    ));
    let events = committed(&queue);
    let (e, secs) = event_of(&events, "bad-gpu").expect("the pod is billed");
    assert_eq!(secs, 90);
    assert_eq!(e["data"]["cpu_request_millicores"], 500);
    assert_eq!(e["data"]["memory_request_bytes"], 1u64 << 30);
    assert_eq!(e["data"]["gpu_request_count"], 0);
    let problem = e["data"]["allocation_problem"].as_str().unwrap_or_default();
    assert!(problem.contains("gpu-fraction"), "{e}");
    assert_eq!(drain(&queue).0, truth_with("bad-gpu"));
}

/// A quantity too large to hold (an extended resource of 1e30) used to fail the pod's
/// allocation; its CPU and memory are billed, the unreadable resource is named.
#[test]
fn a_pod_with_an_overflowing_quantity_is_billed_its_cpu_and_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = Queue::open(&QueueConfig::new(dir.path())).expect("queue");
    let mut b = biller(&queue, builtin_mapper(), "{}");
    let mut src = source_with(pod_with(
        "huge",
        0,
        None,
        json!({"cpu": "250m", "memory": "64Mi", "example.com/widget": "1e30"}),
        json!({}),
    ));
    assert!(matches!(
        b.tick(&mut src, T0 + 90),
        TickOutcome::Billed { windows: 6, .. }
    ));
    let events = committed(&queue);
    let (e, secs) = event_of(&events, "huge").expect("the pod is billed");
    assert_eq!(secs, 90);
    assert_eq!(e["data"]["cpu_request_millicores"], 250);
    assert_eq!(e["data"]["memory_request_bytes"], 64u64 << 20);
    let problem = e["data"]["allocation_problem"].as_str().unwrap_or_default();
    assert!(problem.contains("example.com/widget"), "{e}");
    assert_eq!(drain(&queue).0, truth_with("huge"));
}

/// A mapper whose event for one item is invalid (data not a JSON object): the window used to
/// fail whole, every tick. The other items' events commit; the invalid one goes to the dead
/// letters with the reason, naming the pod.
#[test]
fn an_invalid_event_of_one_item_is_dead_lettered_and_the_window_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = Queue::open(&QueueConfig::new(dir.path())).expect("queue");
    let mut b = biller(
        &queue,
        mapper(&hostile_wasm(), "hostile"),
        "invalid-item:spanning",
    );
    let metrics = Metrics::new();
    b.set_items_rejected(metrics.billing.items_rejected.clone());
    let mut src = source();
    match b.tick(&mut src, T0 + 90) {
        TickOutcome::Billed {
            windows: 6,
            watermark,
            ..
        } => assert_eq!(watermark, T0 + 90),
        other => panic!("{other:?}"),
    }
    let subjects: Vec<String> = committed(&queue)
        .iter()
        .map(|e| e["subject"].as_str().unwrap_or_default().to_owned())
        .collect();
    // hostile-ok events carry the pod name as subject; "spanning" (10 to 95) is in all six
    // windows, "running" (from 20) in five.
    assert!(!subjects.iter().any(|s| s == "spanning"), "{subjects:?}");
    assert_eq!(subjects.iter().filter(|s| *s == "running").count(), 5);
    let letters = queue.dead_letters().expect("dead letters");
    assert_eq!(letters.len(), 6, "one per window of the invalid item");
    for l in &letters {
        assert_eq!(l.event["subject"], "spanning");
        assert_eq!(
            l.event["data"],
            json!([1, 2, 3]),
            "the event as the mapper made it"
        );
        assert!(
            l.reason.contains("data must be a JSON object"),
            "{}",
            l.reason
        );
        assert!(
            l.reason.contains("ns/spanning") && l.reason.contains("uid-spanning"),
            "{}",
            l.reason
        );
    }
    let text = metrics.encode().expect("metrics");
    assert!(
        text.contains(r#"edgemeter_items_rejected_total{reason="invalid_event"} 6"#),
        "{text}"
    );
    assert_eq!(queue.pending_events(), committed(&queue).len() as u64);
    // What an operator lists with `edgemeter queue dead-letters`.
    drop(b);
    drop(queue);
    let mut out = Vec::new();
    edgemeter::queue::cli::run_to(
        edgemeter::queue::cli::QueueArgs {
            queue_dir: dir.path().to_owned(),
            command: edgemeter::queue::cli::QueueCommand::DeadLetters { json: false },
        },
        &mut out,
    )
    .expect("queue dead-letters");
    let table = String::from_utf8(out).expect("utf-8");
    assert_eq!(table.lines().count(), 7, "{table}");
    assert!(
        table
            .lines()
            .skip(1)
            .all(|l| l.contains("\t-\thostile\t") && l.contains("rejected at billing")),
        "{table}"
    );
}

/// What a source read but could not turn into items (a database row whose value did not
/// convert) is kept as dead letters in the commit of its window, beside that window's events,
/// and counted; the windows around it commit as usual.
#[test]
fn a_sources_unreadable_inputs_are_dead_letters_of_their_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = Queue::open(&QueueConfig::new(dir.path())).expect("queue");
    let mut b = biller(&queue, builtin_mapper(), "{}");
    let metrics = Metrics::new();
    b.set_items_rejected(metrics.billing.items_rejected.clone());
    let mut src = source();
    let row = json!({"import": "calls", "key": [2], "row": {"id": 2, "at": "0000-00-00 00:00:00"}});
    src.unreadable.insert(
        T0 + 15,
        vec![(
            "SQL import calls: row [2] could not be read: column \"at\"".into(),
            row.clone(),
        )],
    );
    match b.tick(&mut src, T0 + 45) {
        TickOutcome::Billed {
            windows: 3,
            watermark,
            ..
        } => assert_eq!(watermark, T0 + 45),
        other => panic!("{other:?}"),
    }
    let letters = queue.dead_letters().expect("dead letters");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].event, row, "the input as the source read it");
    assert!(
        letters[0].reason.contains("row [2]"),
        "{}",
        letters[0].reason
    );
    let text = metrics.encode().expect("metrics");
    assert!(
        text.contains(r#"edgemeter_items_rejected_total{reason="unreadable_input"} 1"#),
        "{text}"
    );
    assert!(
        !committed(&queue).is_empty(),
        "the windows' events committed"
    );
}

/// The allocation problems are counted per item and window.
#[test]
fn incomplete_allocations_are_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = Queue::open(&QueueConfig::new(dir.path())).expect("queue");
    let mut b = biller(&queue, builtin_mapper(), "{}");
    let metrics = Metrics::new();
    b.set_items_rejected(metrics.billing.items_rejected.clone());
    let mut src = source_with(pod_with(
        "bad-gpu",
        0,
        None,
        json!({"cpu": "500m"}),
        json!({"gpu-fraction": "x", "edgemeter.dev/allocation-problem": "spoofed"}),
    ));
    src.pods.push(pod_with(
        "spoofer",
        0,
        None,
        json!({"cpu": "500m"}),
        json!({"edgemeter.dev/allocation-problem": "spoofed"}),
    ));
    assert!(matches!(
        b.tick(&mut src, T0 + 90),
        TickOutcome::Billed { windows: 6, .. }
    ));
    let text = metrics.encode().expect("metrics");
    assert!(
        text.contains(r#"edgemeter_items_rejected_total{reason="allocation_incomplete"} 6"#),
        "{text}"
    );
    let events = committed(&queue);
    let (spoofer, _) = event_of(&events, "spoofer").expect("billed");
    assert!(
        spoofer["data"].get("allocation_problem").is_none(),
        "only the host sets it"
    );
    let (bad, _) = event_of(&events, "bad-gpu").expect("billed");
    assert_ne!(bad["data"]["allocation_problem"], "spoofed");
}

// Issue "Containment", scenario 2: what a pod's owner may not choose, through the real WASM
// mapper.

/// Fields the built-in mapper writes only sometimes (a GPU model when the node has no product
/// label, the GPU resource, the estimate flag) used to be settable by `data.openmeter.io/*`
/// annotations: a tenant could make its usage look like a cheaper GPU or an estimate.
#[test]
fn annotations_cannot_spoof_billing_fields_through_the_wasm_mapper() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = Queue::open(&QueueConfig::new(dir.path())).expect("queue");
    let mut b = biller(&queue, builtin_mapper(), "{}");
    let mut src = source_with(pod_with(
        "spoofer",
        0,
        None,
        json!({"cpu": "1", "nvidia.com/gpu": "1"}),
        json!({
            "data.openmeter.io/gpu_type": "Tesla-T4",
            "data.openmeter.io/gpu_resource": "nvidia.com/gpu.shared",
            "data.openmeter.io/allocation_estimated": "true",
            "data.openmeter.io/cost_center": "cc-7",
        }),
    ));
    assert!(matches!(
        b.tick(&mut src, T0 + 90),
        TickOutcome::Billed { windows: 6, .. }
    ));
    let events = committed(&queue);
    let (e, secs) = event_of(&events, "spoofer").expect("billed");
    assert_eq!(secs, 90);
    let d = &e["data"];
    assert!(d.get("gpu_type").is_none(), "{d}");
    assert_eq!(d["gpu_resource"], "nvidia.com/gpu");
    assert!(d.get("allocation_estimated").is_none(), "{d}");
    assert_eq!(d["cost_center"], "cc-7");
    assert_eq!(d["gpu_request_count"], 1);
}

/// `openmeter.io/subject` lets whoever can edit a pod choose who pays; `subject_from:
/// namespace` bills the namespace instead, whatever the pod says.
#[test]
fn the_subject_can_be_the_namespace_whatever_the_pod_says() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = Queue::open(&QueueConfig::new(dir.path())).expect("queue");
    let mut b = biller(&queue, builtin_mapper(), r#"{"subject_from": "namespace"}"#);
    let mut src = source_with(pod_with(
        "payer-chooser",
        0,
        None,
        json!({"cpu": "1"}),
        json!({"openmeter.io/subject": "another-customer"}),
    ));
    match b.tick(&mut src, T0 + 90) {
        TickOutcome::Billed { windows: 6, .. } => {}
        other => panic!("{other:?}"),
    }
    let events = committed(&queue);
    assert!(!events.is_empty());
    assert!(events.iter().all(|e| e["subject"] == "ns"), "{events:?}");
    assert_eq!(drain(&queue).0, truth_with("payer-chooser"));
}
