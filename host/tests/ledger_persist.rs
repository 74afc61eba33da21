//! What persisting the ledger costs at 10k pods: bytes written per window (the first, full
//! write and steady state), how long the first write and the load at start take. Real pods from
//! a kind cluster (given fresh uids), the daemon's own encoding ([`ledger_writes`], [`restore`])
//! and a real sled queue in a temporary directory. Prints the figures; nothing is timed as an
//! assertion. For meaningful times:
//!
//! ```text
//! cargo test -p edgemeter --release --test ledger_persist -- --nocapture
//! ```
//!
//! Measured (release, 2-core VM), with the daemon's 2 MiB budget per commit: the first persist
//! is 10,000 records, 17.0 MiB in 9 commits, ~210 ms in total, RSS 30 → 75 MiB; steady state
//! (1% of pods updated, 10 created and 10 deleted per window) ~120 records put + 10 removed,
//! ~210 KiB, 3–5 ms per window; an idle window writes nothing; load at start 0.5–0.6 s (open +
//! read ~50 ms, the rest inflating and parsing each pod to recompute its interval). With the
//! whole ledger in one transaction (`LEDGER_BUDGET=100000000`) RSS went 30 → 148 MiB and
//! stayed there, whether sled's cache was 8 or 64 MiB.

mod common;

use common::{recorded_pods, rss_kib};
use std::time::Instant;

use edgemeter::queue::{Queue, QueueConfig};
use edgemeter::sources::kubernetes::config::Scope;
use edgemeter::sources::kubernetes::source::{
    LEDGER_BYTES_PER_COMMIT, SOURCE_NAME, ledger_committed, ledger_writes, restore,
};
use edgemeter::sources::kubernetes::{Change, Ledger, LedgerInput, Object, StreamId, WatchKind};
use serde_json::Value;

const PODS: usize = 10_000;
/// Unix seconds of the first window's end (after the recorded pods were scheduled).
const T: i64 = 1_900_000_000;

/// Pod `i` at `version` (a new resourceVersion and a changed annotation, as a status update
/// would bring).
fn pod(templates: &[Value], i: usize, version: u64) -> Object {
    let mut pod = templates[i % templates.len()].clone();
    pod["metadata"]["uid"] = format!("00000000-0000-0000-0000-{i:012}").into();
    pod["metadata"]["name"] = format!("pod-{i}").into();
    pod["metadata"]["resourceVersion"] = version.to_string().into();
    pod["metadata"]["annotations"]["example.com/revision"] = version.to_string().into();
    Object::from_value(pod).expect("a pod").expect("parses")
}

fn input(at: i64, change: Change) -> LedgerInput {
    LedgerInput {
        stream: StreamId {
            kind: WatchKind::Pods,
            scope: 0,
        },
        observed_at: at,
        change,
    }
}

struct Persisted {
    puts: usize,
    removes: usize,
    bytes: usize,
    seconds: f64,
}

/// One commit as the biller makes it: the ledger's changes with an (empty) window.
fn commit(
    q: &Queue,
    ledger: &mut Ledger,
    scope: &Scope,
    watermark: i64,
    budget: usize,
) -> Persisted {
    let t = Instant::now();
    let (writes, handed) = ledger_writes(
        ledger,
        &[],
        &scope.selectors(WatchKind::Pods),
        &scope.selectors(WatchKind::Pvcs),
        budget,
    );
    q.commit_window_with_ledger(SOURCE_NAME, watermark, &[], &writes)
        .expect("commit");
    ledger_committed(ledger, &mut Vec::new(), handed);
    ledger.forget_billed(watermark);
    Persisted {
        puts: writes.puts.len(),
        removes: writes.removes.len(),
        bytes: writes.bytes(),
        seconds: t.elapsed().as_secs_f64(),
    }
}

