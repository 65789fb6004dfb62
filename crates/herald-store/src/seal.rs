//! Encryption at rest for the records that hold secrets (webhook subscriptions: their signing
//! secrets and the headers presented upstream), with `storage.encryption_key`.
//!
//! ChaCha20-Poly1305 from ring (the TLS stack's own crypto provider, so no second one): a random
//! 96-bit nonce per record, and the record's key as associated data, so a sealed record cannot
//! be moved to another key unnoticed. Where a stored value must be compared byte for byte (a
//! webhook watch's state, checked by a Redis script before it is replaced), the nonce is derived
//! from the record instead ([`Sealer::seal_fixed`]): the same record seals to the same bytes, and
//! nothing else is revealed but that two records are equal.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};

/// Starts every sealed record; JSON records start with `{`, so the two never mix up.
const MAGIC: &[u8] = b"hse1";

pub(crate) struct Sealer {
    key: LessSafeKey,
    /// Derives the nonces of [`Sealer::seal_fixed`] (a keyed hash of the record).
    nonces: [u8; 32],
}

impl Sealer {
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        let nonces = blake3::derive_key("herald seal fixed nonce v1", key);
        let key = UnboundKey::new(&CHACHA20_POLY1305, key).expect("a 32-byte key fits ChaCha20-Poly1305");
        Sealer { key: LessSafeKey::new(key), nonces }
    }

    /// `MAGIC`, the nonce, then the ciphertext with its tag.
    pub(crate) fn seal(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random source works");
        self.seal_with(nonce, aad, plain)
    }

    /// Seals deterministically: the nonce is a keyed hash of `aad` and `plain`, so equal records
    /// seal to equal bytes (distinct ones still get distinct nonces). Opened by [`Sealer::open`].
    pub(crate) fn seal_fixed(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut h = blake3::Hasher::new_keyed(&self.nonces);
        h.update(&(aad.len() as u64).to_le_bytes());
        h.update(aad);
        h.update(plain);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&h.finalize().as_bytes()[..NONCE_LEN]);
        self.seal_with(nonce, aad, plain)
    }

    fn seal_with(&self, nonce: [u8; NONCE_LEN], aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + plain.len() + CHACHA20_POLY1305.tag_len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut body)
            .expect("records are far below ChaCha20-Poly1305's length limit");
        out.extend_from_slice(&body);
        out
    }

    /// The plain record, or `None` when it was sealed with another key, for another record, or
    /// was changed.
    pub(crate) fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        let rest = sealed.strip_prefix(MAGIC)?;
        let (nonce, body) = rest.split_at_checked(NONCE_LEN)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = body.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(aad), &mut body).ok()?;
        Some(plain.to_vec())
    }
}

/// Whether `bytes` is a sealed record.
pub(crate) fn is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_records_open_only_with_their_key_and_their_name() {
        let sealer = Sealer::new(&[1; 32]);
        let plain = br#"{"secret":"whsec_abc"}"#;
        let sealed = sealer.seal(b"ep_1", plain);
        assert!(is_sealed(&sealed));
        assert!(!sealed.windows(5).any(|w| w == b"whsec"), "the secret is not in the clear");
        assert_eq!(sealer.open(b"ep_1", &sealed).as_deref(), Some(&plain[..]));
        assert_eq!(sealer.open(b"ep_2", &sealed), None, "moved to another record");
        assert_eq!(Sealer::new(&[2; 32]).open(b"ep_1", &sealed), None, "another key");
        let mut changed = sealed.clone();
        *changed.last_mut().unwrap() ^= 1;
        assert_eq!(sealer.open(b"ep_1", &changed), None);
        assert_ne!(sealer.seal(b"ep_1", plain), sealed, "a fresh nonce each time");
        assert!(!is_sealed(plain));
    }

    #[test]
    fn fixed_seals_are_equal_for_equal_records_only() {
        let sealer = Sealer::new(&[1; 32]);
        let sealed = sealer.seal_fixed(b"w", b"[1,2]");
        assert_eq!(sealer.seal_fixed(b"w", b"[1,2]"), sealed, "the same bytes each time");
        assert_ne!(sealer.seal_fixed(b"w", b"[1,3]"), sealed);
        assert_ne!(sealer.seal_fixed(b"v", b"[1,2]"), sealed);
        assert_ne!(Sealer::new(&[2; 32]).seal_fixed(b"w", b"[1,2]"), sealed);
        assert_eq!(sealer.open(b"w", &sealed).as_deref(), Some(&b"[1,2]"[..]));
        assert_eq!(sealer.open(b"v", &sealed), None);
    }
}
