//! Wiring: builds the metrics registry and every component from the configuration, binds the
//! listeners, and runs until SIGTERM/SIGINT, then drains within `server.shutdown_grace`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use herald_config::{Config, Log, LogFormat, Storage, StorageKind};
use herald_http::{Admin, App, Current, HttpMetrics, Limits, Tls};
use herald_poll::{Cluster, Hub, HubConfig, PollMetrics, UpstreamClient};
use herald_sse::{Sessions, SseConfig, SseMetrics};
use herald_store::redis::{Redis, RedisStore, RedisTls, TlsFileError};
use herald_store::{RedbStore, Store};
use herald_webhooks::{WebhookMetrics, Webhooks};
use prometheus::{IntGaugeVec, Opts, Registry};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub(crate) fn init_logging(log: &Log) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{},hyper=warn,reqwest=warn", log.level)));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Runs the gateway of `config`, read from `file` (read again on SIGHUP).
pub(crate) async fn run(config: Config, file: PathBuf, tls: Option<Arc<Tls>>, demo: bool) -> anyhow::Result<()> {
    if demo {
        start_demo_api(&config).await?;
    }
    let registry = Registry::new();
    let build_info = IntGaugeVec::new(Opts::new("herald_build_info", "herald's version; always 1."), &["version"])?;
    build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    registry.register(Box::new(build_info))?;

    let shutdown = CancellationToken::new();
    let (store, cluster): (Arc<dyn Store>, _) = match config.storage.kind {
        StorageKind::Redis => {
            let s = &config.storage;
            let timeout = Duration::from_secs(2).min(s.lease / 2);
            let redis = Redis::connect(&s.url, redis_tls(s)?, &s.prefix, timeout, s.encryption_key.as_ref(), &registry)
                .await
                .context("cannot reach redis (storage.url)")?;
            let replica = replica_name();
            info!(replica = %replica, prefix = %s.prefix, "cluster mode: redis connected");
            // A message taken by a replica that dies comes due again after this: longer than an
            // attempt can take, so a slow attempt is never repeated while it runs.
            let claim = config.webhooks.timeout + Duration::from_secs(10);
            let store =
                RedisStore::open(redis.clone(), claim).await.context("cannot open the webhook store in redis")?;
            (Arc::new(store), Some(Cluster::new(redis, replica, s.lease, &registry, shutdown.child_token())?))
        }
        StorageKind::Embedded | StorageKind::Memory => (open_store(&config.storage)?, None),
    };
    let scope_key = store.scope_key().await?;
    let fetch = UpstreamClient::new(&config.upstream)?;
    fetch.register(&registry)?;
    let fetch = Arc::new(fetch);
    let hub = Hub::new(
        HubConfig {
            routes: config.routes.clone(),
            queue: config.sse.queue,
            max_polls_per_second: config.upstream.max_polls_per_second,
            max_concurrency: config.upstream.max_concurrency,
            scope_key,
            limits: config.limits,
            cluster,
        },
        fetch,
        &PollMetrics::new(&registry)?,
        shutdown.child_token(),
    );
    let sse_metrics = SseMetrics::new(&registry)?;
    for route in &config.routes {
        sse_metrics.init_route(&route.name);
    }
    let sessions = Sessions::new(
        SseConfig {
            heartbeat: config.sse.heartbeat,
            retry: config.sse.retry,
            max_subscribers: config.sse.max_subscribers,
        },
        sse_metrics,
    );
    let webhooks = Webhooks::start(
        config.webhooks.clone(),
        &config.routes,
        store,
        hub.clone(),
        WebhookMetrics::new(&registry)?,
        shutdown.child_token(),
    )
    .await?;
    let metrics = HttpMetrics::new(&registry)?;
    let slots: Vec<usize> = (0..config.routes.len()).collect();
    let app =
        App::new(&config, &slots, hub.clone(), sessions.clone(), webhooks.clone(), metrics.clone(), shutdown.clone());
    let current = Current::new(app);
    let admin = Arc::new(Admin::new(
        registry,
        hub.clone(),
        webhooks.clone(),
        config.server.admin_token.as_deref(),
        shutdown.clone(),
    ));

    let public = bind(config.server.listen, "server.listen").await?;
    let admin_listener = bind(config.server.admin_listen, "server.admin_listen").await?;
    let public_addr = public.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    // `listener` and `addr` are for tools (the tests learn the ports from them, with `-l json`).
    info!(listener = "public", addr = %public_addr, "public listener bound");
    info!(listener = "admin", addr = %admin_addr, "admin listener bound");

    let grace = config.server.shutdown_grace;
    if let Some(tls) = &tls {
        tls.clone().watch(shutdown.clone());
    }
    let limits = Limits::from_config(&config.server, &config.sse);
    // The fast lane and direct streams answer outside hyper, and outside the access log.
    let front = (!config.server.access_log).then(|| current.clone());
    let handler = {
        let current = current.clone();
        move |req, peer| current.get().handle(req, peer)
    };
    let public_task = tokio::spawn(herald_http::serve(public, limits, tls, handler, front, shutdown.clone(), grace));
    // The admin listener outlives the public one's drain, so that /readyz can say "shutting down".
    let admin_stop = CancellationToken::new();
    let admin_task = {
        let admin = admin.clone();
        tokio::spawn(herald_http::serve(
            admin_listener,
            limits,
            None,
            move |req, _| admin.clone().handle(req),
            None,
            admin_stop.clone(),
            Duration::from_secs(1),
        ))
    };
    admin.set_ready();
    info!(ready = true, upstream = %config.upstream.url, routes = config.routes.len(), "herald is ready");
    if demo {
        print_demo_tour(&config, public_addr, admin_addr);
    }

    let reloads = Reloads {
        file,
        running: config,
        hub: hub.clone(),
        sessions,
        webhooks: webhooks.clone(),
        admin: admin.clone(),
        metrics,
        current,
        shutdown: shutdown.clone(),
    };
    tokio::spawn(reloads.run());

    wait_for_signal().await?;
    info!(?grace, "shutting down: closing streams and draining connections");
    shutdown.cancel();
    // The hand-off, while connections drain: every lease given up and announced (another
    // replica polls at once), the deliveries under way finished or handed back.
    let hand_off = async {
        let leases = async {
            if let Some(cluster) = hub.cluster() {
                cluster.handed_off(grace).await;
            }
        };
        tokio::join!(leases, webhooks.hand_back(grace / 2));
    };
    // serve() bounds its own drain by `grace`; this outer bound only guards against a bug there.
    let drained = tokio::time::timeout(grace + Duration::from_secs(2), async {
        let _ = tokio::join!(public_task, hand_off);
        admin_stop.cancel();
        let _ = admin_task.await;
    })
    .await;
    if drained.is_err() {
        bail!("shutdown did not finish within server.shutdown_grace");
    }
    info!("stopped");
    Ok(())
}

