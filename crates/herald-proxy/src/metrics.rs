//! `herald_proxy_requests_total`, counted by both engines.

use prometheus::{IntCounter, IntCounterVec};

/// Answers passed to clients by status class (1xx..5xx), the counters resolved once.
#[derive(Clone)]
pub(crate) struct Requests([IntCounter; 5]);

impl Requests {
    pub(crate) fn new(requests: &IntCounterVec) -> Self {
        Requests(["1xx", "2xx", "3xx", "4xx", "5xx"].map(|class| requests.with_label_values(&[class])))
    }

    pub(crate) fn count(&self, status: u16) {
        self.0[usize::from(status / 100).clamp(1, 5) - 1].inc();
    }
}
