//! Configuration of the Kubernetes source: what to watch and how to reach the API server.
//!
//! | Flag | Environment | Meaning |
//! |---|---|---|
//! | `--namespace` | `SCRAPE_NAMESPACE` | empty = all namespaces; `a,b` = one watcher per namespace |
//! | `--label-selector` | `SCRAPE_LABEL_SELECTOR` | pods only, e.g. `team=ml,tier!=batch` |
//! | `--node-name` | `SCRAPE_NODE_NAME` | only pods on this node (`spec.nodeName`), for per-node DaemonSets |
//! | `--kubeconfig` | | kubeconfig file; default: in-cluster, then `$KUBECONFIG` or `~/.kube/config` |
//! | `--context` | | kubeconfig context; default: the current one |

use std::path::PathBuf;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::watcher::{StreamId, WatchKind};

/// Why the Kubernetes source could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "failed to read --namespace (SCRAPE_NAMESPACE) {value:?}: {name:?} is not a namespace name (lower-case letters, digits and '-', at most 63, starting and ending alphanumeric); use e.g. \"default,ml\" or leave it empty for all namespaces"
    )]
    Namespace { value: String, name: String },
    #[error(
        "failed to read --label-selector {value:?}: {reason}; use e.g. \"app=web,tier!=batch\" or \"env in (prod,staging)\""
    )]
    LabelSelector { value: String, reason: String },
    #[error(
        "failed to read --node-name {value:?}: not a node name (lower-case letters, digits, '-' and '.', at most 253); pass the node's metadata.name, e.g. from the downward API spec.nodeName"
    )]
    NodeName { value: String },
    #[error(
        "failed to read --watch-idle-timeout (EDGEMETER_WATCH_IDLE_TIMEOUT) {value:?}: {reason}; use whole seconds of at least 2s, e.g. 150s (the API server sends a bookmark about once a minute, so less than ~90s marks quiet streams stalled)"
    )]
    WatchIdleTimeout { value: String, reason: String },
    #[error(
        "failed to read EDGEMETER_KINDS / --kinds {value:?}: {reason}; pass a comma-separated list of pods and pvcs, e.g. pods,pvcs"
    )]
    Kinds { value: String, reason: String },
    #[error("failed to read kubeconfig {path:?} (--kubeconfig)")]
    ReadKubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("failed to load the kubeconfig (context {context:?})")]
    Kubeconfig {
        context: Option<String>,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error(
        "failed to find Kubernetes configuration: not in a cluster and no usable kubeconfig; pass --kubeconfig"
    )]
    Infer {
        #[source]
        source: kube::config::InferConfigError,
    },
    #[error("failed to create the Kubernetes client")]
    Client {
        #[source]
        source: kube::Error,
    },
}

/// Flags of the Kubernetes source; the daemon embeds them with `#[command(flatten)]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct KubernetesArgs {
    /// Namespaces to meter, comma-separated; empty means all namespaces.
    #[arg(long = "namespace", env = "SCRAPE_NAMESPACE", default_value = "")]
    pub namespace: String,
    /// Only pods matching this label selector (e.g. `app=web,tier!=batch`).
    #[arg(long = "label-selector", env = "SCRAPE_LABEL_SELECTOR")]
    pub label_selector: Option<String>,
    /// Only pods bound to this node (field selector `spec.nodeName`); for per-node DaemonSets.
    /// PVCs and PVs are then not watched (a cluster-wide instance bills them once).
    #[arg(long = "node-name", env = "SCRAPE_NODE_NAME")]
    pub node_name: Option<String>,
    /// What this collector meters, comma-separated: `pods` (with the nodes they run on) and
    /// `pvcs` (with their PVs). Default: `pods,pvcs`, or `pods` with `--node-name` (each
    /// per-node collector bills its node's pods; one cluster-wide `--kinds pvcs` collector
    /// bills storage once).
    #[arg(long = "kinds", env = "EDGEMETER_KINDS")]
    pub kinds: Option<String>,
    /// A watch that delivers nothing (no event, no bookmark) for this long is treated as
    /// stalled: out of sync (nothing billed) until it is resumed and caught up.
    #[arg(
        long = "watch-idle-timeout",
        env = "EDGEMETER_WATCH_IDLE_TIMEOUT",
        default_value = "150s"
    )]
    pub watch_idle_timeout: String,
    /// Kubeconfig file; default: in-cluster configuration, then `$KUBECONFIG` / `~/.kube/config`.
    /// (`$KUBECONFIG`, which may list several files, is honoured by the default path.)
    #[arg(long = "kubeconfig")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context; default: the current context.
    #[arg(long = "context")]
    pub context: Option<String>,
}

