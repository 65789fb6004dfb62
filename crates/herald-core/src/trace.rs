//! W3C Trace Context (`traceparent`): herald is no tracer, but it lets an operator follow a
//! request into the upstream's logs. A client's `traceparent` passes through untouched; each poll
//! and each webhook attempt carries a new one, whose trace id herald logs with it.

use std::fmt;

/// The `traceparent` request header.
pub const TRACEPARENT: &str = "traceparent";

/// A `traceparent` value of version 00: a random trace id and parent id, not sampled (herald
/// records no spans; a tracing upstream may still sample it).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    trace: u128,
    parent: u64,
}

impl TraceParent {
    /// A new trace. Ids are never all zeros (the W3C format forbids it).
    pub fn new() -> Self {
        TraceParent { trace: fastrand::u128(1..), parent: fastrand::u64(1..) }
    }

    /// The header value: `00-<32 hex trace id>-<16 hex parent id>-00`.
    pub fn header(&self) -> String {
        format!("00-{:032x}-{:016x}-00", self.trace, self.parent)
    }

    /// The trace id, as logged.
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace)
    }
}

impl Default for TraceParent {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.header())
    }
}

/// The trace id of a client's `traceparent` value, when it is well formed (version, 32 and 16
/// lowercase hex digits, flags; ids not all zeros); what the access log shows of it.
pub fn trace_id(traceparent: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(traceparent).ok()?;
    let mut parts = s.split('-');
    let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |p: &str, len| p.len() == len && p.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let valid = hex(version, 2)
        && version != "ff"
        && (version != "00" || parts.next().is_none())
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0');
    valid.then_some(trace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_traceparent_is_well_formed_and_its_own() {
        let (a, b) = (TraceParent::new(), TraceParent::new());
        let header = a.header();
        assert_eq!(header.len(), 55);
        assert_eq!(trace_id(header.as_bytes()), Some(a.trace_id().as_str()));
        assert_ne!(a.trace_id(), b.trace_id());
    }

    #[test]
    fn only_well_formed_traceparents_give_a_trace_id() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(trace_id(good.as_bytes()), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        // A later version may add fields.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        assert_eq!(trace_id(later.as_bytes()), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
        ] {
            assert_eq!(trace_id(bad.as_bytes()), None, "{bad}");
        }
    }
}
