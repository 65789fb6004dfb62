//! Durable state: webhook subscriptions, the delivery queue, and the representation each webhook
//! watch last saw, behind one [`Store`] trait.
//!
//! The trait speaks in whole operations (record a change with its messages, complete a batch of
//! attempts), never in keys, so that a Redis implementation for cluster mode (a consumer-group
//! queue, leases) fits behind it. This version has one implementation, [`RedbStore`]: `embedded`
//! keeps one redb file under `storage.path` (every commit is fsynced, so what a call reported as
//! stored survives `kill -9`); `memory` runs the same code over redb's in-memory backend.
#![forbid(unsafe_code)]

mod record;
mod redb_store;
pub mod redis;
mod seal;

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

pub use redb_store::RedbStore;

/// A storage error: the store could not be opened, read or written. Every one comes from
/// storage (its message starts with `storage`), the backend's own error kept as its source.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend (redb, Redis, the file system) failed while doing `what`.
    #[error("storage: {what}: {source}")]
    Backend {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The backend did not answer `what` in time.
    #[error("storage: {what}: no answer within {after:?}")]
    TimedOut { what: String, after: std::time::Duration },
    /// What the backend holds, or is told to use, is not what herald expects.
    #[error("storage: {0}")]
    Invalid(String),
    #[error("storage: corrupt record {key}: {source}")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("storage: record {key} cannot be decrypted with storage.encryption_key")]
    Sealed { key: String },
    #[error("storage.encryption_key is not the key this store was encrypted with")]
    WrongKey,
    #[error("this store is encrypted: set storage.encryption_key to the key it was written with")]
    KeyNeeded,
    #[error("storage: {0} is in use by another herald process")]
    InUse(String),
}

impl StoreError {
    /// The backend's error `source` while doing `what`.
    pub(crate) fn backend(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        StoreError::Backend { what: what.into(), source: source.into() }
    }
}

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A webhook subscription as stored. `secret` and `headers` are secrets: the API never returns
/// them after creation, logs never show them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub url: String,
    /// Concrete upstream path (+ query) the subscription watches.
    pub path: String,
    /// Event types, `*` allowed as the last segment; empty: every event.
    pub filter: Vec<String>,
    /// `rich` or `lean`; `None`: the route's.
    pub payload: Option<String>,
    pub secret: String,
    /// The secret before the last rotation, and until when (unix ms) it keeps signing.
    pub previous_secret: Option<(String, u64)>,
    pub headers: Vec<(String, String)>,
    pub description: Option<String>,
    pub status: SubscriptionStatus,
    /// Declared in the configuration file (not deletable through the API).
    pub declared: bool,
    pub created_at: u64,
    /// Since when (unix ms) every attempt has failed; `None` after a success.
    pub failing_since: Option<u64>,
    /// A keyed hash of the API key that created it: only that key sees it. `None`: declared in
    /// the configuration (or stored before owners were kept), visible to every key.
    #[serde(default)]
    pub owner: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscriptionStatus {
    Active,
    Paused,
    /// By a `410`, or after failing for `disable_after`; a PATCH to `active` re-enables it.
    Disabled,
    /// The upstream refused the subscription's own credentials (401/403): its watch and its
    /// deliveries stop; a PATCH to `active` re-enables it.
    Unauthorized,
}

impl SubscriptionStatus {
    /// Whether nothing is watched or delivered for the subscription until it is re-enabled.
    pub fn stopped(self) -> bool {
        matches!(self, SubscriptionStatus::Disabled | SubscriptionStatus::Unauthorized)
    }
}

/// One event for one subscription: the unit of delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `msg_…`, sent as `webhook-id` on every attempt; ordered by creation.
    pub id: String,
    pub subscription: String,
    pub event_type: String,
    /// The request body, exactly as signed: `{"type","timestamp","data"}`.
    pub payload: String,
    pub created_at: u64,
    pub status: MessageStatus,
    pub attempts: u32,
    /// When the next attempt is due (unix ms), while pending.
    pub next_attempt: u64,
    pub last_attempt: Option<u64>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    Pending,
    Delivered,
    Dead,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Pending => "pending",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Dead => "dead",
        }
    }
}

/// An attempt's outcome: the message as it is now, and the due time it was taken at.
#[derive(Debug, Clone)]
pub struct Attempted {
    pub message: Message,
    pub taken_due: u64,
}

/// What [`Store::subscriptions_since`] found.
#[derive(Debug)]
pub enum Subscriptions {
    Unchanged,
    Changed {
        generation: u64,
        subs: Vec<Subscription>,
    },
    /// The store lost its data: what it holds must not replace what a replica knows.
    Lost,
}

