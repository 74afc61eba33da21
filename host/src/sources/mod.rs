//! Sources: where the collector learns what workloads hold.
//!
//! - [`kubernetes`]: pods, PVCs, PVs and nodes watched through the Kubernetes API into a
//!   per-UID ledger; [`kubernetes::source::KubernetesSource`] is its [`MeteredSource`].
//! - [`runai`]: workloads, pods, metrics, projects and departments polled from the Run:ai
//!   control-plane API in complete rounds; [`runai::source::RunaiSource`].
//! - [`prometheus`]: raw samples of configured queries; [`prometheus::source::PrometheusSource`].
//! - [`sql`]: rows of configured imports from PostgreSQL; [`sql::source::SqlSource`].
//!
//! A source is one folder here plus one line in [`start`] (and a [`SourceChoice`] value).
//! What the biller needs of it is [`MeteredSource`]: a name (its
//! watermark key and ledger-record prefix in the queue), whether its view is complete, the
//! items of a window, and the state to store with each commit. Every source has its own
//! watermark and windows, and commits to the one queue; the queue serializes commits
//! ([`crate::queue::Queue::begin_window`]), so sources billing at once neither lose nor
//! duplicate a window.

pub mod kubernetes;
pub mod pods;
pub mod poll;
pub mod prometheus;
pub mod runai;
pub mod sql;

use futures::future::BoxFuture;

use crate::daemon::windows::Plan;

use crate::mapper::bindings::{Item, SourceKind};
use crate::metrics::Metrics;
use crate::queue::LedgerWrites;
use crate::window::Window;

/// What a metered source offers the biller.
pub trait MeteredSource {
    /// The watermark key in the queue (e.g. `kubernetes`).
    fn name(&self) -> &str;
    /// The source kind passed to mappers.
    fn kind(&self) -> SourceKind;
    /// True when the source holds a complete, current view (listed, watch healthy).
    fn in_sync(&self) -> bool;
    /// The latest time up to which the source's data is complete, when that is behind the
    /// daemon's `now − settle` (a polled source covers only what its last complete poll
    /// read): no window ends after it. `None` (the default): no limit beyond the settle
    /// delay (a watched source, current while in sync).
    fn ready_until(&self) -> Option<i64> {
        None
    }
    /// What the daemon logs while the source is not in sync (its windows wait).
    fn waiting(&self) -> &'static str {
        "waiting for the source to be in sync before billing"
    }
    /// Every item with allocation inside `window`.
    fn items(&self, window: &Window) -> Vec<Item>;
    /// A page of [`MeteredSource::items`]: from position `cursor` (0 first) at most `max`
    /// items, and the position of the next page (`None` after the last; a next position is
    /// always past `cursor`). The biller pages one window while holding the source, so the
    /// pages hold each item once. The default builds every item and keeps one page; a large
    /// source overrides it so that only one page is ever in memory.
    fn items_page(&self, window: &Window, cursor: usize, max: usize) -> (Vec<Item>, Option<usize>) {
        let mut all = self.items(window);
        let end = cursor.saturating_add(max.max(1));
        if end >= all.len() {
            return (all.split_off(cursor.min(all.len())), None);
        }
        all.truncate(end);
        (all.split_off(cursor), Some(end))
    }
    /// Inputs of `window` the source read but could not turn into items (a database row
    /// whose value did not convert): `(reason, the input as read)`, kept as dead letters in
    /// the window's commit, so they are neither lost nor blocking (each logged here). Default:
    /// none.
    fn dead_letters(&self, window: &Window) -> Vec<(String, serde_json::Value)> {
        let _ = window;
        Vec::new()
    }
    /// Everything that ended at or before `watermark` has been billed and may be forgotten.
    fn forget_billed(&mut self, watermark: i64);
    /// Whether this replica bills (false: a standby of leader election, following the
    /// holder's watermark). Called before every tick. Default: nothing to do (a source whose
    /// state is rebuilt from its input, not advanced by what it billed).
    fn set_billing(&mut self, billing: bool) {
        let _ = billing;
    }
    /// State records changed since the last [`MeteredSource::ledger_committed`], to write in
    /// the same transaction as the next window (keys relative to the source). Calling it again
    /// before `ledger_committed` returns them again, with any newer changes. Default: none (a
    /// source whose state needs no persisting).
    fn ledger_writes(&mut self) -> LedgerWrites {
        LedgerWrites::default()
    }
    /// The writes last returned by [`MeteredSource::ledger_writes`] are on disk with a
    /// committed window: forget them (changes made since stay pending), and the late windows
    /// last returned by [`MeteredSource::late_windows`].
    fn ledger_committed(&mut self) {}
    /// Windows before `watermark` (on the grid of `interval`) holding items the source learnt
    /// of only after those windows were committed (a watch event that arrived late), to bill
    /// with the next commit under the ids they would have had on time. Returned again until
    /// [`MeteredSource::ledger_committed`]. Default: none.
    fn late_windows(&mut self, watermark: i64, interval: u64) -> Vec<(Window, Vec<Item>)> {
        let _ = (watermark, interval);
        Vec::new()
    }
}

