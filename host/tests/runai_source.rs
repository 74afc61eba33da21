//! The Run:ai source against runai-sim (a real HTTP server on 127.0.0.1): the poller's rounds
//! become `runai-workload` items whose allocation seconds and usage integrals equal values
//! computed by hand — whole GPUs with per-GPU series, a fractional GPU, a workload that ends
//! mid-window, a deleted one — and a failed round makes the windows wait instead of billing
//! part of them. The source's clock is the simulator's scenario clock, so the scenario is
//! played instantly; every wait is bounded.

use std::sync::Arc;
use std::time::Duration;

use edgemeter::mapper::bindings::Item;
use edgemeter::sources::runai::round::RoundPlan;
use edgemeter::sources::runai::source::{RunaiSource, RunaiSourceConfig};
use edgemeter::sources::runai::{Credentials, RunaiClient, RunaiConfig, Secret};
use edgemeter::sources::{MeteredSource, Source};
use edgemeter::window::Window;
use runai_sim::{Cluster, Fault, Route, RunaiSim, Series, SimConfig, Times, WorkloadTemplate};

fn t0(cluster: &Cluster) -> i64 {
    cluster.now().as_second()
}

async fn sim() -> (Cluster, RunaiSim) {
    let cluster = Cluster::new();
    cluster.create_department("research").expect("department");
    cluster
        .create_project("vision", "research")
        .expect("project");
    let sim = RunaiSim::start(cluster.clone(), SimConfig::default())
        .await
        .expect("sim");
    (cluster, sim)
}

fn client(sim: &RunaiSim) -> RunaiClient {
    let creds = sim.credentials();
    let mut config = RunaiConfig::new(
        sim.url().parse().expect("url"),
        Credentials::Client {
            id: creds.client_id.clone(),
            secret: Secret::new(creds.client_secret.clone()),
        },
    );
    config.retry.max_attempts = 2;
    config.retry.initial = Duration::from_millis(10);
    config.request_timeout = Duration::from_secs(5);
    RunaiClient::new(&config).expect("client")
}

fn source(sim: &RunaiSim, cluster: &Cluster, from: i64) -> RunaiSource {
    let mut config = RunaiSourceConfig::new(15);
    config.plan = RoundPlan {
        interval: 15,
        metrics_delay: 15,
        max_span: 3600,
        sample_step: 5,
    };
    config.retry = Duration::from_millis(100);
    let c = cluster.clone();
    RunaiSource::start(
        client(sim),
        config,
        from,
        Arc::new(move || c.now().as_second()),
        Vec::<(Vec<u8>, Vec<u8>)>::new(),
    )
}

/// Pumps the source until it has read up to `until` (bounded).
async fn read_until(source: &mut RunaiSource, until: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while source.ready_until().is_none_or(|r| r < until) || !source.in_sync() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(
            !left.is_zero(),
            "the source did not read up to {until}: {:?}",
            source.ready_until()
        );
        let _ = tokio::time::timeout(left, source.pump()).await;
    }
}

fn item<'a>(items: &'a [Item], name: &str) -> &'a Item {
    items.iter().find(|i| i.name == name).unwrap_or_else(|| {
        panic!(
            "no item {name} in {:?}",
            items.iter().map(|i| &i.name).collect::<Vec<_>>()
        )
    })
}

fn usage(item: &Item, metric: &str, gpu: Option<&str>) -> f64 {
    item.usage
        .iter()
        .find(|u| u.metric == metric && u.gpu.as_deref() == gpu)
        .unwrap_or_else(|| panic!("{}: no {metric} {gpu:?} in {:?}", item.name, item.usage))
        .integral
}

