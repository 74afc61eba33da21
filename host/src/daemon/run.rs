//! `edgemeter run`: the daemon wiring and its configuration.
//!
//! Sources → ledger → windows → mapper → queue → sink, with `/metrics`, `/healthz`, `/readyz`,
//! and graceful shutdown on SIGTERM/SIGINT: the current window is finished and committed, the
//! queue flushed, and the process exits (undelivered events stay queued for the next start).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::cli::mapper_args::MapperArgs;
use crate::http::{self, HttpState};
use crate::lease::{self, LeaseArgs, LeaseConfigError, LeaseStatus};
use crate::metrics::Metrics;
use crate::queue::{Queue, QueueConfig, QueueError};
use crate::sinks::openmeter::{self, OpenMeterConfig, SinkError};
use crate::sinks::stdout;
use crate::sinks::supervisor::{RestartPolicy, supervise};
use crate::snapshot::Identity;
use crate::sources::kubernetes::KubernetesArgs;
use crate::sources::runai::RunaiArgs;
use crate::sources::{SourceChoice, StartContext};
use crate::window::{self, WindowError};

use super::biller::{Biller, TickOutcome};
use super::windows::{
    ClockGuard, ClockJump, Idle, LeaseEvidence, LostQueue, Plan, Start, StartEvidence, StartRules,
    decide_start,
};
use crate::metrics::SourceBilling;
use crate::sources::{MeteredSource, Source};

/// Where events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SinkKind {
    /// The OpenMeter ingest API (`OPENMETER_URL`).
    Openmeter,
    /// JSON lines on stdout (debugging, demos).
    Stdout,
}

