//! A route as its watches use it: the configuration, the event encoding it asks for, and its
//! metrics' label handles, resolved once when the route is loaded.

use std::sync::atomic::AtomicBool;

use herald_config::{Format, Payload, Route};
use herald_core::diff::{Collection, Encoding};

use crate::PollMetrics;

/// A route with what its watches need at hand: label handles resolved once. Reads as its
/// [`Route`].
pub struct RouteCtx {
    pub(crate) cfg: Route,
    pub(crate) encoding: Encoding,
    pub(crate) metrics: RouteMetrics,
    /// Removed or changed by a reload: it makes no new watch.
    pub(crate) retired: AtomicBool,
}

impl std::ops::Deref for RouteCtx {
    type Target = Route;

    fn deref(&self) -> &Route {
        &self.cfg
    }
}

impl RouteCtx {
    pub(crate) fn new(r: Route, metrics: &PollMetrics) -> Self {
        let name = r.name.as_str();
        let outcome = |o| metrics.polls.with_label_values(&[name, o]);
        let metrics = RouteMetrics {
            events: metrics.events.with_label_values(&[name]),
            changed: outcome("changed"),
            not_modified: outcome("not_modified"),
            unchanged: outcome("unchanged"),
            error: outcome("error"),
            invalid: metrics.invalid.with_label_values(&[name]),
            refused: metrics.refused.with_label_values(&[name]),
            duration: metrics.poll_duration.with_label_values(&[name]),
            bytes: metrics.bytes.with_label_values(&[name]),
            watches: metrics.watches.with_label_values(&[name]),
        };
        RouteCtx { encoding: encoding(&r), cfg: r, metrics, retired: AtomicBool::new(false) }
    }
}

fn encoding(r: &Route) -> Encoding {
    match r.events.format {
        Format::Snapshot => Encoding::Snapshot,
        Format::JsonPatch => Encoding::JsonPatch { array_id: r.events.array_id.clone() },
        Format::MergePatch => Encoding::MergePatch,
        Format::Collection => {
            let c = r.events.collection.clone().unwrap_or_default();
            Encoding::Collection(Collection {
                items: c.items,
                id: c.id,
                payload: match c.payload {
                    Payload::Rich => herald_core::diff::Payload::Rich,
                    Payload::Lean => herald_core::diff::Payload::Lean,
                },
                type_name: r.events.type_prefix.clone().unwrap_or_else(|| r.name.clone()),
            })
        }
    }
}

/// The route's series of herald-poll's metric families (see [`PollMetrics`]).
pub(crate) struct RouteMetrics {
    pub(crate) events: prometheus::IntCounter,
    pub(crate) changed: prometheus::IntCounter,
    pub(crate) not_modified: prometheus::IntCounter,
    pub(crate) unchanged: prometheus::IntCounter,
    pub(crate) error: prometheus::IntCounter,
    pub(crate) invalid: prometheus::IntCounter,
    pub(crate) refused: prometheus::IntCounter,
    pub(crate) duration: prometheus::Histogram,
    pub(crate) bytes: prometheus::IntCounter,
    pub(crate) watches: prometheus::IntGauge,
}
