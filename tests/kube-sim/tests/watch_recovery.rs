//! The real `kube_runtime::watcher` (default config and backoff) against the simulator: it sees
//! every change, and after 410 Gone, a dropped connection, or an API server restart it converges
//! to the server's state again.

mod common;

use common::{bounded, client, converged, eventually, spawn_mirror, start};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ResourceExt, WatchEvent, WatchParams};
use kube::runtime::watcher;
use kube_sim::{ContainerTemplate, NodeTemplate, PodOutcome, PodTemplate, ResourceKind, Verb};

fn pod(ns: &str, name: &str) -> PodTemplate {
    PodTemplate::new(ns, name).container(ContainerTemplate::new("app").cpu("250m", None))
}

#[tokio::test]
async fn watcher_sees_create_modify_delete() {
    let sim = start(kube_sim::Cluster::new()).await;
    let cluster = sim.cluster().clone();
    cluster.create_node(&NodeTemplate::new("n1")).expect("node");
    cluster.create_pod(&pod("a", "before")).expect("pod");
    let api: Api<Pod> = Api::all(client(&sim).await);
    let (mirror, task) = spawn_mirror(api, watcher::Config::default());
    converged(&mirror, &cluster, "initial list").await;

    cluster.create_pod(&pod("a", "p1")).expect("create");
    cluster.schedule_pod("a", "p1", "n1").expect("schedule");
    cluster.start_pod("a", "p1").expect("start");
    cluster
        .finish_pod("a", "p1", PodOutcome::Succeeded)
        .expect("finish");
    cluster.delete_pod("a", "before").expect("delete");
    converged(&mirror, &cluster, "changes after the list").await;
    {
        let m = mirror.lock().expect("mirror");
        let p1: Vec<&str> = m
            .log
            .iter()
            .filter(|(_, k)| k == "a/p1")
            .map(|(e, _)| e.as_str())
            .collect();
        assert_eq!(
            p1,
            ["Apply", "Apply", "Apply", "Apply"],
            "create, schedule, start, finish"
        );
        assert!(m.log.contains(&("Delete".into(), "a/before".into())));
        assert_eq!(m.inits, 1, "no re-list without a fault");
    }
    let counts = sim.requests();
    assert_eq!(counts.lists(ResourceKind::Pod), 1);
    assert_eq!(counts.watches(ResourceKind::Pod), 1);
    task.abort();
}

