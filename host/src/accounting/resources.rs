//! Effective pod requests and limits, per the scheduler's formula
//! (`k8s.io/component-helpers/resource.PodRequests` / `PodLimits`):
//!
//! ```text
//! per container: requests default to limits where only a limit is set (API-server defaulting),
//!                then in-place resize: max(spec, status.allocatedResources, status.resources)
//! sum   = Σ app containers + Σ restartable-init (sidecar) containers
//! peak  = max over init containers i: regular i → req(i) + Σ sidecars declared before i
//!                                     sidecar i → Σ sidecars up to and including i
//! reqs  = max(sum, peak) per resource
//! pod-level spec.resources (cpu, memory, hugepages-*) replaces reqs for that resource
//! reqs += spec.overhead            (limits: only where a limit is set)
//! ```
//!
//! A resource is *limited* only when the pod-level limit is set or every container declares a
//! limit for it; otherwise its effective limit is "none" (unbounded), not the partial sum.
//!
//! A quantity that cannot be read (not a quantity, or above [`MAX_UNITS`]) makes only *its
//! resource* unknown: that resource is left out of the pod's requests and limits (request 0,
//! no limit) and named in [`Effective::unreadable`]; every other resource is computed as usual,
//! so one bad value does not cost the pod its CPU and memory.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, ContainerStatus, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::AccountingError;
use super::quantity::{self, Nanos, QuantityError};

/// Resource name → exact amount.
pub type ResourceList = BTreeMap<String, Nanos>;

/// A pod's effective resources.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effective {
    pub requests: ResourceList,
    pub limits: ResourceList,
    /// Resources for which some container (and the pod level) sets no limit.
    pub unlimited: BTreeSet<String>,
    /// Resources left out because a quantity of theirs could not be read: resource → what
    /// could not be read (the first problem met).
    pub unreadable: BTreeMap<String, String>,
}

/// The largest quantity read, in whole units: `i64::MAX`, what `Quantity.Value()` can return.
/// Kubernetes itself cannot use more (the scheduler adds requests in `int64` milli- or whole
/// units), and the bound keeps every sum of container quantities far inside `i128`.
pub const MAX_UNITS: i128 = i64::MAX as i128;

impl Effective {
    pub fn request(&self, name: &str) -> Nanos {
        self.requests.get(name).copied().unwrap_or(0)
    }

    /// `None` when unbounded.
    pub fn limit(&self, name: &str) -> Option<Nanos> {
        if self.unlimited.contains(name) {
            None
        } else {
            Some(self.limits.get(name).copied().unwrap_or(0))
        }
    }
}

const POD_LEVEL_SUPPORTED: [&str; 2] = ["cpu", "memory"];

fn is_pod_level_supported(name: &str) -> bool {
    POD_LEVEL_SUPPORTED.contains(&name) || name.starts_with("hugepages-")
}

/// Reads a resource list; a quantity that cannot be read is left out and its resource is
/// recorded in `unreadable` (with the first problem met for it).
fn parse_list(
    list: Option<&BTreeMap<String, Quantity>>,
    container: &str,
    unreadable: &mut BTreeMap<String, String>,
) -> ResourceList {
    let mut out = ResourceList::new();
    for (name, q) in list.into_iter().flatten() {
        let read = quantity::parse(&q.0).and_then(|v| {
            if v / quantity::ONE > MAX_UNITS {
                Err(QuantityError::Overflow(q.0.clone()))
            } else {
                Ok(v)
            }
        });
        match read {
            Ok(v) => {
                out.insert(name.clone(), v);
            }
            Err(source) => {
                let error = AccountingError::Quantity {
                    container: container.to_owned(),
                    resource: name.clone(),
                    source,
                };
                unreadable
                    .entry(name.clone())
                    .or_insert_with(|| super::describe(&error));
            }
        }
    }
    out
}

fn add(into: &mut ResourceList, from: &ResourceList) {
    for (k, v) in from {
        let e = into.entry(k.clone()).or_insert(0);
        // Cannot overflow with quantities ≤ MAX_UNITS; saturating all the same.
        *e = e.saturating_add(*v);
    }
}

fn max_into(into: &mut ResourceList, from: &ResourceList) {
    for (k, v) in from {
        let e = into.entry(k.clone()).or_insert(0);
        *e = (*e).max(*v);
    }
}

