//! A deadline moved cheaply, for the waits of a pass-through: each wait gets a whole period
//! without progress, not a share of one for the exchange.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Its timer is armed once and, when it fires before the current deadline, armed again for it.
/// Moving the deadline costs a clock read, not a timer.
pub(crate) struct Deadline {
    sleep: Pin<Box<Sleep>>,
    at: Instant,
    period: Duration,
}

impl Deadline {
    pub(crate) fn new(period: Duration) -> Self {
        let at = Instant::now() + period;
        Deadline { sleep: Box::pin(tokio::time::sleep_until(at)), at, period }
    }

    pub(crate) fn restart(&mut self) {
        self.restart_at(Instant::now());
    }

    /// [`Deadline::restart`] from `now`, read once for several deadlines.
    pub(crate) fn restart_at(&mut self, now: Instant) {
        self.at = now + self.period;
    }

    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            std::task::ready!(self.sleep.as_mut().poll(cx));
            if self.at <= Instant::now() {
                return Poll::Ready(());
            }
            let at = self.at;
            self.sleep.as_mut().reset(at);
        }
    }

    pub(crate) async fn expired(&mut self) {
        std::future::poll_fn(|cx| self.poll_expired(cx)).await
    }

    /// `f`, unless a whole period passes first.
    pub(crate) async fn within<F: Future>(&mut self, f: F) -> Option<F::Output> {
        self.restart();
        tokio::select! {
            biased;
            out = f => Some(out),
            () = self.expired() => None,
        }
    }
}

/// When `deadline` expires; never without one.
pub(crate) async fn expired(deadline: Option<&mut Deadline>) {
    match deadline {
        Some(deadline) => deadline.expired().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_deadline_is_a_whole_period_without_progress() {
        let mut deadline = Deadline::new(Duration::from_secs(10));
        assert_eq!(deadline.within(async { 7 }).await, Some(7));
        // Each wait gets its whole period, however long the ones before took.
        for _ in 0..3 {
            let slow = tokio::time::sleep(Duration::from_secs(9));
            assert_eq!(deadline.within(slow).await, Some(()));
        }
        let started = Instant::now();
        assert_eq!(deadline.within(std::future::pending::<()>()).await, None);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }
}
