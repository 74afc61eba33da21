//! `edgemeter map --input` with a recorded Run:ai round: the answers of a real HTTP server
//! (runai-sim on 127.0.0.1, read with plain HTTP requests as an operator would with curl) saved
//! in the recording format, mapped offline by `builtin:runai` to the values computed by hand.

use std::process::Command;
use std::time::Duration;

use runai_sim::{Cluster, RunaiSim, Series, SimConfig, WorkloadTemplate};
use serde_json::{Value, json};

async fn get(http: &reqwest::Client, url: &str, token: &str, query: &[(&str, String)]) -> Value {
    http.get(url)
        .bearer_auth(token)
        .query(query)
        .send()
        .await
        .expect("GET")
        .error_for_status()
        .expect("2xx")
        .json()
        .await
        .expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_round_maps_to_the_hand_computed_events() {
    let cluster = Cluster::new();
    cluster.create_department("research").expect("department");
    cluster
        .create_project("vision", "research")
        .expect("project");
    let t = cluster.now().as_second();
    let train = cluster
        .submit(&WorkloadTemplate::new("train", "vision").gpus(2))
        .expect("train");
    let half = cluster
        .submit(&WorkloadTemplate::new("half", "vision").gpu_fraction(0.5, 1))
        .expect("half");
    cluster
        .set_series(&train, "GPU_UTILIZATION", Series::constant(75.0))
        .expect("series");
    cluster.advance(5).expect("clock");
    cluster.run(&train).expect("run"); // t+5
    cluster.run(&half).expect("run"); // t+5
    cluster.advance(40).expect("clock"); // t+45
    let sim = RunaiSim::start(cluster.clone(), SimConfig::default())
        .await
        .expect("sim");

    // Record as with curl: a token, the listing, one metrics answer per workload.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let base = sim.url();
    let c = sim.credentials();
    let token: Value = http
        .post(format!("{base}/api/v1/token"))
        .json(&json!({"grantType": "client_credentials", "clientID": c.client_id, "clientSecret": c.client_secret}))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("token JSON");
    let token = token["accessToken"]
        .as_str()
        .expect("accessToken")
        .to_owned();
    let listing = get(&http, &format!("{base}/api/v1/workloads"), &token, &[]).await;
    let ts = |s: i64| jiff::Timestamp::from_second(s).expect("time").to_string();
    let mut metrics = Vec::new();
    for id in [&train, &half] {
        let answer = get(
            &http,
            &format!("{base}/api/v1/workloads/{id}/metrics"),
            &token,
            &[
                ("metricType", "GPU_ALLOCATION,GPU_UTILIZATION".to_owned()),
                ("start", ts(t + 5)),
                ("end", ts(t + 45)),
                ("numberOfSamples", "9".to_owned()),
            ],
        )
        .await;
        metrics.push(json!({"workloadId": id, "answer": answer}));
    }
    let recording = json!({"observedAt": ts(t + 45), "workloads": listing, "metrics": metrics});
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("round.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&recording).expect("json")).expect("write");

    // Window [t+15, t+45): both held 30 s.
    let window = format!("{}/{}", ts(t + 15), ts(t + 45));
    let out = Command::new(env!("CARGO_BIN_EXE_edgemeter"))
        .args(["map", "--input"])
        .arg(&file)
        .args([
            "--window",
            &window,
            "--unit",
            "second",
            "--cache-dir",
            "none",
        ])
        .output()
        .expect("edgemeter map");
    assert!(
        out.status.success(),
        "map failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
        .collect();
    let workload = |name: &str| {
        events
            .iter()
            .find(|e| e["type"] == "workload" && e["data"]["name"] == name)
            .unwrap_or_else(|| panic!("no workload event for {name}: {events:#?}"))
    };
    let tr = workload("train");
    assert_eq!(tr["source"], "run_ai");
    assert_eq!(tr["subject"], "vision");
    assert_eq!(tr["data"]["workload_seconds"], 30.0);
    assert_eq!(tr["data"]["gpu_allocation_seconds"], 60.0);
    // ∫ 75 % × 2 GPUs over 30 s = 45 GPU-seconds.
    assert_eq!(tr["data"]["gpu_usage_seconds"], 45.0);
    let h = workload("half");
    assert_eq!(h["data"]["gpu_allocation_seconds"], 15.0);
    // Re-mapping gives the same ids (deterministic).
    let again = Command::new(env!("CARGO_BIN_EXE_edgemeter"))
        .args(["map", "--input"])
        .arg(&file)
        .args([
            "--window",
            &window,
            "--unit",
            "second",
            "--cache-dir",
            "none",
        ])
        .output()
        .expect("edgemeter map");
    assert_eq!(again.stdout, out.stdout);
}
