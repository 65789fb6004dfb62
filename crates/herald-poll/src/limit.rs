//! The global poll budget: a token bucket (`max_polls_per_second`) and a concurrency limit
//! (`max_concurrency`) shared by every watch and admission check. Background polls (a new
//! watch's first poll, an admission check, a watch nobody is subscribed to) draw from a second
//! bucket of half the rate and half the slots as well, so however many new watches clients ask
//! for, the watches people are subscribed to keep at least half of the budget (spec section 5).
//! A write-through refresh of a subscribed watch draws from the background share too, until
//! the watch's scheduled poll comes due: however many watches a write refreshes, scheduled polls
//! keep their share (spec section 13).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

pub struct Limiter {
    all: Budget,
    background: Budget,
}

/// Which share of the budget a poll draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// A poll of a watch with subscribers.
    Subscribed,
    /// A first poll, an admission check, or a watch lingering without subscribers.
    Background,
    /// A write-through refresh of a subscribed watch: background until the watch's scheduled
    /// poll is `due`, subscribed from then on.
    Refresh { due: Instant },
}

/// Held while a poll is in flight.
pub struct Permit {
    _all: OwnedSemaphorePermit,
    _background: Option<OwnedSemaphorePermit>,
}

struct Budget {
    bucket: Mutex<Bucket>,
    permits: Arc<Semaphore>,
}

struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Limiter {
    /// `rate` polls per second (bursts of up to one second's worth), `concurrency` at once.
    pub fn new(rate: f64, concurrency: usize) -> Self {
        Limiter { all: Budget::new(rate, concurrency), background: Budget::new(rate / 2.0, concurrency.div_ceil(2)) }
    }

    /// Waits for a token, then for a free slot (from the background share first, when it is
    /// one); the slots are held until the permit drops.
    pub async fn acquire(&self, priority: Priority) -> Permit {
        let background = match priority {
            Priority::Subscribed => None,
            Priority::Background => Some(self.background.acquire().await),
            Priority::Refresh { due } => tokio::select! {
                permit = self.background.acquire() => Some(permit),
                () = tokio::time::sleep_until(due) => None,
            },
        };
        Permit { _all: self.all.acquire().await, _background: background }
    }
}

impl Budget {
    fn new(rate: f64, concurrency: usize) -> Self {
        let burst = rate.max(1.0);
        Budget {
            bucket: Mutex::new(Bucket { rate, burst, tokens: burst, last: Instant::now() }),
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
        }
    }

    async fn acquire(&self) -> OwnedSemaphorePermit {
        loop {
            let wait = {
                let mut b = self.bucket.lock().unwrap();
                let now = Instant::now();
                b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * b.rate).min(b.burst);
                b.last = now;
                if b.tokens >= 1.0 {
                    b.tokens -= 1.0;
                    None
                } else {
                    Some(Duration::from_secs_f64((1.0 - b.tokens) / b.rate))
                }
            };
            match wait {
                None => break,
                Some(d) => tokio::time::sleep(d).await,
            }
        }
        self.permits.clone().acquire_owned().await.expect("the semaphore is never closed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn never_exceeds_the_rate() {
        let limiter = Arc::new(Limiter::new(10.0, 100));
        let start = Instant::now();
        for _ in 0..30 {
            drop(limiter.acquire(Priority::Subscribed).await);
        }
        // 10 from the initial burst, 20 more at 10/s.
        let took = start.elapsed();
        assert!(took >= Duration::from_secs(2) && took < Duration::from_millis(2100), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn bounds_concurrency() {
        let limiter = Arc::new(Limiter::new(1000.0, 2));
        let a = limiter.acquire(Priority::Subscribed).await;
        let _b = limiter.acquire(Priority::Subscribed).await;
        let third = tokio::spawn({
            let limiter = limiter.clone();
            async move { limiter.acquire(Priority::Subscribed).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!third.is_finished(), "a third poll must wait for a slot");
        drop(a);
        let _c = tokio::time::timeout(Duration::from_secs(1), third).await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn background_polls_never_take_more_than_half() {
        let limiter = Arc::new(Limiter::new(10.0, 100));
        let flood = tokio::spawn({
            let limiter = limiter.clone();
            async move {
                loop {
                    drop(limiter.acquire(Priority::Background).await);
                }
            }
        });
        // Let the flood drain the bursts first.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let start = Instant::now();
        for _ in 0..20 {
            drop(limiter.acquire(Priority::Subscribed).await);
        }
        // The flood takes 5/s of the 10/s: subscribed polls get the other 5/s (or better).
        let took = start.elapsed();
        assert!(took <= Duration::from_millis(4100), "{took:?}");
        flood.abort();
    }
}