/// Arguments of `edgemeter run` (every flag also reads its environment variable).
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Configuration file: a YAML mapping of the environment-variable names below to values
    /// (flags and environment variables take precedence over it).
    #[arg(long, env = "EDGEMETER_CONFIG")]
    pub config: Option<String>,
    /// Billing interval, Go duration syntax (`15s`, `1m30s`); at least 1s.
    #[arg(long, env = "SCRAPE_INTERVAL", default_value = "15s")]
    pub scrape_interval: String,
    /// The most time billed at one tick: after downtime, the missed windows (each one
    /// interval of the grid) are caught up in steps of this size.
    #[arg(long, env = "EDGEMETER_MAX_WINDOW", default_value = "1h")]
    pub max_window: String,
    /// How far behind now windows end, so watch events have arrived.
    #[arg(long, env = "EDGEMETER_SETTLE", default_value = "2s")]
    pub settle: String,
    /// On the very first start (no stored watermark), bill from this long before now (at most
    /// 31 days: the API keeps no older state of running pods, and a typo such as `100y` would
    /// only bill a century of catch-up windows).
    #[arg(long, env = "EDGEMETER_BACKFILL", default_value = "0s")]
    pub backfill: String,
    /// Start even though the queue lost its watermark (a corrupt queue moved aside, a queue
    /// directory whose history outlived its database, a Lease naming this replica while its
    /// queue is empty): bill from now (minus the backfill). Without it, or a backfill, such a
    /// start is refused with what was lost. Remove it once started.
    #[arg(long, env = "EDGEMETER_ALLOW_EMPTY_QUEUE", default_value_t = false, action = clap::ArgAction::Set, default_missing_value = "true", num_args = 0..=1)]
    pub allow_empty_queue: bool,
    /// Where events go.
    #[arg(long, env = "EDGEMETER_SINK", value_enum, default_value = "openmeter")]
    pub sink: SinkKind,
    /// Address of the `/metrics`, `/healthz`, `/readyz` server.
    #[arg(long, env = "EDGEMETER_HTTP_LISTEN", default_value = "0.0.0.0:9464")]
    pub http_listen: SocketAddr,
    /// Items per mapper call when the mapper declares its items independent
    /// (`items-independent`): a window is mapped in slices of this many items and committed
    /// once. Bounds memory for large clusters; other mappers get whole windows.
    #[arg(long, env = "EDGEMETER_MAPPER_SLICE_ITEMS", default_value_t = super::biller::DEFAULT_SLICE_ITEMS, value_parser = slice_items)]
    pub mapper_slice_items: usize,
    /// After SIGTERM/SIGINT, the most time the daemon takes to stop: the last windows get half
    /// of it, releasing the lease and flushing delivery the rest. Keep it below the pod's
    /// `terminationGracePeriodSeconds` (the chart: 25s of 30s).
    #[arg(long, env = "EDGEMETER_SHUTDOWN_TIMEOUT", default_value = "25s")]
    pub shutdown_timeout: String,
    /// The sources to run, comma-separated: `kubernetes`, `runai`, `prometheus`, `sql`.
    /// Default: `runai` when RUNAI_URL is set, `prometheus` when PROMETHEUS_URL is set, `sql`
    /// when SQL_IMPORTS is set, `kubernetes` unless one of those is set and no cluster is
    /// configured (neither in-cluster nor KUBECONFIG nor ~/.kube/config).
    #[arg(
        long = "source",
        env = "EDGEMETER_SOURCES",
        value_enum,
        value_delimiter = ','
    )]
    pub sources: Vec<SourceChoice>,
    /// Log every event (as the seed collector's DEBUG=true did).
    #[arg(long, env = "DEBUG", default_value_t = false, action = clap::ArgAction::Set, default_missing_value = "true", num_args = 0..=1)]
    pub debug: bool,
    #[command(flatten)]
    pub mapper: MapperArgs,
    #[command(flatten)]
    pub kubernetes: KubernetesArgs,
    #[command(flatten)]
    pub runai: RunaiArgs,
    #[command(flatten)]
    pub prometheus: crate::sources::prometheus::config::PrometheusArgs,
    #[command(flatten)]
    pub sql: crate::sources::sql::config::SqlArgs,
    #[command(flatten)]
    pub queue: QueueConfig,
    #[command(flatten)]
    pub openmeter: OpenMeterConfig,
    #[command(flatten)]
    pub lease: LeaseArgs,
}

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("invalid {key}: {source}")]
    Duration {
        key: &'static str,
        #[source]
        source: WindowError,
    },
    #[error("invalid {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error(transparent)]
    Mapper(#[from] crate::cli::mapper_args::MapperArgsError),
    #[error(transparent)]
    Kubernetes(#[from] crate::sources::kubernetes::ConfigError),
    #[error(transparent)]
    Runai(#[from] crate::sources::runai::ConfigError),
    #[error(transparent)]
    Prometheus(#[from] crate::sources::prometheus::config::ConfigError),
    #[error(transparent)]
    Sql(#[from] crate::sources::sql::config::ConfigError),
    #[error("failed to start the {source_name} source")]
    SourceStart {
        source_name: &'static str,
        #[source]
        source: crate::sources::StartError,
    },
    #[error(
        "leader election (EDGEMETER_LEASE_*) needs the Kubernetes API; configure a cluster (in-cluster or KUBECONFIG) or turn leader election off"
    )]
    LeaseWithoutCluster,
    #[error(transparent)]
    Lease(#[from] LeaseConfigError),
    #[error("failed to open the queue")]
    QueueOpen(#[source] QueueError),
    #[error("refusing to start: the queue at {dir} lost its watermark: {detail}")]
    LostQueue {
        dir: std::path::PathBuf,
        detail: String,
    },
    #[error("failed to read the queue's history or store it")]
    History(#[source] QueueError),
    #[error("failed to commit to the queue; stopping so nothing is acknowledged wrongly")]
    Queue(#[source] QueueError),
    #[error("failed to bind the HTTP server on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("failed to start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("the {0} source stopped (its background tasks ended)")]
    SourceEnded(String),
}

/// `--mapper-slice-items`: a whole number of at least 1.
fn slice_items(value: &str) -> Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "{value:?} is not a number of items of at least 1, e.g. 1000"
        )),
    }
}

fn seconds(key: &'static str, value: &str) -> Result<Duration, DaemonError> {
    window::parse_duration(value).map_err(|source| DaemonError::Duration { key, source })
}

impl RunArgs {
    /// The window plan, validated (interval ≥ 1 s, max window ≥ interval).
    pub fn plan(&self) -> Result<Plan, DaemonError> {
        let interval = seconds("SCRAPE_INTERVAL / --scrape-interval", &self.scrape_interval)?;
        if interval < Duration::from_secs(1) || interval.subsec_nanos() != 0 {
            return Err(DaemonError::Invalid {
                key: "SCRAPE_INTERVAL / --scrape-interval",
                reason: format!(
                    "{:?} must be whole seconds and at least 1s, e.g. 15s",
                    self.scrape_interval
                ),
            });
        }
        let max_window = seconds("EDGEMETER_MAX_WINDOW / --max-window", &self.max_window)?;
        if max_window < interval {
            return Err(DaemonError::Invalid {
                key: "EDGEMETER_MAX_WINDOW / --max-window",
                reason: format!(
                    "{:?} is shorter than the scrape interval {:?}",
                    self.max_window, self.scrape_interval
                ),
            });
        }
        let settle = seconds("EDGEMETER_SETTLE / --settle", &self.settle)?;
        Ok(Plan {
            interval: interval.as_secs(),
            max_window: max_window.as_secs(),
            settle: settle.as_secs(),
        })
    }
}

/// The default sources (pure): Run:ai when configured; Kubernetes unless only Run:ai is.
pub fn default_sources(runai: bool, cluster: bool) -> Vec<SourceChoice> {
    match (runai, cluster) {
        (true, false) => vec![SourceChoice::Runai],
        (true, true) => vec![SourceChoice::Kubernetes, SourceChoice::Runai],
        (false, _) => vec![SourceChoice::Kubernetes],
    }
}

/// The longest first-start backfill.
const MAX_BACKFILL: Duration = Duration::from_secs(31 * 24 * 3600);

impl RunArgs {
    /// `--backfill`, at most [`MAX_BACKFILL`].
    pub fn backfill(&self) -> Result<Duration, DaemonError> {
        let key = "EDGEMETER_BACKFILL / --backfill";
        let d = seconds(key, &self.backfill)?;
        if d > MAX_BACKFILL {
            return Err(DaemonError::Invalid {
                key,
                reason: format!(
                    "{:?} is longer than 31 days; the Kubernetes API keeps no older state of running pods, e.g. 1h",
                    self.backfill
                ),
            });
        }
        Ok(d)
    }

    /// `--shutdown-timeout`, at least 2 s.
    pub fn shutdown_timeout(&self) -> Result<Duration, DaemonError> {
        let key = "EDGEMETER_SHUTDOWN_TIMEOUT / --shutdown-timeout";
        let d = seconds(key, &self.shutdown_timeout)?;
        if d < Duration::from_secs(2) {
            return Err(DaemonError::Invalid {
                key,
                reason: format!(
                    "{:?} is too short to commit a window; use at least 2s, e.g. 25s",
                    self.shutdown_timeout
                ),
            });
        }
        Ok(d)
    }

    /// The sources to run: `--source`, else the default (see the flag).
    pub fn source_choices(&self) -> Vec<SourceChoice> {
        let mut chosen = if self.sources.is_empty() {
            let cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
                || std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty())
                || std::env::var_os("HOME").is_some_and(|h| {
                    std::path::Path::new(&h)
                        .join(".kube")
                        .join("config")
                        .exists()
                });
            let mut d = default_sources(self.runai.enabled(), cluster);
            let polled = [
                (self.prometheus.enabled(), SourceChoice::Prometheus),
                (self.sql.enabled(), SourceChoice::Sql),
            ];
            for (enabled, choice) in polled {
                if enabled {
                    d.push(choice);
                }
            }
            if polled.iter().any(|(e, _)| *e) && !self.runai.enabled() && !cluster {
                d.retain(|c| polled.iter().any(|(e, p)| *e && p == c));
            }
            d
        } else {
            self.sources.clone()
        };
        chosen.sort();
        chosen.dedup();
        chosen
    }

    /// The mapper arguments of one source: the Run:ai source has its own mapper and config
    /// (`RUNAI_MAPPER`, `RUNAI_MAPPER_CONFIG`), the limits and identity are shared.
    pub fn mapper_args(&self, choice: SourceChoice) -> MapperArgs {
        match choice {
            SourceChoice::Kubernetes => self.mapper.clone(),
            SourceChoice::Runai => MapperArgs {
                mapper: self.runai.mapper.clone(),
                mapper_config: self.runai.mapper_config.clone(),
                ..self.mapper.clone()
            },
            SourceChoice::Prometheus => MapperArgs {
                mapper: self.prometheus.mapper.clone(),
                mapper_config: self.prometheus.mapper_config.clone(),
                ..self.mapper.clone()
            },
            SourceChoice::Sql => MapperArgs {
                mapper: self.sql.mapper.clone(),
                mapper_config: self.sql.mapper_config.clone(),
                ..self.mapper.clone()
            },
        }
    }

    /// Leader-election settings from the flags and this process's environment.
    pub fn lease_config(&self) -> Result<Option<lease::LeaseConfig>, LeaseConfigError> {
        self.lease.config(&|k| std::env::var(k).ok(), &|p| {
            std::fs::read_to_string(p).ok()
        })
    }
}

impl RunArgs {
    /// The checked OpenMeter delivery (URL, CA bundle, HTTP client), `None` for `--sink
    /// stdout`: a configuration the sink cannot use refuses the start instead of failing later
    /// inside the sink task.
    pub fn delivery(&self) -> Result<Option<openmeter::Delivery>, DaemonError> {
        match self.sink {
            SinkKind::Openmeter => Ok(Some(openmeter::Delivery::new(self.openmeter.clone())?)),
            SinkKind::Stdout => Ok(None),
        }
    }
}

/// Runs the daemon until SIGTERM/SIGINT (or `shutdown` when embedded, as by `demo`).
pub fn run(args: RunArgs) -> Result<(), DaemonError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let signals = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested: finishing the current window");
            signals.cancel();
        });
        // Refuse invalid values before touching the network.
        let plan = args.plan()?;
        args.delivery()?;
        let choices = args.source_choices();
        let kubernetes = choices.contains(&SourceChoice::Kubernetes);
        if kubernetes {
            args.kubernetes.scope()?;
            args.kubernetes.watch_idle_timeout()?;
        }
        if choices.contains(&SourceChoice::Runai) {
            args.runai.validate()?;
            args.runai.source_config(plan.interval)?;
        }
        if choices.contains(&SourceChoice::Prometheus) {
            args.prometheus.validate()?;
        }
        if choices.contains(&SourceChoice::Sql) {
            args.sql.validate()?;
        }
        let lease = args.lease_config()?;
        args.shutdown_timeout()?;
        args.backfill()?;
        let client = if kubernetes || lease.is_some() {
            Some(args.kubernetes.client().await?)
        } else {
            None
        };
        run_with(args, client, shutdown).await
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "failed to listen for SIGTERM; only Ctrl-C stops the daemon");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// One source as the daemon bills it.
struct Billed {
    name: &'static str,
    source: Box<dyn Source>,
    biller: Biller,
    mapper: crate::mapper::LoadedMapper,
    metrics: SourceBilling,
    mapper_counts: MapperCounts,
}

