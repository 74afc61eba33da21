//! Fault switches and request counters. Pure data; the server consults them per request.

use std::collections::BTreeMap;
use std::time::Duration;

/// A served route (what [`RequestCounts`] counts and faults target).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Route {
    /// `POST /api/v1/token`.
    TokenV1,
    /// `POST /api/v2/token`.
    TokenV2,
    /// `GET /api/v1/workloads`.
    Workloads,
    /// `GET /api/v1/workloads/{id}`.
    Workload,
    /// `GET /api/v1/workloads/pods`.
    Pods,
    /// `GET /api/v1/workloads/{id}/metrics`.
    WorkloadMetrics,
    /// `GET /api/v1/workloads/{id}/pods/{podId}/metrics`.
    PodMetrics,
    /// `GET /api/v1/org-unit/projects`.
    Projects,
    /// `GET /api/v1/org-unit/departments`.
    Departments,
    /// Anything else (404, or 405 for a known path with another method).
    Other,
    /// Fault target only: every route (never counted under this name).
    Any,
}

impl Route {
    /// Whether this route needs a bearer token.
    pub fn needs_auth(self) -> bool {
        !matches!(self, Route::TokenV1 | Route::TokenV2 | Route::Other)
    }

    /// Whether a metrics route (where [`Fault::Partial`] applies).
    pub fn is_metrics(self) -> bool {
        matches!(self, Route::WorkloadMetrics | Route::PodMetrics)
    }
}

/// What an injected fault does to a request it matches.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Answer with this status and the spec's `Error` body (`{code, message}`), e.g. 500, 503.
    Status(u16),
    /// Answer 401 even to a valid token (on the token routes too: wrong-credentials path).
    Unauthorized,
    /// Wait this long, then answer normally: a slow page, or a timeout for a client whose
    /// deadline is shorter (it gives up; the server's answer goes nowhere).
    Delay(Duration),
    /// Metrics routes only: HTTP 207 with these metric types left out of `measurements`.
    Partial(Vec<String>),
}

/// How many matching requests a fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Times {
    /// The next matching request only.
    Once,
    /// The next N matching requests.
    N(u32),
    /// Until cleared.
    Always,
}

#[derive(Clone, Debug)]
pub(crate) struct Rule {
    pub(crate) route: Route,
    pub(crate) fault: Fault,
    pub(crate) remaining: Option<u32>,
}

/// The injected faults, consulted in injection order; the first rule that applies to a
/// request is used (and one of its uses consumed).
#[derive(Debug, Default)]
pub(crate) struct Faults {
    rules: Vec<Rule>,
}

impl Faults {
    pub(crate) fn inject(&mut self, route: Route, fault: Fault, times: Times) {
        let remaining = match times {
            Times::Once => Some(1),
            Times::N(n) => Some(n),
            Times::Always => None,
        };
        self.rules.push(Rule {
            route,
            fault,
            remaining,
        });
    }

    pub(crate) fn clear(&mut self, route: Option<Route>) {
        self.rules
            .retain(|r| route.is_some_and(|want| r.route != want));
    }

    /// The fault for a request on `route`, consuming one use.
    pub(crate) fn take(&mut self, route: Route) -> Option<Fault> {
        let index = self.rules.iter().position(|r| {
            (r.route == route || r.route == Route::Any)
                && r.remaining != Some(0)
                && (!matches!(r.fault, Fault::Partial(_)) || route.is_metrics())
                && (r.fault != Fault::Unauthorized || route != Route::Other)
        })?;
        let rule = &mut self.rules[index];
        let fault = rule.fault.clone();
        if let Some(n) = rule.remaining.as_mut() {
            *n -= 1;
            if *n == 0 {
                self.rules.remove(index);
            }
        }
        Some(fault)
    }

    pub(crate) fn pending(&self) -> usize {
        self.rules.len()
    }
}

/// Requests served, by route and by status, faulted ones included.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestCounts {
    pub(crate) by_route: BTreeMap<Route, u64>,
    pub(crate) by_status: BTreeMap<(Route, u16), u64>,
}

impl RequestCounts {
    /// Requests on `route`.
    pub fn get(&self, route: Route) -> u64 {
        self.by_route.get(&route).copied().unwrap_or(0)
    }

    /// Requests on `route` answered with `status`.
    pub fn with_status(&self, route: Route, status: u16) -> u64 {
        self.by_status.get(&(route, status)).copied().unwrap_or(0)
    }

    /// All requests.
    pub fn total(&self) -> u64 {
        self.by_route.values().sum()
    }

    /// `(route, count)` for every route with at least one request.
    pub fn iter(&self) -> impl Iterator<Item = (Route, u64)> + '_ {
        self.by_route.iter().map(|(r, n)| (*r, *n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_applicable_rule_is_consumed() {
        let mut f = Faults::default();
        f.inject(Route::Workloads, Fault::Status(503), Times::N(2));
        f.inject(Route::Any, Fault::Partial(vec!["X".into()]), Times::Once);
        assert_eq!(f.take(Route::Workloads), Some(Fault::Status(503)));
        assert_eq!(f.take(Route::Projects), None);
        assert_eq!(
            f.take(Route::WorkloadMetrics),
            Some(Fault::Partial(vec!["X".into()]))
        );
        assert_eq!(f.take(Route::Workloads), Some(Fault::Status(503)));
        assert_eq!(f.take(Route::Workloads), None);
        assert_eq!(f.pending(), 0);
        f.inject(Route::Pods, Fault::Status(500), Times::Always);
        f.inject(Route::Projects, Fault::Status(500), Times::Always);
        f.clear(Some(Route::Pods));
        assert_eq!(f.take(Route::Pods), None);
        assert_eq!(f.take(Route::Projects), Some(Fault::Status(500)));
        f.clear(None);
        assert_eq!(f.pending(), 0);
    }
}
