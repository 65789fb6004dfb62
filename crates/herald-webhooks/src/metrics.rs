//! `herald_webhook_*` metrics (spec section 11). Labels are outcome names only.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct WebhookMetrics {
    deliveries: IntCounterVec,
    /// Change detected (message created) → delivered with a 2xx, retries included.
    pub(crate) delivery_seconds: Histogram,
    /// One successful attempt: request sent → answer read.
    pub(crate) attempt_seconds: Histogram,
    pub(crate) queue_depth: IntGauge,
    /// Times this replica found Redis had lost herald's data and wrote back what it holds.
    pub(crate) data_lost: IntCounter,
}

impl WebhookMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let deliveries = IntCounterVec::new(
            Opts::new(
                "herald_webhook_deliveries_total",
                "Webhook delivery attempts by outcome: success, retry (scheduled again), dead (schedule exhausted), disabled (the attempt disabled its subscription: 410 or disable_after).",
            ),
            &["outcome"],
        )?;
        let delivery_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "herald_webhook_delivery_seconds",
                "From the change being detected to its message being delivered (2xx), retries included.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 7200.0,
                36000.0,
            ]),
        )?;
        let attempt_seconds = Histogram::with_opts(HistogramOpts::new(
            "herald_webhook_attempt_seconds",
            "Duration of successful delivery attempts (request sent to answer read).",
        ))?;
        let queue_depth =
            IntGauge::new("herald_webhook_queue_depth", "Webhook messages pending delivery (due now or later).")?;
        registry.register(Box::new(deliveries.clone()))?;
        registry.register(Box::new(delivery_seconds.clone()))?;
        registry.register(Box::new(attempt_seconds.clone()))?;
        let data_lost = IntCounter::new(
            "herald_redis_data_lost_total",
            "Cluster mode: times this replica found Redis had lost herald's data (restarted without persistence, failover to an empty replica) and wrote its subscriptions and scope key back.",
        )?;
        registry.register(Box::new(queue_depth.clone()))?;
        registry.register(Box::new(data_lost.clone()))?;
        for outcome in ["success", "retry", "dead", "disabled"] {
            deliveries.with_label_values(&[outcome]);
        }
        Ok(WebhookMetrics { deliveries, delivery_seconds, attempt_seconds, queue_depth, data_lost })
    }

    pub(crate) fn outcome(&self, outcome: &str) {
        self.deliveries.with_label_values(&[outcome]).inc();
    }

    /// Messages that went `dead` since the process started.
    pub(crate) fn dead(&self) -> u64 {
        self.deliveries.with_label_values(&["dead"]).get()
    }
}
