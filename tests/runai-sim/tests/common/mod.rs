//! Shared set-up: a simulator on 127.0.0.1 with a small org, a reqwest client, token helpers.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::time::Duration;

use jiff::Timestamp;
use runai_sim::{Cluster, RunaiSim, SimConfig};
use serde_json::{Value, json};

pub fn ts(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

/// A cluster with departments `research`, `platform` and projects `vision`, `nlp` (research),
/// `serving` (platform); clock at 2026-01-01T00:00:00Z.
pub fn org() -> Cluster {
    let c = Cluster::new();
    c.create_department("research").expect("dept");
    c.create_department("platform").expect("dept");
    c.create_project("vision", "research").expect("project");
    c.create_project("nlp", "research").expect("project");
    c.create_project("serving", "platform").expect("project");
    c
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .expect("client")
}

pub async fn start(cluster: Cluster) -> RunaiSim {
    start_with(cluster, SimConfig::default()).await
}

pub async fn start_with(cluster: Cluster, config: SimConfig) -> RunaiSim {
    let sim = RunaiSim::start(cluster, config).await.expect("start");
    assert!(sim.addr().ip().is_loopback());
    sim
}

/// A v1 `client_credentials` token.
pub async fn token(sim: &RunaiSim, http: &reqwest::Client) -> String {
    let c = sim.credentials();
    let r = http
        .post(format!("{}/api/v1/token", sim.url()))
        .json(&json!({"grantType": "client_credentials", "clientID": c.client_id, "clientSecret": c.client_secret}))
        .send()
        .await
        .expect("token request");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("token body");
    body["accessToken"]
        .as_str()
        .expect("accessToken")
        .to_owned()
}

/// GET with a bearer token; returns status and JSON body (Null if not JSON).
pub async fn get(
    sim: &RunaiSim,
    http: &reqwest::Client,
    token: &str,
    path_and_query: &str,
) -> (u16, Value) {
    let r = http
        .get(format!("{}{path_and_query}", sim.url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let body = r.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}
