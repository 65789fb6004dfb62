//! herald's configuration: the gateway.yaml schema, its defaults, `${VAR}` interpolation and one
//! validation pass that reports every problem as `file:line:col: key.path: message`.
//!
//! Loading works from a `&str` (tests never touch the disk). The document is parsed into a tree
//! that keeps positions ([`yaml`]), read key by key into the typed structs below, and then checked
//! as a whole (`min_interval <= interval`, unique route names…). Problems never stop the reading:
//! all of them are collected and returned together.
#![forbid(unsafe_code)]

mod read;
mod route_table;
pub mod units;
pub mod yaml;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

pub use read::{load, valid_subscription_id};
pub use route_table::RouteTable;

/// The whole gateway configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The listeners: addresses, limits, timeouts, TLS (`server.*`).
    pub server: Server,
    /// Bounds on watches (`limits.*`).
    pub limits: Limits,
    /// The API herald stands in front of (`upstream.*`).
    pub upstream: Upstream,
    /// The watchable resources, matched in order (`routes[]`).
    pub routes: Vec<Route>,
    /// Server-Sent Events streams (`sse.*`).
    pub sse: Sse,
    /// Where durable state lives (`storage.*`).
    pub storage: Storage,
    /// Webhook subscriptions and delivery (`webhooks.*`).
    pub webhooks: Webhooks,
    /// Log format and level (`log.*`).
    pub log: Log,
    /// Where each key was written, for problems found after loading (files that cannot be read).
    pub positions: Positions,
}

/// The file a configuration came from and where its keys were written.
#[derive(Debug, Clone, Default)]
pub struct Positions {
    file: String,
    at: std::collections::HashMap<String, yaml::Pos>,
}

impl Positions {
    pub(crate) fn new(file: &str, at: std::collections::HashMap<String, yaml::Pos>) -> Self {
        Positions { file: file.to_string(), at }
    }

    /// A problem with `path` (e.g. `server.tls.cert`), placed where it (or its closest parent)
    /// was written.
    pub fn problem(&self, path: &str, message: impl Into<String>) -> Problem {
        let pos = position(&self.at, path);
        Problem {
            file: self.file.clone(),
            line: pos.line,
            col: pos.col,
            path: path.to_string(),
            message: message.into(),
        }
    }
}

/// Where `path`, or its closest parent, was written (the file's start when none was).
pub(crate) fn position(at: &std::collections::HashMap<String, yaml::Pos>, path: &str) -> yaml::Pos {
    let mut p = path;
    loop {
        if let Some(pos) = at.get(p) {
            return *pos;
        }
        match p.rfind(['.', '[']) {
            Some(i) => p = &p[..i],
            None => return yaml::Pos { line: 1, col: 1 },
        }
    }
}

/// The listeners.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// Public listener: pass-through and SSE.
    pub listen: SocketAddr,
    /// Admin listener: /metrics /healthz /readyz /admin/watches.
    pub admin_listen: SocketAddr,
    /// How long open connections get to finish after SIGTERM/SIGINT.
    pub shutdown_grace: Duration,
    /// HTTPS on the public listener (HTTP/2 and HTTP/1.1 by ALPN).
    pub tls: Option<Tls>,
    /// A client must send a request's headers within this (slowloris protection).
    pub header_timeout: Duration,
    /// Largest request head (request line and headers) accepted; larger gets 431.
    pub max_header_size: u64,
    /// Connections open at once on the public listener (WebSocket tunnels included); more wait
    /// to be accepted.
    pub max_connections: usize,
    /// A connection with no request and no stream in flight for this long is closed.
    pub idle_timeout: Duration,
    /// When set, `/admin/*` needs `Authorization: Bearer <it>`. A secret: never logged.
    pub admin_token: Option<String>,
    /// One structured log line per request on the public listener (never credentials).
    pub access_log: bool,
}

