//! The embedded store: redb tables, one write transaction per operation. redb is synchronous
//! and a commit waits for fsync, so every call runs on the blocking pool.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::record::{decode, encode, open_subscription, seal_subscription, unreadable_record};
use crate::seal::{is_sealed, Sealer};
use crate::{Attempted, Message, MessageStatus, Store, StoreError, StoreFuture, Subscription};

/// Subscription id → JSON.
const SUBSCRIPTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("subscriptions");
/// (subscription id, message id) → JSON of the message, its `payload` replaced by the payload's
/// key in PAYLOADS. Message ids sort by creation.
const MESSAGES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("messages");
/// Payload key (blake3 of the body) → body. One event sent to a hundred subscriptions is stored
/// once; outcomes rewrite only the small message records.
const PAYLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("payloads");
/// (due ms, subscription id, message id) for every pending message: the queue.
const DUE: TableDefinition<(u64, &str, &str), ()> = TableDefinition::new("due");
/// Webhook watch key → canonical JSON of its last representation.
const WATCHES: TableDefinition<&str, &[u8]> = TableDefinition::new("watches");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// redb's page cache (its default is 1 GiB): bounds herald's memory whatever the file's size.
const CACHE_BYTES: usize = 64 << 20;

/// The file inside `storage.path`.
pub(crate) const FILE_NAME: &str = "herald.redb";

#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    /// With `storage.encryption_key`: subscriptions are stored sealed.
    sealer: Option<Arc<Sealer>>,
    /// When a commit last reached the disk (see [`RedbStore::complete`]).
    last_durable: Arc<Mutex<Instant>>,
}

/// Delivery outcomes may wait this long for an fsync.
const OUTCOMES_DURABLE_WITHIN: Duration = Duration::from_secs(1);

fn backend(e: impl Into<redb::Error>) -> StoreError {
    StoreError::backend("redb", e.into())
}

type Tx = redb::WriteTransaction;

impl RedbStore {
    /// Opens (or creates) `dir/herald.redb`, readable by its owner only (mode 0600). With
    /// `encryption_key`, subscriptions are stored sealed (those written before without a key are
    /// sealed now); a key other than the one the store was sealed with is an error.
    pub fn open(dir: &Path, encryption_key: Option<&[u8; 32]>) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::backend(format!("cannot create {}", dir.display()), e))?;
        let path = dir.join(FILE_NAME);
        owner_only(&path).map_err(|e| StoreError::backend(path.display().to_string(), e))?;
        let db = Database::builder().set_cache_size(CACHE_BYTES).create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse(path.display().to_string()),
            e => StoreError::backend(path.display().to_string(), e),
        })?;
        Self::init(db, encryption_key)
    }

    /// A store that keeps nothing once the process ends.
    pub fn memory() -> Result<Self, StoreError> {
        let db = Database::builder().create_with_backend(redb::backends::InMemoryBackend::new()).map_err(backend)?;
        Self::init(db, None)
    }

    fn init(db: Database, encryption_key: Option<&[u8; 32]>) -> Result<Self, StoreError> {
        let sealer = encryption_key.map(|k| Arc::new(Sealer::new(k)));
        let tx = db.begin_write().map_err(backend)?;
        let mut subs = tx.open_table(SUBSCRIPTIONS).map_err(backend)?;
        tx.open_table(MESSAGES).map_err(backend)?;
        tx.open_table(DUE).map_err(backend)?;
        tx.open_table(PAYLOADS).map_err(backend)?;
        tx.open_table(WATCHES).map_err(backend)?;
        let mut meta = tx.open_table(META).map_err(backend)?;
        let check = meta.get(KEY_CHECK).map_err(backend)?.map(|v| v.value().to_vec());
        match (&sealer, check) {
            (Some(sealer), Some(check)) => {
                sealer.open(KEY_CHECK.as_bytes(), &check).ok_or(StoreError::WrongKey)?;
            }
            (Some(sealer), None) => {
                meta.insert(KEY_CHECK, sealer.seal(KEY_CHECK.as_bytes(), b"herald").as_slice()).map_err(backend)?;
            }
            (None, Some(_)) => return Err(StoreError::KeyNeeded),
            (None, None) => {}
        }
        if let Some(sealer) = &sealer {
            let plain: Vec<(String, Vec<u8>)> = subs
                .iter()
                .map_err(backend)?
                .filter_map(|row| row.ok())
                .filter(|(_, v)| !is_sealed(v.value()))
                .map(|(k, v)| (k.value().to_string(), v.value().to_vec()))
                .collect();
            for (id, record) in plain {
                subs.insert(id.as_str(), sealer.seal(id.as_bytes(), &record).as_slice()).map_err(backend)?;
            }
        }
        drop((subs, meta));
        tx.commit().map_err(backend)?;
        Ok(RedbStore { db: Arc::new(db), sealer, last_durable: Arc::new(Mutex::new(Instant::now())) })
    }

    /// Runs `f` in a write transaction on the blocking pool and commits it to the disk.
    fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Tx) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<'_, T> {
        self.write_with(true, f)
    }

    /// [`RedbStore::write`]; when `durable` is false the commit skips the fsync unless none
    /// reached the disk for [`OUTCOMES_DURABLE_WITHIN`]. A crash loses at most that much of
    /// such commits (redb falls back to the last durable one).
    fn write_with<T: Send + 'static>(
        &self,
        durable: bool,
        f: impl FnOnce(&Tx) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<'_, T> {
        let (db, last_durable) = (self.db.clone(), self.last_durable.clone());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut tx = db.begin_write().map_err(backend)?;
                let sync = durable || last_durable.lock().unwrap().elapsed() >= OUTCOMES_DURABLE_WITHIN;
                if !sync {
                    tx.set_durability(redb::Durability::None).map_err(backend)?;
                }
                let out = f(&tx)?;
                tx.commit().map_err(backend)?;
                if sync {
                    *last_durable.lock().unwrap() = Instant::now();
                }
                Ok(out)
            })
            .await
            .map_err(|e| StoreError::backend("storage task", e))?
        })
    }

    fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<'_, T> {
        let db = self.db.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || f(&db.begin_read().map_err(backend)?))
                .await
                .map_err(|e| StoreError::backend("storage task", e))?
        })
    }
}

