//! Native unit tests: every expected value is computed by hand in the comments.

use edgemeter_guest::{
    Allocation, CloudEvent, Envelope, Item, ItemKind, Level, MapError, Mapped, Snapshot,
    SourceKind, UsageIntegral,
};
use serde_json::{Map, Value, json};

use super::*;

/// 2026-01-01T00:00:00Z.
const T: i64 = 1_767_225_600;
const T_MS: i64 = T * 1000;

fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    v.sort();
    v
}

/// A counter's increase over the 5-minute window, 20 samples from 00:00:15 to 00:04:59.250.
fn counter(query: &str, unit: &str, increase: f64) -> UsageIntegral {
    UsageIntegral {
        metric: query.to_owned(),
        unit: unit.to_owned(),
        gpu: None,
        pod: None,
        integral: increase,
        covered_seconds: 284.25,
        mean: None,
        samples: 20,
        estimated: false,
        counter: true,
        first_sample_ms: Some(T_MS + 15_000),
        last_sample_ms: Some(T_MS + 299_250),
    }
}

/// A gauge held over the whole 5-minute window, sampled every 30 s from 00:00:00.
fn gauge(query: &str, unit: &str, integral: f64) -> UsageIntegral {
    UsageIntegral {
        metric: query.to_owned(),
        unit: unit.to_owned(),
        gpu: None,
        pod: None,
        integral,
        covered_seconds: 300.0,
        mean: Some(integral / 300.0),
        samples: 10,
        estimated: false,
        counter: false,
        first_sample_ms: Some(T_MS),
        last_sample_ms: Some(T_MS + 270_000),
    }
}

fn series(query: &str, labels: &[(&str, &str)], usage: UsageIntegral) -> Item {
    let labels = pairs(labels);
    let namespace = labels
        .iter()
        .find(|(k, _)| k == "namespace")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let uid = format!(
        "{query}/{}",
        labels
            .iter()
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
            .join("/")
    );
    Item {
        kind: ItemKind::PrometheusSeries,
        namespace,
        name: query.to_owned(),
        uid,
        labels,
        annotations: vec![],
        object: String::new(),
        allocation: Allocation {
            seconds: 0,
            allocated_from: None,
            allocated_until: None,
            estimated: false,
            cpu_request_millicores: 0,
            cpu_limit_millicores: None,
            memory_request_bytes: 0,
            memory_limit_bytes: None,
            gpu: None,
            storage_bytes: None,
            storage_class: None,
            node_name: None,
            phase: None,
        },
        usage: vec![usage],
    }
}

fn snapshot(config: &str, items: Vec<Item>) -> Snapshot {
    Snapshot {
        envelope: Envelope {
            source: SourceKind::Prometheus,
            window_start: T,
            window_end: T + 300,
            window_start_rfc3339: "2026-01-01T00:00:00Z".to_owned(),
            window_end_rfc3339: "2026-01-01T00:05:00Z".to_owned(),
            collector_id: "c".to_owned(),
            cluster_id: String::new(),
            config: config.to_owned(),
        },
        items,
    }
}

fn map_ok(config: &str, items: Vec<Item>) -> Mapped {
    map(&snapshot(config, items))
        .map_err(|e| format!("{e:?}"))
        .expect("maps")
}

fn data(e: &CloudEvent) -> Value {
    let d: Map<String, Value> = serde_json::from_str(&e.data).expect("data is a JSON object");
    Value::Object(d)
}

fn warnings(m: &Mapped) -> Vec<&str> {
    m.diagnostics
        .iter()
        .filter(|d| d.level == Level::Warn)
        .map(|d| d.message.as_str())
        .collect()
}

