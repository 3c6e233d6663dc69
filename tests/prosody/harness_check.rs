//! The test environment itself: a user of the throwaway Prosody reaches another local user.
//! When this fails, the other failures of this suite are about the environment, not the bridge.

use crate::harness::{Prosody, body, require_tool};

#[tokio::test]
async fn a_local_message_reaches_another_local_user() {
    if !require_tool("prosody", "prosody") {
        return;
    }
    let prosody = Prosody::start().await;
    let mut alice = prosody.client("user1").await;
    let mut bob = prosody.client("user2").await;
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