/// A running source as the daemon drives it: billed through [`MeteredSource`], fed in the
/// background, and asked to catch up right before each tick. The daemon knows no source
/// beyond this trait.
pub trait Source: MeteredSource + Send {
    /// Waits for the source's next input and applies it (and whatever else already arrived);
    /// `false` once it can receive nothing any more (its background tasks ended).
    fn pump(&mut self) -> BoxFuture<'_, bool>;
    /// Applies every input already received and notes new errors: called right before a
    /// tick, so a window never ends after an event that was already received.
    fn catch_up(&mut self);
    /// Adds what the source counted since the last call to `metrics`.
    fn publish_metrics(&mut self, metrics: &Metrics);
    /// Stops its background tasks.
    fn stop(&self);
}

/// The sources `edgemeter run` can run (`--source`, `EDGEMETER_SOURCES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum SourceChoice {
    /// Pods, PVCs and nodes watched through the Kubernetes API.
    Kubernetes,
    /// Workloads and their metrics polled from the Run:ai control plane (`RUNAI_URL`).
    Runai,
    /// Raw samples of configured queries read from a Prometheus server (`PROMETHEUS_URL`).
    Prometheus,
    /// Rows of configured imports read from SQL databases (`SQL_IMPORTS`).
    Sql,
}

impl SourceChoice {
    /// The source's name: its watermark key and its `source` metrics label.
    pub fn name(self) -> &'static str {
        match self {
            SourceChoice::Kubernetes => kubernetes::source::SOURCE_NAME,
            SourceChoice::Runai => runai::source::SOURCE_NAME,
            SourceChoice::Prometheus => prometheus::source::SOURCE_NAME,
            SourceChoice::Sql => sql::source::SOURCE_NAME,
        }
    }
}

/// What a source needs to start.
#[allow(missing_debug_implementations, reason = "kube::Client has no Debug")]
pub struct StartContext<'a> {
    /// The Kubernetes API client (`None` when no source or lease needs one).
    pub kube: Option<kube::Client>,
    pub plan: Plan,
    /// The source's watermark (stored, or where its first start begins).
    pub watermark: i64,
    /// The source's state records stored with its last commit.
    pub records: Vec<(Vec<u8>, sled::IVec)>,
    /// The source's mapper reads raw objects.
    pub wants_raw_objects: bool,
    pub kubernetes: &'a kubernetes::KubernetesArgs,
    pub runai: &'a runai::RunaiArgs,
    pub prometheus: &'a prometheus::config::PrometheusArgs,
    pub sql: &'a sql::config::SqlArgs,
    /// Pods' billing annotations, written by the Kubernetes source, read by the others;
    /// `None` when no source reads them (nothing is kept then).
    pub pods: Option<pods::PodDirectory>,
}

/// Why a source could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "the Kubernetes source needs the Kubernetes API client; configure a cluster (in-cluster or KUBECONFIG)"
    )]
    NoKubernetesClient,
    #[error(transparent)]
    Kubernetes(#[from] kubernetes::ConfigError),
    #[error(transparent)]
    Runai(#[from] runai::ConfigError),
    #[error("failed to build the Run:ai client")]
    RunaiClient(#[source] runai::ClientError),
    #[error(transparent)]
    Prometheus(#[from] prometheus::config::ConfigError),
    #[error("failed to build the Prometheus client")]
    PrometheusClient(#[source] prometheus::client::ClientError),
    #[error(transparent)]
    Sql(#[from] sql::config::ConfigError),
}

/// Starts one source on the current runtime: one line per source.
pub fn start(choice: SourceChoice, ctx: StartContext<'_>) -> Result<Box<dyn Source>, StartError> {
    Ok(match choice {
        SourceChoice::Kubernetes => Box::new(kubernetes::source::start_source(ctx)?),
        SourceChoice::Runai => Box::new(runai::source::start_source(ctx)?),
        SourceChoice::Prometheus => Box::new(prometheus::source::start_source(ctx)?),
        SourceChoice::Sql => Box::new(sql::source::start_source(ctx)?),
    })
}