/// Bounds on what clients can make herald hold (spec section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Watches alive at once; a request that would create one more gets 503 + Retry-After.
    pub max_watches: usize,
    /// Watches per credential scope on per-subscriber and shared routes; over it: 429 + Retry-After.
    pub max_watches_per_scope: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_watches: 10_000, max_watches_per_scope: 100 }
    }
}

/// PEM files for the public listener, as written (relative paths are relative to the
/// configuration file; the binary resolves them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// PEM certificate chain file (relative to the configuration file).
    pub cert: String,
    /// PEM private key file (relative to the configuration file). Secret: never logged.
    pub key: String,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: ([127, 0, 0, 1], 8080).into(),
            admin_listen: ([127, 0, 0, 1], 9464).into(),
            shutdown_grace: Duration::from_secs(10),
            tls: None,
            header_timeout: Duration::from_secs(30),
            max_header_size: 64 << 10,
            max_connections: 20_000,
            idle_timeout: Duration::from_secs(60),
            admin_token: None,
            access_log: false,
        }
    }
}

/// The legacy API herald stands in front of.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    /// Base URL (http or https), without a trailing slash; parsed once, here.
    pub url: UpstreamUrl,
    /// Limit for one upstream request (poll, admission check, pass-through response headers).
    pub timeout: Duration,
    /// Polls and admission checks in flight at once (pass-through is not counted).
    pub max_concurrency: usize,
    /// Token bucket over all polls.
    pub max_polls_per_second: f64,
    /// A poll body larger than this is an error; it is never buffered whole.
    pub max_body: u64,
    /// Added to every poll (e.g. a service credential). Values are secrets: never logged.
    pub headers: Vec<(String, String)>,
    /// PEM file with extra trust roots for an https upstream (relative to the configuration
    /// file; the binary resolves it).
    pub ca_file: Option<String>,
    /// PEM certificate (chain) herald presents to the upstream (mTLS), with `client_key`; both
    /// or neither. Relative to the configuration file, like `ca_file`.
    pub client_cert: Option<String>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<String>,
    /// How herald obtains the service credential itself (`upstream.auth`), instead of a fixed
    /// `authorization` in `upstream.headers`.
    pub auth: Option<UpstreamAuth>,
    /// Requests left in the upstream's announced quota (`RateLimit`, `X-RateLimit-*`) at which
    /// herald starts spreading the rest until the reset. `None`: a tenth of the announced limit
    /// (at least 1), or 10 when the upstream announces none.
    pub rate_limit_reserve: Option<u64>,
    /// Whether the upstream's quota fields (`RateLimit`, `X-RateLimit-*`) are read; `false`:
    /// ignored (an upstream whose fields are wrong, or count something else).
    pub rate_limit_headers: bool,
}

/// `upstream.auth: {kind: oauth2_client_credentials, …}`: an OAuth 2.0 client credentials grant
/// (RFC 6749 section 4.4) whose access token is the service credential (spec section 5).
#[derive(Clone, PartialEq)]
pub struct UpstreamAuth {
    /// The authorization server's token endpoint (http or https).
    pub token_url: String,
    pub client_id: String,
    /// A secret: never logged, never printed by `Debug`.
    pub client_secret: String,
    /// `scope` sent with the token request, when set.
    pub scope: Option<String>,
    /// `audience` sent with the token request, when set (an extension some servers require).
    pub audience: Option<String>,
}

impl fmt::Debug for UpstreamAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamAuth")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("scope", &self.scope)
            .field("audience", &self.audience)
            .finish()
    }
}

/// `upstream.url`, checked and split once: `http[s]://authority[/base-path]`, no query, no
/// userinfo (a password in it becomes an `authorization` header), no trailing slash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// The whole URL, as logs show it.
    url: String,
    /// `https://` (else `http://`).
    https: bool,
    /// Where the authority ends in `url`; the base path follows it.
    authority_end: usize,
}

