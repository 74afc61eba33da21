//! A child-process daemon core for the crash test: the REAL [`Biller`] (built-in WASM mapper,
//! windows mapped and staged one item at a time with `set_slice_items(1)`, each window
//! published with its watermark and its source's ledger writes), the REAL queue and the REAL
//! OpenMeter sink, fed by a synthetic source.
//!
//! Usage: `biller_pipeline QUEUE_DIR URL WINDOWS ITEMS RUN`
//!
//! Window `k` is `[60k, 60k+60)` on the grid; each holds `ITEMS` pods `pod-0 …` that carry the
//! annotation `data.openmeter.io/run: RUN`, which the built-in mapper copies into each event's
//! `data.run`: a window committed by two runs would show two bodies for one id. With each
//! window the source writes its ledger records `through` (the window's end, decimal) and
//! `item-I` (`K`), so the state stored beside the watermark can be checked against it.
//!
//! Stdout (line-buffered, so what a SIGKILL leaves is whole lines) says where the biller is:
//! `ready W` once the mapper is loaded (stored watermark `W`), `page K C` when it asks for the
//! slice at cursor `C` of window `K` (so `C` slices of it are staged), `publish K` when it asks
//! for the ledger writes just before publishing, `committed K` after the commit. Once every
//! window is committed it waits for the queue to drain and prints `drained`.

use std::time::Duration;

use anyhow::Context;
use edgemeter::daemon::{Biller, MeteredSource, Plan, TickOutcome};
use edgemeter::mapper::bindings::{Allocation, Item, ItemKind, SourceKind};
use edgemeter::mapper::{MapperLimits, MapperRuntime, builtin};
use edgemeter::metrics::Metrics;
use edgemeter::queue::{CorruptionPolicy, LedgerWrites, Queue, QueueConfig};
use edgemeter::sinks::openmeter::{self, OpenMeterConfig};
use edgemeter::snapshot::Identity;
use edgemeter::window::Window;
use edgemeter_tests::{BILLER_SOURCE, shared_cache_dir};
use tokio_util::sync::CancellationToken;

const WINDOW: i64 = 60;

struct Synthetic {
    items: usize,
    run: u32,
    /// The window last paged: its ledger writes are asked for just before it is published.
    paging: std::cell::Cell<i64>,
}

impl MeteredSource for Synthetic {
    fn name(&self) -> &str {
        BILLER_SOURCE
    }
    fn kind(&self) -> SourceKind {
        SourceKind::Kubernetes
    }
    fn in_sync(&self) -> bool {
        true
    }
    fn items(&self, window: &Window) -> Vec<Item> {
        (0..self.items)
            .map(|i| Item {
                kind: ItemKind::Pod,
                namespace: "crash".into(),
                name: format!("pod-{i}"),
                uid: format!("uid-{i}"),
                labels: vec![],
                annotations: vec![("data.openmeter.io/run".into(), self.run.to_string())],
                object: String::new(),
                allocation: Allocation {
                    seconds: window.seconds(),
                    allocated_from: Some(0),
                    allocated_until: None,
                    estimated: false,
                    cpu_request_millicores: 100,
                    cpu_limit_millicores: None,
                    memory_request_bytes: 1 << 20,
                    memory_limit_bytes: None,
                    gpu: None,
                    storage_bytes: None,
                    storage_class: None,
                    node_name: Some("node-0".into()),
                    phase: Some("Running".into()),
                },
                usage: vec![],
            })
            .collect()
    }
    fn items_page(&self, window: &Window, cursor: usize, max: usize) -> (Vec<Item>, Option<usize>) {
        self.paging.set(window.start() / WINDOW);
        println!("page {} {cursor}", window.start() / WINDOW);
        let mut all = self.items(window);
        let end = cursor.saturating_add(max.max(1));
        if end >= all.len() {
            return (all.split_off(cursor.min(all.len())), None);
        }
        all.truncate(end);
        (all.split_off(cursor), Some(end))
    }
    fn forget_billed(&mut self, watermark: i64) {
        println!("committed {}", watermark / WINDOW - 1);
    }
    fn ledger_writes(&mut self) -> LedgerWrites {
        let k = self.paging.get();
        println!("publish {k}");
        let mut puts = vec![(
            b"through".to_vec(),
            ((k + 1) * WINDOW).to_string().into_bytes(),
        )];
        puts.extend(
            (0..self.items).map(|i| (format!("item-{i}").into_bytes(), k.to_string().into_bytes())),
        );
        LedgerWrites {
            removes: vec![],
            puts,
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 6,
        "usage: biller_pipeline QUEUE_DIR URL WINDOWS ITEMS RUN"
    );
    let queue_dir = &args[1];
    let url: openmeter::Url = args[2].parse().context("URL")?;
    let windows: i64 = args[3].parse().context("WINDOWS")?;
    let items: usize = args[4].parse().context("ITEMS")?;
    let run: u32 = args[5].parse().context("RUN")?;

    // A corrupt queue must fail the run, not be moved aside: an empty queue would re-bill from
    // window 0 and the test would blame the pipeline for what sled reported.
    let mut queue_config = QueueConfig::new(queue_dir);
    queue_config.on_corruption = CorruptionPolicy::Fail;
    let queue = Queue::open(&queue_config).context("opening the queue")?;
    let mut config = OpenMeterConfig::new(url);
    config.batch_size = 20;
    config.batch_period = Duration::from_millis(20);
    config.request_timeout = Duration::from_secs(5);
    config.retry_initial = Duration::from_millis(10);
    config.retry_max = Duration::from_millis(200);
    let shutdown = CancellationToken::new();
    let sink = tokio::spawn(openmeter::run(
        queue.clone(),
        config,
        Metrics::new(),
        shutdown.clone(),
    ));

    let mapper = MapperRuntime::new(MapperLimits::default(), Some(shared_cache_dir()))?
        .load(builtin::KUBERNETES, builtin::KUBERNETES_WASM)?;
    let plan = Plan {
        interval: 60,
        max_window: 60,
        settle: 0,
    };
    let identity = Identity {
        collector_id: "crash".into(),
        cluster_id: String::new(),
    };
    let mut biller = Biller::new(
        plan,
        mapper,
        queue.clone(),
        identity,
        "{}".into(),
        BILLER_SOURCE,
        0,
    )?;
    biller.set_slice_items(1);
    let mut source = Synthetic {
        items,
        run,
        paging: std::cell::Cell::new(0),
    };
    println!("ready {}", biller.watermark());
    let end = windows * WINDOW;
    let mut full_waits = 0u32;
    while biller.watermark() < end {
        let outcome = tokio::task::block_in_place(|| biller.tick(&mut source, end));
        match outcome {
            TickOutcome::Billed { .. } => {}
            TickOutcome::QueueFull { .. } => {
                full_waits += 1;
                anyhow::ensure!(full_waits < 10_000, "queue stayed full");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => anyhow::bail!("tick failed: {other:?}"),
        }
    }
    for _ in 0..6000 {
        if queue.pending_events() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    anyhow::ensure!(queue.pending_events() == 0, "queue did not drain in 60 s");
    shutdown.cancel();
    sink.await??;
    println!("drained");
    Ok(())
}
