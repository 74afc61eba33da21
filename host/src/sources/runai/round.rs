//! One poll of the Run:ai source, planned and applied (pure, no I/O, no clock).
//!
//! # A round
//!
//! The poller ([`super::source`]) reads the control plane once per billing interval, for a
//! **span** `[from, to)` of whole grid windows: `from` is where the last complete round ended
//! (at start: the stored watermark), `to` the last grid boundary at or before
//! `now − metrics_delay` (Run:ai's metrics arrive some seconds late; a window is only read
//! once a sample at or after its end can exist), at most `max_span` after `from` (a long
//! downtime is read in steps). A round is **complete or discarded**: the workloads listing (all
//! pages), the workloads deleted since `from` (listed apart: the API hides deleted workloads
//! from the default listing), the pods, and the metrics of every candidate workload all
//! answered; any failure discards the round and it is retried. Only a complete round moves
//! `from`; the source bills a window only once a complete round covered it
//! ([`super::super::MeteredSource::ready_until`]).
//!
//! # Candidates
//!
//! A workload that held resources at some time in `[from, to)` either holds now (its phase is
//! a holding one) or left its holding phase inside the span, so its `phaseUpdatedAt` (or
//! `completedAt`/`deletedAt`) is at or after `from`. Metrics are fetched only for those
//! ([`candidates`]); the others cannot have used anything in the span.
//!
//! # Samples on a fixed grid
//!
//! Metrics are asked for `[floor(from − step), ceil(to + step)]` on multiples of the sample
//! step with one sample per step ([`sample_range`]), so every window's edges lie between two
//! samples and the same instants are sampled by every round and every restart: a window billed
//! again after a crash gets the same integrals as the first time.
//!
//! # Series
//!
//! [`SeriesStore`] keeps, per workload, the samples of each series (metric, pod, GPU) merged
//! across rounds in time order; [`SeriesStore::usage`] integrates them over a window
//! ([`super::usage::integrate`], trapezoid, gaps over two steps not bridged) into the
//! contract's `usage-integral`s, and [`SeriesStore::forget_before`] drops what no later
//! window needs (all but the last sample before the watermark).

use std::collections::BTreeMap;

use super::hold::holds;
use super::models::{MetricSet, Sample, Workload};
use super::usage::integrate;
use crate::mapper::bindings::UsageIntegral;
use crate::window::Window;

/// How rounds are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundPlan {
    /// The billing grid (the daemon's interval), seconds.
    pub interval: u64,
    /// How far behind now a span ends, seconds.
    pub metrics_delay: u64,
    /// The most seconds one round reads (a whole number of intervals, at least one).
    pub max_span: u64,
    /// Seconds between two samples asked of the API.
    pub sample_step: u64,
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl RoundPlan {
    /// The span the next round reads, or `None` while no grid boundary has passed since `from`.
    pub fn span(&self, from: i64, now: i64) -> Option<Window> {
        crate::sources::poll::Pacing {
            interval: self.interval,
            delay: self.metrics_delay,
            max_span: self.max_span,
            retry: std::time::Duration::ZERO,
        }
        .span(from, now)
    }

    /// The instants asked of the API for `span`: start and end on the sample grid, one step
    /// beyond the span on each side, and the number of samples (one per step, both ends).
    pub fn sample_range(&self, span: &Window) -> (i64, i64, u32) {
        let step = i(self.sample_step.max(1));
        let start = (span.start() - step).div_euclid(step) * step;
        let end_raw = span.end() + step;
        let end = end_raw.div_euclid(step) * step
            + if end_raw.rem_euclid(step) == 0 {
                0
            } else {
                step
            };
        let n = (end - start) / step + 1;
        (start, end, u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// The most seconds a span may have so that [`RoundPlan::sample_range`] stays within the
    /// API's 1,000 samples: `(1000 − 3) × step`, on the billing grid.
    pub fn max_span_for_samples(interval: u64, sample_step: u64) -> u64 {
        let most = 997u64.saturating_mul(sample_step.max(1));
        let interval = interval.max(1);
        (most / interval).max(1) * interval
    }
}

/// The ids of the workloads that may have held resources in `[from, …)`.
pub fn candidates(workloads: &[Workload], from: i64) -> Vec<String> {
    let since = |t: Option<jiff::Timestamp>| t.is_some_and(|t| t.as_second() >= from);
    workloads
        .iter()
        .filter(|w| {
            w.phase.as_deref().and_then(holds).unwrap_or(false)
                || since(w.phase_updated_at)
                || since(w.completed_at)
                || since(w.deleted_at)
        })
        .map(|w| w.id.clone())
        .collect()
}

/// The unit of a Run:ai metric type, as the contract names it.
pub fn unit_of(metric: &str) -> &'static str {
    if metric.contains("BANDWIDTH") {
        "bytes-per-second"
    } else if metric.contains("BYTES") {
        "bytes"
    } else if metric.contains("UTILIZATION") || metric.contains("ACTIVITY") {
        "percent"
    } else if metric.contains("CORES") {
        "cores"
    } else if metric.starts_with("GPU_ALLOCATION") {
        "gpus"
    } else {
        "count"
    }
}

/// One series of one workload.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SeriesKey {
    pub metric: String,
    /// Pod id, for a per-GPU series read from a pod.
    pub pod: Option<String>,
    /// `labels.gpu`, for a per-GPU series.
    pub gpu: Option<String>,
}