impl UpstreamUrl {
    /// Parses a URL without userinfo; why it is not one herald can pass requests to, otherwise.
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim_end_matches('/');
        let (https, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => return Err(format!("invalid URL {url:?} (expected http://host:port or https://host)")),
        };
        let authority = rest.split('/').next().unwrap_or("");
        if authority.is_empty() || rest.contains(['?', '#']) {
            return Err(format!("invalid URL {url:?} (expected http://host:port[/base-path], no query)"));
        }
        let authority_end = url.len() - rest.len() + authority.len();
        Ok(UpstreamUrl { url: url.to_string(), https, authority_end })
    }

    pub fn as_str(&self) -> &str {
        &self.url
    }

    pub fn https(&self) -> bool {
        self.https
    }

    /// `host[:port]`.
    pub fn authority(&self) -> &str {
        let start = if self.https { "https://".len() } else { "http://".len() };
        &self.url[start..self.authority_end]
    }

    /// The path every request target is put behind: "" or `/api`, never a trailing `/`.
    pub fn base_path(&self) -> &str {
        &self.url[self.authority_end..]
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl PartialEq<&str> for UpstreamUrl {
    fn eq(&self, other: &&str) -> bool {
        self.url == *other
    }
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            url: UpstreamUrl::default(),
            timeout: Duration::from_secs(10),
            max_concurrency: 64,
            max_polls_per_second: 100.0,
            max_body: 8 << 20,
            headers: Vec::new(),
            ca_file: None,
            client_cert: None,
            client_key: None,
            auth: None,
            rate_limit_reserve: None,
            rate_limit_headers: true,
        }
    }
}

/// Who may share a watch (spec section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    PerSubscriber,
    Shared,
    Public,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::PerSubscriber => "per-subscriber",
            Access::Shared => "shared",
            Access::Public => "public",
        }
    }
}

/// One watched upstream path pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Unique, `[a-z0-9_-]+`; the `route` metric label.
    pub name: String,
    /// The pattern as written, e.g. `/tasks/{id}`.
    pub path: String,
    /// `public`, `shared` or `per-subscriber`: who shares a watch (spec section 5).
    pub access: Access,
    /// Lower-cased request header names that form the credential scope and are forwarded on polls.
    pub vary: Vec<String>,
    /// `None`: the whole query string is part of the watch. A list: only these parameters are;
    /// others are dropped before the watch key is formed.
    pub query: Option<Vec<String>>,
    /// `shared`: how long a successful admission check is remembered per (target, credential).
    pub authorize_ttl: Duration,
    /// How often and how the route's watches are polled.
    pub poll: Poll,
    /// JSON Pointers removed from the body before change detection and from events.
    pub ignore: Vec<String>,
    /// What a change becomes: the event format, history and item options.
    pub events: Events,
    /// Answer plain GETs (legacy pollers) from the watch instead of passing them through.
    pub cache: bool,
    /// Webhook subscriptions may target this route.
    pub webhooks: bool,
    /// A write passed through on this route's path (or an item under it) that answers 2xx
    /// re-polls the watches it can have changed at once (spec section 13).
    pub refresh_on_write: bool,
}

impl Route {
    fn new(name: String, path: String) -> Self {
        Route {
            name,
            path,
            access: Access::PerSubscriber,
            vary: vec!["authorization".into(), "cookie".into()],
            query: None,
            authorize_ttl: Duration::from_secs(60),
            poll: Poll::default(),
            ignore: Vec::new(),
            events: Events::default(),
            cache: true,
            refresh_on_write: true,
            webhooks: true,
        }
    }
}