/// The daemon body with an injected client and shutdown token (used by `run` and `demo`).
/// `client` is the Kubernetes API (needed by the Kubernetes source and leader election).
pub async fn run_with(
    args: RunArgs,
    client: Option<kube::Client>,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    let plan = args.plan()?;
    let backfill = args.backfill()?;
    let shutdown_timeout = args.shutdown_timeout()?;
    let delivery = args.delivery()?;
    let lease_config = args.lease_config()?;
    if lease_config.is_some() && client.is_none() {
        return Err(DaemonError::LeaseWithoutCluster);
    }
    let choices = args.source_choices();
    if choices.is_empty() {
        return Err(DaemonError::Invalid {
            key: "EDGEMETER_SOURCES / --source",
            reason: "no source chosen; name at least one of kubernetes, runai, prometheus, sql"
                .into(),
        });
    }
    let mut mappers = Vec::new();
    for choice in &choices {
        let m = args.mapper_args(*choice);
        mappers.push((m.load()?, m.config()?));
    }
    let queue = Queue::open(&args.queue).map_err(DaemonError::QueueOpen)?;
    let metrics = Metrics::new();

    let listener = tokio::net::TcpListener::bind(args.http_listen)
        .await
        .map_err(|source| DaemonError::Bind {
            addr: args.http_listen,
            source,
        })?;
    let http_state = HttpState {
        queue: queue.clone(),
        metrics: metrics.clone(),
    };
    let http_stop = shutdown.child_token();
    let http_task = tokio::spawn(http::serve(listener, http_state, http_stop.clone()));

    let sink_stop = CancellationToken::new();
    let sink_task = tokio::spawn(supervised_sink(
        delivery,
        queue.clone(),
        metrics.clone(),
        sink_stop.clone(),
    ));

    // Where billing starts: the stored watermark, or — without one — what the queue's history
    // and the Lease say of earlier billing (`windows::decide_start`). The Lease is read before
    // this replica's elector runs, so a Lease naming it was written by an earlier process.
    let lease_record = match (&lease_config, &client) {
        (Some(config), Some(client)) => match read_lease(client, config, &shutdown).await {
            Some(l) => Some(l),
            None => {
                sink_stop.cancel();
                http_stop.cancel();
                let _ = tokio::time::timeout(shutdown_timeout / 2, sink_task).await;
                return Ok(());
            }
        },
        _ => None,
    };
    let identity = Identity {
        collector_id: args.mapper.collector_id.clone(),
        cluster_id: args.mapper.cluster_id.clone(),
    };
    let mut billed: Vec<Billed> = Vec::new();
    // Kept only when a source joins pods' annotations (Prometheus series by namespace/pod).
    let pods = choices
        .contains(&SourceChoice::Prometheus)
        .then(crate::sources::pods::PodDirectory::default);
    for (choice, (mapper, mapper_config)) in choices.iter().copied().zip(mappers) {
        let name = choice.name();
        let evidence = StartEvidence {
            stored: queue.watermark(name).map_err(DaemonError::QueueOpen)?,
            history: history_of(queue.history(), name),
            lease: lease_record.as_ref().map(|l| l.evidence(name)),
        };
        let start = start_point(&plan, &evidence, &args, backfill)?;
        let records = queue.ledger_records(name).map_err(DaemonError::QueueOpen)?;
        let mut biller = Biller::new(
            plan,
            mapper.clone(),
            queue.clone(),
            identity.clone(),
            mapper_config,
            name,
            start,
        )
        .map_err(DaemonError::QueueOpen)?;
        biller.set_log_events(args.debug);
        biller.set_slice_items(args.mapper_slice_items);
        biller.set_items_rejected(metrics.billing.items_rejected.clone());
        biller.set_late_items(metrics.billing.late_items.clone());
        let ctx = StartContext {
            kube: client.clone(),
            plan,
            watermark: biller.watermark(),
            records,
            wants_raw_objects: mapper.wants_raw_objects(),
            kubernetes: &args.kubernetes,
            runai: &args.runai,
            prometheus: &args.prometheus,
            sql: &args.sql,
            pods: pods.clone(),
        };
        let source =
            crate::sources::start(choice, ctx).map_err(|source| DaemonError::SourceStart {
                source_name: name,
                source,
            })?;
        record_history(&queue, name, biller.watermark())?;
        billed.push(Billed {
            name,
            source,
            biller,
            mapper,
            metrics: metrics.billing.for_source(name),
            mapper_counts: MapperCounts::default(),
        });
    }
    let watermarks = |billed: &[Billed]| -> BTreeMap<String, i64> {
        billed
            .iter()
            .map(|b| (b.name.to_owned(), b.biller.watermark()))
            .collect()
    };

    // Leader election: the elector task publishes the lease status and reads our watermarks.
    let (marks_tx, marks_rx) = tokio::sync::watch::channel(watermarks(&billed));
    let (status_tx, status_rx) = tokio::sync::watch::channel(LeaseStatus::default());
    let lease_stop = CancellationToken::new();
    let lease_task = lease_config.zip(client.clone()).map(|(config, client)| {
        tracing::info!(lease = %config.name, namespace = %config.namespace, identity = %config.identity, "leader election on: billing only while holding the lease");
        let api = kube::Api::namespaced(client, &config.namespace);
        tokio::spawn(lease::client::run(
            api,
            config,
            marks_rx,
            status_tx,
            lease_stop.clone(),
        ))
    });
    let elected = lease_task.is_some();
    metrics.billing.leader.set(i64::from(!elected));
    // Whether this replica may commit now (always, without leader election).
    let may_bill = || !elected || status_rx.borrow().may_bill(Instant::now());
    for b in &billed {
        tracing::info!(
            source = b.name,
            watermark = %window::rfc3339(b.biller.watermark()),
            mapper = %b.mapper.name(),
            "source billing"
        );
    }
    tracing::info!(
        sources = ?billed.iter().map(|b| b.name).collect::<Vec<_>>(),
        interval_s = plan.interval,
        sink = ?args.sink,
        http = %args.http_listen,
        "edgemeter running"
    );

    let mut ticker = tokio::time::interval(Duration::from_secs(plan.interval));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for b in &mut billed {
        b.source.publish_metrics(&metrics);
    }
    let mut was_leader = false;
    // The wall clock is checked against the monotonic clock at every tick (`ClockGuard`).
    let (mut clock, clock_base) = (ClockGuard::default(), Instant::now());
    // Liveness (`daemon::liveness`): progress at each completed tick and each window started.
    metrics
        .billing
        .liveness_stale_after
        .set(super::liveness::stale_after(plan.interval));
    let progress = || {
        metrics
            .billing
            .last_tick
            .set(jiff::Timestamp::now().as_second());
    };
    progress();
    let synced = |billed: &[Billed]| {
        for b in billed {
            b.metrics.in_sync.set(i64::from(b.source.in_sync()));
        }
        metrics
            .billing
            .source_synced
            .set(i64::from(billed.iter().all(|b| b.source.in_sync())));
    };
    let result = loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                // Finish the current windows before exiting (if this replica bills), within
                // half the shutdown budget (a long catch-up stops between windows).
                let stopping = Instant::now();
                let now = clock_now(&mut clock, clock_base, &metrics);
                let mut failed = None;
                for b in &mut billed {
                    b.source.catch_up();
                    follow_lease(&status_rx, b);
                    if may_bill() {
                        let outcome = tokio::task::block_in_place(|| {
                            b.biller.tick_while(b.source.as_mut(), now, &|| {
                                may_bill() && stopping.elapsed() < shutdown_timeout / 2
                            })
                        });
                        if let Err(e) = report(outcome, b) { failed = Some(e); break; }
                    }
                }
                break failed.map_or(Ok(()), Err);
            }
            _ = ticker.tick() => {
                let now = clock_now(&mut clock, clock_base, &metrics);
                let leader = may_bill();
                if leader && !was_leader {
                    metrics.billing.leader_transitions.inc();
                }
                was_leader = leader;
                metrics.billing.leader.set(i64::from(leader));
                let mut failed = None;
                for b in &mut billed {
                    // Each source's own catch-up right before its tick: a window never ends
                    // after an input that was already received.
                    b.source.set_billing(leader);
                    b.source.catch_up();
                    follow_lease(&status_rx, b);
                    b.source.publish_metrics(&metrics);
                    if leader {
                        let outcome = tokio::task::block_in_place(|| {
                            b.biller.tick_while(b.source.as_mut(), now, &|| { progress(); !shutdown.is_cancelled() && may_bill() })
                        });
                        b.mapper_counts = b.mapper_counts.publish(&b.mapper, &metrics);
                        if let Err(e) = report(outcome, b) { failed = Some(e); break; }
                    } else {
                        b.metrics.watermark.set(b.biller.watermark());
                    }
                    b.metrics.lag.set(now - b.biller.watermark());
                }
                if let Some(e) = failed { break Err(e); }
                synced(&billed);
                progress();
                marks_tx.send_replace(watermarks(&billed));
            }
            (alive, index) = futures::FutureExt::map(
                futures::future::select_all(billed.iter_mut().map(|b| b.source.pump())),
                // The other sources' pumps are dropped here, before the handler.
                |(alive, index, _rest)| (alive, index),
            ) => {
                if !alive { break Err(DaemonError::SourceEnded(billed[index].name.to_owned())); }
                synced(&billed);
            }
        }
    };
    // What is left of the shutdown budget bounds each step below.
    let deadline = tokio::time::Instant::now() + shutdown_timeout / 2;
    let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
    for b in &billed {
        b.source.stop();
    }
    // Release the lease only now, with the final watermarks: the next leader starts there.
    marks_tx.send_replace(watermarks(&billed));
    lease_stop.cancel();
    if let Some(task) = lease_task
        && tokio::time::timeout(left().min(Duration::from_secs(5)), task)
            .await
            .is_err()
    {
        tracing::warn!("the lease was not released in time; it expires by itself");
    }
    sink_stop.cancel();
    http_stop.cancel();
    match tokio::time::timeout(left(), sink_task).await {
        Ok(Err(e)) => tracing::error!(error = %e, "delivery task failed"),
        Err(_) => tracing::warn!("delivery did not stop in time; events stay queued"),
        Ok(Ok(())) => {}
    }
    let _ = tokio::time::timeout(left().max(Duration::from_millis(100)), http_task).await;
    for b in &billed {
        tracing::info!(source = b.name, watermark = %window::rfc3339(b.biller.watermark()), "edgemeter stopped");
        if result.is_ok()
            && let Err(e) = record_history(&queue, b.name, b.biller.watermark())
        {
            tracing::warn!(error = %e, "the queue's history file was not updated at the stop");
        }
    }
    result
}

