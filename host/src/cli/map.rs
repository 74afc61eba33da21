//! `edgemeter map --input FILE [--mapper builtin:kubernetes|PATH.wasm] [--window START/END]
//! [--unit second|minute|hour] [--mapper-config JSON]`
//!
//! Prints one CloudEvent JSON per line on stdout and nothing else; pods with no allocated
//! time in the window emit nothing. Errors go to stderr with a non-zero exit.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde_json::Value;

use crate::input::{self, InputError};
use crate::mapper::bindings::SourceKind;
use crate::mapper::validate::DEFAULT_MAX_EVENT_BYTES;
use crate::mapper::{MapperError, MapperLimits, MapperRuntime, builtin};
use crate::snapshot::{self, Identity};
use crate::window::{self, Window, WindowError};

/// Arguments of `edgemeter map`.
#[derive(Debug, Args)]
pub struct MapArgs {
    /// A Pod, PodList or v1 List (`kubectl get pods -o json`), JSON or YAML; `-` for stdin.
    #[arg(long, short)]
    pub input: PathBuf,

    /// `builtin:kubernetes` or the path of a mapper component (`.wasm`).
    #[arg(long, env = "EDGEMETER_MAPPER", default_value = builtin::KUBERNETES)]
    pub mapper: String,

    /// The window to bill, `START/END` as RFC 3339 instants in whole seconds
    /// (e.g. `2026-01-01T00:00:00Z/2026-01-01T00:15:00Z`). Default: the last SCRAPE_INTERVAL.
    #[arg(long)]
    pub window: Option<String>,

    /// Length of the default window, in Go duration syntax (`15s`, `1m30s`).
    #[arg(long, env = "SCRAPE_INTERVAL", default_value = "15s")]
    pub scrape_interval: String,

    /// Unit of the `<field>_per_<unit>` companions (sets the mapper config key `unit`).
    #[arg(long, value_enum)]
    pub unit: Option<Unit>,

    /// Mapper configuration as a JSON object, e.g. `{"event_type": "pod-usage"}`.
    #[arg(long, env = "EDGEMETER_MAPPER_CONFIG", default_value = "{}")]
    pub mapper_config: String,

    /// Collector id passed to mappers.
    #[arg(long, env = "EDGEMETER_COLLECTOR_ID", default_value = "edgemeter-cli")]
    pub collector_id: String,

    /// Cluster id passed to mappers.
    #[arg(long, env = "EDGEMETER_CLUSTER_ID", default_value = "")]
    pub cluster_id: String,

    /// Memory a mapper call may use, in MiB.
    #[arg(long, env = "EDGEMETER_MAPPER_MEMORY_MIB", default_value_t = 256)]
    pub mapper_memory_mib: usize,

    /// Time a mapper call may take (Go duration syntax).
    #[arg(long, env = "EDGEMETER_MAPPER_TIMEOUT", default_value = "2s")]
    pub mapper_timeout: String,

    /// Directory for compiled mappers (default: $XDG_CACHE_HOME/edgemeter or
    /// ~/.cache/edgemeter); `none` disables the cache.
    #[arg(long, env = "EDGEMETER_CACHE_DIR")]
    pub cache_dir: Option<String>,
}

/// `--unit` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Unit {
    Second,
    Minute,
    Hour,
}

/// Why `edgemeter map` failed.
#[derive(Debug, thiserror::Error)]
pub enum MapCommandError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("invalid --window")]
    Window(#[source] WindowError),
    #[error("invalid --scrape-interval / SCRAPE_INTERVAL")]
    Interval(#[source] WindowError),
    #[error("invalid --mapper-timeout / EDGEMETER_MAPPER_TIMEOUT")]
    Timeout(#[source] WindowError),
    #[error(
        "invalid --mapper-config: {reason}; pass a JSON object such as '{{\"unit\": \"minute\"}}'"
    )]
    MapperConfig { reason: String },
    #[error(transparent)]
    Mapper(#[from] MapperError),
    #[error("failed to write events to stdout")]
    Output(#[source] std::io::Error),
}

/// Default cache directory for compiled mappers.
pub fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("edgemeter").join("mappers"))
}

fn mapper_config(args: &MapArgs) -> Result<String, MapCommandError> {
    let mut cfg: Value =
        serde_json::from_str(&args.mapper_config).map_err(|e| MapCommandError::MapperConfig {
            reason: e.to_string(),
        })?;
    let Some(obj) = cfg.as_object_mut() else {
        return Err(MapCommandError::MapperConfig {
            reason: "not a JSON object".to_owned(),
        });
    };
    if let Some(unit) = args.unit {
        let u = match unit {
            Unit::Second => "second",
            Unit::Minute => "minute",
            Unit::Hour => "hour",
        };
        obj.insert("unit".to_owned(), Value::String(u.to_owned()));
    }
    Ok(cfg.to_string())
}

/// Runs `edgemeter map`.
pub fn run(args: MapArgs) -> Result<(), MapCommandError> {
    let window = match &args.window {
        Some(w) => w.parse::<Window>().map_err(MapCommandError::Window)?,
        None => {
            let len =
                window::parse_duration(&args.scrape_interval).map_err(MapCommandError::Interval)?;
            Window::ending_at(jiff::Timestamp::now(), len.max(Duration::from_secs(1)))
        }
    };
    let timeout = window::parse_duration(&args.mapper_timeout).map_err(MapCommandError::Timeout)?;
    let config = mapper_config(&args)?;
    let objects = input::read(&args.input)?;
    for (kind, n) in &objects.skipped_kinds {
        tracing::warn!(
            kind,
            count = n,
            "skipping objects that are not Pods or Nodes"
        );
    }

    let cache_dir = match args.cache_dir.as_deref() {
        Some("none") => None,
        Some(dir) => Some(PathBuf::from(dir)),
        None => default_cache_dir(),
    };
    let limits = MapperLimits {
        memory_bytes: args.mapper_memory_mib.saturating_mul(1024 * 1024),
        deadline: timeout,
        ..MapperLimits::default()
    };
    let runtime = MapperRuntime::new(limits, cache_dir)?;
    let (name, wasm) = builtin::resolve(&args.mapper)?;
    let mapper = runtime.load(&name, &wasm)?;
    mapper.validate_config(&config)?;

    let identity = Identity {
        collector_id: args.collector_id.clone(),
        cluster_id: args.cluster_id.clone(),
    };
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
        return Ok(());
    }
    let events = mapper.map_events(&snap, DEFAULT_MAX_EVENT_BYTES)?;

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for e in &events {
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