fn w(start: i64, end: i64) -> Window {
    Window::new(start, end).expect("window")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocation_and_usage_integrals_equal_the_hand_computed_values() {
    let (cluster, sim) = sim().await;
    let t = t0(&cluster);
    // train: 2 whole GPUs from t+10, GPU_UTILIZATION 80 %, per GPU 40 % and 60 %.
    let train = cluster
        .submit(
            &WorkloadTemplate::new("train", "vision")
                .gpus(2)
                .cpu(4.0)
                .memory(8 << 30),
        )
        .expect("train");
    // half: a 0.5 GPU fraction from t+20, completed at t+50 (mid-window).
    let half = cluster
        .submit(&WorkloadTemplate::new("half", "vision").gpu_fraction(0.5, 1))
        .expect("half");
    // gone: 1 GPU from t+10, deleted at t+40.
    let gone = cluster
        .submit(&WorkloadTemplate::new("gone", "vision").gpus(1))
        .expect("gone");
    cluster
        .set_series(&train, "GPU_UTILIZATION", Series::constant(80.0))
        .expect("series");
    cluster
        .set_gpu_series(
            &train,
            0,
            "0",
            "GPU_UTILIZATION_PER_GPU",
            Series::constant(40.0),
        )
        .expect("gpu 0");
    cluster
        .set_gpu_series(
            &train,
            0,
            "1",
            "GPU_UTILIZATION_PER_GPU",
            Series::constant(60.0),
        )
        .expect("gpu 1");
    cluster
        .set_series(&half, "GPU_UTILIZATION", Series::constant(50.0))
        .expect("series");
    cluster.advance(10).expect("clock");
    cluster.run(&train).expect("run");
    cluster.run(&gone).expect("run");
    cluster.advance(10).expect("clock");
    cluster.run(&half).expect("run");
    cluster.advance(20).expect("clock");
    cluster.delete(&gone).expect("delete");
    cluster.advance(10).expect("clock");
    cluster.complete(&half).expect("complete");
    cluster.advance(70).expect("clock"); // t+120

    let mut source = source(&sim, &cluster, t);
    // Spans end 15 s behind now on the 15 s grid: t+105.
    read_until(&mut source, t + 105).await;
    assert_eq!(source.ready_until(), Some(t + 105));

    // [t+15, t+30): train 15 s × 2 GPUs, half 10 s × 0.5, gone 15 s.
    let items = source.items(&w(t + 15, t + 30));
    let tr = item(&items, "train");
    assert_eq!(tr.allocation.seconds, 15);
    let gpu = tr.allocation.gpu.as_ref().expect("gpus");
    assert_eq!(gpu.count, 2.0);
    assert_eq!(tr.allocation.cpu_request_millicores, 4000);
    assert_eq!(tr.allocation.memory_request_bytes, 8 << 30);
    assert!(!tr.allocation.estimated);
    // Samples every 5 s while holding: the whole window is covered.
    assert_eq!(usage(tr, "GPU_UTILIZATION", None), 80.0 * 15.0);
    assert_eq!(usage(tr, "GPU_UTILIZATION_PER_GPU", Some("0")), 40.0 * 15.0);
    assert_eq!(usage(tr, "GPU_UTILIZATION_PER_GPU", Some("1")), 60.0 * 15.0);
    assert_eq!(usage(tr, "GPU_ALLOCATION", None), 2.0 * 15.0);
    assert!(tr.usage.iter().all(|u| !u.estimated), "{:?}", tr.usage);
    let per_gpu = tr.usage.iter().find(|u| u.gpu.is_some()).expect("per GPU");
    assert!(per_gpu.pod.is_some(), "a per-GPU series names its pod");
    assert_eq!(per_gpu.unit, "percent");

    // half ran and completed before the source's first round (as after a downtime): only its
    // end points tell, so it is held from its creation, marked estimated.
    let h = item(&items, "half");
    assert_eq!(h.allocation.seconds, 15);
    assert!(h.allocation.estimated);
    let hg = h.allocation.gpu.as_ref().expect("fraction");
    assert_eq!((hg.count, hg.fraction), (0.5, Some(0.5)));
    // Usage comes from the samples, which exist only while it held (from t+20).
    assert_eq!(usage(h, "GPU_UTILIZATION", None), 50.0 * 10.0);
    // gone was deleted (t+40) before the first round too: first seen `Deleting`, held from
    // its creation to its deletedAt, estimated.
    let g = item(&items, "gone");
    assert_eq!((g.allocation.seconds, g.allocation.estimated), (15, true));

    // [t+45, t+60): half ends at t+50 (5 s), gone was deleted at t+40 (absent).
    let items = source.items(&w(t + 45, t + 60));
    assert_eq!(item(&items, "half").allocation.seconds, 5);
    assert!(items.iter().all(|i| i.name != "gone"), "deleted at t+40");
    assert_eq!(item(&items, "train").allocation.seconds, 15);

    // Whole history: seconds per workload = the simulator's ground truth.
    let span = w(t, t + 105);
    let items = source.items(&span);
    // train was seen running: exact, the simulator's ground truth.
    let truth = cluster
        .held_seconds(&train, span_ts(span.start()), span_ts(span.end()))
        .expect("truth");
    let tr = item(&items, "train");
    assert_eq!(tr.allocation.seconds as f64, truth);
    assert!(!tr.allocation.estimated);
    assert_eq!(
        item(&items, "half").allocation.seconds,
        50,
        "created at t, completed at t+50"
    );
    assert_eq!(
        item(&items, "gone").allocation.seconds,
        40,
        "created at t, deleted at t+40"
    );
    // Consecutive windows add up to the span.
    let parts: u64 = (0..7)
        .map(|k| {
            let items = source.items(&w(t + 15 * k, t + 15 * (k + 1)));
            items
                .iter()
                .find(|i| i.name == "train")
                .map_or(0, |i| i.allocation.seconds)
        })
        .sum();
    assert_eq!(parts, item(&items, "train").allocation.seconds);

    // Billed windows are forgotten: the deleted and completed workloads go, train stays.
    source.forget_billed(t + 105);
    assert!(source.ledger().get(&gone).is_none());
    assert!(source.ledger().get(&train).is_some());
    source.stop();
}

fn span_ts(t: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(t).expect("time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_metrics_call_discards_the_round_and_the_windows_wait() {
    let (cluster, sim) = sim().await;
    let t = t0(&cluster);
    let id = cluster
        .submit(&WorkloadTemplate::new("train", "vision").gpus(1))
        .expect("submit");
    cluster.run(&id).expect("run");
    cluster
        .set_series(&id, "GPU_UTILIZATION", Series::constant(10.0))
        .expect("series");
    cluster.advance(60).expect("clock");
    // Every metrics call fails (after the client's retries): no round completes.
    sim.inject(Route::WorkloadMetrics, Fault::Status(503), Times::Always);
    let mut source = source(&sim, &cluster, t);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        let _ = tokio::time::timeout(Duration::from_millis(200), source.pump()).await;
        source.catch_up();
    }
    assert!(!source.in_sync(), "a failed round is not a complete view");
    assert!(
        source.ready_until().is_none_or(|r| r <= t),
        "nothing is ready while metrics fail: {:?}",
        source.ready_until()
    );
    // The API answers again: the same span is read in full.
    sim.clear_faults(None);
    read_until(&mut source, t + 45).await;
    let items = source.items(&w(t, t + 45));
    let tr = item(&items, "train");
    assert_eq!(tr.allocation.seconds, 45);
    assert_eq!(usage(tr, "GPU_UTILIZATION", None), 10.0 * 45.0);
    source.stop();
}

/// A restart continues what was observed: the ledger's records stored with the last commit
/// make a workload seen running before the crash and completed during the downtime billed
/// exactly (not estimated) to its `completedAt`, with what it was seen holding. Without them
/// (mutation: no records) the same workload is only an estimate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_records_make_a_restart_exact_for_a_workload_ended_in_the_downtime() {
    let (cluster, sim) = sim().await;
    let t = t0(&cluster);
    let id = cluster
        .submit(&WorkloadTemplate::new("train", "vision").gpus(2))
        .expect("submit");
    cluster.advance(30).expect("clock");
    cluster.run(&id).expect("run"); // t+30
    cluster.advance(30).expect("clock"); // t+60
    let mut first = source(&sim, &cluster, t);
    read_until(&mut first, t + 45).await;
    // The commit of [t, t+45) stores the ledger's changes.
    let records = first.ledger_writes();
    first.ledger_committed();
    first.forget_billed(t + 45);
    first.stop();
    assert_eq!(records.puts.len(), 1, "one workload record");

    // Down: it completes at t+70; back at t+150.
    cluster.advance(10).expect("clock");
    cluster.complete(&id).expect("complete");
    cluster.advance(80).expect("clock");
    let window = w(t + 45, t + 135);
    let truth = cluster
        .held_seconds(&id, span_ts(window.start()), span_ts(window.end()))
        .expect("truth");
    let c = cluster.clone();
    let mut config = RunaiSourceConfig::new(15);
    config.plan = RoundPlan {
        interval: 15,
        metrics_delay: 15,
        max_span: 3600,
        sample_step: 5,
    };
    let mut restarted = RunaiSource::start(
        client(&sim),
        config.clone(),
        t + 45,
        Arc::new(move || c.now().as_second()),
        records.puts.clone(),
    );
    read_until(&mut restarted, t + 135).await;
    let items = restarted.items(&window);
    let tr = item(&items, "train");
    assert_eq!(tr.allocation.seconds as f64, truth);
    assert!(
        !tr.allocation.estimated,
        "seen running before the crash: exact"
    );
    assert_eq!(tr.allocation.gpu.as_ref().map(|g| g.count), Some(2.0));
    restarted.stop();

    // Without the records the same span is only an estimate.
    let c = cluster.clone();
    let mut blind = RunaiSource::start(
        client(&sim),
        config,
        t + 45,
        Arc::new(move || c.now().as_second()),
        Vec::<(Vec<u8>, Vec<u8>)>::new(),
    );
    read_until(&mut blind, t + 135).await;
    let items = blind.items(&window);
    assert!(item(&items, "train").allocation.estimated);
    blind.stop();
}

