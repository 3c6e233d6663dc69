//! The HTTP side towards the hook: the pooled client, what a call's outcome means, and the
//! Standard Webhooks signatures put on every call.
pub mod client;
pub mod outcome;
pub mod signing;
