//! The sandboxed mapper runtime.
//!
//! One [`wasmtime::Engine`] and one [`Linker`] per process ([`MapperRuntime`]); one
//! [`MapperPre`] (a pre-linked `InstancePre`) per mapper ([`LoadedMapper`]); a **fresh
//! [`Store`] per call**, so no state leaks between snapshots and a broken instance is simply
//! dropped. Every store gets:
//! - a memory limit (default 256 MiB) for the component **as a whole** — every linear memory
//!   and table of its instances summed — enforced by [`StoreLimiter`], which traps on excess;
//! - a cap on what the guest hands the host in one transfer (the call's events and
//!   diagnostics, each import call's arguments): wasmtime's hostcall fuel, checked while the
//!   values are lifted, and a cap on the number of events and diagnostics (`super::limits`);
//! - a time limit (default 2 s, plus 500 µs per snapshot item) over the **whole** call: guest
//!   code is stopped by an epoch deadline trap (a background thread ticks the engine's epoch
//!   every 10 ms), and a wait inside a host import (`wasi:io/poll`, `wasi:clocks` timers) by
//!   running the call as an async future under `tokio::time::timeout` — why, and how a sync
//!   caller drives it: [`super::blocking`];
//! - WASI with no preopened directories, no environment, no arguments, no network (TCP, UDP
//!   and name lookup disabled), stdin closed, stdout/stderr captured and capped into tracing.
//!
//! At load time the component's imports are inspected; anything outside the allowed WASI
//! interfaces and `edgemeter:mapper/host` is refused with its name, instead of failing later.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::MapperError;
use super::bindings::{self, Level, Mapper, MapperInfo, MapperPre, Snapshot};
use super::blocking;
use super::cache::{self, CacheOutcome};
use super::limits::StoreLimiter;
use super::stdio::CappedPipe;

/// How often the engine's epoch advances; the resolution of the time limit.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Limits applied to every mapper call.
#[derive(Debug, Clone)]
pub struct MapperLimits {
    /// Linear memory a call may grow to, in bytes.
    pub memory_bytes: usize,
    /// Wall-clock time a call may run, plus [`MapperLimits::deadline_per_item`] for each item of
    /// the snapshot: a fixed budget would stop every window of a large enough cluster (the
    /// built-in mapper exceeded 2 s on 100k pods under load in `benches/daemon.rs`), and the
    /// window would be retried, larger, for ever.
    pub deadline: Duration,
    /// Extra wall-clock time per snapshot item.
    pub deadline_per_item: Duration,
    /// Guest stdout + stderr kept per call, in bytes.
    pub stdio_bytes: usize,
    /// `log` lines kept per call.
    pub log_lines: usize,
    /// Bytes the host may allocate for one transfer from the guest (the call's result, or the
    /// arguments of one import call), plus [`MapperLimits::output_bytes_per_item`] per snapshot
    /// item: host-side sizes, each list element's struct plus the strings (`mapper::limits`).
    pub output_bytes: usize,
    /// Extra bytes per snapshot item for [`MapperLimits::output_bytes`].
    pub output_bytes_per_item: usize,
    /// Events one `map-snapshot` may return, and separately diagnostics, plus
    /// [`MapperLimits::output_entries_per_item`] per snapshot item.
    pub output_entries: usize,
    /// Extra events (and diagnostics) per snapshot item for [`MapperLimits::output_entries`].
    pub output_entries_per_item: usize,
}

impl MapperLimits {
    /// The time limit of a call given `items` snapshot items.
    pub fn deadline_for(&self, items: usize) -> Duration {
        let per_item = self
            .deadline_per_item
            .saturating_mul(u32::try_from(items).unwrap_or(u32::MAX));
        self.deadline.saturating_add(per_item)
    }

    /// The bytes one transfer from the guest may make the host allocate, for a call with
    /// `items` snapshot items.
    pub fn output_bytes_for(&self, items: usize) -> usize {
        self.output_bytes
            .saturating_add(self.output_bytes_per_item.saturating_mul(items))
    }

