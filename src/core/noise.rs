//! A slot's jig line, judged: damaged frames in the last hour and resends
//! per board over the boards of the last hour, and whether that makes the
//! line noisy (a cable to check or replace). Pure: the slot driver tells
//! it what its link counted, and when.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

/// The window the figures cover.
pub const WINDOW: Duration = Duration::from_secs(3600);

/// A line with at least this many resends per board is noisy. A sound
/// cable has none: its bit error rate is far below one in a billion.
pub const NOISY_RESENDS_PER_BOARD: f64 = 0.2;

/// A line with at least this many damaged frames in the last hour is
/// noisy, however few boards went through it.
pub const NOISY_DAMAGED_PER_HOUR: u64 = 5;

/// Whether these figures make a line noisy.
pub fn is_noisy(resends_per_board: f64, damaged_per_hour: Option<u64>) -> bool {
    resends_per_board >= NOISY_RESENDS_PER_BOARD
        || damaged_per_hour.is_some_and(|d| d >= NOISY_DAMAGED_PER_HOUR)
}

/// What the slot shows of its line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineHealth {
    /// Damaged frames either way in the last hour.
    pub damaged_last_hour: u64,
    /// Boards (visits) that ended in the last hour, and their resends.
    pub boards_last_hour: u64,
    pub resends_last_hour: u64,
    /// Since the station started.
    pub damaged_total: u64,
    pub resends_total: u64,
    pub noisy: bool,
}

impl LineHealth {
    pub fn resends_per_board(&self) -> f64 {
        if self.boards_last_hour == 0 {
            0.0
        } else {
            self.resends_last_hour as f64 / self.boards_last_hour as f64
        }
    }

    /// The sentence a line failure on this slot ends with when the line
    /// is noisy.
    pub fn advice(&self) -> Option<String> {
        self.noisy.then(|| {
            format!(
                "this slot's jig line is noisy ({} damaged frames in the last hour, {:.1} resends per board): check or replace the cable",
                self.damaged_last_hour,
                self.resends_per_board()
            )
        })
    }
}

impl Serialize for LineHealth {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("LineHealth", 6)?;
        st.serialize_field("damaged_frames_per_hour", &self.damaged_last_hour)?;
        st.serialize_field(
            "resends_per_board",
            &((self.resends_per_board() * 100.0).round() / 100.0),
        )?;
        st.serialize_field("boards_last_hour", &self.boards_last_hour)?;
        st.serialize_field("damaged_frames_total", &self.damaged_total)?;
        st.serialize_field("resends_total", &self.resends_total)?;
        st.serialize_field("noisy", &self.noisy)?;
        st.end()
    }
}

/// The events behind [`LineHealth`], kept for [`WINDOW`].
#[derive(Debug, Default)]
pub struct LineNoise {
    /// (when, how many) damaged frames.
    damaged: VecDeque<(Instant, u64)>,
    /// (when, resends) per board that ended.
    boards: VecDeque<(Instant, u64)>,
    damaged_total: u64,
    resends_total: u64,
}

impl LineNoise {
    /// `n` damaged frames seen at `now`.
    pub fn damaged(&mut self, n: u64, now: Instant) {
        if n > 0 {
            self.damaged.push_back((now, n));
            self.damaged_total += n;
        }
    }

    /// A board's visit ended at `now`, with `resends` requests sent again.
    pub fn board(&mut self, resends: u64, now: Instant) {
        self.boards.push_back((now, resends));
        self.resends_total += resends;
    }

    /// The figures as of `now`, with the resends of a board's visit still
    /// going (`Some`) counted in as one more board.
    pub fn health(&mut self, now: Instant, current: Option<u64>) -> LineHealth {
        let old = |t: &Instant| now.saturating_duration_since(*t) > WINDOW;
        while self.damaged.front().is_some_and(|(t, _)| old(t)) {
            self.damaged.pop_front();
        }
        while self.boards.front().is_some_and(|(t, _)| old(t)) {
            self.boards.pop_front();
        }
        let damaged_last_hour = self.damaged.iter().map(|(_, n)| n).sum::<u64>();
        let resends_last_hour =
            self.boards.iter().map(|(_, n)| n).sum::<u64>() + current.unwrap_or(0);
        let boards_last_hour = self.boards.len() as u64 + u64::from(current.is_some());
        let mut h = LineHealth {
            damaged_last_hour,
            boards_last_hour,
            resends_last_hour,
            damaged_total: self.damaged_total,
            resends_total: self.resends_total + current.unwrap_or(0),
            noisy: false,
        };
        h.noisy = is_noisy(h.resends_per_board(), Some(damaged_last_hour));
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_line_is_not_noisy_and_a_noisy_one_is() {
        let t0 = Instant::now();
        let mut n = LineNoise::default();
        for i in 0..20 {
            n.board(0, t0 + Duration::from_secs(i));
        }
        let h = n.health(t0 + Duration::from_secs(30), None);
        assert!(!h.noisy);
        assert_eq!(h.advice(), None);
        assert_eq!(h.boards_last_hour, 20);
        // One resend in three boards is noisy.
        for i in 0..10 {
            n.board(1, t0 + Duration::from_secs(40 + i));
        }
        let h = n.health(t0 + Duration::from_secs(60), None);
        assert_eq!(h.resends_last_hour, 10);
        assert!(h.noisy, "{h:?}");
        assert!(h.advice().unwrap().contains("check or replace the cable"));
    }

    #[test]
    fn damaged_frames_age_out_of_the_hour() {
        let t0 = Instant::now();
        let mut n = LineNoise::default();
        n.damaged(6, t0);
        assert!(n.health(t0, None).noisy);
        let later = n.health(t0 + WINDOW + Duration::from_secs(1), None);
        assert_eq!(later.damaged_last_hour, 0);
        assert_eq!(later.damaged_total, 6);
        assert!(!later.noisy);
        // A visit still going counts as a board.
        let going = n.health(t0 + WINDOW * 2, Some(1));
        assert_eq!((going.boards_last_hour, going.resends_last_hour), (1, 1));
        assert!(going.noisy);
        assert!(!n.health(t0 + WINDOW * 2, Some(0)).noisy);
    }
}