/// How a watch polls (spec section 10).
#[derive(Debug, Clone, PartialEq)]
pub struct Poll {
    /// The poll interval a watch starts with (and keeps, without `adaptive`).
    pub interval: Duration,
    /// Adaptive lower bound.
    pub min_interval: Duration,
    /// Adaptive and error-backoff upper bound.
    pub max_interval: Duration,
    /// Lengthen the interval while nothing changes, shorten it after a change.
    pub adaptive: bool,
    /// +/- fraction applied to every delay, so watches do not poll in lock-step.
    pub jitter: f64,
    /// Keep polling this long after the last subscriber left.
    pub linger: Duration,
    /// A paginated collection, followed page by page and merged into one representation.
    pub pages: Option<Pages>,
    /// A collection whose API lists what changed since a value: only that is polled.
    pub delta: Option<Delta>,
}

/// `poll.pages`: how a paginated collection is followed (spec section 3).
#[derive(Debug, Clone, PartialEq)]
pub struct Pages {
    /// Where the next page is named.
    pub next: NextPage,
    /// With a pointer to a cursor: the query parameter that carries it to the next request.
    pub cursor_param: Option<String>,
    /// JSON Pointer to each page's array; the arrays are concatenated in order.
    pub items: String,
    /// More pages than this is a poll error, never a truncated representation.
    pub max_pages: usize,
}

/// `poll.delta`: a collection polled for what changed since the previous poll, its items
/// upserted and removed by id in the collection the watch holds (spec section 3).
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    /// The query parameter that carries the value taken from the previous answer.
    pub param: String,
    /// Where that value is taken from.
    pub from: DeltaFrom,
    /// How an answer says an item was removed.
    pub deleted: Deleted,
    /// The whole collection is read again this often, its differences emitted (drift repair).
    pub full_every: Duration,
}

/// `poll.delta.from`: where the next delta's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum DeltaFrom {
    /// `max:<pointer>`: the greatest value of this field among the items seen.
    Max(String),
    /// `body:<pointer>`: this value in the answer's body (a cursor).
    Body(String),
    /// `header:<name>`: this field of the answer (lower case).
    Header(String),
}

/// `poll.delta.deleted`: how removals reach herald.
#[derive(Debug, Clone, PartialEq)]
pub enum Deleted {
    /// Only the periodic full read finds removed items.
    None,
    /// A JSON Pointer to a tombstone flag in an item: `true` means removed.
    Flag(String),
    /// `feed:<suffix>`: `<watched path><suffix>?<param>=<value>` lists the items removed since.
    Feed(String),
}

/// Where a page names the next one.
#[derive(Debug, Clone, PartialEq)]
pub enum NextPage {
    /// RFC 8288 `Link: <…>; rel="next"`.
    Link,
    /// A JSON Pointer to the next page's URL (or, with `cursor_param`, its cursor) in the body.
    Pointer(String),
}

impl Default for Poll {
    fn default() -> Self {
        Poll {
            interval: Duration::from_secs(5),
            min_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(60),
            adaptive: true,
            jitter: 0.1,
            linger: Duration::from_secs(60),
            pages: None,
            delta: None,
        }
    }
}

/// How changes are encoded (spec section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `change` events with the whole new representation.
    Snapshot,
    /// `patch` events: RFC 6902 operations.
    JsonPatch,
    /// `merge-patch` events: RFC 7396 documents (a `snapshot` where none can express the change).
    MergePatch,
    /// `<type>.created` / `.updated` / `.deleted`, one per changed item.
    Collection,
}

impl Format {
    /// As written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Snapshot => "snapshot",
            Format::JsonPatch => "json-patch",
            Format::MergePatch => "merge-patch",
            Format::Collection => "collection",
        }
    }
}

/// What an item event carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// The item itself, as `resourceDetails`.
    Rich,
    /// Only ids and links: the receiver fetches what it needs.
    Lean,
}

/// Where a collection's items are and what identifies them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionConfig {
    /// JSON Pointer to the array; "" is the whole body.
    pub items: String,
    /// JSON Pointer inside an item to its identity.
    pub id: String,
    /// `rich` (the item as `resourceDetails`) or `lean` (only ids and links).
    pub payload: Payload,
}

