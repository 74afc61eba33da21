//! The Prometheus source: a poller reading the raw samples of every configured query in
//! complete rounds, and the [`MeteredSource`] the biller bills from.
//!
//! # Rounds
//!
//! Once per billing interval the poller reads a span `[from, to)` of whole grid windows, `to`
//! the last boundary at or before `now − PROMETHEUS_DELAY` (a sample is in the TSDB only once
//! its scrape finished), at most an hour: every query's raw samples in the span (one request
//! per query, [`PrometheusClient::raw_samples`]; an expression is evaluated on its step grid
//! instead, [`PrometheusClient::evaluated`]). The first round after a start also reads the
//! lookback before `from` (`PROMETHEUS_LOOKBACK`), so a series that existed before billing
//! began is counted from its last sample there, not from zero. A round is complete or
//! discarded: a failed query (unreachable, 5xx, timeout, an error answer) discards it, the
//! windows wait ([`MeteredSource::ready_until`]) and are read again in full.
//!
//! # Per window
//!
//! Each series keeps its samples (merged across rounds) and, across commits, the last sample
//! before the watermark: its **carry** ([`super::accounting`]). A window's item per usage line
//! (the series grouped by the query's `labels`) sums its series' counter increases
//! ([`counter_window`]) or gauge integrals ([`gauge_window`]).
//!
//! # Stored with each commit
//!
//! Per series (key: query name, `0x00`, the series' labels as `k=v` joined by `0x00`): `0x01`
//! then the JSON `[t_ms, value]` of its carry at the window's end. Restored at start, so a
//! series whose last sample is older than the lookback (scraped rarely, or a long downtime) is
//! still counted from it. A series without a sample for an hour past the watermark is
//! forgotten (removed).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;

use super::accounting::{Sample, counter_window, gauge_window};
use super::api::Series;
use super::client::{ClientError, PrometheusClient};
use super::config::{Kind, PrometheusConfig, Query, Read};
use crate::mapper::bindings::{Allocation, Item, ItemKind, SourceKind, UsageIntegral};
use crate::metrics::Metrics;
use crate::queue::LedgerWrites;
use crate::sources::poll::{Coverage, Input, Pacing, Poller, Reader};
use crate::sources::{MeteredSource, Source};
use crate::window::{Window, rfc3339};

/// The watermark key and metrics label of this source.
pub const SOURCE_NAME: &str = "prometheus";

/// The most seconds one round reads.
const MAX_SPAN: u64 = 3600;
/// A series without a sample this long past the watermark is forgotten.
const FORGET_AFTER_MS: i64 = 3_600_000;
/// The format byte of a stored carry.
const RECORD_V1: u8 = 1;

/// One series: its query (index into the config's queries) and its labels.
type SeriesKey = (usize, Vec<(String, String)>);

/// How the source polls.
#[derive(Debug, Clone)]
pub struct PollPlan {
    pub interval: u64,
    pub delay: u64,
    pub lookback: u64,
    /// Wait after a failed round.
    pub retry: Duration,
}

impl PollPlan {
    fn pacing(&self) -> Pacing {
        Pacing {
            interval: self.interval,
            delay: self.delay,
            max_span: MAX_SPAN,
            retry: self.retry,
        }
    }
}

/// One complete round.
pub struct Round {
    span: Window,
    /// Per query, the series read.
    series: Vec<Vec<Series>>,
}

#[derive(Debug, Default)]
struct Counters {
    rounds: AtomicU64,
    failed: AtomicU64,
    requests: AtomicU64,
}

