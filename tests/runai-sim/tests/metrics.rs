//! Metrics: sample placement, values from the scenario's series, per-GPU labels, parameter
//! checks, 207 partial answers. Integrals computed by hand.

mod common;

use common::{client, get, org, start, start_with, token, ts};
use runai_sim::{Fault, Route, Series, SimConfig, Times, WorkloadTemplate};
use serde_json::Value;

fn points(m: &Value) -> Vec<(String, f64)> {
    m["values"]
        .as_array()
        .expect("values")
        .iter()
        .map(|v| {
            let value: f64 = v["value"]
                .as_str()
                .expect("string value")
                .parse()
                .expect("number");
            (
                v["timestamp"].as_str().expect("timestamp").to_owned(),
                value,
            )
        })
        .collect()
}

/// Trapezoid integral over `(timestamp, value)` points, in value·seconds.
fn trapezoid(p: &[(String, f64)]) -> f64 {
    p.windows(2)
        .map(|w| {
            let dt = (ts(&w[1].0).as_second() - ts(&w[0].0).as_second()) as f64;
            dt * (w[0].1 + w[1].1) / 2.0
        })
        .sum()
}

const T0: &str = "2026-01-01T00:00:00Z";

#[tokio::test]
async fn samples_are_evenly_spaced_and_only_while_holding() {
    let cluster = org();
    let id = cluster
        .submit(&WorkloadTemplate::new("w", "vision").gpus(2).cpu(4.0))
        .expect("submit");
    cluster.advance(10).expect("clock");
    cluster.run(&id).expect("run"); // holds [10 s, 70 s)
    cluster
        .set_series(&id, "GPU_UTILIZATION", Series::constant(80.0))
        .expect("series");
    cluster
        .set_series(
            &id,
            "CPU_USAGE_CORES",
            Series::Steps(vec![
                (ts("2026-01-01T00:00:00Z"), 1.0),
                (ts("2026-01-01T00:00:40Z"), 3.0),
            ]),
        )
        .expect("series");
    cluster.advance(60).expect("clock");
    cluster.complete(&id).expect("complete");
    cluster.advance(30).expect("clock"); // clock 100 s
    let sim = start(cluster).await;
    let http = client();
    let t = token(&sim, &http).await;
    let q = format!(
        "/api/v1/workloads/{id}/metrics?metricType=GPU_UTILIZATION,CPU_USAGE_CORES&metricType=GPU_ALLOCATION&start={T0}&end=2026-01-01T00:01:30Z&numberOfSamples=10"
    );
    let (s, body) = get(&sim, &http, &t, &q).await;
    assert_eq!(s, 200, "{body}");
    let m = body["measurements"].as_array().expect("measurements");
    assert_eq!(m.len(), 3);
    assert_eq!(m[0]["type"], "GPU_UTILIZATION");
    assert!(m[0]["labels"].is_null());
    // 10 samples over 90 s: every 10 s from 0 to 90; held at 10..=60 (70 is Completed).
    let gpu = points(&m[0]);
    let want: Vec<String> = (1..=6)
        .map(|i| format!("2026-01-01T00:00:{:02}Z", i * 10).replace(":00:60", ":01:00"))
        .collect();
    assert_eq!(gpu.iter().map(|p| p.0.clone()).collect::<Vec<_>>(), want);
    assert!(gpu.iter().all(|p| p.1 == 80.0));
    assert_eq!(m[0]["values"][0]["value"], "80");
    let cpu: Vec<f64> = points(&m[1]).into_iter().map(|p| p.1).collect();
    assert_eq!(cpu, [1.0, 1.0, 1.0, 3.0, 3.0, 3.0]);
    let alloc = points(&m[2]);
    assert!(
        alloc.iter().all(|p| p.1 == 2.0),
        "GPU_ALLOCATION follows the allocation"
    );
    // By hand: 80 % over the 50 s between the first and last sample.
    assert_eq!(trapezoid(&gpu), 80.0 * 50.0);

    // One sample: the end; zero: none; the future is not sampled.
    let one = format!(
        "/api/v1/workloads/{id}/metrics?metricType=GPU_UTILIZATION&start={T0}&end=2026-01-01T00:00:30Z&numberOfSamples=1"
    );
    let (_, b) = get(&sim, &http, &t, &one).await;
    assert_eq!(
        points(&b["measurements"][0]),
        [("2026-01-01T00:00:30Z".to_owned(), 80.0)]
    );
    let zero = one.replace("numberOfSamples=1", "numberOfSamples=0");
    assert!(points(&get(&sim, &http, &t, &zero).await.1["measurements"][0]).is_empty());
    let default = format!(
        "/api/v1/workloads/{id}/metrics?metricType=GPU_ALLOCATION&start=2026-01-01T00:00:10Z&end=2026-01-01T00:00:48Z"
    );
    assert_eq!(
        points(&get(&sim, &http, &t, &default).await.1["measurements"][0]).len(),
        20,
        "default 20 samples every 2 s"
    );
    // A type with no series and no default: the measurement with no values.
    let empty = format!(
        "/api/v1/workloads/{id}/metrics?metricType=NIM_NUM_REQUESTS_RUNNING&start={T0}&end=2026-01-01T00:01:00Z"
    );
    assert!(points(&get(&sim, &http, &t, &empty).await.1["measurements"][0]).is_empty());
}

