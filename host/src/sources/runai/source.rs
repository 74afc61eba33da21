//! The Run:ai source: a poller reading the control plane in complete rounds
//! ([`super::round`]) and the [`MeteredSource`] the biller bills from.
//!
//! # Flow
//!
//! A background task (the poller) reads one round per billing interval: every workload (all
//! pages), the workloads deleted since the round's start, their pods (for per-GPU series), the
//! project and department names (cached, refreshed every [`RunaiSourceConfig::names_refresh`]
//! or when an id is unknown), and the metrics of every candidate workload. A complete round is
//! sent to the source, which applies it: the listing to the [`RunaiLedger`] (what each workload
//! held, when), the samples to the [`SeriesStore`]. A failed call (after the client's own
//! retries) discards the round; it is logged, counted, and tried again after
//! [`RunaiSourceConfig::retry`]: the windows it would have covered wait, and are billed in full
//! once a round succeeds. After downtime the first rounds read the missed span from the API's
//! history (timestamps and metrics), [`RoundPlan::max_span`] at a time.
//!
//! # State stored with each window
//!
//! The ledger's changed entries ([`super::ledger`], "Stored records"): what each workload was
//! seen holding, since when, with what. The samples are not stored: a restart reads the
//! metrics again from the stored watermark on (the API keeps their history, and the sample
//! grid is fixed), so a window billed again gets the same items, integrals and ids. What
//! cannot be read again — a workload that held and released while the collector could not
//! see it — is billed from its creation (or with its requested resources when its allocation
//! was never seen) and marked estimated.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};

use super::client::{ClientError, ListQuery, MetricsQuery, RunaiClient};
use super::ledger::RunaiLedger;
use super::models::{MetricSet, Pod, Workload};
use super::round::{RoundPlan, SeriesStore, candidates};
use super::token::Clock;
use crate::mapper::bindings::{Item, SourceKind};
use crate::metrics::Metrics;
use crate::sources::poll::{Coverage, Input, Pacing, Poller, Reader};
use crate::sources::{MeteredSource, Source};
use crate::window::{Window, rfc3339};

/// The watermark key and metrics label of this source.
pub const SOURCE_NAME: &str = "runai";

/// Metrics calls of a round in flight at once (the client retries each on its own).
pub const CONCURRENT_CALLS: usize = 8;

/// Metric types read per workload (`GET /api/v1/workloads/{id}/metrics`), all in one call.
pub const WORKLOAD_METRICS: &[&str] = &[
    "GPU_ALLOCATION",
    "GPU_UTILIZATION",
    "GPU_MEMORY_USAGE_BYTES",
    "CPU_USAGE_CORES",
    "CPU_MEMORY_USAGE_BYTES",
    "CPU_LIMIT_CORES",
    "CPU_MEMORY_LIMIT_BYTES",
];

/// Per-GPU metric types read per pod of a workload holding GPUs
/// (`GET /api/v1/workloads/{id}/pods/{podId}/metrics`, where the spec serves them), all in
/// one call.
pub const GPU_METRICS: &[&str] = &[
    "GPU_UTILIZATION_PER_GPU",
    "GPU_MEMORY_USAGE_BYTES_PER_GPU",
    "GPU_NVLINK_RECEIVED_BANDWIDTH_PER_GPU",
    "GPU_NVLINK_TRANSMITTED_BANDWIDTH_PER_GPU",
    "GPU_PCIE_RECEIVED_BANDWIDTH_PER_GPU",
    "GPU_PCIE_TRANSMITTED_BANDWIDTH_PER_GPU",
];

/// How the source polls.
#[derive(Debug, Clone)]
pub struct RunaiSourceConfig {
    pub plan: RoundPlan,
    /// Wait after a failed round before the next try.
    pub retry: Duration,
    /// Metric types per workload; empty reads none.
    pub workload_metrics: Vec<String>,
    /// Per-GPU metric types per pod; empty reads no pods and no per-GPU series.
    pub gpu_metrics: Vec<String>,
    /// How long project and department names are cached.
    pub names_refresh: Duration,
}

impl RunaiSourceConfig {
    /// The defaults for a billing `interval` (seconds): samples every 15 s (at most the
    /// interval), windows read 30 s behind now, an hour (or what 1,000 samples allow) per
    /// round, a failed round retried after 5 s, names cached 10 min.
    pub fn new(interval: u64) -> Self {
        let sample_step = interval.clamp(1, 15);
        RunaiSourceConfig {
            plan: RoundPlan {
                interval,
                metrics_delay: 30,
                max_span: RoundPlan::max_span_for_samples(interval, sample_step).min(3600),
                sample_step,
            },
            retry: Duration::from_secs(5),
            workload_metrics: WORKLOAD_METRICS.iter().map(|s| (*s).to_owned()).collect(),
            gpu_metrics: GPU_METRICS.iter().map(|s| (*s).to_owned()).collect(),
            names_refresh: Duration::from_secs(600),
        }
    }
}

