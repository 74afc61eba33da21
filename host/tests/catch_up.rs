//! Issue 8, scenario 5 (the catch-up part): after a long downtime the biller commits the
//! missed windows in bounded steps — at most `max_window` per tick, each window committed on
//! its own with its watermark — and a stop between two windows (SIGTERM in the daemon, which
//! answers `may_commit` with no) leaves exactly the windows committed before it, none half
//! done, and the next start continues from there.

use std::cell::Cell;
use std::path::PathBuf;

use edgemeter::daemon::{Biller, MeteredSource, Plan, TickOutcome};
use edgemeter::mapper::bindings::{Item, SourceKind};
use edgemeter::mapper::{LoadedMapper, MapperLimits, MapperRuntime, builtin};
use edgemeter::queue::{Queue, QueueConfig};
use edgemeter::snapshot::Identity;
use edgemeter::window::Window;

const SOURCE: &str = "kubernetes";

fn mapper() -> LoadedMapper {
    let cache =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/edgemeter-test-mapper-cache");
    MapperRuntime::new(MapperLimits::default(), Some(cache))
        .expect("runtime")
        .load(builtin::KUBERNETES, builtin::KUBERNETES_WASM)
        .expect("built-in mapper loads")
}

/// A source in sync with nothing to bill: the windows themselves are what is counted.
struct Empty;

impl MeteredSource for Empty {
    fn name(&self) -> &str {
        SOURCE
    }
    fn kind(&self) -> SourceKind {
        SourceKind::Kubernetes
    }
    fn in_sync(&self) -> bool {
        true
    }
    fn items(&self, _window: &Window) -> Vec<Item> {
        Vec::new()
    }
    fn forget_billed(&mut self, _watermark: i64) {}
}

#[test]
fn a_long_catch_up_commits_in_bounded_steps_and_stops_between_windows() {
    let dir = tempfile::tempdir().expect("temp dir");
    let queue = Queue::open(&QueueConfig::new(dir.path())).expect("queue");
    let plan = Plan {
        interval: 60,
        max_window: 3600,
        settle: 0,
    };
    // On the grid of 60 s.
    let start = 1_800_000_000;
    // A week of downtime: 10,080 windows to catch up.
    let now = start + 7 * 86_400;
    let mut biller = Biller::new(
        plan,
        mapper(),
        queue.clone(),
        Identity::default(),
        "{}".to_owned(),
        SOURCE,
        start,
    )
    .expect("biller");
    // One tick: at most max_window (60 windows), not the whole week.
    match biller.tick(&mut Empty, now) {
        TickOutcome::Billed {
            windows, watermark, ..
        } => assert_eq!((windows, watermark), (60, start + 3600)),
        other => panic!("unexpected {other:?}"),
    }
    // SIGTERM after 7 windows of the next tick: the tick stops there, committed so far.
    let asked = Cell::new(0u32);
    let outcome = biller.tick_while(&mut Empty, now, &|| {
        // Asked before each window is staged and again before it is published.
        asked.set(asked.get() + 1);
        asked.get() <= 14
    });
    match outcome {
        TickOutcome::Billed {
            windows, watermark, ..
        } => assert_eq!((windows, watermark), (7, start + 3600 + 7 * 60)),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        queue.watermark(SOURCE).expect("watermark"),
        Some(start + 3600 + 7 * 60),
        "each window's watermark is on disk: the next start continues there"
    );
    drop(biller);
    let resumed = Biller::new(
        plan,
        mapper(),
        queue.clone(),
        Identity::default(),
        "{}".to_owned(),
        SOURCE,
        now,
    )
    .expect("biller");
    assert_eq!(resumed.watermark(), start + 3600 + 7 * 60);
}
