//! End-to-end tests through a real XMPP server and a real XMPP client library: a user logs in,
//! talks to JIDs of the component's domain, and sees what the webhook made of it.
//!
//! Every test runs twice, against Debian's Prosody and against Debian's ejabberd: each test is
//! one async function taking the [`ServerKind`], and `on_both_servers!` makes the two test
//! functions `NAME::prosody` and `NAME::ejabberd` from it (so `cargo test --test e2e ejabberd`
//! runs one server's half). Where the servers legitimately differ, the test says so where it
//! branches on the kind. Each run starts its own server, webhook and bridge on free loopback
//! ports (see `testkit::e2e`, used here as `harness`). Without the server installed a test is
//! skipped with a notice, unless `CI=true`, where it fails.

use testkit::e2e as harness;
use testkit::e2e::ServerKind;

/// `on_both_servers!(test_fn)`: the tests `test_fn::prosody` and `test_fn::ejabberd`, each
/// running `async fn test_fn(kind: ServerKind)` against that server. (A module and a function
/// may share a name: they live in different namespaces.)
macro_rules! on_both_servers {
    ($test:ident) => {
        mod $test {
            #[tokio::test]
            async fn prosody() {
                super::$test($crate::ServerKind::Prosody).await
            }

            #[tokio::test]
            async fn ejabberd() {
                super::$test($crate::ServerKind::Ejabberd).await
            }
        }
    };
}

mod api;
mod builtin;
mod calls;
mod durable;
mod echo;
mod harness_check;
mod hooks;
mod http_errors;
mod payload;
mod php;
mod reconnect;
mod responses;
mod scaling;
mod second_component;
mod unicode;
