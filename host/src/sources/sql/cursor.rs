//! The `sequence` cursor: every committed row of an increasing key billed exactly once while
//! concurrent writers commit out of key order (pure, no I/O, no clock).
//!
//! # Why `WHERE id > last` loses rows
//!
//! Two writers draw ids 100 and 101 from the sequence; 101 commits first. A poll then sees
//! 101, and a cursor at 101 never reads 100, which commits a moment later. Holes are also
//! normal without any race: a rolled-back insert burns its id for good.
//!
//! # What this cursor keeps
//!
//! - `low`: every key `≤ low` is final — billed, or never to be committed;
//! - `billed`: the keys above `low` already billed (as ranges: mostly one);
//! - `checkpoints`: per read, `(T, M)`: the database's clock after the read and the highest
//!   key visible then.
//!
//! Each round reads every row with a key above `low` and bills those not in `billed`.
//!
//! # When a key is final
//!
//! `M` was visible at `T`, so it was drawn before `T`; a key below `M` was drawn before `M`
//! (the sequence hands out increasing values), so before `T` too, by a transaction that
//! started before `T` — a row is inserted by the transaction that drew its key. Once the
//! oldest transaction still open (`pg_stat_activity.xact_start`, prepared transactions
//! included) started after `T`, every such transaction has ended: a row with a key `≤ M`
//! that is not visible now never will be. So a round that first measures the oldest open
//! transaction's start `S`, then reads, may move `low` to the highest `M` of a checkpoint
//! with `T < S` ([`SequenceCursor::settle`]) once it has billed what it read.
//!
//! Assumptions, documented for users: the key is drawn in the inserting transaction (a
//! `bigserial`/identity default), from a sequence with `CACHE 1` (the default; a per-session
//! cache hands out keys ahead, out of order); an `UPDATE` of a billed row is not billed again.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The cursor of one `sequence` import (stored with each commit as JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceCursor {
    /// Every key at or below is final.
    low: i64,
    /// Billed keys above `low`: start → end, inclusive, disjoint, not adjacent.
    billed: BTreeMap<i64, i64>,
    /// `(database time of a read in µs, highest key visible then)`, both increasing.
    checkpoints: Vec<(i64, i64)>,
}

impl SequenceCursor {
    /// A cursor that has billed nothing (keys from `low + 1` on are read).
    pub fn starting_after(low: i64) -> Self {
        SequenceCursor {
            low,
            ..SequenceCursor::default()
        }
    }

    /// Rows with a key above this are read.
    pub fn low(&self) -> i64 {
        self.low
    }

    /// How many keys above `low` are billed (the set kept until they are final).
    pub fn pending(&self) -> u64 {
        self.billed
            .iter()
            .map(|(a, b)| u64::try_from(b - a + 1).unwrap_or(0))
            .sum()
    }

    /// True when `key` was billed (or is final: at or below `low`).
    pub fn is_billed(&self, key: i64) -> bool {
        key <= self.low
            || self
                .billed
                .range(..=key)
                .next_back()
                .is_some_and(|(_, end)| key <= *end)
    }

    /// Marks `key` billed.
    pub fn bill(&mut self, key: i64) {
        if self.is_billed(key) {
            return;
        }
        let (mut start, mut end) = (key, key);
        // Join the range ending at key − 1 and the one starting at key + 1.
        if let Some((&a, &b)) = self.billed.range(..key).next_back()
            && b == key - 1
        {
            start = a;
            self.billed.remove(&a);
        }
        if let Some(b) = self.billed.remove(&(key + 1)) {
            end = b;
        }
        self.billed.insert(start, end);
    }

    /// Records a read finished at `read_at_us` (the database's clock) that saw `highest` as
    /// its highest key (billed now or before).
    pub fn checkpoint(&mut self, read_at_us: i64, highest: Option<i64>) {
        let Some(m) = highest else { return };
        if m <= self.low || self.checkpoints.last().is_some_and(|&(_, last)| m <= last) {
            return;
        }
        self.checkpoints.push((read_at_us, m));
    }

