//! A test-only mapper that misbehaves on request, to prove the sandbox holds.
//!
//! The behaviour is chosen by the mapper config string (no JSON parsing, to stay tiny):
//! - `"loop"`: spins forever (the epoch deadline must stop it);
//! - `"alloc"`: tries to allocate and touch 1 GiB (the memory limit must refuse it);
//! - `"trap"`: executes `unreachable` via a panic (reported as a trap);
//! - `"flood"`: writes 1 MiB to stdout and 1,000 log lines (capped by the host), then maps;
//! - `"invalid"`: returns an event whose data is not a JSON object;
//! - `"env"`: reports what the sandbox exposes (env vars, preopened files) in an event;
//! - `"connect:ADDR"`: tries the network — a TCP connection to `ADDR`, a UDP socket, a name
//!   lookup of `localhost` — and reports in an event what worked (`tcp_connected`,
//!   `udp_bound`, `lookup_ok`, each `false` when denied, with the error kinds);
//! - `"fail-item:NAME"`: fails the call whose snapshot holds an item named NAME, maps others;
//! - `"invalid-item:NAME"`: maps every item, but the event of the item named NAME has data that
//!   is not a JSON object (one poison item among good ones);
//! - `"fixed-id"`: gives every event the same id (a duplicate once two items are mapped);
//! - `"sleep-forever"` (or a JSON object containing it, as the daemon passes configs): sleeps
//!   for `u64::MAX` seconds with `std::thread::sleep` (`wasi:clocks/monotonic-clock`
//!   `subscribe-duration` + `wasi:io/poll`, a wait on the host that the deadline must end);
//! - a config containing `"validate-config-sleeps"`: `validate-config` sleeps forever;
//! - `"many-events"` / `"many-diagnostics"`: returns 5,000 tiny events / diagnostics (more
//!   than a call of a few items may return);
//! - `"huge-output"`: returns two events whose `data` is 10 MiB each (more bytes than a call of
//!   a few items may hand the host);
//! - `"huge-log"`: sends one 20 MiB line to `host.log` (an import call's arguments count too);
//! - anything else: one well-formed event per item (`type` `hostile-ok`).

use edgemeter_guest::{
    CloudEvent, Diagnostic, Guest, Level, MapError, Mapped, MapperInfo, Snapshot,
};

/// The component's exports.
#[derive(Debug)]
pub struct Hostile;

fn spin() -> u64 {
    let mut x: u64 = 1;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        if x == 0 {
            return x;
        }
    }
}

/// Blocks in the host's clock/poll imports, not in guest code.
fn sleep_forever() {
    std::thread::sleep(std::time::Duration::from_secs(u64::MAX));
}

fn ok_events(snapshot: &Snapshot, event_type: &str, data: &str) -> Vec<CloudEvent> {
    snapshot
        .items
        .iter()
        .map(|item| {
            let mut e = CloudEvent::new("hostile", event_type, &item.name);
            e.data = data.to_owned();
            e.item_uid = Some(item.uid.clone());
            e
        })
        .collect()
}

impl Guest for Hostile {
    fn describe() -> MapperInfo {
        MapperInfo {
            name: "hostile".to_owned(),
            version: "0.0.0".to_owned(),
            description: "misbehaves on request (tests only)".to_owned(),
            event_types: vec!["hostile-ok".to_owned()],
            item_kinds: vec![],
            wants_raw_objects: true,
            // Declared so the host maps in slices; `fixed-id` then breaks the promise.
            items_independent: true,
        }
    }

    fn validate_config(config: String) -> Result<(), String> {
        if config.contains("validate-config-sleeps") {
            sleep_forever();
            return Err("woke up".to_owned());
        }
        Ok(())
    }

