//! Hostile mappers (built from `tests/mappers/hostile` as a real wasm32-wasip2 component) are
//! contained: a loop is stopped at the deadline, so is a guest sleeping in the host's clock and
//! poll imports (in any export, from sync code and from inside a tokio runtime), a 1 GiB
//! allocation is refused and so are two memories that only together exceed the limit, too many
//! events or diagnostics and too many bytes handed to the host fail the call, a trap is
//! reported, floods are capped (200 log lines, 64 KiB of stdout), the sandbox exposes nothing
//! (no environment, files or network), a component importing anything else is refused at
//! load; after each failure the same loaded mapper maps the next snapshot normally.

use std::time::Duration;

use edgemeter::mapper::bindings::{
    Allocation, Envelope, Item, ItemKind, Mapped, Snapshot, SourceKind,
};
use edgemeter::mapper::cache::CacheOutcome;
use edgemeter::mapper::{LoadedMapper, MapperError, MapperLimits, MapperRuntime};
use edgemeter_tests::{hostile_wasm, shared_cache_dir, sleepy_describe_wasm};

const DEADLINE: Duration = Duration::from_millis(300);

fn snapshot(mode: &str) -> Snapshot {
    let allocation = Allocation {
        seconds: 15,
        allocated_from: Some(0),
        allocated_until: None,
        estimated: false,
        cpu_request_millicores: 100,
        cpu_limit_millicores: None,
        memory_request_bytes: 1,
        memory_limit_bytes: None,
        gpu: None,
        storage_bytes: None,
        storage_class: None,
        node_name: None,
        phase: None,
    };
    Snapshot {
        envelope: Envelope {
            source: SourceKind::Kubernetes,
            window_start: 1_767_225_600,
            window_end: 1_767_225_615,
            window_start_rfc3339: "2026-01-01T00:00:00Z".into(),
            window_end_rfc3339: "2026-01-01T00:00:15Z".into(),
            collector_id: "test".into(),
            cluster_id: String::new(),
            config: mode.into(),
        },
        items: (0..3)
            .map(|i| Item {
                kind: ItemKind::Pod,
                namespace: "ns".into(),
                name: format!("pod-{i}"),
                uid: format!("uid-{i}"),
                labels: vec![],
                annotations: vec![],
                object: "{}".into(),
                allocation: allocation.clone(),
                usage: vec![],
            })
            .collect(),
    }
}

fn hostile() -> LoadedMapper {
    hostile_with(DEADLINE)
}

fn hostile_with(deadline: Duration) -> LoadedMapper {
    hostile_limits(MapperLimits {
        deadline,
        deadline_per_item: Duration::ZERO,
        ..MapperLimits::default()
    })
}

fn hostile_limits(limits: MapperLimits) -> LoadedMapper {
    let runtime = MapperRuntime::new(limits, Some(shared_cache_dir())).expect("runtime");
    runtime
        .load("hostile", &hostile_wasm())
        .expect("hostile mapper loads")
}

fn maps_normally(m: &LoadedMapper) {
    let events = m
        .map_events(&snapshot("ok"), 64 * 1024)
        .expect("healthy call after a failure");
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| e.event_type == "hostile-ok"));
}

#[test]
fn an_infinite_loop_is_stopped_at_the_deadline() {
    let m = hostile();
    match m.map_snapshot(&snapshot("loop")) {
        Err(MapperError::Timeout {
            deadline, elapsed, ..
        }) => {
            assert_eq!(deadline, DEADLINE);
            assert!(
                elapsed >= DEADLINE,
                "stopped only after its deadline: {elapsed:?}"
            );
            // Not a speed claim: a generous bound that fails only if the deadline is ignored.
            assert!(
                elapsed < DEADLINE * 20,
                "the loop was stopped ({elapsed:?})"
            );
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    maps_normally(&m);
}

/// Runs `f` on its own thread and waits at most `limit` for it, so a call that blocks past its
/// deadline fails the test instead of hanging it (the stuck thread is left behind).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("the mapper call did not return within {limit:?}: it blocks past its deadline")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            panic!("the thread running the mapper call panicked (see its message above)")
        }
    }
}