#[tokio::test]
async fn bookmarks_carry_the_current_resource_version() {
    let sim = start(kube_sim::Cluster::new()).await;
    let cluster = sim.cluster().clone();
    cluster.create_pod(&pod("a", "p")).expect("pod");
    let start_rv = cluster.resource_version();
    // Another kind changes: the pod watch must move its bookmark past it without an event.
    cluster.create_node(&NodeTemplate::new("n1")).expect("node");
    let api: Api<Pod> = Api::all(client(&sim).await);
    let mut stream = api
        .watch(&WatchParams::default().timeout(30), &start_rv.to_string())
        .await
        .expect("watch starts")
        .boxed();
    let event = bounded("first bookmark", stream.next())
        .await
        .expect("stream open")
        .expect("event");
    match event {
        WatchEvent::Bookmark(b) => assert_eq!(
            b.metadata.resource_version,
            cluster.resource_version().to_string()
        ),
        other => panic!("expected a bookmark, got {other:?}"),
    }
    // A watch without allowWatchBookmarks gets none: only the next real event.
    let mut plain = api
        .watch(
            &WatchParams::default().disable_bookmarks().timeout(30),
            &cluster.resource_version().to_string(),
        )
        .await
        .expect("watch starts")
        .boxed();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    cluster.create_pod(&pod("a", "q")).expect("pod");
    match bounded("event", plain.next())
        .await
        .expect("open")
        .expect("event")
    {
        WatchEvent::Added(p) => assert_eq!(p.metadata.name.as_deref(), Some("q")),
        other => panic!("expected ADDED q, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_timeout_seconds_ends_the_stream() {
    let sim = start(kube_sim::Cluster::new()).await;
    let api: Api<Pod> = Api::all(client(&sim).await);
    let rv = sim.cluster().resource_version().to_string();
    let stream = api
        .watch(&WatchParams::default().timeout(1), &rv)
        .await
        .expect("watch starts");
    let events: Vec<_> = bounded(
        "stream end after timeoutSeconds",
        stream.collect::<Vec<_>>(),
    )
    .await;
    assert!(
        events
            .iter()
            .all(|e| matches!(e, Ok(WatchEvent::Bookmark(_)))),
        "{events:?}"
    );
}

#[tokio::test]
async fn watch_from_compacted_version_gets_410_expired_event() {
    let sim = start(kube_sim::Cluster::new()).await;
    let cluster = sim.cluster().clone();
    let old = cluster.resource_version();
    cluster.create_pod(&pod("a", "p")).expect("pod");
    sim.compact();
    let api: Api<Pod> = Api::all(client(&sim).await);
    // Like the real API server, the watch request itself succeeds; the 410 is an ERROR event.
    let mut stream = api
        .watch(&WatchParams::default(), &old.to_string())
        .await
        .expect("watch starts")
        .boxed();
    match bounded("error event", stream.next())
        .await
        .expect("open")
        .expect("event")
    {
        WatchEvent::Error(status) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
            assert!(
                status.message.starts_with("too old resource version"),
                "{}",
                status.message
            );
        }
        other => panic!("expected ERROR 410, got {other:?}"),
    }
    assert!(bounded("stream ends", stream.next()).await.is_none());
}

#[tokio::test]
async fn watcher_relists_after_410_gone() {
    let sim = start(kube_sim::Cluster::new()).await;
    let cluster = sim.cluster().clone();
    for i in 0..5 {
        cluster
            .create_pod(&pod("a", &format!("p{i}")))
            .expect("pod");
    }
    let api: Api<Pod> = Api::all(client(&sim).await);
    let (mirror, task) = spawn_mirror(api, watcher::Config::default());
    converged(&mirror, &cluster, "initial list").await;

    // While the API server is unreachable, objects change and history is compacted, so the
    // watcher's resourceVersion is gone when it comes back.
    sim.stop().await;
    cluster.delete_pod("a", "p0").expect("delete");
    cluster.create_pod(&pod("a", "new")).expect("create");
    cluster.schedule_pod("a", "p1", "n1").expect("schedule");
    sim.compact();
    sim.restart().await.expect("restart");

    converged(&mirror, &cluster, "state after 410 and re-list").await;
    let m = mirror.lock().expect("mirror");
    assert!(
        m.watch_error_codes.contains(&410),
        "saw {:?}",
        m.watch_error_codes
    );
    assert!(m.inits >= 2, "the watcher re-listed ({} inits)", m.inits);
    assert!(sim.requests().lists(ResourceKind::Pod) >= 2);
    drop(m);
    task.abort();
}

#[tokio::test]
async fn watcher_resumes_after_dropped_connection() {
    let sim = start(kube_sim::Cluster::new()).await;
    let cluster = sim.cluster().clone();
    cluster.create_pod(&pod("a", "p0")).expect("pod");
    let api: Api<Pod> = Api::all(client(&sim).await);
    let (mirror, task) = spawn_mirror(api, watcher::Config::default());
    converged(&mirror, &cluster, "initial list").await;
    let watches_before = sim.requests().watches(ResourceKind::Pod);

    for round in 0..3 {
        sim.drop_watches();
        cluster
            .create_pod(&pod("a", &format!("r{round}")))
            .expect("pod");
        cluster
            .delete_pod("a", if round == 0 { "p0" } else { "r0" })
            .ok();
        converged(&mirror, &cluster, "state after a dropped connection").await;
        eventually("the watcher reconnected", || {
            sim.requests().watches(ResourceKind::Pod) > watches_before + round
        })
        .await;
    }
    let m = mirror.lock().expect("mirror");
    // Resuming from the last resourceVersion needs no re-list.
    assert_eq!(m.inits, 1, "resumed by watching again, not by re-listing");
    assert_eq!(sim.requests().lists(ResourceKind::Pod), 1);
    drop(m);
    task.abort();
}

#[tokio::test]
async fn watcher_recovers_after_api_server_restart() {
    let sim = start(kube_sim::Cluster::new()).await;
    let cluster = sim.cluster().clone();
    cluster.create_pod(&pod("a", "p0")).expect("pod");
    let api: Api<Pod> = Api::all(client(&sim).await);
    let (mirror, task) = spawn_mirror(api, watcher::Config::default());
    converged(&mirror, &cluster, "initial list").await;

    sim.stop().await;
    assert!(!sim.is_running());
    assert!(
        tokio::net::TcpStream::connect(sim.addr()).await.is_err(),
        "the port is closed while the server is down"
    );
    cluster.create_pod(&pod("a", "while-down")).expect("pod");
    cluster.delete_pod("a", "p0").expect("delete");
    // Let the watcher fail to reconnect at least once.
    eventually("the watcher noticed the outage", || {
        mirror.lock().expect("mirror").other_errors > 0
    })
    .await;
    sim.restart().await.expect("restart on the same port");
    converged(&mirror, &cluster, "state after the API server came back").await;
    cluster.create_pod(&pod("a", "after")).expect("pod");
    converged(&mirror, &cluster, "live again after restart").await;
    let m = mirror.lock().expect("mirror");
    assert_eq!(
        m.inits, 1,
        "history was kept, so the watcher resumed without a re-list"
    );
    drop(m);
    assert!(sim.requests().get(Verb::Watch, ResourceKind::Pod) >= 2);
    task.abort();
}

#[tokio::test]
async fn streaming_list_watcher_uses_initial_events_end_bookmark() {
    let sim = start(kube_sim::Cluster::new()).await;
    let cluster = sim.cluster().clone();
    for i in 0..3 {
        cluster
            .create_pod(&pod("a", &format!("p{i}")))
            .expect("pod");
    }
    let api: Api<Pod> = Api::all(client(&sim).await);
    let (mirror, task) = spawn_mirror(api, watcher::Config::default().streaming_lists());
    converged(&mirror, &cluster, "streaming list").await;
    cluster.delete_pod("a", "p1").expect("delete");
    converged(&mirror, &cluster, "after streaming list").await;
    assert_eq!(
        sim.requests().lists(ResourceKind::Pod),
        0,
        "no list call at all"
    );
    assert_eq!(mirror.lock().expect("mirror").init_dones, 1);
    task.abort();
}

#[tokio::test]
async fn node_scoped_watch_sees_pods_move_in_and_out() {
    let sim = start(kube_sim::Cluster::new()).await;
    let cluster = sim.cluster().clone();
    let api: Api<Pod> = Api::all(client(&sim).await);
    let config = watcher::Config::default().fields("spec.nodeName=n1");
    let (mirror, task) = spawn_mirror(api, config);
    eventually("initial list", || {
        mirror.lock().expect("mirror").init_dones == 1
    })
    .await;
    cluster.create_pod(&pod("a", "mine")).expect("pod");
    cluster.create_pod(&pod("a", "other")).expect("pod");
    cluster.schedule_pod("a", "other", "n2").expect("schedule");
    cluster.schedule_pod("a", "mine", "n1").expect("schedule");
    eventually("scheduled pod appears on n1", || {
        mirror
            .lock()
            .expect("mirror")
            .objects
            .contains_key("a/mine")
    })
    .await;
    let m = mirror.lock().expect("mirror");
    assert_eq!(m.objects.keys().collect::<Vec<_>>(), ["a/mine"]);
    assert!(!m.log.iter().any(|(_, k)| k == "a/other"));
    drop(m);
    task.abort();
}

/// `drop_watches` cuts the TCP connection mid-body: the chunked response never gets its final
/// `0\r\n\r\n` chunk. (kube-client treats that as a resumable end of stream, not an error.)
#[tokio::test]
async fn dropped_watch_has_no_final_chunk() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sim = start(kube_sim::Cluster::new()).await;
    let cluster = sim.cluster().clone();
    let mut tcp = tokio::net::TcpStream::connect(sim.addr())
        .await
        .expect("connect");
    let request = format!(
        "GET /api/v1/pods?watch=1&resourceVersion={} HTTP/1.1\r\nHost: {}\r\n\r\n",
        cluster.resource_version(),
        sim.addr()
    );
    tcp.write_all(request.as_bytes())
        .await
        .expect("send request");
    cluster.create_pod(&pod("a", "p")).expect("pod");
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&received).contains("\"ADDED\"") {
        let n = bounded("first event", tcp.read(&mut buf))
            .await
            .expect("read");
        assert!(n > 0, "connection closed before the first event");
        received.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&received).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    sim.drop_watches();
    loop {
        match bounded("connection closes", tcp.read(&mut buf)).await {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
    assert!(
        !received.ends_with(b"0\r\n\r\n"),
        "the body was cut, not finished"
    );
}

/// A clean end (timeoutSeconds) does send the final chunk, so the two cases really differ.
#[tokio::test]
async fn timed_out_watch_ends_with_final_chunk() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sim = start(kube_sim::Cluster::new()).await;
    let mut tcp = tokio::net::TcpStream::connect(sim.addr())
        .await
        .expect("connect");
    let request = format!(
        "GET /api/v1/pods?watch=1&timeoutSeconds=1&resourceVersion={} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        sim.cluster().resource_version(),
        sim.addr()
    );
    tcp.write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut received = Vec::new();
    bounded("response ends", tcp.read_to_end(&mut received))
        .await
        .expect("read");
    assert!(
        received.ends_with(b"0\r\n\r\n"),
        "{}",
        String::from_utf8_lossy(&received)
    );
}

