//! What a committed position knows past itself. A partition's position can only move up to
//! the first message whose outcomes are not final; one slow delivery holds it back while
//! hundreds of later messages finish. After a crash, all those would be delivered again. So
//! every commit also carries, in the offset's metadata, how far the partition was read and
//! which of the offsets past the position were not final yet; a replica that takes the
//! partition over skips the others, which are final (delivered, dead-lettered or parked).
//!
//! The metadata is `hb1:<upto>:<open>`, offsets relative to the committed one: `upto` the
//! last offset read, `open` the ranges of offsets not final (`3,7-9`). It is kept under
//! [`MAX_METADATA`] bytes (brokers refuse more than `offset.metadata.max.bytes`, 4 KiB by
//! default) by covering fewer offsets: what it does not cover is delivered again, never lost.

use std::fmt::Write as _;

/// The longest metadata written.
pub const MAX_METADATA: usize = 1024;

const PREFIX: &str = "hb1:";

/// Offsets past a position: read up to `upto` (inclusive), final except those in `open`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The position: what is known starts after it.
    next: i64,
    upto: i64,
    /// Inclusive ranges of offsets not final, ascending, all within `(position, upto]`.
    open: Vec<(i64, i64)>,
}

impl Progress {
    /// Nothing known past `next`.
    #[cfg(test)]
    pub fn none(next: i64) -> Progress {
        Progress { next, upto: next - 1, open: Vec::new() }
    }

    /// Read up to `upto`; `not_final` are the offsets past `next` not final (ascending).
    pub fn new(next: i64, upto: i64, not_final: impl IntoIterator<Item = i64>) -> Progress {
        let mut open: Vec<(i64, i64)> = Vec::new();
        for o in not_final.into_iter().filter(|o| *o > next && *o <= upto) {
            match open.last_mut() {
                Some((_, end)) if *end + 1 == o => *end = o,
                _ => open.push((o, o)),
            }
        }
        Progress { next, upto, open }
    }

    /// Whether `offset` is known to be final: past the position, read, and not open.
    pub fn is_final(&self, offset: i64) -> bool {
        offset > self.next && offset <= self.upto && !self.open.iter().any(|(a, b)| *a <= offset && offset <= *b)
    }

    /// The last offset covered.
    #[cfg(test)]
    pub fn upto(&self) -> i64 {
        self.upto
    }

    /// Adds what `earlier` knew past this one's reach (an assignment that has not yet read as
    /// far as the previous owner had).
    pub fn extended_by(mut self, earlier: &Progress) -> Progress {
        if earlier.upto > self.upto {
            let from = self.upto;
            self.open.extend(earlier.open.iter().filter(|(_, b)| *b > from).map(|(a, b)| ((*a).max(from + 1), *b)));
            self.upto = earlier.upto;
        }
        self
    }

    /// The metadata of a commit at `next` (the position it was made for), at most
    /// [`MAX_METADATA`] bytes.
    pub fn encode(&self, next: i64) -> String {
        debug_assert_eq!(next, self.next);
        if self.upto < next {
            return String::new();
        }
        let mut ranges = String::new();
        let mut upto = self.upto;
        for (a, b) in &self.open {
            let mut piece = String::new();
            let _ = if a == b { write!(piece, "{}", a - next) } else { write!(piece, "{}-{}", a - next, b - next) };
            // Room for the prefix and `upto` too.
            if PREFIX.len() + 22 + ranges.len() + piece.len() + 1 > MAX_METADATA {
                // Cover less: up to just before this range.
                upto = a - 1;
                break;
            }
            if !ranges.is_empty() {
                ranges.push(',');
            }
            ranges.push_str(&piece);
        }
        format!("{PREFIX}{}:{ranges}", upto - next)
    }

    /// Reads the metadata of a commit at `next`; `None` when it is not ours or not valid.
    pub fn decode(next: i64, metadata: &str) -> Option<Progress> {
        let rest = metadata.strip_prefix(PREFIX)?;
        let (upto, ranges) = rest.split_once(':')?;
        let upto = next.checked_add(upto.parse::<i64>().ok().filter(|u| *u >= -1)?)?;
        let mut open = Vec::new();
        let mut after = next;
        for r in ranges.split(',').filter(|r| !r.is_empty()) {
            let (a, b) = match r.split_once('-') {
                Some((a, b)) => (a.parse::<i64>().ok()?, b.parse::<i64>().ok()?),
                None => {
                    let a = r.parse::<i64>().ok()?;
                    (a, a)
                }
            };
            let (a, b) = (next.checked_add(a)?, next.checked_add(b)?);
            if a <= after || b < a || b > upto {
                return None;
            }
            open.push((a, b));
            after = b;
        }
        Some(Progress { next, upto, open })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_past_the_position_are_final_except_the_open_ones() {
        // Position 100 (not final), read up to 120; 103, 107, 108, 109 not final either.
        let p = Progress::new(100, 120, [100, 103, 107, 108, 109]);
        let text = p.encode(100);
        assert_eq!(text, "hb1:20:3,7-9");
        let back = Progress::decode(100, &text).unwrap();
        assert_eq!(back, p);
        let finals: Vec<i64> = (101..=122).filter(|o| back.is_final(*o)).collect();
        assert_eq!(finals, vec![101, 102, 104, 105, 106, 110, 111, 112, 113, 114, 115, 116, 117, 118, 119, 120]);
        assert_eq!(Progress::decode(100, &Progress::none(100).encode(100)), None, "nothing to say: no metadata");
    }

    #[test]
    fn foreign_or_broken_metadata_is_ignored() {
        for bad in ["", "something else", "hb1:", "hb1:x:", "hb1:5:7", "hb1:9:3,2", "hb1:9:4-3", "hb1:9:0"] {
            assert_eq!(Progress::decode(10, bad), None, "{bad:?}");
        }
        assert!(Progress::decode(10, "hb1:-1:").is_some());
    }

    #[test]
    fn long_metadata_covers_fewer_offsets() {
        // Every other offset open: thousands of ranges.
        let p = Progress::new(0, 10_000, (1..10_000).step_by(2));
        let text = p.encode(0);
        assert!(text.len() <= MAX_METADATA, "{}", text.len());
        let back = Progress::decode(0, &text).unwrap();
        assert!(back.upto() < 10_000 && back.upto() > 100, "{}", back.upto());
        for o in 1..=back.upto() {
            assert_eq!(back.is_final(o), o % 2 == 0, "offset {o}");
        }
        assert!(!back.is_final(back.upto() + 1), "beyond what is covered, nothing is final");
    }

    #[test]
    fn an_earlier_owner_s_knowledge_extends_a_shorter_one() {
        let earlier = Progress::new(10, 50, [20, 30, 31, 45]);
        // The new owner read 10..=25; 10 and 12 are not final.
        let own = Progress::new(10, 25, [10, 12]);
        let both = own.extended_by(&earlier);
        assert_eq!(both.upto(), 50);
        let open: Vec<i64> = (11..=50).filter(|o| !both.is_final(*o)).collect();
        assert_eq!(open, vec![12, 30, 31, 45], "20 is behind the new owner's reach: its own view counts");
    }
}
