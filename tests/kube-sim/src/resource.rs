//! The resource types the simulator serves, and how each is named on the wire.
//!
//! The core/v1 kinds are read-only over HTTP (the scenario driver writes them through
//! [`crate::Cluster`]); `coordination.k8s.io/v1` leases are also written over HTTP (see
//! [`crate::leases`]).

use serde::{Deserialize, Serialize};

/// A resource the simulator stores and serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ResourceKind {
    /// `pods`, namespaced.
    Pod,
    /// `persistentvolumeclaims`, namespaced.
    PersistentVolumeClaim,
    /// `persistentvolumes`, cluster-scoped.
    PersistentVolume,
    /// `nodes`, cluster-scoped.
    Node,
    /// `coordination.k8s.io/v1` `leases`, namespaced; the only kind written over HTTP.
    Lease,
}

impl ResourceKind {
    /// Every kind, in a fixed order (core/v1 first).
    pub const ALL: [ResourceKind; 5] = [
        ResourceKind::Pod,
        ResourceKind::PersistentVolumeClaim,
        ResourceKind::PersistentVolume,
        ResourceKind::Node,
        ResourceKind::Lease,
    ];

    /// The API groups served besides the core group, with their one version each, in the order
    /// `/apis` lists them.
    pub const GROUPS: [(&'static str, &'static str); 1] = [("coordination.k8s.io", "v1")];

    /// The API group (`""` for core).
    pub fn group(self) -> &'static str {
        match self {
            ResourceKind::Lease => "coordination.k8s.io",
            _ => "",
        }
    }

    /// The API version within the group (`v1` for every kind served).
    pub fn version(self) -> &'static str {
        "v1"
    }

    /// The `apiVersion` of objects and lists (`v1`, `coordination.k8s.io/v1`).
    pub fn api_version(self) -> &'static str {
        match self {
            ResourceKind::Lease => "coordination.k8s.io/v1",
            _ => "v1",
        }
    }

    /// The resource as the API server names it in error messages (`pods`,
    /// `leases.coordination.k8s.io`).
    pub fn qualified(self) -> String {
        match self.group() {
            "" => self.plural().to_owned(),
            group => format!("{}.{group}", self.plural()),
        }
    }

    /// Whether the server accepts writes (create, update, patch, delete) of this kind over HTTP.
    pub fn writable(self) -> bool {
        matches!(self, ResourceKind::Lease)
    }

    /// The verbs discovery advertises: what the simulator actually serves for the kind.
    pub fn verbs(self) -> &'static [&'static str] {
        if self.writable() {
            &[
                "create", "delete", "get", "list", "patch", "update", "watch",
            ]
        } else {
            &["get", "list", "watch"]
        }
    }

    /// The URL segment (`pods`).
    pub fn plural(self) -> &'static str {
        match self {
            ResourceKind::Pod => "pods",
            ResourceKind::PersistentVolumeClaim => "persistentvolumeclaims",
            ResourceKind::PersistentVolume => "persistentvolumes",
            ResourceKind::Node => "nodes",
            ResourceKind::Lease => "leases",
        }
    }

    /// The object `kind` (`Pod`).
    pub fn kind(self) -> &'static str {
        match self {
            ResourceKind::Pod => "Pod",
            ResourceKind::PersistentVolumeClaim => "PersistentVolumeClaim",
            ResourceKind::PersistentVolume => "PersistentVolume",
            ResourceKind::Node => "Node",
            ResourceKind::Lease => "Lease",
        }
    }

    /// The list `kind` (`PodList`).
    pub fn list_kind(self) -> &'static str {
        match self {
            ResourceKind::Pod => "PodList",
            ResourceKind::PersistentVolumeClaim => "PersistentVolumeClaimList",
            ResourceKind::PersistentVolume => "PersistentVolumeList",
            ResourceKind::Node => "NodeList",
            ResourceKind::Lease => "LeaseList",
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        matches!(
            self,
            ResourceKind::Pod | ResourceKind::PersistentVolumeClaim | ResourceKind::Lease
        )
    }

    /// The kind for a URL segment (any group).
    pub fn from_plural(plural: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.plural() == plural)
    }

    /// The kind for a URL segment under `/api/v1` (`group` empty) or `/apis/{group}/{version}`.
    pub fn from_path(group: &str, version: &str, plural: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.group() == group && k.version() == version && k.plural() == plural)
    }

    /// The kind for an object `kind`.
    pub fn from_kind(kind: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.kind() == kind)
    }
}

impl std::fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.plural())
    }
}
