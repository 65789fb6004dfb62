//! The representations a watch held, oldest first, kept while a webhook watch follows it.
//!
//! Webhook messages are diffed from the representation last recorded in the store to the next
//! one. When recording falls behind the watch (the store is slow or away for a while, or the
//! webhook watch's lease passes to another replica), diffing to the watch's current
//! representation would merge the changes made meanwhile into one message. With the versions
//! kept here, each one is recorded in turn instead, as the streams carried them. Bounded by
//! count and bytes: a webhook watch further behind than that merges what it can no longer see.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use herald_core::Representation;

/// At most this many versions are kept per watch.
pub(crate) const MAX_VERSIONS: usize = 256;
/// And at most this many bytes of them (normalized data and upstream body); the two newest are
/// always kept (the one recorded and the next, for representations bigger than the bound).
pub(crate) const MAX_VERSION_BYTES: usize = 16 << 20;

/// A kept representation and its number: unique in the process, so a number from another
/// watch (or an earlier one for the same resource) never names a version of this one.
pub type Version = (u64, Representation);

static NEXT: AtomicU64 = AtomicU64::new(0);

#[derive(Default)]
pub(crate) struct Versions {
    list: VecDeque<Version>,
    bytes: usize,
}

impl Versions {
    /// Keeps `repr` as the newest version, unless it equals the newest already kept.
    pub(crate) fn push(&mut self, repr: &Representation) {
        if self.list.back().is_some_and(|(_, last)| last.hash == repr.hash) {
            return;
        }
        self.bytes += size(repr);
        self.list.push_back((NEXT.fetch_add(1, Ordering::Relaxed), repr.clone()));
        while self.list.len() > MAX_VERSIONS || (self.bytes > MAX_VERSION_BYTES && self.list.len() > 2) {
            let (_, old) = self.list.pop_front().expect("more than two versions");
            self.bytes -= size(&old);
        }
    }

    /// The versions after the one numbered `number` when it is still kept, else after the
    /// newest with `hash`, oldest first. `None` when neither is kept: the caller cannot tell what
    /// came between.
    pub(crate) fn after(&self, number: Option<u64>, hash: &blake3::Hash) -> Option<Vec<Version>> {
        let at = number
            .and_then(|n| self.list.iter().position(|(k, _)| *k == n))
            .or_else(|| self.list.iter().rposition(|(_, r)| r.hash == *hash))?;
        Some(self.list.iter().skip(at + 1).cloned().collect())
    }
}

fn size(repr: &Representation) -> usize {
    repr.data.len() + repr.body.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repr(body: &str) -> Representation {
        Representation::from_body(bytes::Bytes::from(body.to_string()), &[])
    }

    fn bodies(list: &[Version]) -> Vec<String> {
        list.iter().map(|(_, r)| String::from_utf8(r.data.to_vec()).unwrap()).collect()
    }

    #[test]
    fn the_versions_after_a_recorded_one_come_in_order_and_an_unknown_one_is_none() {
        let mut v = Versions::default();
        for body in ["1", "2", "2", "3", "4"] {
            v.push(&repr(body));
        }
        assert_eq!(bodies(&v.after(None, &repr("2").hash).unwrap()), ["3", "4"], "a repeat is not a version");
        assert_eq!(bodies(&v.after(None, &repr("4").hash).unwrap()), Vec::<String>::new());
        assert!(v.after(None, &repr("9").hash).is_none());
    }

    #[test]
    fn a_representation_seen_twice_is_found_by_its_number_else_the_newest() {
        let mut v = Versions::default();
        for body in ["1", "2", "1", "3"] {
            v.push(&repr(body));
        }
        let first = v.list[0].0;
        assert_eq!(bodies(&v.after(Some(first), &repr("1").hash).unwrap()), ["2", "1", "3"]);
        assert_eq!(bodies(&v.after(None, &repr("1").hash).unwrap()), ["3"]);
        // A number no longer kept (or never of this watch): by the hash.
        assert_eq!(bodies(&v.after(Some(u64::MAX), &repr("1").hash).unwrap()), ["3"]);
        // A number names a version even when the hash is another's (one skipped as invalid).
        assert_eq!(bodies(&v.after(Some(v.list[1].0), &repr("1").hash).unwrap()), ["1", "3"]);
    }

    #[test]
    fn kept_versions_are_bounded_by_count_and_bytes_and_the_two_newest_stay() {
        let mut v = Versions::default();
        for i in 0..MAX_VERSIONS + 10 {
            v.push(&repr(&i.to_string()));
        }
        assert_eq!(v.list.len(), MAX_VERSIONS);
        assert!(v.after(None, &repr("0").hash).is_none(), "the oldest went");

        let big = |c: &str| format!("\"{}\"", c.repeat(MAX_VERSION_BYTES));
        v.push(&repr(&big("x")));
        v.push(&repr(&big("y")));
        assert_eq!(v.list.len(), 2, "the two newest are kept, over the bytes");
        v.push(&repr("1"));
        assert_eq!(v.list.len(), 2);
        assert!(v.after(None, &repr(&big("y")).hash).is_some(), "the one before the newest is still known");
        v.push(&repr("2"));
        assert_eq!(bodies(&v.list.iter().cloned().collect::<Vec<_>>()), ["1", "2"]);
        assert_eq!(v.bytes, 4);
    }
}