    fn map_snapshot(snapshot: Snapshot) -> Result<Mapped, MapError> {
        let mode = snapshot.envelope.config.trim().trim_matches('"').to_owned();
        let events = match mode.as_str() {
            m if m.contains("sleep-forever") => {
                sleep_forever();
                return Err(MapError::Internal("woke up".to_owned()));
            }
            "many-events" => (0..5000)
                .map(|i| {
                    let mut e = CloudEvent::new("h", "t", "s");
                    e.item_uid = Some(format!("u{i}"));
                    e
                })
                .collect(),
            "many-diagnostics" => {
                let diagnostics = (0..5000)
                    .map(|_| Diagnostic {
                        level: Level::Debug,
                        item_uid: None,
                        message: String::new(),
                    })
                    .collect();
                return Ok(Mapped {
                    events: vec![],
                    diagnostics,
                });
            }
            "huge-output" => {
                let blob = format!(r#"{{"blob": "{}"}}"#, "x".repeat(10 << 20));
                ok_events(&snapshot, "hostile-ok", &blob)
                    .into_iter()
                    .take(2)
                    .collect()
            }
            "huge-log" => {
                edgemeter_guest::log(Level::Info, &"x".repeat(20 << 20));
                ok_events(&snapshot, "hostile-ok", "{}")
            }
            "loop" => {
                let n = spin();
                return Err(MapError::Internal(format!("loop ended: {n}")));
            }
            "alloc" => {
                let mut v: Vec<u8> = Vec::new();
                v.resize(1 << 30, 1);
                let sum: u64 = v.iter().step_by(4096).map(|b| u64::from(*b)).sum();
                return Err(MapError::Internal(format!("allocated 1 GiB: {sum}")));
            }
            "trap" => panic!("hostile mapper traps on purpose"),
            "flood" => {
                let line = "x".repeat(1023);
                for _ in 0..1024 {
                    println!("{line}");
                }
                for i in 0..1000 {
                    edgemeter_guest::log(Level::Info, &format!("log line {i}"));
                }
                ok_events(&snapshot, "hostile-ok", "{}")
            }
            "invalid" => ok_events(&snapshot, "hostile-ok", "[1, 2, 3]"),
            "fixed-id" => {
                let mut events = ok_events(&snapshot, "hostile-ok", "{}");
                for e in &mut events {
                    e.id = Some("always-the-same".to_owned());
                }
                events
            }
            m if m.starts_with("fail-item:") => {
                let name = &m["fail-item:".len()..];
                if snapshot.items.iter().any(|i| i.name == name) {
                    return Err(MapError::InvalidInput(format!("refusing item {name}")));
                }
                ok_events(&snapshot, "hostile-ok", "{}")
            }
            m if m.starts_with("invalid-item:") => {
                let name = &m["invalid-item:".len()..];
                let mut events = ok_events(&snapshot, "hostile-ok", r#"{"ok": true}"#);
                for (e, item) in events.iter_mut().zip(&snapshot.items) {
                    if item.name == name {
                        e.data = "[1, 2, 3]".to_owned();
                    }
                }
                events
            }
            "env" => {
                let vars = std::env::vars().count();
                let root = std::fs::read_dir("/").is_ok();
                let data = format!(r#"{{"env_vars": {vars}, "can_read_root": {root}}}"#);
                ok_events(&snapshot, "hostile-ok", &data)
            }
            m if m.starts_with("connect:") => {
                let addr = &m["connect:".len()..];
                let kind = |e: std::io::Error| format!("{:?}", e.kind());
                let tcp = std::net::TcpStream::connect(addr).map(|_| ()).map_err(kind);
                let udp = std::net::UdpSocket::bind("0.0.0.0:0")
                    .map(|_| ())
                    .map_err(kind);
                let lookup = std::net::ToSocketAddrs::to_socket_addrs(&("localhost", 80))
                    .map(|_| ())
                    .map_err(kind);
                let data = format!(
                    r#"{{"tcp_connected": {}, "tcp_error": "{}", "udp_bound": {}, "udp_error": "{}", "lookup_ok": {}, "lookup_error": "{}"}}"#,
                    tcp.is_ok(),
                    tcp.err().unwrap_or_default(),
                    udp.is_ok(),
                    udp.err().unwrap_or_default(),
                    lookup.is_ok(),
                    lookup.err().unwrap_or_default(),
                );
                ok_events(&snapshot, "hostile-ok", &data)
            }
            _ => ok_events(&snapshot, "hostile-ok", r#"{"ok": true}"#),
        };
        Ok(Mapped {
            events,
            diagnostics: vec![],
        })
    }
}

#[cfg(target_arch = "wasm32")]
edgemeter_guest::export_mapper!(Hostile);
