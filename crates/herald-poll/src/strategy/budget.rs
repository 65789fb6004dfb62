//! The permits one poll's requests take: a poll of many requests (pages, a delta and its
//! deleted feed) costs as many polls, each at the poll's priority.

use crate::limit::{Limiter, Permit, Priority};

/// A permit of the limiter's `priority` share for each request of one poll: the first one in
/// hand, the others asked for in turn.
pub(crate) struct Budget<'a> {
    pub(crate) limiter: &'a Limiter,
    pub(crate) priority: Priority,
    pub(crate) first: Option<Permit>,
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