    /// The events (and, separately, the diagnostics) a `map-snapshot` of `items` items may
    /// return.
    pub fn output_entries_for(&self, items: usize) -> usize {
        self.output_entries
            .saturating_add(self.output_entries_per_item.saturating_mul(items))
    }
}

impl Default for MapperLimits {
    fn default() -> Self {
        MapperLimits {
            memory_bytes: 256 * 1024 * 1024,
            deadline: Duration::from_secs(2),
            // The built-in mapper needs ~7 µs per item; mappers in interpreted languages far more.
            deadline_per_item: Duration::from_micros(500),
            stdio_bytes: 64 * 1024,
            log_lines: 200,
            // The built-in mapper returns ~1 KiB per item as host values (one event of a
            // ~200-byte struct and its strings); 16 KiB per item and 16 entries per item leave
            // room for mappers that emit several event types per item.
            output_bytes: 16 * 1024 * 1024,
            output_bytes_per_item: 16 * 1024,
            output_entries: 1000,
            output_entries_per_item: 16,
        }
    }
}

/// Imports a mapper may have. WASI interfaces are linked but the context grants nothing
/// (no files, env, or network); everything else is refused at load time.
const ALLOWED_IMPORT_PREFIXES: [&str; 7] = [
    "wasi:cli/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:filesystem/",
    "wasi:sockets/",
    "edgemeter:mapper/",
];

/// Counters of mapper outcomes (exported as Prometheus metrics by the daemon).
#[derive(Debug, Default)]
pub struct MapperStats {
    pub calls: AtomicU64,
    pub failures: AtomicU64,
    pub timeouts: AtomicU64,
    pub memory_exceeded: AtomicU64,
    pub traps: AtomicU64,
    pub events: AtomicU64,
}

/// Per-call store state.
struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: StoreLimiter,
    mapper: Arc<str>,
    log_budget: usize,
    logs_dropped: usize,
    /// The guest's last log lines, for the error of a trap.
    recent_logs: std::collections::VecDeque<String>,
}

/// How many of the guest's last lines (and how many bytes of each) a trap's error carries.
const TRAP_LINES: usize = 5;
const TRAP_LINE_BYTES: usize = 300;

/// `line` cut to [`TRAP_LINE_BYTES`] at a character boundary.
fn trap_line(line: &str) -> String {
    let line = line.trim();
    if line.len() <= TRAP_LINE_BYTES {
        return line.to_owned();
    }
    let mut cut = TRAP_LINE_BYTES;
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &line[..cut])
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::edgemeter::mapper::types::Host for CallState {}

impl bindings::edgemeter::mapper::host::Host for CallState {
    fn log(&mut self, level: Level, message: String) {
        if self.log_budget == 0 {
            self.logs_dropped += 1;
            return;
        }
        self.log_budget -= 1;
        let mut message = message;
        if message.len() > 4096 {
            let mut cut = 4096;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let mapper = &*self.mapper;
        if self.recent_logs.len() == TRAP_LINES {
            self.recent_logs.pop_front();
        }
        self.recent_logs
            .push_back(trap_line(&format!("[log] {message}")));
        match level {
            Level::Debug => tracing::debug!(mapper, "{message}"),
            Level::Info => tracing::info!(mapper, "{message}"),
            Level::Warn => tracing::warn!(mapper, "{message}"),
            Level::Error => tracing::error!(mapper, "{message}"),
        }
    }
}

/// Engine, linker and epoch ticker shared by every mapper of the process.
#[derive(Clone)]
pub struct MapperRuntime {
    engine: Engine,
    linker: Arc<Linker<CallState>>,
    limits: MapperLimits,
    cache_dir: Option<PathBuf>,
    stats: Arc<MapperStats>,
}

impl std::fmt::Debug for MapperRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapperRuntime")
            .field("limits", &self.limits)
            .field("cache_dir", &self.cache_dir)
            .finish_non_exhaustive()
    }
}

/// Linear memory kept resident (zeroed in place) between calls; beyond it pages are returned to
/// the OS. A 10k-pod window grows the guest heap to tens of MiB: keeping all of it resident
/// made it part of the daemon's steady RSS (`benches/daemon.rs`), for a few ms of page faults
/// saved per window (`benches/mapper.rs`). Small snapshots stay within this and fault nothing.
const LINEAR_MEMORY_KEEP_RESIDENT: usize = 1024 * 1024;