/// META's record sealed with the store's key: tells a wrong key from the right one at start.
const KEY_CHECK: &str = "key_check";

/// Creates `path` if needed, and makes it readable and writable by its owner only.
fn owner_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

fn payload_key(body: &str) -> String {
    blake3::hash(body.as_bytes()).to_hex()[..32].to_string()
}

/// A message as stored: its payload replaced by the payload's key.
fn stored(m: &Message) -> Message {
    Message { payload: payload_key(&m.payload), ..m.clone() }
}

/// Writes new messages, their payloads and their queue entries.
fn insert_messages(tx: &Tx, messages: &[Message]) -> Result<(), StoreError> {
    let mut payloads = tx.open_table(PAYLOADS).map_err(backend)?;
    let mut written = HashSet::new();
    let records: Vec<Message> = messages.iter().map(stored).collect();
    for (m, record) in messages.iter().zip(&records) {
        if written.insert(record.payload.as_str()) && payloads.get(record.payload.as_str()).map_err(backend)?.is_none()
        {
            payloads.insert(record.payload.as_str(), m.payload.as_bytes()).map_err(backend)?;
        }
    }
    put_records(tx, &records)
}

/// Writes message records (payloads already stored) and their queue entries.
fn put_records(tx: &Tx, records: &[Message]) -> Result<(), StoreError> {
    let mut table = tx.open_table(MESSAGES).map_err(backend)?;
    let mut due = tx.open_table(DUE).map_err(backend)?;
    for m in records {
        table.insert((m.subscription.as_str(), m.id.as_str()), encode(m).as_slice()).map_err(backend)?;
        if m.status == MessageStatus::Pending {
            due.insert((m.next_attempt, m.subscription.as_str(), m.id.as_str()), ()).map_err(backend)?;
        }
    }
    Ok(())
}

/// A queued message that could not be read, and why.
struct Unreadable {
    due: u64,
    subscription: String,
    id: String,
    /// The record, when only its payload was missing.
    record: Option<Message>,
    reason: String,
}

