//! The `pod-network` preset end to end on cAdvisor counters in a real Prometheus (Debian's
//! 2.42): the fixture `prometheus/cadvisor-network.om` (kubelet `/metrics/cadvisor` labels,
//! synthetic values; see `tests/fixtures/README.md`) is written into a TSDB with `promtool`,
//! the Prometheus source reads it with the queries exactly as `docs/mappers.md` documents them
//! (parsed from that page), joined to the pods' annotations, and every window is mapped by the
//! embedded `builtin:prometheus` with `{"preset": "pod-network"}`. Per pod and subject the
//! received and transmitted bytes summed over the windows are the hand-computed totals, for
//! windows of 15 s, 60 s and 10 min; the node's own series (`pod=""`) are billed to no one;
//! every event is accepted by the host and validates against the CloudEvents 1.0 and the
//! OpenMeter `Event` schemas. Loopback only; every wait bounded; the server killed at the end.
//!
//! # The fixture, by hand
//!
//! Samples every 15 s from `T − 60` to `T + 600` (`T` = 2026-11-02T10:00:00Z), each container's
//! at its own millisecond offset, as cAdvisor stamps them (node `.125`, web-1 `.750`, pg-0's
//! first sandbox `.500`, its second `.250`). Sample `k` is at `T + 15k + offset`; billing is
//! `[T, T + 600)`, so samples `k = 0..=39` are billed, each with its increase over sample
//! `k − 1` (sample −1 is the carry read from the lookback before `T`).
//!
//! | series (`container=""`) | receive: +bytes per sample | transmit: +bytes per sample |
//! |---|---|---|
//! | node `id="/"`, `pod=""`: `cni0`, `eth0`, `flannel.1` | 11 000, 250 000, 3 000 | 9 000, 120 000, 2 500 |
//! | shop/web-1 `eth0` | 10 000 up to k = 20, then 30 000 | 2 000 |
//! | shop/web-1 `net1` (a second, Multus-style interface) | 1 000 | 500 |
//! | data/pg-0 `eth0`, sandbox 1, k = −4..=19 | 4 000 | 8 000 |
//! | data/pg-0 `eth0`, sandbox 2 (restarted), k = 21..=40, first 1 500 / 700 | 4 000 | 8 000 |
//!
//! - web-1 received: eth0 21 × 10 000 (k 0..=20) + 19 × 30 000 (k 21..=39) = 780 000, net1
//!   40 × 1 000 = 40 000: **820 000**. Sent: 40 × 2 000 + 40 × 500 = **100 000**.
//! - pg-0 received: sandbox 1, 20 × 4 000 (k 0..=19) = 80 000; sandbox 2 is a new series (new
//!   `id`/`name`, no sample in the lookback), counted from zero: 1 500 at k = 21, then
//!   18 × 4 000 (k 22..=39) = 73 500: **153 500**. Sent: 20 × 8 000 = 160 000, then
//!   700 + 18 × 8 000 = 144 700: **304 700**. (Summed per pod before the accounting, the
//!   drop from 73 480 000 to 1 500 would be one reset of the pod's line; it is two series.)
//! - web-1 carries `openmeter.io/subject: customer-42`; pg-0 has no billing annotation, so
//!   its subject is its namespace, `data`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgemeter::event::CloudEvent;
use edgemeter::mapper::bindings::{Snapshot, SourceKind};
use edgemeter::mapper::{LoadedMapper, MapperLimits, MapperRuntime, builtin};
use edgemeter::snapshot::{self, Identity};
use edgemeter::sources::pods::PodDirectory;
use edgemeter::sources::prometheus::client::{Auth, PrometheusClient};
use edgemeter::sources::prometheus::config::{PrometheusConfig, Query, parse_queries};
use edgemeter::sources::prometheus::source::{PollPlan, PrometheusSource};
use edgemeter::sources::{MeteredSource, Source};
use edgemeter::window::Window;
use edgemeter_tests::{fixture, shared_cache_dir, ts};