/// Like the watch cache: an update that takes an object out of a selector is a DELETED event
/// (previous content, the update's resourceVersion); one that brings it in is ADDED.
#[tokio::test]
async fn selector_transitions_become_added_and_deleted() {
    let sim = start(kube_sim::Cluster::new()).await;
    let cluster = sim.cluster().clone();
    cluster
        .create_pod(&pod("a", "p").label("app", "web"))
        .expect("pod");
    let api: Api<Pod> = Api::namespaced(client(&sim).await, "a");
    let wp = WatchParams::default()
        .labels("app=web")
        .disable_bookmarks()
        .timeout(30);
    let mut stream = api
        .watch(&wp, &cluster.resource_version().to_string())
        .await
        .expect("watch")
        .boxed();
    let relabel = |app: &'static str| {
        move |p: &mut serde_json::Value, _: &str| {
            p["metadata"]["labels"]["app"] = serde_json::json!(app)
        }
    };
    let out = cluster
        .modify(ResourceKind::Pod, "a", "p", relabel("db"))
        .expect("relabel");
    match bounded("leaves the selector", stream.next())
        .await
        .expect("open")
        .expect("event")
    {
        WatchEvent::Deleted(p) => {
            assert_eq!(
                p.labels().get("app").map(String::as_str),
                Some("web"),
                "previous content"
            );
            assert_eq!(
                p.metadata.resource_version,
                out["metadata"]["resourceVersion"]
                    .as_str()
                    .map(str::to_owned)
            );
        }
        other => panic!("expected DELETED, got {other:?}"),
    }
    cluster
        .modify(ResourceKind::Pod, "a", "p", relabel("db"))
        .expect("still out");
    cluster
        .modify(ResourceKind::Pod, "a", "p", relabel("web"))
        .expect("back in");
    match bounded("enters the selector", stream.next())
        .await
        .expect("open")
        .expect("event")
    {
        WatchEvent::Added(p) => assert_eq!(p.labels().get("app").map(String::as_str), Some("web")),
        other => panic!("expected ADDED, got {other:?}"),
    }
    cluster
        .create_pod(&pod("b", "other-namespace").label("app", "web"))
        .expect("pod");
    cluster
        .modify(ResourceKind::Pod, "a", "p", relabel("web"))
        .expect("touch");
    match bounded("in-selector update", stream.next())
        .await
        .expect("open")
        .expect("event")
    {
        WatchEvent::Modified(p) => assert_eq!(
            p.metadata.name.as_deref(),
            Some("p"),
            "namespace b filtered out"
        ),
        other => panic!("expected MODIFIED, got {other:?}"),
    }
}