/// The GPUs billed from phases are cross-checked against Run:ai's own GPU_ALLOCATION series:
/// agreement counts nothing; a series that says otherwise is counted (billing keeps the
/// timestamped phases).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gpu_allocation_series_cross_checks_the_billed_gpus() {
    let (cluster, sim) = sim().await;
    let t = t0(&cluster);
    let agrees = cluster
        .submit(&WorkloadTemplate::new("agrees", "vision").gpus(2))
        .expect("submit");
    let differs = cluster
        .submit(&WorkloadTemplate::new("differs", "vision").gpus(2))
        .expect("submit");
    cluster.run(&agrees).expect("run");
    cluster.run(&differs).expect("run");
    cluster
        .set_series(&differs, "GPU_ALLOCATION", Series::constant(0.5))
        .expect("series");
    cluster.advance(60).expect("clock");
    let mut source = source(&sim, &cluster, t);
    read_until(&mut source, t + 45).await;
    let metrics = edgemeter::metrics::Metrics::new();
    let items = source.items(&w(t + 15, t + 30));
    assert_eq!(usage(item(&items, "agrees"), "GPU_ALLOCATION", None), 30.0);
    assert_eq!(
        item(&items, "differs")
            .allocation
            .gpu
            .as_ref()
            .map(|g| g.count),
        Some(2.0)
    );
    source.publish_metrics(&metrics);
    assert_eq!(
        metrics.runai.mismatches.get(),
        1,
        "only the differing workload"
    );
    source.stop();
}
