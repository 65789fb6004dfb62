//! One watch in Redis: its lease (with a fencing token), its state (a hash: epoch, sequence,
//! the representation, the failing status) and its event log (a stream capped at
//! `events.history`, entry id = sequence). Every key of a watch shares one hash tag, so that
//! the scripts below run on Redis Cluster too.
//!
//! The lease is `SET NX PX` with a value `<replica>/<token>`, the token from a counter. Writing a
//! poll's result ([`WatchLog::append`]) is one script that first checks the lease still holds
//! that exact value: a holder that was paused past its lease, or cut off, can never write.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use redis::Script;

use super::Redis;
use crate::StoreError;

/// The keys of one watch.
pub struct WatchLog {
    redis: Arc<Redis>,
    lease: String,
    fence: String,
    meta: String,
    log: String,
    /// The pub/sub channel appends are announced on (`<epoch>:<seq>`, or `end`).
    pub channel: String,
    /// How long state outlives its last renewal or append.
    ttl: Duration,
}

/// What a lease attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// This replica holds it, with this value (the fencing token is its end).
    Held(String),
    /// Another replica does; the state it last wrote is at `seq` of `epoch` (0 when none).
    Other { holder: String, epoch: u64, seq: u64 },
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// The lease is no longer this value: nothing was written.
    Fenced,
    /// Redis holds no state for the watch (it was lost): append again with the whole state.
    StateNeeded,
    /// Written; the events got sequences `first..=last` in `epoch` (a new epoch when the state
    /// had been lost).
    Done { epoch: u64, first: u64, last: u64 },
}

/// One logged event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    /// `c` change, `s` status.
    pub kind: u8,
    pub name: String,
    pub data: Bytes,
}

/// A watch's state as Redis holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    pub epoch: u64,
    pub seq: u64,
    /// The upstream's body as it answered, and its validators.
    pub body: Bytes,
    pub content_type: Option<String>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// The `upstream-status` data while the upstream fails.
    pub failing: Option<Bytes>,
    pub invalid: bool,
    /// Unix ms.
    pub last_poll: Option<u64>,
    pub last_change: Option<u64>,
}

/// What one poll changes. `None` fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct Update {
    /// A new representation: body and content type.
    pub body: Option<(Bytes, Option<String>)>,
    /// New validators (etag, last-modified).
    pub validators: Option<(Option<String>, Option<String>)>,
    pub failing: Option<Option<Bytes>>,
    pub invalid: Option<bool>,
    pub last_poll: Option<u64>,
    pub last_change: Option<u64>,
    /// Appended in order (their `seq` is ignored: Redis numbers them).
    pub events: Vec<Entry>,
}

static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('GET', KEYS[1])
if cur then return {0, cur, redis.call('HGET', KEYS[3], 'e') or '0', redis.call('HGET', KEYS[3], 's') or '0'} end
local v = ARGV[1] .. '/' .. redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], v, 'PX', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return {1, v}
",
    )
});

static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
for i = 2, #KEYS do redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
return 1
",
    )
});

static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
",
    )
});

/// KEYS: lease, meta, log. ARGV: lease value, epoch if new, history, ttl ms, channel, then
/// the count of field/value pairs and the pairs, then the count of events and kind/name/data
/// triples.
static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0} end
local nf = tonumber(ARGV[6])
local fresh = false
local e = redis.call('HGET', KEYS[2], 'e')
if not e then
  local has_body = false
  for i = 0, nf - 1 do if ARGV[7 + 2 * i] == 'body' then has_body = true end end
  if not has_body then return {2} end
  e = ARGV[2]
  fresh = true
  redis.call('DEL', KEYS[3])
  redis.call('HSET', KEYS[2], 'e', e, 's', 0)
end
local s = tonumber(redis.call('HGET', KEYS[2], 's'))
local first = s + 1
for i = 0, nf - 1 do redis.call('HSET', KEYS[2], ARGV[7 + 2 * i], ARGV[8 + 2 * i]) end
local at = 7 + 2 * nf
local ne = tonumber(ARGV[at])
for i = 0, ne - 1 do
  s = s + 1
  local j = at + 1 + 3 * i
  redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[3], s .. '-0', 'k', ARGV[j], 'n', ARGV[j + 1], 'd', ARGV[j + 2])
end
redis.call('HSET', KEYS[2], 's', s)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('PEXPIRE', KEYS[3], ARGV[4]) end
if ne > 0 or fresh then redis.call('PUBLISH', ARGV[5], e .. ':' .. s) end
return {1, e, first, s}
",
    )
});