/// The Prometheus source.
#[derive(Debug)]
pub struct PrometheusSource {
    queries: Vec<Query>,
    lookback_ms: i64,
    samples: BTreeMap<SeriesKey, Vec<Sample>>,
    /// Carries written with the last commit.
    stored: BTreeMap<SeriesKey, Sample>,
    /// Keys of forgotten series to remove with the next commit.
    removed: BTreeSet<SeriesKey>,
    /// Stored keys dropped at start (unreadable, or of a query no longer configured).
    stale: Vec<Vec<u8>>,
    /// How far complete rounds reach.
    coverage: Coverage,
    /// The end of the last window whose items were built: the window the next commit is of
    /// (its carries are the last samples before it).
    last_end: std::cell::Cell<Option<i64>>,
    poller: Poller<Round>,
    counters: Arc<Counters>,
    /// Pods' billing annotations from the Kubernetes source, joined by `namespace`/`pod`.
    pods: Option<crate::sources::pods::PodDirectory>,
    published: (u64, u64, u64),
    pending_end: Option<i64>,
}

impl std::fmt::Debug for Round {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Round({})", self.span)
    }
}

fn record_key(queries: &[Query], key: &SeriesKey) -> Vec<u8> {
    let mut out = queries[key.0].name.as_bytes().to_vec();
    for (k, v) in &key.1 {
        out.push(0);
        out.extend(format!("{k}={v}").as_bytes());
    }
    out
}

fn parse_record(queries: &[Query], key: &[u8], value: &[u8]) -> Option<(SeriesKey, Sample)> {
    let mut parts = key.split(|b| *b == 0);
    let name = std::str::from_utf8(parts.next()?).ok()?;
    let query = queries.iter().position(|q| q.name == name)?;
    let mut labels = Vec::new();
    for p in parts {
        let text = std::str::from_utf8(p).ok()?;
        let (k, v) = text.split_once('=')?;
        labels.push((k.to_owned(), v.to_owned()));
    }
    let (&format, json) = value.split_first()?;
    if format != RECORD_V1 {
        return None;
    }
    let (t_ms, value): (i64, f64) = serde_json::from_slice(json).ok()?;
    Some(((query, labels), Sample { t_ms, value }))
}

impl PrometheusSource {
    /// Starts the poller from `from` (the stored watermark) with the carries of `records`.
    pub fn start<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        client: PrometheusClient,
        config: &PrometheusConfig,
        plan: PollPlan,
        from: i64,
        clock: Arc<dyn Fn() -> i64 + Send + Sync>,
        records: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let queries = config.queries.clone();
        let mut samples = BTreeMap::new();
        let mut stored = BTreeMap::new();
        let mut stale = Vec::new();
        let mut unreadable = 0usize;
        for (key, value) in records {
            match parse_record(&queries, key.as_ref(), value.as_ref()) {
                Some((k, s)) => {
                    samples.insert(k.clone(), vec![s]);
                    stored.insert(k, s);
                }
                None => {
                    unreadable += 1;
                    // A record of a query no longer configured, or unreadable: removed.
                    let text = String::from_utf8_lossy(key.as_ref()).into_owned();
                    tracing::debug!(key = %text.replace('\0', ","), "stored Prometheus carry dropped (query no longer configured, or unreadable)");
                    stale.push(key.as_ref().to_vec());
                }
            }
        }
        if !stored.is_empty() || unreadable > 0 {
            tracing::info!(
                restored = stored.len(),
                dropped = unreadable,
                "Prometheus series carries restored from the queue"
            );
        }
        let counters = Arc::new(Counters::default());
        let reader = QueryReader {
            client,
            queries: queries.clone(),
            lookback: plan.lookback,
            retry: plan.retry,
            counters: counters.clone(),
        };
        let poller = Poller::spawn(reader, plan.pacing(), from, clock);
        PrometheusSource {
            queries,
            lookback_ms: i64::try_from(plan.lookback.saturating_mul(1000)).unwrap_or(i64::MAX),
            samples,
            stored,
            removed: BTreeSet::new(),
            stale,
            coverage: Coverage::default(),
            last_end: std::cell::Cell::new(None),
            poller,
            counters,
            pods: None,
            published: (0, 0, 0),
            pending_end: None,
        }
    }

    /// Joins the pods' billing annotations (`openmeter.io/subject`, …) of the Kubernetes
    /// source to usage lines labelled `namespace` and `pod`.
    pub fn with_pods(mut self, pods: Option<crate::sources::pods::PodDirectory>) -> Self {
        self.pods = pods;
        self
    }

    fn apply(&mut self, input: Input<Round>) {
        match input {
            Input::Failed => self.coverage.failed(),
            Input::Round(round) => {
                for (q, series) in round.series.into_iter().enumerate() {
                    for s in series {
                        let labels: Vec<(String, String)> = s
                            .labels
                            .into_iter()
                            .filter(|(k, _)| k != "__name__")
                            .collect();
                        let kept = self.samples.entry((q, labels)).or_default();
                        merge(kept, &s.samples);
                    }
                }
                self.coverage.complete(&round.span);
            }
        }
    }

    fn drain(&mut self) {
        for input in self.poller.ready() {
            self.apply(input);
        }
    }

    /// The carry of `samples` before `t_ms`.
    fn carry_before(samples: &[Sample], t_ms: i64) -> Option<Sample> {
        let i = samples.partition_point(|s| s.t_ms < t_ms);
        i.checked_sub(1).map(|i| samples[i])
    }
}

