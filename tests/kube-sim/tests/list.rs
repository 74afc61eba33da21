//! List semantics through the real `kube::Client`: pagination with `limit` + `continue` returns
//! every object exactly once from one consistent snapshot, expired tokens get 410, and label
//! and field selectors filter like the API server.

mod common;

use std::collections::BTreeSet;

use common::{client, start};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams, ResourceExt};
use kube_sim::{Cluster, ContainerTemplate, NodeTemplate, PodTemplate, PvcTemplate, ResourceKind};

fn populate(cluster: &Cluster) {
    cluster.create_node(&NodeTemplate::new("n1")).expect("node");
    cluster
        .create_node(&NodeTemplate::new("gpu-1").gpus("NVIDIA-A100-SXM4-40GB", 8))
        .expect("node");
    for i in 0..23 {
        let ns = if i % 2 == 0 { "team-a" } else { "team-b" };
        let app = ["web", "db", "batch"][i % 3];
        let mut tpl = PodTemplate::new(ns, format!("pod-{i:02}"))
            .label("app", app)
            .container(ContainerTemplate::new("main").cpu("100m", None));
        if i % 4 == 0 {
            tpl = tpl.label("tier", "front");
        }
        cluster.create_pod(&tpl).expect("pod");
        if i % 5 == 0 {
            cluster
                .schedule_pod(ns, &format!("pod-{i:02}"), "n1")
                .expect("schedule");
        }
    }
}

async fn names(api: &Api<Pod>, lp: &ListParams) -> Vec<String> {
    api.list(lp)
        .await
        .expect("list")
        .items
        .iter()
        .map(|p| p.name_any())
        .collect()
}

#[tokio::test]
async fn pagination_returns_every_object_once_from_one_snapshot() {
    let sim = start(Cluster::new()).await;
    let cluster = sim.cluster().clone();
    populate(&cluster);
    let api: Api<Pod> = Api::all(client(&sim).await);

    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut list_rv: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut lp = ListParams::default().limit(5);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await.expect("page");
        pages += 1;
        if pages == 1 {
            // Writes between pages must not leak into the rest of this list.
            cluster
                .create_pod(&PodTemplate::new("team-a", "pod-99"))
                .expect("pod");
            cluster.delete_pod("team-b", "pod-21").expect("delete");
        }
        let rv = page.metadata.resource_version.clone();
        assert!(
            list_rv.is_none() || list_rv == rv,
            "every page is served at the first page's resourceVersion"
        );
        list_rv = rv;
        assert!(page.items.len() <= 5);
        seen.extend(
            page.items
                .iter()
                .map(|p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any())),
        );
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, 5);
    assert_eq!(seen.len(), 23);
    assert_eq!(
        seen.iter().collect::<BTreeSet<_>>().len(),
        23,
        "no duplicates"
    );
    assert!(
        seen.contains(&"team-b/pod-21".to_owned()) && !seen.contains(&"team-a/pod-99".to_owned())
    );
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "lists come in key (namespace/name) order");
    assert_eq!(
        sim.requests().lists(ResourceKind::Pod),
        5,
        "each page is one request"
    );

    // A fresh list sees the writes.
    let now = names(&api, &ListParams::default()).await;
    assert_eq!(now.len(), 23);
    assert!(now.contains(&"pod-99".to_owned()) && !now.contains(&"pod-21".to_owned()));
}

#[tokio::test]
async fn expired_continue_token_is_410() {
    let sim = start(Cluster::new()).await;
    populate(&sim.cluster().clone());
    let api: Api<Pod> = Api::all(client(&sim).await);
    let first = api
        .list(&ListParams::default().limit(10))
        .await
        .expect("page");
    let token = first.metadata.continue_.expect("more pages");
    sim.cluster()
        .create_pod(&PodTemplate::new("x", "y"))
        .expect("pod");
    sim.compact();
    let err = api
        .list(&ListParams::default().limit(10).continue_token(&token))
        .await
        .expect_err("the snapshot is compacted");
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected a 410 Status, got {other:?}"),
    }
    let bad = api
        .list(&ListParams::default().continue_token("not-a-token"))
        .await;
    assert!(matches!(bad, Err(kube::Error::Api(s)) if s.code == 400));
}

#[tokio::test]
async fn label_selectors_filter() {
    let sim = start(Cluster::new()).await;
    populate(&sim.cluster().clone());
    let api: Api<Pod> = Api::all(client(&sim).await);
    let count = |sel: &'static str| {
        let api = api.clone();
        async move { names(&api, &ListParams::default().labels(sel)).await.len() }
    };
    assert_eq!(count("app=web").await, 8);
    assert_eq!(count("app!=web").await, 15);
    assert_eq!(count("tier").await, 6);
    assert_eq!(count("!tier").await, 17);
    assert_eq!(count("app in (web,db)").await, 16);
    assert_eq!(count("app notin (web,db)").await, 7);
    assert_eq!(count("app=web,tier=front").await, 2);
    // Selectors combine with pagination.
    let page = api
        .list(&ListParams::default().labels("app=db").limit(3))
        .await
        .expect("page");
    assert_eq!(page.items.len(), 3);
    assert_eq!(page.metadata.remaining_item_count, Some(5));
    let bad = api.list(&ListParams::default().labels("app in web")).await;
    assert!(matches!(bad, Err(kube::Error::Api(s)) if s.code == 400));
}

