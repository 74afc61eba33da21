//! Leader election over a `coordination.k8s.io/v1` Lease, so that several replicas of the
//! collector can run and exactly one bills.
//!
//! ## Protocol (client-go `tools/leaderelection`, `tryAcquireOrRenew`)
//!
//! Every `retry_period` each replica reads the Lease and decides ([`elector::Elector::decide`],
//! pure):
//! - no Lease: create it with itself as holder;
//! - held by another whose record has not changed for `lease_duration` **on the local clock**
//!   (the holder's `renewTime` is only compared for change, never against the local clock, so
//!   clock skew between nodes does not matter): take it over with a resourceVersion-guarded
//!   update (`leaseTransitions` + 1);
//! - held by itself: renew (same guarded update, new `renewTime`);
//! - otherwise wait.
//!
//! A 409 Conflict means another replica wrote first: this round is lost, nothing else happens.
//! A replica is **leader only while its last successful write started less than
//! `renew_deadline` ago** ([`LeaseStatus::may_bill`]); `renew_deadline < lease_duration`, so a
//! leader that cannot renew stops billing before any other replica can judge the lease expired
//! and take it. A leader that lost the lease keeps trying like any other replica (it is never
//! stuck as a follower). On shutdown the leader releases the lease (holder cleared, duration
//! 1 s) after its last window is committed, so a rolling update hands over at once.
//!
//! ## The watermark travels with the lease
//!
//! The holder writes its source's watermark ("billed up to") into the Lease annotation
//! `watermark.edgemeter.io/<source>` on every renewal, in the same guarded write. Each replica
//! has its own queue (its own volume): a new leader bills from
//! `max(its own stored watermark, the lease's)`, and a follower advances its in-memory
//! watermark to the lease's (forgetting what the leader billed) without committing anything.
//! The annotation trails the holder's true watermark by at most one renewal, so after a
//! failover the new leader may bill again the few windows the old leader committed after its
//! last renewal. Windows lie on a fixed grid of the interval ([`crate::daemon::windows`]), so
//! those windows have the same bounds and the same event ids as the old leader's, and the
//! ingest API deduplicates them: no span is billed twice and none is skipped. The old leader's
//! committed events stay in its own queue and are delivered when it (or its volume) comes back;
//! delivery runs on followers too.

pub mod client;
pub mod elector;

use std::path::Path;
use std::time::{Duration, Instant};

use crate::window::{self, WindowError};

/// Where the service account's namespace is mounted in a pod.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// The annotation prefix of the watermarks carried by the lease.
pub const WATERMARK_ANNOTATION_PREFIX: &str = "watermark.edgemeter.io/";

/// Flags of leader election (`edgemeter run`).
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct LeaseArgs {
    /// Elect one leader among replicas with a coordination.k8s.io/v1 Lease; only the leader
    /// bills (every replica delivers its own queue).
    #[arg(long, env = "EDGEMETER_LEADER_ELECTION", default_value_t = false, action = clap::ArgAction::Set, default_missing_value = "true", num_args = 0..=1)]
    pub leader_election: bool,
    /// Name of the Lease.
    #[arg(long, env = "EDGEMETER_LEASE_NAME", default_value = "edgemeter")]
    pub lease_name: String,
    /// Namespace of the Lease; default `POD_NAMESPACE`, else the service account's namespace.
    #[arg(long, env = "EDGEMETER_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This replica's identity in the Lease; default `POD_NAME`, else the host name.
    #[arg(long, env = "EDGEMETER_LEASE_IDENTITY")]
    pub lease_identity: Option<String>,
    /// How long a Lease not renewed stays with its holder (Go duration).
    #[arg(long, env = "EDGEMETER_LEASE_DURATION", default_value = "15s")]
    pub lease_duration: String,
    /// A leader that has not renewed for this long stops billing (shorter than the duration).
    #[arg(long, env = "EDGEMETER_LEASE_RENEW_DEADLINE", default_value = "10s")]
    pub lease_renew_deadline: String,
    /// Time between attempts to acquire or renew.
    #[arg(long, env = "EDGEMETER_LEASE_RETRY_PERIOD", default_value = "2s")]
    pub lease_retry_period: String,
}

/// Validated leader-election settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// Invalid leader-election settings; each names the key and the fix.
#[derive(Debug, thiserror::Error)]
pub enum LeaseConfigError {
    #[error("invalid {key}: {source}")]
    Duration {
        key: &'static str,
        #[source]
        source: WindowError,
    },
    #[error("invalid {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error(
        "failed to find the Lease namespace: set EDGEMETER_LEASE_NAMESPACE / --lease-namespace (or POD_NAMESPACE from the downward API)"
    )]
    NoNamespace,
    #[error(
        "failed to find this replica's identity: set EDGEMETER_LEASE_IDENTITY / --lease-identity (or POD_NAME from the downward API)"
    )]
    NoIdentity,
}

