//! Listing: paging and `next`, `limit` bounds, `filterBy`, deleted workloads, a page a
//! collector would drop entirely, pods, projects and departments, shapes against the spec
//! examples in `tests/fixtures/runai/`.

mod common;

use common::{client, get, org, start, token, ts};
use runai_sim::{Phase, Route, WorkloadTemplate, WorkloadType};
use serde_json::Value;

fn names(body: &Value, key: &str) -> Vec<String> {
    body[key]
        .as_array()
        .expect("array")
        .iter()
        .map(|w| w["name"].as_str().expect("name").to_owned())
        .collect()
}

#[tokio::test]
async fn pages_follow_next_until_it_is_absent_and_limit_is_bounded() {
    let cluster = org();
    for i in 0..7 {
        cluster
            .submit(&WorkloadTemplate::new(&format!("w{i}"), "vision"))
            .expect("submit");
    }
    let sim = start(cluster).await;
    let http = client();
    let t = token(&sim, &http).await;

    let (s, p1) = get(&sim, &http, &t, "/api/v1/workloads?limit=3").await;
    assert_eq!(s, 200);
    assert_eq!(names(&p1, "workloads"), ["w0", "w1", "w2"]);
    assert_eq!(p1["next"], 3);
    let (_, p3) = get(&sim, &http, &t, "/api/v1/workloads?offset=6&limit=3").await;
    assert_eq!(names(&p3, "workloads"), ["w6"]);
    assert!(p3.get("next").is_none(), "last page has no next: {p3}");
    let (_, past) = get(&sim, &http, &t, "/api/v1/workloads?offset=50&limit=3").await;
    assert!(names(&past, "workloads").is_empty());
    assert!(past.get("next").is_none());
    let (_, all) = get(&sim, &http, &t, "/api/v1/workloads").await;
    assert_eq!(names(&all, "workloads").len(), 7, "default limit 50");

    for bad in ["limit=501", "limit=0", "limit=-1", "offset=-3", "limit=ten"] {
        let (s, body) = get(&sim, &http, &t, &format!("/api/v1/workloads?{bad}")).await;
        assert_eq!(s, 400, "{bad}");
        assert_eq!(body["code"], 400);
    }
    assert_eq!(
        get(&sim, &http, &t, "/api/v1/workloads?limit=500").await.0,
        200
    );
    assert_eq!(sim.requests().get(Route::Workloads), 10);
    assert_eq!(sim.requests().with_status(Route::Workloads, 400), 5);
}

#[tokio::test]
async fn a_fully_filtered_page_does_not_stall_a_client_that_follows_next() {
    let cluster = org();
    let running = WorkloadTemplate::new("x", "vision").gpus(1);
    let first = cluster
        .fill(&running, "run-a", 3, Phase::Running)
        .expect("fill");
    cluster
        .fill(&running, "pending", 5, Phase::Pending)
        .expect("fill"); // a whole page
    cluster
        .fill(&running, "done", 2, Phase::Completed)
        .expect("fill");
    let last = cluster
        .fill(&running, "run-b", 2, Phase::Running)
        .expect("fill");
    assert_eq!(first.len() + last.len(), 5);
    let sim = start(cluster).await;
    let http = client();
    let t = token(&sim, &http).await;

    // The client keeps only Running workloads and pages by the server's `next`.
    let mut kept = Vec::new();
    let mut offset = 0;
    let mut pages = 0;
    for _ in 0..20 {
        let (s, body) = get(
            &sim,
            &http,
            &t,
            &format!("/api/v1/workloads?limit=3&offset={offset}"),
        )
        .await;
        assert_eq!(s, 200);
        pages += 1;
        for w in body["workloads"].as_array().expect("workloads") {
            if w["phase"] == "Running" {
                kept.push(w["name"].as_str().expect("name").to_owned());
            }
        }
        match body["next"].as_u64() {
            Some(n) => {
                assert!(n > offset, "next must advance");
                offset = n;
            }
            None => break,
        }
    }
    assert_eq!(
        kept,
        ["run-a-0", "run-a-1", "run-a-2", "run-b-0", "run-b-1"]
    );
    assert_eq!(pages, 4, "12 workloads, 3 per page");
    assert_eq!(sim.requests().get(Route::Workloads), 4);
    // The second page (offsets 3..6) holds only pending workloads.
    let (_, p2) = get(&sim, &http, &t, "/api/v1/workloads?limit=3&offset=3").await;
    assert!(
        p2["workloads"]
            .as_array()
            .expect("page")
            .iter()
            .all(|w| w["phase"] == "Pending")
    );
}