#[tokio::test]
async fn field_selectors_and_namespaces_filter() {
    let sim = start(Cluster::new()).await;
    populate(&sim.cluster().clone());
    let client = client(&sim).await;
    let all: Api<Pod> = Api::all(client.clone());
    let on_n1 = names(&all, &ListParams::default().fields("spec.nodeName=n1")).await;
    assert_eq!(on_n1, ["pod-00", "pod-10", "pod-20", "pod-05", "pod-15"]);
    let unscheduled = names(&all, &ListParams::default().fields("spec.nodeName=")).await;
    assert_eq!(unscheduled.len(), 18);
    let in_b = names(
        &all,
        &ListParams::default().fields("metadata.namespace=team-b"),
    )
    .await;
    assert_eq!(in_b.len(), 11);
    let namespaced: Api<Pod> = Api::namespaced(client.clone(), "team-b");
    assert_eq!(names(&namespaced, &ListParams::default()).await, in_b);
    let both = names(
        &namespaced,
        &ListParams::default().fields("spec.nodeName=n1"),
    )
    .await;
    assert_eq!(both, ["pod-05", "pod-15"]);
    let bad = all
        .list(&ListParams::default().fields("spec.schedulerName=x"))
        .await;
    assert!(
        matches!(bad, Err(kube::Error::Api(s)) if s.code == 400 && s.message.contains("field label not supported"))
    );
}

#[tokio::test]
async fn nodes_pvcs_pvs_and_get() {
    let sim = start(Cluster::new()).await;
    let cluster = sim.cluster().clone();
    populate(&cluster);
    cluster
        .create_pvc(&PvcTemplate::new("team-a", "data", "fast-ssd", "20Gi").subject("acme"))
        .expect("pvc");
    cluster.bind_pvc("team-a", "data").expect("bind");
    let client = client(&sim).await;

    let nodes: Api<Node> = Api::all(client.clone());
    let gpu = nodes.get("gpu-1").await.expect("get node");
    assert_eq!(
        gpu.labels()
            .get("nvidia.com/gpu.product")
            .map(String::as_str),
        Some("NVIDIA-A100-SXM4-40GB")
    );
    let gpus = nodes
        .list(&ListParams::default().labels("nvidia.com/gpu.product"))
        .await
        .expect("list");
    assert_eq!(gpus.items.len(), 1);

    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "team-a");
    let pvc = pvcs.get("data").await.expect("get pvc");
    let volume = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .expect("bound");
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pv = pvs.get(&volume).await.expect("get pv");
    assert_eq!(
        pv.spec.and_then(|s| s.storage_class_name).as_deref(),
        Some("fast-ssd")
    );

    let pods: Api<Pod> = Api::namespaced(client.clone(), "team-a");
    let missing = pods.get("nope").await;
    assert!(matches!(missing, Err(kube::Error::Api(s)) if s.code == 404 && s.reason == "NotFound"));
    let version = client.apiserver_version().await.expect("version");
    assert_eq!(version.major, "1");
}

/// GET over a bare TCP connection; returns the status line and the body.
async fn raw_get(addr: std::net::SocketAddr, path: &str) -> (String, serde_json::Value) {
    let (status, body) = raw_get_bytes(addr, path).await;
    (status, serde_json::from_slice(&body).expect("JSON body"))
}

/// The status line and the body bytes exactly as sent (kube-sim answers lists with a
/// `Content-Length` body, not chunked).
async fn raw_get_bytes(addr: std::net::SocketAddr, path: &str) -> (String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    common::bounded("response", tcp.read_to_end(&mut raw))
        .await
        .expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers end");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, raw[split + 4..].to_vec())
}

/// Response bytes are counted per verb and resource, as sent (what a bandwidth comparison of
/// list-every-interval against watch needs).
#[tokio::test]
async fn response_bytes_are_counted_per_verb_and_resource() {
    let sim = start(Cluster::new()).await;
    populate(&sim.cluster().clone());
    let (status, first) = raw_get_bytes(sim.addr(), "/api/v1/pods").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let (_, second) = raw_get_bytes(sim.addr(), "/api/v1/namespaces/team-a/pods?limit=2").await;
    let (_, nodes) = raw_get_bytes(sim.addr(), "/api/v1/nodes").await;
    let counts = sim.requests();
    assert!(first.len() > 1000, "23 pods: {} bytes", first.len());
    assert_eq!(
        counts.bytes(kube_sim::Verb::List, ResourceKind::Pod),
        (first.len() + second.len()) as u64
    );
    assert_eq!(
        counts.bytes(kube_sim::Verb::List, ResourceKind::Node),
        nodes.len() as u64
    );
    assert_eq!(
        counts.total_bytes(),
        (first.len() + second.len() + nodes.len()) as u64
    );
}

/// Wire details the typed client hides, as a real API server writes them (a list recorded from
/// kind v1.36 has items without `kind`/`apiVersion`), errors are `Status` objects, unknown paths
/// are 404.
#[tokio::test]
async fn wire_format_matches_the_real_api_server() {
    let sim = start(Cluster::new()).await;
    populate(&sim.cluster().clone());
    let (status, list) = raw_get(sim.addr(), "/api/v1/namespaces/team-a/pods?limit=2").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["apiVersion"], "v1");
    let item = &list["items"][0];
    assert!(
        item.get("kind").is_none() && item.get("apiVersion").is_none(),
        "{item}"
    );
    assert!(item["metadata"]["resourceVersion"].is_string());
    assert!(list["metadata"]["continue"].is_string());

    let (status, body) = raw_get(sim.addr(), "/api/v1/pods?labelSelector=app%20in%20web").await;
    assert!(status.starts_with("HTTP/1.1 400"), "{status}");
    assert_eq!(
        (body["kind"].as_str(), body["status"].as_str()),
        (Some("Status"), Some("Failure"))
    );
    assert_eq!(body["code"], 400);

    let (status, body) = raw_get(sim.addr(), "/apis/apps/v1/deployments").await;
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    assert_eq!(body["reason"], "NotFound");
    assert_eq!(
        sim.requests().get(kube_sim::Verb::List, ResourceKind::Pod),
        2
    );
}
