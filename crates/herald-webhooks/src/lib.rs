//! Webhooks (spec section 7): the subscription API, the webhook watches that turn changes into
//! durable messages, and the delivery engine that signs them (Standard Webhooks), retries them
//! on a schedule, and guards against SSRF.
#![forbid(unsafe_code)]

mod api;
mod deliver;
pub mod events;
mod metrics;
mod operational;
pub mod sign;
pub mod ssrf;
mod watcher;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use herald_config::{Route, RouteTable, StaticSubscription};
use herald_poll::Hub;
use herald_store::{now_ms, Store, StoreError, Subscription, SubscriptionStatus, Subscriptions};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

pub use api::{ApiResponse, MAX_BODY, NOTIFY, PREFIX};
pub use metrics::WebhookMetrics;

use crate::ssrf::Guard;
use crate::watcher::{Start, Watcher};

/// Delivered messages are kept (listed, replayable) this long…
const KEEP_DELIVERED: Duration = Duration::from_secs(3 * 24 * 3600);
/// …dead ones this long…
const KEEP_DEAD: Duration = Duration::from_secs(30 * 24 * 3600);
/// …and at most this many finished ones per subscription.
const KEEP_PER_SUBSCRIPTION: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot set up the delivery client: {0}")]
    Client(#[from] reqwest::Error),
}

/// What the API, the watches and the delivery engine share.
pub(crate) struct Shared {
    cfg: herald_config::Webhooks,
    /// The routes in force, and the hub's slot of each (the same index until a reload).
    routes: RwLock<(RouteTable, Vec<usize>)>,
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    /// Every subscription, as stored; the store is written first, then this.
    subs: RwLock<HashMap<String, Subscription>>,
    /// Held while a subscription is written to the store and then to `subs`, so that writes from
    /// the API and from delivery outcomes land in the same order in both.
    sub_writes: tokio::sync::Mutex<()>,
    /// Delivery-state changes made in memory and not yet in the store: a reload of the
    /// subscriptions (cluster mode) waits for them, or it would put the older version back.
    unstored: std::sync::atomic::AtomicUsize,
    guard: Arc<Guard>,
    metrics: WebhookMetrics,
    /// `webhooks.operational_url`'s sender, set by the dispatcher when one is configured.
    operational: std::sync::OnceLock<Arc<operational::Operational>>,
    /// Wakes the delivery engine: new messages, or room in flight.
    wake: Notify,
    /// blake3 of each API key: compared in constant time, never kept in the clear longer than
    /// start-up (or a reload, which replaces them: a leaked key is revoked without a restart).
    api_keys: RwLock<Vec<[u8; 32]>>,
    /// Keys the hash that names a subscription's owner (derived from the store's secret key, so
    /// owners stay the same across restarts and a stolen store does not reveal which key is whose).
    owner_key: [u8; 32],
    /// The store's secret key as it was at start, written back if the store loses it.
    scope_key: [u8; 32],
}

impl Shared {
    /// The hub's slot of the route a subscription's path (+ query) falls under.
    fn route_of(&self, path: &str) -> Option<usize> {
        let routes = self.routes.read().unwrap();
        routes.0.find(path.split('?').next().unwrap_or(path)).map(|i| routes.1[i])
    }

    /// Changes a subscription in memory and, when `f` says it changed, in the store (in the
    /// background: delivery does not wait for it); returns it when it changed.
    fn update_subscription(
        self: &Arc<Self>,
        id: &str,
        f: impl FnOnce(&mut Subscription) -> bool,
    ) -> Option<Subscription> {
        let updated = {
            let mut subs = self.subs.write().unwrap();
            subs.get_mut(id).and_then(|s| f(s).then(|| s.clone()))
        };
        if updated.is_some() {
            let (this, id) = (self.clone(), id.to_string());
            self.unstored.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            tokio::spawn(async move {
                let _order = this.sub_writes.lock().await;
                // The latest version: an API write may have come in meanwhile.
                let sub = this.subs.read().unwrap().get(&id).cloned();
                if let Some(sub) = sub {
                    if let Err(e) = this.store.put_subscription(sub).await {
                        error!(error = %e, "cannot store a subscription's delivery state");
                    }
                }
                this.unstored.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            });
        }
        updated
    }
}

/// The webhook subsystem, started once with the gateway.
pub struct Webhooks {
    shared: Arc<Shared>,
    watcher: Arc<Watcher>,
    dispatcher: Arc<deliver::Dispatcher>,
}