impl Default for CollectionConfig {
    fn default() -> Self {
        CollectionConfig { items: String::new(), id: "/id".into(), payload: Payload::Rich }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Events {
    /// `snapshot`, `json-patch`, `merge-patch` or `collection`.
    pub format: Format,
    /// Event type prefix; defaults to the route name.
    pub type_prefix: Option<String>,
    /// Events kept per watch for `Last-Event-ID` resume.
    pub history: usize,
    /// And at most this many bytes of encoded events per watch (oldest dropped first).
    pub history_bytes: u64,
    /// json-patch: JSON Pointer inside array elements to their identity, for aligning arrays.
    pub array_id: Option<String>,
    /// Required when `format` is `collection`.
    pub collection: Option<CollectionConfig>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            format: Format::Snapshot,
            type_prefix: None,
            history: 1000,
            history_bytes: 8 << 20,
            array_id: None,
            collection: None,
        }
    }
}

/// Server-Sent Events settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Sse {
    /// A comment line is sent when a stream has been idle this long.
    pub heartbeat: Duration,
    /// Sent as `retry:` when a stream opens.
    pub retry: Duration,
    /// Streams open and long polls held at once over all watches; over it: 503 + Retry-After.
    pub max_subscribers: usize,
    /// Events buffered for one slow subscriber before it is resynced with a snapshot.
    pub queue: usize,
    /// Origins allowed by CORS; `*` allows any.
    pub cors_origins: Vec<String>,
    /// A subscriber whose socket takes nothing for this long is dropped.
    pub write_timeout: Duration,
}

impl Default for Sse {
    fn default() -> Self {
        Sse {
            heartbeat: Duration::from_secs(15),
            retry: Duration::from_secs(3),
            max_subscribers: 100_000,
            queue: 64,
            cors_origins: Vec::new(),
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// Where webhook subscriptions, the delivery queue and webhook watches' last representations live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    /// `embedded`, `memory` or `redis`.
    pub kind: StorageKind,
    /// `embedded`: the folder holding the database file (relative to the configuration file; the
    /// binary resolves it).
    pub path: String,
    /// 32 bytes: webhook secrets and subscription headers are stored encrypted with it.
    pub encryption_key: Option<[u8; 32]>,
    /// `redis`: where the server is (see [`RedisUrl`]). Secret: may hold a password.
    pub url: String,
    /// `redis`: every key starts with `<prefix>:`, so several gateways can share one Redis.
    pub prefix: String,
    /// `redis`: how long a replica's poll lease lives without renewal.
    pub lease: Duration,
    /// `redis` over TLS: PEM file of the CA(s) that signed the servers' certificates (a private
    /// CA; it replaces the public roots). Relative to the configuration file; the binary
    /// resolves it.
    pub ca_file: Option<String>,
    /// `redis` over TLS: PEM certificate (chain) herald presents to Redis (`tls-auth-clients`),
    /// with `client_key`; both or neither.
    pub client_cert: Option<String>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<String>,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            kind: StorageKind::Embedded,
            path: "./herald-data".into(),
            encryption_key: None,
            url: "redis://127.0.0.1:6379".into(),
            prefix: "herald".into(),
            lease: Duration::from_secs(10),
            ca_file: None,
            client_cert: None,
            client_key: None,
        }
    }
}

/// `storage.url`, by deployment: one server (`redis://`, `rediss://` with TLS), Sentinel
/// (`redis+sentinel://[user:password@]h1:26379,h2/master[/db]`) or Redis Cluster
/// (`redis+cluster://[user:password@]h1:6379,h2:6379`; `rediss+…` for TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisUrl {
    /// A URL the Redis client takes as it is.
    Server(String),
    Sentinel {
        nodes: Vec<String>,
        master: String,
        tls: bool,
        credentials: Option<String>,
        db: i64,
    },
    Cluster {
        nodes: Vec<String>,
    },
}

