//! A mapper that sleeps forever does not hang the daemon (issue "Containment", scenario 3).
//!
//! The real daemon (`run_with`: watcher, ledger, biller, queue, stdout sink, HTTP server)
//! runs in-process against `kube-sim` with one running pod and the hostile mapper in
//! `sleep-forever` mode: every `map-snapshot` waits in the host's `wasi:clocks` / `wasi:io/poll`
//! imports. The daemon must keep ticking (each window fails at the mapper's deadline and is
//! counted as a timeout), report its progress (`edgemeter_last_tick_timestamp_seconds`, so
//! `/healthz` stays 200), and a shutdown request (what SIGTERM triggers) must end it promptly.
//! A loop that does stop making progress fails `/healthz`.
//! Every wait is bounded; the runtime is shut down in the background, so a daemon that does
//! hang fails the test instead of hanging it.

use std::time::{Duration, Instant};

use clap::Parser;
use edgemeter::daemon::run::{RunArgs, run_with};
use edgemeter::http::{HttpState, serve};
use edgemeter::metrics::Metrics;
use edgemeter::queue::{Queue, QueueConfig};
use edgemeter::sources::kubernetes::KubernetesArgs;
use edgemeter_tests::shared_cache_dir;
use kube_sim::{Cluster, ContainerTemplate, KubeSim, NodeTemplate, PodTemplate, SimConfig};
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Parser)]
struct Wrap {
    #[command(flatten)]
    run: RunArgs,
}

async fn get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await??;
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

/// The value of the sample `name` (with its labels) in a `/metrics` text, 0 when absent.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter_map(|rest| rest.trim().parse::<f64>().ok())
        .next()
        .unwrap_or(0.0)
}

async fn scenario() -> anyhow::Result<()> {
    let cluster = Cluster::new();
    let now = jiff::Timestamp::now();
    cluster.set_time(now.checked_sub(jiff::SignedDuration::from_secs(60))?)?;
    cluster.create_node(&NodeTemplate::new("node-1"))?;
    cluster.create_running_pod(
        &PodTemplate::new("ns", "busy").container(ContainerTemplate::new("app").cpu("250m", None)),
        "node-1",
    )?;
    cluster.set_time(now)?;
    let sim = KubeSim::start(cluster.clone(), SimConfig::default()).await?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, sim.kubeconfig_yaml())?;
    let queue_dir = dir.path().join("queue");
    let http = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;

    let wasm = env!("EDGEMETER_HOSTILE_WASM");
    let cache = shared_cache_dir();
    let (kubeconfig_s, queue_s, http_s, cache_s) = (
        kubeconfig.display().to_string(),
        queue_dir.display().to_string(),
        http.to_string(),
        cache.display().to_string(),
    );
    let args = Wrap::try_parse_from([
        "run",
        "--kubeconfig",
        &kubeconfig_s,
        "--mapper",
        wasm,
        "--mapper-config",
        r#"{"mode": "sleep-forever"}"#,
        "--mapper-timeout",
        "300ms",
        "--mapper-timeout-per-item",
        "0s",
        "--scrape-interval",
        "1s",
        "--settle",
        "0s",
        "--backfill",
        "10s",
        "--sink",
        "stdout",
        "--queue-dir",
        &queue_s,
        "--http-listen",
        &http_s,
        "--cache-dir",
        &cache_s,
    ])?
    .run;
    let client = KubernetesArgs {
        kubeconfig: Some(kubeconfig.clone()),
        ..KubernetesArgs::default()
    }
    .client()
    .await?;
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(run_with(args, Some(client), shutdown.clone()));

    // Ticks go on: each one fails its window at the mapper's deadline.
    let timeouts = r#"edgemeter_mapper_failures_total{reason="timeout"}"#;
    let started = Instant::now();
    let mut seen = 0.0;
    let mut last_tick = 0.0;
    while started.elapsed() < LIMIT && seen < 3.0 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if daemon.is_finished() {
            break;
        }
        if let Ok((200, text)) = get(http, "/metrics").await {
            seen = sample(&text, timeouts);
            last_tick = sample(&text, "edgemeter_last_tick_timestamp_seconds");
        }
    }
    anyhow::ensure!(
        seen >= 3.0,
        "the daemon stopped ticking: {seen} mapper timeouts after {:?} (the mapper call blocks past its deadline)",
        started.elapsed()
    );
    let now = jiff::Timestamp::now().as_second() as f64;
    anyhow::ensure!(
        (now - last_tick).abs() <= 5.0,
        "progress is reported at each tick: last {last_tick}, now {now}"
    );
    let (health, body) = get(http, "/healthz").await?;
    anyhow::ensure!(health == 200, "/healthz {health}: {body}");

    // SIGTERM: the daemon finishes the window at hand (failing at the deadline) and exits.
    let asked = Instant::now();
    shutdown.cancel();
    match tokio::time::timeout(Duration::from_secs(10), daemon).await {
        Ok(joined) => joined??,
        Err(_) => anyhow::bail!("the daemon ignored the shutdown request for 10 s"),
    }
    anyhow::ensure!(
        asked.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        asked.elapsed()
    );
    Ok(())
}

#[test]
fn a_mapper_sleeping_forever_neither_stops_ticks_nor_shutdown() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let outcome = rt.block_on(scenario());
    // A hung daemon thread must not hang the test too.
    rt.shutdown_background();
    outcome
}

/// `/healthz` reads the progress gauge: 503 with the reason once the billing loop made no
/// progress for the bound, 200 again after progress, and always 200 without a billing loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_fails_once_the_billing_loop_makes_no_progress() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let queue = Queue::open(&QueueConfig::new(dir.path().join("queue")))?;
    let metrics = Metrics::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve(
        listener,
        HttpState {
            queue,
            metrics: metrics.clone(),
        },
        stop.clone(),
    ));
    assert_eq!(
        get(addr, "/healthz").await?.0,
        200,
        "no billing loop reports"
    );

    let now = jiff::Timestamp::now().as_second();
    let b = &metrics.billing;
    b.liveness_stale_after
        .set(edgemeter::daemon::liveness::stale_after(15));
    b.last_tick.set(now - 121);
    let (status, body) = get(addr, "/healthz").await?;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no progress for"), "{body}");

    b.last_tick.set(now);
    assert_eq!(get(addr, "/healthz").await?.0, 200, "progress again");
    stop.cancel();
    server.await??;
    Ok(())
}