/// The delivery queue at a glance (the status page): never a subscription's URL or secret.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct QueueStatus {
    /// Messages waiting for an attempt, due now or later.
    pub pending: i64,
    /// Messages being attempted now.
    pub in_flight: usize,
    /// Messages that exhausted their retry schedule since this process started.
    pub dead: u64,
    /// Subscriptions, and those stopped (`disabled` or `unauthorized`).
    pub subscriptions: usize,
    pub stopped: usize,
}

impl Webhooks {
    /// Loads the subscriptions, applies the configuration's static ones, resumes every webhook
    /// watch from its recorded representation, and starts delivering.
    pub async fn start(
        cfg: herald_config::Webhooks,
        routes: &[Route],
        store: Arc<dyn Store>,
        hub: Arc<Hub>,
        metrics: WebhookMetrics,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, WebhookError> {
        let mut subs: HashMap<String, Subscription> =
            store.subscriptions().await?.into_iter().map(|s| (s.id.clone(), s)).collect();
        apply_static(&cfg.subscriptions, &mut subs, &*store).await?;
        metrics.queue_depth.set(store.pending().await? as i64);
        let scope_key = store.scope_key().await?;
        let owner_key = blake3::derive_key("herald 2026 webhook subscription owner", &scope_key);
        let shared = Arc::new(Shared {
            owner_key,
            scope_key,
            api_keys: RwLock::new(hash_keys(&cfg.api_keys)),
            guard: Arc::new(Guard::new(cfg.allow_private_destinations.clone())),
            cfg,
            routes: RwLock::new((RouteTable::new(routes), (0..routes.len()).collect())),
            store,
            hub,
            subs: RwLock::new(subs),
            sub_writes: tokio::sync::Mutex::new(()),
            unstored: std::sync::atomic::AtomicUsize::new(0),
            metrics,
            operational: std::sync::OnceLock::new(),
            wake: Notify::new(),
        });
        let watcher = Watcher::new(shared.clone(), shutdown.clone());
        watcher.refresh(Start::Resume);
        let dispatcher = deliver::Dispatcher::start(shared.clone(), watcher.clone(), shutdown.clone())?;
        if shared.hub.cluster().is_some() {
            tokio::spawn(follow_subscriptions(shared.clone(), watcher.clone(), shutdown.clone()));
        }
        tokio::spawn(prune(shared.clone(), shutdown));
        let count = shared.subs.read().unwrap().len();
        info!(subscriptions = count, "webhooks started");
        Ok(Arc::new(Webhooks { shared, watcher, dispatcher }))
    }

    /// A reload's routes ([`Hub::reload`] gave their slots): each subscription's watch moves to
    /// its route as it is now, resuming from the representation it recorded, so a change made
    /// meanwhile is still delivered; subscriptions whose route is gone wait for one to match.
    pub fn reload(&self, routes: &[Route], slots: &[usize]) {
        *self.shared.routes.write().unwrap() = (RouteTable::new(routes), slots.to_vec());
        self.watcher.refresh(Start::Resume);
    }

    /// `webhooks.api_keys` as a reload found them: the API and change hints answer these keys
    /// from the next request on, and `404` when there are none. A subscription stays its
    /// creator's (by the key's hash) when that key is removed: it keeps delivering, and the
    /// key, if given again, sees it again.
    pub fn set_api_keys(&self, keys: &[String]) {
        *self.shared.api_keys.write().unwrap() = hash_keys(keys);
    }

    pub fn queue_status(&self) -> QueueStatus {
        let subs = self.shared.subs.read().unwrap();
        QueueStatus {
            pending: self.shared.metrics.queue_depth.get(),
            in_flight: self.dispatcher.in_flight(),
            dead: self.shared.metrics.dead(),
            subscriptions: subs.len(),
            stopped: subs.values().filter(|s| s.status.stopped()).count(),
        }
    }

    /// The subscription API answers only when API keys are configured.
    pub fn api_enabled(&self) -> bool {
        !self.shared.api_keys.read().unwrap().is_empty()
    }

    /// After shutdown has begun: waits, at most `within`, for the deliveries under way, then
    /// hands the rest back to the store (cluster mode: another replica takes them at once).
    pub async fn hand_back(&self, within: Duration) -> usize {
        self.dispatcher.hand_back(within).await
    }

    /// Whether the store answers (for /readyz).
    pub async fn store_ready(&self) -> Result<(), StoreError> {
        self.shared.store.check().await
    }
}

/// Cluster mode: subscriptions written by other replicas (the API, delivery outcomes) are read
/// again within a second, and the queue depth is taken from the shared queue. A store that lost
/// its data is never read into memory: it is given back what this replica holds first.
async fn follow_subscriptions(shared: Arc<Shared>, watcher: Arc<Watcher>, shutdown: CancellationToken) {
    let mut seen = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = shutdown.cancelled() => return,
        }
        if let Ok(depth) = shared.store.pending().await {
            shared.metrics.queue_depth.set(depth as i64);
        }
        let _order = shared.sub_writes.lock().await;
        if shared.unstored.load(std::sync::atomic::Ordering::Acquire) > 0 {
            continue; // next second, once this replica's own changes are stored
        }
        match shared.store.subscriptions_since(seen).await {
            Ok(Subscriptions::Unchanged) => {}
            Ok(Subscriptions::Changed { generation, subs }) => {
                *shared.subs.write().unwrap() = subs.into_iter().map(|s| (s.id.clone(), s)).collect();
                seen = Some(generation);
                watcher.refresh(Start::Fresh);
            }
            Ok(Subscriptions::Lost) => {
                if restore(&shared).await {
                    seen = None;
                }
            }
            Err(e) => error!(error = %e, "cannot read the subscriptions again"),
        }
    }
}