/// One container's (requests, limits) after defaulting and in-place resize.
fn container_resources(
    c: &Container,
    status: Option<&ContainerStatus>,
    unreadable: &mut BTreeMap<String, String>,
) -> (ResourceList, ResourceList) {
    let res = c.resources.as_ref();
    let mut limits = parse_list(res.and_then(|r| r.limits.as_ref()), &c.name, unreadable);
    let mut requests = parse_list(res.and_then(|r| r.requests.as_ref()), &c.name, unreadable);
    for (k, v) in &limits {
        requests.entry(k.clone()).or_insert(*v);
    }
    if let Some(cs) = status {
        max_into(
            &mut requests,
            &parse_list(cs.allocated_resources.as_ref(), &c.name, unreadable),
        );
        if let Some(actual) = cs.resources.as_ref() {
            max_into(
                &mut requests,
                &parse_list(actual.requests.as_ref(), &c.name, unreadable),
            );
            max_into(
                &mut limits,
                &parse_list(actual.limits.as_ref(), &c.name, unreadable),
            );
        }
    }
    (requests, limits)
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// Aggregates containers into pod totals with the sidecar/init rules (same for requests and
/// limits: `pick` chooses which of the two per-container lists to use).
fn aggregate(
    app: &[(ResourceList, ResourceList)],
    init: &[(bool, (ResourceList, ResourceList))],
    pick: fn(&(ResourceList, ResourceList)) -> &ResourceList,
) -> ResourceList {
    let mut sum = ResourceList::new();
    for c in app {
        add(&mut sum, pick(c));
    }
    let mut sidecars = ResourceList::new();
    let mut peak = ResourceList::new();
    for (sidecar, c) in init {
        if *sidecar {
            add(&mut sum, pick(c));
            add(&mut sidecars, pick(c));
            max_into(&mut peak, &sidecars);
        } else {
            let mut tmp = pick(c).clone();
            add(&mut tmp, &sidecars);
            max_into(&mut peak, &tmp);
        }
    }
    max_into(&mut sum, &peak);
    sum
}

/// Effective requests and limits of a pod (resources with an unreadable quantity left out and
/// named in [`Effective::unreadable`]).
pub fn effective(spec: &PodSpec, status: Option<&PodStatus>) -> Effective {
    fn find<'a>(
        statuses: Option<&'a Vec<ContainerStatus>>,
        name: &str,
    ) -> Option<&'a ContainerStatus> {
        statuses.and_then(|s| s.iter().find(|cs| cs.name == name))
    }
    let app_statuses = status.and_then(|s| s.container_statuses.as_ref());
    let init_statuses = status.and_then(|s| s.init_container_statuses.as_ref());

    let mut unreadable = BTreeMap::new();
    let app: Vec<_> = spec
        .containers
        .iter()
        .map(|c| container_resources(c, find(app_statuses, &c.name), &mut unreadable))
        .collect();
    let init: Vec<_> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| {
            (
                is_sidecar(c),
                container_resources(c, find(init_statuses, &c.name), &mut unreadable),
            )
        })
        .collect();

    let mut requests = aggregate(&app, &init, |c| &c.0);
    let mut limits = aggregate(&app, &init, |c| &c.1);

    // A resource is unlimited when some container declares no limit for it. Only resources
    // some container requests or limits are tracked (cpu and memory always are).
    let mut names: BTreeSet<String> = ["cpu".to_owned(), "memory".to_owned()].into();
    names.extend(requests.keys().cloned());
    let all: Vec<&ResourceList> = app
        .iter()
        .map(|c| &c.1)
        .chain(init.iter().map(|c| &(c.1).1))
        .collect();
    let mut unlimited: BTreeSet<String> = names
        .into_iter()
        .filter(|n| all.is_empty() || all.iter().any(|l| !l.contains_key(n)))
        .collect();

    if let Some(pod_level) = spec.resources.as_ref() {
        let pod_limits = parse_list(pod_level.limits.as_ref(), "<pod>", &mut unreadable);
        let mut pod_requests = parse_list(pod_level.requests.as_ref(), "<pod>", &mut unreadable);
        for (k, v) in &pod_limits {
            pod_requests.entry(k.clone()).or_insert(*v);
        }
        for (k, v) in pod_requests {
            if is_pod_level_supported(&k) {
                requests.insert(k, v);
            }
        }
        for (k, v) in pod_limits {
            if is_pod_level_supported(&k) {
                unlimited.remove(&k);
                limits.insert(k, v);
            }
        }
    }

    let overhead = parse_list(spec.overhead.as_ref(), "<overhead>", &mut unreadable);
    add(&mut requests, &overhead);
    for (k, v) in &overhead {
        if let Some(l) = limits.get_mut(k) {
            *l = l.saturating_add(*v);
        }
    }
    // Extended resources (GPUs) must have request == limit; a pod holding them is limited.
    for k in requests.keys() {
        if k.contains('/') && !k.starts_with("hugepages-") {
            unlimited.remove(k);
        }
    }
    // A resource with an unreadable quantity somewhere is unknown for the whole pod: a partial
    // sum would look exact. Request 0, no limit.
    for name in unreadable.keys() {
        requests.remove(name);
        limits.remove(name);
        unlimited.insert(name.clone());
    }
    Effective {
        requests,
        limits,
        unlimited,
        unreadable,
    }
}
