//! The `kube-sim` binary serves a scenario that the real client can read, and exits on SIGTERM
//! after printing its request counts.

mod common;

use std::process::Stdio;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn binary_serves_the_demo_scenario() {
    let dir = std::env::temp_dir().join(format!("kube-sim-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let kubeconfig = dir.join("kubeconfig");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-sim"))
        .args(["--demo", "--speed", "instant", "--kubeconfig"])
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn kube-sim");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = common::bounded("URL line", lines.next_line())
        .await
        .expect("read")
        .expect("a line");
    let url = first
        .strip_prefix("KUBE_SIM_URL=")
        .expect("URL line first")
        .to_owned();
    let done = common::bounded("scenario done", lines.next_line())
        .await
        .expect("read")
        .expect("a line");
    assert!(done.starts_with("scenario done"), "{done}");

    let _ = rustls::crypto::ring::default_provider().install_default();
    let yaml = std::fs::read_to_string(&kubeconfig).expect("kubeconfig written");
    assert!(yaml.contains(&url));
    let kc = kube::config::Kubeconfig::from_yaml(&yaml).expect("parses");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    let client = kube::Client::try_from(config).expect("client");
    let nodes: Api<Node> = Api::all(client);
    let gpu = nodes
        .list(&ListParams::default().labels("nvidia.com/gpu.product"))
        .await
        .expect("list");
    assert_eq!(gpu.items.len(), 1);

    let pid = child.id().expect("running");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = common::bounded("exit", child.wait()).await.expect("wait");
    assert!(status.success(), "{status:?}");
    let mut rest = Vec::new();
    while let Some(line) = lines.next_line().await.expect("read") {
        rest.push(line);
    }
    assert!(
        rest.iter()
            .any(|l| l.starts_with("requests List nodes 1 bytes ")),
        "{rest:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
