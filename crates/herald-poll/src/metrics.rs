//! Poll and watch metrics; registered on the registry the binary hands in.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct PollMetrics {
    pub polls: IntCounterVec,
    pub poll_duration: HistogramVec,
    pub bytes: IntCounterVec,
    pub watches: IntGaugeVec,
    pub events: IntCounterVec,
    pub invalid: IntCounterVec,
    pub refused: IntCounterVec,
}

impl PollMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = PollMetrics {
            polls: IntCounterVec::new(
                Opts::new("herald_upstream_polls_total", "Polls sent to the upstream, by outcome."),
                &["route", "outcome"],
            )?,
            poll_duration: HistogramVec::new(
                HistogramOpts::new(
                    "herald_upstream_poll_duration_seconds",
                    "Time from sending a poll to its complete answer.",
                ),
                &["route"],
            )?,
            bytes: IntCounterVec::new(
                Opts::new("herald_upstream_bytes_total", "Body bytes received from polls."),
                &["route"],
            )?,
            watches: IntGaugeVec::new(Opts::new("herald_watches", "Watches currently polling."), &["route"])?,
            events: IntCounterVec::new(Opts::new("herald_events_total", "Events produced by watches."), &["route"])?,
            invalid: IntCounterVec::new(
                Opts::new(
                    "herald_collection_invalid_total",
                    "Changed representations that were not a valid collection (no array, items without an id, duplicate ids).",
                ),
                &["route"],
            )?,
            refused: IntCounterVec::new(
                Opts::new(
                    "herald_watches_refused_total",
                    "New watches refused by limits.max_watches (503) or limits.max_watches_per_scope (429).",
                ),
                &["route"],
            )?,
        };
        registry.register(Box::new(m.polls.clone()))?;
        registry.register(Box::new(m.poll_duration.clone()))?;
        registry.register(Box::new(m.bytes.clone()))?;
        registry.register(Box::new(m.watches.clone()))?;
        registry.register(Box::new(m.events.clone()))?;
        registry.register(Box::new(m.invalid.clone()))?;
        registry.register(Box::new(m.refused.clone()))?;
        Ok(m)
    }
}
