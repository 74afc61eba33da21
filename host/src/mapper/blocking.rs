//! Running a mapper call — an async wasmtime future — to completion from synchronous code.
//!
//! # Why mapper calls are async
//!
//! The epoch deadline only interrupts *guest code*: it is checked in compiled wasm, never
//! while the guest waits in a host import. With the synchronous WASI linker,
//! `wasi:io/poll.poll` and `pollable.block` block the calling thread on the host until the
//! pollable is ready, so a guest that calls `std::thread::sleep(u64::MAX s)`
//! (`wasi:clocks/monotonic-clock.subscribe-duration` + a poll) held the daemon's tick — and
//! with it shutdown — for ever, while `/healthz` kept answering 200.
//!
//! Two fixes were possible: replace the clock and poll imports with host versions that refuse
//! to wait past the call's deadline, or run calls on wasmtime's async support and put the
//! whole call under a timer. The second is used:
//! - it bounds *every* wait, not a list of imports we remember to override: clocks, polls,
//!   stream readiness, and whatever a later WASI version adds to the allowed interfaces;
//! - it needs no second implementation of WASI's pollable/resource semantics to keep in step
//!   with `wasmtime-wasi` (shadowing single functions of a linked WASI instance is what broke
//!   linking in 48 with `define_unknown_imports_as_traps`, see the toolchain notes);
//! - a guest that sleeps a little, legitimately, still works.
//!
//! So every call (`describe`, `validate-config`, `map-snapshot`) runs on the async linker
//! (`wasmtime_wasi::p2::add_to_linker_async`) with `instantiate_async` and the bindings'
//! async exports, inside `tokio::time::timeout(deadline, …)`: a wait on the host ends at the
//! deadline, when the future is dropped (wasmtime unwinds the suspended guest). Guest code that
//! computes is still stopped by the epoch deadline trap, which needs no yield.
//!
//! # Where the future runs
//!
//! Callers are synchronous and live in different places: `edgemeter map` on a plain thread,
//! the daemon inside `tokio::task::block_in_place` on its multi-thread runtime, mapper loading
//! from async code, tests from current-thread runtimes. [`run`] therefore drives each call on a
//! current-thread tokio runtime of its own (timers only; ~µs to build), on the calling thread
//! when it is outside any tokio runtime, else on a short-lived scoped thread (starting a
//! runtime inside another one panics, and blocking an async worker must not depend on
//! `block_in_place` having been used).

use std::time::Duration;

/// Runs `f` with a fresh current-thread tokio runtime (time enabled), on this thread when it is
/// not inside a tokio runtime, else on a scoped thread of its own; returns what `f` returns.
/// A panic in `f` is resumed here. `Err` only when the runtime or the thread cannot be started.
pub(super) fn run<T: Send>(
    f: impl FnOnce(&tokio::runtime::Runtime) -> T + Send,
) -> std::io::Result<T> {
    let here = move || -> std::io::Result<T> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        let out = f(&rt);
        // Nothing else was spawned on it; do not wait for anything.
        rt.shutdown_timeout(Duration::ZERO);
        Ok(out)
    };
    if tokio::runtime::Handle::try_current().is_err() {
        return here();
    }
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("edgemeter-mapper".to_owned())
            .spawn_scoped(scope, here)?;
        match thread.join() {
            Ok(out) => out,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeps_under_a_timeout(rt: &tokio::runtime::Runtime) -> bool {
        rt.block_on(async {
            tokio::time::timeout(
                Duration::from_millis(20),
                tokio::time::sleep(Duration::from_secs(3600)),
            )
            .await
            .is_err()
        })
    }

    #[test]
    fn runs_outside_any_runtime() {
        assert!(run(sleeps_under_a_timeout).expect("runs"));
    }

    #[test]
    fn runs_inside_a_current_thread_runtime() {
        let outer = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let timed_out = outer.block_on(async { run(sleeps_under_a_timeout).expect("runs") });
        assert!(timed_out);
    }

    #[test]
    fn runs_inside_block_in_place_and_directly_on_a_multi_thread_worker() {
        let outer = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        outer.block_on(async {
            let in_place =
                tokio::task::block_in_place(|| run(sleeps_under_a_timeout).expect("runs"));
            assert!(in_place);
            let direct = tokio::spawn(async { run(sleeps_under_a_timeout).expect("runs") })
                .await
                .expect("joined");
            assert!(direct);
        });
    }

    #[test]
    fn a_panic_is_resumed_in_the_caller() {
        let outer = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let caught = outer.block_on(async { std::panic::catch_unwind(|| run(|_| panic!("boom"))) });
        assert!(caught.is_err());
    }
}
