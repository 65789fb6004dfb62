//! Polling the upstream on behalf of everybody: the upstream client with conditional requests,
//! the schedule (adaptive interval, backoff, Retry-After), the global rate limit, and the watches
//! that own a poll loop, the current representation and the event history.
//!
//! One seam per concern, each using only those below it (`docs/layers.py` checks there is no
//! cycle):
//! - [`hub`]: the registry of watches: keys, limits, admission, routes and reloads;
//! - [`coordination`]: who may poll a watch and where its events go: this process
//!   (`coordination::local`) or the cluster in Redis (`coordination::replica`, through the
//!   [`cluster`] handle);
//! - [`poll`]: one poll, and the step it decides for the watch;
//! - [`strategy`]: how a representation is fetched: one GET, every page, or a delta;
//! - [`watch`]: a watch's state machine (steps applied under the lock joins take);
//! - [`route`], [`refusal`]: a route as its watches use it; why a subscriber gets no stream;
//! - [`client`] (with [`token`] and [`quota`]), [`limit`], [`schedule`], [`metrics`]: one
//!   upstream request, the global limits, when to poll next, the metric families.
#![forbid(unsafe_code)]

mod client;
mod cluster;
mod coordination;
mod hub;
mod limit;
mod metrics;
mod poll;
mod quota;
mod refusal;
mod route;
mod schedule;
mod strategy;
mod token;
mod versions;
mod watch;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use client::{Answer, Fetch, FetchFuture, Request, UpstreamClient};
pub use cluster::{watch_id, Cluster, HeldLease};
pub use hub::{Credentials, Hub, HubConfig};
pub use limit::{Limiter, Permit, Priority};
pub use metrics::PollMetrics;
pub use quota::{BudgetKey, Quota, RateLimit};
pub use refusal::Refusal;
pub use route::RouteCtx;
pub use schedule::{jittered, Schedule};
pub use versions::Version;
pub use watch::{Current, Joined, KeptVersions, Resync, SubscriberGuard, Watch, WatchInfo, WatchKey};

/// What reqwest says went wrong, without its own "error sending request" words.
fn cause(e: &reqwest::Error) -> String {
    std::error::Error::source(e).map_or_else(|| e.to_string(), ToString::to_string)
}

/// Why a poll failed without an HTTP answer (every one comes from the upstream, except
/// `Setup`, from the configuration, `Token`, from the token endpoint, and `QuotaExhausted`,
/// herald's own deferral).
#[derive(Debug, Clone, thiserror::Error)]
pub enum PollError {
    #[error("upstream timed out")]
    Timeout,
    #[error("upstream unreachable: {}", cause(.0))]
    Connect(#[source] Arc<reqwest::Error>),
    #[error("upstream body larger than max_body ({limit} bytes)")]
    BodyTooLarge { limit: u64 },
    #[error("upstream request failed: {}", cause(.0))]
    Other(#[source] Arc<reqwest::Error>),
    #[error("cannot set up the upstream client: {0}")]
    Setup(String),
    #[error("the collection has more than poll.pages.max_pages ({max}) pages")]
    TooManyPages { max: usize },
    #[error("the collection's pages together are larger than upstream.max_body ({limit} bytes)")]
    PagesTooLarge { limit: u64 },
    /// `path` without its query: a page's query may carry a cursor or a token.
    #[error("upstream page {path}: {why}")]
    InvalidPage { path: String, why: String },
    /// No service token (`upstream.auth`): what the token endpoint answered, e.g. `token
    /// endpoint answered 401: invalid_client`. Never the secret or a token.
    #[error("{0}")]
    Token(String),
    /// Not sent: the upstream's announced quota (`RateLimit`, `X-RateLimit-*`) for the
    /// request's credential has none left until `until`, longer than a request may wait
    /// holding its `max_concurrency` slot. Asked again then, like after a `Retry-After`.
    #[error("upstream quota exhausted until {}", httpdate::fmt_http_date(*.until))]
    QuotaExhausted { until: SystemTime, wait: Duration },
}

impl PollError {
    fn from_reqwest(e: reqwest::Error) -> Self {
        // Without its URL: a watched path may name a user; the cause never holds a credential.
        let e = Arc::new(e.without_url());
        if e.is_timeout() {
            PollError::Timeout
        } else if e.is_connect() {
            PollError::Connect(e)
        } else {
            PollError::Other(e)
        }
    }

    /// The status a subscriber is given when its first poll fails this way.
    pub fn status(&self) -> u16 {
        match self {
            PollError::Timeout => 504,
            PollError::QuotaExhausted { .. } => 503,
            _ => 502,
        }
    }

    /// When to ask again, when the error says (given as `Retry-After`, and the watch's next
    /// poll is not sooner).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            PollError::QuotaExhausted { wait, .. } => Some(*wait),
            _ => None,
        }
    }
}
