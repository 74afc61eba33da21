//! Prometheus metrics: one [`prometheus_client`] registry for the whole process.
//!
//! [`Metrics`] is cheap to clone (every metric is an `Arc` inside) and is handed to each
//! component; a component's metrics live in its own struct field (`sink`, `queue`, ...). To add
//! metrics for a new component, add a struct here and register it in [`Metrics::new`]. Queue
//! gauges are read from the queue at scrape time ([`Metrics::observe_queue`]), so they are
//! exact without the queue knowing about metrics.
//!
//! All names are prefixed `edgemeter_`.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::queue::Queue;

/// How one ingest request ended (label `result`, snake_case).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum RequestResult {
    Accepted,
    Retry,
    TransportError,
    Split,
    DeadLetter,
    Paused,
}

impl RequestResult {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestResult::Accepted => "accepted",
            RequestResult::Retry => "retry",
            RequestResult::TransportError => "transport_error",
            RequestResult::Split => "split",
            RequestResult::DeadLetter => "dead_letter",
            RequestResult::Paused => "paused",
        }
    }
}

impl EncodeLabelValue for RequestResult {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub result: RequestResult,
}

/// Delivery to OpenMeter.
#[derive(Debug, Clone)]
pub struct SinkMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub events_delivered: Counter,
    pub events_dead_lettered: Counter,
    pub request_duration: Histogram,
    /// 1 while delivery is paused by 401/403 or a misconfiguration answer.
    pub paused: Gauge,
    /// 1 while the sink holds back an event the receiver refused because the dead letters are
    /// at their bound (`EDGEMETER_QUEUE_MAX_DEAD_BYTES`); the event stays queued.
    pub dead_letters_full: Gauge,
    /// 1 while a sink's delivery loop runs (set by the sink itself, see [`crate::sinks::Live`]).
    pub up: Gauge,
    /// Times the daemon restarted a sink that stopped while it ran.
    pub restarts: Counter,
}

impl SinkMetrics {
    pub fn request(&self, result: RequestResult) {
        self.requests.get_or_create(&RequestLabels { result }).inc();
    }
}

/// The queue, read at scrape time.
#[derive(Debug, Clone, Default)]
pub struct QueueMetrics {
    pub pending_events: Gauge<u64, AtomicU64>,
    pub pending_bytes: Gauge<u64, AtomicU64>,
    pub dead_letters: Gauge<u64, AtomicU64>,
    pub size_on_disk: Gauge<u64, AtomicU64>,
    /// Now − `time` of the oldest undelivered event (its window's end); 0 when none.
    pub delivery_lag: Gauge<u64, AtomicU64>,
}

