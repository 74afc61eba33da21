//! `kube-sim`: runs the fake API server as its own process (for a collector under test that must
//! be measured alone, or for poking at it with kubectl). Prints `KUBE_SIM_URL=http://...` as the
//! first stdout line, plays the chosen scenario, keeps serving until SIGINT/SIGTERM, then prints
//! the API requests it served.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use jiff::Timestamp;
use kube_sim::{
    Cluster, GeneratorConfig, KubeSim, Scenario, ScenarioPlayer, SimConfig, demo_scenario, generate,
};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Speed {
    /// Each step when the wall clock reaches it (scenario start = now).
    Realtime,
    /// Every step at once, timestamps still from the scenario.
    Instant,
}

/// A fake Kubernetes API server on 127.0.0.1.
#[derive(Debug, Parser)]
#[command(name = "kube-sim", version)]
struct Args {
    /// Play the built-in demo scenario.
    #[arg(long, conflicts_with_all = ["generate", "file"])]
    demo: bool,
    /// Play N generated pods (see `--seed`).
    #[arg(long, value_name = "N")]
    generate: Option<usize>,
    /// Seed for `--generate`.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Play a scenario file (`.json`, otherwise YAML).
    #[arg(long, value_name = "PATH", conflicts_with = "generate")]
    file: Option<PathBuf>,
    /// How to play the scenario.
    #[arg(long, value_enum, default_value_t = Speed::Realtime)]
    speed: Speed,
    /// Write a kubeconfig pointing at the server here.
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    /// Idle-watch bookmark interval in milliseconds.
    #[arg(long, default_value_t = 5000)]
    bookmark_interval_ms: u64,
}

fn scenario(args: &Args) -> Result<Option<Scenario>, String> {
    if args.demo {
        return Ok(Some(demo_scenario()));
    }
    if let Some(pods) = args.generate {
        let config = GeneratorConfig {
            seed: args.seed,
            pods,
            ..GeneratorConfig::default()
        };
        return Ok(Some(generate(&config).scenario));
    }
    let Some(path) = &args.file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("failed to read {}: {e}", path.display()))?;
    let parsed = if path.extension().is_some_and(|e| e == "json") {
        Scenario::from_json(&text)
    } else {
        Scenario::from_yaml(&text)
    };
    parsed
        .map(Some)
        .map_err(|e| format!("failed to read scenario {}: {e}", path.display()))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

async fn run(args: Args) -> Result<(), String> {
    let scenario = scenario(&args)?;
    let cluster = Cluster::new();
    let config = SimConfig {
        bookmark_interval: Duration::from_millis(args.bookmark_interval_ms),
        ..SimConfig::default()
    };
    let sim = KubeSim::start(cluster.clone(), config)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(path) = &args.kubeconfig {
        std::fs::write(path, sim.kubeconfig_yaml())
            .map_err(|e| format!("failed to write {}: {e}", path.display()))?;
    }
    println!("KUBE_SIM_URL={}", sim.url());
    if let Some(scenario) = scenario {
        let start = Timestamp::now().max(cluster.now());
        let mut player = ScenarioPlayer::new(&scenario, start);
        let played = match args.speed {
            Speed::Instant => player.run_to_end(&cluster).map(drop),
            Speed::Realtime => {
                tokio::select! {
                    r = player.play_realtime(&cluster) => r,
                    () = shutdown_signal() => {
                        report(&sim);
                        return Ok(());
                    }
                }
            }
        };
        played.map_err(|e| {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            msg
        })?;
        println!(
            "scenario done at resourceVersion {}",
            cluster.resource_version()
        );
    }
    shutdown_signal().await;
    report(&sim);
    Ok(())
}

fn report(sim: &KubeSim) {
    let counts = sim.requests();
    for (verb, kind, n) in counts.iter() {
        let bytes = kind.map_or(0, |k| counts.bytes(verb, k));
        let kind = kind.map_or_else(|| "-".to_owned(), |k| k.to_string());
        println!("requests {verb:?} {kind} {n} bytes {bytes}");
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("kube-sim: {message}");
            ExitCode::FAILURE
        }
    }
}
