//! A window mapped in slices stays within the queue's byte bound (issue "Containment",
//! scenario 4): `Queue::begin_window` checks the bound once, at the start of a window, and
//! each slice used to be staged whatever its size, so a window of many slices could stage —
//! and publish — far more than `max_bytes`. Now the bound is checked before every slice: once
//! the undelivered events plus the window's staged ones reach it, the next slice refuses the
//! window (queue full: nothing is published, the staged slices are removed, the watermark
//! stays), so a window goes at most one slice beyond the bound.

use edgemeter::daemon::{Biller, MeteredSource, Plan, TickOutcome};
use edgemeter::mapper::bindings::{Allocation, Item, ItemKind, SourceKind};
use edgemeter::mapper::{LoadedMapper, MapperLimits, MapperRuntime};
use edgemeter::queue::{Queue, QueueConfig};
use edgemeter::snapshot::Identity;
use edgemeter::window::Window;
use edgemeter_tests::{hostile_wasm, shared_cache_dir};

const T0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z, on the 15 s grid
const ITEMS: usize = 10;

/// `ITEMS` items, each allocated for the whole window.
struct Items;

impl MeteredSource for Items {
    fn name(&self) -> &str {
        "kubernetes"
    }
    fn kind(&self) -> SourceKind {
        SourceKind::Kubernetes
    }
    fn in_sync(&self) -> bool {
        true
    }
    fn items(&self, window: &Window) -> Vec<Item> {
        let seconds = u64::try_from(window.end() - window.start()).expect("forward");
        (0..ITEMS)
            .map(|i| Item {
                kind: ItemKind::Pod,
                namespace: "ns".into(),
                name: format!("pod-{i}"),
                uid: format!("uid-{i}"),
                labels: vec![],
                annotations: vec![],
                object: String::new(),
                allocation: Allocation {
                    seconds,
                    allocated_from: Some(T0),
                    allocated_until: None,
                    estimated: false,
                    cpu_request_millicores: 100,
                    cpu_limit_millicores: None,
                    memory_request_bytes: 1,
                    memory_limit_bytes: None,
                    gpu: None,
                    storage_bytes: None,
                    storage_class: None,
                    node_name: None,
                    phase: None,
                },
                usage: vec![],
            })
            .collect()
    }
    fn forget_billed(&mut self, _watermark: i64) {}
}

fn hostile() -> LoadedMapper {
    MapperRuntime::new(MapperLimits::default(), Some(shared_cache_dir()))
        .expect("runtime")
        .load("hostile", &hostile_wasm())
        .expect("loads")
}

/// One slice per item (the hostile mapper declares its items independent), one window.
fn biller(queue: &Queue) -> Biller {
    let plan = Plan {
        interval: 15,
        max_window: 15,
        settle: 0,
    };
    let mut b = Biller::new(
        plan,
        hostile(),
        queue.clone(),
        Identity::default(),
        "ok".into(),
        "kubernetes",
        T0,
    )
    .expect("biller");
    b.set_slice_items(1);
    b
}

fn queue(dir: &std::path::Path, max_bytes: u64) -> Queue {
    let mut config = QueueConfig::new(dir);
    config.max_bytes = max_bytes;
    Queue::open(&config).expect("queue")
}

#[test]
fn a_window_mapped_in_slices_never_stages_more_than_the_queue_bound() {
    // How many bytes the window's events take, measured on a queue large enough for them.
    let roomy_dir = tempfile::tempdir().expect("tempdir");
    let roomy = queue(roomy_dir.path(), 1 << 30);
    assert!(matches!(
        biller(&roomy).tick(&mut Items, T0 + 15),
        TickOutcome::Billed {
            windows: 1,
            events: ITEMS,
            ..
        }
    ));
    let window_bytes = roomy.pending_bytes();
    assert!(window_bytes > 0);

    // A bound the window's start is under (the queue is empty) but that half its slices fill.
    let bound = window_bytes / 2;
    let dir = tempfile::tempdir().expect("tempdir");
    let tight = queue(dir.path(), bound);
    match biller(&tight).tick(&mut Items, T0 + 15) {
        TickOutcome::QueueFull {
            windows: 0,
            watermark,
        } => assert_eq!(watermark, T0, "the watermark stays"),
        other => panic!("expected the queue bound to refuse the window, got {other:?}"),
    }
    assert_eq!(tight.pending_bytes(), 0, "nothing was published");
    assert_eq!(tight.pending_events(), 0);
    assert!(
        tight.peek(100).expect("peek").is_empty(),
        "no staged slice is visible"
    );
    assert_eq!(
        tight.watermark("kubernetes").expect("watermark"),
        Some(T0),
        "nothing committed but the first start's watermark"
    );
}
