//! The webhook [`Store`] in Redis, for cluster mode: subscriptions, the delivery queue and each
//! webhook watch's last representation, shared by every replica. Every key shares one hash tag
//! (`{<prefix>:wh}`), so the scripts run on Redis Cluster too.
//!
//! The queue is a sorted set of message ids by due time. Taking due messages *claims* them: one
//! script moves their due time `claim` ahead, so no other replica takes them meanwhile; the
//! outcome sets the next due time (a retry) or takes them out. A replica that dies with messages
//! in flight leaves them claimed, and they come due again after `claim`, which is longer than
//! `webhooks.timeout` so that a slow attempt is never repeated while it runs: at least once,
//! the same `webhook-id`.
//!
//! With `storage.encryption_key` (given to [`Redis::connect`]), subscriptions, messages (their
//! payloads are a subscriber's events) and each webhook watch's last representation are sealed,
//! and a webhook watch's state is kept under a keyed hash of its name (which holds the
//! credential scope's hash) rather than the name itself. A message that is not sealed with the
//! key is not one herald wrote: it is never delivered (it would be signed with the
//! subscription's secret).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::Script;

use super::Redis;
use crate::record::{decode, encode, open_subscription, seal_subscription, unreadable_record};
use crate::seal::Sealer;
use crate::{Attempted, Message, MessageStatus, Store, StoreError, StoreFuture, Subscription, Subscriptions};

pub struct RedisStore {
    redis: Arc<Redis>,
    /// `{<prefix>:wh}`: every key starts with it.
    tag: String,
    /// How long a taken message stays away from the other replicas.
    claim: Duration,
    /// A random name the store got when it was first opened, kept in it: a store that no longer
    /// holds it lost its data (and is empty, or another process marked it since).
    incarnation: std::sync::Mutex<String>,
}

/// The shared secret credential scopes are hashed with.
const SCOPE_KEY: &str = "scope-key";

/// KEYS: incarnation, gen, subs. ARGV: the incarnation this replica knows, the generation it
/// read last (empty: none). `{0}`: the store is not the one this replica knows (it lost its
/// data); `{1}`: unchanged; `{2, gen, id, record, …}`: the subscriptions now.
static SINCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0} end
local gen = redis.call('GET', KEYS[2]) or '0'
if gen == ARGV[2] then return {1} end
local out = {2, gen}
for _, v in ipairs(redis.call('HGETALL', KEYS[3])) do out[#out + 1] = v end
return out
",
    )
});

/// KEYS: incarnation, gen, subs. ARGV: the incarnation this replica knows, then id/record pairs.
/// Writes back the subscriptions the store lacks, then marks it whole (unless a process marked
/// it first); the incarnation it holds now.
static RESTORE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
for i = 2, #ARGV, 2 do redis.call('HSETNX', KEYS[3], ARGV[i], ARGV[i + 1]) end
redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
",
    )
});

/// KEYS: queue, msgs. ARGV: now, limit, claimed until. Takes due messages: their ids and records.
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local out = {}
for _, id in ipairs(ids) do
  local record = redis.call('HGET', KEYS[2], id)
  if record then
    redis.call('ZADD', KEYS[1], ARGV[3], id)
    out[#out + 1] = id
    out[#out + 1] = record
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
",
    )
});

/// KEYS: msgs, queue, states, bysub prefix (`…:bysub:`). ARGV: state key ('' for none),
/// expected state ('' for none; `~` skips the check), new state, then id/subscription/created/due/record
/// quintuples. Adds messages (and records a watch's new state, if it is still the expected one).
static ADD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if ARGV[1] ~= '' and ARGV[2] ~= '~' then
  local cur = redis.call('HGET', KEYS[3], ARGV[1]) or ''
  if cur ~= ARGV[2] then return 0 end
end
if ARGV[1] ~= '' then redis.call('HSET', KEYS[3], ARGV[1], ARGV[3]) end
for i = 4, #ARGV, 5 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 4])
  redis.call('ZADD', KEYS[4] .. ARGV[i + 1], ARGV[i + 2], ARGV[i])
  if ARGV[i + 3] ~= '' then redis.call('ZADD', KEYS[2], ARGV[i + 3], ARGV[i]) end
end
return 1
",
    )
});

