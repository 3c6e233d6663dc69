//! The durable queue: its storage ([`store`]) and the retry policy ([`retry`]). The scheduling
//! itself (order per conversation, calls in flight) is the delivery stage's; the dead-letter
//! commands are [`crate::admin`]'s.
pub mod retry;
pub mod store;
