//! Mapper benchmark: a 10,000-pod snapshot mapped by the built-in mapper as a WASM component
//! vs the same mapping code compiled natively, measured side by side in one run; plus mapper
//! start-up with a compiled-component cache miss vs hit.
//!
//! Run: `cargo bench -p edgemeter --bench mapper` (release). Prints a table; asserts nothing
//! about speed.
//!
//! Pods are the real coredns pod recorded from a kind cluster (managed fields stripped),
//! varied in name, uid, resources, GPUs and annotations.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use edgemeter::mapper::bindings::{self, SourceKind};
use edgemeter::mapper::{MapperLimits, MapperRuntime, builtin};
use edgemeter::snapshot::{self, Identity, PodObject};
use edgemeter::window::Window;
use serde_json::{Value, json};

const PODS: usize = 10_000;
const ROUNDS: usize = 7;

fn template() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/kubernetes/podlist-kube-system.kind-v1.36.json"
    );
    let text = std::fs::read_to_string(path).expect("fixture");
    let list: Value = serde_json::from_str(&text).expect("json");
    let mut pod = list["items"][0].clone();
    pod["kind"] = json!("Pod");
    pod
}

fn pods(n: usize) -> Vec<PodObject> {
    let base = template();
    (0..n)
        .map(|i| {
            let mut p = base.clone();
            p["metadata"]["name"] = json!(format!("pod-{i}"));
            p["metadata"]["uid"] = json!(format!("00000000-0000-0000-0000-{i:012}"));
            p["metadata"]["annotations"] = json!({
                "openmeter.io/subject": format!("customer-{}", i % 97),
                "data.openmeter.io/team": format!("team-{}", i % 7),
            });
            p["spec"]["containers"][0]["resources"] = json!({
                "requests": {"cpu": format!("{}m", 100 + i % 900), "memory": format!("{}Mi", 64 + i % 512)},
                "limits": if i % 10 == 0 { json!({"nvidia.com/gpu": "1", "memory": "1Gi"}) } else { json!({"memory": "1Gi"}) },
            });
            PodObject::from_value(p).expect("pod")
        })
        .collect()
}

fn to_guest(s: &bindings::Snapshot) -> edgemeter_guest::Snapshot {
    use edgemeter_guest as g;
    let e = &s.envelope;
    g::Snapshot {
        envelope: g::Envelope {
            source: g::SourceKind::Kubernetes,
            window_start: e.window_start,
            window_end: e.window_end,
            window_start_rfc3339: e.window_start_rfc3339.clone(),
            window_end_rfc3339: e.window_end_rfc3339.clone(),
            collector_id: e.collector_id.clone(),
            cluster_id: e.cluster_id.clone(),
            config: e.config.clone(),
        },
        items: s
            .items
            .iter()
            .map(|i| {
                let a = &i.allocation;
                g::Item {
                    kind: g::ItemKind::Pod,
                    namespace: i.namespace.clone(),
                    name: i.name.clone(),
                    uid: i.uid.clone(),
                    labels: i.labels.clone(),
                    annotations: i.annotations.clone(),
                    object: i.object.clone(),
                    allocation: g::Allocation {
                        seconds: a.seconds,
                        allocated_from: a.allocated_from,
                        allocated_until: a.allocated_until,
                        estimated: a.estimated,
                        cpu_request_millicores: a.cpu_request_millicores,
                        cpu_limit_millicores: a.cpu_limit_millicores,
                        memory_request_bytes: a.memory_request_bytes,
                        memory_limit_bytes: a.memory_limit_bytes,
                        gpu: a.gpu.as_ref().map(|x| g::GpuAllocation {
                            count: x.count,
                            resource_name: x.resource_name.clone(),
                            model: x.model.clone(),
                            fraction: x.fraction,
                            memory_bytes: x.memory_bytes,
                        }),
                        storage_bytes: a.storage_bytes,
                        storage_class: a.storage_class.clone(),
                        node_name: a.node_name.clone(),
                        phase: a.phase.clone(),
                    },
                    usage: vec![],
                }
            })
            .collect(),
    }
}

/// Median of `ROUNDS` timed runs after one warm-up.
fn median(mut f: impl FnMut() -> usize) -> (Duration, usize) {
    let out = f();
    let mut times: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed()
        })
        .collect();
    times.sort();
    (times[ROUNDS / 2], out)
}