#[test]
fn a_counter_is_its_increase_billed_to_the_namespace() {
    let item = series(
        "pod_network_receive",
        &[("namespace", "team-a"), ("pod", "web-1")],
        counter("pod_network_receive", "bytes", 123_456_789.0),
    );
    // The time unit does not touch a counter's increase.
    for config in ["", r#"{"unit": "minute"}"#] {
        let m = map_ok(config, vec![item.clone()]);
        assert!(m.diagnostics.is_empty(), "{:?}", m.diagnostics);
        assert_eq!(m.events.len(), 1);
        let e = &m.events[0];
        assert_eq!(
            (e.source.as_str(), e.event_type.as_str(), e.subject.as_str()),
            ("prometheus", "pod_network_receive", "team-a"),
            "type: the query's name; no annotation: label:namespace"
        );
        assert_eq!((e.id.as_ref(), e.time.as_ref()), (None, None), "the host's");
        assert_eq!(
            e.item_uid.as_deref(),
            Some("pod_network_receive/team-a/web-1")
        );
        assert_eq!(
            data(e),
            json!({
                "namespace": "team-a", "pod": "web-1",
                "query": "pod_network_receive",
                "value": 123_456_789, "unit": "bytes", "samples": 20,
                // T + 15 s; T + 299.25 s.
                "first_sample": "2026-01-01T00:00:15Z",
                "last_sample": "2026-01-01T00:04:59.250Z",
            })
        );
    }
}

#[test]
fn a_gauge_is_its_integral_in_the_configured_unit_with_its_mean() {
    let cores = series(
        "cpu_cores",
        &[("namespace", "team-a"), ("pod", "etl-0")],
        // 1.5 cores held for 300 s: 450 core-seconds.
        gauge("cpu_cores", "cores", 450.0),
    );
    let rate = series(
        "ingress_rate",
        &[("namespace", "team-a"), ("pod", "etl-0")],
        // 10 000 B/s for 300 s: 3 000 000 bytes.
        gauge("ingress_rate", "bytes-per-second", 3e6),
    );
    let m = map_ok(
        r#"{"unit": "minute", "event_type": "usage"}"#,
        vec![cores, rate],
    );
    assert!(m.diagnostics.is_empty(), "{:?}", m.diagnostics);
    assert_eq!(m.events[0].event_type, "usage", "event_type set");
    assert_eq!(
        data(&m.events[0]),
        json!({
            "namespace": "team-a", "pod": "etl-0", "query": "cpu_cores",
            // 450 core-seconds / 60 = 7.5 core-minutes; mean 450 / 300 = 1.5 cores.
            "value": 7.5, "mean": 1.5, "unit": "cores", "samples": 10,
            "first_sample": "2026-01-01T00:00:00Z", "last_sample": "2026-01-01T00:04:30Z",
        })
    );
    let d = data(&m.events[1]);
    // A rate's integral is an amount: 3 000 000 bytes whatever the time unit; mean 10 000 B/s.
    assert_eq!(
        (d["value"].clone(), d["mean"].clone()),
        (json!(3_000_000), json!(10_000))
    );
}

