//! The allocation interval of a pod: when it started and stopped holding node resources.
//!
//! - **Start**: the `PodScheduled=True` condition's `lastTransitionTime` (resources are reserved
//!   on the node from binding). A pod never scheduled holds nothing.
//! - **End**: once the phase is `Succeeded`/`Failed`, the latest `finishedAt` over all container
//!   statuses (app, init, ephemeral). A terminal pod with no `finishedAt` anywhere (evicted, or
//!   failed before a container started) ends when the terminal phase was first observed
//!   (`Observations::terminal_observed_at`), or, read from a file, at its latest condition
//!   transition; both are marked *estimated*.
//! - A pod deleted before reaching a terminal phase ends when the deletion was observed; a
//!   deletion that happened while the collector was down is an estimate (marked).
//! - Open (`until = None`) otherwise.
//!
//! API timestamps have one-second resolution, so whole seconds are exact.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

/// What the collector observed about a pod beyond the object itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observations {
    /// When the collector first saw the pod in a terminal phase (Unix seconds).
    pub terminal_observed_at: Option<i64>,
    /// When the pod's deletion was observed, and whether that time is an estimate.
    pub deleted: Option<Deletion>,
}

/// A pod deletion as observed by the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deletion {
    pub at: i64,
    /// True when the deletion happened while the collector was not watching.
    pub estimated: bool,
}

/// `[from, until)` in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub from: i64,
    pub until: Option<i64>,
    pub estimated: bool,
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn latest_finished(statuses: &[&Vec<ContainerStatus>]) -> Option<i64> {
    statuses
        .iter()
        .flat_map(|v| v.iter())
        .filter_map(|cs| cs.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0.as_second())
        .max()
}

/// The pod's scheduling time, if it was scheduled.
pub fn scheduled_at(pod: &Pod) -> Option<i64> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "True")?
        .last_transition_time
        .as_ref()
        .map(|t| t.0.as_second())
}

/// The allocation interval, or `None` for a pod that was never scheduled.
pub fn interval(pod: &Pod, obs: &Observations) -> Option<Interval> {
    let from = scheduled_at(pod)?;
    let status = pod.status.as_ref();
    let (until, estimated) = if is_terminal(pod) {
        let lists: Vec<&Vec<ContainerStatus>> = status
            .into_iter()
            .flat_map(|s| {
                [
                    s.container_statuses.as_ref(),
                    s.init_container_statuses.as_ref(),
                    s.ephemeral_container_statuses.as_ref(),
                ]
            })
            .flatten()
            .collect();
        match latest_finished(&lists) {
            Some(t) => (Some(t), false),
            None => {
                let latest_condition = status
                    .and_then(|s| s.conditions.as_ref())
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.last_transition_time.as_ref().map(|t| t.0.as_second()))
                    .max();
                let end = obs
                    .terminal_observed_at
                    .or(latest_condition)
                    .or(obs.deleted.map(|d| d.at))
                    .unwrap_or(from);
                (Some(end), true)
            }
        }
    } else if let Some(d) = obs.deleted {
        (Some(d.at), d.estimated)
    } else {
        (None, false)
    };
    Some(Interval {
        from,
        until: until.map(|u| u.max(from)),
        estimated,
    })
}