/// One complete round.
#[derive(Debug)]
pub struct Round {
    pub span: Window,
    pub observed_at: i64,
    /// Every workload listed, then those deleted since the span's start.
    pub workloads: Vec<Workload>,
    /// (workload id, pod id for the pod route, answer).
    pub metrics: Vec<(String, Option<String>, MetricSet)>,
    /// Calls made (pages and metrics calls; retries not counted).
    pub calls: u64,
    /// Listed items that did not decode (skipped, logged).
    pub malformed: usize,
}

/// Counters shared with the poller.
#[derive(Debug, Default)]
struct Counters {
    rounds: AtomicU64,
    failed: AtomicU64,
    calls: AtomicU64,
    malformed: AtomicU64,
    mismatches: AtomicU64,
}

/// Counts already copied to the metrics.
#[derive(Debug, Default, Clone, Copy)]
struct Published {
    rounds: u64,
    failed: u64,
    calls: u64,
    malformed: u64,
    mismatches: u64,
}

/// The Run:ai source.
#[derive(Debug)]
pub struct RunaiSource {
    ledger: RunaiLedger,
    series: SeriesStore,
    coverage: Coverage,
    poller: Poller<Round>,
    counters: Arc<Counters>,
    published: Published,
    unknown_logged: BTreeSet<String>,
    mismatch_logged: std::sync::Mutex<BTreeSet<String>>,
}

impl RunaiSource {
    /// Starts the poller reading from `from` (the stored watermark) on the current runtime,
    /// with the ledger restored from the stored `records` ([`super::ledger`]).
    pub fn start<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        client: RunaiClient,
        config: RunaiSourceConfig,
        from: i64,
        clock: Clock,
        records: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let mut ledger = RunaiLedger::new();
        let restored = ledger.restore(records);
        if restored.restored + restored.unreadable > 0 {
            tracing::info!(
                restored = restored.restored,
                unreadable = restored.unreadable,
                "Run:ai workloads restored from the queue"
            );
        }
        let counters = Arc::new(Counters::default());
        let series = SeriesStore::new(config.plan.sample_step);
        let pacing = Pacing {
            interval: config.plan.interval,
            delay: config.plan.metrics_delay,
            max_span: config.plan.max_span,
            retry: config.retry,
        };
        let reader = RoundReader {
            client,
            config,
            names: Names::default(),
            counters: counters.clone(),
        };
        let poller = Poller::spawn(reader, pacing, from, clock);
        RunaiSource {
            ledger,
            series,
            coverage: Coverage::default(),
            poller,
            counters,
            published: Published::default(),
            unknown_logged: BTreeSet::new(),
            mismatch_logged: std::sync::Mutex::new(BTreeSet::new()),
        }
    }

    /// The ledger (tests, tools).
    pub fn ledger(&self) -> &RunaiLedger {
        &self.ledger
    }

    fn apply(&mut self, input: Input<Round>) {
        match input {
            Input::Failed => self.coverage.failed(),
            Input::Round(round) => {
                let Round {
                    span,
                    observed_at,
                    workloads,
                    metrics,
                    ..
                } = *round;
                self.ledger.apply_listing(workloads, observed_at);
                for (workload, pod, set) in &metrics {
                    self.series.add(workload, pod.as_deref(), set);
                }
                for phase in &self.ledger.unknown_phases {
                    if self.unknown_logged.insert(phase.clone()) {
                        tracing::warn!(
                            phase,
                            "Run:ai workload phase unknown to this version: treated as not holding resources"
                        );
                    }
                }
                self.coverage.complete(&span);
                tracing::debug!(%span, workloads = self.ledger.len(), "Run:ai round applied");
            }
        }
    }

    /// Compares the GPUs billed for `item` with Run:ai's own `GPU_ALLOCATION` series over the
    /// window: a difference beyond one sample step of the held GPUs (and 5 %) is counted
    /// (`edgemeter_runai_allocation_mismatches_total`) and logged once per workload. Billing
    /// keeps the phase-based allocation: the series is sampled, the phases are timestamped.
    fn cross_check(&self, item: &Item, window: &Window) {
        let Some(series) = item
            .usage
            .iter()
            .find(|u| u.metric == "GPU_ALLOCATION" && u.gpu.is_none() && !u.estimated)
        else {
            return;
        };
        let gpus = item.allocation.gpu.as_ref().map_or(0.0, |g| g.count);
        let billed = gpus * item.allocation.seconds as f64;
        let step = self.series.step() as f64;
        let tolerance = (0.05 * billed).max(gpus.max(1.0) * step);
        if (series.integral - billed).abs() <= tolerance {
            return;
        }
        self.counters.mismatches.fetch_add(1, Ordering::Relaxed);
        let first = self
            .mismatch_logged
            .lock()
            .map(|mut seen| seen.insert(item.uid.clone()))
            .unwrap_or(false);
        if first {
            tracing::warn!(
                workload = %item.uid,
                name = %item.name,
                %window,
                billed_gpu_seconds = billed,
                series_gpu_seconds = series.integral,
                "Run:ai's GPU_ALLOCATION series disagrees with the GPUs billed from the workload's phases and allocatedResources (logged once per workload; counted in edgemeter_runai_allocation_mismatches_total)"
            );
        }
    }

    fn drain(&mut self) {
        for input in self.poller.ready() {
            self.apply(input);
        }
    }
}