impl MapperRuntime {
    /// Creates the engine (Cranelift, component model, epoch interruption) and linker.
    pub fn new(limits: MapperLimits, cache_dir: Option<PathBuf>) -> Result<Self, MapperError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        // Pooling: each call's memory comes from a pre-reserved slot whose first pages stay
        // resident between calls, so a fresh store does not page-fault a small heap in again.
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        // One mapper call runs at a time per collector; the pool allows some headroom.
        pool.total_component_instances(16)
            .total_core_instances(64)
            .total_memories(32)
            .total_tables(64)
            .max_memories_per_component(8)
            .max_memory_size(limits.memory_bytes)
            .linear_memory_keep_resident(LINEAR_MEMORY_KEEP_RESIDENT)
            .table_keep_resident(64 * 1024);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(MapperError::engine)?;

        let mut linker: Linker<CallState> = Linker::new(&engine);
        // Async: a guest waiting on the host is stopped at its deadline (`super::blocking`).
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(MapperError::engine)?;
        Mapper::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(MapperError::engine)?;

        // The ticker holds only a weak handle: it ends once the last engine handle is gone.
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("edgemeter-epoch".to_owned())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| MapperError::Engine(format!("failed to start the epoch thread: {e}")))?;

        Ok(MapperRuntime {
            engine,
            linker: Arc::new(linker),
            limits,
            cache_dir,
            stats: Arc::new(MapperStats::default()),
        })
    }

    pub fn limits(&self) -> &MapperLimits {
        &self.limits
    }

    pub fn stats(&self) -> &Arc<MapperStats> {
        &self.stats
    }

    /// Compiles (or loads from the cache) a mapper component and pre-links it.
    pub fn load(&self, name: &str, wasm: &[u8]) -> Result<LoadedMapper, MapperError> {
        let started = Instant::now();
        let (component, cache) =
            cache::load_or_compile(&self.engine, wasm, self.cache_dir.as_deref()).map_err(|e| {
                MapperError::Compile {
                    mapper: name.to_owned(),
                    reason: format!("{e:#}"),
                }
            })?;
        let ty = component.component_type();
        let mut imports = Vec::new();
        for (import, _) in ty.imports(&self.engine) {
            if !ALLOWED_IMPORT_PREFIXES
                .iter()
                .any(|p| import.starts_with(p))
            {
                return Err(MapperError::ForbiddenImport {
                    mapper: name.to_owned(),
                    import: import.to_owned(),
                });
            }
            if let Some(rest) = import.strip_prefix("edgemeter:mapper/")
                && rest.split_once('@').map(|(_, v)| v) != Some(super::CONTRACT_VERSION)
            {
                return Err(MapperError::Contract {
                    mapper: name.to_owned(),
                    import: import.to_owned(),
                    expected: super::CONTRACT_VERSION,
                });
            }
            imports.push(import.to_owned());
        }
        // A mapper that imports nothing of ours (no `host`, no `types`) still names the
        // contract in its export: check it too, so that a structural match of another
        // version's types is not accepted silently.
        for (export, _) in ty.exports(&self.engine) {
            if let Some(rest) = export.strip_prefix("edgemeter:mapper/")
                && rest.split_once('@').map(|(_, v)| v) != Some(super::CONTRACT_VERSION)
            {
                return Err(MapperError::Contract {
                    mapper: name.to_owned(),
                    import: export.to_owned(),
                    expected: super::CONTRACT_VERSION,
                });
            }
        }
        let instance_pre =
            self.linker
                .instantiate_pre(&component)
                .map_err(|e| MapperError::Link {
                    mapper: name.to_owned(),
                    reason: format!("{e:#}"),
                })?;
        let pre = MapperPre::new(instance_pre).map_err(|e| MapperError::Link {
            mapper: name.to_owned(),
            reason: format!("{e:#}"),
        })?;
        tracing::debug!(
            mapper = name,
            ?cache,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "mapper loaded"
        );
        let mut mapper = LoadedMapper {
            name: Arc::from(name),
            pre,
            runtime: self.clone(),
            cache,
            imports: Arc::new(imports),
            info: Arc::new(MapperInfo {
                name: name.to_owned(),
                version: String::new(),
                description: String::new(),
                event_types: Vec::new(),
                item_kinds: Vec::new(),
                wants_raw_objects: true,
                items_independent: false,
            }),
        };
        // Asked once: the answer decides whether snapshots carry raw objects.
        mapper.info = Arc::new(mapper.describe()?);
        Ok(mapper)
    }

    /// A fresh store for one call with `items` snapshot items (0 for `describe` and
    /// `validate-config`), with every limit applied.
    fn new_store(
        &self,
        mapper: &Arc<str>,
        items: usize,
    ) -> (Store<CallState>, CappedPipe, CappedPipe) {
        let deadline = self.limits.deadline_for(items);
        let stdout = CappedPipe::new(self.limits.stdio_bytes);
        let stderr = CappedPipe::new(self.limits.stdio_bytes);
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = CallState {
            wasi,
            table: ResourceTable::new(),
            limiter: StoreLimiter::new(self.limits.memory_bytes),
            mapper: Arc::clone(mapper),
            log_budget: self.limits.log_lines,
            logs_dropped: 0,
            recent_logs: std::collections::VecDeque::new(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_hostcall_fuel(self.limits.output_bytes_for(items));
        // +1: the current tick may be almost over, and a mapper must get its whole deadline.
        let ticks = deadline.as_millis().div_ceil(EPOCH_TICK.as_millis()) + 1;
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
        store.epoch_deadline_trap();
        (store, stdout, stderr)
    }
}

/// More events or diagnostics than a call may return (becomes [`MapperError::TooManyEntries`]).
#[derive(Debug, thiserror::Error)]
#[error("{count} {what} over the limit of {limit}")]
struct EntriesOverLimit {
    what: &'static str,
    count: usize,
    limit: usize,
}

/// Whether `e` is wasmtime refusing to lift more than the store's hostcall fuel (the error type
/// is private to wasmtime: its message is matched, and `mapper_sandbox` tests that it still is).
fn is_hostcall_fuel_exhausted(e: &wasmtime::Error) -> bool {
    e.chain().any(|c| {
        c.to_string()
            .contains("fuel allocated for hostcalls has been exhausted")
    })
}

/// A compiled, pre-linked mapper. Cheap to clone; calls may run on any thread.
#[derive(Clone)]
pub struct LoadedMapper {
    name: Arc<str>,
    pre: MapperPre<CallState>,
    runtime: MapperRuntime,
    cache: CacheOutcome,
    /// The interfaces the component imports (all allowed; checked at load).
    imports: Arc<Vec<String>>,
    info: Arc<MapperInfo>,
}

impl std::fmt::Debug for LoadedMapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedMapper")
            .field("name", &self.name)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl LoadedMapper {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the mapper said about itself at load time.
    pub fn info(&self) -> &MapperInfo {
        &self.info
    }

    /// Whether snapshots for this mapper must carry raw objects.
    pub fn wants_raw_objects(&self) -> bool {
        self.info.wants_raw_objects
    }

    /// Whether the mapper lets the host map a window in slices of items
    /// (`mapper-info.items-independent`).
    pub fn items_independent(&self) -> bool {
        self.info.items_independent
    }

    /// Outcome counters shared with the runtime this mapper was loaded by.
    pub fn stats(&self) -> &Arc<MapperStats> {
        self.runtime.stats()
    }

    /// The interfaces the component imports, e.g. `edgemeter:mapper/host@0.5.0`.
    pub fn imports(&self) -> &[String] {
        &self.imports
    }

    /// Whether loading hit the compiled-component cache.
    pub fn cache_outcome(&self) -> CacheOutcome {
        self.cache
    }

    /// Runs `f` against a fresh instance in a fresh store, with all limits applied, and turns
    /// traps into typed errors. The store is dropped afterwards whatever happened.
    /// One call in a fresh store; `items` (snapshot items, 0 for other calls) sets its deadline,
    /// which bounds the whole call: instantiation, guest code and waits in host imports.
    fn call<R: Send>(
        &self,
        what: &'static str,
        items: usize,
        f: impl AsyncFnOnce(&Mapper, &mut Store<CallState>) -> wasmtime::Result<R> + Send,
    ) -> Result<R, MapperError> {
        let stats = &self.runtime.stats;
        stats.calls.fetch_add(1, Ordering::Relaxed);
        let deadline = self.runtime.limits.deadline_for(items);
        let outcome = blocking::run(|rt| {
            let (mut store, stdout, stderr) = self.runtime.new_store(&self.name, items);
            let started = Instant::now();
            let work = async {
                let instance = self.pre.instantiate_async(&mut store).await?;
                f(&instance, &mut store).await
            };
            // The timer must be made inside the runtime (it registers with its time driver).
            let result = rt.block_on(async { tokio::time::timeout(deadline, work).await });
            let elapsed = started.elapsed();
            let output = self.drain_stdio(&stdout, &stderr, &store);
            match result {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(e)) => Err(self.classify(e, &store, elapsed, items, what, output)),
                // The guest was waiting on the host (a poll, a timer) at the deadline.
                Err(_) => Err(MapperError::Timeout {
                    mapper: self.name.to_string(),
                    deadline,
                    elapsed,
                }),
            }
        })
        .unwrap_or_else(|e| {
            Err(MapperError::Engine(format!(
                "failed to start the mapper call's runtime: {e}"
            )))
        });
        outcome.inspect_err(|err| {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            match err {
                MapperError::Timeout { .. } => stats.timeouts.fetch_add(1, Ordering::Relaxed),
                // Memory limits, of the guest and of what it hands the host.
                MapperError::MemoryExceeded { .. }
                | MapperError::OutputTooLarge { .. }
                | MapperError::TooManyEntries { .. } => {
                    stats.memory_exceeded.fetch_add(1, Ordering::Relaxed)
                }
                _ => stats.traps.fetch_add(1, Ordering::Relaxed),
            };
        })
    }

    fn classify(
        &self,
        e: wasmtime::Error,
        store: &Store<CallState>,
        elapsed: Duration,
        items: usize,
        what: &'static str,
        output: Vec<String>,
    ) -> MapperError {
        let mapper = self.name.to_string();
        let limits = &self.runtime.limits;
        if let Some(wanted) = store.data().limiter.denied() {
            return MapperError::MemoryExceeded {
                mapper,
                limit: limits.memory_bytes,
                wanted,
            };
        }
        if matches!(
            e.downcast_ref::<wasmtime::Trap>(),
            Some(wasmtime::Trap::Interrupt)
        ) {
            return MapperError::Timeout {
                mapper,
                deadline: limits.deadline_for(items),
                elapsed,
            };
        }
        if let Some(over) = e.downcast_ref::<EntriesOverLimit>() {
            return MapperError::TooManyEntries {
                mapper,
                what: over.what,
                count: over.count,
                limit: over.limit,
                items,
            };
        }
        if is_hostcall_fuel_exhausted(&e) {
            return MapperError::OutputTooLarge {
                mapper,
                call: what,
                limit: limits.output_bytes_for(items),
                items,
            };
        }
        MapperError::Trap {
            mapper,
            call: what,
            reason: format!("{e:?}"),
            output,
        }
    }

    /// Logs what the guest wrote and returns its last lines (stderr, then stdout, then its
    /// log), at most [`TRAP_LINES`], for the error of a trap.
    fn drain_stdio(
        &self,
        stdout: &CappedPipe,
        stderr: &CappedPipe,
        store: &Store<CallState>,
    ) -> Vec<String> {
        let mapper = &*self.name;
        let mut last = Vec::new();
        for (stream, pipe) in [("stderr", stderr), ("stdout", stdout)] {
            let (text, dropped) = pipe.take();
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            for line in &lines {
                tracing::info!(mapper, stream, "{line}");
            }
            let room = TRAP_LINES.saturating_sub(last.len());
            last.extend(
                lines[lines.len().saturating_sub(room)..]
                    .iter()
                    .map(|l| trap_line(&format!("[{stream}] {l}"))),
            );
            if dropped > 0 {
                tracing::warn!(
                    mapper,
                    stream,
                    dropped_bytes = dropped,
                    "mapper output over the cap was dropped"
                );
            }
        }
        let room = TRAP_LINES.saturating_sub(last.len());
        let logs = &store.data().recent_logs;
        last.extend(logs.iter().skip(logs.len().saturating_sub(room)).cloned());
        let dropped = store.data().logs_dropped;
        if dropped > 0 {
            tracing::warn!(
                mapper,
                dropped_lines = dropped,
                "mapper log lines over the cap were dropped"
            );
        }
        last
    }

    /// The mapper's self-description.
    pub fn describe(&self) -> Result<MapperInfo, MapperError> {
        self.call("describe", 0, async |m, s| m.call_describe(s).await)
    }

    /// Asks the mapper whether `config` (JSON) is usable.
    pub fn validate_config(&self, config: &str) -> Result<(), MapperError> {
        self.call("validate-config", 0, async |m, s| {
            m.call_validate_config(s, config).await
        })?
        .map_err(|reason| MapperError::InvalidConfig {
            mapper: self.name.to_string(),
            reason,
        })
    }

    /// Maps one snapshot (raw mapper output; see `mapper::validate` for the checks).
    /// The events and diagnostics were lifted within the hostcall fuel and are each at most
    /// [`MapperLimits::output_entries_for`] the snapshot's items.
    pub fn map_snapshot(&self, snapshot: &Snapshot) -> Result<bindings::Mapped, MapperError> {
        let items = snapshot.items.len();
        let limit = self.runtime.limits.output_entries_for(items);
        let mapped = self
            .call("map-snapshot", items, async |m, s| {
                let out = m.call_map_snapshot(s, snapshot).await?;
                if let Ok(mapped) = &out {
                    for (what, count) in [
                        ("events", mapped.events.len()),
                        ("diagnostics", mapped.diagnostics.len()),
                    ] {
                        if count > limit {
                            return Err(EntriesOverLimit { what, count, limit }.into());
                        }
                    }
                }
                Ok(out)
            })?
            .map_err(|e| MapperError::Rejected {
                mapper: self.name.to_string(),
                error: e,
            })?;
        self.runtime
            .stats
            .events
            .fetch_add(mapped.events.len() as u64, Ordering::Relaxed);
        Ok(mapped)
    }
}

