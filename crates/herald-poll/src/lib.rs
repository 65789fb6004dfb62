//! Polling the upstream on behalf of everybody: the upstream client with conditional requests,
//! the schedule (adaptive interval, backoff, Retry-After), the global rate limit, and the watches
//! that own a poll loop, the current representation and the event history.
#![forbid(unsafe_code)]

mod client;
mod cluster;
mod hub;
mod limit;
mod metrics;
mod schedule;
mod watch;

pub use client::{Answer, Fetch, FetchFuture, Request, UpstreamClient};
pub use cluster::{watch_id, Cluster, HeldLease};
pub use hub::{Credentials, Hub, HubConfig, Refusal};
pub use limit::{Limiter, Permit, Priority};
pub use metrics::PollMetrics;
pub use schedule::{jittered, Schedule};
pub use watch::{Current, Joined, Resync, SubscriberGuard, Watch, WatchInfo, WatchKey};

/// Why a poll failed without an HTTP answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PollError {
    #[error("upstream timed out")]
    Timeout,
    #[error("upstream unreachable: {0}")]
    Connect(String),
    #[error("upstream body larger than max_body ({limit} bytes)")]
    BodyTooLarge { limit: u64 },
    #[error("upstream request failed: {0}")]
    Other(String),
    #[error("cannot set up the upstream client: {0}")]
    Setup(String),
}

impl PollError {
    fn from_reqwest(e: reqwest::Error) -> Self {
        // reqwest's Display names the URL; keep only the cause, which never holds a credential.
        let cause = std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_else(|| "error".into());
        if e.is_timeout() {
            PollError::Timeout
        } else if e.is_connect() {
            PollError::Connect(cause)
        } else {
            PollError::Other(cause)
        }
    }

    /// The status a subscriber is given when its first poll fails this way.
    pub fn status(&self) -> u16 {
        match self {
            PollError::Timeout => 504,
            _ => 502,
        }
    }
}
