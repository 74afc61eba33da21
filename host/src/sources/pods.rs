//! What one source tells another about pods: the Kubernetes source keeps, per pod, the
//! billing annotations it saw (`openmeter.io/*`, `data.openmeter.io/*`), and the Prometheus
//! source joins them to series labelled with that `namespace` and `pod`, so a pod's network
//! bytes go to the subject its annotation names.
//!
//! # Invariants
//!
//! - Updated by the Kubernetes source as pod events are applied (one map write per event);
//!   read by other sources when they build a window's items. Without the Kubernetes source
//!   the directory stays empty and the join finds nothing (mappers fall back to labels).
//! - A deleted pod is kept for [`KEEP_DELETED`]: the windows of a polled source lag behind
//!   the watch, and a pod's last samples are billed after it is gone.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// How long a deleted pod's annotations stay known.
pub const KEEP_DELETED: i64 = 3600;

#[derive(Debug, Default)]
struct Entry {
    annotations: Vec<(String, String)>,
    deleted_at: Option<i64>,
}

/// Pod (namespace, name) → billing annotations; cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct PodDirectory(Arc<RwLock<HashMap<(String, String), Entry>>>);

/// Whether an annotation is one billing cares about.
pub fn is_billing_annotation(key: &str) -> bool {
    key.starts_with("openmeter.io/") || key.starts_with("data.openmeter.io/")
}

impl PodDirectory {
    /// A pod was added or updated with these annotations.
    pub fn upsert<'a>(
        &self,
        namespace: &str,
        name: &str,
        annotations: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) {
        let mut kept: Vec<(String, String)> = annotations
            .into_iter()
            .filter(|(k, _)| is_billing_annotation(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        kept.sort();
        if let Ok(mut map) = self.0.write() {
            map.insert(
                (namespace.to_owned(), name.to_owned()),
                Entry {
                    annotations: kept,
                    deleted_at: None,
                },
            );
        }
    }

    /// A pod was deleted at `now`; entries deleted more than [`KEEP_DELETED`] ago go.
    pub fn deleted(&self, namespace: &str, name: &str, now: i64) {
        if let Ok(mut map) = self.0.write() {
            if let Some(e) = map.get_mut(&(namespace.to_owned(), name.to_owned())) {
                e.deleted_at.get_or_insert(now);
            }
            map.retain(|_, e| e.deleted_at.is_none_or(|d| now - d <= KEEP_DELETED));
        }
    }

    /// The billing annotations of a pod, when known.
    pub fn annotations(&self, namespace: &str, name: &str) -> Option<Vec<(String, String)>> {
        let map = self.0.read().ok()?;
        map.get(&(namespace.to_owned(), name.to_owned()))
            .map(|e| e.annotations.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billing_annotations_are_kept_and_a_deleted_pod_for_an_hour() {
        let d = PodDirectory::default();
        let subject = ("openmeter.io/subject".to_owned(), "acme".to_owned());
        let other = (
            "kubectl.kubernetes.io/restartedAt".to_owned(),
            "x".to_owned(),
        );
        d.upsert(
            "shop",
            "web-1",
            [(&subject.0, &subject.1), (&other.0, &other.1)],
        );
        assert_eq!(d.annotations("shop", "web-1"), Some(vec![subject.clone()]));
        assert_eq!(d.annotations("shop", "web-2"), None);
        d.deleted("shop", "web-1", 1000);
        assert!(
            d.annotations("shop", "web-1").is_some(),
            "kept after deletion"
        );
        d.deleted("shop", "other", 1000 + KEEP_DELETED + 1);
        assert_eq!(
            d.annotations("shop", "web-1"),
            None,
            "forgotten an hour later"
        );
    }
}
