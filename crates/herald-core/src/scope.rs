//! Credential scopes: which subscribers may share a watch.

use std::fmt;

/// The credential scope of a watch: everybody, or the holders of one set of `vary` header values.
///
/// Only a keyed hash of the credentials is kept here, so a scope can be logged, shown in
/// /admin/watches and used as a map key without exposing a token.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Everybody,
    Credential([u8; 32]),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Everybody => f.write_str("-"),
            // 16 hex digits are plenty to tell scopes apart in admin output.
            Scope::Credential(h) => h[..8].iter().try_for_each(|b| write!(f, "{b:02x}")),
        }
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scope({self})")
    }
}

/// Hashes credentials into scopes with a process-wide key, so that the hash of a known token
/// cannot be looked up in a table computed elsewhere.
#[derive(Clone)]
pub struct ScopeHasher {
    key: [u8; 32],
}

impl ScopeHasher {
    pub fn new(key: [u8; 32]) -> Self {
        ScopeHasher { key }
    }

    /// The scope of a request presenting these `(lower-case name, value)` headers, in `vary` order.
    /// Absent headers count as empty, and names are part of the hash, so `a: x` ≠ `b: x`.
    pub fn scope<'a>(&self, headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>) -> Scope {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        for (name, value) in headers {
            h.update(name.as_bytes());
            match value {
                Some(v) => {
                    h.update(b"=");
                    h.update(&(v.len() as u64).to_le_bytes());
                    h.update(v);
                }
                None => {
                    h.update(b"!");
                }
            }
        }
        Scope::Credential(*h.finalize().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_separate_credentials() {
        let h = ScopeHasher::new([7; 32]);
        let alice = h.scope([("authorization", Some(&b"Bearer alice"[..]))]);
        let bob = h.scope([("authorization", Some(&b"Bearer bob"[..]))]);
        let alice2 = h.scope([("authorization", Some(&b"Bearer alice"[..]))]);
        let none = h.scope([("authorization", None)]);
        let empty = h.scope([("authorization", Some(&b""[..]))]);
        assert_eq!(alice, alice2);
        assert_ne!(alice, bob);
        assert_ne!(none, empty);
        let other_key = ScopeHasher::new([8; 32]).scope([("authorization", Some(&b"Bearer alice"[..]))]);
        assert_ne!(alice, other_key);
        assert!(!format!("{alice} {alice:?}").contains("alice"));
    }
}