/// Takes unreadable messages out of the queue and keeps them as `dead`, with the reason, so
/// an operator can see them (and delete the subscription or replay).
fn set_aside(tx: &Tx, unreadable: &[Unreadable], now: u64) -> Result<(), StoreError> {
    let mut due = tx.open_table(DUE).map_err(backend)?;
    let mut messages = tx.open_table(MESSAGES).map_err(backend)?;
    for u in unreadable {
        due.remove((u.due, u.subscription.as_str(), u.id.as_str())).map_err(backend)?;
        let mut m = u.record.clone().unwrap_or_else(|| unreadable_record(&u.subscription, &u.id, &u.reason, now));
        m.status = MessageStatus::Dead;
        m.last_error = Some(format!("unreadable record set aside: {}", u.reason));
        messages.insert((u.subscription.as_str(), u.id.as_str()), encode(&m).as_slice()).map_err(backend)?;
        tracing::error!(message = %u.id, subscription = %u.subscription, reason = %u.reason, "unreadable queued message set aside as dead");
    }
    Ok(())
}

/// Turns stored records back into messages, payloads looked up once per key.
struct Loader<T> {
    payloads: T,
    seen: HashMap<String, String>,
}

impl<T: ReadableTable<&'static str, &'static [u8]>> Loader<T> {
    fn new(payloads: T) -> Self {
        Loader { payloads, seen: HashMap::new() }
    }

    fn load(&mut self, id: &str, bytes: &[u8]) -> Result<Message, StoreError> {
        self.resolve(decode(id, bytes)?)
    }

    /// A stored record with its payload put back.
    fn resolve(&mut self, mut m: Message) -> Result<Message, StoreError> {
        let id = m.id.as_str();
        if let Some(body) = self.seen.get(&m.payload) {
            m.payload = body.clone();
            return Ok(m);
        }
        let body = match self.payloads.get(m.payload.as_str()).map_err(backend)? {
            Some(v) => String::from_utf8_lossy(v.value()).into_owned(),
            None => return Err(StoreError::Invalid(format!("message {id}: its payload is missing"))),
        };
        self.seen.insert(std::mem::replace(&mut m.payload, body.clone()), body);
        Ok(m)
    }
}

