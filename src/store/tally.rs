//! The line's running figures for the line view: boards passed and failed
//! since a point in time (the shift's start), first-pass yield, the last
//! hour's passes, and per slot a count and its last results. Computed
//! from the board records when asked; nothing is kept.

use std::collections::{BTreeMap, HashSet};

use time::OffsetDateTime;

use super::{Store, StoreError, ts};

/// How many of a slot's latest results the tile shows as marks.
pub const RECENT: usize = 10;

/// Boards finished among those started since a point in time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineTally {
    pub passed: u64,
    pub failed: u64,
    /// Boards (by GUID; a record without one counts alone) whose first
    /// record in the range passed.
    pub first_pass: u64,
    /// Boards seen finished in the range, by the same count.
    pub units: u64,
    /// Boards passed in the hour before `now`.
    pub last_hour: u64,
    pub slots: BTreeMap<u16, SlotTally>,
}

/// One slot's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotTally {
    pub passed: u64,
    pub failed: u64,
    /// Its latest results, oldest first, at most [`RECENT`]: true passed.
    pub recent: Vec<bool>,
}

impl Store {
    /// The figures of the boards started at or after `from` and finished
    /// (passed or failed) by now. The board records' start is indexed, so
    /// a shift's worth is read whole each time.
    pub fn line_tally(
        &self,
        from: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<LineTally, StoreError> {
        let hour_ago = ts(now - time::Duration::hours(1));
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT slot, guid, status = 'provisioned', finished_at FROM boards
                 WHERE started_at >= ?1 AND status IN ('provisioned', 'failed') ORDER BY id",
            )?;
            let mut rows = st.query([ts(from)])?;
            let mut t = LineTally::default();
            let mut seen = HashSet::new();
            while let Some(r) = rows.next()? {
                let (slot, guid, passed, finished): (u16, Option<String>, bool, Option<String>) =
                    (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
                if guid.is_none_or(|g| seen.insert(g)) {
                    t.units += 1;
                    t.first_pass += u64::from(passed);
                }
                let s = t.slots.entry(slot).or_default();
                if passed {
                    t.passed += 1;
                    s.passed += 1;
                    t.last_hour += u64::from(finished.is_some_and(|f| f >= hour_ago));
                } else {
                    t.failed += 1;
                    s.failed += 1;
                }
                if s.recent.len() == RECENT {
                    s.recent.remove(0);
                }
                s.recent.push(passed);
            }
            Ok(t)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Failure;
    use crate::ids::SlotId;
    use crate::store::tests::{ident, store};

    fn board(s: &Store, slot: u16, guid: &str, pass: bool, at: OffsetDateTime) {
        let b = s.open_board("st", SlotId(slot), at).unwrap();
        s.record_identity(b, &ident(guid), at).unwrap();
        if pass {
            s.complete_without_jobs(b, None, at).unwrap();
        } else {
            s.fail(b, &Failure::new("no_answer", "no answer"), at)
                .unwrap();
        }
    }

    #[test]
    fn counts_the_range_per_slot_with_first_pass_yield() {
        let (_d, s) = store();
        let now = time::macros::datetime!(2026-12-04 10:00 UTC);
        let g = |n: u32| format!("0a1b2c3d-0000-4000-8000-{n:012}");
        // Before the range: not counted.
        board(&s, 1, &g(99), false, now - time::Duration::hours(5));
        let from = now - time::Duration::hours(4);
        board(&s, 1, &g(1), true, now - time::Duration::hours(3));
        // Fails, then passes on a retry: one unit, not first pass.
        board(&s, 2, &g(2), false, now - time::Duration::hours(2));
        board(&s, 2, &g(2), true, now - time::Duration::minutes(30));
        for i in 0..12 {
            board(
                &s,
                3,
                &g(10 + i),
                i % 2 == 0,
                now - time::Duration::minutes(20),
            );
        }
        // Still in progress: not counted.
        s.open_board("st", SlotId(4), now).unwrap();

        let t = s.line_tally(from, now).unwrap();
        assert_eq!((t.passed, t.failed), (8, 7));
        assert_eq!((t.first_pass, t.units), (7, 14));
        assert_eq!(t.last_hour, 7, "the retry and slot 3's six passes");
        assert_eq!(
            t.slots[&2],
            SlotTally {
                passed: 1,
                failed: 1,
                recent: vec![false, true],
            }
        );
        let three = &t.slots[&3];
        assert_eq!((three.passed, three.failed), (6, 6));
        assert_eq!(three.recent.len(), RECENT, "only the latest ten");
        assert_eq!(three.recent.last(), Some(&false), "the newest is last");
        assert!(!t.slots.contains_key(&4));
        assert_eq!(s.line_tally(now, now).unwrap(), LineTally::default());
    }
}
