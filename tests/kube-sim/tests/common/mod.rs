//! Shared helpers for the integration tests: a real `kube::Client` pointed at the simulator and a
//! mirror fed by the real `kube_runtime::watcher` with its default backoff.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Config, ResourceExt};
use kube_sim::{Cluster, KubeSim, ResourceKind, SimConfig};

/// Upper bound for every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(60);

pub fn sim_config() -> SimConfig {
    SimConfig {
        bookmark_interval: Duration::from_millis(200),
        ..SimConfig::default()
    }
}

pub async fn start(cluster: Cluster) -> KubeSim {
    KubeSim::start(cluster, sim_config())
        .await
        .expect("kube-sim starts")
}

/// A real client built from the simulator's kubeconfig, as `edgemeter --kubeconfig` would.
pub async fn client(sim: &KubeSim) -> Client {
    // kube 5 with rustls needs exactly one process-wide crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = Kubeconfig::from_yaml(&sim.kubeconfig_yaml()).expect("kubeconfig parses");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config from kubeconfig");
    Client::try_from(config).expect("client")
}

/// What the watcher has told us so far.
#[derive(Debug, Default)]
pub struct Mirror {
    /// `namespace/name` → resourceVersion, after the last completed (re-)list.
    pub objects: BTreeMap<String, String>,
    /// Objects of a (re-)list in progress.
    buffer: Option<BTreeMap<String, String>>,
    /// How many times the watcher started a (re-)list (`Event::Init`).
    pub inits: usize,
    /// How many (re-)lists completed (`Event::InitDone`).
    pub init_dones: usize,
    /// Status codes of `WatchError`s (ERROR events).
    pub watch_error_codes: Vec<u16>,
    /// Count of other errors (connection failures etc.).
    pub other_errors: usize,
    /// Every applied or deleted object name, in order, with the event kind.
    pub log: Vec<(String, String)>,
}

fn key(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

/// Runs the real watcher (default config, default backoff) on `api`, mirroring into the result.
pub fn spawn_mirror(
    api: Api<Pod>,
    config: watcher::Config,
) -> (Arc<Mutex<Mirror>>, tokio::task::JoinHandle<()>) {
    let mirror = Arc::new(Mutex::new(Mirror::default()));
    let m = mirror.clone();
    let task = tokio::spawn(async move {
        let mut stream = watcher(api, config).default_backoff().boxed();
        while let Some(item) = stream.next().await {
            let mut m = m.lock().expect("mirror lock");
            match item {
                Ok(watcher::Event::Init) => {
                    m.inits += 1;
                    m.buffer = Some(BTreeMap::new());
                }
                Ok(watcher::Event::InitApply(pod)) => {
                    let rv = pod.resource_version().unwrap_or_default();
                    m.log.push(("InitApply".into(), key(&pod)));
                    if let Some(b) = m.buffer.as_mut() {
                        b.insert(key(&pod), rv);
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    m.init_dones += 1;
                    m.objects = m.buffer.take().unwrap_or_default();
                }
                Ok(watcher::Event::Apply(pod)) => {
                    m.log.push(("Apply".into(), key(&pod)));
                    m.objects
                        .insert(key(&pod), pod.resource_version().unwrap_or_default());
                }
                Ok(watcher::Event::Delete(pod)) => {
                    m.log.push(("Delete".into(), key(&pod)));
                    m.objects.remove(&key(&pod));
                }
                Err(watcher::Error::WatchError(status)) => m.watch_error_codes.push(status.code),
                Err(_) => m.other_errors += 1,
            }
        }
    });
    (mirror, task)
}

/// The cluster's pods as `namespace/name` → resourceVersion.
pub fn truth(cluster: &Cluster) -> BTreeMap<String, String> {
    cluster
        .list(ResourceKind::Pod)
        .iter()
        .map(|p| {
            let ns = p["metadata"]["namespace"].as_str().unwrap_or_default();
            let name = p["metadata"]["name"].as_str().unwrap_or_default();
            let rv = p["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default();
            (format!("{ns}/{name}"), rv.to_owned())
        })
        .collect()
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after [`WAIT`].
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(WAIT, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting for: {what}");
}

/// Waits until the mirror equals the cluster's current pods (same names, same resourceVersions).
pub async fn converged(mirror: &Arc<Mutex<Mirror>>, cluster: &Cluster, what: &str) {
    eventually(what, || {
        let m = mirror.lock().expect("mirror lock");
        m.init_dones > 0 && m.objects == truth(cluster)
    })
    .await;
}

/// Runs `fut` with the test-wide bound.
pub async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}