#[tokio::test]
async fn filter_by_and_deleted() {
    let cluster = org();
    let a = cluster
        .submit(&WorkloadTemplate::new("train-a", "vision").gpus(2))
        .expect("a");
    let b = cluster
        .submit(
            &WorkloadTemplate::new("serve-b", "serving")
                .kind(WorkloadType::Inference)
                .gpu_fraction(0.5, 1),
        )
        .expect("b");
    let c = cluster
        .submit(&WorkloadTemplate::new("train-c", "nlp").node_pool("a100"))
        .expect("c");
    cluster.advance(30).expect("clock");
    cluster.run(&a).expect("run");
    cluster.run(&b).expect("run");
    cluster.delete(&c).expect("delete");
    let sim = start(cluster).await;
    let http = client();
    let t = token(&sim, &http).await;
    let list = |q: &'static str| {
        let (sim, http, t) = (&sim, &http, &t);
        async move {
            let (s, body) = get(sim, http, t, &format!("/api/v1/workloads?{q}")).await;
            assert_eq!(s, 200, "{q}: {body}");
            names(&body, "workloads")
        }
    };
    assert_eq!(
        list("filterBy=phase==Running").await,
        ["train-a", "serve-b"]
    );
    assert_eq!(list("filterBy=type==Inference").await, ["serve-b"]);
    assert_eq!(list("filterBy=allocatedGPU>=1").await, ["train-a"]);
    assert_eq!(list("filterBy=departmentName==research").await, ["train-a"]);
    assert_eq!(
        list("filterBy=projectName==serving,phase==Running").await,
        ["serve-b"]
    );
    assert_eq!(
        list("filterBy=name=^train&filterBy=phase!=Pending").await,
        ["train-a"]
    );
    assert_eq!(
        list("filterBy=phaseUpdatedAt>=2026-01-01T00:00:30Z").await,
        ["train-a", "serve-b"]
    );
    assert_eq!(list("deleted=true").await, ["train-c"]);
    assert_eq!(
        list("deleted=true&filterBy=nodepool==a100").await,
        ["train-c"]
    );
    let (s, _) = get(&sim, &http, &t, "/api/v1/workloads?filterBy=colour==red").await;
    assert_eq!(s, 400);

    let (_, one) = get(&sim, &http, &t, &format!("/api/v1/workloads/{c}")).await;
    assert_eq!(one["deletedAt"], "2026-01-01T00:00:30Z");
    assert_eq!(one["phase"], "Deleting");
    let (_, frac) = get(&sim, &http, &t, &format!("/api/v1/workloads/{b}")).await;
    assert_eq!(frac["allocatedResources"]["gpu"], 0.5);
    assert_eq!(
        frac["workloadRequestedResources"]["gpuRequestType"],
        "portion"
    );
    assert_eq!(frac["category"], "Deploy");
    assert_eq!(get(&sim, &http, &t, "/api/v1/workloads/nope").await.0, 404);
}

#[tokio::test]
async fn phase_timestamps_and_allocation_follow_the_scenario() {
    let cluster = org();
    let id = cluster
        .submit(
            &WorkloadTemplate::new("ddp", "nlp")
                .distributed(2, 4)
                .cpu(16.0)
                .memory(64 << 30)
                .gpu_memory(320 << 30),
        )
        .expect("submit");
    cluster.advance(5).expect("clock");
    cluster.run(&id).expect("run");
    let running = cluster.workload(&id).expect("workload");
    assert_eq!(running["phase"], "Running");
    assert_eq!(running["phaseUpdatedAt"], "2026-01-01T00:00:05Z");
    assert_eq!(running["createdAt"], "2026-01-01T00:00:00Z");
    assert_eq!(running["allocatedResources"]["gpu"], 8.0);
    assert_eq!(running["allocatedResources"]["cpuMemory"], "64Gi");
    assert_eq!(running["allocatedResources"]["gpuMemory"], "320Gi");
    assert_eq!(running["runningPods"], 2);
    assert_eq!(running["type"], "Distributed");
    cluster.advance(100).expect("clock");
    cluster.complete(&id).expect("complete");
    let done = cluster.workload(&id).expect("workload");
    assert_eq!(done["completedAt"], "2026-01-01T00:01:45Z");
    assert_eq!(done["allocatedResources"]["gpu"], 0.0);
    assert_eq!(done["totalRunningTimeSeconds"], 100);
    assert_eq!(done["totalPendingTimeSeconds"], 5);
    assert_eq!(
        cluster.held_intervals(&id).expect("truth"),
        [(ts("2026-01-01T00:00:05Z"), ts("2026-01-01T00:01:45Z"))]
    );
    assert_eq!(
        cluster
            .held_seconds(&id, ts("2026-01-01T00:01:00Z"), ts("2026-01-01T00:02:00Z"))
            .expect("truth"),
        45.0
    );
    let stopped = cluster
        .submit(&WorkloadTemplate::new("nb", "nlp").kind(WorkloadType::Workspace))
        .expect("nb");
    cluster.run(&stopped).expect("run");
    cluster.advance(10).expect("clock");
    cluster.stop(&stopped).expect("stop");
    let nb = cluster.workload(&stopped).expect("workload");
    assert_eq!(
        (nb["phase"].as_str(), nb["completedAt"].is_null()),
        (Some("Stopped"), true)
    );
    assert_eq!(
        cluster
            .held_seconds(
                &stopped,
                ts("2026-01-01T00:00:00Z"),
                ts("2026-01-02T00:00:00Z")
            )
            .expect("truth"),
        10.0
    );
}

