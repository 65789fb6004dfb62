//! One watch in Redis: its lease (with a fencing token), its state (a hash: epoch, sequence,
//! the representation, the failing status) and its event log (a stream capped at
//! `events.history`, entry id = sequence). Every key of a watch shares one hash tag, so that
//! the scripts below run on Redis Cluster too.
//!
//! The lease is `SET NX PX` with a value `<replica>/<token>`, the token from a counter. Writing a
//! poll's result ([`WatchLog::append`]) is one script that first checks the lease still holds
//! that exact value: a holder that was paused past its lease, or cut off, can never write.
//!
//! What is read back is checked before it reaches a frame (see [`super::trust`]): an entry that
//! is malformed, forged, or not sealed with the key (when there is one) is treated as lost, like
//! a trimmed one, and so is everything before it: a subscriber resuming from before it gets a
//! snapshot. With a key, every watch's representation, validators, failing status and events
//! are sealed, whatever its access: the entry's author is then known, not only its secrecy.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use redis::Script;

use super::{trust, Redis};
use crate::seal::Sealer;
use crate::StoreError;
use tracing::warn;

/// The keys of one watch.
pub struct WatchLog {
    redis: Arc<Redis>,
    lease: String,
    fence: String,
    meta: String,
    log: String,
    /// The pub/sub channel appends are announced on (`<epoch>:<seq>`, `end`, or the lease
    /// released).
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
    /// The state in Redis is not the one the update was made from (an append whose answer was
    /// lost went through after all, or another holder wrote meanwhile): nothing was written;
    /// Redis is at `seq` of `epoch`.
    Moved { epoch: u64, seq: u64 },
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

/// KEYS: lease. ARGV: lease value, channel. Deletes the lease if it is still `value` and says
/// so on the channel, so that a follower takes it at once instead of at its next lease tick.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], 'lease:released')
return 1
",
    )
});

/// KEYS: lease, meta, log. ARGV: lease value, epoch if new, history, ttl ms, channel, the
/// epoch and sequence the writer has applied and diffed the update from, then the count of
/// field/value pairs and the pairs, then the count of events and kind/name/data triples.
///
/// A state behind what the writer applied in its epoch lost writes (a failover to a replica
/// that had not received them): others may have sent those sequences to subscribers, so
/// numbering on would give them to other events. It is dropped, and written anew in a new
/// epoch: every subscriber gets a snapshot. A state elsewhere (ahead: an append whose answer
/// was lost went through after all; another epoch) is left as it is: the writer reads it.
static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0} end
local nf = tonumber(ARGV[8])
local fresh = false
local e = redis.call('HGET', KEYS[2], 'e')
if e and e == ARGV[6] and tonumber(redis.call('HGET', KEYS[2], 's')) < tonumber(ARGV[7]) then
  redis.call('DEL', KEYS[2], KEYS[3])
  e = false
end
if not e then
  local has_body = false
  for i = 0, nf - 1 do if ARGV[9 + 2 * i] == 'body' then has_body = true end end
  if not has_body then return {2} end
  e = ARGV[2]
  fresh = true
  redis.call('DEL', KEYS[3])
  redis.call('HSET', KEYS[2], 'e', e, 's', 0)
end
local s = tonumber(redis.call('HGET', KEYS[2], 's'))
if not fresh and (e ~= ARGV[6] or s ~= tonumber(ARGV[7])) then return {3, e, s} end
local first = s + 1
for i = 0, nf - 1 do redis.call('HSET', KEYS[2], ARGV[9 + 2 * i], ARGV[10 + 2 * i]) end
local at = 9 + 2 * nf
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