fn per_sec(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn main() {
    let window = Window::new(1_781_500_000, 1_781_500_015).expect("window");
    let objects = pods(PODS);
    let identity = Identity {
        collector_id: "bench".into(),
        cluster_id: String::new(),
    };
    let nodes = BTreeMap::new();

    // Start-up: compile on a cold cache, then load from the warm cache.
    let cache = tempfile::tempdir().expect("tempdir");
    let runtime = MapperRuntime::new(MapperLimits::default(), Some(cache.path().to_path_buf()))
        .expect("runtime");
    let t = Instant::now();
    let mapper = runtime
        .load(builtin::KUBERNETES, builtin::KUBERNETES_WASM)
        .expect("load");
    let t_miss = t.elapsed();
    let mut hits = Vec::new();
    for _ in 0..ROUNDS {
        let rt = MapperRuntime::new(MapperLimits::default(), Some(cache.path().to_path_buf()))
            .expect("runtime");
        let t = Instant::now();
        let m = rt
            .load(builtin::KUBERNETES, builtin::KUBERNETES_WASM)
            .expect("load");
        hits.push(t.elapsed());
        assert_eq!(
            m.cache_outcome(),
            edgemeter::mapper::cache::CacheOutcome::Hit
        );
    }
    hits.sort();
    let t_hit = hits[ROUNDS / 2];
    assert!(
        !mapper.wants_raw_objects(),
        "the built-in mapper reads no raw objects"
    );

    let build = |raw: bool| {
        let env = snapshot::envelope(SourceKind::Kubernetes, &window, &identity, "{}");
        let (snap, skipped) = snapshot::pod_snapshot(env, &objects, &nodes, raw);
        assert!(
            skipped.is_empty() && snap.items.len() == PODS,
            "every pod is billed"
        );
        snap
    };
    let (t_acct, _) = median(|| build(false).items.len());
    let (t_acct_raw, _) = median(|| build(true).items.len());
    let snap = build(false);
    let snap_raw = build(true);
    let object_bytes: usize = snap_raw.items.iter().map(|i| i.object.len()).sum();

    let (t_wasm, n_wasm) = median(|| mapper.map_snapshot(&snap).expect("maps").events.len());
    let (t_wasm_raw, _) = median(|| mapper.map_snapshot(&snap_raw).expect("maps").events.len());
    let (t_wasm_full, _) = median(|| mapper.map_events(&snap, 64 * 1024).expect("maps").len());
    let guest = to_guest(&snap);
    let (t_native, n_native) = median(|| {
        edgemeter_mapper_kubernetes::map(&guest)
            .expect("maps")
            .events
            .len()
    });
    assert_eq!(n_wasm, n_native, "same events both ways");

    println!("edgemeter mapper benchmark — {PODS} pods, median of {ROUNDS} runs");
    println!();
    println!("| step                                               | time       | pods/s     |");
    println!("|----------------------------------------------------|------------|------------|");
    let row = |name: &str, d: Duration| {
        println!(
            "| {name:<50} | {:>7.1} ms | {:>10.0} |",
            d.as_secs_f64() * 1e3,
            per_sec(PODS, d)
        )
    };
    row("accounting + snapshot build (host)", t_acct);
    row("  same, serializing raw objects", t_acct_raw);
    row("map: native (same mapper code)", t_native);
    row("map: WASM component (fresh store per call)", t_wasm);
    row(
        &format!(
            "  same, with raw objects ({:.0} MiB copied in)",
            object_bytes as f64 / 1048576.0
        ),
        t_wasm_raw,
    );
    row("map: WASM + host validation and ids", t_wasm_full);
    println!();
    println!(
        "WASM / native ratio (map only): {:.2}  (target ≤ 1.3); with raw objects: {:.2}",
        t_wasm.as_secs_f64() / t_native.as_secs_f64(),
        t_wasm_raw.as_secs_f64() / t_native.as_secs_f64()
    );
    println!();
    println!(
        "| mapper start-up (built-in, {} KiB)  | time      |",
        builtin::KUBERNETES_WASM.len() / 1024
    );
    println!("|-------------------------------------|-----------|");
    println!(
        "| cache miss (compile + store)        | {:>6.1} ms |",
        t_miss.as_secs_f64() * 1e3
    );
    println!(
        "| cache hit (verify + deserialize)    | {:>6.2} ms |",
        t_hit.as_secs_f64() * 1e3
    );
    println!(
        "speed-up from the cache: {:.0}×",
        t_miss.as_secs_f64() / t_hit.as_secs_f64()
    );
}