/// Samples per workload and series, merged across rounds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesStore {
    by_workload: BTreeMap<String, BTreeMap<SeriesKey, Vec<Sample>>>,
    /// The sample step the series were asked with (gap detection).
    step: u64,
}

impl SeriesStore {
    pub fn new(sample_step: u64) -> Self {
        SeriesStore {
            by_workload: BTreeMap::new(),
            step: sample_step.max(1),
        }
    }

    /// The sample step, seconds.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Workloads with samples kept.
    pub fn workloads(&self) -> usize {
        self.by_workload.len()
    }

    /// Samples kept in all.
    pub fn samples(&self) -> usize {
        self.by_workload
            .values()
            .flat_map(|s| s.values())
            .map(Vec::len)
            .sum()
    }

    /// Adds one metrics answer of `workload` (from the pod `pod` for the pod route).
    pub fn add(&mut self, workload: &str, pod: Option<&str>, set: &MetricSet) {
        let series = self.by_workload.entry(workload.to_owned()).or_default();
        for m in &set.measurements {
            let key = SeriesKey {
                metric: m.metric_type.clone(),
                pod: pod
                    .map(str::to_owned)
                    .or_else(|| m.labels.get("podId").cloned()),
                gpu: m.labels.get("gpu").cloned(),
            };
            let kept = series.entry(key).or_default();
            merge(kept, &m.samples);
        }
    }

    /// The usage integrals of `workload` over `window`, sorted by metric, pod, GPU;
    /// `held_seconds` is what it held in the window (a series covering less than that by more
    /// than one step is marked estimated).
    pub fn usage(&self, workload: &str, window: &Window, held_seconds: u64) -> Vec<UsageIntegral> {
        let Some(series) = self.by_workload.get(workload) else {
            return Vec::new();
        };
        let step = self.step as f64;
        series
            .iter()
            .filter_map(|(key, samples)| {
                let integral = integrate(samples, window, 2.0 * step);
                if integral.samples == 0 {
                    return None;
                }
                Some(UsageIntegral {
                    metric: key.metric.clone(),
                    unit: unit_of(&key.metric).to_owned(),
                    gpu: key.gpu.clone(),
                    pod: key.pod.clone(),
                    integral: integral.value,
                    covered_seconds: integral.covered_seconds,
                    mean: integral.mean(),
                    samples: u32::try_from(integral.samples).unwrap_or(u32::MAX),
                    estimated: integral.covered_seconds + step < held_seconds as f64,
                    counter: false,
                    first_sample_ms: None,
                    last_sample_ms: None,
                })
            })
            .collect()
    }

    /// Drops the samples no window from `watermark` on needs (keeping the last one before it,
    /// which bounds the first segment), and workloads left without any.
    pub fn forget_before(&mut self, watermark: i64) {
        let at = |s: &Sample| s.timestamp.as_second();
        for series in self.by_workload.values_mut() {
            for samples in series.values_mut() {
                let before = samples.partition_point(|s| at(s) < watermark);
                if before > 1 {
                    samples.drain(..before - 1);
                }
            }
            series.retain(|_, s| s.iter().any(|x| at(x) >= watermark));
        }
        self.by_workload.retain(|_, s| !s.is_empty());
    }

    /// Keeps only the workloads `keep` accepts (the others are gone and billed).
    pub fn retain_workloads(&mut self, keep: impl Fn(&str) -> bool) {
        self.by_workload.retain(|id, _| keep(id));
    }
}