/// KEYS: lease, meta, log. ARGV: lease value, channel, status. Ends the watch for every replica.
static END: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('PUBLISH', ARGV[2], 'end:' .. ARGV[3])
return 1
",
    )
});

/// KEYS: meta, log. ARGV: after (empty: the last events), count. One script, so that state
/// and events are read at one point in time (and on Redis Cluster, where transactions across
/// commands are not routed as one).
static READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local log
if ARGV[1] == '' then
  log = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[2])
else
  log = redis.call('XRANGE', KEYS[2], '(' .. ARGV[1] .. '-0', '+', 'COUNT', ARGV[2])
end
return {redis.call('HGETALL', KEYS[1]), log}
",
    )
});

impl Redis {
    /// The keys of the watch `id` (a hash of its route, target and scope: never a credential).
    pub fn watch_log(self: &Arc<Self>, id: &str, ttl: Duration) -> WatchLog {
        let tag = format!("{}:{{{id}}}", self.prefix);
        WatchLog {
            redis: self.clone(),
            lease: format!("{tag}:lease"),
            fence: format!("{tag}:fence"),
            meta: format!("{tag}:meta"),
            log: format!("{tag}:log"),
            channel: format!("{tag}:ch"),
            ttl,
        }
    }
}

impl WatchLog {
    /// Takes the lease for `lease` when nobody holds it; otherwise says who does, and how far
    /// the log is (a follower that is behind catches up, even if every notice was lost).
    pub async fn acquire(&self, replica: &str, lease: Duration) -> Result<Acquired, StoreError> {
        let reply: Vec<redis::Value> = self
            .redis
            .call("lease", |mut c| async move {
                ACQUIRE
                    .key(&self.lease)
                    .key(&self.fence)
                    .key(&self.meta)
                    .arg(replica)
                    .arg(lease.as_millis() as u64)
                    .arg(self.ttl.as_millis() as u64)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let text = |i: usize| reply.get(i).and_then(|v| redis::from_redis_value::<String>(v.clone()).ok());
        let number = |i: usize| text(i).and_then(|t| t.parse().ok()).unwrap_or_default();
        let value = text(1).unwrap_or_default();
        Ok(if number(0) == 1 {
            Acquired::Held(value)
        } else {
            let holder = value.rsplit_once('/').map_or(value.as_str(), |(replica, _)| replica).to_string();
            Acquired::Other { holder, epoch: number(2), seq: number(3) }
        })
    }

    /// Extends the lease held as `value` (and the state's time to live); `false`: it is gone.
    pub async fn renew(&self, value: &str, lease: Duration) -> Result<bool, StoreError> {
        self.redis
            .call("lease", |mut c| async move {
                RENEW
                    .key(&self.lease)
                    .key(&self.meta)
                    .key(&self.log)
                    .key(&self.fence)
                    .arg(value)
                    .arg(lease.as_millis() as u64)
                    .arg(self.ttl.as_millis() as u64)
                    .invoke_async(&mut c)
                    .await
            })
            .await
    }

    /// Gives the lease up (a replica that stops polling lets the next one start at once).
    pub async fn release(&self, value: &str) -> Result<(), StoreError> {
        self.redis
            .call("lease", |mut c| async move {
                RELEASE.key(&self.lease).arg(value).invoke_async::<i64>(&mut c).await.map(drop)
            })
            .await
    }

    /// Writes a poll's result, if the lease is still `value`.
    pub async fn append(
        &self,
        value: &str,
        new_epoch: u64,
        history: usize,
        update: &Update,
    ) -> Result<Appended, StoreError> {
        let mut fields: Vec<(&str, Vec<u8>)> = Vec::new();
        let text = |s: &Option<String>| s.as_deref().unwrap_or_default().as_bytes().to_vec();
        if let Some((body, content_type)) = &update.body {
            fields.push(("body", body.to_vec()));
            fields.push(("ct", text(content_type)));
        }
        if let Some((etag, last_modified)) = &update.validators {
            fields.push(("etag", text(etag)));
            fields.push(("lm", text(last_modified)));
        }
        if let Some(failing) = &update.failing {
            fields.push(("failing", failing.as_deref().unwrap_or_default().to_vec()));
        }
        if let Some(invalid) = update.invalid {
            fields.push(("invalid", if invalid { b"1".to_vec() } else { b"0".to_vec() }));
        }
        if let Some(t) = update.last_poll {
            fields.push(("lp", t.to_string().into_bytes()));
        }
        if let Some(t) = update.last_change {
            fields.push(("lc", t.to_string().into_bytes()));
        }
        let reply: Vec<redis::Value> = self
            .redis
            .call("append", |mut c| {
                let mut script = APPEND.prepare_invoke();
                script
                    .key(&self.lease)
                    .key(&self.meta)
                    .key(&self.log)
                    .arg(value)
                    .arg(new_epoch)
                    .arg(history.max(1))
                    .arg(self.ttl.as_millis() as u64)
                    .arg(&self.channel)
                    .arg(fields.len());
                for (name, value) in &fields {
                    script.arg(*name).arg(value.as_slice());
                }
                script.arg(update.events.len());
                for e in &update.events {
                    script.arg(&[e.kind][..]).arg(&e.name).arg(e.data.as_ref());
                }
                async move { script.invoke_async(&mut c).await }
            })
            .await?;
        let int = |i: usize| reply.get(i).and_then(|v| redis::from_redis_value::<u64>(v.clone()).ok());
        Ok(match int(0) {
            Some(1) => Appended::Done {
                epoch: int(1).unwrap_or_default(),
                first: int(2).unwrap_or_default(),
                last: int(3).unwrap_or_default(),
            },
            Some(2) => Appended::StateNeeded,
            _ => Appended::Fenced,
        })
    }

    /// Ends the watch on every replica (its credential was revoked), if the lease is `value`.
    pub async fn end(&self, value: &str, status: u16) -> Result<bool, StoreError> {
        self.redis
            .call("append", |mut c| async move {
                END.key(&self.lease)
                    .key(&self.meta)
                    .key(&self.log)
                    .arg(value)
                    .arg(&self.channel)
                    .arg(status)
                    .invoke_async(&mut c)
                    .await
            })
            .await
    }

    /// The state and the events after `after` (at most `limit`; the last `limit` when `after` is
    /// `None`), read together. `None`: Redis holds no state for the watch.
    pub async fn read(&self, after: Option<u64>, limit: usize) -> Result<Option<(Meta, Vec<Entry>)>, StoreError> {
        let (meta, log): (Fields, Vec<(String, Fields)>) = self
            .redis
            .call("read", |mut c| async move {
                READ.key(&self.meta)
                    .key(&self.log)
                    .arg(after.map(|seq| seq.to_string()).unwrap_or_default())
                    .arg(limit.max(1))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        if meta.is_empty() {
            return Ok(None);
        }
        let mut entries: Vec<Entry> = log.into_iter().filter_map(entry).collect();
        if after.is_none() {
            entries.reverse();
        }
        Ok(Some((parse_meta(meta), entries)))
    }
}

/// A hash's or a stream entry's field/value pairs, as Redis returns them.
type Fields = Vec<(String, Vec<u8>)>;

fn entry((id, fields): (String, Fields)) -> Option<Entry> {
    let seq = id.split('-').next()?.parse().ok()?;
    let mut e = Entry { seq, kind: b'c', name: String::new(), data: Bytes::new() };
    for (name, value) in fields {
        match name.as_str() {
            "k" => e.kind = value.first().copied().unwrap_or(b'c'),
            "n" => e.name = String::from_utf8(value).ok()?,
            "d" => e.data = Bytes::from(value),
            _ => {}
        }
    }
    Some(e)
}

fn parse_meta(fields: Fields) -> Meta {
    let mut m = Meta::default();
    let text = |v: Vec<u8>| Some(String::from_utf8(v).ok()?).filter(|s| !s.is_empty());
    let number = |v: &[u8]| std::str::from_utf8(v).ok().and_then(|s| s.parse().ok());
    for (name, value) in fields {
        match name.as_str() {
            "e" => m.epoch = number(&value).unwrap_or_default(),
            "s" => m.seq = number(&value).unwrap_or_default(),
            "body" => m.body = Bytes::from(value),
            "ct" => m.content_type = text(value),
            "etag" => m.etag = text(value),
            "lm" => m.last_modified = text(value),
            "failing" => m.failing = Some(Bytes::from(value)).filter(|v| !v.is_empty()),
            "invalid" => m.invalid = value == b"1",
            "lp" => m.last_poll = number(&value),
            "lc" => m.last_change = number(&value),
            _ => {}
        }
    }
    m
}
