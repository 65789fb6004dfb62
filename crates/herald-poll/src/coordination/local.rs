//! One process (`storage.kind: embedded | memory`): this process polls every watch it has, and
//! a poll's step is applied to the watch at once, so its events go to this process's
//! subscribers.

use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use super::registry::Registry;
use crate::poll::{priority, Polled};
use crate::schedule::{jittered, Schedule};
use crate::watch::{Ready, Watch};

/// The poll loop of one watch: polls at once, then on its schedule, until nobody has
/// listened for `linger`, the credential is revoked, or herald shuts down (which ends the
/// watch's streams).
pub(crate) async fn run<R: Registry>(registry: Arc<R>, watch: Arc<Watch>) {
    let cfg = &watch.route.cfg;
    watch.polling.send_replace(true);
    let mut schedule = Schedule::new(cfg.poll.clone());
    let mut delay = Duration::ZERO;
    loop {
        let mut refreshed = None;
        if !delay.is_zero() {
            let due = tokio::time::Instant::now() + jittered(delay, cfg.poll.jitter, fastrand::f64());
            // A write through herald polls now, not at the next interval; but while the
            // watch backs off (errors, `Retry-After`), the upstream asked herald to wait, and
            // the poll at the deadline answers the write.
            let backing_off = schedule.errors() > 0;
            tokio::select! {
                () = tokio::time::sleep_until(due) => {}
                () = watch.refresh.asked(), if !backing_off => refreshed = Some(due),
                _ = registry.shutdown().cancelled() => break,
            }
            if registry.lingered_out(&watch) {
                debug!(route = %cfg.name, scope = %watch.key.scope, "watch idle for linger, stopped");
                return;
            }
        }
        let priority = priority(&watch, delay.is_zero(), refreshed);
        let polled = tokio::select! {
            polled = registry.poller().poll(&watch, &mut schedule, priority) => polled,
            _ = registry.shutdown().cancelled() => break,
        };
        match polled {
            Polled::Step(step, next) => {
                watch.apply(step);
                delay = next;
            }
            Polled::Opened(step, next) => {
                watch.apply(step);
                watch.ready.send_replace(Ready::Open);
                delay = next;
            }
            Polled::Refused(refusal) => {
                watch.ready.send_replace(Ready::Refused(refusal));
                break;
            }
            Polled::Revoked(status) => {
                registry.revoke(&watch, status);
                return;
            }
        }
        watch.state.lock().unwrap().interval = schedule.current();
    }
    registry.end(&watch);
}
