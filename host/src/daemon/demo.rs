//! `edgemeter demo`: the real daemon against a simulated cluster and a loopback receiver.
//!
//! Starts `kube-sim` (a fake Kubernetes API server on 127.0.0.1) playing the demo scenario in
//! real time — a GPU training job with a PVC, a MIG pod, a pod with a native sidecar, a web
//! service, short batch jobs — and a loopback HTTP server that accepts OpenMeter ingest
//! requests. Then it runs exactly what `edgemeter run` runs (watcher, ledger, windows, WASM
//! mapper, sled queue, OpenMeter sink) and prints every event the receiver gets. The Run:ai
//! source runs beside it against `runai-sim` (a fake Run:ai control plane on 127.0.0.1)
//! playing its demo scenario in real time: whole and fractional GPUs, distributed training
//! with per-GPU series, inference, workloads that finish, are stopped and deleted.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use clap::{Args, Parser};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::run::{DaemonError, RunArgs, run_with};
use crate::window;

/// Arguments of `edgemeter demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// How long to run (Go duration syntax).
    #[arg(long, default_value = "90s")]
    pub duration: String,
    /// Billing interval of the demo daemon.
    #[arg(long, default_value = "5s")]
    pub interval: String,
}

#[derive(Debug, Parser)]
struct Wrap {
    #[command(flatten)]
    run: RunArgs,
}

/// What the receiver got.
#[derive(Debug, Default)]
struct Received {
    requests: u64,
    events: u64,
    seconds_by_pod: BTreeMap<String, u64>,
    by_type: BTreeMap<String, u64>,
}

type Shared = Arc<Mutex<Received>>;

