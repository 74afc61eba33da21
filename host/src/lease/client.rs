//! The election loop: reads and writes the Lease through the Kubernetes API every retry
//! period and publishes the [`LeaseStatus`] the daemon bills by.

use std::collections::BTreeMap;
use std::time::Instant;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::elector::{Action, Elector, Record};
use super::{LeaseConfig, LeaseStatus};

/// What one round did, for logging.
#[derive(Debug)]
enum Round {
    Wrote,
    Waited,
    Conflict,
    Failed(String),
}

fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(r) if r.code == 409)
}

async fn with_deadline<T>(
    config: &LeaseConfig,
    call: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(config.renew_deadline, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no answer within the renew deadline ({:?})",
            config.renew_deadline
        )),
    }
}

/// One `tryAcquireOrRenew`.
async fn round(
    api: &Api<Lease>,
    config: &LeaseConfig,
    elector: &mut Elector,
    watermarks: &BTreeMap<String, i64>,
) -> Round {
    let started = Instant::now();
    let current = match with_deadline(config, api.get_opt(&config.name)).await {
        Ok(lease) => lease,
        Err(e) => return Round::Failed(format!("failed to read the lease: {e}")),
    };
    let read = current.as_ref().map(|lease| {
        (
            Record::from_lease(lease),
            lease.metadata.resource_version.clone().unwrap_or_default(),
        )
    });
    match elector.decide(read, started, Timestamp::now(), watermarks) {
        Action::Wait => Round::Waited,
        Action::Create(record) => {
            let mut lease = Lease {
                metadata: ObjectMeta {
                    name: Some(config.name.clone()),
                    namespace: Some(config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: None,
            };
            record.apply(&mut lease);
            let answer = tokio::time::timeout(
                config.renew_deadline,
                api.create(&PostParams::default(), &lease),
            )
            .await;
            written(answer, "create", elector, record, started)
        }
        Action::Update {
            record,
            resource_version,
        } => {
            let mut lease = current.unwrap_or_default();
            record.apply(&mut lease);
            lease.metadata.resource_version = Some(resource_version);
            write(api, config, elector, record, lease, started).await
        }
    }
}

async fn write(
    api: &Api<Lease>,
    config: &LeaseConfig,
    elector: &mut Elector,
    record: Record,
    lease: Lease,
    started: Instant,
) -> Round {
    let answer = tokio::time::timeout(
        config.renew_deadline,
        api.replace(&config.name, &PostParams::default(), &lease),
    )
    .await;
    written(answer, "update", elector, record, started)
}

/// What a create or update of the lease (`verb`) answered, within the renew deadline: on
/// success the elector notes the record written; a 409 is a lost race (another replica wrote
/// first), anything else a failure.
fn written(
    answer: Result<Result<Lease, kube::Error>, tokio::time::error::Elapsed>,
    verb: &str,
    elector: &mut Elector,
    record: Record,
    started: Instant,
) -> Round {
    match answer {
        Ok(Ok(_)) => {
            elector.written(record, started);
            Round::Wrote
        }
        Ok(Err(e)) if conflict(&e) => Round::Conflict,
        Ok(Err(e)) => Round::Failed(format!("failed to {verb} the lease: {e}")),
        Err(_) => Round::Failed(format!("failed to {verb} the lease: no answer")),
    }
}

/// Runs the election until `stop` is cancelled, then releases the lease if held (call it
/// after the last window is committed, so the released watermark is final). `watermarks`
/// carries this replica's billed-up-to per source; `status` gets every change.
pub async fn run(
    api: Api<Lease>,
    config: LeaseConfig,
    watermarks: watch::Receiver<BTreeMap<String, i64>>,
    status: watch::Sender<LeaseStatus>,
    stop: CancellationToken,
) {
    let mut elector = Elector::new(&config);
    let mut ticker = tokio::time::interval(config.retry_period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_leader = false;
    let mut failing = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let marks = watermarks.borrow().clone();
        let outcome = round(&api, &config, &mut elector, &marks).await;
        match &outcome {
            Round::Failed(e) if !failing => {
                tracing::warn!(lease = %config.name, error = %e, "leader election: the lease could not be read or written; retrying");
                failing = true;
            }
            Round::Failed(_) => {}
            Round::Wrote | Round::Waited | Round::Conflict => failing = false,
        }
        let now_status = elector.status();
        let leader = now_status.may_bill(Instant::now());
        if leader != was_leader {
            if leader {
                tracing::info!(lease = %config.name, identity = %config.identity, watermarks = ?now_status.watermarks, "leader election: acquired the lease; billing");
            } else {
                tracing::warn!(lease = %config.name, identity = %config.identity, holder = ?now_status.holder, "leader election: not the holder any more; billing stopped (still trying to acquire)");
            }
            was_leader = leader;
        }
        tracing::trace!(?outcome, leader, "leader election round");
        status.send_replace(now_status);
    }
    if elector.is_leader(Instant::now()) {
        let marks = watermarks.borrow().clone();
        release(&api, &config, &elector, &marks).await;
    }
    status.send_replace(LeaseStatus::default());
}

/// Gives the lease up with this replica's final watermarks (best effort: if it fails, the
/// lease simply expires after its duration).
async fn release(
    api: &Api<Lease>,
    config: &LeaseConfig,
    elector: &Elector,
    watermarks: &BTreeMap<String, i64>,
) {
    let Some(record) = elector.release(Timestamp::now(), watermarks) else {
        return;
    };
    let current = match with_deadline(config, api.get_opt(&config.name)).await {
        Ok(Some(lease)) => lease,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "leader election: failed to read the lease to release it; it expires by itself");
            return;
        }
    };
    if Record::from_lease(&current).holder.as_deref() != Some(config.identity.as_str()) {
        return;
    }
    let mut lease = current;
    record.apply(&mut lease);
    match with_deadline(
        config,
        api.replace(&config.name, &PostParams::default(), &lease),
    )
    .await
    {
        Ok(_) => {
            tracing::info!(lease = %config.name, watermarks = ?record.watermarks, "leader election: lease released")
        }
        Err(e) => {
            tracing::warn!(error = %e, "leader election: failed to release the lease; it expires by itself")
        }
    }
}