/// Generous: fails only if the deadline is ignored, not on a slow machine.
const HANG: Duration = Duration::from_secs(10);

fn assert_timeout(result: Result<impl std::fmt::Debug, MapperError>, deadline: Duration) {
    match result {
        Err(MapperError::Timeout {
            deadline: d,
            elapsed,
            ..
        }) => {
            assert_eq!(d, deadline);
            assert!(
                elapsed >= deadline,
                "stopped only after its deadline: {elapsed:?}"
            );
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
}

/// `std::thread::sleep(u64::MAX s)` waits in `wasi:clocks/monotonic-clock.subscribe-duration`
/// + `wasi:io/poll`, on the host, where no epoch check runs: the deadline must still end it.
#[test]
fn a_guest_sleeping_forever_is_stopped_at_the_deadline() {
    let m = hostile();
    let result = within(HANG, {
        let m = m.clone();
        move || m.map_snapshot(&snapshot("sleep-forever"))
    });
    assert_timeout(result, DEADLINE);
    maps_normally(&m);
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(m.stats().timeouts.load(Relaxed), 1, "counted as a timeout");
}

#[test]
fn validate_config_sleeping_forever_is_stopped_at_the_deadline() {
    let m = hostile();
    let result = within(HANG, {
        let m = m.clone();
        move || m.validate_config(r#"{"mode": "validate-config-sleeps"}"#)
    });
    assert_timeout(result, DEADLINE);
    m.validate_config("{}").expect("the next call is fine");
}

#[test]
fn describe_sleeping_forever_fails_the_load_at_the_deadline() {
    let result = within(HANG, || {
        let limits = MapperLimits {
            deadline: DEADLINE,
            deadline_per_item: Duration::ZERO,
            ..MapperLimits::default()
        };
        MapperRuntime::new(limits, Some(shared_cache_dir()))
            .expect("runtime")
            .load("sleepy-describe", &sleepy_describe_wasm())
    });
    assert_timeout(result, DEADLINE);
}

/// The daemon calls mappers from `tokio::task::block_in_place` on its multi-thread runtime, and
/// loads them from async code; tests call them from current-thread runtimes. Every call must
/// work there as it does from plain threads (`edgemeter map`).
#[test]
fn calls_work_from_inside_tokio_runtimes() {
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    within(HANG, move || {
        multi.block_on(async {
            let m = hostile();
            tokio::task::block_in_place(|| {
                maps_normally(&m);
                assert_timeout(m.map_snapshot(&snapshot("sleep-forever")), DEADLINE);
            });
            maps_normally(&m);
        });
        multi.shutdown_background();
    });
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    within(HANG, move || {
        current.block_on(async {
            let m = hostile();
            maps_normally(&m);
            assert_timeout(m.map_snapshot(&snapshot("sleep-forever")), DEADLINE);
        });
        current.shutdown_background();
    });
}

/// The time limit grows with the snapshot: a large cluster's window must not time out for
/// its size alone (it would be retried, larger, for ever).
#[test]
fn the_deadline_grows_with_the_number_of_items() {
    let per_item = Duration::from_millis(100);
    let limits = MapperLimits {
        deadline: DEADLINE,
        deadline_per_item: per_item,
        ..MapperLimits::default()
    };
    let snap = snapshot("loop");
    let items = snap.items.len();
    assert!(items >= 2, "the fixture snapshot has several items");
    let expected = DEADLINE + per_item * u32::try_from(items).expect("few items");
    assert_eq!(limits.deadline_for(items), expected);
    let m = hostile_limits(limits);
    match m.map_snapshot(&snap) {
        Err(MapperError::Timeout {
            deadline, elapsed, ..
        }) => {
            assert_eq!(deadline, expected);
            assert!(
                elapsed >= expected,
                "stopped only after {expected:?}: {elapsed:?}"
            );
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[test]
fn a_one_gib_allocation_is_refused() {
    let m = hostile();
    match m.map_snapshot(&snapshot("alloc")) {
        Err(MapperError::MemoryExceeded { limit, wanted, .. }) => {
            assert_eq!(limit, 256 * 1024 * 1024, "default limit");
            assert!(wanted > limit);
        }
        other => panic!("expected the memory limit, got {other:?}"),
    }
    maps_normally(&m);
}

#[test]
fn a_trap_is_reported_and_contained() {
    let m = hostile();
    match m.map_snapshot(&snapshot("trap")) {
        Err(e @ MapperError::Trap { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("map-snapshot"), "{msg}");
            // The guest's panic message is in the error itself, not only in an INFO log.
            assert!(
                msg.contains("the mapper's last output: [stderr]")
                    && msg.contains("hostile mapper traps on purpose"),
                "{msg}"
            );
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    maps_normally(&m);
}

/// What the host logs while `f` runs on this thread (text, no colours, INFO and above).
fn host_logs<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    // The call runs on this thread (a plain test thread is outside any tokio runtime).
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(
        &buffer
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
    .into_owned();
    (out, text.lines().map(str::to_owned).collect())
}

#[test]
fn output_floods_are_capped_and_do_not_fail_the_call() {
    // 1 MiB of stdout (1,024 lines of 1,023 x) and 1,000 log lines against the 64 KiB /
    // 200-line caps; a long deadline so that only the caps are under test (debug builds write
    // slowly).
    let m = hostile_with(Duration::from_secs(30));
    let defaults = MapperLimits::default();
    assert_eq!((defaults.log_lines, defaults.stdio_bytes), (200, 64 * 1024));
    let (events, logs) = host_logs(|| m.map_events(&snapshot("flood"), 64 * 1024));
    let events = events.expect("flood is capped, not fatal");
    assert_eq!(events.len(), 3);

    // The guest's `log` lines: the first 200 are kept, the other 800 counted in one WARN.
    let kept: Vec<&String> = logs.iter().filter(|l| l.contains("log line ")).collect();
    assert_eq!(kept.len(), 200, "log lines kept");
    assert!(kept[0].contains("log line 0") && kept[199].contains("log line 199"));
    let dropped: Vec<&String> = logs
        .iter()
        .filter(|l| l.contains("mapper log lines over the cap were dropped"))
        .collect();
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    assert!(dropped[0].contains("WARN") && dropped[0].contains("dropped_lines=800"));

    // Stdout: the first 64 KiB (64 whole lines) kept, 983,040 bytes counted as dropped.
    let line = "x".repeat(1023);
    let stdout = logs
        .iter()
        .filter(|l| l.contains(&line) && l.contains("stream=\"stdout\""))
        .count();
    assert_eq!(stdout, 64, "stdout lines kept");
    let over: Vec<&String> = logs
        .iter()
        .filter(|l| l.contains("mapper output over the cap was dropped"))
        .collect();
    assert_eq!(over.len(), 1, "{over:?}");
    assert!(over[0].contains("dropped_bytes=983040"), "{over:?}");
}

#[test]
fn invalid_events_fail_the_snapshot_with_the_reason() {
    let m = hostile();
    let err = m
        .map_events(&snapshot("invalid"), 64 * 1024)
        .expect_err("data is an array");
    assert!(
        matches!(err, MapperError::InvalidEvents { count: 3, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("data must be a JSON object"),
        "{err}"
    );
    maps_normally(&m);
}

/// The guest tries the network: a TCP connection to a listener on loopback, a UDP socket and
/// a name lookup. All are denied (WASI sockets are linked, the context grants nothing), and the
/// listener never sees a connection.
#[test]
fn the_sandbox_denies_the_network() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    // The host can reach it: only the sandbox stands between the guest and the listener.
    drop(std::net::TcpStream::connect(addr).expect("the host connects"));
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        listener.accept().is_ok(),
        "the host's own connection arrives"
    );

    let m = hostile();
    let events = m
        .map_events(&snapshot(&format!("connect:{addr}")), 64 * 1024)
        .expect("connect mode maps");
    let data = &events[0].data;
    assert_eq!(data["tcp_connected"], false, "{data:?}");
    assert_eq!(data["udp_bound"], false, "{data:?}");
    assert_eq!(data["lookup_ok"], false, "{data:?}");
    std::thread::sleep(Duration::from_millis(50));
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the guest reached the listener: {other:?}"),
    }
}

/// A component that imports anything beyond the WASI interfaces and the mapper's host
/// interface is refused at load time, naming the import — before it is linked or run.
#[test]
fn a_component_importing_anything_else_is_refused_at_load() {
    let runtime = MapperRuntime::new(MapperLimits::default(), None).expect("runtime");
    for import in [
        "wasi:http/outgoing-handler@0.2.0",
        "evil:net/socket",
        "edgemeter:mapperx/host",
    ] {
        let wasm = wat::parse_str(format!(r#"(component (import "{import}" (instance)))"#))
            .expect("a component with one import");
        match runtime.load("importer", &wasm) {
            Err(e @ MapperError::ForbiddenImport { .. }) => {
                let MapperError::ForbiddenImport { import: named, .. } = &e else {
                    unreachable!()
                };
                assert_eq!(named, import);
                assert!(e.to_string().contains(import), "{e}");
            }
            other => panic!("{import}: expected ForbiddenImport, got {other:?}"),
        }
    }
}

/// A component built against another version of the contract is refused at load, naming the
/// import and the version this host implements, instead of failing later at link time (or
/// not at all when the shapes happen to agree).
#[test]
fn a_component_of_another_contract_version_is_refused_at_load() {
    let runtime = MapperRuntime::new(MapperLimits::default(), None).expect("runtime");
    for import in [
        "edgemeter:mapper/host@0.4.0",
        "edgemeter:mapper/types@0.3.0",
        "edgemeter:mapper/host",
    ] {
        let wasm = wat::parse_str(format!(r#"(component (import "{import}" (instance)))"#))
            .expect("a component with one import");
        match runtime.load("old", &wasm) {
            Err(e @ MapperError::Contract { .. }) => {
                let text = e.to_string();
                assert!(text.contains(import), "{text}");
                assert!(
                    text.contains(&format!(
                        "edgemeter:mapper@{}",
                        edgemeter::mapper::CONTRACT_VERSION
                    )),
                    "{text}"
                );
            }
            other => panic!("{import}: expected Contract, got {other:?}"),
        }
    }
    // One that imports nothing of ours but exports another version's mapper interface.
    let wasm = wat::parse_str(
        r#"(component (instance $i) (export "edgemeter:mapper/mapper@0.3.0" (instance $i)))"#,
    )
    .expect("a component with one export");
    match runtime.load("old-export", &wasm) {
        Err(e @ MapperError::Contract { .. }) => {
            let text = e.to_string();
            assert!(text.contains("edgemeter:mapper/mapper@0.3.0"), "{text}");
            assert!(
                text.contains(&format!(
                    "implements edgemeter:mapper@{}",
                    edgemeter::mapper::CONTRACT_VERSION
                )),
                "{text}"
            );
        }
        other => panic!("expected Contract, got {other:?}"),
    }
}

#[test]
fn the_sandbox_exposes_no_environment_and_no_files() {
    // The host process has environment variables (PATH at least); the guest must see none.
    assert!(std::env::vars().count() > 0);
    let m = hostile();
    let events = m
        .map_events(&snapshot("env"), 64 * 1024)
        .expect("env mode maps");
    let data = &events[0].data;
    assert_eq!(
        data["env_vars"], 0,
        "no environment variables reach the guest"
    );
    assert_eq!(data["can_read_root"], false, "no preopened directories");
}

#[test]
fn failures_are_counted() {
    let m = hostile();
    let runtime_stats = m.stats();
    let _ = m.map_snapshot(&snapshot("loop"));
    let _ = m.map_snapshot(&snapshot("alloc"));
    let _ = m.map_snapshot(&snapshot("trap"));
    maps_normally(&m);
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(runtime_stats.timeouts.load(Relaxed), 1);
    assert_eq!(runtime_stats.memory_exceeded.load(Relaxed), 1);
    assert_eq!(runtime_stats.traps.load(Relaxed), 1);
    assert_eq!(runtime_stats.failures.load(Relaxed), 3);
    assert_eq!(
        runtime_stats.calls.load(Relaxed),
        5,
        "describe at load + 4 map calls"
    );
    assert_eq!(runtime_stats.events.load(Relaxed), 3);
}

#[test]
fn compiled_components_are_cached_and_corrupt_entries_are_recompiled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wasm = hostile_wasm();
    let load = || {
        MapperRuntime::new(MapperLimits::default(), Some(dir.path().to_path_buf()))
            .expect("runtime")
            .load("hostile", &wasm)
            .expect("loads")
    };
    assert_eq!(load().cache_outcome(), CacheOutcome::Miss);
    let hit = load();
    assert_eq!(hit.cache_outcome(), CacheOutcome::Hit);
    maps_normally(&hit);

    // Corrupt the artifact: the checksum catches it, the mapper is recompiled and works.
    let artifact = std::fs::read_dir(dir.path())
        .expect("cache dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .expect("a cached artifact");
    let mut bytes = std::fs::read(&artifact).expect("read artifact");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&artifact, &bytes).expect("corrupt artifact");
    let again = load();
    assert_eq!(again.cache_outcome(), CacheOutcome::Miss);
    maps_normally(&again);
    assert_eq!(load().cache_outcome(), CacheOutcome::Hit, "rewritten");
}

#[test]
fn garbage_is_not_a_mapper() {
    let runtime = MapperRuntime::new(MapperLimits::default(), None).expect("runtime");
    let err = runtime
        .load("junk", b"not wasm at all")
        .expect_err("garbage");
    assert!(matches!(err, MapperError::Compile { .. }), "{err}");
    assert!(
        err.to_string().contains("wasm32-wasip2"),
        "says what is expected: {err}"
    );
}

// Issue "Containment", scenario 4: the limits hold as documented.

/// A component of two core instances with one linear memory each (as a guest with the WASI
/// adapter has), written in the component text format: `map-snapshot` grows the first memory
/// by `main_pages` and the second by `second_pages` (64 KiB each), then returns no events.
/// `describe` and `validate-config` return zeroed (empty) answers.
fn two_memories(main_pages: u32, second_pages: u32) -> Vec<u8> {
    let wat = r#"
(component
  (type $source-kind' (enum "kubernetes" "runai" "prometheus" "sql"))
  (export $source-kind "source-kind" (type $source-kind'))
  (type $envelope' (record
    (field "source" $source-kind) (field "window-start" s64) (field "window-end" s64)
    (field "window-start-rfc3339" string) (field "window-end-rfc3339" string)
    (field "collector-id" string) (field "cluster-id" string) (field "config" string)))
  (export $envelope "envelope" (type $envelope'))
  (type $item-kind' (enum "pod" "persistent-volume-claim" "runai-workload" "prometheus-series" "sql-row"))
  (export $item-kind "item-kind" (type $item-kind'))
  (type $gpu-allocation' (record
    (field "count" f64) (field "resource-name" string) (field "model" (option string))
    (field "fraction" (option f64)) (field "memory-bytes" (option u64))))
  (export $gpu-allocation "gpu-allocation" (type $gpu-allocation'))
  (type $allocation' (record
    (field "seconds" u64) (field "allocated-from" (option s64))
    (field "allocated-until" (option s64)) (field "estimated" bool)
    (field "cpu-request-millicores" u64) (field "cpu-limit-millicores" (option u64))
    (field "memory-request-bytes" u64) (field "memory-limit-bytes" (option u64))
    (field "gpu" (option $gpu-allocation)) (field "storage-bytes" (option u64))
    (field "storage-class" (option string)) (field "node-name" (option string))
    (field "phase" (option string))))
  (export $allocation "allocation" (type $allocation'))
  (type $usage-integral' (record
    (field "metric" string) (field "unit" string) (field "gpu" (option string))
    (field "pod" (option string)) (field "integral" f64) (field "covered-seconds" f64)
    (field "mean" (option f64)) (field "samples" u32) (field "estimated" bool)
    (field "counter" bool) (field "first-sample-ms" (option s64))
    (field "last-sample-ms" (option s64))))
  (export $usage-integral "usage-integral" (type $usage-integral'))
  (type $item' (record
    (field "kind" $item-kind) (field "namespace" string) (field "name" string)
    (field "uid" string) (field "labels" (list (tuple string string)))
    (field "annotations" (list (tuple string string))) (field "object" string)
    (field "allocation" $allocation) (field "usage" (list $usage-integral))))
  (export $item "item" (type $item'))
  (type $snapshot' (record (field "envelope" $envelope) (field "items" (list $item))))
  (export $snapshot "snapshot" (type $snapshot'))
  (type $extension' (record (field "name" string) (field "value" string)))
  (export $extension "extension" (type $extension'))
  (type $cloud-event' (record
    (field "id" (option string)) (field "source" string) (field "event-type" string)
    (field "subject" string) (field "time" (option string)) (field "data" string)
    (field "extensions" (list $extension)) (field "item-uid" (option string))))
  (export $cloud-event "cloud-event" (type $cloud-event'))
  (type $level' (enum "debug" "info" "warn" "error"))
  (export $level "level" (type $level'))
  (type $diagnostic' (record
    (field "level" $level) (field "item-uid" (option string)) (field "message" string)))
  (export $diagnostic "diagnostic" (type $diagnostic'))
  (type $mapped' (record
    (field "events" (list $cloud-event)) (field "diagnostics" (list $diagnostic))))
  (export $mapped "mapped" (type $mapped'))
  (type $map-error' (variant
    (case "invalid-config" string) (case "invalid-input" string) (case "internal" string)))
  (export $map-error "map-error" (type $map-error'))
  (type $mapper-info' (record
    (field "name" string) (field "version" string) (field "description" string)
    (field "event-types" (list string)) (field "item-kinds" (list $item-kind))
    (field "wants-raw-objects" bool) (field "items-independent" bool)))
  (export $mapper-info "mapper-info" (type $mapper-info'))

  (core module $Second
    (memory 1)
    (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0))))
  (core instance $second (instantiate $Second))

  (core module $Main
    (import "second" "grow" (func $grow-second (param i32) (result i32)))
    (memory (export "memory") 1)
    (global $heap (mut i32) (i32.const 4096))
    ;; A bump allocator for what the host lowers (the config, the snapshot).
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (i32.and
        (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
        (i32.xor (i32.sub (local.get 2) (i32.const 1)) (i32.const -1))))
      (global.set $heap (i32.add (local.get $p) (local.get 3)))
      (block $fits
        (loop $more
          (br_if $fits (i32.le_u (global.get $heap)
                                 (i32.shl (memory.size) (i32.const 16))))
          (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))
          (br $more)))
      (local.get $p))
    ;; Zeroed return areas: empty strings and lists, false, ok.
    (func (export "describe") (result i32) (i32.const 64))
    (func (export "validate-config") (param i32 i32) (result i32) (i32.const 128))
    ;; The snapshot flattens to 15 values (under the ABI's 16): passed as parameters.
    (func (export "map-snapshot")
      (param i32 i64 i64 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
      (if (i32.eq (memory.grow (i32.const MAIN_PAGES)) (i32.const -1)) (then unreachable))
      (if (i32.eq (call $grow-second (i32.const SECOND_PAGES)) (i32.const -1))
        (then unreachable))
      (i32.const 192)))
  (core instance $main (instantiate $Main (with "second" (instance $second))))
  (alias core export $main "memory" (core memory $memory))
  (alias core export $main "cabi_realloc" (core func $realloc))

  (type $describe-type (func (result $mapper-info)))
  (type $validate-type (func (param "config" string) (result (result (error string)))))
  (type $map-type (func (param "snapshot" $snapshot)
    (result (result $mapped (error $map-error)))))
  (func $describe (type $describe-type)
    (canon lift (core func $main "describe") (memory $memory) (realloc $realloc)))
  (func $validate (type $validate-type)
    (canon lift (core func $main "validate-config") (memory $memory) (realloc $realloc)))
  (func $map (type $map-type)
    (canon lift (core func $main "map-snapshot") (memory $memory) (realloc $realloc)))
  (export "describe" (func $describe))
  (export "validate-config" (func $validate))
  (export "map-snapshot" (func $map))
)
"#
    .replace("MAIN_PAGES", &main_pages.to_string())
    .replace("SECOND_PAGES", &second_pages.to_string());
    wat::parse_str(&wat).expect("the two-memory component is valid")
}

/// A call's outcome without the (possibly huge) events themselves, for assertion messages.
fn summary(r: &Result<Mapped, MapperError>) -> Result<(usize, usize), &MapperError> {
    r.as_ref().map(|m| (m.events.len(), m.diagnostics.len()))
}

const MIB: u32 = 1024 * 1024;
const PAGE: u32 = 64 * 1024;

fn load_two_memories(main_mib: u32, second_mib: u32) -> LoadedMapper {
    MapperRuntime::new(MapperLimits::default(), None)
        .expect("runtime")
        .load(
            "two-memories",
            &two_memories(main_mib * MIB / PAGE, second_mib * MIB / PAGE),
        )
        .expect("the two-memory component loads")
}

/// The memory limit (256 MiB) is for the component as a whole: two memories of 200 MiB each,
/// each under the limit on its own, are refused together.
#[test]
fn the_memory_limit_holds_for_all_memories_of_a_component_together() {
    let within = load_two_memories(100, 100);
    let mapped = within
        .map_snapshot(&snapshot("ok"))
        .expect("200 MiB in two memories is within 256 MiB");
    assert!(mapped.events.is_empty());

    let over = load_two_memories(200, 200);
    match over.map_snapshot(&snapshot("ok")) {
        Err(MapperError::MemoryExceeded { limit, wanted, .. }) => {
            assert_eq!(limit, 256 * 1024 * 1024, "default limit");
            // Both initial pages and both growths: 400 MiB + 128 KiB.
            assert_eq!(
                wanted,
                400 * 1024 * 1024 + 2 * 64 * 1024,
                "the total is counted"
            );
        }
        other => panic!("expected the memory limit for the whole component, got {other:?}"),
    }
    assert!(
        over.map_snapshot(&snapshot("ok")).is_err(),
        "every call gets the same budget (fresh store), and this one always exceeds it"
    );
    within
        .map_snapshot(&snapshot("ok"))
        .expect("a fresh store starts from zero again");
}

#[test]
fn more_events_or_diagnostics_than_a_call_may_return_fail_it_naming_the_limit() {
    let m = hostile();
    let limit = MapperLimits::default().output_entries_for(3);
    for (mode, what) in [
        ("many-events", "events"),
        ("many-diagnostics", "diagnostics"),
    ] {
        match m.map_snapshot(&snapshot(mode)) {
            Err(e @ MapperError::TooManyEntries { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains(&format!("returned 5000 {what}, over the limit of {limit}")),
                    "{text}"
                );
                assert!(text.contains("3 item(s)"), "{text}");
            }
            other => panic!("{mode}: expected TooManyEntries, got {:?}", summary(&other)),
        }
    }
    maps_normally(&m);
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(
        m.stats().memory_exceeded.load(Relaxed),
        2,
        "counted as memory"
    );
}

/// What a call hands the host is capped while it is lifted (wasmtime's hostcall fuel), before
/// any of it is validated: the result of `map-snapshot` and the arguments of an import call.
#[test]
fn more_bytes_than_a_call_may_hand_the_host_fail_it_naming_the_limit() {
    let m = hostile_with(Duration::from_secs(30));
    let limit = MapperLimits::default().output_bytes_for(3);
    for (mode, call) in [
        ("huge-output", "map-snapshot"),
        ("huge-log", "map-snapshot"),
    ] {
        match m.map_snapshot(&snapshot(mode)) {
            Err(e @ MapperError::OutputTooLarge { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains(&format!("more than {limit} bytes")),
                    "{mode}: {text}"
                );
                assert!(text.contains(call), "{mode}: {text}");
            }
            other => panic!("{mode}: expected OutputTooLarge, got {:?}", summary(&other)),
        }
    }
    maps_normally(&m);
}