impl MeteredSource for RunaiSource {
    fn name(&self) -> &str {
        SOURCE_NAME
    }

    fn kind(&self) -> SourceKind {
        SourceKind::Runai
    }

    fn waiting(&self) -> &'static str {
        "waiting for a complete Run:ai round before billing (the control plane did not answer every call; its windows are billed once it does)"
    }

    fn in_sync(&self) -> bool {
        self.coverage.in_sync()
    }

    fn ready_until(&self) -> Option<i64> {
        // Before the first round: nothing is ready (in_sync is false anyway).
        self.coverage.ready_until()
    }

    fn items(&self, window: &Window) -> Vec<Item> {
        let mut items = self.ledger.items(window);
        for item in &mut items {
            item.usage = self
                .series
                .usage(&item.uid, window, item.allocation.seconds);
            self.cross_check(item, window);
        }
        items
    }

    fn ledger_writes(&mut self) -> crate::queue::LedgerWrites {
        self.ledger.writes()
    }

    fn ledger_committed(&mut self) {
        self.ledger.committed();
    }

    fn forget_billed(&mut self, watermark: i64) {
        self.ledger.forget_billed(watermark);
        self.series.forget_before(watermark);
        let known: BTreeSet<String> = self.ledger.ids().cloned().collect();
        self.series.retain_workloads(|id| known.contains(id));
    }
}

impl Source for RunaiSource {
    fn pump(&mut self) -> futures::future::BoxFuture<'_, bool> {
        Box::pin(async move {
            let Some(inputs) = self.poller.batch().await else {
                return false;
            };
            for input in inputs {
                self.apply(input);
            }
            true
        })
    }

    fn catch_up(&mut self) {
        self.drain();
    }

    fn publish_metrics(&mut self, metrics: &Metrics) {
        let c = &self.counters;
        let now = Published {
            rounds: c.rounds.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            calls: c.calls.load(Ordering::Relaxed),
            malformed: c.malformed.load(Ordering::Relaxed),
            mismatches: c.mismatches.load(Ordering::Relaxed),
        };
        let r = &metrics.runai;
        let outcome = |o: &str| crate::metrics::OutcomeLabels {
            outcome: o.to_owned(),
        };
        r.rounds
            .get_or_create(&outcome("complete"))
            .inc_by(now.rounds.saturating_sub(self.published.rounds));
        r.rounds
            .get_or_create(&outcome("failed"))
            .inc_by(now.failed.saturating_sub(self.published.failed));
        r.calls
            .inc_by(now.calls.saturating_sub(self.published.calls));
        r.malformed
            .inc_by(now.malformed.saturating_sub(self.published.malformed));
        r.mismatches
            .inc_by(now.mismatches.saturating_sub(self.published.mismatches));
        r.workloads
            .set(i64::try_from(self.ledger.len()).unwrap_or(i64::MAX));
        r.ready_until.set(self.coverage.ready_until.unwrap_or(0));
        self.published = now;
    }

    fn stop(&self) {
        self.poller.stop();
    }
}