/// The validated scope of the watchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// `None` = all namespaces (one cluster-wide watcher); otherwise sorted and distinct.
    pub namespaces: Option<Vec<String>>,
    pub label_selector: Option<String>,
    pub node_name: Option<String>,
    /// Pods (and nodes) are watched and billed.
    pub pods: bool,
    /// PVCs (and PVs) are watched and billed.
    pub pvcs: bool,
}

impl Default for Scope {
    fn default() -> Self {
        Scope {
            namespaces: None,
            label_selector: None,
            node_name: None,
            pods: true,
            pvcs: true,
        }
    }
}

impl Scope {
    /// Whether pods (and the nodes they run on) are watched.
    pub fn watches_pods(&self) -> bool {
        self.pods
    }

    /// Whether PVCs and PVs are watched.
    pub fn watches_storage(&self) -> bool {
        self.pvcs
    }

    /// The selectors that shape the lists of `kind`'s streams, as one string. Stored with each
    /// persisted ledger entry: after a restart an entry is attached to a stream only if these
    /// are unchanged (under other selectors the first list would end pods that merely stopped
    /// matching, or that another collector now meters).
    pub fn selectors(&self, kind: WatchKind) -> String {
        match kind {
            WatchKind::Pods => format!(
                "labelSelector={};fieldSelector={}",
                self.label_selector.as_deref().unwrap_or_default(),
                self.node_name
                    .as_deref()
                    .map(|n| format!("spec.nodeName={n}"))
                    .unwrap_or_default()
            ),
            WatchKind::Pvcs | WatchKind::Pvs | WatchKind::Nodes => String::new(),
        }
    }

    /// The stream that watches `kind` objects of `namespace` in this scope (the same
    /// [`StreamId`] as [`spawn_watchers`](super::spawn_watchers) gives it); `None` when no
    /// stream does.
    pub fn stream_for(&self, kind: WatchKind, namespace: Option<&str>) -> Option<StreamId> {
        let index = match kind {
            WatchKind::Pods | WatchKind::Pvcs => match (&self.namespaces, namespace) {
                (None, _) => 0,
                (Some(list), Some(ns)) => list.iter().position(|n| n == ns)?,
                (Some(_), None) => return None,
            },
            WatchKind::Pvs | WatchKind::Nodes => 0,
        };
        if matches!(kind, WatchKind::Pvcs | WatchKind::Pvs) && !self.watches_storage() {
            return None;
        }
        if matches!(kind, WatchKind::Pods | WatchKind::Nodes) && !self.watches_pods() {
            return None;
        }
        Some(StreamId {
            kind,
            scope: u16::try_from(index).unwrap_or(u16::MAX),
        })
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Checks the shape of a label selector the API server accepts: comma-separated requirements
/// (`k`, `!k`, `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`).
fn check_label_selector(value: &str) -> Result<(), String> {
    let mut depth = 0i32;
    let mut term = String::new();
    let mut terms = Vec::new();
    for c in value.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        if depth < 0 {
            return Err("unbalanced ')'".into());
        }
        if c == ',' && depth == 0 {
            terms.push(std::mem::take(&mut term));
        } else {
            term.push(c);
        }
    }
    if depth != 0 {
        return Err("unbalanced '('".into());
    }
    terms.push(term);
    for t in terms {
        let t = t.trim();
        if t.is_empty() {
            return Err("empty requirement (stray comma?)".into());
        }
        // `!key` (does not exist) or `key<op>...`: the key is what precedes the operator.
        let key = t
            .strip_prefix('!')
            .unwrap_or(t)
            .split(['=', '!', ' ', '('])
            .next()
            .unwrap_or_default();
        let key_ok = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
        if !key_ok {
            return Err(format!("{t:?} has no valid label key"));
        }
    }
    Ok(())
}

/// `--kinds`: `(pods, pvcs)`.
fn parse_kinds(list: &str) -> Result<(bool, bool), ConfigError> {
    let (mut pods, mut pvcs) = (false, false);
    for kind in list.split(',').map(str::trim).filter(|k| !k.is_empty()) {
        match kind {
            "pods" | "pod" => pods = true,
            "pvcs" | "pvc" | "persistentvolumeclaims" => pvcs = true,
            other => {
                return Err(ConfigError::Kinds {
                    value: list.to_owned(),
                    reason: format!("{other:?} is not a kind this source meters"),
                });
            }
        }
    }
    if !pods && !pvcs {
        return Err(ConfigError::Kinds {
            value: list.to_owned(),
            reason: "nothing to meter".to_owned(),
        });
    }
    Ok((pods, pvcs))
}

impl KubernetesArgs {
    /// Validates the flags into a [`Scope`]; errors name the flag and the fix.
    /// `--watch-idle-timeout`, validated (whole seconds, at least 2 s; empty: 150 s).
    pub fn watch_idle_timeout(&self) -> Result<std::time::Duration, ConfigError> {
        let value = self.watch_idle_timeout.trim();
        if value.is_empty() {
            return Ok(super::watcher::DEFAULT_IDLE_TIMEOUT);
        }
        let bad = |reason: String| ConfigError::WatchIdleTimeout {
            value: value.to_owned(),
            reason,
        };
        let d = crate::window::parse_duration(value).map_err(|e| bad(e.to_string()))?;
        if d < std::time::Duration::from_secs(2) || d.subsec_nanos() != 0 {
            return Err(bad("too short or not whole seconds".to_owned()));
        }
        Ok(d)
    }