/// `SIGHUP`: the configuration file is read again and its routes applied (section 14), and its
/// `server.admin_token` and `webhooks.api_keys` (a leaked one is revoked without a restart); what
/// else changed needs a restart and keeps its running value (each is named in a warning). A file
/// with problems is refused with `herald check`'s messages, and the running configuration stays.
struct Reloads {
    file: PathBuf,
    running: Config,
    hub: Arc<Hub>,
    sessions: Sessions,
    webhooks: Arc<Webhooks>,
    admin: Arc<Admin>,
    metrics: HttpMetrics,
    current: Arc<Current>,
    shutdown: CancellationToken,
}

impl Reloads {
    async fn run(mut self) {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(hup) => hup,
            Err(e) => return warn!(error = %e, "cannot listen for SIGHUP; reloading is off"),
        };
        loop {
            tokio::select! {
                _ = hup.recv() => self.reload(),
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    fn reload(&mut self) {
        let file = self.file.display();
        let loaded = match crate::reread(&self.file) {
            Ok(config) => config,
            Err(problems) => {
                for problem in &problems {
                    error!(problem = %problem, "configuration refused");
                }
                return error!(file = %file, problems = problems.len(), "reload refused: the running configuration stays");
            }
        };
        let mut next = self.running.clone();
        // Credentials herald checks are applied at once: they are read per request.
        if next.server.admin_token != loaded.server.admin_token {
            next.server.admin_token = loaded.server.admin_token.clone();
            self.admin.set_token(next.server.admin_token.as_deref());
            info!(set = next.server.admin_token.is_some(), "reload: server.admin_token applied");
        }
        if next.webhooks.api_keys != loaded.webhooks.api_keys {
            next.webhooks.api_keys = loaded.webhooks.api_keys.clone();
            self.webhooks.set_api_keys(&next.webhooks.api_keys);
            info!(keys = next.webhooks.api_keys.len(), "reload: webhooks.api_keys applied");
        }
        for (section, changed) in [
            ("server", next.server != loaded.server),
            ("limits", next.limits != loaded.limits),
            ("upstream", next.upstream != loaded.upstream),
            ("storage", next.storage != loaded.storage),
            ("sse", next.sse != loaded.sse),
            ("webhooks", next.webhooks != loaded.webhooks),
            ("log", next.log != loaded.log),
        ] {
            if changed {
                warn!(section, "reload: this section changed; it takes effect at the next restart");
            }
        }
        next.routes = loaded.routes;
        next.positions = loaded.positions;
        let slots = self.hub.reload(next.routes.clone());
        self.webhooks.reload(&next.routes, &slots);
        let app = App::new(
            &next,
            &slots,
            self.hub.clone(),
            self.sessions.clone(),
            self.webhooks.clone(),
            self.metrics.clone(),
            self.shutdown.clone(),
        );
        self.current.replace(app);
        info!(file = %file, routes = next.routes.len(), reloaded = true, "configuration reloaded");
        self.running = next;
    }
}

async fn bind(addr: SocketAddr, key: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} ({key})"))
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r?,
    }
    Ok(())
}