/// Starts the Run:ai source from the daemon's arguments ([`crate::sources::start`]).
pub fn start_source(
    ctx: crate::sources::StartContext<'_>,
) -> Result<RunaiSource, crate::sources::StartError> {
    let config = ctx.runai.validate()?;
    let source_config = ctx.runai.source_config(ctx.plan.interval)?;
    let client = RunaiClient::new(&config).map_err(crate::sources::StartError::RunaiClient)?;
    tracing::info!(
        url = %config.base_url,
        from = %rfc3339(ctx.watermark),
        sample_step_s = source_config.plan.sample_step,
        metrics_delay_s = source_config.plan.metrics_delay,
        "Run:ai source polling"
    );
    Ok(RunaiSource::start(
        client,
        source_config,
        ctx.watermark,
        super::token::system_clock(),
        ctx.records,
    ))
}

/// Reads a round ([`round`]) and counts it.
struct RoundReader {
    client: RunaiClient,
    config: RunaiSourceConfig,
    names: Names,
    counters: Arc<Counters>,
}

impl Reader for RoundReader {
    type Round = Round;

    fn read(&mut self, span: Window, now: i64, _first: bool) -> BoxFuture<'_, Result<Round, ()>> {
        Box::pin(async move {
            let started = Instant::now();
            let mut calls = 0u64;
            let result = round(
                &self.client,
                &self.config,
                span,
                now,
                &mut self.names,
                &mut calls,
            )
            .await;
            self.counters.calls.fetch_add(calls, Ordering::Relaxed);
            match result {
                Ok(r) => {
                    self.counters.rounds.fetch_add(1, Ordering::Relaxed);
                    self.counters
                        .malformed
                        .fetch_add(r.malformed as u64, Ordering::Relaxed);
                    tracing::debug!(%span, calls, workloads = r.workloads.len(), series = r.metrics.len(), took_ms = started.elapsed().as_millis() as u64, "Run:ai round complete");
                    Ok(r)
                }
                Err(e) => {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%span, error = %crate::error_chain(&e), retry_in = ?self.config.retry, "Run:ai round failed; its windows wait and are read again (nothing is lost)");
                    Err(())
                }
            }
        })
    }
}

/// Project and department id → name, cached.
#[derive(Debug, Default)]
struct Names {
    projects: HashMap<String, String>,
    departments: HashMap<String, String>,
    read_at: Option<Instant>,
}

impl Names {
    fn stale(&self, refresh: Duration, workloads: &[Workload]) -> bool {
        let unknown = workloads.iter().any(|w| {
            (w.project_name.is_none()
                && w.project_id
                    .as_ref()
                    .is_some_and(|p| !self.projects.contains_key(p)))
                || (w.department_name.is_none()
                    && w.department_id
                        .as_ref()
                        .is_some_and(|d| !self.departments.contains_key(d)))
        });
        unknown
            && self
                .read_at
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(30))
            || self.read_at.is_some_and(|t| t.elapsed() >= refresh)
    }

    fn fill(&self, w: &mut Workload) {
        if w.project_name.is_none() {
            w.project_name = w
                .project_id
                .as_ref()
                .and_then(|p| self.projects.get(p))
                .cloned();
        }
        if w.department_name.is_none() {
            w.department_name = w
                .department_id
                .as_ref()
                .and_then(|d| self.departments.get(d))
                .cloned();
        }
    }
}