/// KEYS: lease, meta, log. ARGV: lease value, channel, message. Ends the watch for every replica.
static END: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('PUBLISH', ARGV[2], ARGV[3])
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
    /// The keys of the watch `id` (a hash of its route, target and scope: never a credential;
    /// with a key, they are named by a keyed hash of it).
    pub fn watch_log(self: &Arc<Self>, id: &str, ttl: Duration) -> WatchLog {
        let tag = format!("{}:{{{}}}", self.prefix, self.name(id));
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

    /// Gives the lease up and announces it ([`super::Note::Released`]): a replica that stops
    /// polling lets the next one start at once.
    pub async fn release(&self, value: &str) -> Result<(), StoreError> {
        self.redis
            .call("lease", |mut c| async move {
                RELEASE.key(&self.lease).arg(value).arg(&self.channel).invoke_async::<i64>(&mut c).await.map(drop)
            })
            .await
    }

    /// Writes a poll's result, if the lease is still `value` and Redis holds the state the
    /// result was diffed from, `applied` (the epoch and sequence this replica has applied). A
    /// state behind it in that epoch lost writes, and is written anew
    /// ([`Appended::StateNeeded`], or a new epoch when `update` has the representation); any
    /// other is [`Appended::Moved`]: so an append made again after its answer was lost never
    /// logs the same change twice.
    pub async fn append(
        &self,
        value: &str,
        applied: (u64, u64),
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
        let mut events: Vec<(u8, &str, Vec<u8>)> =
            update.events.iter().map(|e| (e.kind, e.name.as_str(), e.data.to_vec())).collect();
        if let Some(sealer) = self.sealer() {
            for (name, value) in &mut fields {
                if SEALED.contains(name) {
                    *value = sealer.seal(&self.field_aad(name), value);
                }
            }
            for (kind, name, data) in &mut events {
                let mut plain = vec![*kind];
                plain.extend_from_slice(name.as_bytes());
                plain.push(b'\n');
                plain.extend_from_slice(data);
                *data = sealer.seal(self.log.as_bytes(), &plain);
                (*kind, *name) = (SEALED_KIND, "");
            }
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
                    .arg(applied.0)
                    .arg(applied.1)
                    .arg(fields.len());
                for (name, value) in &fields {
                    script.arg(*name).arg(value.as_slice());
                }
                script.arg(events.len());
                for (kind, name, data) in &events {
                    script.arg(&[*kind][..]).arg(*name).arg(data.as_slice());
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
            Some(3) => Appended::Moved { epoch: int(1).unwrap_or_default(), seq: int(2).unwrap_or_default() },
            _ => Appended::Fenced,
        })
    }

    /// Ends the watch in `epoch` on every replica (its credential was revoked), if the lease is
    /// `value`. The notice is signed when there is a key.
    pub async fn end(&self, value: &str, epoch: u64, status: u16) -> Result<bool, StoreError> {
        let message = self.redis.signed(&self.channel, &format!("end:{status}:{epoch}"));
        self.redis
            .call("append", |mut c| async move {
                END.key(&self.lease)
                    .key(&self.meta)
                    .key(&self.log)
                    .arg(value)
                    .arg(&self.channel)
                    .arg(message)
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
        let meta = parse_meta(self.sealer(), &self.meta, meta)?;
        let mut entries: Vec<Option<Entry>> = log.into_iter().map(|e| entry(self.sealer(), &self.log, e)).collect();
        if after.is_none() {
            entries.reverse();
        }
        if entries.iter().any(Option::is_none) {
            warn!(key = %self.log, "a malformed or forged entry in a watch's log in redis: treated as lost");
        }
        let seq = meta.seq;
        Ok(Some((meta, genuine_tail(entries, seq))))
    }

    fn sealer(&self) -> Option<&Sealer> {
        self.redis.keys.as_ref().map(|k| &k.sealer)
    }

    /// What a sealed field of the state is bound to: its key and its name.
    fn field_aad(&self, name: &str) -> Vec<u8> {
        field_aad(&self.meta, name)
    }
}

/// What a sealed field of the state is bound to: its key and its name.
fn field_aad(meta: &str, name: &str) -> Vec<u8> {
    format!("{meta}\0{name}").into_bytes()
}

/// A stream entry as herald wrote it; `None` when it is not one (its id, kind, name or data
/// could not have come from herald, or it is not sealed with the key when there is one).
fn entry(sealer: Option<&Sealer>, log: &str, (id, fields): (String, Fields)) -> Option<Entry> {
    let seq = id.strip_suffix("-0")?.parse().ok()?;
    let (mut kind, mut name, mut data) = (None, None, None);
    for (field, value) in fields {
        match field.as_str() {
            "k" => kind = Some(value),
            "n" => name = Some(value),
            "d" => data = Some(value),
            _ => return None,
        }
    }
    let (mut kind, mut name, mut data) = (kind?, name?, data?);
    match sealer {
        Some(sealer) => {
            if kind != [SEALED_KIND] || !name.is_empty() {
                return None;
            }
            let plain = sealer.open(log.as_bytes(), &data)?;
            let (&k, rest) = plain.split_first()?;
            let at = rest.iter().position(|&b| b == b'\n')?;
            (kind, name, data) = (vec![k], rest[..at].to_vec(), rest[at + 1..].to_vec());
        }
        None if kind == [SEALED_KIND] => return None,
        None => {}
    }
    let kind = match kind[..] {
        [k @ (b'c' | b's')] => k,
        _ => return None,
    };
    let name = String::from_utf8(name).ok().filter(|n| trust::event_name(n))?;
    trust::one_line(&data).then_some(Entry { seq, kind, name, data: Bytes::from(data) })
}

/// The state as herald wrote it; an error when a field could not have come from herald.
fn parse_meta(sealer: Option<&Sealer>, meta: &str, fields: Fields) -> Result<Meta, StoreError> {
    let mut m = Meta::default();
    let malformed = |name: &str| StoreError::Invalid(format!("{meta}: field {name} is malformed or forged"));
    for (name, value) in fields {
        let value = match sealer {
            Some(sealer) if SEALED.contains(&name.as_str()) => {
                sealer.open(&field_aad(meta, &name), &value).ok_or_else(|| malformed(&name))?
            }
            _ => value,
        };
        let text = |v: Vec<u8>| -> Result<Option<String>, StoreError> {
            match String::from_utf8(v) {
                Ok(s) if trust::header_value(&s) => Ok(Some(s).filter(|s| !s.is_empty())),
                _ => Err(malformed(&name)),
            }
        };
        let number = |v: &[u8]| std::str::from_utf8(v).ok().and_then(|s| s.parse().ok());
        match name.as_str() {
            "e" => m.epoch = number(&value).unwrap_or_default(),
            "s" => m.seq = number(&value).unwrap_or_default(),
            "body" => m.body = Bytes::from(value),
            "ct" => m.content_type = text(value)?,
            "etag" => m.etag = text(value)?,
            "lm" => m.last_modified = text(value)?,
            "failing" if trust::one_line(&value) => m.failing = Some(Bytes::from(value)).filter(|v| !v.is_empty()),
            "failing" => return Err(malformed(&name)),
            "invalid" => m.invalid = value == b"1",
            "lp" => m.last_poll = number(&value),
            "lc" => m.last_change = number(&value),
            _ => {}
        }
    }
    Ok(m)
}

/// The fields of the state that are sealed when there is a key (the others are numbers the
/// scripts read).
const SEALED: [&str; 5] = ["body", "ct", "etag", "lm", "failing"];

/// The kind of a sealed entry (its real kind is inside).
const SEALED_KIND: u8 = b'x';

/// A hash's or a stream entry's field/value pairs, as Redis returns them.
type Fields = Vec<(String, Vec<u8>)>;

/// The entries a subscriber can be given, oldest first: the newest run of genuine, consecutive
/// entries that ends at the state's sequence `seq`. An entry that is not genuine (`None`) is
/// lost, and with it everything before it, as if trimmed: a client resuming from before it gets
/// a snapshot, never a gap.
fn genuine_tail(entries: Vec<Option<Entry>>, seq: u64) -> Vec<Entry> {
    let mut tail = Vec::new();
    let mut next = seq;
    for e in entries.into_iter().rev() {
        match e {
            Some(e) if e.seq == next && next > 0 => {
                tail.push(e);
                next -= 1;
            }
            _ => break,
        }
    }
    tail.reverse();
    tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(seq: u64, kind: &str, name: &str, data: &[u8]) -> (String, Fields) {
        let fields = vec![("k".into(), kind.into()), ("n".into(), name.into()), ("d".into(), data.to_vec())];
        (format!("{seq}-0"), fields)
    }

    fn genuine(seq: u64) -> Entry {
        Entry { seq, kind: b'c', name: "patch".into(), data: Bytes::from_static(b"[]") }
    }

    #[test]
    fn entries_that_could_not_have_come_from_herald_are_refused() {
        let read = |e| entry(None, "t:{w}:log", e);
        assert_eq!(read(raw(3, "c", "patch", b"[]")), Some(genuine(3)));
        assert_eq!(read(raw(3, "s", "upstream-status", b"{}")).map(|e| e.kind), Some(b's'));
        let forged = [
            raw(3, "c", "change\nid: 1-99\nevent: x", b"{}"),
            raw(3, "c", "change\r", b"{}"),
            raw(3, "c", "", b"{}"),
            raw(3, "c", "change", b"{}\n\nevent: x\ndata: {}"),
            raw(3, "c", "change", b"{}\rid: 1-99"),
            raw(3, "q", "change", b"{}"),
            raw(3, "x", "", b"{}"),
            ("3".into(), raw(3, "c", "change", b"{}").1),
            ("x-0".into(), raw(3, "c", "change", b"{}").1),
            ("3-1".into(), raw(3, "c", "change", b"{}").1),
            (raw(3, "c", "change", b"{}").0, vec![("n".into(), b"change".to_vec()), ("d".into(), b"{}".to_vec())]),
        ];
        for e in forged {
            assert_eq!(read(e.clone()), None, "{e:?}");
        }
    }

    #[test]
    fn with_a_key_only_sealed_entries_of_this_log_are_read() {
        let sealer = Sealer::new(&[1; 32]);
        let seal = |log: &str, plain: &[u8]| sealer.seal(log.as_bytes(), plain);
        let read = |e| entry(Some(&sealer), "t:{w}:log", e);
        assert_eq!(read(raw(3, "x", "", &seal("t:{w}:log", b"cpatch\n[]"))), Some(genuine(3)));
        assert_eq!(read(raw(3, "c", "patch", b"[]")), None, "not sealed");
        assert_eq!(read(raw(3, "x", "", &seal("t:{v}:log", b"cpatch\n[]"))), None, "another watch's");
        assert_eq!(read(raw(3, "x", "", &Sealer::new(&[2; 32]).seal(b"t:{w}:log", b"cpatch\n[]"))), None);
        assert_eq!(read(raw(3, "x", "", &seal("t:{w}:log", b"cpatch"))), None, "no name/data separator");
        assert_eq!(read(raw(3, "x", "", &seal("t:{w}:log", b"cpatch\n[]\nid: 1"))), None, "sealed, still checked");
        assert_eq!(entry(None, "t:{w}:log", raw(3, "x", "", &seal("t:{w}:log", b"cpatch\n[]"))), None, "no key");
    }

    #[test]
    fn the_tail_stops_at_what_is_not_genuine_and_ends_at_the_state() {
        let seqs = |t: Vec<Entry>| t.iter().map(|e| e.seq).collect::<Vec<_>>();
        let all = || (3..=6).map(|s| Some(genuine(s))).collect::<Vec<_>>();
        assert_eq!(seqs(genuine_tail(all(), 6)), [3, 4, 5, 6]);
        let mut holed = all();
        holed[1] = None;
        assert_eq!(seqs(genuine_tail(holed, 6)), [5, 6], "what is before a forged entry is lost with it");
        let mut last = all();
        last[3] = None;
        assert!(genuine_tail(last, 6).is_empty());
        assert!(genuine_tail(all(), 7).is_empty(), "the state says more than the log holds");
        let gap = vec![Some(genuine(3)), Some(genuine(5)), Some(genuine(6))];
        assert_eq!(seqs(genuine_tail(gap, 6)), [5, 6]);
    }

    #[test]
    fn state_fields_are_checked_and_opened() {
        let meta = "t:{w}:meta";
        let field = |n: &str, v: &[u8]| (n.to_string(), v.to_vec());
        let plain = vec![field("e", b"7"), field("s", b"3"), field("body", b"[1]"), field("etag", b"\"a\"")];
        let m = parse_meta(None, meta, plain.clone()).unwrap();
        assert_eq!((m.epoch, m.seq, &m.body[..], m.etag.as_deref()), (7, 3, &b"[1]"[..], Some("\"a\"")));
        for bad in [field("etag", b"\"a\"\r\nx: y"), field("ct", b"a\nb"), field("failing", b"{}\ndata: x")] {
            assert!(parse_meta(None, meta, vec![bad.clone()]).is_err(), "{bad:?}");
        }
        let sealer = Sealer::new(&[1; 32]);
        assert!(parse_meta(Some(&sealer), meta, plain).is_err(), "with a key, a plain body is forged");
        let sealed = vec![field("s", b"3"), field("body", &sealer.seal(&field_aad(meta, "body"), b"[1]"))];
        assert_eq!(&parse_meta(Some(&sealer), meta, sealed).unwrap().body[..], b"[1]");
        let moved = vec![field("ct", &sealer.seal(&field_aad(meta, "body"), b"[1]"))];
        assert!(parse_meta(Some(&sealer), meta, moved).is_err(), "sealed for another field");
    }
}
