//! Helpers shared by the host's integration tests.

/// Resident set size of this process, KiB (0 if unreadable).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The watch stream recorded from a real kind v1.36 cluster (8 `kube-system` pods, with
/// `managedFields`; see `tests/fixtures/README.md`).
const RECORDED: &str =
    include_str!("../../../tests/fixtures/kubernetes/watch-streaming-list.kind-v1.36.ndjson");

/// The 8 real pods of the recorded stream, as the API server sent them.
pub fn recorded_pods() -> Vec<serde_json::Value> {
    RECORDED
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["type"] == "ADDED")
        .map(|e| e["object"].clone())
        .collect()
}