    pub fn scope(&self) -> Result<Scope, ConfigError> {
        let mut names: Vec<String> = self
            .namespace
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect();
        if let Some(bad) = names.iter().find(|n| !is_dns_label(n)) {
            return Err(ConfigError::Namespace {
                value: self.namespace.clone(),
                name: bad.clone(),
            });
        }
        names.sort();
        names.dedup();
        let label_selector = match self.label_selector.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) => {
                check_label_selector(s).map_err(|reason| ConfigError::LabelSelector {
                    value: s.to_owned(),
                    reason,
                })?;
                Some(s.to_owned())
            }
        };
        let node_name = match self.node_name.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(n) if is_dns_subdomain(n) => Some(n.to_owned()),
            Some(n) => {
                return Err(ConfigError::NodeName {
                    value: n.to_owned(),
                });
            }
        };
        let (pods, pvcs) = match self.kinds.as_deref().map(str::trim) {
            None | Some("") => (true, node_name.is_none()),
            Some(list) => parse_kinds(list)?,
        };
        if pvcs && node_name.is_some() {
            return Err(ConfigError::Kinds {
                value: self.kinds.clone().unwrap_or_default(),
                reason: "PVCs are cluster-wide and --node-name meters one node: every per-node collector would bill them again".to_owned(),
            });
        }
        Ok(Scope {
            namespaces: (!names.is_empty()).then_some(names),
            label_selector,
            node_name,
            pods,
            pvcs,
        })
    }

    /// Builds a client: `--kubeconfig` (with `--context`) if given; else, with `--context`, the
    /// default kubeconfig; else `Client::try_default` semantics (in-cluster, then kubeconfig).
    pub async fn client(&self) -> Result<Client, ConfigError> {
        install_crypto_provider();
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..KubeConfigOptions::default()
        };
        let config = match (&self.kubeconfig, &self.context) {
            (Some(path), _) => {
                let kubeconfig =
                    Kubeconfig::read_from(path).map_err(|source| ConfigError::ReadKubeconfig {
                        path: path.clone(),
                        source,
                    })?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|source| ConfigError::Kubeconfig {
                        context: self.context.clone(),
                        source,
                    })?
            }
            (None, Some(_)) => kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|source| ConfigError::Kubeconfig {
                    context: self.context.clone(),
                    source,
                })?,
            (None, None) => kube::Config::infer()
                .await
                .map_err(|source| ConfigError::Infer { source })?,
        };
        Client::try_from(config).map_err(|source| ConfigError::Client { source })
    }
}

/// kube 5 with rustls needs exactly one process-wide crypto provider; installing it twice is
/// harmless (the second attempt is refused and ignored).
pub fn install_crypto_provider() {
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
}
