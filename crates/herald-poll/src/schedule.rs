//! When a watch polls next: the configured interval, adapted to how often the resource changes,
//! backed off exponentially on errors, and stretched by `Retry-After` and `Cache-Control: max-age`.

use std::time::Duration;

use herald_config::Poll;

/// Retry-After values above this are treated as this (a broken header must not stall a watch for days).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Delays between the polls of one watch. Pure arithmetic: jitter is applied by [`jittered`].
#[derive(Debug, Clone)]
pub struct Schedule {
    cfg: Poll,
    current: Duration,
    errors: u32,
}

impl Schedule {
    pub fn new(cfg: Poll) -> Self {
        Schedule { current: cfg.interval, cfg, errors: 0 }
    }

    /// The interval now in force (shown in /admin/watches).
    pub fn current(&self) -> Duration {
        self.current
    }

    /// The resource changed: adaptive schedules poll sooner (at most half the interval).
    pub fn changed(&mut self, max_age: Option<Duration>) -> Duration {
        self.errors = 0;
        self.current = if self.cfg.adaptive {
            (self.current.min(self.cfg.interval) / 2).max(self.cfg.min_interval)
        } else {
            self.cfg.interval
        };
        self.honour_max_age(max_age)
    }

    /// Nothing changed (304 or same hash): adaptive schedules slow down by a quarter, up to `max_interval`.
    pub fn unchanged(&mut self, max_age: Option<Duration>) -> Duration {
        self.errors = 0;
        self.current = if self.cfg.adaptive {
            (self.current + self.current / 4).min(self.cfg.max_interval)
        } else {
            self.cfg.interval
        };
        self.honour_max_age(max_age)
    }

    /// The poll failed: `interval * 2^errors` up to `max_interval`, or `Retry-After` if longer.
    pub fn failed(&mut self, retry_after: Option<Duration>) -> Duration {
        self.errors = self.errors.saturating_add(1);
        self.current = self.cfg.interval;
        let backoff = self
            .cfg
            .interval
            .saturating_mul(1u32 << self.errors.min(16))
            .min(self.cfg.max_interval)
            .max(self.cfg.interval);
        backoff.max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER))
    }

    /// Consecutive failed polls.
    pub fn errors(&self) -> u32 {
        self.errors
    }

    fn honour_max_age(&self, max_age: Option<Duration>) -> Duration {
        match max_age {
            Some(age) if age > self.current => age.min(self.cfg.max_interval),
            _ => self.current,
        }
    }
}

/// `delay` moved by up to +/- `jitter` of itself; `r` is uniform in [0, 1).
pub fn jittered(delay: Duration, jitter: f64, r: f64) -> Duration {
    delay.mul_f64(1.0 + jitter * (2.0 * r - 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll(adaptive: bool) -> Poll {
        Poll {
            interval: Duration::from_secs(4),
            min_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(20),
            adaptive,
            jitter: 0.1,
            linger: Duration::from_secs(60),
            pages: None,
            delta: None,
        }
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn fixed_schedule_keeps_the_interval() {
        let mut s = Schedule::new(poll(false));
        assert_eq!(s.changed(None), S(4));
        assert_eq!(s.unchanged(None), S(4));
    }

    #[test]
    fn adaptive_lengthens_while_unchanged_and_shortens_after_a_change() {
        let mut s = Schedule::new(poll(true));
        assert_eq!(s.unchanged(None), S(5));
        assert_eq!(s.unchanged(None), Duration::from_millis(6250));
        for _ in 0..20 {
            s.unchanged(None);
        }
        assert_eq!(s.current(), S(20), "capped at max_interval");
        assert_eq!(s.changed(None), S(2), "at most half the interval after a change");
        assert_eq!(s.changed(None), S(1));
        assert_eq!(s.changed(None), S(1), "never below min_interval");
    }

    #[test]
    fn errors_back_off_exponentially_and_honour_retry_after() {
        let mut s = Schedule::new(poll(false));
        assert_eq!(s.failed(None), S(8));
        assert_eq!(s.failed(None), S(16));
        assert_eq!(s.failed(None), S(20), "capped at max_interval");
        assert_eq!(s.failed(Some(S(90))), S(90), "Retry-After wins when longer");
        assert_eq!(s.failed(Some(S(86400))), S(3600), "absurd Retry-After is capped");
        assert_eq!(s.unchanged(None), S(4), "recovery resets the backoff");
        assert_eq!(s.errors(), 0);
    }

    #[test]
    fn max_age_longer_than_the_interval_is_honoured() {
        let mut s = Schedule::new(poll(false));
        assert_eq!(s.unchanged(Some(S(10))), S(10));
        assert_eq!(s.unchanged(Some(S(2))), S(4));
        assert_eq!(s.unchanged(Some(S(600))), S(20), "up to max_interval");
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        assert_eq!(jittered(S(10), 0.1, 0.0), S(9));
        assert_eq!(jittered(S(10), 0.1, 0.5), S(10));
        assert!(jittered(S(10), 0.1, 0.999_999) < S(11));
    }
}