#[test]
fn preset_pod_network_names_the_fields_of_cadvisor_users() {
    let mut rx = series(
        "pod_network_receive",
        &[
            ("namespace", "shop"),
            ("pod", "web-1"),
            ("interface", "eth0"),
        ],
        counter("pod_network_receive", "bytes", 5_000_000.0),
    );
    rx.annotations = pairs(&[("openmeter.io/subject", "customer-42"), ("team", "x")]);
    let mut tx = series(
        "pod_network_transmit",
        &[
            ("namespace", "shop"),
            ("pod", "web-1"),
            ("pod_name", "legacy"),
        ],
        UsageIntegral {
            estimated: true,
            ..counter("pod_network_transmit", "bytes", 1234.5)
        },
    );
    // An empty annotation is none: the namespace pays.
    tx.annotations = pairs(&[("openmeter.io/subject", " ")]);
    let m = map_ok(r#"{"preset": "pod-network"}"#, vec![rx, tx]);
    assert!(m.diagnostics.is_empty(), "{:?}", m.diagnostics);
    let [r, t] = m.events.as_slice() else {
        panic!("two events: {:?}", m.events);
    };
    assert_eq!(
        (r.event_type.as_str(), r.subject.as_str()),
        ("pod-network", "customer-42")
    );
    assert_eq!(
        (t.event_type.as_str(), t.subject.as_str()),
        ("pod-network", "shop")
    );
    assert_eq!(
        data(r),
        json!({
            "pod_name": "web-1", "pod_namespace": "shop", "interface": "eth0",
            "query": "pod_network_receive",
            "network_receive_bytes": 5_000_000, "samples": 20,
            "first_sample": "2026-01-01T00:00:15Z",
            "last_sample": "2026-01-01T00:04:59.250Z",
        })
    );
    let d = data(t);
    assert_eq!(d["network_transmit_bytes"], 1234.5);
    assert_eq!(d["estimated"], true);
    // A label named like a field of the preset keeps its value under another name.
    assert_eq!(
        (d["pod_name"].clone(), d["label_pod_name"].clone()),
        (json!("web-1"), json!("legacy"))
    );
    for k in [
        "value",
        "unit",
        "mean",
        "network_receive_bytes",
        "pod",
        "namespace",
    ] {
        assert!(d.get(k).is_none(), "{k} in {d}");
    }
    // event_type renames the preset's type.
    let m = map_ok(
        r#"{"preset": "pod-network", "event_type": "net"}"#,
        vec![series(
            "pod_network_receive",
            &[("namespace", "shop"), ("pod", "web-1")],
            counter("pod_network_receive", "bytes", 1.0),
        )],
    );
    assert_eq!(m.events[0].event_type, "net");
}

#[test]
fn preset_gpu_utilization_is_busy_time_and_byte_time_of_dcgm_gauges() {
    let labels = [
        ("namespace", "ml"),
        ("pod", "train-0"),
        ("gpu", "0"),
        ("UUID", "GPU-8f1c"),
        ("modelName", "NVIDIA A100-SXM4-40GB"),
    ];
    let items = vec![
        // 60 % for 300 s: 18 000 %·s.
        series(
            "gpu_utilization",
            &labels,
            gauge("gpu_utilization", "percent", 18_000.0),
        ),
        // 2048 MiB for 300 s: 614 400 MiB·s.
        series(
            "gpu_memory_used",
            &labels,
            gauge("gpu_memory_used", "MiB", 614_400.0),
        ),
    ];
    let m = map_ok(r#"{"preset": "gpu-utilization"}"#, items.clone());
    assert!(m.diagnostics.is_empty(), "{:?}", m.diagnostics);
    for e in &m.events {
        assert_eq!(
            (e.event_type.as_str(), e.subject.as_str()),
            ("gpu-utilization", "ml")
        );
    }
    let fields = json!({
        "namespace": "ml", "pod": "train-0", "gpu": "0", "UUID": "GPU-8f1c",
        "modelName": "NVIDIA A100-SXM4-40GB", "samples": 10,
        "first_sample": "2026-01-01T00:00:00Z", "last_sample": "2026-01-01T00:04:30Z",
    });
    let with = |extra: Value| {
        let mut v = fields.clone();
        v.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        v
    };
    assert_eq!(
        data(&m.events[0]),
        // 18 000 / 100 = 180 GPU-seconds busy.
        with(json!({"query": "gpu_utilization", "gpu_utilization_seconds": 180}))
    );
    assert_eq!(
        data(&m.events[1]),
        // 614 400 MiB·s × 1 048 576 = 644 245 094 400 byte-seconds.
        with(
            json!({"query": "gpu_memory_used", "gpu_memory_used_byte_seconds": 644_245_094_400u64})
        )
    );
    // Per minute: 180 / 60 = 3 GPU-minutes; 2 GiB × 5 minutes = 10 737 418 240 byte-minutes.
    let m = map_ok(r#"{"preset": "gpu-utilization", "unit": "minute"}"#, items);
    assert_eq!(data(&m.events[0])["gpu_utilization_minutes"], 3);
    assert_eq!(
        data(&m.events[1])["gpu_memory_used_byte_minutes"],
        10_737_418_240u64
    );
    assert!(data(&m.events[0]).get("gpu_utilization_seconds").is_none());
}

#[test]
fn a_preset_maps_other_queries_generically_and_warns_about_misconfigured_ones() {
    let labels = [("namespace", "ml"), ("pod", "train-0")];
    let m = map_ok(
        r#"{"preset": "gpu-utilization", "event_type": "gpu"}"#,
        vec![
            // Not the preset's: generic, type its name (event_type is the preset's type).
            series(
                "gpu_power",
                &labels,
                gauge("gpu_power", "watts", 300.0 * 250.0),
            ),
            // The preset's, in MB: not misread as MiB.
            series(
                "gpu_memory_used",
                &labels,
                gauge("gpu_memory_used", "MB", 600.0),
            ),
            // The preset's, as a counter.
            series(
                "gpu_utilization",
                &labels,
                counter("gpu_utilization", "percent", 5.0),
            ),
        ],
    );
    let types: Vec<&str> = m.events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["gpu_power", "gpu_memory_used", "gpu_utilization"]);
    // 250 W for 300 s = 75 000 J (watt-seconds).
    assert_eq!(data(&m.events[0])["value"], 75_000);
    assert_eq!(data(&m.events[1])["value"], 600);
    assert_eq!(data(&m.events[1])["unit"], "MB");
    assert_eq!(data(&m.events[2])["value"], 5);
    let w = warnings(&m);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].contains("gpu_memory_used{namespace=\"ml\",pod=\"train-0\"}")
            && w[0].contains("\"MB\"")
            && w[0].contains("MiB or mebibytes or bytes"),
        "{}",
        w[0]
    );
    assert!(
        w[1].contains("is a counter query") && w[1].contains("to be a gauge"),
        "{}",
        w[1]
    );
}