impl Store for RedbStore {
    fn scope_key(&self) -> StoreFuture<'_, [u8; 32]> {
        self.write(|tx| {
            let mut meta = tx.open_table(META).map_err(backend)?;
            if let Some(v) = meta.get("scope_key").map_err(backend)? {
                if let Ok(key) = <[u8; 32]>::try_from(v.value()) {
                    return Ok(key);
                }
            }
            let mut key = [0u8; 32];
            getrandom::fill(&mut key).map_err(|e| StoreError::backend("random source", e))?;
            meta.insert("scope_key", key.as_slice()).map_err(backend)?;
            Ok(key)
        })
    }

    fn put_subscription(&self, sub: Subscription) -> StoreFuture<'_, ()> {
        let record = seal_subscription(self.sealer.as_deref(), &sub);
        self.write(move |tx| {
            let mut t = tx.open_table(SUBSCRIPTIONS).map_err(backend)?;
            t.insert(sub.id.as_str(), record.as_slice()).map_err(backend)?;
            Ok(())
        })
    }

    fn subscription(&self, id: String) -> StoreFuture<'_, Option<Subscription>> {
        let sealer = self.sealer.clone();
        self.read(move |tx| {
            let t = tx.open_table(SUBSCRIPTIONS).map_err(backend)?;
            let v = t.get(id.as_str()).map_err(backend)?;
            v.map(|v| open_subscription(sealer.as_deref(), &id, v.value())).transpose()
        })
    }

    fn subscriptions(&self) -> StoreFuture<'_, Vec<Subscription>> {
        let sealer = self.sealer.clone();
        self.read(move |tx| {
            let t = tx.open_table(SUBSCRIPTIONS).map_err(backend)?;
            let mut out = Vec::new();
            for row in t.iter().map_err(backend)? {
                let (k, v) = row.map_err(backend)?;
                out.push(open_subscription(sealer.as_deref(), k.value(), v.value())?);
            }
            Ok(out)
        })
    }

    fn delete_subscription(&self, id: String) -> StoreFuture<'_, bool> {
        self.write(move |tx| {
            let existed =
                tx.open_table(SUBSCRIPTIONS).map_err(backend)?.remove(id.as_str()).map_err(backend)?.is_some();
            let mut messages = tx.open_table(MESSAGES).map_err(backend)?;
            let mut due = tx.open_table(DUE).map_err(backend)?;
            let gone = messages
                .extract_from_if((id.as_str(), "")..(id.as_str(), "\u{10ffff}"), |_, _| true)
                .map_err(backend)?;
            for row in gone {
                let (k, v) = row.map_err(backend)?;
                let m: Message = decode(k.value().1, v.value())?;
                if m.status == MessageStatus::Pending {
                    due.remove((m.next_attempt, m.subscription.as_str(), m.id.as_str())).map_err(backend)?;
                }
            }
            Ok(existed)
        })
    }

    fn watch_state(&self, key: String) -> StoreFuture<'_, Option<Vec<u8>>> {
        self.read(move |tx| {
            let t = tx.open_table(WATCHES).map_err(backend)?;
            Ok(t.get(key.as_str()).map_err(backend)?.map(|v| v.value().to_vec()))
        })
    }

    fn record_change(
        &self,
        key: String,
        expected: Option<Vec<u8>>,
        data: Vec<u8>,
        messages: Vec<Message>,
    ) -> StoreFuture<'_, bool> {
        self.write(move |tx| {
            let mut watches = tx.open_table(WATCHES).map_err(backend)?;
            let stored = watches.get(key.as_str()).map_err(backend)?.map(|v| v.value().to_vec());
            if stored != expected {
                return Ok(false);
            }
            watches.insert(key.as_str(), data.as_slice()).map_err(backend)?;
            drop(watches);
            insert_messages(tx, &messages)?;
            Ok(true)
        })
    }

    fn enqueue(&self, messages: Vec<Message>) -> StoreFuture<'_, ()> {
        self.write(move |tx| insert_messages(tx, &messages))
    }

    fn due(&self, now: u64, limit: usize, skip: Vec<String>) -> StoreFuture<'_, Vec<Message>> {
        Box::pin(async move {
            let (out, unreadable) = self
                .read(move |tx| {
                    let skip: HashSet<String> = skip.into_iter().collect();
                    let due = tx.open_table(DUE).map_err(backend)?;
                    let messages = tx.open_table(MESSAGES).map_err(backend)?;
                    let mut loader = Loader::new(tx.open_table(PAYLOADS).map_err(backend)?);
                    let (mut out, mut unreadable) = (Vec::new(), Vec::new());
                    for row in due.range(..(now + 1, "", "")).map_err(backend)? {
                        if out.len() >= limit {
                            break;
                        }
                        let (k, _) = row.map_err(backend)?;
                        let (due_at, sub, id) = k.value();
                        if skip.contains(id) {
                            continue;
                        }
                        let Some(v) = messages.get((sub, id)).map_err(backend)? else { continue };
                        match loader.load(id, v.value()) {
                            Ok(m) => out.push(m),
                            Err(e) => unreadable.push(Unreadable {
                                due: due_at,
                                subscription: sub.to_string(),
                                id: id.to_string(),
                                record: decode(id, v.value()).ok(),
                                reason: e.to_string(),
                            }),
                        }
                    }
                    Ok((out, unreadable))
                })
                .await?;
            if !unreadable.is_empty() {
                self.write(move |tx| set_aside(tx, &unreadable, now)).await?;
            }
            Ok(out)
        })
    }

    fn next_due(&self) -> StoreFuture<'_, Option<u64>> {
        self.read(|tx| {
            let due = tx.open_table(DUE).map_err(backend)?;
            let first = due.first().map_err(backend)?.map(|(k, _)| k.value().0);
            Ok(first)
        })
    }

    /// Outcomes are committed without waiting for the disk, and reach it within a second (with
    /// the next durable commit). A crash in between loses only outcomes: those messages are
    /// delivered again, which at-least-once delivery allows (receivers deduplicate on webhook-id).
    fn complete(&self, attempts: Vec<Attempted>) -> StoreFuture<'_, ()> {
        self.write_with(false, move |tx| {
            let mut messages = tx.open_table(MESSAGES).map_err(backend)?;
            let mut due = tx.open_table(DUE).map_err(backend)?;
            for a in &attempts {
                let m = &a.message;
                let key = (m.subscription.as_str(), m.id.as_str());
                if messages.get(key).map_err(backend)?.is_none() {
                    continue; // deleted meanwhile
                }
                due.remove((a.taken_due, key.0, key.1)).map_err(backend)?;
                if m.status == MessageStatus::Pending {
                    due.insert((m.next_attempt, key.0, key.1), ()).map_err(backend)?;
                }
                messages.insert(key, encode(&stored(m)).as_slice()).map_err(backend)?;
            }
            Ok(())
        })
    }

    fn pending(&self) -> StoreFuture<'_, u64> {
        self.read(|tx| tx.open_table(DUE).map_err(backend)?.len().map_err(backend))
    }

    fn messages(
        &self,
        subscription: String,
        status: Option<MessageStatus>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<Message>> {
        self.read(move |tx| {
            let t = tx.open_table(MESSAGES).map_err(backend)?;
            let mut out = Vec::new();
            let range = (subscription.as_str(), "")..(subscription.as_str(), "\u{10ffff}");
            for row in t.range(range).map_err(backend)?.rev() {
                let (k, v) = row.map_err(backend)?;
                let (sub, id) = k.value();
                // Unreadable records are listed as what they are (the queue sets them aside).
                let mut m: Message = decode(id, v.value()).unwrap_or_else(|e| unreadable_record(sub, id, &e, 0));
                if status.is_none_or(|s| s == m.status) {
                    m.payload.clear();
                    out.push(m);
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
    }

    fn replay(&self, subscription: String, since: u64, now: u64) -> StoreFuture<'_, u64> {
        self.write(move |tx| {
            let t = tx.open_table(MESSAGES).map_err(backend)?;
            let mut again = Vec::new();
            let range = (subscription.as_str(), "")..(subscription.as_str(), "\u{10ffff}");
            for row in t.range(range).map_err(backend)? {
                let (k, v) = row.map_err(backend)?;
                let m: Message = decode(k.value().1, v.value())?;
                if m.created_at >= since && m.status != MessageStatus::Pending {
                    again.push(m);
                }
            }
            drop(t);
            for m in &mut again {
                m.status = MessageStatus::Pending;
                m.attempts = 0;
                m.next_attempt = now;
            }
            put_records(tx, &again)?;
            Ok(again.len() as u64)
        })
    }

    fn prune(&self, delivered_before: u64, dead_before: u64, keep: usize) -> StoreFuture<'_, u64> {
        self.write(move |tx| {
            let mut t = tx.open_table(MESSAGES).map_err(backend)?;
            // Per subscription, newest first: finished messages beyond `keep`, or old, go.
            let mut doomed: Vec<(String, String)> = Vec::new();
            let mut current: Option<(String, usize)> = None;
            for row in t.iter().map_err(backend)?.rev() {
                let (k, v) = row.map_err(backend)?;
                let (sub, id) = k.value();
                let m: Message = decode(id, v.value())?;
                let seen = match &mut current {
                    Some((s, n)) if s == sub => {
                        *n += 1;
                        *n
                    }
                    _ => {
                        current = Some((sub.to_string(), 1));
                        1
                    }
                };
                let old = match m.status {
                    MessageStatus::Pending => continue,
                    MessageStatus::Delivered => m.created_at < delivered_before,
                    MessageStatus::Dead => m.created_at < dead_before,
                };
                if old || seen > keep {
                    doomed.push((sub.to_string(), id.to_string()));
                }
            }
            for (sub, id) in &doomed {
                t.remove((sub.as_str(), id.as_str())).map_err(backend)?;
            }
            // Payloads no message refers to any more (pruned, or their subscription deleted).
            let mut referenced = HashSet::new();
            for row in t.iter().map_err(backend)? {
                let (k, v) = row.map_err(backend)?;
                referenced.insert(decode::<Message>(k.value().1, v.value())?.payload);
            }
            let mut payloads = tx.open_table(PAYLOADS).map_err(backend)?;
            payloads.retain(|key, _| referenced.contains(key)).map_err(backend)?;
            Ok(doomed.len() as u64)
        })
    }

    fn check(&self) -> StoreFuture<'_, ()> {
        self.read(|tx| tx.open_table(META).map(drop).map_err(backend))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{message_id, SubscriptionStatus};

    fn sub(id: &str) -> Subscription {
        Subscription {
            id: id.into(),
            url: "https://example.com/hook".into(),
            path: "/tasks".into(),
            filter: vec![],
            payload: None,
            secret: "whsec_x".into(),
            previous_secret: None,
            headers: vec![],
            description: None,
            status: SubscriptionStatus::Active,
            declared: false,
            created_at: 1,
            failing_since: None,
            owner: None,
        }
    }

    fn msg(sub: &str, created: u64) -> Message {
        Message {
            id: message_id(created),
            subscription: sub.into(),
            event_type: "task.created".into(),
            payload: "{}".into(),
            created_at: created,
            status: MessageStatus::Pending,
            attempts: 0,
            next_attempt: created,
            last_attempt: None,
            last_status: None,
            last_error: None,
        }
    }

    #[tokio::test]
    async fn survives_reopening_and_keeps_the_queue_in_due_order() {
        let dir = tempfile::tempdir().unwrap();
        let key = {
            let store = RedbStore::open(dir.path(), None).unwrap();
            store.put_subscription(sub("a")).await.unwrap();
            let (m1, m2) = (msg("a", 100), msg("a", 50));
            assert!(store.record_change("w".into(), None, b"[1]".to_vec(), vec![m1, m2]).await.unwrap());
            store.scope_key().await.unwrap()
        };
        let store = RedbStore::open(dir.path(), None).unwrap();
        assert_eq!(store.scope_key().await.unwrap(), key, "the scope key is kept");
        assert_eq!(store.subscriptions().await.unwrap(), [sub("a")]);
        assert_eq!(store.watch_state("w".into()).await.unwrap().as_deref(), Some(&b"[1]"[..]));
        assert_eq!(store.pending().await.unwrap(), 2);
        assert_eq!(store.next_due().await.unwrap(), Some(50));
        assert!(store.due(49, 10, vec![]).await.unwrap().is_empty());
        let due = store.due(1000, 10, vec![]).await.unwrap();
        assert_eq!(due.iter().map(|m| m.created_at).collect::<Vec<_>>(), [50, 100]);
        let skipped = store.due(1000, 10, vec![due[0].id.clone()]).await.unwrap();
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].created_at, 100);
    }

    #[tokio::test]
    async fn completing_moves_or_finishes_messages() {
        let store = RedbStore::memory().unwrap();
        store.put_subscription(sub("a")).await.unwrap();
        let (m1, m2) = (msg("a", 10), msg("a", 20));
        store.enqueue(vec![m1.clone(), m2.clone()]).await.unwrap();
        let mut retry = m1.clone();
        retry.attempts = 1;
        retry.next_attempt = 5000;
        let mut done = m2.clone();
        done.status = MessageStatus::Delivered;
        store
            .complete(vec![Attempted { message: retry, taken_due: 10 }, Attempted { message: done, taken_due: 20 }])
            .await
            .unwrap();
        assert_eq!(store.pending().await.unwrap(), 1);
        assert_eq!(store.next_due().await.unwrap(), Some(5000));
        let listed = store.messages("a".into(), None, 10).await.unwrap();
        assert_eq!(listed.iter().map(|m| m.created_at).collect::<Vec<_>>(), [20, 10], "newest first");
        let delivered = store.messages("a".into(), Some(MessageStatus::Delivered), 10).await.unwrap();
        assert_eq!(delivered.len(), 1);

        assert_eq!(store.replay("a".into(), 15, 7000).await.unwrap(), 1);
        assert_eq!(store.pending().await.unwrap(), 2);

        assert!(store.delete_subscription("a".into()).await.unwrap());
        assert_eq!(store.pending().await.unwrap(), 0);
        assert!(store.messages("a".into(), None, 10).await.unwrap().is_empty());
        // An attempt finishing after its subscription was deleted writes nothing back.
        store.complete(vec![Attempted { message: m1, taken_due: 10 }]).await.unwrap();
        assert!(store.messages("a".into(), None, 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn one_payload_is_stored_once_and_collected_when_unreferenced() {
        let store = RedbStore::memory().unwrap();
        let payloads = |store: &RedbStore| {
            let tx = store.db.begin_read().unwrap();
            tx.open_table(PAYLOADS).unwrap().len().unwrap()
        };
        let mut sent = Vec::new();
        for (sub, body) in [("a", "{\"n\":1}"), ("b", "{\"n\":1}"), ("a", "{\"n\":2}")] {
            sent.push(Message { payload: body.into(), ..msg(sub, 10) });
        }
        assert!(store.record_change("w".into(), None, b"[]".to_vec(), sent.clone()).await.unwrap());
        assert_eq!(payloads(&store), 2, "equal bodies share one copy");
        let mut due = store.due(100, 10, vec![]).await.unwrap();
        due.sort_by(|x, y| x.id.cmp(&y.id));
        assert_eq!(due, sent, "messages come back whole");
        let listed = store.messages("a".into(), None, 10).await.unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().all(|m| m.payload.is_empty()), "a listing never reads the payloads");

        store.delete_subscription("a".into()).await.unwrap();
        store.prune(0, 0, 100).await.unwrap();
        assert_eq!(payloads(&store), 1, "the payload only a's messages held is collected");
        assert_eq!(store.due(100, 10, vec![]).await.unwrap()[0].payload, "{\"n\":1}");
    }

    #[tokio::test]
    async fn prune_keeps_pending_and_recent() {
        let store = RedbStore::memory().unwrap();
        let mut all = Vec::new();
        for t in 1..=5 {
            let mut m = msg("a", t);
            m.status = if t == 1 { MessageStatus::Pending } else { MessageStatus::Delivered };
            all.push(m);
        }
        store.enqueue(all).await.unwrap();
        // Delivered before 3 go (created 2); beyond the 3 newest go too (none left of those).
        assert_eq!(store.prune(3, 0, 3).await.unwrap(), 1);
        let left: Vec<_> = store.messages("a".into(), None, 10).await.unwrap().iter().map(|m| m.created_at).collect();
        assert_eq!(left, [5, 4, 3, 1]);
        assert_eq!(store.prune(0, 0, 2).await.unwrap(), 1, "created 3 is the third newest");
    }

    #[tokio::test]
    async fn an_unreadable_queued_message_is_set_aside_and_the_rest_delivered() {
        let store = RedbStore::memory().unwrap();
        let (good, lost, broken) = (msg("a", 10), msg("a", 20), msg("a", 30));
        store.enqueue(vec![good.clone(), lost.clone(), broken.clone()]).await.unwrap();
        {
            let tx = store.db.begin_write().unwrap();
            let mut messages = tx.open_table(MESSAGES).unwrap();
            messages.insert(("a", broken.id.as_str()), &b"{not json"[..]).unwrap();
            drop(messages);
            // `lost` keeps its record but its payload is gone.
            tx.open_table(PAYLOADS).unwrap().retain(|_, _| false).unwrap();
            tx.commit().unwrap();
        }
        store.enqueue(vec![Message { payload: "{\"ok\":1}".into(), ..good.clone() }]).await.unwrap();
        let due = store.due(1000, 10, vec![]).await.unwrap();
        assert_eq!(due.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), [good.id.as_str()]);
        assert_eq!(store.pending().await.unwrap(), 1, "the two unreadable ones left the queue");
        let dead = store.messages("a".into(), Some(MessageStatus::Dead), 10).await.unwrap();
        assert_eq!(dead.len(), 2);
        for m in &dead {
            assert!(m.last_error.as_deref().unwrap().starts_with("unreadable record set aside"), "{m:?}");
        }
        assert_eq!(store.due(1000, 10, vec![]).await.unwrap().len(), 1, "and stay out of it");
    }

    #[tokio::test]
    async fn the_file_is_its_owners_and_secrets_are_sealed_with_the_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = [9u8; 32];
        let mut secret = sub("a");
        secret.secret = "whsec_SEALEDSECRETSEALEDSECRET".into();
        secret.headers = vec![("authorization".into(), "Bearer HEADERTOKEN".into())];
        {
            // Written first without a key: sealed when the key is given.
            let store = RedbStore::open(dir.path(), None).unwrap();
            store.put_subscription(secret.clone()).await.unwrap();
        }
        let file = dir.path().join(FILE_NAME);
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        {
            let store = RedbStore::open(dir.path(), Some(&key)).unwrap();
            assert_eq!(store.subscriptions().await.unwrap(), [secret.clone()]);
            let mut other = sub("b");
            other.secret = "whsec_SECONDSECRETSECONDSECRET".into();
            store.put_subscription(other).await.unwrap();
        }
        let bytes = std::fs::read(&file).unwrap();
        for clear in ["SEALEDSECRET", "HEADERTOKEN", "SECONDSECRET"] {
            assert!(!bytes.windows(clear.len()).any(|w| w == clear.as_bytes()), "{clear} is in the file");
        }
        assert!(matches!(RedbStore::open(dir.path(), Some(&[8; 32])), Err(StoreError::WrongKey)));
        assert!(matches!(RedbStore::open(dir.path(), None), Err(StoreError::KeyNeeded)));
        let store = RedbStore::open(dir.path(), Some(&key)).unwrap();
        assert_eq!(store.subscriptions().await.unwrap().len(), 2);
    }
}