/// Merges new samples (any order) into `kept` (time order, one per timestamp).
fn merge(kept: &mut Vec<Sample>, new: &[Sample]) {
    kept.extend_from_slice(new);
    kept.sort_by_key(|s| s.t_ms);
    kept.dedup_by_key(|s| s.t_ms);
}

/// A stable id of a usage line.
fn line_uid(query: &str, labels: &[(String, String)]) -> String {
    let mut name = query.to_owned();
    for (k, v) in labels {
        name.push('\0');
        name.push_str(k);
        name.push('=');
        name.push_str(v);
    }
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).to_string()
}

impl MeteredSource for PrometheusSource {
    fn name(&self) -> &str {
        SOURCE_NAME
    }

    fn kind(&self) -> SourceKind {
        SourceKind::Prometheus
    }

    fn waiting(&self) -> &'static str {
        "waiting for a complete Prometheus round before billing (a query failed; its windows are billed once Prometheus answers)"
    }

    fn in_sync(&self) -> bool {
        self.coverage.in_sync()
    }

    fn ready_until(&self) -> Option<i64> {
        self.coverage.ready_until()
    }

    fn items(&self, window: &Window) -> Vec<Item> {
        self.last_end.set(Some(window.end()));
        let (a, b) = (window.start() * 1000, window.end() * 1000);
        // Usage lines: (query, identifying labels) → the sum over their series.
        let mut lines: BTreeMap<(usize, Vec<(String, String)>), Line> = BTreeMap::new();
        for ((q, labels), samples) in &self.samples {
            let query = &self.queries[*q];
            let carry = Self::carry_before(samples, a);
            let ident: Vec<(String, String)> = if query.labels.is_empty() {
                labels.clone()
            } else {
                let mut l: Vec<(String, String)> = labels
                    .iter()
                    .filter(|(k, _)| query.labels.contains(k))
                    .cloned()
                    .collect();
                l.sort();
                l
            };
            let line = lines.entry((*q, ident)).or_default();
            match query.kind {
                Kind::Counter => {
                    let u = counter_window(carry, samples, a, b);
                    line.add(u.increase, None, u.samples, u.first_ms, u.last_ms);
                }
                Kind::Gauge => {
                    let hold = query.read.hold_ms(self.lookback_ms);
                    let u = gauge_window(carry, samples, a, b, hold);
                    line.add(
                        u.integral,
                        Some(u.covered_seconds),
                        u.samples,
                        u.first_ms,
                        u.last_ms,
                    );
                }
            }
        }
        lines
            .into_iter()
            // A counter line with no sample has no increase; a gauge line held by its carry
            // has an integral even without a sample inside the window.
            .filter(|(_, l)| l.samples > 0 || l.covered.is_some_and(|c| c > 0.0))
            .map(|((q, labels), l)| {
                let query = &self.queries[q];
                let counter = query.kind == Kind::Counter;
                let covered = match l.covered {
                    Some(c) => c,
                    None => match (l.first_ms, l.last_ms) {
                        (Some(f), Some(t)) => (t - f) as f64 / 1000.0,
                        _ => 0.0,
                    },
                };
                let label = |key: &str| labels.iter().find(|(k, _)| k == key).map(|(_, v)| v);
                let annotations = match (&self.pods, label("namespace"), label("pod")) {
                    (Some(pods), Some(ns), Some(pod)) => {
                        pods.annotations(ns, pod).unwrap_or_default()
                    }
                    _ => Vec::new(),
                };
                Item {
                    kind: ItemKind::PrometheusSeries,
                    namespace: labels
                        .iter()
                        .find(|(k, _)| k == "namespace")
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default(),
                    name: query.name.clone(),
                    uid: line_uid(&query.name, &labels),
                    labels,
                    annotations,
                    object: String::new(),
                    allocation: Allocation::none(),
                    usage: vec![UsageIntegral {
                        metric: query.name.clone(),
                        unit: query.unit.clone(),
                        gpu: None,
                        pod: None,
                        integral: l.value,
                        covered_seconds: covered,
                        mean: (!counter && covered > 0.0).then(|| l.value / covered),
                        samples: u32::try_from(l.samples).unwrap_or(u32::MAX),
                        estimated: false,
                        counter,
                        first_sample_ms: l.first_ms,
                        last_sample_ms: l.last_ms,
                    }],
                }
            })
            .collect()
    }

    fn forget_billed(&mut self, watermark: i64) {
        let w = watermark * 1000;
        let mut gone = Vec::new();
        for (key, samples) in &mut self.samples {
            let before = samples.partition_point(|s| s.t_ms < w);
            if before > 1 {
                samples.drain(..before - 1);
            }
            if samples.last().is_none_or(|s| s.t_ms < w - FORGET_AFTER_MS) {
                gone.push(key.clone());
            }
        }
        for key in gone {
            self.samples.remove(&key);
            if self.stored.contains_key(&key) {
                self.removed.insert(key);
            }
        }
    }

    fn ledger_writes(&mut self) -> LedgerWrites {
        // The carries for the window about to be committed (the last one whose items were
        // built): each series' last sample before its end.
        let end = self
            .last_end
            .get()
            .or(self.coverage.ready_until)
            .unwrap_or(i64::MIN)
            .saturating_mul(1000);
        self.pending_end = Some(end);
        let mut w = LedgerWrites::default();
        for (key, samples) in &self.samples {
            if let Some(c) = Self::carry_before(samples, end)
                && self.stored.get(key) != Some(&c)
                && let Ok(json) = serde_json::to_vec(&(c.t_ms, c.value))
            {
                let mut value = vec![RECORD_V1];
                value.extend(json);
                w.puts.push((record_key(&self.queries, key), value));
            }
        }
        for key in &self.removed {
            w.removes.push(record_key(&self.queries, key));
        }
        w.removes.extend(self.stale.iter().cloned());
        w
    }

    fn ledger_committed(&mut self) {
        let end = self.pending_end.unwrap_or(i64::MIN);
        for (key, samples) in &self.samples {
            if let Some(c) = Self::carry_before(samples, end) {
                self.stored.insert(key.clone(), c);
            }
        }
        for key in std::mem::take(&mut self.removed) {
            self.stored.remove(&key);
        }
        self.stale.clear();
    }
}

