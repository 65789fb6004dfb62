//! Cluster mode's Redis handle (`storage.kind: redis`): the connection to Redis with its
//! health, the pub/sub bus, this replica's name, the lease length, the cluster's metrics, and
//! leases held for other things than a watch's polls (a webhook watch). What a replica does
//! with a watch (follow its log, take its lease, poll, append) is
//! [`crate::coordination`]'s.

use std::sync::Arc;
use std::time::Duration;

use herald_store::redis::{Acquired, Bus, Following, Note, Redis, WatchLog};
use herald_store::StoreError;
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::watch::WatchKey;

/// This replica's part of the cluster.
pub struct Cluster {
    pub(crate) redis: Arc<Redis>,
    /// One pub/sub connection for every channel this replica follows.
    pub(crate) bus: Bus,
    /// Names this replica in leases, `/admin/watches` and logs.
    pub(crate) replica: String,
    /// `storage.lease`.
    pub(crate) lease: Duration,
    pub(crate) metrics: ClusterMetrics,
    /// What holds or gives up leases (watch loops, webhook watch leases): a stopping replica
    /// waits for them, so that every lease it held is given up before it exits.
    pub(crate) tasks: TaskTracker,
}

/// `herald_cluster_*`: leases held and taken over, results fenced, notices missed.
pub(crate) struct ClusterMetrics {
    pub(crate) leases: IntGaugeVec,
    pub(crate) lease_changes: IntCounterVec,
    pub(crate) fenced: IntCounterVec,
    pub(crate) gaps: IntCounter,
}

impl Cluster {
    pub fn new(
        redis: Arc<Redis>,
        replica: String,
        lease: Duration,
        registry: &Registry,
        shutdown: CancellationToken,
    ) -> prometheus::Result<Arc<Cluster>> {
        let metrics = ClusterMetrics {
            leases: IntGaugeVec::new(
                Opts::new("herald_cluster_leases", "Poll leases this replica holds."),
                &["route"],
            )?,
            lease_changes: IntCounterVec::new(
                Opts::new("herald_cluster_lease_changes_total", "Poll leases this replica took over."),
                &["route"],
            )?,
            fenced: IntCounterVec::new(
                Opts::new(
                    "herald_cluster_fenced_total",
                    "Poll results refused because this replica's lease had passed to another (fencing).",
                ),
                &["route"],
            )?,
            gaps: IntCounter::new(
                "herald_cluster_gaps_filled_total",
                "Events a replica missed the notice of (pub/sub loss or reconnect), read from the log instead.",
            )?,
        };
        registry.register(Box::new(metrics.leases.clone()))?;
        registry.register(Box::new(metrics.lease_changes.clone()))?;
        registry.register(Box::new(metrics.fenced.clone()))?;
        registry.register(Box::new(metrics.gaps.clone()))?;
        let bus = Bus::start(redis.clone(), shutdown);
        Ok(Arc::new(Cluster { redis, bus, replica, lease, metrics, tasks: TaskTracker::new() }))
    }

    /// Creates a route's series at zero (alerts tell "no replica holds a lease" from "no data").
    pub(crate) fn init_route(&self, route: &str) {
        self.metrics.leases.with_label_values(&[route]);
        self.metrics.lease_changes.with_label_values(&[route]);
        self.metrics.fenced.with_label_values(&[route]);
    }

    /// Tells every replica (this one too) that the watches of `path` may have changed; false
    /// when Redis did not take it.
    pub(crate) async fn announce_refresh(&self, path: &str) -> bool {
        let published = self.redis.publish(&self.redis.key(REFRESH_CHANNEL), &format!("refresh:{path}")).await;
        if let Err(e) = &published {
            debug!(error = %e, "refresh not announced; only this replica's watches are asked");
        }
        published.is_ok()
    }

