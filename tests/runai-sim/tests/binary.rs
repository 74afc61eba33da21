//! The `runai-sim` binary: prints its URL and credentials, serves the demo scenario.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[tokio::test]
async fn binary_serves_the_demo_and_prints_url_and_credentials() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_runai-sim"))
        .args(["--port", "0", "--speed", "instant"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn runai-sim");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut vars = std::collections::BTreeMap::new();
    for _ in 0..5 {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("runai-sim printed in time")
            .expect("read")
            .expect("a line");
        let (k, v) = line.split_once('=').expect("KEY=value");
        vars.insert(k.to_owned(), v.to_owned());
    }
    let url = vars["RUNAI_URL"].clone();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .expect("client");
    let body: Value = http
        .post(format!("{url}/api/v1/token"))
        .json(&json!({"grantType": "app_token", "appID": vars["RUNAI_APP_ID"], "appSecret": vars["RUNAI_APP_SECRET"]}))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let t = body["accessToken"].as_str().expect("accessToken");
    let list: Value = http
        .get(format!("{url}/api/v1/workloads"))
        .bearer_auth(t)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let mut names: Vec<&str> = list["workloads"]
        .as_array()
        .expect("workloads")
        .iter()
        .map(|w| w["name"].as_str().expect("name"))
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "llm-serve",
            "notebook",
            "resnet-train",
            "short-eval",
            "waiting-job"
        ]
    );
    let deleted: Value = http
        .get(format!("{url}/api/v1/workloads?deleted=true"))
        .bearer_auth(t)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(deleted["workloads"][0]["name"], "bert-ddp");
    child.start_kill().expect("kill");
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
}
