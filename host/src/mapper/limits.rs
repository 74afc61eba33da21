//! What one mapper call may use, accounted per store (= per call): memory for the component as a
//! whole, and what it may hand the host.
//!
//! # Memory: one budget for every memory and table of the component
//!
//! A component is several core instances, each with its own linear memories and tables (a C or
//! Go guest with the WASI preview1 adapter has two memories; the pooling allocator admits up to
//! 8 per component). A limit checked per memory let a component use 8 × the documented limit.
//! [`StoreLimiter`] instead sums, over the call's store, the bytes of every linear memory and
//! table its instances create (initial sizes count: wasmtime reports them as growth from 0) or
//! grow, and refuses with a trap the growth that would take the **total** over
//! `--mapper-memory-mib`. Table elements count [`TABLE_ELEMENT_BYTES`] each (one pointer in
//! wasmtime). A growth that wasmtime then fails after the limiter allowed it (the pool's
//! per-memory reservation, the OS) is taken back out of the total.
//!
//! # What a call hands the host: hostcall fuel
//!
//! Everything the guest passes to the host — `map-snapshot`'s events and diagnostics, the
//! strings and lists of every import call (`host.log`, WASI writes) — is copied into host values
//! when it is lifted. Without a bound, a mapper within its own memory limit could make the host
//! allocate several times that (each event is a ~200-byte struct on the host however empty its
//! strings, each list element likewise). Each store therefore gets wasmtime's *hostcall fuel*
//! ([`wasmtime::Store::set_hostcall_fuel`]): one transfer may make the host allocate at most
//! [`MapperLimits::output_bytes_for`] bytes (host-side sizes: the list elements'
//! structs plus the strings' bytes), checked element by element **while** lifting, before
//! anything is validated or parsed. A transfer over it fails the call with
//! [`MapperError::OutputTooLarge`](super::MapperError::OutputTooLarge). The number of events
//! and diagnostics a call returns is bounded too ([`MapperLimits::output_entries_for`]),
//! before validation parses a single `data` ([`MapperError::TooManyEntries`](super::MapperError::TooManyEntries)).
//!
//! [`MapperLimits::output_bytes_for`]: super::MapperLimits::output_bytes_for
//! [`MapperLimits::output_entries_for`]: super::MapperLimits::output_entries_for

use wasmtime::ResourceLimiter;

/// Bytes a table element counts for (wasmtime stores one pointer per element).
pub const TABLE_ELEMENT_BYTES: usize = size_of::<usize>();

/// Table elements one table may grow to, whatever the memory budget (as before the total was
/// accounted; the pool's own table size is lower).
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

/// The error a memory-limit trap carries.
#[derive(Debug, thiserror::Error)]
#[error(
    "memory limit of {limit} bytes exceeded: the component's memories and tables together would reach {wanted} bytes"
)]
pub struct MemoryLimitExceeded {
    pub limit: usize,
    pub wanted: usize,
}

/// Sums every linear memory and table of one store and refuses growth past `limit` in total.
#[derive(Debug)]
pub struct StoreLimiter {
    limit: usize,
    used: usize,
    /// The bytes of the last growth allowed, taken back if wasmtime then fails it.
    last_growth: usize,
    denied: Option<usize>,
}

impl StoreLimiter {
    /// A limiter for one store: at most `limit` bytes of memories and tables together.
    pub fn new(limit: usize) -> Self {
        StoreLimiter {
            limit,
            used: 0,
            last_growth: 0,
            denied: None,
        }
    }

    /// Bytes of memories and tables the store holds now.
    pub fn used(&self) -> usize {
        self.used
    }

    /// The total the store tried to reach when a growth was refused, if one was.
    pub fn denied(&self) -> Option<usize> {
        self.denied
    }

    fn grow(&mut self, bytes: usize) -> wasmtime::Result<bool> {
        let wanted = self.used.saturating_add(bytes);
        if wanted > self.limit {
            self.denied = Some(wanted);
            return Err(MemoryLimitExceeded {
                limit: self.limit,
                wanted,
            }
            .into());
        }
        self.used = wanted;
        self.last_growth = bytes;
        Ok(true)
    }

    fn grow_failed(&mut self) {
        self.used = self.used.saturating_sub(self.last_growth);
        self.last_growth = 0;
    }
}

impl ResourceLimiter for StoreLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(desired.saturating_sub(current))
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.grow_failed();
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            return Ok(false);
        }
        self.grow(
            desired
                .saturating_sub(current)
                .saturating_mul(TABLE_ELEMENT_BYTES),
        )
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.grow_failed();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn memories_share_one_budget() {
        let mut l = StoreLimiter::new(256 * MIB);
        // Two memories of a component, each well under the limit on its own.
        assert!(l.memory_growing(0, 64 * 1024, None).expect("first memory"));
        assert!(l.memory_growing(0, 64 * 1024, None).expect("second memory"));
        assert!(
            l.memory_growing(64 * 1024, 200 * MIB, None)
                .expect("grow the first")
        );
        let err = l
            .memory_growing(64 * 1024, 200 * MIB, None)
            .expect_err("the second growth takes the total over 256 MiB");
        let e = err.downcast_ref::<MemoryLimitExceeded>().expect("typed");
        assert_eq!(e.limit, 256 * MIB);
        // 64 KiB + 64 KiB initial, + (200 MiB - 64 KiB) twice.
        assert_eq!(e.wanted, 400 * MIB);
        assert_eq!(l.denied(), Some(400 * MIB));
        assert_eq!(
            l.used(),
            200 * MIB + 64 * 1024,
            "the refused growth is not counted"
        );
    }

    #[test]
    fn tables_count_a_pointer_per_element() {
        let mut l = StoreLimiter::new(MIB);
        assert!(l.table_growing(0, 1000, None).expect("table"));
        assert_eq!(l.used(), 1000 * TABLE_ELEMENT_BYTES);
        assert!(
            l.memory_growing(0, MIB - 1000 * TABLE_ELEMENT_BYTES, None)
                .expect("memory")
        );
        assert!(
            l.table_growing(1000, 1001, None).is_err(),
            "one element too many"
        );
        assert!(
            !l.table_growing(0, MAX_TABLE_ELEMENTS + 1, None)
                .expect("refused, no trap")
        );
    }

    #[test]
    fn a_growth_wasmtime_fails_is_taken_back() {
        let mut l = StoreLimiter::new(10 * MIB);
        assert!(l.memory_growing(0, 4 * MIB, None).expect("allowed"));
        l.memory_grow_failed(wasmtime::format_err!("the pool's slot is smaller"))
            .expect("no error");
        assert_eq!(l.used(), 0);
        assert!(
            l.memory_growing(0, 10 * MIB, None)
                .expect("the whole budget is still there")
        );
    }
}
