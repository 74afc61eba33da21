//! Resident memory of the ledger at 10k pods (the daemon's target is ≤ 64 MiB RSS in total),
//! in its own test binary so no other test shares the process.

mod common;

use common::{recorded_pods, rss_kib};
use edgemeter::sources::kubernetes::{Change, Ledger, LedgerInput, Object, StreamId, WatchKind};

#[test]
fn ten_thousand_recorded_pods_fit_in_the_memory_budget() {
    // Real pods from a kind cluster (with managedFields, stripped by the ledger), given fresh
    // uids and names: 10k distinct entries.
    let templates = recorded_pods();
    assert_eq!(templates.len(), 8);
    let stream = StreamId {
        kind: WatchKind::Pods,
        scope: 0,
    };
    let before = rss_kib();
    let mut ledger = Ledger::new();
    for i in 0..10_000 {
        let mut pod = templates[i % templates.len()].clone();
        pod["metadata"]["uid"] = format!("00000000-0000-0000-0000-{i:012}").into();
        pod["metadata"]["name"] = format!("pod-{i}").into();
        let object = Object::from_value(pod).expect("a pod").expect("parses");
        ledger.apply(LedgerInput {
            stream,
            observed_at: 1,
            change: Change::Apply(object),
        });
    }
    let after = rss_kib();
    assert_eq!(ledger.counts().0, 10_000);
    let grown_mib = after.saturating_sub(before) / 1024;
    println!(
        "ledger with 10k pods: +{grown_mib} MiB RSS ({before} KiB → {after} KiB), {} KiB deflated JSON",
        ledger.packed_pod_bytes() / 1024
    );
    assert!(before > 0, "VmRSS readable");
    // Half the daemon's budget for the ledger; the rest is runtime, client and mapper.
    assert!(
        grown_mib <= 32,
        "ledger at 10k pods grew RSS by {grown_mib} MiB"
    );
}
