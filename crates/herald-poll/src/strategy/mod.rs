//! How a watch's representation is fetched, chosen per route: one conditional GET, every page
//! of a collection (`poll.pages`), or only what changed since the last poll, merged into the
//! collection the watch holds (`poll.delta`). This is the one place that chooses; below it:
//! - [`whole`]: the whole representation, one GET or every page ([`pages`]);
//! - [`delta`]: only what changed, merged by id (reading the whole through [`whole`] when due);
//! - [`got`] and [`budget`]: what every way gives back, and the permits its requests take (one
//!   per request: a poll of many requests costs as many polls).

mod budget;
mod delta;
mod got;
mod pages;
mod whole;

use herald_config::Route;
use herald_core::Representation;

use crate::client::{Fetch, Request};
use crate::PollError;

pub(crate) use budget::Budget;
pub(crate) use got::Got;

/// What a watch's polls remember from one to the next, for the way its route is fetched.
#[derive(Default)]
pub(crate) struct FetchState {
    /// A paginated collection's pages as last polled (`poll.pages`).
    pages: pages::PageCache,
    /// Where delta polling stands (`poll.delta`).
    delta: delta::DeltaState,
}

/// Polls once as `route` says: `request` names the target, its credentials and the held
/// representation's validators; `held` is that representation; `state` what the watch's earlier
/// polls left.
pub(crate) async fn fetch(
    fetch: &dyn Fetch,
    route: &Route,
    state: &FetchState,
    request: Request<'_>,
    held: Option<&Representation>,
    mut budget: Budget<'_>,
) -> Result<Got, PollError> {
    if let Some(delta) = &route.poll.delta {
        // `None`: delta polling is suspended, and the watch polls as without it.
        if let Some(got) = delta::fetch(fetch, route, delta, &state.delta, request, held, &mut budget).await? {
            return Ok(got);
        }
    }
    let answer = whole::whole(fetch, route, &state.pages, request, &mut budget).await?;
    Ok(Got::from_answer(answer, &route.ignore))
}
