//! The per-watch event history: the last `history` events, and at most `history_bytes` of them,
//! for `Last-Event-ID` resume.

use std::collections::VecDeque;

use crate::Event;

#[derive(Debug)]
pub struct History {
    capacity: usize,
    max_bytes: usize,
    /// Encoded bytes of the events held.
    bytes: usize,
    events: VecDeque<Event>,
}

impl History {
    /// Keeps at most `capacity` events and `max_bytes` of their frames; the newest event is
    /// always kept, however large, so a client that saw the one before it can still resume.
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        History { capacity: capacity.max(1), max_bytes, bytes: 0, events: VecDeque::new() }
    }

    pub fn push(&mut self, event: Event) {
        self.bytes += event.frame.len();
        self.events.push_back(event);
        while self.events.len() > self.capacity || (self.bytes > self.max_bytes && self.events.len() > 1) {
            let dropped = self.events.pop_front().expect("more than one event");
            self.bytes -= dropped.frame.len();
        }
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
        sized(seq, 0)
    }

    fn sized(seq: u64, len: usize) -> Event {
        Event { seq, kind: EventKind::Change, frame: Bytes::from(vec![b'x'; len]), detected: Instant::now() }
    }

    #[test]
    fn bytes_bound_the_history_as_well_as_the_count() {
        let mut h = History::new(100, 250);
        for seq in 1..=5 {
            h.push(sized(seq, 100));
        }
        let seqs = |h: &History, from| h.after(from).map(|it| it.map(|e| e.seq).collect::<Vec<_>>());
        assert_eq!(seqs(&h, 3), Some(vec![4, 5]), "two events of 100 bytes fit in 250");
        assert_eq!(seqs(&h, 2), None);
        h.push(sized(6, 1000));
        assert_eq!(seqs(&h, 5), Some(vec![6]), "the newest event is kept even when larger than the bound");
        h.push(sized(7, 10));
        assert_eq!(seqs(&h, 6), Some(vec![7]));
        assert_eq!(h.bytes, 10);
    }

    #[test]
    fn resumes_only_within_the_window() {
        let mut h = History::new(3, usize::MAX);
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
        let h = History::new(3, usize::MAX);
        assert_eq!(h.after(0).map(|it| it.count()), Some(0));
        assert!(h.after(1).is_none());
    }
}
