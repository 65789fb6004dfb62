//! What one poll found, whatever way its route is fetched: not modified, a fresh
//! representation (with, from a delta, the items it touched), or another status.

use std::time::Duration;

use bytes::Bytes;
use herald_core::Representation;

use crate::client::Answer;

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
    pub(crate) before: serde_json::Value,
    pub(crate) after: serde_json::Value,
}