/// Every metric of the process and the registry that exposes them.
/// Billing windows and mappers (the daemon's side of the pipeline).
#[derive(Debug, Clone, Default)]
pub struct BillingMetrics {
    /// Billing windows committed to the queue, by source.
    pub windows_billed: Family<SourceLabels, Counter>,
    /// Events committed to the queue, by source.
    pub events_enqueued: Family<SourceLabels, Counter>,
    /// Ticks that could not advance the watermark, by source and reason.
    pub window_failures: Family<SourceFailureLabels, Counter>,
    /// "Billed up to", Unix seconds, by source.
    pub watermark: Family<SourceLabels, Gauge>,
    /// Seconds between now and the watermark at the last tick, by source.
    pub lag: Family<SourceLabels, Gauge>,
    /// 1 while the source holds a complete, current view, by source.
    pub source_in_sync: Family<SourceLabels, Gauge>,
    /// Jumps of the wall clock against the monotonic clock between ticks, by direction
    /// (`forward`: refused, billing follows the monotonic clock; `backward`: followed).
    pub clock_jumps: Family<DirectionLabels, Counter>,
    /// Seconds the wall clock is ahead of the time billing goes by (0 while it is trusted).
    pub clock_ahead: Gauge,
    /// 1 while this replica may bill: it holds the lease, or leader election is off.
    pub leader: Gauge,
    /// Times this replica became the lease holder.
    pub leader_transitions: Counter,
    /// 1 while every source is in sync (`source_in_sync` by source): the Kubernetes source
    /// has completed its first full list and its watches are healthy, the Run:ai source's
    /// last round was complete.
    pub source_synced: Gauge,
    /// Unix second of the billing loop's last progress: a tick completed (any outcome) or a
    /// window started. `/healthz` fails once it is older than `liveness_stale_after`
    /// (`daemon::liveness`).
    pub last_tick: Gauge,
    /// Seconds without progress after which `/healthz` fails; 0 without a billing loop.
    pub liveness_stale_after: Gauge,
    /// Mapper calls, failures by kind (copied from the runtime's counters after each tick).
    pub mapper_calls: Counter,
    pub mapper_failures: Family<FailureLabels, Counter>,
    /// Items of committed windows not billed as mapped, by reason, once per item and window
    /// (see `daemon::biller`, "Containment").
    pub items_rejected: Family<FailureLabels, Counter>,
    /// Watches resumed from a stored or last-seen resourceVersion, by outcome: `caught_up`
    /// (no re-list), `expired` (410 Gone: re-listed, the downtime's changes estimated),
    /// `failed` (could not tell when it caught up: re-listed).
    pub watch_resumes: Family<OutcomeLabels, Counter>,
    /// Live watches that expired (410 Gone) and re-listed.
    pub watch_expired: Counter,
    /// Watches that delivered nothing (no event, no bookmark) for the idle timeout.
    pub watch_stalls: Counter,
    /// Items billed for windows committed before the source knew them (a late watch event),
    /// under their on-time ids, with a later commit.
    pub late_items: Counter,
}

/// Which source a billing metric is about (label `source`: `kubernetes`, `runai`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: String,
}

/// A source's failure by reason.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceFailureLabels {
    pub source: String,
    pub reason: String,
}

/// One source's billing metrics: handles into the `source`-labelled families.
#[derive(Debug, Clone)]
pub struct SourceBilling {
    source: String,
    pub windows_billed: Counter,
    pub events_enqueued: Counter,
    pub watermark: Gauge,
    pub lag: Gauge,
    pub in_sync: Gauge,
    failures: Family<SourceFailureLabels, Counter>,
}

impl SourceBilling {
    /// Counts one failed tick of this source for `reason`.
    pub fn window_failed(&self, reason: &str) {
        self.failures
            .get_or_create(&SourceFailureLabels {
                source: self.source.clone(),
                reason: reason.to_owned(),
            })
            .inc();
    }
}

/// The Run:ai source's poller.
#[derive(Debug, Clone, Default)]
pub struct RunaiMetrics {
    /// Rounds by outcome: `complete` (every listing and metrics call answered), `failed`.
    pub rounds: Family<OutcomeLabels, Counter>,
    /// API calls of rounds (pages and metrics calls; the client's retries not counted).
    pub calls: Counter,
    /// Listed workloads or pods that did not decode (skipped).
    pub malformed: Counter,
    /// Item-windows whose `GPU_ALLOCATION` series disagrees with the GPUs billed.
    pub mismatches: Counter,
    /// Workloads in the source's ledger.
    pub workloads: Gauge,
    /// Unix second up to which complete rounds have read (windows end no later).
    pub ready_until: Gauge,
}

/// The Prometheus source's poller.
#[derive(Debug, Clone, Default)]
pub struct PrometheusMetrics {
    /// Rounds by outcome: `complete` (every query answered), `failed`.
    pub rounds: Family<OutcomeLabels, Counter>,
    /// Queries sent to Prometheus by rounds.
    pub requests: Counter,
    /// Series the source holds samples or carries of.
    pub series: Gauge,
}

