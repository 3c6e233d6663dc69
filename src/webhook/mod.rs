//! The HTTP side towards the hook: the pooled client. (Signing of calls joins it here.)
pub mod client;