/// The fixture's billing start, 2026-11-02T10:00:00Z.
const T: i64 = 1_793_613_600;
/// Its billing end: ten minutes.
const END: i64 = T + 600;
const MAPPER_CONFIG: &str = r#"{"preset": "pod-network"}"#;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Writes the fixture into a TSDB under `dir` and serves it on 127.0.0.1 once it answers.
async fn serve(dir: &Path) -> (Server, String) {
    let data = dir.join("data");
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(fixture("prometheus/cadvisor-network.om"))
        .arg(&data)
        .output()
        .expect("promtool (apt-get install prometheus; .ci/run installs it)");
    assert!(
        out.status.success(),
        "promtool failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 15s\n").expect("config");
    let port = free_port();
    // Time retention counts back from the newest block, not from now: the fixture's fixed
    // dates stay served however old they get.
    let server = Server(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=30d")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus (apt-get install prometheus; .ci/run installs it)"),
    );
    let url = format!("http://127.0.0.1:{port}");
    let client = client(&url);
    let first = Window::new(T, T + 15).expect("window");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let read = client
            .raw_samples("container_network_receive_bytes_total", &first)
            .await;
        if read.is_ok_and(|s| !s.is_empty()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus did not serve the fixture"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (server, url)
}

fn client(url: &str) -> PrometheusClient {
    PrometheusClient::new(url, Auth::None, Duration::from_secs(10)).expect("client")
}

/// The `pod-network` queries as `docs/mappers.md` prints them (the YAML block after the
/// preset's heading), so the test bills what operators are told to configure.
fn documented_queries() -> Vec<Query> {
    let page =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/mappers.md"))
            .expect("docs/mappers.md");
    let preset = page
        .find("**Preset `pod-network`**")
        .expect("the preset's section");
    let block = &page[preset..];
    let start = block.find("```yaml\n").expect("its YAML block") + "```yaml\n".len();
    let yaml = &block[start..];
    let yaml = &yaml[..yaml.find("```").expect("the block ends")];
    // `prometheus:` / `  queries:` then the list, as PROMETHEUS_QUERIES takes it.
    let list = &yaml[yaml.find("queries:\n").expect("a queries key") + "queries:\n".len()..];
    let queries = parse_queries(list).expect("the documented queries are valid");
    let names: Vec<&str> = queries.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, ["pod_network_receive", "pod_network_transmit"]);
    assert_eq!(
        queries[0].read.text(),
        r#"container_network_receive_bytes_total{container="", pod!=""}"#
    );
    queries
}

fn mapper() -> LoadedMapper {
    let (name, wasm) = builtin::resolve(builtin::PROMETHEUS).expect("embedded");
    MapperRuntime::new(MapperLimits::default(), Some(shared_cache_dir()))
        .expect("runtime")
        .load(&name, &wasm)
        .expect("built-in Prometheus mapper loads")
}

/// The pods as the Kubernetes source would have entered them: web-1 with its subject, pg-0
/// with annotations none of which is a billing one.
fn pods() -> PodDirectory {
    let pods = PodDirectory::default();
    let (k, v) = ("openmeter.io/subject".to_owned(), "customer-42".to_owned());
    pods.upsert("shop", "web-1", [(&k, &v)]);
    let (k, v) = ("prometheus.io/scrape".to_owned(), "true".to_owned());
    pods.upsert("data", "pg-0", [(&k, &v)]);
    pods
}