/// The durable state herald keeps. Every method is one atomic operation.
pub trait Store: Send + Sync + 'static {
    /// The key credential scopes are hashed with, created on first use, so that watch keys of
    /// per-subscriber webhook watches stay the same across restarts.
    fn scope_key(&self) -> StoreFuture<'_, [u8; 32]>;

    fn put_subscription(&self, sub: Subscription) -> StoreFuture<'_, ()>;
    fn subscription(&self, id: String) -> StoreFuture<'_, Option<Subscription>>;
    fn subscriptions(&self) -> StoreFuture<'_, Vec<Subscription>>;
    /// Removes a subscription and every message of it; `false` if there was none.
    fn delete_subscription(&self, id: String) -> StoreFuture<'_, bool>;

    /// The representation (canonical JSON) a webhook watch last recorded.
    fn watch_state(&self, key: String) -> StoreFuture<'_, Option<Vec<u8>>>;
    /// Stores a watch's new representation and the messages its change produced, together, if
    /// the representation stored is still `expected` (the one the change was diffed from);
    /// `false`: another process recorded a change meanwhile, nothing was written.
    fn record_change(
        &self,
        key: String,
        expected: Option<Vec<u8>>,
        data: Vec<u8>,
        messages: Vec<Message>,
    ) -> StoreFuture<'_, bool>;
    /// Adds messages (a ping, …) to the queue.
    fn enqueue(&self, messages: Vec<Message>) -> StoreFuture<'_, ()>;

    /// Pending messages due at `now`, oldest due first, at most `limit`, leaving out `skip`
    /// (those already being attempted). A record that cannot be read is set aside as `dead`
    /// with the reason, never returned and never in the way of those after it.
    fn due(&self, now: u64, limit: usize, skip: Vec<String>) -> StoreFuture<'_, Vec<Message>>;
    /// When the earliest pending message is due.
    fn next_due(&self) -> StoreFuture<'_, Option<u64>>;
    /// Records attempts' outcomes. A message whose subscription is gone is not written back.
    fn complete(&self, attempts: Vec<Attempted>) -> StoreFuture<'_, ()>;
    /// Gives back messages `due` returned that a stopping process will not attempt to the end:
    /// due at `now` again, for any process. The embedded store has nothing to do: what its one
    /// process took is still due there.
    fn hand_back(&self, _ids: Vec<String>, _now: u64) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
    /// Pending messages (the queue depth).
    fn pending(&self) -> StoreFuture<'_, u64>;

    /// A subscription's messages, newest first, without their payloads (`payload` is empty):
    /// a listing never reads the bodies.
    fn messages(
        &self,
        subscription: String,
        status: Option<MessageStatus>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<Message>>;
    /// Makes the messages created at or after `since` pending again, due at `now`; how many.
    fn replay(&self, subscription: String, since: u64, now: u64) -> StoreFuture<'_, u64>;
    /// Forgets delivered messages created before `delivered_before`, dead ones before
    /// `dead_before`, and the oldest finished ones beyond `keep` per subscription.
    fn prune(&self, delivered_before: u64, dead_before: u64, keep: usize) -> StoreFuture<'_, u64>;
    /// Answers when the store can be read (for /readyz).
    fn check(&self) -> StoreFuture<'_, ()>;
    /// Cluster mode: the subscriptions, if any process changed them since generation `seen`,
    /// read at one point in time; [`Subscriptions::Lost`] when the store lost its data behind
    /// herald's back (Redis restarted without persistence, or failed over to a replica that had
    /// none), so that nothing read from it replaces what a replica holds. The embedded store
    /// has one process: always unchanged.
    fn subscriptions_since(&self, _seen: Option<u64>) -> StoreFuture<'_, Subscriptions> {
        Box::pin(async { Ok(Subscriptions::Unchanged) })
    }
    /// After the store lost its data: writes back `scope_key` and those of `subs` it does not
    /// hold (what a replica holds in memory; one written since by another process wins), then
    /// marks itself whole again. `false` when the store holds another scope key already (a
    /// process started on the empty store meanwhile and made one).
    fn restore(&self, _scope_key: [u8; 32], _subs: Vec<Subscription>) -> StoreFuture<'_, bool> {
        Box::pin(async { Ok(true) })
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// A new message id: `msg_`, the creation time and a counter (so ids sort by creation), and
/// random bits (so ids from two processes never collide).
pub fn message_id(now: u64) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) & 0xff_ffff;
    let mut r = [0u8; 4];
    getrandom::fill(&mut r).expect("the OS random source works");
    format!("msg_{now:012x}{n:06x}{:08x}", u32::from_le_bytes(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_sort_by_creation() {
        let a = message_id(1_700_000_000_000);
        let b = message_id(1_700_000_000_000);
        let c = message_id(1_700_000_000_001);
        assert!(a < b && b < c, "{a} {b} {c}");
        assert_eq!(a.len(), 4 + 12 + 6 + 8);
    }
}
