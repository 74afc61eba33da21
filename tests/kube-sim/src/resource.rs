//! The resource types the simulator serves, and how each is named on the wire.

use serde::{Deserialize, Serialize};

/// A core/v1 resource the simulator stores and serves.
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
}

impl ResourceKind {
    /// Every kind, in a fixed order.
    pub const ALL: [ResourceKind; 4] = [
        ResourceKind::Pod,
        ResourceKind::PersistentVolumeClaim,
        ResourceKind::PersistentVolume,
        ResourceKind::Node,
    ];

    /// The URL segment (`pods`).
    pub fn plural(self) -> &'static str {
        match self {
            ResourceKind::Pod => "pods",
            ResourceKind::PersistentVolumeClaim => "persistentvolumeclaims",
            ResourceKind::PersistentVolume => "persistentvolumes",
            ResourceKind::Node => "nodes",
        }
    }

    /// The object `kind` (`Pod`).
    pub fn kind(self) -> &'static str {
        match self {
            ResourceKind::Pod => "Pod",
            ResourceKind::PersistentVolumeClaim => "PersistentVolumeClaim",
            ResourceKind::PersistentVolume => "PersistentVolume",
            ResourceKind::Node => "Node",
        }
    }

    /// The list `kind` (`PodList`).
    pub fn list_kind(self) -> &'static str {
        match self {
            ResourceKind::Pod => "PodList",
            ResourceKind::PersistentVolumeClaim => "PersistentVolumeClaimList",
            ResourceKind::PersistentVolume => "PersistentVolumeList",
            ResourceKind::Node => "NodeList",
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        matches!(
            self,
            ResourceKind::Pod | ResourceKind::PersistentVolumeClaim
        )
    }

    /// The kind for a URL segment.
    pub fn from_plural(plural: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.plural() == plural)
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
