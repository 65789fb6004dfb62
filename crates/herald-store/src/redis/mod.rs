//! Cluster mode's Redis: one handle for the three deployments `storage.url` names (one server,
//! Sentinel, Redis Cluster), with a timeout on every call, `herald_redis_errors_total{op}`, and a
//! health flag that readiness and new subscriptions follow. Each watch's keys and scripts are in
//! [`watch_log`]; pub/sub notifications in [`bus`]; what is sealed, signed and checked, because
//! Redis is not trusted with credentials or with SSE frames, in [`trust`]; what TLS connections
//! trust and present, in [`tls`].

mod bus;
mod store;
mod tls;
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
use redis::{AsyncConnectionConfig, Client, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, ServerErrorKind, Value};
use tracing::warn;

pub use bus::{Bus, Following, Note};
pub use store::RedisStore;
pub use tls::{RedisTls, TlsFileError};
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
    /// `storage.ca_file` and the client certificate, for `rediss` URLs.
    tls: RedisTls,
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
    /// Connects to `url` (the first connection is made here, so a wrong address fails at start),
    /// over TLS with `tls` for `rediss` URLs. With `encryption_key`, what belongs to a subscriber
    /// is sealed, names derived from a credential scope are keyed hashes, and pub/sub messages
    /// are signed (see [`trust`]).
    pub async fn connect(
        url: &str,
        tls: RedisTls,
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
            tls,
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
                if needs_new_connection(&e) {
                    *self.conn.lock().await = None;
                }
                match tls_refused(&e) {
                    Some(why) => StoreError::Invalid(format!("redis {op}: {why}")),
                    None => StoreError::backend(format!("redis {op}"), e),
                }
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
                Conn::Server(self.client(url)?.get_multiplexed_async_connection_with_config(&config).await?)
            }
            RedisUrl::Sentinel { .. } => {
                Conn::Server(self.master().await?.get_multiplexed_async_connection_with_config(&config).await?)
            }
            RedisUrl::Cluster { nodes } => {
                let mut cluster = redis::cluster::ClusterClient::builder(nodes.iter().map(String::as_str))
                    .connection_timeout(self.timeout)
                    .response_timeout(self.timeout);
                if let Some(certs) = self.tls.certificates() {
                    cluster = cluster.certs(certs.clone());
                }
                Conn::Cluster(cluster.build()?.get_async_connection().await?)
            }
        };
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// The client of the server that publishes reach: the server, the Sentinels' master, or
    /// (Redis Cluster broadcasts PUBLISH to every node) the `n`th node of the cluster.
    async fn pubsub_client(&self, n: usize) -> Result<Client, RedisError> {
        match &self.url {
            RedisUrl::Server(url) => self.client(url),
            RedisUrl::Sentinel { .. } => self.master().await,
            RedisUrl::Cluster { nodes } => self.client(&nodes[n % nodes.len()]),
        }
    }

    /// The client of one server: over TLS with the configured CA and client certificate when
    /// the URL is `rediss://` and there are any.
    fn client(&self, url: &str) -> Result<Client, RedisError> {
        match self.tls.certificates() {
            Some(certs) if url.starts_with("rediss://") => Client::build_with_tls(url, certs.clone()),
            _ => Client::open(url),
        }
    }

    /// Asks the Sentinels where the master is now (every time: after a failover, the next
    /// connection goes to the replica they promoted). With TLS, the Sentinels and the master
    /// are both reached over it, with the same CA and client certificate.
    async fn master(&self) -> Result<Client, RedisError> {
        use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
        let RedisUrl::Sentinel { nodes, master, tls, credentials, db } = &self.url else {
            unreachable!("only called for Sentinel URLs")
        };
        let sentinels = nodes
            .iter()
            .map(|node| redis::IntoConnectionInfo::into_connection_info(node.as_str()).map(|info| info.addr().clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut builder =
            SentinelClientBuilder::new(sentinels, master, SentinelServerType::Master)?.set_client_to_redis_db(*db);
        if let Some(credentials) = credentials {
            let (user, password) = credentials.split_once(':').unwrap_or(("", credentials));
            if !user.is_empty() {
                builder = builder.set_client_to_redis_username(percent_decoded(user));
            }
            builder = builder.set_client_to_redis_password(percent_decoded(password));
        }
        if *tls {
            builder = builder.set_client_to_redis_tls_mode(redis::TlsMode::Secure);
            if let Some(certs) = self.tls.certificates() {
                builder = builder
                    .set_client_to_sentinel_certificates(certs.clone())
                    .set_client_to_redis_certificates(certs.clone());
            }
        }
        builder.build()?.async_get_client().await
    }
}

/// Whether a failed call should drop the connection, so that the next one connects anew: the
/// connection broke or hangs, or it reaches a server that is no longer the master (a Sentinel
/// failover demoted it; asking the Sentinels again finds the new one).
fn needs_new_connection(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(e.kind(), ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown))
}

/// What to tell an operator when the TLS handshake with Redis failed on a certificate: which
/// side refused and the key that fixes it. The Redis client keeps the TLS error behind its own
/// (no `source` reaches it), so this goes by rustls's words.
fn tls_refused(e: &RedisError) -> Option<String> {
    let text = e.to_string();
    if text.contains("invalid peer certificate") {
        Some(format!(
            "TLS: the server's certificate is not trusted ({text}); storage.ca_file must name the CA that signed it"
        ))
    } else if text.contains("received fatal alert") {
        Some(format!(
            "TLS: the server refused the handshake ({text}); if it asks for client certificates \
             (tls-auth-clients), set storage.client_cert and storage.client_key to one its CA signed"
        ))
    } else {
        None
    }
}

fn percent_decoded(s: &str) -> String {
    String::from_utf8_lossy(&herald_config::percent_decode(s.as_bytes())).into_owned()
}

fn backend(e: prometheus::Error) -> StoreError {
    StoreError::backend("metrics", e)
}
