//! Records as both stores keep them: JSON, subscriptions sealed when there is a key, and what
//! is known of a message whose record cannot be read.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::seal::{is_sealed, Sealer};
use crate::{Message, MessageStatus, StoreError, Subscription};

pub(crate) fn decode<T: DeserializeOwned>(key: impl std::fmt::Display, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt { key: key.to_string(), source })
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialize")
}

/// A subscription record, opened with `sealer` when it is sealed.
pub(crate) fn open_subscription(sealer: Option<&Sealer>, id: &str, bytes: &[u8]) -> Result<Subscription, StoreError> {
    if !is_sealed(bytes) {
        return decode(id, bytes);
    }
    let sealer = sealer.ok_or(StoreError::KeyNeeded)?;
    let plain = sealer.open(id.as_bytes(), bytes).ok_or_else(|| StoreError::Sealed { key: id.to_string() })?;
    decode(id, &plain)
}

/// A subscription record as stored: sealed when there is a key.
pub(crate) fn seal_subscription(sealer: Option<&Sealer>, sub: &Subscription) -> Vec<u8> {
    let plain = encode(sub);
    match sealer {
        Some(sealer) => sealer.seal(sub.id.as_bytes(), &plain),
        None => plain,
    }
}

/// What is known of a message whose record cannot be decoded.
pub(crate) fn unreadable_record(subscription: &str, id: &str, reason: &dyn std::fmt::Display, now: u64) -> Message {
    Message {
        id: id.to_string(),
        subscription: subscription.to_string(),
        event_type: String::new(),
        payload: String::new(),
        created_at: now,
        status: MessageStatus::Dead,
        attempts: 0,
        next_attempt: 0,
        last_attempt: None,
        last_status: None,
        last_error: Some(format!("unreadable record: {reason}")),
    }
}