/// KEYS: msgs, queue, subs. ARGV: id/subscription/due/record quadruples (due '' when finished).
/// Writes outcomes; a message whose record or subscription is gone is not written back.
static COMPLETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
for i = 1, #ARGV, 4 do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 and redis.call('HEXISTS', KEYS[3], ARGV[i + 1]) == 1 then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 3])
    if ARGV[i + 2] == '' then
      redis.call('ZREM', KEYS[2], ARGV[i])
    else
      redis.call('ZADD', KEYS[2], ARGV[i + 2], ARGV[i])
    end
  end
end
return 1
",
    )
});

/// KEYS: subs, msgs, queue, bysub, gen. ARGV: id. Removes a subscription and its messages.
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
local ids = redis.call('ZRANGE', KEYS[4], 0, -1)
for _, id in ipairs(ids) do
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
end
redis.call('DEL', KEYS[4])
redis.call('INCR', KEYS[5])
return 1
",
    )
});

/// KEYS: msgs, bysub. ARGV: ids. Forgets finished messages.
static FORGET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
for _, id in ipairs(ARGV) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
return #ARGV
",
    )
});

impl RedisStore {
    /// The store of the gateway `redis` serves (sealed with the key it was connected with);
    /// `claim` must be longer than `webhooks.timeout`.
    pub async fn open(redis: Arc<Redis>, claim: Duration) -> Result<RedisStore, StoreError> {
        let tag = format!("{{{}:wh}}", redis.prefix);
        let store = RedisStore { redis, tag, claim, incarnation: Default::default() };
        store.check_key().await?;
        let mut fresh = [0u8; 8];
        getrandom::fill(&mut fresh).map_err(|e| StoreError::backend("random source", e))?;
        let fresh: String = fresh.iter().map(|b| format!("{b:02x}")).collect();
        let key = store.key("incarnation");
        store.cmd::<()>("secret", redis::cmd("SET").arg(&key).arg(&fresh).arg("NX")).await?;
        let incarnation: Option<String> = store.cmd("secret", redis::cmd("GET").arg(&key)).await?;
        *store.incarnation.lock().unwrap() = incarnation.unwrap_or(fresh);
        Ok(store)
    }

    fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.tag)
    }

    fn sealer(&self) -> Option<&Sealer> {
        self.redis.keys.as_ref().map(|k| &k.sealer)
    }

    /// A webhook watch's state as stored: sealed when there is a key, with a deterministic nonce
    /// so that the script recording a change can compare it with the one expected.
    fn state_value(&self, field: &str, data: &[u8]) -> Vec<u8> {
        match self.sealer() {
            Some(sealer) => sealer.seal_fixed(field.as_bytes(), data),
            None => data.to_vec(),
        }
    }

    /// A message's record as stored: sealed (bound to its id) when there is a key.
    fn record(&self, m: &Message) -> Vec<u8> {
        match self.sealer() {
            Some(sealer) => sealer.seal(format!("msg/{}", m.id).as_bytes(), &encode(m)),
            None => encode(m),
        }
    }

    /// The message of a record; with a key, only a record sealed for `id` is one.
    fn message(&self, id: &str, record: &[u8]) -> Result<Message, StoreError> {
        let Some(sealer) = self.sealer() else { return decode(id, record) };
        let plain = sealer
            .open(format!("msg/{id}").as_bytes(), record)
            .ok_or_else(|| StoreError::Sealed { key: format!("{}/{id}", self.key("msgs")) })?;
        decode(id, &plain)
    }

    /// Subscriptions are sealed with the key every replica has: a replica started with another
    /// key (or none, on sealed data) fails at start instead of misreading them.
    async fn check_key(&self) -> Result<(), StoreError> {
        const PLAIN: &[u8] = b"herald key check";
        let key = self.key("key-check");
        let stored: Option<Vec<u8>> = self.cmd("secret", redis::cmd("GET").arg(&key)).await?;
        match (stored, self.sealer()) {
            (None, Some(sealer)) => {
                self.cmd::<()>("secret", redis::cmd("SET").arg(&key).arg(sealer.seal(b"key-check", PLAIN)).arg("NX"))
                    .await
            }
            (None, None) => Ok(()),
            (Some(sealed), Some(sealer)) => match sealer.open(b"key-check", &sealed) {
                Some(_) => Ok(()),
                None => Err(StoreError::WrongKey),
            },
            (Some(_), None) => Err(StoreError::KeyNeeded),
        }
    }

    async fn cmd<T: redis::FromRedisValue + Send>(&self, op: &'static str, cmd: &redis::Cmd) -> Result<T, StoreError> {
        self.redis.call(op, |mut c| async move { cmd.query_async(&mut c).await }).await
    }

    /// Adds messages, with a watch's new state when `state` is given; `false` (nothing written)
    /// when the state stored is not the one expected.
    async fn add(&self, state: Option<StateChange<'_>>, messages: &[Message]) -> Result<bool, StoreError> {
        let mut script = ADD.prepare_invoke();
        script.key(self.key("msgs")).key(self.key("queue")).key(self.key("states")).key(self.key("bysub:"));
        match state {
            Some(StateChange { key, expected, data }) => {
                let field = self.redis.name(key);
                let expected = expected.map(|e| self.state_value(&field, e)).unwrap_or_default();
                script.arg(&field).arg(expected).arg(self.state_value(&field, data));
            }
            None => {
                script.arg("").arg("~").arg("");
            }
        }
        for m in messages {
            let due = if m.status == MessageStatus::Pending { m.next_attempt.to_string() } else { String::new() };
            script.arg(&m.id).arg(&m.subscription).arg(m.created_at).arg(due).arg(self.record(m));
        }
        let added: i64 = self.redis.call("append", |mut c| async move { script.invoke_async(&mut c).await }).await?;
        Ok(added == 1)
    }

    /// A subscription's messages, newest first.
    async fn of_subscription(&self, subscription: &str) -> Result<Vec<Message>, StoreError> {
        let ids: Vec<String> = self
            .cmd("read", redis::cmd("ZREVRANGE").arg(self.key(&format!("bysub:{subscription}"))).arg(0).arg(-1))
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let records: Vec<Option<Vec<u8>>> =
            self.cmd("read", redis::cmd("HMGET").arg(self.key("msgs")).arg(&ids)).await?;
        Ok(ids
            .iter()
            .zip(records)
            .filter_map(|(id, r)| {
                Some(self.message(id, &r?).unwrap_or_else(|e| unreadable_record(subscription, id, &e, 0)))
            })
            .collect())
    }
}

