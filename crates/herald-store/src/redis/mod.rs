//! Cluster mode's Redis: one handle for the three deployments `storage.url` names (one server,
//! Sentinel, Redis Cluster), with a timeout on every call, `herald_redis_errors_total{op}`, and a
//! health flag that readiness and new subscriptions follow. Each watch's keys and scripts are in
//! [`watch_log`]; pub/sub notifications in [`bus`]; what is sealed, signed and checked, because
//! Redis is not trusted with credentials or with SSE frames, in [`trust`].

mod bus;
mod store;
mod trust;
mod watch_log;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herald_config::RedisUrl;
use prometheus::{IntCounterVec, Opts, Registry};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisError, RedisFuture, Value};
use tracing::warn;

pub use bus::{Bus, Following, Note};
pub use store::RedisStore;
pub use watch_log::{Acquired, Appended, Entry, Meta, Update, WatchLog};

use crate::StoreError;
use trust::Keys;

/// The `op` label values of `herald_redis_errors_total`: what a failed call was for.
const OPS: [&str; 7] = ["append", "lease", "ping", "publish", "queue", "read", "secret"];

/// A connection to whatever `storage.url` names.
#[derive(Clone)]
enum Conn {
    /// One server, or the master a Sentinel named.
    Server(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Server(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Server(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Server(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The Redis of cluster mode. Cheap to share; every call is bounded by `timeout`.
pub struct Redis {
    url: RedisUrl,
    prefix: String,
    timeout: Duration,
    /// The connection in use; dropped after a connection error, so that the next call connects
    /// anew (and asks the Sentinels again where the master is).
    conn: tokio::sync::Mutex<Option<Conn>>,
    healthy: AtomicBool,
    errors: IntCounterVec,
    /// From `storage.encryption_key`: seals, hashes names, signs pub/sub messages.
    keys: Option<Keys>,
}

impl Redis {
    /// Connects to `url` (the first connection is made here, so a wrong address fails at start).
    /// With `encryption_key`, what belongs to a subscriber is sealed, names derived from a
    /// credential scope are keyed hashes, and pub/sub messages are signed (see [`trust`]).
    pub async fn connect(
        url: &str,
        prefix: &str,
        timeout: Duration,
        encryption_key: Option<&[u8; 32]>,
        registry: &Registry,
    ) -> Result<Arc<Redis>, StoreError> {
        let url = RedisUrl::parse(url).map_err(|e| StoreError::Invalid(format!("storage.url: {e}")))?;
        let errors = IntCounterVec::new(
            Opts::new("herald_redis_errors_total", "Redis calls that failed or timed out, by operation."),
            &["op"],
        )
        .map_err(backend)?;
        registry.register(Box::new(errors.clone())).map_err(backend)?;
        // Every operation's series from the start, so that alerts and dashboards see zeros.
        for op in OPS {
            errors.with_label_values(&[op]);
        }
        let redis = Arc::new(Redis {
            url,
            prefix: prefix.to_string(),
            timeout,
            conn: tokio::sync::Mutex::new(None),
            healthy: AtomicBool::new(false),
            errors,
            keys: encryption_key.map(Keys::new),
        });
        redis.ping().await?;
        Ok(redis)
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.call("ping", |mut c| async move { redis::cmd("PING").query_async::<()>(&mut c).await }).await
    }

    /// Publishes `message` on `channel` (every replica that follows it hears it), signed when
    /// there is a key.
    pub async fn publish(&self, channel: &str, message: &str) -> Result<(), StoreError> {
        let payload = self.signed(channel, message);
        self.call("publish", |mut c| async move {
            redis::cmd("PUBLISH").arg(channel).arg(payload).query_async::<()>(&mut c).await
        })
        .await
    }

    /// `message` as published on `channel`: with its signature when there is a key.
    fn signed(&self, channel: &str, message: &str) -> String {
        match &self.keys {
            Some(keys) => keys.sign(channel, message),
            None => message.to_string(),
        }
    }

    /// Whether the last call succeeded.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// `<prefix>:<name>`.
    pub fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    /// The name under which `id` (a hash of something a credential scope is part of) is kept:
    /// with a key, a keyed hash of it, so that one who reads Redis but has not the key cannot
    /// test guesses against it.
    pub fn name(&self, id: &str) -> String {
        match &self.keys {
            Some(keys) => keys.name(id),
            None => id.to_string(),
        }
    }

    /// A 32-byte secret every replica shares (created by the first one that asks); sealed in
    /// Redis when there is a key. One stored in the clear before the key was set is sealed now.
    pub async fn shared_secret(&self, name: &str) -> Result<[u8; 32], StoreError> {
        let key = self.key(name);
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh).map_err(|e| StoreError::backend("random source", e))?;
        let sealed = |secret: &[u8]| self.seal_secret(&key, secret);
        let stored: Vec<u8> = self
            .call("secret", |mut c| {
                let (key, value) = (key.clone(), sealed(&fresh));
                async move {
                    redis::cmd("SET").arg(&key).arg(value).arg("NX").query_async::<()>(&mut c).await?;
                    redis::cmd("GET").arg(&key).query_async(&mut c).await
                }
            })
            .await?;
        if let Ok(secret) = <[u8; 32]>::try_from(stored.as_slice()) {
            if self.keys.is_some() {
                let value = sealed(&secret);
                self.call("secret", |mut c| {
                    let key = key.clone();
                    async move { redis::cmd("SET").arg(&key).arg(value).arg("XX").query_async::<()>(&mut c).await }
                })
                .await?;
            }
            return Ok(secret);
        }
        if !crate::seal::is_sealed(&stored) {
            return Err(StoreError::Invalid(format!(
                "{key} does not hold 32 bytes (was it written by another program?)"
            )));
        }
        let keys = self.keys.as_ref().ok_or(StoreError::KeyNeeded)?;
        let secret = keys.sealer.open(key.as_bytes(), &stored).ok_or(StoreError::WrongKey)?;
        <[u8; 32]>::try_from(secret.as_slice()).map_err(|_| StoreError::Sealed { key })
    }

    /// Writes `secret` back as the shared secret `name` where Redis holds none (it lost its
    /// data); whether Redis now holds this one (`false`: another replica wrote a new one first).
    pub async fn restore_secret(&self, name: &str, secret: &[u8; 32]) -> Result<bool, StoreError> {
        let key = self.key(name);
        let value = self.seal_secret(&key, secret);
        self.call("secret", |mut c| {
            let key = key.clone();
            async move { redis::cmd("SET").arg(&key).arg(value).arg("NX").query_async::<()>(&mut c).await }
        })
        .await?;
        Ok(self.shared_secret(name).await? == *secret)
    }

    /// Whether Redis holds the shared secret `name`.
    pub async fn has_secret(&self, name: &str) -> Result<bool, StoreError> {
        let key = self.key(name);
        self.call("read", |mut c| {
            let key = key.clone();
            async move { redis::cmd("EXISTS").arg(&key).query_async::<bool>(&mut c).await }
        })
        .await
    }

    /// A shared secret as Redis keeps it: sealed for its key name when there is a key.
    fn seal_secret(&self, key: &str, secret: &[u8]) -> Vec<u8> {
        match &self.keys {
            Some(keys) => keys.sealer.seal(key.as_bytes(), secret),
            None => secret.to_vec(),
        }
    }

    /// Runs `f` on a connection, within the timeout; counts and reports failures.
    async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let result = tokio::time::timeout(self.timeout, async {
            let conn = self.conn().await?;
            f(conn).await
        })
        .await;
        let error = match result {
            Ok(Ok(v)) => {
                self.healthy.store(true, Ordering::Release);
                return Ok(v);
            }
            Ok(Err(e)) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
                    *self.conn.lock().await = None;
                }
                StoreError::backend(format!("redis {op}"), e)
            }
            Err(_) => {
                *self.conn.lock().await = None;
                StoreError::TimedOut { what: format!("redis {op}"), after: self.timeout }
            }
        };
        self.errors.with_label_values(&[op]).inc();
        if self.healthy.swap(false, Ordering::AcqRel) {
            warn!(op, %error, "redis unavailable");
        }
        Err(error)
    }

    async fn conn(&self) -> Result<Conn, RedisError> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let conn = match &self.url {
            RedisUrl::Server(url) => {
                Conn::Server(Client::open(url.as_str())?.get_multiplexed_async_connection_with_config(&config).await?)
            }
            RedisUrl::Sentinel { .. } => {
                Conn::Server(self.master().await?.get_multiplexed_async_connection_with_config(&config).await?)
            }
            RedisUrl::Cluster { nodes } => Conn::Cluster(
                redis::cluster::ClusterClient::builder(nodes.iter().map(String::as_str))
                    .connection_timeout(self.timeout)
                    .response_timeout(self.timeout)
                    .build()?
                    .get_async_connection()
                    .await?,
            ),
        };
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// The client of the server that publishes reach: the server, the Sentinels' master, or
    /// (Redis Cluster broadcasts PUBLISH to every node) the `n`th node of the cluster.
    async fn pubsub_client(&self, n: usize) -> Result<Client, RedisError> {
        match &self.url {
            RedisUrl::Server(url) => Client::open(url.as_str()),
            RedisUrl::Sentinel { .. } => self.master().await,
            RedisUrl::Cluster { nodes } => Client::open(nodes[n % nodes.len()].as_str()),
        }
    }

    /// Asks the Sentinels where the master is now.
    async fn master(&self) -> Result<Client, RedisError> {
        let RedisUrl::Sentinel { nodes, master, tls, credentials, db } = &self.url else {
            unreachable!("only called for Sentinel URLs")
        };
        let mut info = redis::RedisConnectionInfo::default().set_db(*db);
        if let Some(credentials) = credentials {
            let (user, password) = credentials.split_once(':').unwrap_or(("", credentials));
            if !user.is_empty() {
                info = info.set_username(percent_decoded(user));
            }
            info = info.set_password(percent_decoded(password));
        }
        let mut node = redis::sentinel::SentinelNodeConnectionInfo::default().set_redis_connection_info(info);
        if *tls {
            node = node.set_tls_mode(redis::TlsMode::Secure);
        }
        let mut sentinel = redis::sentinel::SentinelClient::build(
            nodes.iter().map(String::as_str).collect(),
            master.as_str(),
            Some(node),
            redis::sentinel::SentinelServerType::Master,
        )?;
        sentinel.async_get_client().await
    }
}

fn percent_decoded(s: &str) -> String {
    String::from_utf8_lossy(&herald_config::percent_decode(s.as_bytes())).into_owned()
}

fn backend(e: prometheus::Error) -> StoreError {
    StoreError::backend("metrics", e)
}