#[test]
fn subjects_follow_the_configured_chain_then_the_uid() {
    let mut annotated = series(
        "q",
        &[("namespace", "ns"), ("team", "blue")],
        counter("q", "count", 1.0),
    );
    annotated.annotations = pairs(&[("billing/customer", "acme")]);
    let team = series(
        "q",
        &[("namespace", "ns"), ("team", "red")],
        counter("q", "count", 1.0),
    );
    let namespaced = series("q", &[("namespace", "ns")], counter("q", "count", 1.0));
    let bare = series("q", &[("node", "n1")], counter("q", "count", 1.0));
    let all = || {
        vec![
            annotated.clone(),
            team.clone(),
            namespaced.clone(),
            bare.clone(),
        ]
    };
    let subjects = |m: &Mapped| {
        m.events
            .iter()
            .map(|e| e.subject.clone())
            .collect::<Vec<_>>()
    };

    let m = map_ok(
        r#"{"subject": "annotation:billing/customer",
            "subject_fallbacks": ["label:team", "label:namespace"]}"#,
        all(),
    );
    assert_eq!(subjects(&m), ["acme", "red", "ns", "q/n1"]);
    let w = warnings(&m);
    assert_eq!(w.len(), 1, "only the uid fallback warns: {w:?}");
    assert!(
        w[0].contains("series q{node=\"n1\"} (q/n1)")
            && w[0].contains("annotation:billing/customer, label:team, label:namespace"),
        "{}",
        w[0]
    );

    // Defaults: annotation:openmeter.io/subject, then label:namespace.
    let m = map_ok("", all());
    assert_eq!(subjects(&m), ["ns", "ns", "ns", "q/n1"]);
    // A label first, no fallbacks.
    let m = map_ok(
        r#"{"subject": "label:team", "subject_fallbacks": []}"#,
        all(),
    );
    assert_eq!(subjects(&m), ["blue", "red", "q/ns", "q/n1"]);
    assert_eq!(warnings(&m).len(), 2);
}

#[test]
fn only_series_that_measured_something_make_events() {
    let labels = [("namespace", "ns"), ("pod", "p")];
    let no_samples = UsageIntegral {
        samples: 0,
        first_sample_ms: None,
        last_sample_ms: None,
        ..counter("c", "bytes", 0.0)
    };
    // A gauge whose last sample (before the window) holds for its first 100 s: 4 × 100.
    let held = UsageIntegral {
        samples: 0,
        first_sample_ms: None,
        last_sample_ms: None,
        covered_seconds: 100.0,
        mean: Some(4.0),
        ..gauge("g", "cores", 400.0)
    };
    let nothing = UsageIntegral {
        covered_seconds: 0.0,
        integral: 0.0,
        mean: None,
        ..held.clone()
    };
    let mut two = series("two", &labels, counter("two", "bytes", 7.0));
    two.usage.push(counter("other", "bytes", 9.0));
    let mut none = series("none", &labels, counter("none", "bytes", 1.0));
    none.usage.clear();
    let m = map_ok(
        "",
        vec![
            series("c", &labels, no_samples),
            series("g", &labels, held),
            series("n", &labels, nothing),
            two,
            none,
        ],
    );
    let types: Vec<&str> = m.events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["g", "two"]);
    let g = data(&m.events[0]);
    assert_eq!(
        (g["value"].clone(), g["samples"].clone()),
        (json!(400), json!(0))
    );
    assert!(g.get("first_sample").is_none());
    assert_eq!(data(&m.events[1])["value"], 7, "the first entry");
    let w = warnings(&m);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[0].contains("carries 2 usage entries"), "{}", w[0]);
    assert!(w[1].contains("carries no usage"), "{}", w[1]);
}

