//! The built-in Prometheus mapper (`builtin:prometheus`).
//!
//! Turns `prometheus-series` items (one series of a configured query per window, contract
//! 0.4.0) into one event each, either generic (the query's name as type, `value`) or, with a
//! `preset`, under the field names users of cAdvisor's network counters or DCGM's GPU gauges
//! expect.
//!
//! **The items.** `name` is the configured query's name, `uid` a stable id of (query,
//! identifying label values), `labels` the identifying labels (sorted), `annotations` the pod's
//! when the source joined them from the Kubernetes source (else empty), `allocation` empty
//! (seconds 0: not a reason to skip), and `usage` exactly one `usage-integral`: for a counter
//! query (`counter` true) `integral` is the increase inside the window and `mean` none; for a
//! gauge `integral` is the sample-and-hold time integral in unit × seconds and `mean` its mean.
//!
//! **One event per item that measured something**: a sample inside the window (`samples` ≥ 1),
//! or, for a gauge, an earlier sample still held for part of it (`covered-seconds` > 0; its
//! integral is this window's usage, and consecutive windows only add up with it). `source`
//! `prometheus` (config `source`); `id` left to the host (deterministic from the item uid,
//! window start and type: one event per item, so never repeated); `time` the window end.
//!
//! **Generic event** (no `preset`): `type` the query's name (config `event_type`). `data`,
//! with `u` the configured time unit in seconds (`second` by default: 1; `minute`: 60;
//! `hour`: 3600):
//!
//! | field | value |
//! |---|---|
//! | each identifying label | its value (`namespace`, `pod`, …); empty values left out; a label named like a field below is written `label_<name>` |
//! | `query` | the query's name (`item.name`) |
//! | `value` | counter: the increase (`integral`, in the counter's unit, not divided by `u`); gauge: `integral / u` (percent-seconds → percent-minutes with `minute`); a gauge in a rate unit (`…-per-second`, `…_per_second`, `…/s`): `integral`, already an amount (bytes) |
//! | `mean` | gauges: the mean over the covered seconds, in the series' unit |
//! | `unit` | the series' configured unit (`bytes`, `percent`, …), when set |
//! | `samples` | raw samples inside the window |
//! | `first_sample`, `last_sample` | the first and last sample's time, RFC 3339 UTC (`.mmm` when not whole seconds), when known |
//! | `estimated` | `true` when the usage is marked estimated; absent otherwise |
//!
//! **Preset `pod-network`** — queries `pod_network_receive` and `pod_network_transmit`,
//! counters in `bytes` (over cAdvisor's `container_network_{receive,transmit}_bytes_total`,
//! identified by `namespace`, `pod`): `type` `pod-network` (config `event_type`), `data`:
//! `network_receive_bytes` resp. `network_transmit_bytes` (the increase), `pod_name`,
//! `pod_namespace` (labels `pod`, `namespace`), the other identifying labels as they are,
//! `query`, `samples`, `first_sample`, `last_sample`, `estimated`.
//!
//! **Preset `gpu-utilization`** — queries `gpu_utilization` (gauge in `percent`, over DCGM's
//! `DCGM_FI_DEV_GPU_UTIL`) and `gpu_memory_used` (gauge in `MiB` as DCGM reports
//! `DCGM_FI_DEV_FB_USED`; `mebibytes` or `bytes` accepted too): `type` `gpu-utilization`,
//! `data`: `gpu_utilization_<u>s` = ∫ util dt / 100 / u (the GPU's busy time: 80 % for a minute
//! is 48 GPU-seconds), resp. `gpu_memory_used_byte_<u>s` = ∫ MiB dt × 1 048 576 / u (byte-
//! seconds; × 1 for `bytes`), the identifying labels as they are (`pod`, `namespace`, `gpu`,
//! `UUID`, `modelName`, …), `query`, `samples`, `first_sample`, `last_sample`, `estimated`.
//! `<u>s` is `seconds`, `minutes` or `hours`.
//!
//! Under a preset, a query it does not name gets the generic event (type: its name); one it
//! names but of the other kind or another unit gets the generic event too, with a WARN
//! diagnostic (not misread as the preset's field).
//!
//! **Subject.** Config `subject`: `annotation:<key>` (default
//! `annotation:openmeter.io/subject`, the pod annotation when the source joined it) or
//! `label:<key>` (an identifying label); when it has no value, each of `subject_fallbacks`
//! (default `["label:namespace"]`) in order; else the item's uid, with a WARN diagnostic naming
//! the series and what was tried.
//!
//! Numbers are written as integers when whole; otherwise as the nearest double. A value that
//! is not finite is left out with a WARN diagnostic.
//!
//! Config (JSON, every key optional; an unknown key or a bad value is refused naming the key):
//! `preset` (`pod-network` | `gpu-utilization`), `source`, `event_type`, `unit` (`second` |
//! `minute` | `hour`), `subject`, `subject_fallbacks` (a list, may be empty).

pub mod config;
mod map;
pub mod rfc3339;

pub use config::{Config, Preset, SubjectFrom, Unit, parse as parse_config};
pub use map::{
    GPU_UTILIZATION, MEBIBYTE, POD_NETWORK, PresetQuery, is_rate, map, preset_queries,
    preset_renames,
};

use edgemeter_guest::{Guest, ItemKind, MapError, Mapped, MapperInfo, Snapshot};

/// What this mapper says about itself.
pub fn info() -> MapperInfo {
    MapperInfo {
        name: "prometheus".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        description:
            "Prometheus query series to OpenMeter CloudEvents: one event per series and window (type: the query's name, or the presets pod-network, gpu-utilization)"
                .to_owned(),
        // Without a preset the type is each query's name, which only the source's config knows.
        event_types: vec![
            Preset::PodNetwork.event_type().to_owned(),
            Preset::GpuUtilization.event_type().to_owned(),
        ],
        item_kinds: vec![ItemKind::PrometheusSeries],
        // Everything it needs is in the labels, annotations and usage.
        wants_raw_objects: false,
        // One event from each item alone: the host may map a window in slices.
        items_independent: true,
    }
}

/// The component's exports.
#[derive(Debug)]
pub struct PrometheusMapper;

impl Guest for PrometheusMapper {
    fn describe() -> MapperInfo {
        info()
    }

    fn validate_config(config: String) -> Result<(), String> {
        parse_config(&config).map(|_| ())
    }

    fn map_snapshot(snapshot: Snapshot) -> Result<Mapped, MapError> {
        map(&snapshot)
    }
}

#[cfg(target_arch = "wasm32")]
edgemeter_guest::export_mapper!(PrometheusMapper);

#[cfg(test)]
mod tests;