impl RedisUrl {
    /// Splits `url` by deployment. The error never repeats the URL (it may hold a password).
    pub fn parse(url: &str) -> Result<RedisUrl, String> {
        let expected = "expected redis://, rediss://, redis+sentinel:// or redis+cluster://";
        let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("invalid URL ({expected})"))?;
        let (tls, kind) = match scheme {
            "redis" | "rediss" => return Ok(RedisUrl::Server(url.to_string())),
            "redis+sentinel" => (false, "sentinel"),
            "rediss+sentinel" => (true, "sentinel"),
            "redis+cluster" => (false, "cluster"),
            "rediss+cluster" => (true, "cluster"),
            _ => return Err(format!("invalid scheme {scheme:?} ({expected})")),
        };
        let (credentials, rest) = match rest.rsplit_once('@') {
            Some((c, rest)) => (Some(c.to_string()), rest),
            None => (None, rest),
        };
        let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
        let server = if tls { "rediss" } else { "redis" };
        let nodes: Vec<String> = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| match &credentials {
                Some(c) if kind == "cluster" => format!("{server}://{c}@{h}"),
                _ => format!("{server}://{h}"),
            })
            .collect();
        if nodes.is_empty() {
            return Err("no host (expected e.g. redis+cluster://h1:6379,h2:6379)".into());
        }
        if kind == "cluster" {
            return Ok(RedisUrl::Cluster { nodes });
        }
        let mut parts = path.split('/');
        let master = parts.next().unwrap_or_default().to_string();
        if master.is_empty() {
            return Err("no master name (expected redis+sentinel://h1:26379,h2:26379/mymaster)".into());
        }
        let db = match parts.next() {
            None | Some("") => 0,
            Some(db) => db.parse().map_err(|_| "invalid database number after the master name".to_string())?,
        };
        Ok(RedisUrl::Sentinel { nodes, master, tls, credentials, db })
    }

    /// Whether herald talks TLS to it (`rediss…://`).
    pub fn tls(&self) -> bool {
        match self {
            RedisUrl::Server(url) => url.starts_with("rediss://"),
            RedisUrl::Sentinel { tls, .. } => *tls,
            RedisUrl::Cluster { nodes } => nodes.iter().all(|n| n.starts_with("rediss://")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageKind {
    /// One redb file under `path`: survives restarts and `kill -9`.
    Embedded,
    /// Nothing persisted.
    Memory,
    /// Cluster mode: watches, events and leases in Redis, shared by every replica.
    Redis,
}

/// Webhook subscriptions and their delivery (spec section 7).
#[derive(Debug, Clone, PartialEq)]
pub struct Webhooks {
    /// Bearer keys for the subscription API; none: the API answers 404. Secrets: never logged.
    pub api_keys: Vec<String>,
    /// One delivery attempt: connect, send, and the receiver's answer.
    pub timeout: Duration,
    /// Delays after the immediate first attempt; when exhausted a message is `dead`.
    pub retry_schedule: Vec<Duration>,
    /// Delivery attempts in flight at once over all subscriptions.
    pub max_in_flight: usize,
    /// Which private/reserved destinations may be delivered to.
    pub allow_private_destinations: PrivateDestinations,
    /// A subscription failing continuously this long is disabled.
    pub disable_after: Duration,
    /// Subscriptions declared in the file (they are created or updated at start).
    pub subscriptions: Vec<StaticSubscription>,
    /// `POST /_herald/v1/notify` (with an API key) takes change hints (spec section 13).
    pub notify: bool,
    /// Where `herald.*` operational events go (spec section 7), signed with `operational_secret`.
    pub operational_url: Option<String>,
    /// The signing secret of operational events (`whsec_…`). Secret: never logged.
    pub operational_secret: Option<String>,
}

impl Default for Webhooks {
    fn default() -> Self {
        let (m, h) = (60, 3600);
        Webhooks {
            api_keys: Vec::new(),
            timeout: Duration::from_secs(15),
            retry_schedule: [5, 5 * m, 30 * m, 2 * h, 5 * h, 10 * h, 10 * h].map(Duration::from_secs).to_vec(),
            max_in_flight: 256,
            allow_private_destinations: PrivateDestinations::None,
            disable_after: Duration::from_secs(5 * 24 * h),
            subscriptions: Vec::new(),
            notify: false,
            operational_url: None,
            operational_secret: None,
        }
    }
}

/// `webhooks.allow_private_destinations`: `false`, `true`, or a list of CIDRs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrivateDestinations {
    None,
    All,
    Cidrs(Vec<ipnet::IpNet>),
}

/// A subscription from `webhooks.subscriptions`: the fields of `POST /_herald/v1/webhooks`, plus `id`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaticSubscription {
    /// Stable id, unique among declared subscriptions.
    pub id: String,
    /// Where deliveries are POSTed.
    pub url: String,
    /// The upstream path (+ query) watched; must match a route that allows webhooks.
    pub path: String,
    /// Event types delivered (`*` allowed as the last segment); empty: all.
    pub filter: Vec<String>,
    /// `rich` or `lean`; `None`: the route's.
    pub payload: Option<Payload>,
    /// `whsec_…`; generated and kept in storage when absent.
    pub secret: Option<String>,
    /// Presented to the upstream when polling for this subscription. Secrets: never logged.
    pub headers: Vec<(String, String)>,
    /// Free text, shown by the API.
    pub description: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    /// `text` or `json` (one object per line, on stderr).
    pub format: LogFormat,
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Log { format: LogFormat::Text, level: "info".into() }
    }
}