/// The SQL source, per import.
#[derive(Debug, Clone, Default)]
pub struct SqlMetrics {
    /// Reads by import and outcome (`ok`, `failed`).
    pub reads: Family<ImportOutcomeLabels, Counter>,
    /// Rows read and handed to billing, by import.
    pub rows: Family<ImportLabels, Counter>,
    /// `time` imports: rows found by the re-count after their span was read (committed later
    /// than the lateness: missed).
    pub late_rows: Family<ImportLabels, Counter>,
    /// `sequence` imports: billed keys above the final cursor (kept until no open transaction
    /// can still commit a lower key).
    pub pending_keys: Family<ImportLabels, Gauge>,
}

/// One SQL import.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ImportLabels {
    pub import: String,
}

/// One SQL import and an outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ImportOutcomeLabels {
    pub import: String,
    pub outcome: String,
}

/// The outcome of a watch resume.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

/// Which way the wall clock jumped (label `direction`: `forward`, `backward`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: String,
}

/// Why a window or a mapper call failed.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub reason: String,
}

impl BillingMetrics {
    /// The handles of one source's metrics.
    pub fn for_source(&self, source: &str) -> SourceBilling {
        let l = SourceLabels {
            source: source.to_owned(),
        };
        SourceBilling {
            source: source.to_owned(),
            windows_billed: self.windows_billed.get_or_create(&l).clone(),
            events_enqueued: self.events_enqueued.get_or_create(&l).clone(),
            watermark: self.watermark.get_or_create(&l).clone(),
            lag: self.lag.get_or_create(&l).clone(),
            in_sync: self.source_in_sync.get_or_create(&l).clone(),
            failures: self.window_failures.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub sink: SinkMetrics,
    pub queue: QueueMetrics,
    pub billing: BillingMetrics,
    pub runai: RunaiMetrics,
    pub prometheus: PrometheusMetrics,
    pub sql: SqlMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("edgemeter");
        let sink = SinkMetrics {
            requests: Family::default(),
            events_delivered: Counter::default(),
            events_dead_lettered: Counter::default(),
            request_duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            paused: Gauge::default(),
            dead_letters_full: Gauge::default(),
            up: Gauge::default(),
            restarts: Counter::default(),
        };
        let queue = QueueMetrics::default();
        registry.register(
            "sink_requests",
            "Ingest requests by how they ended",
            sink.requests.clone(),
        );
        registry.register(
            "sink_events_delivered",
            "Events the ingest API accepted (2xx)",
            sink.events_delivered.clone(),
        );
        registry.register(
            "sink_events_dead_lettered",
            "Events the ingest API refused for good, moved to the dead letters",
            sink.events_dead_lettered.clone(),
        );
        registry.register(
            "sink_request_duration_seconds",
            "Duration of ingest requests",
            sink.request_duration.clone(),
        );
        registry.register(
            "sink_paused",
            "1 while delivery is paused by an authentication or configuration answer",
            sink.paused.clone(),
        );
        registry.register(
            "sink_dead_letters_full",
            "1 while the sink holds back a refused event because the dead letters are at EDGEMETER_QUEUE_MAX_DEAD_BYTES",
            sink.dead_letters_full.clone(),
        );
        registry.register(
            "sink_up",
            "1 while the sink's delivery loop runs; 0 when it stopped (readiness fails)",
            sink.up.clone(),
        );
        registry.register(
            "sink_restarts",
            "Times the sink stopped with an error while the daemon ran and was restarted",
            sink.restarts.clone(),
        );
        registry.register(
            "delivery_lag_seconds",
            "Age of the oldest undelivered event (now minus its time, the end of its window); 0 when the queue is empty",
            queue.delivery_lag.clone(),
        );
        registry.register(
            "queue_pending_events",
            "Events waiting for delivery",
            queue.pending_events.clone(),
        );
        registry.register(
            "queue_pending_bytes",
            "Bytes of events waiting for delivery (bounded by the queue's max bytes)",
            queue.pending_bytes.clone(),
        );
        registry.register(
            "queue_dead_letters",
            "Events refused for good, waiting for an operator",
            queue.dead_letters.clone(),
        );
        registry.register(
            "queue_size_on_disk_bytes",
            "Size of the queue's sled database on disk",
            queue.size_on_disk.clone(),
        );
        let billing = BillingMetrics::default();
        registry.register(
            "windows_billed",
            "Billing windows committed to the queue with their events, by source",
            billing.windows_billed.clone(),
        );
        registry.register(
            "events_enqueued",
            "Events committed to the queue, by source",
            billing.events_enqueued.clone(),
        );
        registry.register(
            "window_failures",
            "Ticks that could not advance a source's watermark, by source and reason (mapper, queue_full, not_in_sync, clock_behind)",
            billing.window_failures.clone(),
        );
        registry.register(
            "watermark_seconds",
            "Billed up to this Unix time, by source",
            billing.watermark.clone(),
        );
        registry.register(
            "billing_lag_seconds",
            "Seconds between now and the source's watermark at the last tick, by source",
            billing.lag.clone(),
        );
        registry.register(
            "mapper_calls",
            "Calls into WebAssembly mappers",
            billing.mapper_calls.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica may bill (it holds the lease, or leader election is off)",
            billing.leader.clone(),
        );
        registry.register(
            "leader_transitions",
            "Times this replica acquired the lease",
            billing.leader_transitions.clone(),
        );
        registry.register(
            "source_synced",
            "1 while every source holds a complete, current view (Kubernetes: listed, watches healthy; Run:ai: last round complete)",
            billing.source_synced.clone(),
        );
        registry.register(
            "source_in_sync",
            "1 while the source holds a complete, current view, by source",
            billing.source_in_sync.clone(),
        );
        registry.register(
            "clock_jumps",
            "Jumps of the wall clock against the monotonic clock between ticks (more than 30 s), by direction: forward (refused: billing follows the monotonic clock until the wall clock is back or a restart), backward (followed)",
            billing.clock_jumps.clone(),
        );
        registry.register(
            "clock_ahead_seconds",
            "Seconds the wall clock is ahead of the time billing goes by after a forward jump; 0 while the wall clock is trusted",
            billing.clock_ahead.clone(),
        );
        registry.register(
            "last_tick_timestamp_seconds",
            "Unix time of the billing loop's last progress (a tick completed or a window started); /healthz fails once it is older than edgemeter_liveness_stale_after_seconds",
            billing.last_tick.clone(),
        );
        registry.register(
            "liveness_stale_after_seconds",
            "Seconds without billing-loop progress after which /healthz answers 503",
            billing.liveness_stale_after.clone(),
        );
        registry.register(
            "mapper_failures",
            "Failed mapper calls by kind (timeout, memory, trap)",
            billing.mapper_failures.clone(),
        );
        registry.register(
            "items_rejected",
            "Items of committed windows not billed as mapped, per item and window: invalid_event (its events dead-lettered), invalid_event_dropped (not kept: dead letters at their bound), allocation_incomplete (billed without what could not be read)",
            billing.items_rejected.clone(),
        );
        registry.register(
            "watch_resumes",
            "Watches resumed from a stored or last-seen resourceVersion, by outcome: caught_up (no re-list), expired (410 Gone: re-listed, the downtime's changes estimated), failed (re-listed)",
            billing.watch_resumes.clone(),
        );
        registry.register(
            "watch_expired",
            "Live watches that expired (410 Gone) and re-listed",
            billing.watch_expired.clone(),
        );
        registry.register(
            "watch_stalls",
            "Watches that delivered nothing (no event, no bookmark) for the idle timeout: out of sync until resumed",
            billing.watch_stalls.clone(),
        );
        registry.register(
            "late_items",
            "Items billed for windows committed before the source knew them (a late watch event), with a later commit under their on-time ids",
            billing.late_items.clone(),
        );
        let runai = RunaiMetrics::default();
        registry.register(
            "runai_rounds",
            "Run:ai polling rounds by outcome: complete (every listing and metrics call answered; its windows may be billed), failed (discarded, retried)",
            runai.rounds.clone(),
        );
        registry.register(
            "runai_api_calls",
            "Run:ai API calls made by rounds (pages and metrics calls; retries not counted)",
            runai.calls.clone(),
        );
        registry.register(
            "runai_malformed_items",
            "Run:ai workloads or pods listed that did not decode (skipped, logged)",
            runai.malformed.clone(),
        );
        registry.register(
            "runai_allocation_mismatches",
            "Run:ai item-windows whose GPU_ALLOCATION series disagrees with the GPUs billed from phases and allocatedResources (beyond one sample step and 5 %)",
            runai.mismatches.clone(),
        );
        registry.register(
            "runai_workloads",
            "Run:ai workloads in the source's ledger",
            runai.workloads.clone(),
        );
        registry.register(
            "runai_ready_until_seconds",
            "Unix time up to which complete Run:ai rounds have read (its windows end no later)",
            runai.ready_until.clone(),
        );
        let prometheus = PrometheusMetrics::default();
        registry.register(
            "prometheus_rounds",
            "Prometheus polling rounds by outcome: complete (every query answered; its windows may be billed), failed (discarded, retried)",
            prometheus.rounds.clone(),
        );
        registry.register(
            "prometheus_requests",
            "Queries the Prometheus source sent",
            prometheus.requests.clone(),
        );
        registry.register(
            "prometheus_series",
            "Series the Prometheus source holds samples or carries of",
            prometheus.series.clone(),
        );
        let sql = SqlMetrics::default();
        registry.register(
            "sql_reads",
            "SQL source reads by import and outcome: ok, failed (the import's cursor stays; read again next round)",
            sql.reads.clone(),
        );
        registry.register(
            "sql_rows",
            "Rows the SQL source read and handed to billing, by import",
            sql.rows.clone(),
        );
        registry.register(
            "sql_late_rows",
            "Rows of time imports committed later than their lateness (found by the re-count; missed)",
            sql.late_rows.clone(),
        );
        registry.register(
            "sql_pending_keys",
            "Billed keys of sequence imports above the final cursor (waiting for open transactions)",
            sql.pending_keys.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            sink,
            queue,
            billing,
            runai,
            prometheus,
            sql,
        }
    }

    /// Copies the queue's counts into the queue gauges.
    pub fn observe_queue(&self, queue: &Queue) {
        self.queue
            .delivery_lag
            .set(oldest_event_age(queue, jiff::Timestamp::now().as_second()));
        self.queue.pending_events.set(queue.pending_events());
        self.queue.pending_bytes.set(queue.pending_bytes());
        // Counters kept by the queue: a scrape never scans the dead letters.
        self.queue.dead_letters.set(queue.dead_letter_count());
        if let Ok(size) = queue.size_on_disk() {
            self.queue.size_on_disk.set(size);
        }
    }

    /// The OpenMetrics text exposition of every registered metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Seconds between `now` and the `time` of the oldest undelivered event (the end of its
/// window, always set by the host); 0 when the queue is empty or unreadable (readiness
/// reports an unreadable queue).
fn oldest_event_age(queue: &Queue, now: i64) -> u64 {
    #[derive(serde::Deserialize)]
    struct Time {
        time: String,
    }
    let Ok(oldest) = queue.peek(1) else {
        return 0;
    };
    oldest
        .first()
        .and_then(|e| serde_json::from_slice::<Time>(e.json()).ok())
        .and_then(|t| t.time.parse::<jiff::Timestamp>().ok())
        .map_or(0, |t| {
            now.saturating_sub(t.as_second()).max(0).unsigned_abs()
        })
}
