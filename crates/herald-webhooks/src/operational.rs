//! Operational events (spec section 7): what happens to subscriptions and messages, told to
//! `webhooks.operational_url` as `herald.subscription.disabled`, `herald.message.dead` and
//! `herald.subscription.recovered`, signed like deliveries with `operational_secret`.
//!
//! They are kept in memory, in a bounded queue, and each is tried a few times: they describe
//! the durable state (which the API shows), they are not that state.

use herald_core::trace::{TraceParent, TRACEPARENT};
use std::sync::Arc;
use std::time::Duration;

use herald_store::{message_id, now_ms};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{events, sign};

/// Events waiting to be sent; beyond, new ones are dropped (and logged).
const QUEUE: usize = 1024;
/// Delays before the second and later attempts of one event.
const RETRIES: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
    Duration::from_secs(600),
];

pub(crate) struct Operational {
    queue: mpsc::Sender<(&'static str, Value)>,
}

impl Operational {
    /// Starts the sender when `operational_url` is set; `client` is the deliveries' client
    /// (timeouts, no redirects, the private-destination guard).
    pub(crate) fn start(
        cfg: &herald_config::Webhooks,
        client: reqwest::Client,
        shutdown: CancellationToken,
    ) -> Option<Arc<Operational>> {
        let url = cfg.operational_url.clone()?;
        let key = sign::key(cfg.operational_secret.as_deref()?)?;
        let (queue, events) = mpsc::channel(QUEUE);
        tokio::spawn(send_all(events, client, url, key, shutdown));
        Some(Arc::new(Operational { queue }))
    }

    /// Queues an event; `data` names the subscription (and message) and the reason.
    pub(crate) fn emit(&self, event_type: &'static str, data: Value) {
        if self.queue.try_send((event_type, data)).is_err() {
            warn!(event_type, "operational event dropped: the queue is full");
        }
    }
}

async fn send_all(
    mut events: mpsc::Receiver<(&'static str, Value)>,
    client: reqwest::Client,
    url: String,
    key: ring::hmac::Key,
    shutdown: CancellationToken,
) {
    loop {
        let (event_type, data) = tokio::select! {
            event = events.recv() => match event {
                Some(event) => event,
                None => return,
            },
            () = shutdown.cancelled() => return,
        };
        let now = now_ms();
        let id = message_id(now);
        let body = events::body(event_type, now, &data.to_string());
        for (attempt, delay) in std::iter::once(Duration::ZERO).chain(RETRIES).enumerate() {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => return,
            }
            let timestamp = now_ms() / 1000;
            let signature = sign::signature_header(std::slice::from_ref(&key), &id, timestamp, body.as_bytes());
            let sent = client
                .post(&url)
                .header(TRACEPARENT, TraceParent::new().header())
                .header(http::header::CONTENT_TYPE, "application/json")
                .header("webhook-id", &id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", signature)
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(resp) if resp.status().is_success() => break,
                Ok(resp) => debug!(event_type, attempt, status = resp.status().as_u16(), "operational event refused"),
                Err(e) => debug!(event_type, attempt, error = %e, "operational event not sent"),
            }
            if attempt == RETRIES.len() {
                warn!(event_type, "operational event given up after its retries");
            }
        }
    }
}
