//! Integration tests of the `component-http` binary over real sockets: a scripted XEP-0114
//! server on one side, a scripted webhook on the other, the bridge process in between with a
//! generated configuration. One module per behaviour; the fixtures live in the `testkit` crate
//! (`testkit::scripted`, used here as `helpers`).

use testkit::scripted as helpers;

mod api;
mod builtin;
mod config;
mod dead_letters;
mod faults;
mod handshake;
mod hardening;
mod hook_tls;
mod http_errors;
mod keepalive;
mod limits;
mod malformed;
mod memory_budget;
mod observability;
mod ordering;
mod outbound;
mod reconnect;
mod replies;
mod request;
mod restricted_xml;
mod retries;
mod schema;
mod shared_queue;
mod shutdown;
mod signing;
mod tls;
