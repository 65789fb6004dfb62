//! The whole representation of a target: one conditional GET, or every page of it
//! (`poll.pages`). What a route without `poll.delta` polls, and what delta polling reads when it
//! reads the whole collection.

use herald_config::Route;

use super::budget::Budget;
use super::pages::{self, PageCache};
use crate::client::{Answer, Fetch, Request};
use crate::PollError;

/// The whole representation `request` names: one GET, or every page of it (`pages` holds the
/// pages as last polled).
pub(crate) async fn whole(
    fetch: &dyn Fetch,
    route: &Route,
    pages: &PageCache,
    request: Request<'_>,
    budget: &mut Budget<'_>,
) -> Result<Answer, PollError> {
    match &route.poll.pages {
        Some(cfg) => pages::fetch(fetch, cfg, pages, request, budget).await,
        None => {
            let permit = budget.permit().await;
            let answer = fetch.fetch(request).await;
            drop(permit);
            answer
        }
    }
}
