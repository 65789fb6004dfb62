//! The global poll budget: a token bucket (`max_polls_per_second`) and a concurrency limit
//! (`max_concurrency`) shared by every watch and admission check.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

pub struct Limiter {
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
        let burst = rate.max(1.0);
        Limiter {
            bucket: Mutex::new(Bucket { rate, burst, tokens: burst, last: Instant::now() }),
            permits: Arc::new(Semaphore::new(concurrency)),
        }
    }

    /// Waits for a token, then for a free slot; the slot is held until the permit drops.
    pub async fn acquire(&self) -> OwnedSemaphorePermit {
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
            drop(limiter.acquire().await);
        }
        // 10 from the initial burst, 20 more at 10/s.
        let took = start.elapsed();
        assert!(took >= Duration::from_secs(2) && took < Duration::from_millis(2100), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn bounds_concurrency() {
        let limiter = Arc::new(Limiter::new(1000.0, 2));
        let a = limiter.acquire().await;
        let _b = limiter.acquire().await;
        let third = tokio::spawn({
            let limiter = limiter.clone();
            async move { limiter.acquire().await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!third.is_finished(), "a third poll must wait for a slot");
        drop(a);
        let _c = tokio::time::timeout(Duration::from_secs(1), third).await.unwrap().unwrap();
    }
}