async fn ingest(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        != Some("application/cloudevents-batch+json")
    {
        return StatusCode::BAD_REQUEST;
    }
    let Ok(Value::Array(events)) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut r = state.lock().unwrap_or_else(PoisonError::into_inner);
    r.requests += 1;
    for e in &events {
        r.events += 1;
        let ty = e["type"].as_str().unwrap_or("?").to_owned();
        *r.by_type.entry(ty.clone()).or_insert(0) += 1;
        let d = &e["data"];
        let name = match (d["workload_name"].as_str(), d["gpu"].as_str()) {
            // builtin:runai's per-GPU events.
            (Some(w), Some(gpu)) => format!("{w}/gpu-{gpu}"),
            _ => d["pod_name"]
                .as_str()
                .or(d["pvc_name"].as_str())
                .or(d["name"].as_str())
                .unwrap_or("?")
                .to_owned(),
        };
        // Kubernetes events carry `duration_seconds`; Run:ai ones `workload_minutes`.
        let secs = d["duration_seconds"].as_u64().unwrap_or_else(|| {
            d["workload_minutes"]
                .as_f64()
                .map_or(0, |m| (m * 60.0).round() as u64)
        });
        *r.seconds_by_pod.entry(name.clone()).or_insert(0) += secs;
        let mut extra = String::new();
        for (k, label) in [
            ("cpu_request_millicores", "cpu_m"),
            ("memory_request_bytes", "mem_B"),
            ("gpu_request_count", "gpus"),
            ("gpu_type", "gpu"),
            ("storage_request_bytes", "storage_B"),
        ] {
            if let Some(v) = d.get(k).filter(|v| !(v.is_null() || *v == 0)) {
                extra.push_str(&format!(" {label}={v}"));
            }
        }
        println!(
            "received  {ty:<20} subject={:<12} {name:<28} window_end={} seconds={secs}{extra}",
            e["subject"].as_str().unwrap_or("?"),
            e["time"].as_str().unwrap_or("?"),
        );
    }
    StatusCode::NO_CONTENT
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> Result<(), DaemonError> {
    let duration =
        window::parse_duration(&args.duration).map_err(|source| DaemonError::Duration {
            key: "--duration",
            source,
        })?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    rt.block_on(async move {
        crate::sources::kubernetes::config::install_crypto_provider();
        let cluster = kube_sim::Cluster::new();
        let sim = kube_sim::KubeSim::start(cluster.clone(), kube_sim::SimConfig::default())
            .await
            .map_err(|e| DaemonError::Invalid {
                key: "demo cluster",
                reason: e.to_string(),
            })?;
        let scenario = kube_sim::demo_scenario();
        let mut player = kube_sim::ScenarioPlayer::new(&scenario, jiff::Timestamp::now());
        let play_cluster = cluster.clone();
        tokio::spawn(async move {
            if let Err(e) = player.play_realtime(&play_cluster).await {
                tracing::error!(error = %e, "demo scenario stopped");
            }
        });

        // The Run:ai control plane: its demo scenario, its clock following the wall clock.
        let runai = runai_sim::Cluster::starting_at(jiff::Timestamp::now());
        runai_sim::demo::create_org(&runai).map_err(|e| DaemonError::Invalid {
            key: "demo Run:ai org",
            reason: e.to_string(),
        })?;
        let runai_server = runai_sim::RunaiSim::start(runai.clone(), runai_sim::SimConfig::default())
            .await
            .map_err(|e| DaemonError::Invalid {
                key: "demo Run:ai control plane",
                reason: e.to_string(),
            })?;
        let runai_play = runai.clone();
        tokio::spawn(async move {
            let steps = runai_sim::demo::demo_steps();
            let (start, mut next) = (std::time::Instant::now(), 0usize);
            loop {
                let _ = runai_play.set_time(jiff::Timestamp::now());
                if let Err(e) =
                    runai_sim::demo::play_due(&runai_play, &steps, &mut next, start.elapsed().as_secs())
                {
                    tracing::error!(error = %e, "Run:ai demo scenario stopped");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        let runai_url = runai_server.url();
        let runai_id = runai_server.credentials().client_id.clone();
        let runai_secret = runai_server.credentials().client_secret.clone();

        let received: Shared = Arc::default();
        let app = Router::new()
            .route("/api/v1/events", post(ingest))
            .with_state(received.clone());
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .map_err(|source| DaemonError::Bind {
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                source,
            })?;
        let receiver_addr = listener.local_addr().map_err(|source| DaemonError::Bind {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            source,
        })?;
        let receiver_stop = CancellationToken::new();
        let stop = receiver_stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        });

        let queue_dir = tempfile_dir()?;
        let url = format!("http://{receiver_addr}");
        let queue_path = queue_dir.display().to_string();
        let run_args = Wrap::try_parse_from([
            "demo",
            "--scrape-interval",
            &args.interval,
            "--settle",
            "1s",
            "--sink",
            "openmeter",
            "--openmeter-url",
            &url,
            "--batch-period",
            "1s",
            "--queue-dir",
            &queue_path,
            "--http-listen",
            "127.0.0.1:0",
            "--collector-id",
            "edgemeter-demo",
            "--cluster-id",
            "kube-sim",
            "--source",
            "kubernetes,runai",
            "--runai-url",
            &runai_url,
            "--runai-client-id",
            &runai_id,
            "--runai-client-secret",
            &runai_secret,
            "--runai-metrics-delay",
            "2s",
            "--runai-sample-step",
            "1s",
        ])
        .map_err(|e| DaemonError::Invalid {
            key: "demo flags",
            reason: e.to_string(),
        })?
        .run;

        let kubeconfig =
            kube::config::Kubeconfig::from_yaml(&sim.kubeconfig_yaml()).map_err(|e| {
                DaemonError::Invalid {
                    key: "demo kubeconfig",
                    reason: e.to_string(),
                }
            })?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .map_err(|e| DaemonError::Invalid {
                key: "demo kubeconfig",
                reason: e.to_string(),
            })?;
        let client = kube::Client::try_from(config).map_err(|e| DaemonError::Invalid {
            key: "demo client",
            reason: e.to_string(),
        })?;

        println!(
            "edgemeter demo: simulated cluster at {}, Run:ai control plane at {runai_url}, OpenMeter receiver at {url}",
            sim.url()
        );
        println!(
            "billing every {} for {}; Ctrl-C stops early\n",
            args.interval, args.duration
        );
        let shutdown = CancellationToken::new();
        let timer = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(duration) => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            timer.cancel();
        });
        let result = run_with(run_args, Some(client), shutdown).await;
        // Let the last batch land before the receiver stops.
        tokio::time::sleep(Duration::from_millis(500)).await;
        receiver_stop.cancel();
        sim.stop().await;
        runai_server.stop().await;
        let r = received.lock().unwrap_or_else(PoisonError::into_inner);
        println!("\nreceived {} events in {} requests", r.events, r.requests);
        for (ty, n) in &r.by_type {
            println!("  {ty}: {n}");
        }
        println!("billed seconds per pod/PVC/Run:ai workload:");
        for (name, s) in &r.seconds_by_pod {
            println!("  {name:<32} {s:>6} s");
        }
        let _ = std::fs::remove_dir_all(&queue_dir);
        result
    })
}

fn tempfile_dir() -> Result<std::path::PathBuf, DaemonError> {
    let dir = std::env::temp_dir().join(format!("edgemeter-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| DaemonError::Invalid {
        key: "demo queue directory",
        reason: format!("{}: {e}", dir.display()),
    })?;
    Ok(dir)
}
