//! The pure core of leader election: given the Lease as just read, what to write.
//!
//! No I/O and no clock reads: the caller passes the monotonic `now` (for expiry, judged on the
//! local clock as client-go does) and the wall-clock `now` (only written into the record).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;

use super::{LeaseConfig, LeaseStatus, WATERMARK_ANNOTATION_PREFIX};
use crate::window;

/// The fields of a Lease that the election reads and writes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub holder: Option<String>,
    pub duration_seconds: i32,
    pub acquire_time: Option<Timestamp>,
    pub renew_time: Option<Timestamp>,
    pub transitions: i32,
    /// `watermark.edgemeter.io/<source>` annotations, source → Unix seconds.
    pub watermarks: BTreeMap<String, i64>,
}

impl Record {
    /// Reads a Lease (unknown or malformed annotations are ignored, not fatal: the watermark
    /// only shortens a follower's catch-up).
    pub fn from_lease(lease: &Lease) -> Record {
        let spec = lease.spec.clone().unwrap_or_default();
        let watermarks = lease
            .metadata
            .annotations
            .iter()
            .flatten()
            .filter_map(|(k, v)| {
                let source = k.strip_prefix(WATERMARK_ANNOTATION_PREFIX)?;
                let t = window::parse_instant("lease watermark", v).ok()?;
                Some((source.to_owned(), t))
            })
            .collect();
        Record {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            duration_seconds: spec.lease_duration_seconds.unwrap_or(0),
            acquire_time: spec.acquire_time.map(|t| t.0),
            renew_time: spec.renew_time.map(|t| t.0),
            transitions: spec.lease_transitions.unwrap_or(0),
            watermarks,
        }
    }

    /// Writes this record into `lease` (other annotations and fields are kept).
    pub fn apply(&self, lease: &mut Lease) {
        let annotations = lease.metadata.annotations.get_or_insert_with(BTreeMap::new);
        annotations.retain(|k, _| !k.starts_with(WATERMARK_ANNOTATION_PREFIX));
        for (source, t) in &self.watermarks {
            annotations.insert(
                format!("{WATERMARK_ANNOTATION_PREFIX}{source}"),
                window::rfc3339(*t),
            );
        }
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = self.holder.clone();
        spec.lease_duration_seconds = Some(self.duration_seconds);
        spec.acquire_time = self.acquire_time.map(MicroTime);
        spec.renew_time = self.renew_time.map(MicroTime);
        spec.lease_transitions = Some(self.transitions);
    }

    /// Whether a record written by another could still be current: its holder is set and
    /// differs from `identity`.
    fn held_by_other(&self, identity: &str) -> bool {
        self.holder.as_deref().is_some_and(|h| h != identity)
    }
}

/// What to do after reading the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// No lease exists: create it with this record.
    Create(Record),
    /// Write this record, guarded by the resourceVersion that was read.
    Update {
        record: Record,
        resource_version: String,
    },
    /// Another replica holds a live lease.
    Wait,
}

/// One replica's view of the election.
#[derive(Debug, Clone)]
pub struct Elector {
    identity: String,
    duration: Duration,
    renew_deadline: Duration,
    /// The last record read and when it was first seen with that content (local clock).
    observed: Option<(Record, Instant)>,
    /// The start of the last successful write as holder.
    renewed_at: Option<Instant>,
    /// The last record read or written (what the status reports).
    last: Option<Record>,
}

impl Elector {
    pub fn new(config: &LeaseConfig) -> Self {
        Elector {
            identity: config.identity.clone(),
            duration: config.duration,
            renew_deadline: config.renew_deadline,
            observed: None,
            renewed_at: None,
            last: None,
        }
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    /// Decides from the lease just read (`None`: it does not exist) at monotonic `now` and
    /// wall-clock `wall`; `watermarks` are this replica's own (source → billed up to).
    pub fn decide(
        &mut self,
        current: Option<(Record, String)>,
        now: Instant,
        wall: Timestamp,
        watermarks: &BTreeMap<String, i64>,
    ) -> Action {
        let Some((record, resource_version)) = current else {
            self.observed = None;
            return Action::Create(Record {
                holder: Some(self.identity.clone()),
                duration_seconds: self.duration_seconds(),
                acquire_time: Some(wall),
                renew_time: Some(wall),
                transitions: 0,
                watermarks: watermarks.clone(),
            });
        };
        let seen_at = match &self.observed {
            Some((seen, at)) if *seen == record => *at,
            _ => now,
        };
        self.observed = Some((record.clone(), seen_at));
        self.last = Some(record.clone());
        let lease_duration =
            Duration::from_secs(u64::try_from(record.duration_seconds.max(0)).unwrap_or(0));
        if record.held_by_other(&self.identity)
            && now.saturating_duration_since(seen_at) < lease_duration
        {
            // Someone else holds a live lease: whatever we believed, we are not the leader.
            self.renewed_at = None;
            return Action::Wait;
        }
        let ours = record.holder.as_deref() == Some(self.identity.as_str());
        // The watermarks only move forward: the lease's (another leader's) and ours.
        let mut merged = record.watermarks.clone();
        for (source, t) in watermarks {
            let w = merged.entry(source.clone()).or_insert(*t);
            *w = (*w).max(*t);
        }
        Action::Update {
            record: Record {
                holder: Some(self.identity.clone()),
                duration_seconds: self.duration_seconds(),
                acquire_time: if ours {
                    record.acquire_time.or(Some(wall))
                } else {
                    Some(wall)
                },
                renew_time: Some(wall),
                transitions: if ours {
                    record.transitions
                } else {
                    record.transitions.saturating_add(1)
                },
                watermarks: merged,
            },
            resource_version,
        }
    }

    /// The record of a release: holder cleared, duration 1 s, this replica's final
    /// watermarks — so the next replica takes over at once, from where this one stopped.
    pub fn release(&self, wall: Timestamp, watermarks: &BTreeMap<String, i64>) -> Option<Record> {
        let last = self.last.as_ref()?;
        if last.holder.as_deref() != Some(self.identity.as_str()) {
            return None;
        }
        let mut merged = last.watermarks.clone();
        for (source, t) in watermarks {
            let w = merged.entry(source.clone()).or_insert(*t);
            *w = (*w).max(*t);
        }
        Some(Record {
            holder: None,
            duration_seconds: 1,
            acquire_time: Some(wall),
            renew_time: Some(wall),
            transitions: last.transitions,
            watermarks: merged,
        })
    }

    /// A write decided at `started` succeeded: `record` is now the lease.
    pub fn written(&mut self, record: Record, started: Instant) {
        if record.holder.as_deref() == Some(self.identity.as_str()) {
            self.renewed_at = Some(started);
        } else {
            self.renewed_at = None;
        }
        self.observed = Some((record.clone(), started));
        self.last = Some(record);
    }

    /// Whether this replica holds the lease at `now`.
    pub fn is_leader(&self, now: Instant) -> bool {
        self.status().may_bill(now)
    }

    /// The status the daemon reads.
    pub fn status(&self) -> LeaseStatus {
        LeaseStatus {
            renewed_at: self.renewed_at,
            renew_deadline: self.renew_deadline,
            holder: self.last.as_ref().and_then(|r| r.holder.clone()),
            watermarks: self
                .last
                .iter()
                .flat_map(|r| r.watermarks.iter().map(|(k, v)| (k.clone(), *v)))
                .collect(),
        }
    }
}
