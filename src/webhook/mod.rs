//! The HTTP side towards the hook: the pooled client, and the Standard Webhooks signatures it
//! puts on every call.
pub mod client;
pub mod signing;