impl LoadedMapper {
    /// Maps a snapshot and validates/completes every event (`mapper::validate::finalize`: one
    /// invalid event fails the call): what `edgemeter map` prints. Diagnostics go to the log.
    pub fn map_events(
        &self,
        snapshot: &Snapshot,
        max_event_bytes: usize,
    ) -> Result<Vec<crate::event::CloudEvent>, MapperError> {
        let mapped = self.map_logged(snapshot)?;
        super::validate::finalize(
            self.name(),
            &snapshot.envelope,
            mapped.events,
            max_event_bytes,
        )
    }

    /// [`LoadedMapper::map_events`], but an invalid event of an item is rejected on its own
    /// (`mapper::validate::finalize_contained`): what the daemon commits.
    pub fn map_events_contained(
        &self,
        snapshot: &Snapshot,
        max_event_bytes: usize,
    ) -> Result<super::validate::Finalized, MapperError> {
        let mapped = self.map_logged(snapshot)?;
        super::validate::finalize_contained(
            self.name(),
            &snapshot.envelope,
            mapped.events,
            max_event_bytes,
        )
    }

    /// Maps a snapshot (raw events) and logs its diagnostics.
    fn map_logged(&self, snapshot: &Snapshot) -> Result<bindings::Mapped, MapperError> {
        let mapped = self.map_snapshot(snapshot)?;
        let mapper = self.name();
        for d in &mapped.diagnostics {
            let item = d.item_uid.as_deref().unwrap_or("-");
            let message = &d.message;
            match d.level {
                Level::Debug => tracing::debug!(mapper, item, "{message}"),
                Level::Info => tracing::info!(mapper, item, "{message}"),
                Level::Warn => tracing::warn!(mapper, item, "{message}"),
                Level::Error => tracing::error!(mapper, item, "{message}"),
            }
        }
        Ok(mapped)
    }
}
