//! The bridge between the stanza stream and the hook: routing, local answers, delivery,
//! the JSON contract and the reply rules.
pub mod builtin;
pub mod delivery;
pub mod outbox;
pub mod payload;
pub mod reply;
pub mod router;