fn duration(key: &'static str, value: &str) -> Result<Duration, LeaseConfigError> {
    let d = window::parse_duration(value)
        .map_err(|source| LeaseConfigError::Duration { key, source })?;
    if d < Duration::from_millis(100) {
        return Err(LeaseConfigError::Invalid {
            key,
            reason: format!("{value:?} is too short; use at least 100ms, e.g. 2s"),
        });
    }
    Ok(d)
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl LeaseArgs {
    /// The validated settings when leader election is on (`None` when off). `env` reads the
    /// process environment (`POD_NAMESPACE`, `POD_NAME`, `HOSTNAME`) and `file` the service
    /// account's namespace file, so tests can inject both.
    pub fn config(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
        file: &dyn Fn(&Path) -> Option<String>,
    ) -> Result<Option<LeaseConfig>, LeaseConfigError> {
        if !self.leader_election {
            return Ok(None);
        }
        let lease_duration = duration(
            "EDGEMETER_LEASE_DURATION / --lease-duration",
            &self.lease_duration,
        )?;
        let renew_deadline = duration(
            "EDGEMETER_LEASE_RENEW_DEADLINE / --lease-renew-deadline",
            &self.lease_renew_deadline,
        )?;
        let retry_period = duration(
            "EDGEMETER_LEASE_RETRY_PERIOD / --lease-retry-period",
            &self.lease_retry_period,
        )?;
        if renew_deadline >= lease_duration {
            return Err(LeaseConfigError::Invalid {
                key: "EDGEMETER_LEASE_RENEW_DEADLINE / --lease-renew-deadline",
                reason: format!(
                    "{:?} must be shorter than the lease duration {:?} (a leader must stop before another may take over), e.g. 10s with 15s",
                    self.lease_renew_deadline, self.lease_duration
                ),
            });
        }
        if retry_period >= renew_deadline {
            return Err(LeaseConfigError::Invalid {
                key: "EDGEMETER_LEASE_RETRY_PERIOD / --lease-retry-period",
                reason: format!(
                    "{:?} must be shorter than the renew deadline {:?} (several renewals must fit in it), e.g. 2s with 10s",
                    self.lease_retry_period, self.lease_renew_deadline
                ),
            });
        }
        let name = self.lease_name.trim();
        if name.is_empty() || name.len() > 253 || !name.split('.').all(is_dns_label) {
            return Err(LeaseConfigError::Invalid {
                key: "EDGEMETER_LEASE_NAME / --lease-name",
                reason: format!(
                    "{:?} is not a Kubernetes object name, e.g. edgemeter",
                    self.lease_name
                ),
            });
        }
        let nonempty = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        let namespace = nonempty(self.lease_namespace.clone())
            .or_else(|| nonempty(env("POD_NAMESPACE")))
            .or_else(|| nonempty(file(Path::new(SERVICE_ACCOUNT_NAMESPACE))))
            .ok_or(LeaseConfigError::NoNamespace)?;
        if !is_dns_label(&namespace) {
            return Err(LeaseConfigError::Invalid {
                key: "EDGEMETER_LEASE_NAMESPACE / --lease-namespace",
                reason: format!("{namespace:?} is not a namespace name"),
            });
        }
        let identity = nonempty(self.lease_identity.clone())
            .or_else(|| nonempty(env("POD_NAME")))
            .or_else(|| nonempty(env("HOSTNAME")))
            .or_else(|| nonempty(file(Path::new("/proc/sys/kernel/hostname"))))
            .ok_or(LeaseConfigError::NoIdentity)?;
        Ok(Some(LeaseConfig {
            name: name.to_owned(),
            namespace,
            identity,
            duration: lease_duration,
            renew_deadline,
            retry_period,
        }))
    }
}

/// What the daemon knows of the election at a moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseStatus {
    /// The start of this replica's last successful write as holder, while it holds the lease.
    pub renewed_at: Option<Instant>,
    /// How long after `renewed_at` this replica may bill.
    pub renew_deadline: Duration,
    /// The holder named by the last lease read or written.
    pub holder: Option<String>,
    /// The lease's watermarks (source name → Unix seconds), as last read or written.
    pub watermarks: Vec<(String, i64)>,
}

impl LeaseStatus {
    /// Whether this replica holds the lease at `now` (and may commit a window).
    pub fn may_bill(&self, now: Instant) -> bool {
        self.renewed_at
            .is_some_and(|t| now.saturating_duration_since(t) < self.renew_deadline)
    }

    /// The lease's watermark of `source`.
    pub fn watermark(&self, source: &str) -> Option<i64> {
        self.watermarks
            .iter()
            .find(|(name, _)| name == source)
            .map(|(_, w)| *w)
    }
}

#[cfg(test)]
mod tests;
