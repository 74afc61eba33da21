//! Billing the SQL source window by window the way the daemon's biller does (items, ledger
//! writes stored, committed, forgotten), with a crash (a window built and not committed), for
//! the PostgreSQL and ClickHouse tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bills windows of the source from `watermark` until `stop` says so, committing each
/// window's state to `stored` like the biller; returns the new watermark. `crash_after`
/// windows, it stops without committing the last window built (a SIGKILL mid-window).
pub async fn bill_until(
    config: &edgemeter::sources::sql::config::SqlConfig,
    watermark: i64,
    stored: &mut BTreeMap<Vec<u8>, Vec<u8>>,
    billed: &mut BTreeMap<String, String>,
    conflicts: &mut Vec<String>,
    crash_after: Option<usize>,
    done: &dyn Fn(&BTreeMap<String, String>) -> bool,
) -> i64 {
    use edgemeter::sources::sql::source::{PollPlan, SqlSource};
    use edgemeter::sources::{MeteredSource, Source};
    let plan = PollPlan {
        interval: 1,
        retry: Duration::from_millis(200),
    };
    let mut source = SqlSource::start(
        config,
        plan,
        watermark,
        Arc::new(|| jiff::Timestamp::now().as_second()),
        stored.clone(),
    );
    let mut watermark = watermark;
    let mut windows = 0;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        assert!(
            Instant::now() < deadline,
            "billing did not finish in 180 s: {} rows billed",
            billed.len()
        );
        // Slower than the rounds: several rounds (each billed in its first window) are
        // applied before their windows are billed, so a commit must store the cursor of its
        // own window's round, not the newest.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let _ = tokio::time::timeout(Duration::from_millis(500), source.pump()).await;
        source.catch_up();
        while source.ready_until().is_some_and(|r| r > watermark) {
            let w = edgemeter::window::Window::new(watermark, watermark + 1).expect("window");
            let items = source.items(&w);
            let writes = source.ledger_writes();
            // Crash in a window holding rows (their cursor is then not committed).
            if crash_after.is_some_and(|n| windows >= n) && !items.is_empty() {
                source.stop();
                return watermark;
            }
            for item in items {
                assert_eq!(item.name, "calls");
                match billed.get(&item.uid) {
                    Some(body) if *body != item.object => conflicts.push(item.uid.clone()),
                    _ => {
                        billed.insert(item.uid.clone(), item.object.clone());
                    }
                }
            }
            for k in writes.removes {
                stored.remove(&k);
            }
            stored.extend(writes.puts);
            source.ledger_committed();
            watermark = w.end();
            source.forget_billed(watermark);
            windows += 1;
        }
        if done(billed) {
            source.stop();
            return watermark;
        }
    }
}

/// Billing across crashes: three runs of the source, each stopped without committing its last
/// window (a SIGKILL mid-window) a window later than the one before, `restart` (the
/// database's: kill and start it again) after the second; then [`Crashes::finish`].
pub struct Crashes {
    watermark: i64,
    stored: BTreeMap<Vec<u8>, Vec<u8>>,
    billed: BTreeMap<String, String>,
    conflicts: Vec<String>,
}

impl Crashes {
    pub async fn run(
        config: &edgemeter::sources::sql::config::SqlConfig,
        restart: impl Fn(),
    ) -> Crashes {
        let mut c = Crashes {
            watermark: jiff::Timestamp::now().as_second() - 2,
            stored: BTreeMap::new(),
            billed: BTreeMap::new(),
            conflicts: Vec::new(),
        };
        for crash in 0..3 {
            c.watermark = bill_until(
                config,
                c.watermark,
                &mut c.stored,
                &mut c.billed,
                &mut c.conflicts,
                Some(2 + crash),
                &|_| false,
            )
            .await;
            if crash == 1 {
                restart();
            }
        }
        c
    }

    /// Bills until every one of `expected` (row keys as the source writes them, `[42]`) is
    /// billed, then asserts that exactly those were, none with two bodies.
    pub async fn finish(
        mut self,
        config: &edgemeter::sources::sql::config::SqlConfig,
        expected: &std::collections::BTreeSet<String>,
    ) {
        bill_until(
            config,
            self.watermark,
            &mut self.stored,
            &mut self.billed,
            &mut self.conflicts,
            None,
            &|b| expected.iter().all(|k| b.contains_key(k)),
        )
        .await;
        assert!(
            self.conflicts.is_empty(),
            "ids billed with two bodies: {:?}",
            self.conflicts
        );
        let got: std::collections::BTreeSet<String> = self.billed.keys().cloned().collect();
        assert_eq!(&got, expected, "billed rows differ from the written ones");
    }
}
