//! A test-only mapper whose `describe` (called by the host when it loads a mapper) sleeps for
//! `u64::MAX` seconds with `std::thread::sleep`: a wait in the host's `wasi:clocks` /
//! `wasi:io/poll` imports, which the call's deadline must end so that loading fails instead
//! of hanging the collector. The other exports are never reached.

use edgemeter_guest::{Guest, MapError, Mapped, MapperInfo, Snapshot};

/// The component's exports.
#[derive(Debug)]
pub struct SleepyDescribe;

impl Guest for SleepyDescribe {
    fn describe() -> MapperInfo {
        std::thread::sleep(std::time::Duration::from_secs(u64::MAX));
        MapperInfo {
            name: "sleepy-describe".to_owned(),
            version: "0.0.0".to_owned(),
            description: "describe sleeps forever (tests only)".to_owned(),
            event_types: vec![],
            item_kinds: vec![],
            wants_raw_objects: false,
            items_independent: false,
        }
    }

    fn validate_config(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn map_snapshot(_snapshot: Snapshot) -> Result<Mapped, MapError> {
        Err(MapError::Internal("never reached".to_owned()))
    }
}

#[cfg(target_arch = "wasm32")]
edgemeter_guest::export_mapper!(SleepyDescribe);