    /// The oldest transaction open before this round's read started at `oldest_open_us`
    /// (or, with none open, the time it was measured): checkpoints read before it are final.
    /// Returns the new `low` when it moved.
    pub fn settle(&mut self, oldest_open_us: i64) -> Option<i64> {
        let n = self
            .checkpoints
            .partition_point(|&(t, _)| t < oldest_open_us);
        let (_, m) = *self.checkpoints.get(n.checked_sub(1)?)?;
        self.checkpoints.drain(..n);
        self.low = self.low.max(m);
        // Ranges at or below low are final now; one straddling it is cut.
        let below: Vec<i64> = self.billed.range(..=self.low).map(|(a, _)| *a).collect();
        for a in below {
            if let Some(b) = self.billed.remove(&a)
                && b > self.low
            {
                self.billed.insert(self.low + 1, b);
            }
        }
        Some(self.low)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billed_keys_are_kept_as_joined_ranges() {
        let mut c = SequenceCursor::starting_after(0);
        for k in [1, 2, 4, 3, 7] {
            c.bill(k);
        }
        assert_eq!(c.billed, BTreeMap::from([(1, 4), (7, 7)]));
        assert!(c.is_billed(3) && !c.is_billed(5) && c.is_billed(7) && !c.is_billed(8));
        assert_eq!(c.pending(), 5);
        c.bill(6);
        c.bill(5);
        assert_eq!(c.billed, BTreeMap::from([(1, 7)]));
    }

    /// The race: 101 commits before 100. The first round bills 101; 100 is neither billed
    /// nor final, so the next round reads it; low only passes it once no transaction that
    /// could still commit it is open.
    #[test]
    fn a_key_committed_late_is_read_and_low_waits_for_it() {
        let mut c = SequenceCursor::starting_after(99);
        // Round 1 at t=10: 101 visible; the writer of 100 is open since t=5.
        c.bill(101);
        c.checkpoint(10, Some(101));
        assert_eq!(
            c.settle(5),
            None,
            "nothing final while the t=5 transaction is open"
        );
        assert_eq!(c.low(), 99);
        // Round 2 at t=20: oldest open transaction started at t=15 (the t=5 one committed
        // 100); 100 is read (above low, not billed), then low moves to 101.
        assert!(!c.is_billed(100));
        c.bill(100);
        c.checkpoint(20, Some(101));
        assert_eq!(c.settle(15), Some(101));
        assert_eq!(c.pending(), 0);
        assert!(c.checkpoints.is_empty());
    }

    #[test]
    fn a_rolled_back_key_is_a_hole_passed_once_final() {
        let mut c = SequenceCursor::starting_after(0);
        for k in [1, 2, 4, 5] {
            c.bill(k);
        }
        c.checkpoint(10, Some(5));
        c.bill(6);
        c.checkpoint(20, Some(6));
        // 3 rolled back. Oldest open transaction started at 12: the t=10 checkpoint is final.
        assert_eq!(c.settle(12), Some(5));
        assert_eq!(c.billed, BTreeMap::from([(6, 6)]));
        assert_eq!(c.checkpoints, vec![(20, 6)]);
        // None open at 30: all final.
        assert_eq!(c.settle(30), Some(6));
        assert!(c.billed.is_empty());
        assert!(c.is_billed(3), "at or below low: final");
    }

    #[test]
    fn a_straddling_range_is_cut_at_low_and_the_state_round_trips() {
        let mut c = SequenceCursor::starting_after(0);
        for k in 1..=10 {
            c.bill(k);
        }
        c.checkpoint(5, Some(6));
        c.checkpoint(6, Some(5)); // not higher: ignored
        c.checkpoint(9, Some(10));
        assert_eq!(c.settle(7), Some(6));
        assert_eq!(c.billed, BTreeMap::from([(7, 10)]));
        let json = serde_json::to_string(&c).expect("json");
        let back: SequenceCursor = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, c);
    }
}
