//! `edgemeter run`: the daemon wiring and its configuration.
//!
//! Sources → ledger → windows → mapper → queue → sink, with `/metrics`, `/healthz`, `/readyz`,
//! and graceful shutdown on SIGTERM/SIGINT: the current window is finished and committed, the
//! queue flushed, and the process exits (undelivered events stay queued for the next start).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::cli::mapper_args::MapperArgs;
use crate::http::{self, HttpState};
use crate::metrics::Metrics;
use crate::queue::{Queue, QueueConfig, QueueError};
use crate::sinks::openmeter::{self, OpenMeterConfig, SinkError};
use crate::sinks::stdout;
use crate::sinks::supervisor::{RestartPolicy, supervise};
use crate::snapshot::Identity;
use crate::sources::kubernetes::KubernetesArgs;
use crate::window::{self, WindowError};

use super::biller::{Biller, MeteredSource, TickOutcome};
use super::kubernetes::{KubernetesSource, SOURCE_NAME};
use super::windows::{Idle, Plan};

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
    /// Windows longer than this (after downtime) are split into interval-sized windows.
    #[arg(long, env = "EDGEMETER_MAX_WINDOW", default_value = "1h")]
    pub max_window: String,
    /// How far behind now windows end, so watch events have arrived.
    #[arg(long, env = "EDGEMETER_SETTLE", default_value = "2s")]
    pub settle: String,
    /// On the very first start (no stored watermark), bill from this long before now.
    #[arg(long, env = "EDGEMETER_BACKFILL", default_value = "0s")]
    pub backfill: String,
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
    /// Log every event (as the seed collector's DEBUG=true did).
    #[arg(long, env = "DEBUG", default_value_t = false, action = clap::ArgAction::Set, default_missing_value = "true", num_args = 0..=1)]
    pub debug: bool,
    #[command(flatten)]
    pub mapper: MapperArgs,
    #[command(flatten)]
    pub kubernetes: KubernetesArgs,
    #[command(flatten)]
    pub queue: QueueConfig,
    #[command(flatten)]
    pub openmeter: OpenMeterConfig,
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
    #[error("failed to open the queue")]
    QueueOpen(#[source] QueueError),
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
    #[error("the Kubernetes watchers stopped")]
    SourceEnded,
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
        args.plan()?;
        args.delivery()?;
        args.kubernetes.scope()?;
        let client = args.kubernetes.client().await?;
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

/// The daemon body with an injected client and shutdown token (used by `run` and `demo`).
pub async fn run_with(
    args: RunArgs,
    client: kube::Client,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    let plan = args.plan()?;
    let backfill = seconds("EDGEMETER_BACKFILL / --backfill", &args.backfill)?;
    let scope = args.kubernetes.scope()?;
    let delivery = args.delivery()?;
    let mapper = args.mapper.load()?;
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

    let now = jiff::Timestamp::now().as_second();
    let start = now.saturating_sub(i64::try_from(backfill.as_secs()).unwrap_or(0));
    let identity = Identity {
        collector_id: args.mapper.collector_id.clone(),
        cluster_id: args.mapper.cluster_id.clone(),
    };
    let records = queue
        .ledger_records(SOURCE_NAME)
        .map_err(DaemonError::QueueOpen)?;
    let mut source = KubernetesSource::start(
        client,
        &scope,
        plan.settle,
        mapper.wants_raw_objects(),
        records,
    );
    let restored = source.restore_report();
    tracing::info!(
        restored = restored.restored,
        out_of_scope = restored.out_of_scope,
        unreadable = restored.unreadable,
        "ledger restored from the queue"
    );
    let mut biller = Biller::new(
        plan,
        mapper.clone(),
        queue.clone(),
        identity,
        args.mapper.config()?,
        source.name(),
        start,
    )
    .map_err(DaemonError::QueueOpen)?;
    biller.set_log_events(args.debug);
    biller.set_slice_items(args.mapper_slice_items);
    tracing::info!(
        watermark = %window::rfc3339(biller.watermark()),
        interval_s = plan.interval,
        sink = ?args.sink,
        http = %args.http_listen,
        "edgemeter running"
    );

    let mut ticker = tokio::time::interval(Duration::from_secs(plan.interval));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_mapper = MapperCounts::default();
    let result = loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                // Finish the current window before exiting.
                source.catch_up();
                let outcome = tokio::task::block_in_place(|| biller.tick(&mut source, jiff::Timestamp::now().as_second()));
                if let Err(e) = report(outcome, &metrics, &biller) { break Err(e); }
                break Ok(());
            }
            _ = ticker.tick() => {
                source.catch_up();
                let now = jiff::Timestamp::now().as_second();
                let outcome = tokio::task::block_in_place(|| biller.tick(&mut source, now));
                last_mapper = last_mapper.publish(&mapper, &metrics);
                metrics.billing.lag.set(now - biller.watermark());
                if let Err(e) = report(outcome, &metrics, &biller) { break Err(e); }
            }
            alive = source.next() => {
                if !alive { break Err(DaemonError::SourceEnded); }
            }
        }
    };
    source.stop();
    sink_stop.cancel();
    http_stop.cancel();
    match tokio::time::timeout(Duration::from_secs(10), sink_task).await {
        Ok(Err(e)) => tracing::error!(error = %e, "delivery task failed"),
        Err(_) => tracing::warn!("delivery did not stop within 10s; events stay queued"),
        Ok(Ok(())) => {}
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), http_task).await;
    tracing::info!(watermark = %window::rfc3339(biller.watermark()), "edgemeter stopped");
    result
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

fn report(outcome: TickOutcome, metrics: &Metrics, biller: &Biller) -> Result<(), DaemonError> {
    let b = &metrics.billing;
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
                tracing::debug!(windows, events, watermark = %window::rfc3339(watermark), "billed");
            }
        }
        TickOutcome::Idle(Idle::NothingNew) => {}
        TickOutcome::Idle(Idle::NotInSync) => {
            b.window_failed("not_in_sync");
            tracing::info!("waiting for the Kubernetes watch to be in sync before billing");
        }
        TickOutcome::QueueFull { windows, watermark } => {
            b.windows_billed.inc_by(windows as u64);
            b.window_failed("queue_full");
            tracing::error!(
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