#[test]
fn labels_named_like_fields_values_that_are_not_finite_and_other_kinds() {
    let mut odd = series(
        "q",
        &[
            ("namespace", "ns"),
            ("value", "v"),
            ("label_value", "lv"),
            ("empty", ""),
        ],
        gauge("q", "percent", f64::NAN),
    );
    odd.usage[0].mean = Some(f64::INFINITY);
    let mut pod = series("p", &[], counter("p", "bytes", 1.0));
    pod.kind = ItemKind::Pod;
    let m = map_ok("", vec![odd, pod]);
    assert_eq!(m.events.len(), 1);
    let d = data(&m.events[0]);
    assert_eq!(
        d["label_value"], "lv",
        "the label of that name comes first (sorted)"
    );
    assert!(d.get("value").is_none() && d.get("mean").is_none() && d.get("empty").is_none());
    let w = warnings(&m);
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(w[0].contains("labels value left out"), "{}", w[0]);
    assert!(
        w[1].contains("not a finite number: value, mean"),
        "{}",
        w[1]
    );
    assert!(w[2].contains("Prometheus series only"), "{}", w[2]);
}

#[test]
fn rfc3339_of_milliseconds() {
    use rfc3339::from_unix_ms;
    assert_eq!(from_unix_ms(0).as_deref(), Some("1970-01-01T00:00:00Z"));
    assert_eq!(from_unix_ms(T_MS).as_deref(), Some("2026-01-01T00:00:00Z"));
    assert_eq!(
        from_unix_ms(1_709_210_096_789).as_deref(),
        Some("2024-02-29T12:34:56.789Z")
    );
    assert_eq!(
        from_unix_ms(-1).as_deref(),
        Some("1969-12-31T23:59:59.999Z")
    );
    assert_eq!(
        from_unix_ms(253_402_300_799_000).as_deref(),
        Some("9999-12-31T23:59:59Z")
    );
    assert_eq!(from_unix_ms(253_402_300_800_000), None);
}

#[test]
fn the_mapper_describes_itself() {
    let i = info();
    assert_eq!(i.name, "prometheus");
    assert!(i.items_independent && !i.wants_raw_objects);
    assert_eq!(i.item_kinds, vec![ItemKind::PrometheusSeries]);
    assert_eq!(i.event_types, ["pod-network", "gpu-utilization"]);
}

#[test]
fn bad_config_is_refused_naming_the_key() {
    for (config, key) in [
        (r#"{"presett": "pod-network"}"#, "presett"),
        (r#"{"preset": "network"}"#, "preset"),
        (r#"{"unit": "day"}"#, "unit"),
        (r#"{"source": 5}"#, "source"),
        (r#"{"event_type": ""}"#, "event_type"),
        (r#"{"subject": "customer"}"#, "subject"),
        (r#"{"subject": "label: "}"#, "subject"),
        (
            r#"{"subject_fallbacks": "label:namespace"}"#,
            "subject_fallbacks",
        ),
        (
            r#"{"subject_fallbacks": ["label:namespace", "namespace"]}"#,
            "subject_fallbacks[1]",
        ),
    ] {
        let err = parse_config(config).expect_err(config);
        assert!(err.contains(key), "{config}: {err}");
    }
    assert!(parse_config("[]").is_err());
    assert!(parse_config("{").is_err());
    assert_eq!(parse_config("").expect("defaults"), Config::default());
    assert_eq!(parse_config("{}").expect("defaults"), Config::default());
    let c = parse_config(
        r#"{"preset": "gpu-utilization", "source": "prom-eu", "event_type": "gpu",
            "unit": "hour", "subject": "label:team", "subject_fallbacks": []}"#,
    )
    .expect("valid");
    assert_eq!(
        c,
        Config {
            preset: Some(Preset::GpuUtilization),
            source: "prom-eu".to_owned(),
            event_type: Some("gpu".to_owned()),
            unit: Unit::Hour,
            subject: SubjectFrom::Label("team".to_owned()),
            subject_fallbacks: vec![],
        }
    );
    // A bad config fails the whole snapshot as invalid-config.
    let err = map(&snapshot(r#"{"unit": 1}"#, vec![])).expect_err("refused");
    assert!(matches!(err, MapError::InvalidConfig(m) if m.contains("unit")));
}
