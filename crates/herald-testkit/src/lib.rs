//! Test and demo helpers: [`LegacyApi`], a polling-only REST API with ETag and Last-Modified
//! support (herald's demo upstream and the tests' fake upstream), [`SseClient`], a small
//! Server-Sent-Events client that records what it receives, and [`Receiver`], a webhook receiver
//! that verifies signatures with the Standard Webhooks reference library.
#![forbid(unsafe_code)]

mod api;
mod receiver;
mod sse;

pub use api::{DeltaCursor, DeltaForm, Fault, LegacyApi, PageLinks, PathStats, QuotaForm, Requested};
pub use receiver::{Behaviour, Delivery, Receiver, Seen};
pub use sse::{SseClient, SseEvent};