/// A usage line being summed.
#[derive(Debug, Default)]
struct Line {
    value: f64,
    covered: Option<f64>,
    samples: usize,
    first_ms: Option<i64>,
    last_ms: Option<i64>,
}

impl Line {
    fn add(
        &mut self,
        value: f64,
        covered: Option<f64>,
        samples: usize,
        first: Option<i64>,
        last: Option<i64>,
    ) {
        self.value += value;
        if let Some(c) = covered {
            self.covered = Some(self.covered.unwrap_or(0.0).max(c));
        }
        self.samples += samples;
        self.first_ms = match (self.first_ms, first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_ms = self.last_ms.max(last);
    }
}

impl Source for PrometheusSource {
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
        let now = (
            c.rounds.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
            c.requests.load(Ordering::Relaxed),
        );
        let p = &metrics.prometheus;
        let outcome = |o: &str| crate::metrics::OutcomeLabels {
            outcome: o.to_owned(),
        };
        p.rounds
            .get_or_create(&outcome("complete"))
            .inc_by(now.0.saturating_sub(self.published.0));
        p.rounds
            .get_or_create(&outcome("failed"))
            .inc_by(now.1.saturating_sub(self.published.1));
        p.requests.inc_by(now.2.saturating_sub(self.published.2));
        p.series
            .set(i64::try_from(self.samples.len()).unwrap_or(i64::MAX));
        self.published = now;
    }