/// Bills `[T, END)` in windows of `len` seconds as the biller does (items, map, commit) and
/// returns each window with its events.
async fn bill(url: &str, m: &LoadedMapper, len: i64) -> Vec<(Window, Vec<CloudEvent>)> {
    let config = PrometheusConfig {
        url: url.to_owned(),
        queries: documented_queries(),
        auth: Auth::None,
        ca_pem: None,
        delay: 0,
        lookback: 300,
        request_timeout: Duration::from_secs(10),
    };
    let plan = PollPlan {
        interval: 15,
        delay: 0,
        lookback: 300,
        retry: Duration::from_millis(100),
    };
    let mut source = PrometheusSource::start(
        client(url),
        &config,
        plan,
        T,
        Arc::new(|| END),
        Vec::<(Vec<u8>, Vec<u8>)>::new(),
    )
    .with_pods(Some(pods()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while source.ready_until().is_none_or(|r| r < END) || !source.in_sync() {
        assert!(
            Instant::now() < deadline,
            "the source did not read [T, END)"
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), source.pump()).await;
    }
    let identity = Identity {
        collector_id: "test".into(),
        cluster_id: "c1".into(),
    };
    let mut out = Vec::new();
    let mut start = T;
    while start < END {
        let w = Window::new(start, start + len).expect("window");
        let items = source.items(&w);
        for item in &items {
            let label = |key: &str| {
                item.labels
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.as_str())
            };
            // Lines are identified by namespace and pod only (interfaces and sandboxes
            // summed), and no line is the node's.
            assert_eq!(item.labels.len(), 2, "{:?}", item.labels);
            assert!(
                matches!(label("pod"), Some("web-1" | "pg-0")),
                "{:?}",
                item.labels
            );
        }
        let snap = Snapshot {
            envelope: snapshot::envelope(SourceKind::Prometheus, &w, &identity, MAPPER_CONFIG),
            items,
        };
        let events = m
            .map_events(&snap, 64 * 1024)
            .expect("maps, every event accepted by the host");
        let _ = source.ledger_writes();
        source.ledger_committed();
        source.forget_billed(w.end());
        out.push((w, events));
        start += len;
    }
    source.stop();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_network_preset_bills_recorded_cadvisor_counters_per_pod_and_subject() {
    assert_eq!(T, ts("2026-11-02T10:00:00Z"));
    let dir = tempfile::tempdir().expect("dir");
    let (_server, url) = serve(dir.path()).await;
    let m = mapper();
    let validators = edgemeter_tests::schema_validators();

    // The node's own series are in the fixture (a selector without `pod!=""` reads them):
    // three interfaces, none of a pod.
    let node = client(&url)
        .raw_samples(
            r#"container_network_receive_bytes_total{pod=""}"#,
            &Window::new(T, END).expect("window"),
        )
        .await
        .expect("read");
    let interfaces: BTreeSet<&str> = node
        .iter()
        .map(|s| s.labels["interface"].as_str())
        .collect();
    assert_eq!(interfaces, BTreeSet::from(["cni0", "eth0", "flannel.1"]));
    assert!(node.iter().all(|s| s.labels["id"] == "/"));

    for len in [15, 60, 600] {
        let windows = bill(&url, &m, len).await;
        let mut totals: BTreeMap<(String, String, String), f64> = BTreeMap::new();
        let mut ids = BTreeSet::new();
        for (w, events) in &windows {
            for e in events {
                let instance = serde_json::to_value(e).expect("serializes");
                for (name, v) in &validators {
                    let errors: Vec<String> =
                        v.iter_errors(&instance).map(|e| e.to_string()).collect();
                    assert!(errors.is_empty(), "{name}: {errors:?} in {instance}");
                }
                assert!(ids.insert(e.id.clone()), "id {} twice", e.id);
                assert_eq!(
                    (e.source.as_str(), e.event_type.as_str()),
                    ("prometheus", "pod-network")
                );
                assert_eq!(e.time, w.end_rfc3339(), "time = the window's end");
                let d = &e.data;
                let pod = d["pod_name"].as_str().expect("a pod").to_owned();
                let namespace = d["pod_namespace"].as_str().expect("a namespace");
                assert_eq!(
                    namespace,
                    match pod.as_str() {
                        "web-1" => "shop",
                        "pg-0" => "data",
                        other => panic!("an event of {other}: {instance}"),
                    }
                );
                let field = match d["query"].as_str() {
                    Some("pod_network_receive") => "network_receive_bytes",
                    Some("pod_network_transmit") => "network_transmit_bytes",
                    other => panic!("query {other:?}: {instance}"),
                };
                // One field per event, the other query's absent; no generic `value`.
                for other in ["network_receive_bytes", "network_transmit_bytes", "value"] {
                    assert_eq!(d.contains_key(other), other == field, "{instance}");
                }
                let bytes = d[field].as_f64().expect("bytes");
                *totals
                    .entry((e.subject.clone(), pod, field.to_owned()))
                    .or_default() += bytes;
            }
        }
        let key = |s: &str, p: &str, f: &str| (s.to_owned(), p.to_owned(), f.to_owned());
        let expected = BTreeMap::from([
            // web-1: eth0 21 × 10 000 + 19 × 30 000, net1 40 × 1 000.
            (
                key("customer-42", "web-1", "network_receive_bytes"),
                820_000.0,
            ),
            // web-1: 40 × 2 000 + 40 × 500.
            (
                key("customer-42", "web-1", "network_transmit_bytes"),
                100_000.0,
            ),
            // pg-0: 20 × 4 000, then the new sandbox from zero: 1 500 + 18 × 4 000.
            (key("data", "pg-0", "network_receive_bytes"), 153_500.0),
            // pg-0: 20 × 8 000, then 700 + 18 × 8 000.
            (key("data", "pg-0", "network_transmit_bytes"), 304_700.0),
        ]);
        assert_eq!(totals, expected, "windows of {len} s");

        if len == 60 {
            let at = |start: i64, pod: &str, field: &str| -> &CloudEvent {
                windows
                    .iter()
                    .find(|(w, _)| w.start() == start)
                    .and_then(|(_, events)| {
                        events
                            .iter()
                            .find(|e| e.data["pod_name"] == pod && e.data.contains_key(field))
                    })
                    .unwrap_or_else(|| panic!("no {field} of {pod} at T+{}", start - T))
            };
            // [T, T+60): pg-0's first sandbox counts from its carry before T (73 412 000 at
            // T−14.5, read from the lookback), not from zero: 4 × 4 000.
            let first = at(T, "pg-0", "network_receive_bytes");
            assert_eq!(first.data["network_receive_bytes"], 16_000);
            assert_eq!(first.data["samples"], 4);
            assert_eq!(first.data["first_sample"], "2026-11-02T10:00:00.500Z");
            assert_eq!(first.data["last_sample"], "2026-11-02T10:00:45.500Z");
            // [T+300, T+360), the sandbox restart: no sample of sandbox 1 (its last was
            // T+285.5), sandbox 2 from zero at T+315.25: 1 500 + 4 000 + 4 000 received,
            // 700 + 8 000 + 8 000 sent.
            let restart = at(T + 300, "pg-0", "network_receive_bytes");
            assert_eq!(restart.data["network_receive_bytes"], 9_500);
            assert_eq!(restart.data["samples"], 3);
            assert_eq!(restart.data["first_sample"], "2026-11-02T10:05:15.250Z");
            assert_eq!(
                at(T + 300, "pg-0", "network_transmit_bytes").data["network_transmit_bytes"],
                16_700
            );
            // web-1 in the same window: eth0 10 000 (k = 20) + 3 × 30 000, net1 4 × 1 000,
            // 8 samples over its two interfaces; sent 4 × 2 000 + 4 × 500.
            let web = at(T + 300, "web-1", "network_receive_bytes");
            assert_eq!(web.data["network_receive_bytes"], 104_000);
            assert_eq!(web.data["samples"], 8);
            assert_eq!(web.subject, "customer-42");
            assert_eq!(
                at(T + 300, "web-1", "network_transmit_bytes").data["network_transmit_bytes"],
                10_000
            );
            // Every window bills both pods both ways: 10 windows × 4 events.
            assert_eq!(windows.iter().map(|(_, e)| e.len()).sum::<usize>(), 40);
        }
    }
}
