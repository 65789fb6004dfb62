//! Why a subscriber gets an answer instead of a stream: the upstream refused the first poll or
//! the admission check (its answer is passed on), or one of herald's limits or shutdown stands
//! in the way.

use std::time::Duration;

use bytes::Bytes;

use crate::PollError;

/// An answer given to a subscriber instead of a stream: the upstream's own, or herald's when
/// a limit or shutdown stands in the way.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
    /// Sent as `Retry-After`. Set only on herald's own refusals that pass (a watch limit,
    /// shutdown), never on the upstream's answers.
    pub retry_after: Option<Duration>,
    /// Herald's own (a limit, shutdown, storage unavailable), not the upstream's answer.
    pub own: bool,
}

impl Refusal {
    pub(crate) fn herald(status: u16, msg: impl Into<Bytes>, retry_after: Option<Duration>) -> Self {
        Refusal {
            status,
            content_type: Some("text/plain; charset=utf-8".into()),
            body: msg.into(),
            retry_after,
            own: true,
        }
    }

    pub(crate) fn upstream(status: u16, content_type: Option<String>, body: Bytes) -> Self {
        Refusal { status, content_type, body, retry_after: None, own: false }
    }

    pub(crate) fn unexpected_304() -> Self {
        Refusal::upstream(502, None, Bytes::from_static(b"unexpected 304 from upstream\n"))
    }
}

impl From<&PollError> for Refusal {
    fn from(e: &PollError) -> Self {
        Refusal {
            retry_after: e.retry_after(),
            ..Refusal::upstream(e.status(), Some("text/plain; charset=utf-8".into()), Bytes::from(format!("{e}\n")))
        }
    }
}