#[tokio::test]
async fn explicit_points_interpolate_so_a_trapezoid_is_exact() {
    let cluster = org();
    let id = cluster
        .submit(&WorkloadTemplate::new("w", "vision").gpu_fraction(0.5, 1))
        .expect("submit");
    cluster.run(&id).expect("run");
    cluster
        .set_series(
            &id,
            "GPU_MEMORY_USAGE_BYTES",
            Series::Points(vec![(ts(T0), 0.0), (ts("2026-01-01T00:01:00Z"), 600.0)]),
        )
        .expect("series");
    cluster.advance(120).expect("clock");
    let sim = start(cluster).await;
    let http = client();
    let t = token(&sim, &http).await;
    let q = format!(
        "/api/v1/workloads/{id}/metrics?metricType=GPU_MEMORY_USAGE_BYTES,GPU_ALLOCATION&start={T0}&end=2026-01-01T00:02:00Z&numberOfSamples=13"
    );
    let (_, b) = get(&sim, &http, &t, &q).await;
    let mem = points(&b["measurements"][0]);
    assert_eq!(mem.len(), 13);
    assert_eq!(mem[3], ("2026-01-01T00:00:30Z".to_owned(), 300.0));
    // Ramp 0→600 over 60 s (area 18 000) then flat 600 for 60 s (36 000).
    assert_eq!(trapezoid(&mem), 54_000.0);
    let alloc = points(&b["measurements"][1]);
    assert_eq!(trapezoid(&alloc), 0.5 * 120.0, "fractional GPU-seconds");
}

