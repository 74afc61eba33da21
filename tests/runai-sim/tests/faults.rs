//! Fault switches: 5xx N times and until cleared, delays (timeouts, slow pages), Any-route
//! faults, request counters.

mod common;

use std::time::{Duration, Instant};

use common::{client, get, org, start, token};
use runai_sim::{Fault, Route, Times, WorkloadTemplate};

#[tokio::test]
async fn status_faults_n_times_then_until_cleared() {
    let cluster = org();
    cluster
        .submit(&WorkloadTemplate::new("w", "vision"))
        .expect("submit");
    let sim = start(cluster).await;
    let http = client();
    let t = token(&sim, &http).await;
    sim.inject(Route::Workloads, Fault::Status(503), Times::N(2));
    let (s, body) = get(&sim, &http, &t, "/api/v1/workloads").await;
    assert_eq!((s, body["code"].as_u64()), (503, Some(503)));
    assert!(body["message"].is_string());
    assert_eq!(
        get(&sim, &http, &t, "/api/v1/org-unit/projects").await.0,
        200,
        "other routes unaffected"
    );
    assert_eq!(get(&sim, &http, &t, "/api/v1/workloads").await.0, 503);
    assert_eq!(get(&sim, &http, &t, "/api/v1/workloads").await.0, 200);

    sim.inject(Route::Pods, Fault::Status(500), Times::Always);
    for _ in 0..5 {
        assert_eq!(get(&sim, &http, &t, "/api/v1/workloads/pods").await.0, 500);
    }
    sim.clear_faults(Some(Route::Pods));
    assert_eq!(get(&sim, &http, &t, "/api/v1/workloads/pods").await.0, 200);

    // The token route can fail too (an IdP outage).
    sim.inject(Route::TokenV1, Fault::Status(503), Times::Once);
    let c = sim.credentials().clone();
    let r = http
        .post(format!("{}/api/v1/token", sim.url()))
        .json(&serde_json::json!({"grantType": "client_credentials", "clientID": c.client_id, "clientSecret": c.client_secret}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 503);

    let n = sim.requests();
    assert_eq!(n.get(Route::Workloads), 3);
    assert_eq!(n.with_status(Route::Workloads, 503), 2);
    assert_eq!(n.get(Route::Pods), 6);
    assert_eq!(n.with_status(Route::Pods, 500), 5);
    assert_eq!(n.get(Route::Projects), 1);
    assert_eq!(n.get(Route::TokenV1), 2);
    assert_eq!(n.total(), 12);
    sim.reset_requests();
    assert_eq!(sim.requests().total(), 0);
}

#[tokio::test]
async fn a_delay_longer_than_the_client_deadline_is_a_timeout_then_service_resumes() {
    let sim = start(org()).await;
    let http = client();
    let t = token(&sim, &http).await;
    sim.inject(
        Route::Workloads,
        Fault::Delay(Duration::from_secs(5)),
        Times::Once,
    );
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .no_proxy()
        .build()
        .expect("client");
    let r = impatient
        .get(format!("{}/api/v1/workloads", sim.url()))
        .bearer_auth(&t)
        .send()
        .await;
    assert!(r.is_err_and(|e| e.is_timeout()));
    assert_eq!(get(&sim, &http, &t, "/api/v1/workloads").await.0, 200);
    assert_eq!(sim.requests().get(Route::Workloads), 2);
}

#[tokio::test]
async fn slow_pages_answer_late_but_correctly() {
    let cluster = org();
    for i in 0..4 {
        cluster
            .submit(&WorkloadTemplate::new(&format!("w{i}"), "vision"))
            .expect("submit");
    }
    let sim = start(cluster).await;
    let http = client();
    let t = token(&sim, &http).await;
    sim.inject(
        Route::Workloads,
        Fault::Delay(Duration::from_millis(150)),
        Times::Always,
    );
    let began = Instant::now();
    let (s, p1) = get(&sim, &http, &t, "/api/v1/workloads?limit=2").await;
    let (_, p2) = get(&sim, &http, &t, "/api/v1/workloads?limit=2&offset=2").await;
    assert!(began.elapsed() >= Duration::from_millis(300));
    assert_eq!(s, 200);
    assert_eq!(p1["next"], 2);
    assert!(p2.get("next").is_none());
    sim.clear_faults(None);
    assert_eq!(sim.pending_faults(), 0);
}

#[tokio::test]
async fn any_route_faults_and_unknown_paths() {
    let sim = start(org()).await;
    let http = client();
    let t = token(&sim, &http).await;
    sim.inject(Route::Any, Fault::Status(502), Times::N(2));
    assert_eq!(
        get(&sim, &http, &t, "/api/v1/org-unit/departments").await.0,
        502
    );
    assert_eq!(get(&sim, &http, &t, "/api/v1/workloads").await.0, 502);
    assert_eq!(get(&sim, &http, &t, "/api/v1/workloads").await.0, 200);
    let (s, body) = get(&sim, &http, &t, "/api/v1/nodes").await;
    assert_eq!((s, body["code"].as_u64()), (404, Some(404)));
    let r = http
        .delete(format!("{}/api/v1/workloads", sim.url()))
        .bearer_auth(&t)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 405);
    assert_eq!(sim.requests().get(Route::Other), 2);
}

#[tokio::test]
async fn stop_is_an_outage_and_restart_serves_the_same_state_on_the_same_port() {
    let cluster = org();
    cluster
        .submit(&WorkloadTemplate::new("w", "vision"))
        .expect("submit");
    let sim = start(cluster).await;
    let http = client();
    let t = token(&sim, &http).await;
    assert_eq!(get(&sim, &http, &t, "/api/v1/workloads").await.0, 200);
    sim.stop().await;
    assert!(!sim.is_running());
    let fresh = client();
    let r = fresh
        .get(format!("{}/api/v1/workloads", sim.url()))
        .bearer_auth(&t)
        .send()
        .await;
    assert!(r.is_err_and(|e| e.is_connect()), "refused while stopped");
    sim.restart().await.expect("restart");
    assert!(sim.is_running());
    let (s, body) = get(&sim, &fresh, &t, "/api/v1/workloads").await;
    assert_eq!(s, 200, "same token, same state");
    assert_eq!(body["workloads"][0]["name"], "w");
    assert_eq!(sim.requests().get(Route::Workloads), 2);
}