/// The history file as evidence for one source: what it says of that source, or — when it
/// never recorded that source and no database was moved aside — nothing (a source added to a
/// running queue starts as a first start, it lost nothing).
fn history_of(
    history: Option<crate::queue::QueueHistory>,
    source: &str,
) -> Option<crate::queue::QueueHistory> {
    let mut h = history?;
    if h.moved_aside.is_none() && !h.watermarks.contains_key(source) {
        return None;
    }
    h.watermarks.retain(|k, _| k == source);
    Some(h)
}

/// Where billing starts ([`decide_start`]), saying so: a lost queue is refused with what was
/// lost and the fix, or — when told how to proceed — started with an ERROR naming the loss.
fn start_point(
    plan: &Plan,
    evidence: &StartEvidence,
    args: &RunArgs,
    backfill: Duration,
) -> Result<i64, DaemonError> {
    let now = jiff::Timestamp::now().as_second();
    let rules = StartRules {
        now,
        backfill: backfill.as_secs(),
        max_backfill: MAX_BACKFILL.as_secs(),
        allow_empty_queue: args.allow_empty_queue,
    };
    match decide_start(plan, evidence, rules) {
        Start::Resume(w) => {
            if args.allow_empty_queue {
                tracing::warn!(
                    "EDGEMETER_ALLOW_EMPTY_QUEUE is set but the queue has its watermark: remove it, or a queue lost later starts from now without being refused"
                );
            }
            Ok(w)
        }
        Start::First(w) => Ok(w),
        Start::FollowLease(w) => {
            tracing::info!(
                from = %window::rfc3339(w),
                "first start of this replica: billing would resume from the Lease holder's watermark, which is behind now"
            );
            Ok(w)
        }
        Start::Proceed { from, lost } => {
            tracing::error!(
                queue = %args.queue.path.display(),
                from = %window::rfc3339(from),
                lost = %lost,
                unbilled = %unbilled_span(&lost, from),
                "the queue lost its watermark; starting as told (EDGEMETER_ALLOW_EMPTY_QUEUE or EDGEMETER_BACKFILL): the old queue's undelivered events are lost, and the unbilled span is never billed"
            );
            Ok(from)
        }
        Start::Refuse(lost) => {
            let detail = refusal(&lost, now);
            tracing::error!(queue = %args.queue.path.display(), "{detail}");
            Err(DaemonError::LostQueue {
                dir: args.queue.path.clone(),
                detail,
            })
        }
    }
}

