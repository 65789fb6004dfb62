//! What the coordination needs of the registry of watches (the hub): its poller, its shutdown
//! signal, and taking a watch out of it. A trait, so that the hub uses the coordination without
//! the coordination naming the hub.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::poll::Poller;
use crate::watch::Watch;

/// The registry a watch's loop belongs to.
pub(crate) trait Registry: Send + Sync + 'static {
    /// Polls the upstream for the registry's watches.
    fn poller(&self) -> &Poller;

    /// Fires when herald shuts down: every loop stops.
    fn shutdown(&self) -> &CancellationToken;

    /// Removes the watch when nobody has been subscribed for `linger`; `true` when it is out of
    /// the registry (so its loop ends).
    fn lingered_out(&self, watch: &Arc<Watch>) -> bool;

    /// Out of the registry, and (on shutdown) every stream says goodbye and ends (its clients
    /// reconnect after `retry`).
    fn end(&self, watch: &Arc<Watch>);

    /// A per-subscriber watch whose credential the upstream refused (`status`): out of the
    /// registry, and its streams end.
    fn revoke(&self, watch: &Arc<Watch>, status: u16);

    /// Asks this process's watches that a write to `path` can have changed to poll now;
    /// returns how many were asked.
    fn refresh_local(&self, path: &str) -> usize;
}
