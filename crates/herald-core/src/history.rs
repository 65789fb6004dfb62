//! The per-watch event history: the last `history` events, for `Last-Event-ID` resume.

use std::collections::VecDeque;

use crate::Event;

#[derive(Debug)]
pub struct History {
    capacity: usize,
    events: VecDeque<Event>,
}

impl History {
    pub fn new(capacity: usize) -> Self {
        History { capacity: capacity.max(1), events: VecDeque::new() }
    }

    pub fn push(&mut self, event: Event) {
        if self.events.len() == self.capacity {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// The events after `seq`, when the history still holds everything after it; `None` when
    /// `seq` is older than the history or newer than anything sent (a client that cannot resume).
    pub fn after(&self, seq: u64) -> Option<impl Iterator<Item = &Event>> {
        let last = self.events.back().map_or(0, |e| e.seq);
        let first = self.events.front().map_or(last + 1, |e| e.seq);
        if seq > last || seq + 1 < first {
            return None;
        }
        Some(self.events.iter().filter(move |e| e.seq > seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventKind;
    use bytes::Bytes;
    use std::time::Instant;

    fn ev(seq: u64) -> Event {
        Event { seq, kind: EventKind::Change, frame: Bytes::new(), detected: Instant::now() }
    }

    #[test]
    fn resumes_only_within_the_window() {
        let mut h = History::new(3);
        for seq in 1..=5 {
            h.push(ev(seq));
        }
        // Holds 3, 4, 5.
        let seqs = |from| h.after(from).map(|it| it.map(|e| e.seq).collect::<Vec<_>>());
        assert_eq!(seqs(2), Some(vec![3, 4, 5]));
        assert_eq!(seqs(4), Some(vec![5]));
        assert_eq!(seqs(5), Some(vec![]));
        assert_eq!(seqs(1), None, "event 2 was dropped: cannot resume");
        assert_eq!(seqs(6), None, "an id from the future");
    }

    #[test]
    fn empty_history_resumes_from_zero() {
        let h = History::new(3);
        assert_eq!(h.after(0).map(|it| it.count()), Some(0));
        assert!(h.after(1).is_none());
    }
}