/// The span a lost queue's start leaves unbilled, as text.
fn unbilled_span(lost: &LostQueue, from: i64) -> String {
    match lost.known_watermark {
        Some(w) if w < from => format!("{} to {}", window::rfc3339(w), window::rfc3339(from)),
        Some(_) => "none".to_owned(),
        None => "unknown: nothing says when billing stopped".to_owned(),
    }
}

/// What a refused start says: what was lost and how to proceed.
fn refusal(lost: &LostQueue, now: i64) -> String {
    let max = i64::try_from(MAX_BACKFILL.as_secs()).unwrap_or(i64::MAX);
    let since = match lost.known_watermark {
        Some(w) => {
            let need = now.saturating_sub(w).max(1);
            let backfill = if need > max {
                format!(
                    "EDGEMETER_BACKFILL=744h (the most, 31 days; the {}s since then are more)",
                    need
                )
            } else {
                format!("EDGEMETER_BACKFILL={need}s")
            };
            format!(
                "billing had reached {} ({need}s ago), and that span is not in this queue; its undelivered events are lost. To proceed: restore the old queue; or start once with {backfill} to bill again from there (windows billed before keep their ids and OpenMeter deduplicates them); or with EDGEMETER_ALLOW_EMPTY_QUEUE=true to bill from now on, leaving that span unbilled",
                window::rfc3339(w)
            )
        }
        None => "when billing stopped is unknown, and its undelivered events are lost. To proceed: restore the old queue; or start once with EDGEMETER_BACKFILL=<how far back to bill again> (windows billed before keep their ids and OpenMeter deduplicates them); or with EDGEMETER_ALLOW_EMPTY_QUEUE=true to bill from now on".to_owned(),
    };
    format!("{lost}; {since}")
}