/// Redis lost herald's data (restarted without persistence, or failed over to a replica that
/// had none): the scope key and the subscriptions this replica holds are written back (those
/// the store lacks), so that deliveries go on and replicas keep naming credential scopes alike.
/// What was queued and not yet delivered is gone. `true` once written; the caller holds the
/// subscription writes' lock.
async fn restore(shared: &Shared) -> bool {
    let subs: Vec<Subscription> = shared.subs.read().unwrap().values().cloned().collect();
    let count = subs.len();
    match shared.store.restore(shared.scope_key, subs).await {
        Ok(same) => {
            shared.metrics.data_lost.inc();
            error!(subscriptions = count, "redis lost herald's data (restarted without persistence?): the subscriptions and the scope key were written back; webhook messages queued and not yet delivered are lost");
            if !same {
                error!("redis holds a scope key another replica made meanwhile: per-subscriber watches are not shared with the replicas started since; restart this replica");
            }
            true
        }
        Err(e) => {
            error!(error = %e, "cannot write the subscriptions back to redis, retrying");
            false
        }
    }
}

/// Creates or updates the subscriptions the configuration declares; removes those it no
/// longer declares. A declared subscription without a secret keeps the one stored (or gets one).
async fn apply_static(
    declared: &[StaticSubscription],
    subs: &mut HashMap<String, Subscription>,
    store: &dyn Store,
) -> Result<(), StoreError> {
    for d in declared {
        let existing = subs.get(&d.id);
        let secret =
            d.secret.clone().or_else(|| existing.map(|s| s.secret.clone())).unwrap_or_else(sign::generate_secret);
        let sub = Subscription {
            id: d.id.clone(),
            url: d.url.clone(),
            path: d.path.clone(),
            filter: d.filter.clone(),
            payload: d.payload.map(|p| payload_name(p).to_string()),
            previous_secret: existing.and_then(|s| s.previous_secret.clone()),
            secret,
            headers: d.headers.clone(),
            description: d.description.clone(),
            status: existing.map_or(SubscriptionStatus::Active, |s| s.status),
            declared: true,
            created_at: existing.map_or_else(now_ms, |s| s.created_at),
            failing_since: existing.and_then(|s| s.failing_since),
            owner: None,
        };
        if existing != Some(&sub) {
            store.put_subscription(sub.clone()).await?;
            subs.insert(sub.id.clone(), sub);
        }
    }
    let gone: Vec<String> =
        subs.values().filter(|s| s.declared && !declared.iter().any(|d| d.id == s.id)).map(|s| s.id.clone()).collect();
    for id in gone {
        info!(subscription = %id, "no longer declared in the configuration, removed");
        store.delete_subscription(id.clone()).await?;
        subs.remove(&id);
    }
    Ok(())
}

/// API keys are kept as fixed-length hashes, compared in constant time.
fn hash_keys(keys: &[String]) -> Vec<[u8; 32]> {
    keys.iter().map(|k| *blake3::hash(k.as_bytes()).as_bytes()).collect()
}

pub(crate) fn payload_name(p: herald_config::Payload) -> &'static str {
    match p {
        herald_config::Payload::Rich => "rich",
        herald_config::Payload::Lean => "lean",
    }
}

/// Forgets old finished messages every minute, so the store stays bounded.
async fn prune(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        if watcher::sleep_or_cancel(Duration::from_secs(60), &shutdown).await {
            return;
        }
        let now = now_ms();
        let before = |d: Duration| now.saturating_sub(d.as_millis() as u64);
        match shared.store.prune(before(KEEP_DELIVERED), before(KEEP_DEAD), KEEP_PER_SUBSCRIPTION).await {
            Ok(0) => {}
            Ok(n) => info!(messages = n, "old webhook messages pruned"),
            Err(e) => error!(error = %e, "cannot prune webhook messages"),
        }
    }
}