/// Merges `new` samples into `kept` (both in time order): a sample at an instant already kept
/// replaces it (the newer answer wins).
fn merge(kept: &mut Vec<Sample>, new: &[Sample]) {
    let mut sorted: Vec<Sample> = new.to_vec();
    sorted.sort_by_key(|s| s.timestamp);
    sorted.dedup_by_key(|s| s.timestamp);
    if kept
        .last()
        .is_none_or(|l| sorted.first().is_none_or(|f| l.timestamp < f.timestamp))
    {
        kept.extend(sorted);
        return;
    }
    let mut by_time: BTreeMap<jiff::Timestamp, f64> =
        kept.iter().map(|s| (s.timestamp, s.value)).collect();
    for s in sorted {
        by_time.insert(s.timestamp, s.value);
    }
    *kept = by_time
        .into_iter()
        .map(|(timestamp, value)| Sample { timestamp, value })
        .collect();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::runai::models::Measurement;

    fn plan() -> RoundPlan {
        RoundPlan {
            interval: 15,
            metrics_delay: 30,
            max_span: 3600,
            sample_step: 5,
        }
    }

    fn at(t: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(t).expect("time")
    }

    fn set(metric: &str, gpu: Option<&str>, points: &[(i64, f64)]) -> MetricSet {
        MetricSet {
            measurements: vec![Measurement {
                metric_type: metric.into(),
                labels: gpu
                    .map(|g| BTreeMap::from([("gpu".to_owned(), g.to_owned())]))
                    .unwrap_or_default(),
                samples: points
                    .iter()
                    .map(|&(t, value)| Sample {
                        timestamp: at(t),
                        value,
                    })
                    .collect(),
                gaps: 0,
            }],
            missing_types: vec![],
        }
    }

    #[test]
    fn a_span_ends_on_the_grid_behind_the_metrics_delay_and_is_capped() {
        let p = plan();
        // now 1000: ready 970 → 960.
        assert_eq!(p.span(900, 1000), Window::new(900, 960));
        assert_eq!(p.span(960, 1000), None);
        assert_eq!(p.span(960, 1004), None);
        assert_eq!(p.span(960, 1005), Window::new(960, 975));
        // A day of downtime: one hour at a time.
        assert_eq!(p.span(0, 86_400), Window::new(0, 3600));
    }

    #[test]
    fn samples_are_asked_on_the_step_grid_one_step_beyond_the_span() {
        let p = plan();
        let w = Window::new(900, 915).expect("w");
        assert_eq!(p.sample_range(&w), (895, 920, 6));
        let p7 = RoundPlan {
            sample_step: 7,
            ..plan()
        };
        // 900 − 7 = 893 → 889; 915 + 7 = 922 → 924.
        assert_eq!(p7.sample_range(&w), (889, 924, 6));
        let most = RoundPlan::max_span_for_samples(15, 5);
        assert_eq!(most, 4980);
        let (_, _, n) = p.sample_range(&Window::new(0, i(most)).expect("w"));
        assert!(n <= 1000, "{n}");
    }

    #[test]
    fn candidates_hold_now_or_changed_inside_the_span() {
        let w = |id: &str, phase: &str, updated: i64| Workload {
            id: id.into(),
            phase: Some(phase.into()),
            phase_updated_at: Some(at(updated)),
            ..Workload::default()
        };
        let list = vec![
            w("running", "Running", 10),
            w("pending", "Pending", 10),
            w("done-before", "Completed", 50),
            w("done-inside", "Completed", 150),
        ];
        assert_eq!(candidates(&list, 100), ["running", "done-inside"]);
    }

    #[test]
    fn series_merge_across_rounds_and_integrate_per_window() {
        let mut s = SeriesStore::new(5);
        s.add(
            "w",
            None,
            &set(
                "GPU_UTILIZATION",
                None,
                &[(895, 50.0), (900, 50.0), (905, 50.0)],
            ),
        );
        // The next round overlaps by a step on each side.
        s.add(
            "w",
            None,
            &set(
                "GPU_UTILIZATION",
                None,
                &[(905, 50.0), (910, 50.0), (915, 50.0), (920, 50.0)],
            ),
        );
        s.add(
            "w",
            Some("pod-1"),
            &set(
                "GPU_UTILIZATION_PER_GPU",
                Some("0"),
                &[(900, 20.0), (905, 20.0), (910, 20.0), (915, 20.0)],
            ),
        );
        let w = Window::new(900, 915).expect("w");
        let u = s.usage("w", &w, 15);
        assert_eq!(u.len(), 2);
        assert_eq!(
            (u[0].metric.as_str(), u[0].integral),
            ("GPU_UTILIZATION", 750.0)
        );
        assert_eq!(u[0].unit, "percent");
        assert!(!u[0].estimated);
        assert_eq!(u[1].gpu.as_deref(), Some("0"));
        assert_eq!((u[1].pod.as_deref(), u[1].integral), (Some("pod-1"), 300.0));
        s.forget_before(915);
        // Kept: the last sample before 915 and those from it on (910, 915, 920 and 910, 915).
        assert_eq!(s.samples(), 5);
    }

    #[test]
    fn a_series_missing_part_of_the_held_time_is_estimated() {
        let mut s = SeriesStore::new(5);
        s.add(
            "w",
            None,
            &set("CPU_USAGE_CORES", None, &[(900, 2.0), (905, 2.0)]),
        );
        let u = s.usage("w", &Window::new(900, 915).expect("w"), 15);
        assert_eq!(u[0].integral, 10.0);
        assert!(u[0].estimated);
        assert_eq!(unit_of("CPU_USAGE_CORES"), "cores");
        assert_eq!(
            unit_of("GPU_NVLINK_RECEIVED_BANDWIDTH_PER_GPU"),
            "bytes-per-second"
        );
        assert_eq!(unit_of("GPU_MEMORY_USAGE_BYTES_PER_GPU"), "bytes");
        assert_eq!(unit_of("GPU_ALLOCATION"), "gpus");
    }
}
