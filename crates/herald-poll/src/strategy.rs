//! How a watch's representation is fetched, chosen per route: one conditional GET, every page
//! of a collection (`poll.pages`), or only what changed since the last poll, merged into the
//! collection the watch holds (`poll.delta`). Each request takes a permit of the poll's share.

use std::time::Duration;

use bytes::Bytes;
use herald_config::Route;
use herald_core::Representation;

use crate::client::{Answer, Fetch, Request};
use crate::limit::{Limiter, Permit, Priority};
use crate::watch::Watch;
use crate::PollError;

/// What one poll found, whatever it took to find it.
pub(crate) enum Got {
    /// Nothing the watch holds changed (a 304, or a delta without news). The validators a 304
    /// carries replace the stored ones (RFC 9111 section 4.3.4); `None` keeps what is stored.
    NotModified { max_age: Option<Duration>, etag: Option<String>, last_modified: Option<String> },
    /// A representation, changed or not (the caller compares hashes); `bytes` came from the
    /// upstream for it; `changed`, when known, the only items that can differ.
    Fresh { repr: Representation, max_age: Option<Duration>, bytes: u64, changed: Option<Changed> },
    /// Any other status: passed on to a first subscriber as is.
    Status { status: u16, content_type: Option<String>, body: Bytes, retry_after: Option<Duration> },
}

impl Got {
    /// What an HTTP answer says about the representation; its body is normalized with `ignore`.
    pub(crate) fn from_answer(answer: Answer, ignore: &[String]) -> Got {
        match answer {
            Answer::NotModified { max_age, etag, last_modified, .. } => {
                Got::NotModified { max_age, etag, last_modified }
            }
            Answer::Ok { body, content_type, etag, last_modified, max_age, .. } => {
                let bytes = body.len() as u64;
                let mut repr = Representation::from_body(body, ignore);
                repr.content_type = content_type;
                repr.etag = etag;
                repr.last_modified = last_modified;
                Got::Fresh { repr, max_age, bytes, changed: None }
            }
            Answer::Status { status, content_type, body, retry_after } => {
                Got::Status { status, content_type, body, retry_after }
            }
        }
    }
}

/// The items of a collection a delta touched: those held (that changed or went) and what is
/// there now (changed or new), each a JSON array in collection order. A diff of the two is the
/// diff of the whole collections.
pub(crate) struct Changed {
    pub before: serde_json::Value,
    pub after: serde_json::Value,
}

/// A permit of the limiter's `priority` share for each request of one poll: the first one in
/// hand, the others asked for in turn (so a poll of many requests costs as many polls).
pub(crate) struct Budget<'a> {
    pub limiter: &'a Limiter,
    pub priority: Priority,
    pub first: Option<Permit>,
}

impl Budget<'_> {
    /// The permit for the next request; drop the previous one first.
    pub(crate) async fn permit(&mut self) -> Permit {
        match self.first.take() {
            Some(permit) => permit,
            None => self.limiter.acquire(self.priority).await,
        }
    }
}

/// Polls `watch` once as its route says: `request` names the target, its credentials and the
/// held representation's validators; `held` is that representation.
pub(crate) async fn fetch(
    fetch: &dyn Fetch,
    watch: &Watch,
    request: Request<'_>,
    held: Option<&Representation>,
    mut budget: Budget<'_>,
) -> Result<Got, PollError> {
    let route: &Route = &watch.route.cfg;
    if let Some(delta) = &route.poll.delta {
        return crate::delta::fetch(fetch, route, delta, &watch.delta, request, held, budget).await;
    }
    let answer = whole(fetch, route, &watch.pages, request, &mut budget).await?;
    Ok(Got::from_answer(answer, &route.ignore))
}

/// The whole representation: one GET, or every page of it.
pub(crate) async fn whole(
    fetch: &dyn Fetch,
    route: &Route,
    pages: &crate::pages::PageCache,
    request: Request<'_>,
    budget: &mut Budget<'_>,
) -> Result<Answer, PollError> {
    match &route.poll.pages {
        Some(cfg) => crate::pages::fetch(fetch, cfg, pages, request, budget).await,
        None => {
            let permit = budget.permit().await;
            let answer = fetch.fetch(request).await;
            drop(permit);
            answer
        }
    }
}