#[test]
fn ten_thousand_pods_persist_incrementally_and_load_back() {
    let templates = recorded_pods();
    assert_eq!(templates.len(), 8);
    let scope = Scope::default();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = QueueConfig::new(dir.path().join("queue"));
    let q = Queue::open(&config).expect("queue");

    let mut ledger = Ledger::new();
    ledger.apply(input(T - 10, Change::Init));
    for i in 0..PODS {
        ledger.apply(input(T - 10, Change::InitApply(pod(&templates, i, 1))));
    }
    ledger.apply(input(T - 10, Change::InitDone));

    // The daemon's budget per commit, or another one to compare (e.g. `LEDGER_BUDGET=100000000`
    // for the whole ledger in one transaction).
    let budget = std::env::var("LEDGER_BUDGET")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(LEDGER_BYTES_PER_COMMIT);
    let rss_before = rss_kib();
    let mut first = Persisted {
        puts: 0,
        removes: 0,
        bytes: 0,
        seconds: 0.0,
    };
    let mut commits = 0;
    let mut largest = 0;
    let mut watermark = T - 15;
    while ledger.changed_count() > 0 {
        assert!(commits < 1_000, "the first persist ends");
        watermark += 15;
        let p = commit(&q, &mut ledger, &scope, watermark, budget);
        assert!(
            p.bytes <= budget.max(p.bytes / p.puts.max(1)),
            "within the budget"
        );
        first.puts += p.puts;
        first.bytes += p.bytes;
        first.seconds += p.seconds;
        largest = largest.max(p.bytes);
        commits += 1;
    }
    let rss_after = rss_kib();
    assert_eq!(first.puts, PODS);
    println!(
        "first (full) persist of {PODS} pods with a budget of {budget} bytes per commit: {} records, {:.1} MiB in {commits} commits (largest {:.1} MiB), {:.0} ms in total (encode + sled transactions + flushes)",
        first.puts,
        first.bytes as f64 / 1_048_576.0,
        largest as f64 / 1_048_576.0,
        first.seconds * 1000.0
    );
    println!(
        "RSS around the first persist: {} MiB → {} MiB (sled cache 64 MiB by default)",
        rss_before / 1024,
        rss_after / 1024
    );

    // A window in which nothing changed writes nothing.
    let base = watermark + 15;
    let idle = commit(&q, &mut ledger, &scope, base, budget);
    assert_eq!((idle.puts, idle.removes, idle.bytes), (0, 0, 0));

    // Steady state: per 15 s window, 1% of the pods get a status update, 10 pods are created
    // and 10 deleted (forgotten once billed).
    let windows: i64 = 20;
    let mut next_new = PODS;
    let mut next_victim = 0;
    let mut total = Persisted {
        puts: 0,
        removes: 0,
        bytes: 0,
        seconds: 0.0,
    };
    for w in 0..windows {
        let at = base + 15 * w + 1;
        let version = 2 + u64::try_from(w).expect("small");
        for k in 0..PODS / 100 {
            let i = 1_000 + (usize::try_from(w).expect("small") * 97 + k * 13) % (PODS - 1_000);
            ledger.apply(input(at, Change::Apply(pod(&templates, i, version))));
        }
        for _ in 0..10 {
            ledger.apply(input(at, Change::Apply(pod(&templates, next_new, version))));
            next_new += 1;
            ledger.apply(input(
                at,
                Change::Delete(pod(&templates, next_victim, version)),
            ));
            next_victim += 1;
        }
        let p = commit(&q, &mut ledger, &scope, base + 15 * (w + 1), budget);
        total.puts += p.puts;
        total.removes += p.removes;
        total.bytes += p.bytes;
        total.seconds += p.seconds;
    }
    let n = windows as f64;
    println!(
        "steady state (1% updated + 10 created + 10 deleted per window), mean per window: {:.0} records put, {:.0} removed, {:.0} KiB, {:.1} ms",
        total.puts as f64 / n,
        total.removes as f64 / n,
        total.bytes as f64 / n / 1024.0,
        total.seconds * 1000.0 / n
    );
    // The next window writes the removals of the pods forgotten after the last one.
    let last = commit(&q, &mut ledger, &scope, base + 15 * (windows + 1), budget);
    assert_eq!((last.puts, last.removes), (0, 10));
    println!(
        "RSS after {} windows: {} MiB",
        commits + windows + 2,
        rss_kib() / 1024
    );
    let held = ledger.counts().0;
    let stats = q.stats().expect("stats");
    println!(
        "sled directory after {} windows: {:.1} MiB",
        commits + windows + 2,
        stats.size_on_disk as f64 / 1_048_576.0
    );
    let mut uids: Vec<String> = ledger.pod_uids().map(str::to_owned).collect();
    drop(q);
    drop(ledger);
    let rss_before_load = rss_kib();

    // Start: read every record and restore it.
    let t = Instant::now();
    let q = Queue::open(&config).expect("reopen");
    let records = q.ledger_records(SOURCE_NAME).expect("records");
    let read = t.elapsed().as_secs_f64();
    let mut restored = Ledger::new();
    let mut stale = Vec::new();
    let report = restore(&mut restored, &mut stale, &scope, records);
    let total_load = t.elapsed().as_secs_f64();
    assert_eq!((report.restored, report.unreadable), (held, 0));
    assert!(stale.is_empty());
    let mut back: Vec<String> = restored.pod_uids().map(str::to_owned).collect();
    uids.sort();
    back.sort();
    assert_eq!(back, uids, "exactly the pods held at the last commit");
    println!(
        "load at start: {held} records, open + read {:.0} ms, total with decode + restore {:.0} ms; RSS {} MiB → {} MiB",
        read * 1000.0,
        total_load * 1000.0,
        rss_before_load / 1024,
        rss_kib() / 1024
    );
}
