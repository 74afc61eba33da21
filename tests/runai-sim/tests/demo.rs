//! The built-in demo scenario's ground truth, its step-by-step playing, and the generator.

mod common;

use common::{client, get, start, token, ts};
use runai_sim::Cluster;
use runai_sim::demo::{create_org, demo_cluster_instant, demo_steps, generate, play_due};

#[test]
fn the_demo_scenario_has_the_documented_truth() {
    let start = ts("2026-06-01T12:00:00Z");
    let c = demo_cluster_instant(start).expect("demo");
    let held = |name: &str| {
        let id = c.id_of(name).expect("workload");
        c.held_seconds(&id, start, ts("2026-06-01T13:00:00Z"))
            .expect("truth")
    };
    assert_eq!(c.now(), ts("2026-06-01T12:01:30Z"));
    assert_eq!(held("resnet-train"), 85.0); // 5 → 90
    assert_eq!(held("short-eval"), 20.0); // 25 → 45
    assert_eq!(held("notebook"), 50.0); // 10 → 60 (stopped)
    assert_eq!(held("bert-ddp"), 60.0); // 15 → 75 (deleted)
    assert_eq!(held("llm-serve"), 85.0); // 5 → still running at 90
    assert_eq!(held("waiting-job"), 0.0);
}

#[test]
fn playing_due_steps_applies_each_once_in_order() {
    let c = Cluster::new();
    create_org(&c).expect("org");
    let steps = demo_steps();
    let mut next = 0;
    play_due(&c, &steps, &mut next, 0).expect("t=0");
    assert_eq!(c.workload_ids().len(), 5);
    play_due(&c, &steps, &mut next, 0).expect("again");
    assert_eq!(c.workload_ids().len(), 5, "nothing applied twice");
    c.advance(30).expect("clock");
    play_due(&c, &steps, &mut next, 30).expect("t=30");
    let eval = c
        .workload(&c.id_of("short-eval").expect("id"))
        .expect("json");
    assert_eq!(eval["phase"], "Running");
    for elapsed in [60, 120, 1000] {
        play_due(&c, &steps, &mut next, elapsed).expect("later");
    }
    assert_eq!(next, steps.len());
}

#[tokio::test]
async fn generated_workloads_page_through_in_the_expected_number_of_requests() {
    let c = Cluster::new();
    create_org(&c).expect("org");
    let ids = generate(&c, 1000, 7).expect("generate");
    assert_eq!(ids.len(), 1000);
    let again = Cluster::new();
    create_org(&again).expect("org");
    generate(&again, 1000, 7).expect("generate");
    assert_eq!(
        c.workload(&ids[500]).expect("w")["allocatedResources"],
        again.workload(&again.workload_ids()[500]).expect("w")["allocatedResources"],
        "same seed, same scenario"
    );
    let sim = start(c).await;
    let http = client();
    let t = token(&sim, &http).await;
    let mut offset = 0;
    let mut seen = 0;
    for _ in 0..10 {
        let (s, body) = get(
            &sim,
            &http,
            &t,
            &format!("/api/v1/workloads?limit=500&offset={offset}"),
        )
        .await;
        assert_eq!(s, 200);
        seen += body["workloads"].as_array().expect("workloads").len();
        match body["next"].as_u64() {
            Some(n) => offset = n,
            None => break,
        }
    }
    assert_eq!(seen, 1000);
    assert_eq!(sim.requests().get(runai_sim::Route::Workloads), 2);
}
