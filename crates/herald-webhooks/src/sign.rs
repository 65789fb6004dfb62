//! Standard Webhooks signatures: `v1,` + base64 HMAC-SHA256 of `id.timestamp.body`, keyed with
//! the base64-decoded part of the secret after `whsec_`. HMAC is ring's (already linked for TLS).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::hmac;

/// A secret's signing key; `None` when `secret` is not `whsec_` + base64.
pub fn key(secret: &str) -> Option<hmac::Key> {
    let bytes = STANDARD.decode(secret.strip_prefix("whsec_")?).ok()?;
    Some(hmac::Key::new(hmac::HMAC_SHA256, &bytes))
}

/// One `v1,<base64>` signature.
pub fn sign(key: &hmac::Key, id: &str, timestamp: u64, body: &[u8]) -> String {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(id.as_bytes());
    ctx.update(b".");
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()))
}

/// The `webhook-signature` header value: one signature per live secret, space-separated.
pub fn signature_header(keys: &[hmac::Key], id: &str, timestamp: u64, body: &[u8]) -> String {
    keys.iter().map(|k| sign(k, id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

/// A new secret: `whsec_` + base64 of 32 random bytes.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).expect("the OS random source works");
    format!("whsec_{}", STANDARD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks specification's own test vector.
    #[test]
    fn reproduces_the_specification_vector() {
        let key = key("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let sig = sign(
            &key,
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(sig, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    #[test]
    fn two_live_secrets_give_two_signatures() {
        let (a, b) = (generate_secret(), generate_secret());
        assert_ne!(a, b);
        herald_config::check_secret(&a).unwrap();
        let header = signature_header(&[key(&a).unwrap(), key(&b).unwrap()], "msg_1", 1, b"{}");
        let parts: Vec<_> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1], sign(&key(&b).unwrap(), "msg_1", 1, b"{}"));
        assert!(key("nope").is_none());
    }
}
