//! The bridge between the stanza stream and the hook: routing, local answers, delivery,
//! the JSON contract and the reply rules.
pub mod bounds;
pub mod builtin;
pub mod delivery;
pub mod outbox;
pub mod outgoing;
pub mod payload;
pub mod pending_iq;
pub mod reply;
pub mod rooms;
pub mod router;
