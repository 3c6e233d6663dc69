//! The test environment itself: a user of the throwaway server reaches another local user, and
//! the ejabberd the tests run is configured as the README tells administrators to. When this
//! fails, the other failures of this suite are about the environment, not the bridge.

use crate::harness::ServerKind;
use crate::harness::{Server, body};

async fn a_local_message_reaches_another_local_user(kind: ServerKind) {
    if !kind.require() {
        return;
    }
    let server = Server::start(kind).await;
    let mut alice = server.client("user1").await;
    let mut bob = server.client("user2").await;
    alice
        .send_xml(&format!(
            "<message to='{}' type='chat' id='local-1'><body>hello bob</body></message>",
            bob.jid
        ))
        .await;
    let got = bob
        .recv_where(
            "the message from user1",
            crate::harness::REPLY_TIMEOUT,
            |e| e.name() == "message" && e.attr("id") == Some("local-1"),
        )
        .await;
    assert_eq!(body(&got).as_deref(), Some("hello bob"));
    assert_eq!(got.attr("from"), Some(alice.jid.to_string().as_str()));
}
on_both_servers!(a_local_message_reaches_another_local_user);

/// The README's ejabberd snippet ("The XMPP server's side") is, word for word, the component
/// listener every ejabberd of this suite runs with, for the README's port, domain and secret.
#[test]
fn the_readme_shows_the_component_listener_the_tests_run_ejabberd_with() {
    let readme = include_str!("../../README.md");
    let snippet = readme
        .split("ejabberd (`ejabberd.yml`):\n\n```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README's ejabberd snippet, after \"ejabberd (`ejabberd.yml`):\"");
    assert_eq!(
        snippet,
        testkit::ejabberd::component_listener_yaml(5347, "bot.example.org", "change-me"),
        "the README's ejabberd snippet differs from the harness's listener"
    );
}
