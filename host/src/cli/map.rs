//! `edgemeter map --input FILE [--mapper builtin:kubernetes|PATH.wasm] [--window START/END]
//! [--unit second|minute|hour] [--mapper-config JSON]`
//!
//! Prints one CloudEvent JSON per line on stdout and nothing else; pods with no allocated
//! time in the window emit nothing. Errors go to stderr with a non-zero exit.
//!
//! The input may also be a recorded Run:ai round (`sources::runai::recording`: the workloads
//! and metrics answers of the control plane in one JSON file): its workloads are billed as
//! the Run:ai source bills them, with `builtin:runai` unless `--mapper` names another.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::cli::mapper_args::{MapperArgs, MapperArgsError};
use crate::input::{self, InputError};
use crate::mapper::MapperError;
use crate::mapper::bindings::SourceKind;
use crate::mapper::validate::DEFAULT_MAX_EVENT_BYTES;
use crate::snapshot::{self, Identity};
use crate::sources::runai::recording;
use crate::window::{self, Window, WindowError};

/// Arguments of `edgemeter map`.
#[derive(Debug, Args)]
pub struct MapArgs {
    /// A Pod, PodList or v1 List (`kubectl get pods -o json`), JSON or YAML, or a recorded
    /// Run:ai round (`{"workloads": [...], "metrics": [...]}`, see docs/mappers.md); `-` for
    /// stdin.
    #[arg(long, short)]
    pub input: PathBuf,

    /// The window to bill, `START/END` as RFC 3339 instants in whole seconds
    /// (e.g. `2026-01-01T00:00:00Z/2026-01-01T00:15:00Z`). Default: the last SCRAPE_INTERVAL.
    #[arg(long)]
    pub window: Option<String>,

    /// Length of the default window, in Go duration syntax (`15s`, `1m30s`).
    #[arg(long, env = "SCRAPE_INTERVAL", default_value = "15s")]
    pub scrape_interval: String,

    #[command(flatten)]
    pub mapper: MapperArgs,
}

/// Why `edgemeter map` failed.
#[derive(Debug, thiserror::Error)]
pub enum MapCommandError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("failed to read {path}")]
    Recording {
        path: String,
        #[source]
        source: crate::sources::runai::recording::RecordingError,
    },
    #[error("invalid --window")]
    Window(#[source] WindowError),
    #[error("invalid --scrape-interval / SCRAPE_INTERVAL")]
    Interval(#[source] WindowError),
    #[error(transparent)]
    MapperArgs(#[from] MapperArgsError),
    #[error(transparent)]
    Mapper(#[from] MapperError),
    #[error("failed to write events to stdout")]
    Output(#[source] std::io::Error),
}

/// Runs `edgemeter map`.
pub fn run(args: MapArgs) -> Result<(), MapCommandError> {
    print(&events(&args)?)
}

/// The events `edgemeter map` prints for `args` (also what `edgemeter mapper test` compares).
pub fn events(args: &MapArgs) -> Result<Vec<crate::event::CloudEvent>, MapCommandError> {
    let window = match &args.window {
        Some(w) => w.parse::<Window>().map_err(MapCommandError::Window)?,
        None => {
            let len =
                window::parse_duration(&args.scrape_interval).map_err(MapCommandError::Interval)?;
            Window::ending_at(jiff::Timestamp::now(), len.max(Duration::from_secs(1)))
        }
    };
    // Check the flags before reading a possibly large input.
    let config = args.mapper.config()?;
    let (name, text) = input::read_text(&args.input)?;
    let identity = Identity {
        collector_id: args.mapper.collector_id.clone(),
        cluster_id: args.mapper.cluster_id.clone(),
    };
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(&text)
        && recording::is_recording(&value)
    {
        let rec = recording::parse(value).map_err(|source| MapCommandError::Recording {
            path: name.clone(),
            source,
        })?;
        let mut mapper_args = args.mapper.clone();
        if mapper_args.mapper == crate::mapper::builtin::KUBERNETES {
            mapper_args.mapper = crate::mapper::builtin::RUNAI.to_owned();
        }
        let mapper = mapper_args.load()?;
        let envelope = snapshot::envelope(SourceKind::Runai, &window, &identity, &config);
        let workloads = rec.workloads.len();
        let items = recording::items(rec, &window);
        if items.is_empty() {
            tracing::info!(%window, workloads, "no Run:ai workload held anything in the window");
            return Ok(Vec::new());
        }
        let snap = crate::mapper::bindings::Snapshot { envelope, items };
        return Ok(mapper.map_events(&snap, DEFAULT_MAX_EVENT_BYTES)?);
    }
    let objects = input::parse(&name, &text)?;
    for (kind, n) in &objects.skipped_kinds {
        tracing::warn!(
            kind,
            count = n,
            "skipping objects that are not Pods or Nodes"
        );
    }
    let mapper = args.mapper.load()?;

    let envelope = snapshot::envelope(SourceKind::Kubernetes, &window, &identity, &config);
    let (snap, skipped) = snapshot::pod_snapshot(
        envelope,
        &objects.pods,
        &objects.node_labels,
        mapper.wants_raw_objects(),
    );
    for s in &skipped {
        tracing::error!(namespace = %s.namespace, pod = %s.name, error = %s.error, "pod skipped: its allocation cannot be computed");
    }
    if snap.items.is_empty() {
        tracing::info!(%window, pods = objects.pods.len(), "no pod has allocated time in the window");
        return Ok(Vec::new());
    }
    Ok(mapper.map_events(&snap, DEFAULT_MAX_EVENT_BYTES)?)
}

/// One event per line on stdout (a closed pipe ends quietly).
fn print(events: &[crate::event::CloudEvent]) -> Result<(), MapCommandError> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for e in events {
        let line = serde_json::to_string(e).map_err(|e| MapCommandError::Output(e.into()))?;
        match writeln!(out, "{line}") {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(MapCommandError::Output(e)),
        }
    }
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(MapCommandError::Output(e)),
        _ => Ok(()),
    }
}