/// Reads one round; any failed call fails it.
async fn round(
    client: &RunaiClient,
    config: &RunaiSourceConfig,
    span: Window,
    now: i64,
    names: &mut Names,
    calls: &mut u64,
) -> Result<Round, ClientError> {
    let listing = client
        .list_workloads(&ListQuery::default(), |_| true)
        .await?;
    *calls += u64::from(listing.pages);
    let since = format!("deletedAt>={}", rfc3339(span.start()));
    let deleted = client
        .list_workloads(
            &ListQuery {
                filter_by: vec![since.clone()],
                deleted: Some(true),
            },
            |_| true,
        )
        .await?;
    *calls += u64::from(deleted.pages);
    let malformed = listing.malformed.len() + deleted.malformed.len();
    let mut workloads = listing.items;
    workloads.extend(deleted.items);
    if names.stale(config.names_refresh, &workloads) {
        // Names are attribution the workloads usually carry themselves: a failure (a service
        // account without org-unit access) is logged and the round goes on with the cache.
        *calls += 2;
        match (
            client.project_names().await,
            client.department_names().await,
        ) {
            (Ok(projects), Ok(departments)) => {
                names.projects = projects;
                names.departments = departments;
            }
            (Err(e), _) | (_, Err(e)) => tracing::warn!(
                error = %crate::error_chain(&e),
                "failed to read Run:ai project and department names; workloads without a projectName keep only their projectId (retried in 30 s)"
            ),
        }
        names.read_at = Some(Instant::now());
    }
    for w in &mut workloads {
        names.fill(w);
    }

    let ids = candidates(&workloads, span.start());
    let (start, end, samples) = config.plan.sample_range(&span);
    let at = |t: i64| jiff::Timestamp::from_second(t).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let query = |types: &[String]| MetricsQuery {
        types: types.to_vec(),
        start: at(start),
        end: at(end),
        samples,
    };
    let mut metrics = Vec::new();
    if !config.workload_metrics.is_empty() {
        let q = query(&config.workload_metrics);
        *calls += ids.len() as u64;
        // A few calls in flight: one per workload in sequence would outlast the interval at a
        // thousand workloads and a real round trip (see docs/benchmarks.md, Run:ai).
        let calls_of: Vec<_> = ids
            .iter()
            .map(|id| workload_call(client, id.clone(), &q))
            .collect();
        let sets: Vec<Answer> = futures::stream::iter(calls_of)
            .buffer_unordered(CONCURRENT_CALLS)
            .try_collect()
            .await?;
        metrics.extend(sets);
    }
    if !config.gpu_metrics.is_empty() {
        let candidates: BTreeSet<&String> = ids.iter().collect();
        let with_gpus: BTreeSet<&String> = workloads
            .iter()
            .filter(|w| candidates.contains(&w.id) && holds_gpus(w))
            .map(|w| &w.id)
            .collect();
        if !with_gpus.is_empty() {
            let pods = client.list_pods(&ListQuery::default()).await?;
            *calls += u64::from(pods.pages);
            let gone = client
                .list_pods(&ListQuery {
                    filter_by: vec![since],
                    deleted: Some(true),
                })
                .await?;
            *calls += u64::from(gone.pages);
            let q = query(&config.gpu_metrics);
            let mut seen = BTreeSet::new();
            let mut wanted = Vec::new();
            for pod in pods.items.iter().chain(&gone.items) {
                let Some(workload) = pod.workload_id.as_ref().filter(|w| with_gpus.contains(w))
                else {
                    continue;
                };
                if pod_in_span(pod, &span) && seen.insert(pod.id.clone()) {
                    wanted.push((workload, &pod.id));
                }
            }
            *calls += wanted.len() as u64;
            let calls_of: Vec<_> = wanted
                .into_iter()
                .map(|(workload, pod)| pod_call(client, workload.clone(), pod.clone(), &q))
                .collect();
            let sets: Vec<Answer> = futures::stream::iter(calls_of)
                .buffer_unordered(CONCURRENT_CALLS)
                .try_collect()
                .await?;
            metrics.extend(sets);
        }
    }
    Ok(Round {
        span,
        observed_at: now,
        workloads,
        metrics,
        calls: *calls,
        malformed,
    })
}

/// A metrics answer of a round: (workload id, pod id for the pod route, the answer).
type Answer = (String, Option<String>, MetricSet);

/// One workload's metrics call of a round.
fn workload_call<'a>(
    client: &'a RunaiClient,
    id: String,
    q: &'a MetricsQuery,
) -> BoxFuture<'a, Result<Answer, ClientError>> {
    Box::pin(async move {
        let set = client.workload_metrics(&id, q).await?;
        Ok((id, None, set))
    })
}

/// One pod's per-GPU metrics call of a round.
fn pod_call<'a>(
    client: &'a RunaiClient,
    workload: String,
    pod: String,
    q: &'a MetricsQuery,
) -> BoxFuture<'a, Result<Answer, ClientError>> {
    Box::pin(async move {
        let set = client.pod_metrics(&workload, &pod, q).await?;
        Ok((workload, Some(pod), set))
    })
}

/// Whether a workload holds (or asked for) GPUs.
fn holds_gpus(w: &Workload) -> bool {
    let allocated = w
        .allocated_resources
        .as_ref()
        .and_then(|a| a.gpu)
        .is_some_and(|g| g > 0.0);
    let requested = w
        .workload_requested_resources
        .as_ref()
        .and_then(|r| r.gpu.as_ref())
        .and_then(|g| g.request)
        .is_some_and(|g| g > 0.0);
    allocated || requested
}

/// Whether a pod may have existed inside `span` (created before its end, not finished or
/// deleted before its start).
fn pod_in_span(pod: &Pod, span: &Window) -> bool {
    let s = |t: Option<jiff::Timestamp>| t.map(|t| t.as_second());
    s(pod.created_at).is_none_or(|c| c < span.end())
        && s(pod.completed_at).is_none_or(|c| c >= span.start())
        && s(pod.deleted_at).is_none_or(|d| d >= span.start())
}
