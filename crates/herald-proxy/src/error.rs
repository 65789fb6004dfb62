//! Why a pass-through got no answer, and where that came from. Which failure is a 502 and which
//! a 504 is decided here, once, for both engines.

use std::time::Duration;

use http::StatusCode;

use crate::BoxError;

/// Where a failure came from (pingora's `ErrorSource`): the operator looks at the upstream, the
/// client's side needs no one's attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Upstream,
    Client,
}

/// A pass-through that got no answer from the upstream.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Connecting, sending the request or reading the answer failed.
    #[error("upstream unreachable")]
    Unreachable(#[source] BoxError),
    /// Nothing moved for `upstream.timeout`.
    #[error("upstream timed out (nothing moved for {0:?})")]
    TimedOut(Duration),
    /// The upstream's answer cannot be passed on.
    #[error("invalid upstream answer: {0}")]
    InvalidAnswer(&'static str),
    /// The request target cannot be put behind the upstream's base path.
    #[error("invalid request target")]
    InvalidTarget(#[source] http::uri::InvalidUri),
    /// The client left while its request body was being passed on: nobody to answer.
    #[error("the client left while its request was passed on")]
    ClientGone(#[source] Option<std::io::Error>),
}

impl ForwardError {
    pub fn origin(&self) -> Origin {
        match self {
            ForwardError::Unreachable(_) | ForwardError::TimedOut(_) | ForwardError::InvalidAnswer(_) => {
                Origin::Upstream
            }
            ForwardError::InvalidTarget(_) | ForwardError::ClientGone(_) => Origin::Client,
        }
    }

    /// The status herald answers with, and the line its plain-text body says (the cause stays
    /// in herald's log: it may name internal addresses).
    pub fn answer(&self) -> Option<(StatusCode, &'static str)> {
        Some(match self {
            ForwardError::Unreachable(_) => (StatusCode::BAD_GATEWAY, "upstream unreachable"),
            ForwardError::InvalidAnswer(_) => (StatusCode::BAD_GATEWAY, "invalid upstream answer"),
            ForwardError::TimedOut(_) => (StatusCode::GATEWAY_TIMEOUT, "upstream timed out"),
            ForwardError::InvalidTarget(_) => (StatusCode::BAD_REQUEST, "invalid request target"),
            ForwardError::ClientGone(_) => return None,
        })
    }

    /// Logs the failure with its whole chain of causes and its origin.
    pub(crate) fn log(&self) {
        let mut why = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(e) = cause {
            why.push_str(": ");
            why.push_str(&e.to_string());
            cause = e.source();
        }
        match self.origin() {
            Origin::Upstream => tracing::warn!(origin = "upstream", error = %why, "pass-through failed"),
            Origin::Client => tracing::debug!(origin = "client", error = %why, "pass-through failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_is_a_504_and_every_other_upstream_failure_a_502() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let cases = [
            (ForwardError::Unreachable(refused.into()), Some(502)),
            (ForwardError::InvalidAnswer("two lengths"), Some(502)),
            (ForwardError::TimedOut(Duration::from_secs(1)), Some(504)),
            (ForwardError::ClientGone(None), None),
        ];
        for (error, status) in cases {
            assert_eq!(error.answer().map(|(s, _)| s.as_u16()), status, "{error}");
            assert_eq!(error.origin() == Origin::Upstream, status.is_some(), "{error}");
        }
    }
}