/// One configuration problem, printed as `file:line:col: key.path: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The configuration file.
    pub file: String,
    /// 1-based line of the value (or of the closest parent written).
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// The key path, e.g. `routes[1].poll.interval`.
    pub path: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.col)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one configuration file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Checks a webhook destination: an absolute http(s) URL with a host.
pub fn check_destination_url(url: &str) -> Result<(), String> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or(""));
    match host {
        Some(h) if !h.is_empty() && !h.contains('@') && !url.contains(char::is_whitespace) => Ok(()),
        _ => Err(format!("invalid URL {url:?} (expected an absolute http:// or https:// URL)")),
    }
}

/// Checks a webhook secret: `whsec_` and the base64 of 24 to 64 bytes.
pub fn check_secret(secret: &str) -> Result<(), String> {
    use base64::Engine;
    let key = secret
        .strip_prefix("whsec_")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .ok_or("invalid secret (expected whsec_ followed by base64)")?;
    if (24..=64).contains(&key.len()) {
        Ok(())
    } else {
        Err(format!("invalid secret: {} bytes after whsec_ (expected 24 to 64)", key.len()))
    }
}

/// Checks one event type filter: dot-separated segments, `*` allowed only as the last.
pub fn check_filter(filter: &str) -> Result<(), String> {
    let segments: Vec<_> = filter.split('.').collect();
    let ok = segments.iter().enumerate().all(|(i, s)| {
        (*s == "*" && i == segments.len() - 1)
            || (!s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b)))
    });
    if ok {
        Ok(())
    } else {
        Err(format!("invalid event type filter {filter:?} (expected e.g. task.created or task.*)"))
    }
}

/// Checks that every segment of a request path is one segment of the upstream's too: no `.` or
/// `..`, no `/` or `\`, no control character, written plainly or percent-encoded (spec section
/// 5: a route never reaches another upstream path).
pub fn check_segments(path: &str) -> Result<(), String> {
    for segment in path.split('/').skip(1) {
        let decoded = percent_decode(segment.as_bytes());
        let bad = matches!(&decoded[..], b"." | b"..")
            || decoded.iter().any(|&b| b == b'/' || b == b'\\' || b.is_ascii_control());
        if bad {
            return Err(format!("invalid path segment {:?}: a path parameter is one segment", segment));
        }
    }
    Ok(())
}

