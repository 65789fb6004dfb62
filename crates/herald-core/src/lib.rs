//! herald's domain, without I/O: credential scopes, representations and their hashes, events
//! encoded once as SSE frames, and the per-watch event history used for `Last-Event-ID` resume.
#![forbid(unsafe_code)]

pub mod diff;
mod event;
mod history;
mod repr;
mod scope;
pub mod trace;

pub use event::{encode_comment, encode_frame, Event, EventId, EventKind};
pub use history::History;
pub use repr::{remove_pointer, Representation};
pub use scope::{Scope, ScopeHasher};
