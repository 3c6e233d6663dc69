//! End-to-end tests through a real Prosody and a real XMPP client library: a user logs in,
//! talks to JIDs of the component's domain, and sees what the webhook made of it.
//!
//! Each test starts its own Prosody, webhook and bridge on free loopback ports (see
//! `testkit::prosody`, used here as `harness`). Without Prosody installed the tests are skipped
//! with a notice, unless `CI=true`, where they fail.

mod api;
mod builtin;
mod durable;
mod echo;
use testkit::prosody as harness;
mod harness_check;
mod hooks;
mod http_errors;
mod payload;
mod php;
mod reconnect;
mod responses;
mod unicode;
