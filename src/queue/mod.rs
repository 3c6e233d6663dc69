//! The durable queue: its storage ([`store`]), the retry policy ([`retry`]), and the
//! dead-letter commands with the control socket that runs them inside a live instance
//! ([`control`]). The scheduling itself (order per conversation, calls in flight) is the
//! delivery stage's.
pub mod control;
pub mod retry;
pub mod store;
