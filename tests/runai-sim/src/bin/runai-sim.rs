//! `runai-sim`: runs the fake Run:ai control plane as its own process with the built-in demo
//! scenario. Prints `RUNAI_URL=http://...` as the first stdout line, then the credentials it
//! accepts (these are test values, printed on purpose), plays the scenario, keeps serving
//! until SIGINT/SIGTERM, then prints the requests it served.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use jiff::Timestamp;
use runai_sim::demo::{create_org, demo_cluster_instant, demo_steps, generate, play_due};
use runai_sim::{Cluster, Credentials, RunaiSim, SimConfig};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Speed {
    /// Each step when the wall clock reaches it; the scenario clock follows the wall clock.
    Realtime,
    /// Every step at once; the scenario clock then follows the wall clock.
    Instant,
}

/// A fake Run:ai control-plane API on 127.0.0.1.
#[derive(Debug, Parser)]
#[command(name = "runai-sim", version)]
struct Args {
    /// Port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// How to play the demo scenario.
    #[arg(long, value_enum, default_value_t = Speed::Realtime)]
    speed: Speed,
    /// Token lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    token_lifetime_secs: u64,
    /// Accepted client id (v1 `client_credentials`, v2).
    #[arg(long, default_value = "edgemeter-collector")]
    client_id: String,
    /// Accepted client secret.
    #[arg(long, default_value = "sim-client-secret")]
    client_secret: String,
    /// Accepted app id (v1 `app_token`).
    #[arg(long, default_value = "edgemeter-app")]
    app_id: String,
    /// Accepted app secret.
    #[arg(long, default_value = "sim-app-secret")]
    app_secret: String,
    /// Instead of the demo, N generated running workloads (see `--seed`).
    #[arg(long, value_name = "N")]
    generate: Option<usize>,
    /// Seed for `--generate`.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also serve `*_PER_GPU` types on the workload metrics route.
    #[arg(long)]
    per_gpu_on_workload_metrics: bool,
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

async fn run(args: Args) -> Result<(), String> {
    let start = Timestamp::now();
    let start = Timestamp::from_second(start.as_second()).map_err(|e| e.to_string())?;
    let cluster = match (args.generate, args.speed) {
        (Some(n), _) => {
            let c = Cluster::starting_at(start);
            create_org(&c).map_err(|e| e.to_string())?;
            generate(&c, n, args.seed).map_err(|e| e.to_string())?;
            c
        }
        (None, Speed::Instant) => demo_cluster_instant(start).map_err(|e| e.to_string())?,
        (None, Speed::Realtime) => {
            let c = Cluster::starting_at(start);
            create_org(&c).map_err(|e| e.to_string())?;
            c
        }
    };
    let config = SimConfig {
        credentials: Credentials {
            client_id: args.client_id,
            client_secret: args.client_secret,
            app_id: args.app_id,
            app_secret: args.app_secret,
        },
        token_lifetime: Duration::from_secs(args.token_lifetime_secs),
        per_gpu_on_workload_metrics: args.per_gpu_on_workload_metrics,
        port: args.port,
    };
    let sim = RunaiSim::start(cluster.clone(), config)
        .await
        .map_err(|e| {
            format!(
                "{e}: {}",
                std::error::Error::source(&e).map_or(String::new(), ToString::to_string)
            )
        })?;
    let c = sim.credentials();
    println!("RUNAI_URL={}", sim.url());
    println!("RUNAI_CLIENT_ID={}", c.client_id);
    println!("RUNAI_CLIENT_SECRET={}", c.client_secret);
    println!("RUNAI_APP_ID={}", c.app_id);
    println!("RUNAI_APP_SECRET={}", c.app_secret);
    let steps = demo_steps();
    let mut next = match (args.generate, args.speed) {
        (None, Speed::Realtime) => 0,
        _ => steps.len(),
    };
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {
                let now = Timestamp::now();
                let now = Timestamp::from_second(now.as_second()).map_err(|e| e.to_string())?;
                if now > cluster.now() {
                    cluster.set_time(now).map_err(|e| e.to_string())?;
                }
                let elapsed = (cluster.now().as_second() - start.as_second()).max(0) as u64;
                play_due(&cluster, &steps, &mut next, elapsed).map_err(|e| e.to_string())?;
            }
        }
    }
    for (route, n) in sim.requests().iter() {
        println!("requests {route:?} {n}");
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("runai-sim: {message}");
            ExitCode::FAILURE
        }
    }
}