/// A webhook watch's new representation, recorded only over the one it was diffed from.
struct StateChange<'a> {
    key: &'a str,
    expected: Option<&'a [u8]>,
    data: &'a [u8],
}

impl Store for RedisStore {
    fn scope_key(&self) -> StoreFuture<'_, [u8; 32]> {
        Box::pin(self.redis.shared_secret(SCOPE_KEY))
    }

    fn put_subscription(&self, sub: Subscription) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("HSET")
                .arg(self.key("subs"))
                .arg(&sub.id)
                .arg(seal_subscription(self.sealer(), &sub))
                .ignore()
                .cmd("INCR")
                .arg(self.key("gen"))
                .ignore();
            self.redis.call("append", |mut c| async move { pipe.query_async::<()>(&mut c).await }).await
        })
    }

    fn subscription(&self, id: String) -> StoreFuture<'_, Option<Subscription>> {
        Box::pin(async move {
            let bytes: Option<Vec<u8>> = self.cmd("read", redis::cmd("HGET").arg(self.key("subs")).arg(&id)).await?;
            bytes.map(|b| open_subscription(self.sealer(), &id, &b)).transpose()
        })
    }

    fn subscriptions(&self) -> StoreFuture<'_, Vec<Subscription>> {
        Box::pin(async move {
            let all: Vec<(String, Vec<u8>)> = self.cmd("read", redis::cmd("HGETALL").arg(self.key("subs"))).await?;
            all.iter().map(|(id, b)| open_subscription(self.sealer(), id, b)).collect()
        })
    }

    fn delete_subscription(&self, id: String) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let bysub = self.key(&format!("bysub:{id}"));
            let deleted: i64 = self
                .redis
                .call("append", |mut c| async move {
                    DELETE
                        .key(self.key("subs"))
                        .key(self.key("msgs"))
                        .key(self.key("queue"))
                        .key(&bysub)
                        .key(self.key("gen"))
                        .arg(&id)
                        .invoke_async(&mut c)
                        .await
                })
                .await?;
            Ok(deleted == 1)
        })
    }

    fn watch_state(&self, key: String) -> StoreFuture<'_, Option<Vec<u8>>> {
        Box::pin(async move {
            let field = self.redis.name(&key);
            let stored: Option<Vec<u8>> =
                self.cmd("read", redis::cmd("HGET").arg(self.key("states")).arg(&field)).await?;
            match (stored, self.sealer()) {
                (Some(sealed), Some(sealer)) => sealer
                    .open(field.as_bytes(), &sealed)
                    .map(Some)
                    .ok_or_else(|| StoreError::Sealed { key: format!("{}/{field}", self.key("states")) }),
                (stored, _) => Ok(stored),
            }
        })
    }

    fn record_change(
        &self,
        key: String,
        expected: Option<Vec<u8>>,
        data: Vec<u8>,
        messages: Vec<Message>,
    ) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let change = StateChange { key: &key, expected: expected.as_deref(), data: &data };
            self.add(Some(change), &messages).await
        })
    }

    fn enqueue(&self, messages: Vec<Message>) -> StoreFuture<'_, ()> {
        Box::pin(async move { self.add(None, &messages).await.map(drop) })
    }

    /// Claims what is due; `skip` is not needed (what this replica has in flight is claimed).
    fn due(&self, now: u64, limit: usize, _skip: Vec<String>) -> StoreFuture<'_, Vec<Message>> {
        Box::pin(async move {
            let until = now + self.claim.as_millis() as u64;
            let records: Vec<(String, Vec<u8>)> = self
                .redis
                .call("queue", |mut c| async move {
                    TAKE.key(self.key("queue"))
                        .key(self.key("msgs"))
                        .arg(now)
                        .arg(limit)
                        .arg(until)
                        .invoke_async(&mut c)
                        .await
                })
                .await?;
            let mut out = Vec::new();
            let mut dead = Vec::new();
            let mut forged = Vec::new();
            for (id, record) in records {
                match self.message(&id, &record) {
                    Ok(m) => out.push(m),
                    // Set aside as dead, with the reason: never in the way of the others.
                    Err(e) => {
                        let sub = serde_json::from_slice::<serde_json::Value>(&record)
                            .ok()
                            .and_then(|v| Some(v["subscription"].as_str()?.to_string()));
                        match sub {
                            Some(sub) if self.sealer().is_none() => {
                                tracing::error!(message = %id, reason = %e, "unreadable queued message set aside as dead");
                                dead.push(Attempted { message: unreadable_record(&sub, &id, &e, 0), taken_due: 0 });
                            }
                            // Not sealed with the key: not herald's, and never delivered.
                            _ => {
                                tracing::error!(message = %id, reason = %e, "a queued message herald did not write (not sealed with storage.encryption_key) dropped");
                                forged.push(id);
                            }
                        }
                    }
                }
            }
            if !forged.is_empty() {
                let mut pipe = redis::pipe();
                pipe.cmd("ZREM").arg(self.key("queue")).arg(&forged).ignore();
                pipe.cmd("HDEL").arg(self.key("msgs")).arg(&forged).ignore();
                self.redis.call("queue", |mut c| async move { pipe.query_async::<()>(&mut c).await }).await?;
            }
            if !dead.is_empty() {
                self.complete(dead).await?;
            }
            Ok(out)
        })
    }

    fn next_due(&self) -> StoreFuture<'_, Option<u64>> {
        Box::pin(async move {
            let first: Vec<(String, f64)> =
                self.cmd("queue", redis::cmd("ZRANGE").arg(self.key("queue")).arg(0).arg(0).arg("WITHSCORES")).await?;
            Ok(first.first().map(|(_, at)| *at as u64))
        })
    }

    fn complete(&self, attempts: Vec<Attempted>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            if attempts.is_empty() {
                return Ok(());
            }
            let mut script = COMPLETE.prepare_invoke();
            script.key(self.key("msgs")).key(self.key("queue")).key(self.key("subs"));
            for a in &attempts {
                let m = &a.message;
                let due = if m.status == MessageStatus::Pending { m.next_attempt.to_string() } else { String::new() };
                script.arg(&m.id).arg(&m.subscription).arg(due).arg(self.record(m));
            }
            self.redis.call("queue", |mut c| async move { script.invoke_async::<i64>(&mut c).await.map(drop) }).await
        })
    }

    /// Their claim ends now. Only messages whose attempt was stopped come here, so nothing
    /// recorded an outcome for them since they were taken; `XX`: one deleted meanwhile (its
    /// subscription removed) is not added back.
    fn hand_back(&self, ids: Vec<String>, now: u64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            if ids.is_empty() {
                return Ok(());
            }
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(self.key("queue")).arg("XX");
            for id in &ids {
                cmd.arg(now).arg(id);
            }
            self.cmd::<i64>("queue", &cmd).await.map(drop)
        })
    }

    fn pending(&self) -> StoreFuture<'_, u64> {
        Box::pin(async move { self.cmd("queue", redis::cmd("ZCARD").arg(self.key("queue"))).await })
    }

    fn messages(
        &self,
        subscription: String,
        status: Option<MessageStatus>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<Message>> {
        Box::pin(async move {
            let mut out: Vec<Message> = self
                .of_subscription(&subscription)
                .await?
                .into_iter()
                .filter(|m| status.is_none_or(|s| s == m.status))
                .take(limit)
                .collect();
            for m in &mut out {
                m.payload.clear();
            }
            Ok(out)
        })
    }

    fn replay(&self, subscription: String, since: u64, now: u64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let mut again: Vec<Message> = self
                .of_subscription(&subscription)
                .await?
                .into_iter()
                .filter(|m| m.created_at >= since && m.status != MessageStatus::Pending && !m.payload.is_empty())
                .collect();
            for m in &mut again {
                m.status = MessageStatus::Pending;
                m.attempts = 0;
                m.next_attempt = now;
            }
            self.add(None, &again).await?;
            Ok(again.len() as u64)
        })
    }

    fn prune(&self, delivered_before: u64, dead_before: u64, keep: usize) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let mut pruned = 0;
            let subs: Vec<String> = self.cmd("read", redis::cmd("HKEYS").arg(self.key("subs"))).await?;
            for sub in subs {
                let mut finished = 0;
                let mut doomed = Vec::new();
                for m in self.of_subscription(&sub).await? {
                    let old = match m.status {
                        MessageStatus::Pending => continue,
                        MessageStatus::Delivered => m.created_at < delivered_before,
                        MessageStatus::Dead => m.created_at < dead_before,
                    };
                    finished += 1;
                    if old || finished > keep {
                        doomed.push(m.id);
                    }
                }
                for chunk in doomed.chunks(512) {
                    let bysub = self.key(&format!("bysub:{sub}"));
                    let forgot: u64 = self
                        .redis
                        .call("append", |mut c| async move {
                            FORGET.key(self.key("msgs")).key(&bysub).arg(chunk).invoke_async(&mut c).await
                        })
                        .await?;
                    pruned += forgot;
                }
            }
            Ok(pruned)
        })
    }

    fn check(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.redis.ping())
    }

    fn subscriptions_since(&self, seen: Option<u64>) -> StoreFuture<'_, Subscriptions> {
        Box::pin(async move {
            let incarnation = self.incarnation.lock().unwrap().clone();
            let seen = seen.map(|g| g.to_string()).unwrap_or_default();
            let reply: Vec<redis::Value> = self
                .redis
                .call("read", |mut c| {
                    let mut script = SINCE.prepare_invoke();
                    script.key(self.key("incarnation")).key(self.key("gen")).key(self.key("subs"));
                    script.arg(&incarnation).arg(&seen);
                    async move { script.invoke_async(&mut c).await }
                })
                .await?;
            let text = |v: &redis::Value| redis::from_redis_value::<String>(v.clone()).ok();
            Ok(match reply.first().and_then(|v| redis::from_redis_value::<u8>(v.clone()).ok()) {
                Some(0) => Subscriptions::Lost,
                Some(2) => {
                    let generation = reply.get(1).and_then(text).and_then(|g| g.parse().ok()).unwrap_or_default();
                    let mut subs = Vec::new();
                    for pair in reply[2..].chunks_exact(2) {
                        let id = text(&pair[0]).unwrap_or_default();
                        let record = redis::from_redis_value::<Vec<u8>>(pair[1].clone()).unwrap_or_default();
                        subs.push(open_subscription(self.sealer(), &id, &record)?);
                    }
                    Subscriptions::Changed { generation, subs }
                }
                _ => Subscriptions::Unchanged,
            })
        })
    }

    fn restore(&self, scope_key: [u8; 32], subs: Vec<Subscription>) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            // The scope key first (it is keyed outside the webhook tag): until the script below
            // marks the store whole, a failure here is tried again.
            let same = self.redis.restore_secret(SCOPE_KEY, &scope_key).await?;
            let incarnation = self.incarnation.lock().unwrap().clone();
            let now: String = self
                .redis
                .call("append", |mut c| {
                    let mut script = RESTORE.prepare_invoke();
                    script.key(self.key("incarnation")).key(self.key("gen")).key(self.key("subs"));
                    script.arg(&incarnation);
                    for sub in &subs {
                        script.arg(&sub.id).arg(seal_subscription(self.sealer(), sub));
                    }
                    async move { script.invoke_async(&mut c).await }
                })
                .await?;
            // Another process's, when one marked the empty store first: this one follows it.
            *self.incarnation.lock().unwrap() = now;
            Ok(same)
        })
    }
}