    /// The channel write-through refreshes are announced on.
    pub(crate) fn refresh_channel(&self) -> String {
        self.redis.key(REFRESH_CHANNEL)
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Whether the last call to Redis succeeded.
    pub fn healthy(&self) -> bool {
        self.redis.healthy()
    }

    /// Asks Redis now (readiness; a new subscription when the last call failed).
    pub async fn check(&self) -> Result<(), StoreError> {
        self.redis.ping().await
    }

    /// After shutdown has begun: waits, at most `within`, until every lease this replica held
    /// is given up (each announced, so that another replica takes it at once rather than after
    /// the lease period). Those still held then lapse on their own.
    pub async fn handed_off(&self, within: Duration) {
        self.tasks.close();
        if tokio::time::timeout(within, self.tasks.wait()).await.is_err() {
            warn!(left = self.tasks.len(), ?within, "leases not all given up in time; they lapse after storage.lease");
        }
    }
}

/// A lease held for something other than a watch's polls (a webhook watch): renewed in the
/// background until dropped (then given up); `lost` fires when it could not be renewed.
pub struct HeldLease {
    pub lost: CancellationToken,
    stop: CancellationToken,
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Cluster {
    /// Waits until this replica holds the lease `name`; `None` when `cancel` fires first. Tries
    /// every third of a lease, and at once when the holder announces it gave the lease up.
    pub async fn hold(&self, name: &str, cancel: &CancellationToken) -> Option<HeldLease> {
        let log = self.redis.watch_log(name, self.lease * 3);
        let mut following = self.bus.follow(&log.channel).await.ok();
        loop {
            if let Ok(Acquired::Held(value)) = log.acquire(&self.replica, self.lease).await {
                let (lost, stop) = (CancellationToken::new(), CancellationToken::new());
                self.tasks.spawn(keep(log, value, self.lease, lost.clone(), stop.clone()));
                return Some(HeldLease { lost, stop });
            }
            tokio::select! {
                () = tokio::time::sleep(self.lease / 3) => {}
                () = released(&mut following) => {}
                () = cancel.cancelled() => return None,
            }
        }
    }
}

/// Returns when the holder announces it gave the lease up; never when the bus is gone.
async fn released(following: &mut Option<Following>) {
    while let Some(f) = following {
        match f.notes.recv().await {
            Some(Note::Released) => return,
            Some(_) => {}
            None => *following = None,
        }
    }
    std::future::pending().await
}

/// Renews a held lease every third of it until `stop` (then gives it up) or until it is lost.
async fn keep(log: WatchLog, value: String, lease: Duration, lost: CancellationToken, stop: CancellationToken) {
    let mut until = Instant::now() + lease;
    loop {
        tokio::select! {
            () = tokio::time::sleep(lease / 3) => {}
            () = stop.cancelled() => {
                let _ = log.release(&value).await;
                return;
            }
        }
        if !renewed(&log, &value, lease, &mut until).await {
            lost.cancel();
            return;
        }
    }
}

/// Renews the lease held as `value`; `false` once it is surely lost. While Redis does not
/// answer, it still holds until `until` (when it would lapse without renewal).
pub(crate) async fn renewed(log: &WatchLog, value: &str, lease: Duration, until: &mut Instant) -> bool {
    match log.renew(value, lease).await {
        Ok(true) => {
            *until = Instant::now() + lease;
            true
        }
        Err(_) => Instant::now() < *until,
        Ok(false) => false,
    }
}

/// The watch's id in Redis (its keys, and the lease of its webhook watch): a hash of route,
/// target and scope (the scope is itself a keyed hash, so no credential reaches Redis).
pub fn watch_id(route: &str, key: &WatchKey) -> String {
    let mut h = blake3::Hasher::new();
    for part in [route, key.target.as_str(), &key.scope.to_string()] {
        h.update(part.as_bytes());
        h.update(&[0]);
    }
    h.finalize().to_hex()[..32].to_string()
}

/// The channel write-through refreshes are announced on, under `storage.prefix`.
const REFRESH_CHANNEL: &str = "refresh";