/// The TLS files of `storage` (paths resolved), read and checked.
pub(crate) fn redis_tls(storage: &Storage) -> Result<RedisTls, TlsFileError> {
    fn path(file: &Option<String>) -> Option<&std::path::Path> {
        file.as_deref().map(std::path::Path::new)
    }
    let client = path(&storage.client_cert).zip(path(&storage.client_key));
    RedisTls::load(path(&storage.ca_file), client)
}

/// The store `storage` names. An embedded store that cannot be opened (another herald holds
/// it, no permission) is a start-up failure, exit 1.
fn open_store(storage: &Storage) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match storage.kind {
        StorageKind::Embedded => {
            let store = RedbStore::open(Path::new(&storage.path), storage.encryption_key.as_ref())
                .with_context(|| format!("cannot open the store in {} (storage.path)", storage.path))?;
            info!(path = %storage.path, "embedded store opened");
            Arc::new(store)
        }
        StorageKind::Memory => Arc::new(RedbStore::memory()?),
        StorageKind::Redis => unreachable!("cluster mode opens its store in redis"),
    })
}

/// How this replica names itself in leases, /admin/watches and logs: host, process, and a
/// random part (a restarted process is another replica).
fn replica_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "herald".into());
    let host: String = host.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.').take(64).collect();
    format!("{host}-{}-{:04x}", std::process::id(), fastrand::u16(..))
}

/// `herald demo`: the built-in legacy API at the (loopback) address upstream.url names.
async fn start_demo_api(config: &Config) -> anyhow::Result<()> {
    let url = &config.upstream.url;
    if url.https() {
        bail!("herald demo needs an http:// upstream.url, found {url}");
    }
    let addr: SocketAddr = url
        .authority()
        .parse()
        .with_context(|| format!("herald demo needs upstream.url to be IP:PORT, found {url}"))?;
    if !addr.ip().is_loopback() {
        bail!("herald demo only starts its API on a loopback address; upstream.url is {url}");
    }
    let api = herald_testkit::LegacyApi::new();
    api.serve(addr).await.with_context(|| format!("cannot start the demo API on {addr} (upstream.url)"))?;
    api.mutate_every(Duration::from_secs(2));
    // `/changes/tasks` (the `changes` route) marks removed tasks with tombstones.
    api.set_delta_form(herald_testkit::DeltaForm { cursor: herald_testkit::DeltaCursor::Max, tombstones: true });
    info!(%addr, "demo legacy API started");
    Ok(())
}

fn print_demo_tour(config: &Config, public: SocketAddr, admin: SocketAddr) {
    let up = &config.upstream.url;
    println!(
        "\n\
herald demo is running.
  legacy API (polling only, changes every 2 s): {up}
  herald, in front of it:                       http://{public}
  admin (status page, metrics, watches):       http://{admin}/

Try, in another terminal:
  curl -N http://{public}/tasks/event-stream                # a snapshot, then task.created/updated/deleted
  curl -N http://{public}/board/event-stream                # the board as JSON Patches
  curl -N http://{public}/tasks/1/event-stream              # one task as merge patches (polled every 30 s)
  curl -X PATCH -d '{{\"title\":\"Renamed through herald\"}}' http://{public}/tasks/1   # ...the stream shows it at once
  curl -N -H 'Authorization: Bearer alice' http://{public}/me/tasks/event-stream    # alice's own tasks
  curl -i -H 'Authorization: Bearer mallory' http://{public}/me/tasks/event-stream  # the API's own 401
  curl -i http://{public}/tasks                             # a legacy poll, answered from the watch
  curl http://{admin}/admin/watches
  curl http://{public}/_herald/v1/asyncapi.json            # every stream and its events (AsyncAPI 3.0)
  curl -s http://{admin}/metrics | grep ^herald_
Webhooks (the demo's API key; the demo API's POST /echo stands in for a receiver):
  curl -H 'Authorization: Bearer demo-key-change-me-0123' -d '{{\"url\":\"{up}/echo\",\"path\":\"/tasks\"}}' http://{public}/_herald/v1/webhooks
  curl -H 'Authorization: Bearer demo-key-change-me-0123' http://{public}/_herald/v1/webhooks/<id>/deliveries
In a browser: http://{public}/  (a page that keeps a live copy of /tasks with herald's JS client)
Stop with Ctrl-C.
"
    );
}
