//! Test and demo helpers: [`LegacyApi`], a polling-only REST API with ETag and Last-Modified
//! support (herald's demo upstream and the tests' fake upstream), [`SseClient`], a small
//! Server-Sent-Events client that records what it receives, [`Receiver`], a webhook receiver
//! that verifies signatures with the Standard Webhooks reference library, and for the fault
//! harness a round-robin TCP [`Balancer`] and a [`FaultyProxy`] that degrades a link on demand.
#![forbid(unsafe_code)]

mod api;
mod balancer;
mod faulty;
mod receiver;
mod sse;

pub use api::{DeltaCursor, DeltaForm, Fault, LegacyApi, PageLinks, PathStats, QuotaForm, Requested};
pub use balancer::Balancer;
pub use faulty::{FaultyProxy, NetFault};
pub use receiver::{Behaviour, Delivery, Receiver, Seen};
pub use sse::{SseClient, SseEvent};
