//! Mapper flags shared by `edgemeter map` and `edgemeter run`.

use std::path::PathBuf;

use clap::Args;
use serde_json::Value;

use crate::mapper::{LoadedMapper, MapperError, MapperLimits, MapperRuntime, builtin};
use crate::window;

/// Which mapper, its configuration and its limits.
#[derive(Debug, Clone, Args)]
pub struct MapperArgs {
    /// `builtin:kubernetes` or the path of a mapper component (`.wasm`); the Kubernetes
    /// source's mapper (the Run:ai source has its own: `--runai-mapper`, default `builtin:runai`).
    #[arg(long, env = "EDGEMETER_MAPPER", default_value = builtin::KUBERNETES)]
    pub mapper: String,

    /// Mapper configuration as a JSON object, e.g. `{"event_type": "pod-usage"}`.
    #[arg(long, env = "EDGEMETER_MAPPER_CONFIG", default_value = "{}")]
    pub mapper_config: String,

    /// Unit of the `<field>_per_<unit>` companions (sets the mapper config key `unit`).
    #[arg(long, env = "EDGEMETER_UNIT", value_enum)]
    pub unit: Option<Unit>,

    /// Collector id passed to mappers (defaults to the pod name in Kubernetes).
    #[arg(long, env = "EDGEMETER_COLLECTOR_ID", default_value = "edgemeter")]
    pub collector_id: String,

    /// Cluster id passed to mappers.
    #[arg(long, env = "EDGEMETER_CLUSTER_ID", default_value = "")]
    pub cluster_id: String,

    /// Memory a mapper call may use, in MiB.
    #[arg(long, env = "EDGEMETER_MAPPER_MEMORY_MIB", default_value_t = 256)]
    pub mapper_memory_mib: usize,

    /// Time a mapper call may take (Go duration syntax), plus --mapper-timeout-per-item for
    /// each snapshot item.
    #[arg(long, env = "EDGEMETER_MAPPER_TIMEOUT", default_value = "2s")]
    pub mapper_timeout: String,

    /// Extra time a mapper call may take per snapshot item (Go duration syntax, e.g. 500us).
    #[arg(
        long,
        env = "EDGEMETER_MAPPER_TIMEOUT_PER_ITEM",
        default_value = "500us"
    )]
    pub mapper_timeout_per_item: String,

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

/// Why the mapper flags are unusable.
#[derive(Debug, thiserror::Error)]
pub enum MapperArgsError {
    #[error("invalid --mapper-timeout / EDGEMETER_MAPPER_TIMEOUT")]
    Timeout(#[source] window::WindowError),
    #[error("invalid --mapper-timeout-per-item / EDGEMETER_MAPPER_TIMEOUT_PER_ITEM")]
    TimeoutPerItem(#[source] window::WindowError),
    #[error(
        "invalid --mapper-config / EDGEMETER_MAPPER_CONFIG: {reason}; pass a JSON object such as '{{\"unit\": \"minute\"}}'"
    )]
    Config { reason: String },
    #[error(transparent)]
    Mapper(#[from] MapperError),
}

/// Default cache directory for compiled mappers.
pub fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("edgemeter").join("mappers"))
}

impl MapperArgs {
    /// The mapper configuration JSON, with `--unit` merged in.
    pub fn config(&self) -> Result<String, MapperArgsError> {
        let mut cfg: Value =
            serde_json::from_str(&self.mapper_config).map_err(|e| MapperArgsError::Config {
                reason: e.to_string(),
            })?;
        let Some(obj) = cfg.as_object_mut() else {
            return Err(MapperArgsError::Config {
                reason: "not a JSON object".to_owned(),
            });
        };
        if let Some(unit) = self.unit {
            let u = match unit {
                Unit::Second => "second",
                Unit::Minute => "minute",
                Unit::Hour => "hour",
            };
            obj.insert("unit".to_owned(), Value::String(u.to_owned()));
        }
        Ok(cfg.to_string())
    }

    /// Builds the runtime, loads the mapper and checks its configuration.
    pub fn load(&self) -> Result<LoadedMapper, MapperArgsError> {
        let timeout =
            window::parse_duration(&self.mapper_timeout).map_err(MapperArgsError::Timeout)?;
        let per_item = window::parse_duration(&self.mapper_timeout_per_item)
            .map_err(MapperArgsError::TimeoutPerItem)?;
        let config = self.config()?;
        let cache_dir = match self.cache_dir.as_deref() {
            Some("none") => None,
            Some(dir) => Some(PathBuf::from(dir)),
            None => default_cache_dir(),
        };
        let limits = MapperLimits {
            memory_bytes: self.mapper_memory_mib.saturating_mul(1024 * 1024),
            deadline: timeout,
            deadline_per_item: per_item,
            ..MapperLimits::default()
        };
        let runtime = MapperRuntime::new(limits, cache_dir)?;
        let (name, wasm) = builtin::resolve(&self.mapper)?;
        let mapper = runtime.load(&name, &wasm)?;
        mapper.validate_config(&config)?;
        Ok(mapper)
    }
}