    fn stop(&self) {
        self.poller.stop();
    }
}

/// Starts the Prometheus source from the daemon's arguments ([`crate::sources::start`]).
pub fn start_source(
    ctx: crate::sources::StartContext<'_>,
) -> Result<PrometheusSource, crate::sources::StartError> {
    let config = ctx.prometheus.validate()?;
    let client = PrometheusClient::with_ca(
        &config.url,
        config.auth.clone(),
        config.request_timeout,
        config.ca_pem.as_deref(),
    )
    .map_err(crate::sources::StartError::PrometheusClient)?;
    let plan = PollPlan {
        interval: ctx.plan.interval,
        delay: config.delay,
        lookback: config.lookback,
        retry: Duration::from_secs(5),
    };
    tracing::info!(
        url = %config.url,
        queries = config.queries.len(),
        from = %rfc3339(ctx.watermark),
        delay_s = plan.delay,
        "Prometheus source polling"
    );
    Ok(PrometheusSource::start(
        client,
        &config,
        plan,
        ctx.watermark,
        Arc::new(|| jiff::Timestamp::now().as_second()),
        ctx.records,
    )
    .with_pods(ctx.pods))
}

/// Reads a round: every query's raw samples of the span (the first round also the lookback
/// before it, for the carries).
struct QueryReader {
    client: PrometheusClient,
    queries: Vec<Query>,
    lookback: u64,
    retry: Duration,
    counters: Arc<Counters>,
}

impl Reader for QueryReader {
    type Round = Round;

    fn read(&mut self, span: Window, _now: i64, first: bool) -> BoxFuture<'_, Result<Round, ()>> {
        Box::pin(async move {
            let back = if first {
                i64::try_from(self.lookback).unwrap_or(0)
            } else {
                0
            };
            let read = Window::new(span.start() - back, span.end()).unwrap_or(span);
            match self.queries_of(&read).await {
                Ok(series) => {
                    self.counters.rounds.fetch_add(1, Ordering::Relaxed);
                    Ok(Round { span, series })
                }
                Err(e) => {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%span, error = %crate::error_chain(&e), retry_in = ?self.retry, "Prometheus round failed; its windows wait and are read again (nothing is lost)");
                    Err(())
                }
            }
        })
    }
}

impl QueryReader {
    async fn queries_of(&self, read: &Window) -> Result<Vec<Vec<Series>>, ClientError> {
        let mut out = Vec::with_capacity(self.queries.len());
        for q in &self.queries {
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            out.push(match &q.read {
                Read::Selector(selector) => self.client.raw_samples(selector, read).await?,
                Read::Expr { expr, step } => self.client.evaluated(expr, read, *step).await?,
            });
        }
        Ok(out)
    }
}
