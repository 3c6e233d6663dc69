//! component-http: an XMPP external component (XEP-0114) that speaks HTTP.
//!
//! The session ([`xmpp::session`]) keeps one authenticated stream to the XMPP server and reads
//! stanzas through a bounded codec ([`xmpp::codec`]). The router ([`bridge::router`]) answers
//! presence, disco, ping and version itself ([`bridge::builtin`]) and hands forwarded stanzas
//! to the delivery stage ([`bridge::delivery`]), which stores them in the durable queue
//! ([`queue`]), orders them per conversation, POSTs the JSON of [`bridge::payload`]
//! through the pooled client of [`webhook::client`] (signed by [`webhook::signing`] when
//! configured), retries by the policy of [`queue::retry`], and turns the final answer into a
//! reply by the rules of [`bridge::reply`]. Everything sent goes through the outbox
//! ([`bridge::outbox`]), which refuses what would break the stream, to the session's single
//! writer. Channels between the stages are bounded and the queue has a size limit, so a slow or
//! absent hook costs bounded memory. [`app`] wires and supervises it all; [`admin`]
//! serves the dead-letter commands; [`api`] is the HTTP side (sending, health, [`metrics`]).
#![forbid(unsafe_code)]
pub mod admin;
pub mod api;
pub mod app;
pub mod backoff;
pub mod bridge;
pub mod check;
pub mod cli;
pub mod config;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod queue;
pub mod tls;
pub mod webhook;
pub mod xmpp;