#[tokio::test]
async fn send_initial_events_is_validated_like_upstream() {
    let sim = start(kube_sim::Cluster::new()).await;
    let api: Api<Pod> = Api::all(client(&sim).await);
    // kube refuses to build initial_events() without bookmarks itself, so go through the raw path.
    let addr = sim.addr();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "GET /api/v1/pods?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    bounded("response", tcp.read_to_end(&mut raw))
        .await
        .expect("read");
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("allowWatchBookmarks"), "{text}");
    // With bookmarks it is a streaming list: state, then the initial-events-end bookmark.
    sim.cluster().create_pod(&pod("a", "p")).expect("pod");
    let wp = WatchParams::default().initial_events().timeout(30);
    let mut stream = api.watch(&wp, "0").await.expect("watch").boxed();
    assert!(matches!(
        bounded("state", stream.next()).await,
        Some(Ok(WatchEvent::Added(_)))
    ));
    match bounded("end bookmark", stream.next())
        .await
        .expect("open")
        .expect("event")
    {
        WatchEvent::Bookmark(b) => {
            assert_eq!(
                b.metadata
                    .annotations
                    .get("k8s.io/initial-events-end")
                    .map(String::as_str),
                Some("true")
            );
            assert_eq!(
                b.metadata.resource_version,
                sim.cluster().resource_version().to_string()
            );
        }
        other => panic!("expected the initial-events-end bookmark, got {other:?}"),
    }
}
