//! Who may poll a watch, and where what its polls find goes. In one process ([`local`]) this
//! process polls each of its watches and applies each step at once, for its own subscribers.
//! In cluster mode ([`replica`]) the replica holding the watch's lease polls, its steps go
//! through the watch's log in Redis, and every replica with subscribers on the watch applies
//! them from there; write-through refreshes go to every replica over Redis.
//!
//! An enum rather than a trait object: two implementations, known here, and the loops stay
//! generic over the [`Registry`] they serve (the hub), as monomorphic as before.

mod local;
mod registry;
mod replica;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::watch::Watch;

pub(crate) use registry::Registry;

/// How the watches of this process are coordinated with other processes.
pub(crate) enum Coordination {
    /// One process (`storage.kind: embedded | memory`): no other process to agree with.
    Local,
    /// Cluster mode (`storage.kind: redis`): leases, logs and refreshes in Redis.
    Redis(Arc<Cluster>),
}

impl Coordination {
    /// Cluster mode when there is a cluster handle, else one process.
    pub(crate) fn new(cluster: Option<Arc<Cluster>>) -> Self {
        match cluster {
            Some(cluster) => Coordination::Redis(cluster),
            None => Coordination::Local,
        }
    }

    /// Cluster mode's handle, when herald runs in it.
    pub(crate) fn cluster(&self) -> Option<&Arc<Cluster>> {
        match self {
            Coordination::Local => None,
            Coordination::Redis(cluster) => Some(cluster),
        }
    }

    /// Starts what runs for the whole registry (cluster mode: hearing the refreshes other
    /// replicas announce), until `shutdown` or the registry is dropped.
    pub(crate) fn start<R: Registry>(&self, registry: &Arc<R>, shutdown: CancellationToken) {
        if let Coordination::Redis(cluster) = self {
            tokio::spawn(replica::follow_refreshes(Arc::downgrade(registry), cluster.clone(), shutdown));
        }
    }

    /// A route this process serves from now on (cluster mode creates its series at zero).
    pub(crate) fn add_route(&self, name: &str) {
        if let Coordination::Redis(cluster) = self {
            cluster.init_route(name);
        }
    }

    /// Whether a new watch can start now: in cluster mode, only while Redis answers.
    pub(crate) async fn available(&self) -> bool {
        match self {
            Coordination::Local => true,
            Coordination::Redis(cluster) => cluster.healthy() || cluster.check().await.is_ok(),
        }
    }

    /// Starts the loop of a new watch of `registry`; its handle tells how it ended.
    pub(crate) fn spawn<R: Registry>(&self, registry: Arc<R>, watch: Arc<Watch>) -> tokio::task::JoinHandle<()> {
        match self {
            Coordination::Local => tokio::spawn(local::run(registry, watch)),
            Coordination::Redis(cluster) => cluster.tasks.spawn(replica::run(registry, watch, cluster.clone())),
        }
    }

    /// Tells every replica (this one too) that the watches of `path` may have changed; false
    /// when only this process's watches are to be asked (one process, or Redis did not take it).
    pub(crate) async fn announce_refresh(&self, path: &str) -> bool {
        match self {
            Coordination::Local => false,
            Coordination::Redis(cluster) => cluster.announce_refresh(path).await,
        }
    }
}