/// `%XX` sequences decoded (invalid ones kept as written).
pub fn percent_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// A route's path pattern split into segments, for matching request paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Param(String),
}

/// Splits `/tasks/{id}` into segments; `None` when the pattern is malformed.
pub fn parse_pattern(path: &str) -> Option<Vec<Segment>> {
    let rest = path.strip_prefix('/')?;
    if rest.is_empty() {
        return Some(Vec::new());
    }
    rest.split('/')
        .map(|seg| {
            if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                ok.then(|| Segment::Param(name.to_string()))
            } else if seg.is_empty() || seg.contains(['{', '}', '?', '#']) {
                None
            } else {
                Some(Segment::Literal(seg.to_string()))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_upstream_url_is_split_once_into_its_parts() {
        let url = UpstreamUrl::parse("https://api.example:8443/v1/").unwrap();
        assert_eq!(
            (url.as_str(), url.https(), url.authority(), url.base_path()),
            ("https://api.example:8443/v1", true, "api.example:8443", "/v1")
        );
        let url = UpstreamUrl::parse("http://127.0.0.1:8081").unwrap();
        assert_eq!((url.https(), url.authority(), url.base_path()), (false, "127.0.0.1:8081", ""));
        for bad in ["ftp://h", "http://", "http:///a", "http://h/a?b", "http://h#x", "127.0.0.1:80"] {
            assert!(UpstreamUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redis_urls_by_deployment() {
        use super::RedisUrl;
        assert_eq!(RedisUrl::parse("rediss://:pw@h:6380/2"), Ok(RedisUrl::Server("rediss://:pw@h:6380/2".into())));
        assert_eq!(
            RedisUrl::parse("redis+cluster://u:p@a:1,b:2"),
            Ok(RedisUrl::Cluster { nodes: vec!["redis://u:p@a:1".into(), "redis://u:p@b:2".into()] })
        );
        assert_eq!(
            RedisUrl::parse("rediss+sentinel://:secret@s1:26379,s2/mymaster/3"),
            Ok(RedisUrl::Sentinel {
                nodes: vec!["rediss://s1:26379".into(), "rediss://s2".into()],
                master: "mymaster".into(),
                tls: true,
                credentials: Some(":secret".into()),
                db: 3,
            })
        );
        for (url, tls) in [
            ("rediss://h", true),
            ("redis://h", false),
            ("rediss+cluster://a,b", true),
            ("redis+sentinel://s/m", false),
        ] {
            assert_eq!(RedisUrl::parse(url).unwrap().tls(), tls, "{url}");
        }
        for bad in ["http://h", "h:6379", "redis+cluster://", "redis+sentinel://s1", "redis+sentinel://:pw@s1/m/x"] {
            let e = RedisUrl::parse(bad).unwrap_err();
            assert!(!e.contains("pw"), "the message never repeats the URL: {e}");
        }
    }

    use super::*;

    #[test]
    fn a_path_parameter_is_one_segment() {
        for ok in ["/tasks", "/tasks/42", "/tasks/a.b", "/tasks/%41", "/tasks/..a", "/tasks/%", "/tasks/%2", "/"] {
            assert!(check_segments(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/tasks/..",
            "/tasks/.",
            "/tasks/%2e%2e",
            "/tasks/%2E.",
            "/tasks/%2e",
            "/tasks/a%2fb",
            "/tasks/a%2Fb",
            "/tasks/a\\b",
            "/tasks/a%5cb",
            "/tasks/a%00b",
            "/tasks/%0a",
            "/tasks/a%7fb",
        ] {
            assert!(check_segments(bad).is_err(), "{bad}");
        }
    }
}