#[tokio::test]
async fn pods_projects_and_departments() {
    let cluster = org();
    let id = cluster
        .submit(&WorkloadTemplate::new("ddp", "nlp").distributed(2, 2))
        .expect("submit");
    cluster
        .submit(&WorkloadTemplate::new("single", "vision").gpus(1))
        .expect("submit");
    cluster.run(&id).expect("run");
    let sim = start(cluster).await;
    let http = client();
    let t = token(&sim, &http).await;
    let (s, pods) = get(&sim, &http, &t, "/api/v1/workloads/pods?verbosity=full").await;
    assert_eq!(s, 200);
    let pods = pods["pods"].as_array().expect("pods").clone();
    assert_eq!(pods.len(), 3);
    assert_eq!(pods[0]["workloadName"], "ddp");
    assert_eq!(pods[1]["nodeName"], "node-2");
    assert_eq!(pods[1]["allocatedResources"]["gpu"], 2.0);
    let (_, filtered) = get(
        &sim,
        &http,
        &t,
        &format!("/api/v1/workloads/pods?filterBy=workloadId=={id}&limit=1"),
    )
    .await;
    assert_eq!(filtered["pods"].as_array().expect("pods").len(), 1);
    assert_eq!(filtered["next"], 1);

    let (_, projects) = get(&sim, &http, &t, "/api/v1/org-unit/projects").await;
    let p = &projects["projects"];
    assert_eq!(p.as_array().expect("projects").len(), 3);
    assert_eq!(p[1]["name"], "nlp");
    assert_eq!(p[1]["parent"]["name"], "research");
    assert_eq!(p[2]["parentId"], "2");
    let (_, depts) = get(
        &sim,
        &http,
        &t,
        "/api/v1/org-unit/departments?filterBy=name==research",
    )
    .await;
    let d = &depts["departments"];
    assert_eq!(d.as_array().expect("departments").len(), 1);
    assert_eq!(d[0]["children"].as_array().expect("children").len(), 2);
    assert_eq!(
        get(&sim, &http, &t, "/api/v1/org-unit/projects?limit=501")
            .await
            .0,
        400
    );
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/../fixtures/runai/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("fixture");
    serde_json::from_str(&text).expect("fixture JSON")
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every key of the spec example that we also serve has the example's JSON type (or null),
/// recursively; `required` keys must be served.
fn same_shape(example: &Value, ours: &Value, path: &str, required: &[&str]) {
    let (Value::Object(e), Value::Object(o)) = (example, ours) else {
        return;
    };
    for key in required {
        assert!(o.contains_key(*key), "{path}: missing required {key}");
    }
    for (k, ev) in e {
        let Some(ov) = o.get(k) else { continue };
        if ov.is_null() || ev.is_null() {
            continue;
        }
        assert_eq!(kind(ev), kind(ov), "{path}.{k}: example {ev} vs ours {ov}");
        if let (Value::Object(_), Value::Object(_)) = (ev, ov) {
            same_shape(ev, ov, &format!("{path}.{k}"), &[]);
        }
    }
}

#[tokio::test]
async fn served_objects_have_the_spec_examples_shapes() {
    let cluster = org();
    let id = cluster
        .submit(&WorkloadTemplate::new("w", "vision").gpu_fraction(0.5, 2))
        .expect("submit");
    cluster.run(&id).expect("run");
    let sim = start(cluster).await;
    let http = client();
    let t = token(&sim, &http).await;
    // The spec's `Workload.required`.
    let required = [
        "type",
        "name",
        "id",
        "source",
        "priority",
        "priorityClassName",
        "clusterId",
        "projectName",
        "projectId",
        "departmentName",
        "departmentId",
        "namespace",
        "createdAt",
        "phase",
        "conditions",
        "k8sPhase",
        "tenantId",
        "runningPods",
        "phaseUpdatedAt",
        "k8sPhaseUpdatedAt",
        "updatedAt",
        "deletedAt",
        "category",
    ];
    let (_, list) = get(&sim, &http, &t, "/api/v1/workloads").await;
    let example = fixture("workloads-list.spec-example.json");
    same_shape(
        &example["workloads"][0],
        &list["workloads"][0],
        "workload",
        &required,
    );
    assert!(example.get("next").is_some() && example.get("workloads").is_some());

    let (_, pods) = get(&sim, &http, &t, "/api/v1/workloads/pods").await;
    let example = fixture("workloads-pods-list.spec-example.json");
    same_shape(
        &example["pods"][0],
        &pods["pods"][0],
        "pod",
        &["name", "id", "workloadId", "nodeName", "createdAt"],
    );

    let (_, projects) = get(&sim, &http, &t, "/api/v1/org-unit/projects").await;
    let example = fixture("projects-list.spec-example.json");
    same_shape(
        &example["projects"][0],
        &projects["projects"][0],
        "project",
        &["id", "name", "clusterId", "parentId"],
    );
    let (_, depts) = get(&sim, &http, &t, "/api/v1/org-unit/departments").await;
    let example = fixture("departments-list.spec-example.json");
    same_shape(
        &example["departments"][0],
        &depts["departments"][0],
        "department",
        &["id", "name", "clusterId"],
    );

    let pod_id = pods["pods"][0]["id"].as_str().expect("pod id").to_owned();
    let (_, m) = get(
        &sim,
        &http,
        &t,
        &format!("/api/v1/workloads/{id}/pods/{pod_id}/metrics?metricType=GPU_UTILIZATION_PER_GPU&start=2026-01-01T00:00:00Z&end=2026-01-01T00:00:00Z&numberOfSamples=1"),
    )
    .await;
    let example = fixture("pod-metrics.spec-example.json");
    same_shape(
        &example["measurements"][0],
        &m["measurements"][0],
        "measurement",
        &["type", "labels", "values"],
    );
    let example = fixture("workload-metrics.spec-example.json");
    same_shape(
        &example["measurements"][0],
        &m["measurements"][0],
        "measurement",
        &["type", "values"],
    );

    let tok = fixture("token-response.spec-example.json");
    let v2 = fixture("v2-token-response.spec-example.json");
    assert!(tok.get("accessToken").is_some() && tok.get("expiresIn").is_some());
    assert!(
        v2.get("access_token").is_some()
            && v2.get("expires_in").is_some()
            && v2.get("token_type").is_some()
    );
}

#[test]
fn holding_phases_match_the_collectors_table_and_end_at_deleted_at() {
    let cluster = org();
    let id = cluster
        .submit(&WorkloadTemplate::new("w", "vision").gpus(1))
        .expect("submit");
    cluster.advance(10).expect("clock");
    cluster.set_phase(&id, Phase::Initializing).expect("init"); // holds from 10
    cluster.advance(5).expect("clock");
    cluster.run(&id).expect("run");
    cluster.advance(20).expect("clock");
    cluster.set_phase(&id, Phase::Stopping).expect("stopping");
    cluster.advance(5).expect("clock");
    cluster.stop(&id).expect("stopped"); // ends at 40
    assert_eq!(
        cluster.held_intervals(&id).expect("truth"),
        [(ts("2026-01-01T00:00:10Z"), ts("2026-01-01T00:00:40Z"))]
    );

    let d = cluster
        .submit(&WorkloadTemplate::new("d", "vision").gpus(1))
        .expect("submit");
    cluster.run(&d).expect("run"); // 40
    cluster.advance(7).expect("clock");
    cluster.delete(&d).expect("delete"); // 47: phase Deleting (a holding phase), cut by deletedAt
    cluster.advance(100).expect("clock");
    assert_eq!(cluster.workload(&d).expect("json")["phase"], "Deleting");
    assert_eq!(
        cluster.workload(&d).expect("json")["allocatedResources"]["gpu"],
        0.0
    );
    assert_eq!(
        cluster.held_intervals(&d).expect("truth"),
        [(ts("2026-01-01T00:00:40Z"), ts("2026-01-01T00:00:47Z"))]
    );
}