/// Notes this start's (or stop's) watermark in the queue's history file once it is durable
/// in the database (a watermark not yet stored, as with a queue full before the first
/// window, is not noted: a history file must never name a queue without a watermark).
fn record_history(queue: &Queue, source: &str, watermark: i64) -> Result<(), DaemonError> {
    let stored = queue.watermark(source).map_err(DaemonError::History)?;
    match stored {
        Some(w) => queue
            .record_history(source, w.max(watermark))
            .map_err(DaemonError::History),
        None => Ok(()),
    }
}

/// The Lease as read before billing starts.
#[derive(Debug)]
struct LeaseRecord {
    holder: Option<String>,
    watermarks: BTreeMap<String, i64>,
    identity: String,
}

impl LeaseRecord {
    /// What it says of one source.
    fn evidence(&self, source: &str) -> LeaseEvidence {
        LeaseEvidence {
            holder: self.holder.clone(),
            watermark: self.watermarks.get(source).copied(),
            identity: self.identity.clone(),
        }
    }
}

/// Reads the Lease once before billing starts, for [`decide_start`]: retried (with a WARN)
/// until it answers or the daemon is stopped (`None`); the watch cannot list without the API
/// server either.
async fn read_lease(
    client: &kube::Client,
    config: &lease::LeaseConfig,
    shutdown: &CancellationToken,
) -> Option<LeaseRecord> {
    let api: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(client.clone(), &config.namespace);
    let mut delay = config.retry_period;
    loop {
        let error =
            match tokio::time::timeout(config.renew_deadline, api.get_opt(&config.name)).await {
                Ok(Ok(found)) => {
                    let record = found
                        .as_ref()
                        .map(lease::elector::Record::from_lease)
                        .unwrap_or_default();
                    return Some(LeaseRecord {
                        holder: record.holder,
                        watermarks: record.watermarks.into_iter().collect(),
                        identity: config.identity.clone(),
                    });
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {:?}", config.renew_deadline),
            };
        tracing::warn!(lease = %config.name, error, retry_in = ?delay, "failed to read the lease before the first window (it tells where billing starts); retrying");
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// The time to bill by at a tick: the wall clock, checked against the monotonic clock
/// ([`ClockGuard`]). A jump is logged and counted when first seen; while the wall clock is
/// ahead, billing goes by the monotonic clock.
fn clock_now(guard: &mut ClockGuard, base: Instant, metrics: &Metrics) -> i64 {
    let wall = jiff::Timestamp::now().as_second();
    let reading = guard.observe(wall, base.elapsed());
    let b = &metrics.billing;
    b.clock_ahead
        .set(i64::try_from(reading.ahead).unwrap_or(i64::MAX));
    let count = |direction: &str| {
        b.clock_jumps
            .get_or_create(&crate::metrics::DirectionLabels {
                direction: direction.to_owned(),
            })
            .inc();
    };
    match reading.jump {
        Some(ClockJump::Forward { seconds }) => {
            count("forward");
            tracing::error!(
                ahead_s = seconds,
                wall = %window::rfc3339(wall),
                billing_by = %window::rfc3339(reading.now),
                "the wall clock jumped ahead of the monotonic clock: refused, windows are billed by the monotonic clock (nothing in the future is billed) until the wall clock is back in line; fix NTP on this node — if the new time is right (a resumed VM), restart the collector to bill up to it"
            );
        }
        Some(ClockJump::Backward { seconds }) => {
            count("backward");
            tracing::warn!(
                behind_s = seconds,
                wall = %window::rfc3339(wall),
                "the wall clock jumped back against the monotonic clock; billing follows it (nothing already billed is billed again)"
            );
        }
        None => {}
    }
    if reading.recovered {
        tracing::info!(wall = %window::rfc3339(wall), "the wall clock is back in line with the monotonic clock; billing by it again");
    }
    reading.now
}

/// Moves a source's biller to the lease's watermark of it (what the holder billed), leader
/// or not.
fn follow_lease(status: &tokio::sync::watch::Receiver<LeaseStatus>, b: &mut Billed) {
    // Copy out: a borrow held across the tick would block the elector's updates.
    let lease_watermark = status.borrow().watermark(b.name);
    if let Some(w) = lease_watermark {
        let source: &mut dyn MeteredSource = b.source.as_mut();
        b.biller.adopt(source, w);
    }
}

/// Mapper counters already copied to metrics.
#[derive(Debug, Default, Clone, Copy)]
struct MapperCounts {
    calls: u64,
    timeouts: u64,
    memory: u64,
    traps: u64,
}

impl MapperCounts {
    fn publish(self, mapper: &crate::mapper::LoadedMapper, metrics: &Metrics) -> Self {
        let s = mapper.stats();
        let now = MapperCounts {
            calls: s.calls.load(Ordering::Relaxed),
            timeouts: s.timeouts.load(Ordering::Relaxed),
            memory: s.memory_exceeded.load(Ordering::Relaxed),
            traps: s.traps.load(Ordering::Relaxed),
        };
        metrics
            .billing
            .mapper_calls
            .inc_by(now.calls.saturating_sub(self.calls));
        for (reason, new, old) in [
            ("timeout", now.timeouts, self.timeouts),
            ("memory", now.memory, self.memory),
            ("trap", now.traps, self.traps),
        ] {
            if new > old {
                metrics
                    .billing
                    .mapper_failures
                    .get_or_create(&crate::metrics::FailureLabels {
                        reason: reason.to_owned(),
                    })
                    .inc_by(new - old);
            }
        }
        now
    }
}

fn report(outcome: TickOutcome, billed: &Billed) -> Result<(), DaemonError> {
    let b = &billed.metrics;
    let biller = &billed.biller;
    let source = billed.name;
    b.watermark.set(biller.watermark());
    match outcome {
        TickOutcome::Billed {
            windows,
            events,
            watermark,
        } => {
            b.windows_billed.inc_by(windows as u64);
            b.events_enqueued.inc_by(events as u64);
            if windows > 0 {
                tracing::debug!(source, windows, events, watermark = %window::rfc3339(watermark), "billed");
            }
        }
        TickOutcome::Idle(Idle::NothingNew) => {}
        TickOutcome::Idle(Idle::ClockBehind { seconds }) => {
            b.window_failed("clock_behind");
            tracing::error!(
                source,
                watermark = %window::rfc3339(biller.watermark()),
                behind_s = seconds,
                "the wall clock is behind the watermark (time went backwards): nothing is billed until it passes it again; check NTP on this node (nothing is lost: the span is billed once the clock catches up)"
            );
        }
        TickOutcome::Idle(Idle::NotInSync) => {
            b.window_failed("not_in_sync");
            tracing::info!(source, "{}", billed.source.waiting());
        }
        TickOutcome::QueueFull { windows, watermark } => {
            b.windows_billed.inc_by(windows as u64);
            b.window_failed("queue_full");
            tracing::error!(
                source,
                watermark = %window::rfc3339(watermark),
                "queue is full: windows paused until delivery frees space (nothing is lost; the next window covers the gap)"
            );
        }
        TickOutcome::MapperFailed {
            windows,
            watermark,
            error,
        } => {
            b.windows_billed.inc_by(windows as u64);
            b.window_failed("mapper");
            tracing::error!(
                source,
                watermark = %window::rfc3339(watermark),
                error = %error,
                "mapper failed the window; it will be retried (nothing is lost)"
            );
        }
        TickOutcome::QueueFailed(e) => return Err(DaemonError::Queue(e)),
    }
    Ok(())
}

/// The sink (OpenMeter with `delivery`, else stdout) under [`supervise`]: restarted with
/// backoff and counted if it stops while the daemon runs, rather than exiting the daemon (why:
/// `sinks::supervisor`). Returns once `stop` is cancelled and the sink has returned.
async fn supervised_sink(
    delivery: Option<openmeter::Delivery>,
    queue: Queue,
    metrics: Metrics,
    stop: CancellationToken,
) {
    let (q, m, s) = (queue, metrics.clone(), stop.clone());
    let policy = RestartPolicy::default();
    match delivery {
        Some(d) => {
            d.warn_if_token_in_clear_text();
            let start = move || openmeter::deliver(d.clone(), q.clone(), m.clone(), s.clone());
            supervise("openmeter", start, metrics, stop, policy).await;
        }
        None => {
            let start = move || stdout::run(q.clone(), m.clone(), s.clone(), std::io::stdout());
            supervise("stdout", start, metrics, stop, policy).await;
        }
    }
}
