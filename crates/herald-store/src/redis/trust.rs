//! What herald believes of what it reads back from Redis. Redis is shared storage, not a
//! trusted party: with `storage.encryption_key`, values that belong to a subscriber are sealed
//! (with the store's own [`Sealer`]), key names that derive from a credential scope are keyed
//! hashes, and the control messages replicas act on are signed; with or without the key, what
//! reaches an SSE frame or a header is checked to be something herald could have written.

use crate::seal::Sealer;

/// The keys derived from `storage.encryption_key` for cluster mode.
pub(crate) struct Keys {
    pub(crate) sealer: Sealer,
    /// Hashes the names of keys and hash fields that derive from a credential scope, so that
    /// one who reads Redis cannot test a guessed credential against them.
    names: [u8; 32],
    /// Signs the pub/sub messages a replica acts on (`end:…`, `refresh:…`).
    bus: [u8; 32],
}

/// Hex digits of a signature on a pub/sub message (128 bits).
const SIGNATURE_HEX: usize = 32;

impl Keys {
    pub(crate) fn new(encryption_key: &[u8; 32]) -> Keys {
        Keys {
            sealer: Sealer::new(encryption_key),
            names: blake3::derive_key("herald redis scope v1", encryption_key),
            bus: blake3::derive_key("herald redis bus v1", encryption_key),
        }
    }

    /// The name under which `id` is kept: 32 hex digits of a keyed hash.
    pub(crate) fn name(&self, id: &str) -> String {
        blake3::keyed_hash(&self.names, id.as_bytes()).to_hex()[..32].to_string()
    }

    /// `message` with its signature for `channel`, as published.
    pub(crate) fn sign(&self, channel: &str, message: &str) -> String {
        format!("{message} {}", self.signature(channel, message))
    }

    /// The message of a payload signed for `channel`; `None` when it is not (forged, another
    /// channel's, or another key's).
    pub(crate) fn verify<'a>(&self, channel: &str, payload: &'a str) -> Option<&'a str> {
        let at = payload.len().checked_sub(SIGNATURE_HEX + 1)?;
        let (message, signature) = (payload.get(..at)?, payload.get(at..)?.strip_prefix(' ')?);
        // Both are hex digits of the same length: comparing them leaks nothing worth timing.
        (self.signature(channel, message) == signature).then_some(message)
    }

    fn signature(&self, channel: &str, message: &str) -> String {
        let mut h = blake3::Hasher::new_keyed(&self.bus);
        h.update(&(channel.len() as u64).to_le_bytes());
        h.update(channel.as_bytes());
        h.update(message.as_bytes());
        h.finalize().to_hex()[..SIGNATURE_HEX].to_string()
    }
}

/// Whether an event name read back could have been written by herald: not empty, and no CR or
/// LF (either would end the `event:` line of the frame and start another field).
pub(crate) fn event_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['\r', '\n'])
}

/// Whether event data read back could have been written by herald: compact JSON, one line
/// (the framer writes one `data:` line; CR or LF would start another field).
pub(crate) fn one_line(data: &[u8]) -> bool {
    !data.iter().any(|&b| b == b'\r' || b == b'\n')
}

/// Whether a header value read back (content type, validators) is one: visible ASCII,
/// spaces and tabs.
pub(crate) fn header_value(value: &str) -> bool {
    value.bytes().all(|b| b == b'\t' || (b' '..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_messages_verify_only_on_their_channel_with_their_key() {
        let keys = Keys::new(&[1; 32]);
        let signed = keys.sign("t:{w}:ch", "end:401:7");
        assert_eq!(keys.verify("t:{w}:ch", &signed), Some("end:401:7"));
        assert_eq!(keys.verify("t:{v}:ch", &signed), None, "another channel's");
        assert_eq!(Keys::new(&[2; 32]).verify("t:{w}:ch", &signed), None, "another key's");
        assert_eq!(keys.verify("t:{w}:ch", "end:401"), None, "unsigned");
        assert_eq!(keys.verify("t:{w}:ch", &signed.replace("401", "403")), None, "changed");
        let forged = format!("end:401 {}", "0".repeat(SIGNATURE_HEX));
        assert_eq!(keys.verify("t:{w}:ch", &forged), None);
        assert_eq!(keys.verify("t:{w}:ch", "é"), None, "short, and not on a char boundary");
    }

    #[test]
    fn names_are_keyed() {
        let (a, b) = (Keys::new(&[1; 32]), Keys::new(&[2; 32]));
        assert_eq!(a.name("w"), a.name("w"));
        assert_eq!(a.name("w").len(), 32);
        assert_ne!(a.name("w"), b.name("w"));
        assert_ne!(a.name("w"), a.name("v"));
    }

    #[test]
    fn what_a_frame_can_carry() {
        assert!(event_name("task.created") && event_name("upstream-status"));
        for bad in ["", "change\nid: 1-9", "change\r", "a\revent: x"] {
            assert!(!event_name(bad), "{bad:?}");
        }
        assert!(one_line(br#"{"a":"line\nbreak"}"#), "an escaped newline is one line");
        assert!(!one_line(b"{}\nid: 1-9") && !one_line(b"{}\r"));
        assert!(header_value("application/json; charset=utf-8") && header_value("W/\"a\tb\""));
        assert!(!header_value("a\r\nset-cookie: x") && !header_value("\u{7f}"));
    }
}
