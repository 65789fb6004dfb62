//! Test and demo helpers: [`LegacyApi`], a polling-only REST API with ETag and Last-Modified
//! support (herald's demo upstream and the tests' fake upstream), and [`SseClient`], a small
//! Server-Sent-Events client that records what it receives.
#![forbid(unsafe_code)]

mod api;
mod sse;

pub use api::{Fault, LegacyApi, PathStats};
pub use sse::{SseClient, SseEvent};
