//! Events and their SSE encoding. An event is encoded once into an SSE frame; every subscriber
//! gets a clone of the same `Bytes` (a reference count, not a copy).

use std::fmt;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};

/// An event id: the watch's epoch (when it was created) and a sequence number.
///
/// Clients see it as an opaque string, `<epoch hex>-<seq>`. The epoch makes an id from an earlier
/// incarnation of a watch (dropped after `linger`, or before a restart) unknown instead of wrongly
/// found, so such a client gets a fresh snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventId {
    pub epoch: u64,
    pub seq: u64,
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}-{}", self.epoch, self.seq)
    }
}

impl EventId {
    /// Parses an id a client sent back; `None` when malformed or longer than 256 bytes.
    pub fn parse(s: &str) -> Option<EventId> {
        if s.len() > 256 {
            return None;
        }
        let (epoch, seq) = s.split_once('-')?;
        if epoch.is_empty() || seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(EventId { epoch: u64::from_str_radix(epoch, 16).ok()?, seq: seq.parse().ok()? })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The representation changed.
    Change,
    /// The upstream started or stopped failing.
    Status,
    /// The stream ends after this event.
    Terminal,
    /// The watch's history was replaced (cluster mode: Redis lost it, a new epoch began):
    /// every subscriber starts again from a snapshot. Carries no frame.
    Reset,
}

/// One encoded event, shared by all subscribers of a watch.
#[derive(Debug, Clone)]
pub struct Event {
    pub seq: u64,
    pub kind: EventKind,
    /// The complete SSE frame, `event:`, `id:`, `data:` and the blank line.
    pub frame: Bytes,
    /// When the change was detected, for `herald_event_delivery_seconds`.
    pub detected: Instant,
}

/// Encodes an SSE frame. `data` must be one line (compact JSON is).
pub fn encode_frame(event: &str, id: Option<EventId>, data: &[u8]) -> Bytes {
    debug_assert!(!data.contains(&b'\n'), "SSE data must be one line");
    let mut buf = BytesMut::with_capacity(event.len() + data.len() + 48);
    buf.put_slice(b"event: ");
    buf.put_slice(event.as_bytes());
    if let Some(id) = id {
        buf.put_slice(b"\nid: ");
        buf.put_slice(id.to_string().as_bytes());
    }
    buf.put_slice(b"\ndata: ");
    buf.put_slice(data);
    buf.put_slice(b"\n\n");
    buf.freeze()
}

/// An SSE comment line (heartbeats).
pub fn encode_comment(text: &str) -> Bytes {
    Bytes::from(format!(": {text}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_garbage() {
        let id = EventId { epoch: 0x19ac0ffee, seq: 42 };
        assert_eq!(id.to_string(), "19ac0ffee-42");
        assert_eq!(EventId::parse(&id.to_string()), Some(id));
        for bad in ["", "42", "x-1", "1-", "-1", "1-a", "1-2-3", &"1".repeat(300)] {
            assert_eq!(EventId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn frames() {
        let f = encode_frame("change", Some(EventId { epoch: 1, seq: 2 }), br#"{"a":1}"#);
        assert_eq!(&f[..], b"event: change\nid: 1-2\ndata: {\"a\":1}\n\n");
        assert_eq!(&encode_frame("error", None, b"{}")[..], b"event: error\ndata: {}\n\n");
    }
}