#[tokio::test]
async fn per_gpu_series_on_the_pod_route_and_optionally_the_workload_route() {
    let cluster = org();
    let id = cluster
        .submit(&WorkloadTemplate::new("ddp", "nlp").distributed(2, 2))
        .expect("submit");
    cluster.run(&id).expect("run");
    for (pod, gpu, v) in [
        (0, "0", 10.0),
        (0, "1", 20.0),
        (1, "0", 30.0),
        (1, "1", 40.0),
    ] {
        cluster
            .set_gpu_series(
                &id,
                pod,
                gpu,
                "GPU_UTILIZATION_PER_GPU",
                Series::constant(v),
            )
            .expect("series");
    }
    assert!(
        cluster
            .set_gpu_series(
                &id,
                0,
                "7",
                "GPU_UTILIZATION_PER_GPU",
                Series::constant(1.0)
            )
            .is_err()
    );
    assert!(
        cluster
            .set_series(&id, "GPU_UTILIZATION_PER_GPU", Series::constant(1.0))
            .is_err()
    );
    assert!(
        cluster
            .set_series(&id, "NOT_A_METRIC", Series::constant(1.0))
            .is_err()
    );
    cluster.advance(60).expect("clock");
    let window = format!("start={T0}&end=2026-01-01T00:01:00Z&numberOfSamples=3");

    let sim = start(cluster.clone()).await;
    let http = client();
    let t = token(&sim, &http).await;
    let (_, pods) = get(
        &sim,
        &http,
        &t,
        &format!("/api/v1/workloads/pods?filterBy=workloadId=={id}"),
    )
    .await;
    let pod1 = pods["pods"][1]["id"].as_str().expect("pod id").to_owned();
    let (s, b) = get(
        &sim,
        &http,
        &t,
        &format!(
            "/api/v1/workloads/{id}/pods/{pod1}/metrics?metricType=GPU_UTILIZATION_PER_GPU&{window}"
        ),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let m = b["measurements"].as_array().expect("measurements");
    assert_eq!(m.len(), 2, "one series per GPU of this pod");
    assert_eq!(m[0]["labels"]["gpu"], "0");
    assert_eq!(m[1]["labels"]["gpu"], "1");
    assert_eq!(
        points(&m[0]).iter().map(|p| p.1).collect::<Vec<_>>(),
        [30.0, 30.0, 30.0]
    );
    assert_eq!(points(&m[1])[0].1, 40.0);
    // The spec's WorkloadMetricType has no *_PER_GPU: refused on the workload route by default.
    let wq = format!("/api/v1/workloads/{id}/metrics?metricType=GPU_UTILIZATION_PER_GPU&{window}");
    assert_eq!(get(&sim, &http, &t, &wq).await.0, 400);
    // And a workload type on the pod route is checked against PodMetricType.
    let bad =
        format!("/api/v1/workloads/{id}/pods/{pod1}/metrics?metricType=GPU_ALLOCATION&{window}");
    assert_eq!(get(&sim, &http, &t, &bad).await.0, 400);
    assert_eq!(
        get(
            &sim,
            &http,
            &t,
            &format!(
                "/api/v1/workloads/{id}/pods/nope/metrics?metricType=GPU_UTILIZATION&{window}"
            )
        )
        .await
        .0,
        404
    );
    drop(sim);

    let sim = start_with(
        cluster,
        SimConfig {
            per_gpu_on_workload_metrics: true,
            ..SimConfig::default()
        },
    )
    .await;
    let t = token(&sim, &http).await;
    let (s, b) = get(&sim, &http, &t, &wq).await;
    assert_eq!(s, 200);
    let m = b["measurements"].as_array().expect("measurements");
    assert_eq!(m.len(), 4, "all GPUs of all pods");
    let labels: Vec<(String, String)> = m
        .iter()
        .map(|x| {
            (
                x["labels"]["podId"].as_str().expect("podId").to_owned(),
                x["labels"]["gpu"].as_str().expect("gpu").to_owned(),
            )
        })
        .collect();
    assert_eq!(labels[2], (pod1.clone(), "0".to_owned()));
    let total: f64 = m.iter().map(|x| trapezoid(&points(x))).sum();
    assert_eq!(
        total,
        (10.0 + 20.0 + 30.0 + 40.0) * 60.0,
        "kept per GPU, summed by hand"
    );
}

#[tokio::test]
async fn parameters_are_checked() {
    let cluster = org();
    let id = cluster
        .submit(&WorkloadTemplate::new("w", "vision"))
        .expect("submit");
    let sim = start(cluster).await;
    let http = client();
    let t = token(&sim, &http).await;
    let base = format!("/api/v1/workloads/{id}/metrics");
    for (q, want) in [
        (format!("start={T0}&end={T0}"), 400), // no metricType
        (format!("metricType=GPU_UTILIZATION&end={T0}"), 400), // no start
        (
            format!("metricType=GPU_UTILIZATION&start=yesterday&end={T0}"),
            400,
        ),
        (
            format!("metricType=GPU_UTILIZATION&start=2026-01-02T00:00:00Z&end={T0}"),
            400,
        ), // end < start
        (
            format!("metricType=GPU_UTILIZATION&start={T0}&end={T0}&numberOfSamples=1001"),
            400,
        ),
        (format!("metricType=BOGUS&start={T0}&end={T0}"), 400),
        (
            format!("metricType=GPU_UTILIZATION&start={T0}&end={T0}&numberOfSamples=1000"),
            200,
        ),
    ] {
        let (s, body) = get(&sim, &http, &t, &format!("{base}?{q}")).await;
        assert_eq!(s, want, "{q}: {body}");
        if want == 400 {
            assert_eq!(body["code"], 400);
        }
    }
    assert_eq!(
        get(
            &sim,
            &http,
            &t,
            &format!(
                "/api/v1/workloads/nope/metrics?metricType=GPU_UTILIZATION&start={T0}&end={T0}"
            )
        )
        .await
        .0,
        404
    );
    assert_eq!(sim.requests().get(Route::WorkloadMetrics), 8);
}

#[tokio::test]
async fn partial_answers_are_207_without_the_failed_types() {
    let cluster = org();
    let id = cluster
        .submit(&WorkloadTemplate::new("w", "vision").gpus(1))
        .expect("submit");
    cluster.run(&id).expect("run");
    cluster.advance(10).expect("clock");
    let sim = start(cluster).await;
    let http = client();
    let t = token(&sim, &http).await;
    sim.inject(
        Route::WorkloadMetrics,
        Fault::Partial(vec!["CPU_REQUEST_CORES".to_owned()]),
        Times::Once,
    );
    let q = format!(
        "/api/v1/workloads/{id}/metrics?metricType=GPU_ALLOCATION,CPU_REQUEST_CORES&start={T0}&end=2026-01-01T00:00:10Z&numberOfSamples=2"
    );
    let (s, b) = get(&sim, &http, &t, &q).await;
    assert_eq!(s, 207);
    let types: Vec<&str> = b["measurements"]
        .as_array()
        .expect("m")
        .iter()
        .map(|m| m["type"].as_str().expect("type"))
        .collect();
    assert_eq!(types, ["GPU_ALLOCATION"]);
    let (s, b) = get(&sim, &http, &t, &q).await;
    assert_eq!(s, 200);
    assert_eq!(b["measurements"].as_array().expect("m").len(), 2);
    assert_eq!(sim.requests().with_status(Route::WorkloadMetrics, 207), 1);
}
