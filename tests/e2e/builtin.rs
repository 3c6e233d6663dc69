//! What the component answers itself, without the hook (README, "What the component answers
//! itself"): presence subscriptions and probes, service discovery, XEP-0199 ping, XEP-0092 version,
//! and service-unavailable for any other iq.

use crate::harness::ServerKind;
use crate::harness::{Reply, Stack, from_component, stanza_error, to_xml};

const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
const PING: &str = "urn:xmpp:ping";
const VERSION: &str = "jabber:iq:version";

const PRESENCE_CONFIG: &str = "[presence]\nshow = \"chat\"\nstatus = \"Ready to echo\"";

fn child_text(element: &tokio_xmpp::minidom::Element, name: &str) -> Option<String> {
    element
        .children()
        .find(|c| c.name() == name)
        .map(|c| c.text())
}

/// A subscription request is approved (`subscribed`, from the bare JID) and followed by the
/// bot's available presence with the configured show and status.
async fn a_subscription_is_approved_then_the_bot_is_available(kind: ServerKind) {
    let Some(stack) = Stack::start(kind, Reply::echo, PRESENCE_CONFIG).await else {
        return;
    };
    let mut user = stack.client("user1").await;
    // Like any roster-using client: servers forward subscription state changes only to
    // resources that have fetched the roster (RFC 6121's interested resources).
    user.send_xml("<iq type='get' id='roster-1'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    user.recv_iq("roster-1").await;

    user.send_xml("<presence to='echo@bot.localhost' type='subscribe' id='sub-1'/>")
        .await;

    let first = user
        .recv_where(
            "presence from the bot",
            crate::harness::REPLY_TIMEOUT,
            |e| e.name() == "presence" && from_component(e),
        )
        .await;
    assert_eq!(
        first.attr("type"),
        Some("subscribed"),
        "first: {}",
        to_xml(&first)
    );
    assert_eq!(first.attr("from"), Some("echo@bot.localhost"));

    let available = user
        .recv_where(
            "available presence from the bot",
            crate::harness::REPLY_TIMEOUT,
            |e| e.name() == "presence" && from_component(e),
        )
        .await;
    assert_eq!(
        available.attr("type"),
        None,
        "available: {}",
        to_xml(&available)
    );
    assert_eq!(available.attr("from"), Some("echo@bot.localhost/default"));
    assert_eq!(child_text(&available, "show").as_deref(), Some("chat"));
    assert_eq!(
        child_text(&available, "status").as_deref(),
        Some("Ready to echo")
    );
    assert!(
        stack.hook.requests().is_empty(),
        "presence is not forwarded by default"
    );
}
on_both_servers!(a_subscription_is_approved_then_the_bot_is_available);

/// A probe to a user JID or to the domain is answered with available presence from the
/// addressed bare JID and the configured resource.
async fn a_probe_is_answered_with_available_presence(kind: ServerKind) {
    let Some(stack) = Stack::start(kind, Reply::echo, "resource = \"bot\"").await else {
        return;
    };
    let mut user = stack.client("user1").await;

    for (id, to) in [
        ("probe-1", "echo@bot.localhost"),
        ("probe-2", "bot.localhost"),
    ] {
        user.send_xml(&format!("<presence to='{to}' type='probe' id='{id}'/>"))
            .await;
        let expected_from = format!("{to}/bot");
        let presence = user
            .recv_where(
                &format!("presence from {expected_from}"),
                crate::harness::REPLY_TIMEOUT,
                |e| e.name() == "presence" && from_component(e),
            )
            .await;
        assert_eq!(
            presence.attr("from"),
            Some(expected_from.as_str()),
            "{}",
            to_xml(&presence)
        );
        assert_eq!(
            presence.attr("type"),
            None,
            "available: {}",
            to_xml(&presence)
        );
    }
}
on_both_servers!(a_probe_is_answered_with_available_presence);

async fn disco_info_describes_the_domain_and_its_users(kind: ServerKind) {
    let Some(stack) = Stack::start(kind, Reply::echo, "").await else {
        return;
    };
    let mut user = stack.client("user1").await;

    for (id, to, category, type_) in [
        ("info-1", "bot.localhost", "component", "generic"),
        ("info-2", "echo@bot.localhost", "client", "bot"),
    ] {
        let answer = user
            .iq(to, "get", id, &format!("<query xmlns='{DISCO_INFO}'/>"))
            .await;
        assert_eq!(answer.attr("type"), Some("result"), "{}", to_xml(&answer));
        assert_eq!(answer.attr("from"), Some(to));
        let query = answer
            .get_child("query", DISCO_INFO)
            .unwrap_or_else(|| panic!("a disco#info query: {}", to_xml(&answer)));
        let identity = query
            .children()
            .find(|c| c.name() == "identity")
            .unwrap_or_else(|| panic!("an identity: {}", to_xml(&answer)));
        assert_eq!(
            (identity.attr("category"), identity.attr("type")),
            (Some(category), Some(type_)),
            "{}",
            to_xml(&answer)
        );
        let features: Vec<&str> = query
            .children()
            .filter(|c| c.name() == "feature")
            .filter_map(|c| c.attr("var"))
            .collect();
        for feature in [DISCO_INFO, PING, VERSION] {
            assert!(
                features.contains(&feature),
                "{feature} missing in {}",
                to_xml(&answer)
            );
        }
    }
    assert!(
        stack.hook.requests().is_empty(),
        "answered without the hook"
    );
}
on_both_servers!(disco_info_describes_the_domain_and_its_users);

async fn disco_items_is_empty(kind: ServerKind) {
    let Some(stack) = Stack::start(kind, Reply::echo, "").await else {
        return;
    };
    let mut user = stack.client("user1").await;

    let answer = user
        .iq(
            "bot.localhost",
            "get",
            "items-1",
            &format!("<query xmlns='{DISCO_ITEMS}'/>"),
        )
        .await;

    assert_eq!(answer.attr("type"), Some("result"), "{}", to_xml(&answer));
    let query = answer
        .get_child("query", DISCO_ITEMS)
        .unwrap_or_else(|| panic!("a disco#items query: {}", to_xml(&answer)));
    assert_eq!(query.children().count(), 0, "{}", to_xml(&answer));
}
on_both_servers!(disco_items_is_empty);

async fn ping_is_answered_for_the_domain_and_user_jids(kind: ServerKind) {
    let Some(stack) = Stack::start(kind, Reply::echo, "").await else {
        return;
    };
    let mut user = stack.client("user1").await;

    for (id, to) in [
        ("ping-1", "bot.localhost"),
        ("ping-2", "echo@bot.localhost"),
        ("ping-3", "echo@bot.localhost/desk"),
    ] {
        let answer = user
            .iq(to, "get", id, &format!("<ping xmlns='{PING}'/>"))
            .await;
        assert_eq!(
            answer.attr("type"),
            Some("result"),
            "ping to {to}: {}",
            to_xml(&answer)
        );
        assert_eq!(answer.attr("from"), Some(to));
    }
}
on_both_servers!(ping_is_answered_for_the_domain_and_user_jids);

async fn version_is_answered(kind: ServerKind) {
    let Some(stack) = Stack::start(kind, Reply::echo, "").await else {
        return;
    };
    let mut user = stack.client("user1").await;

    let answer = user
        .iq(
            "bot.localhost",
            "get",
            "version-1",
            &format!("<query xmlns='{VERSION}'/>"),
        )
        .await;

    assert_eq!(answer.attr("type"), Some("result"), "{}", to_xml(&answer));
    let query = answer
        .get_child("query", VERSION)
        .unwrap_or_else(|| panic!("a version query: {}", to_xml(&answer)));
    let name = child_text(query, "name").unwrap_or_default();
    let version = child_text(query, "version").unwrap_or_default();
    assert!(!name.is_empty(), "a name: {}", to_xml(&answer));
    assert!(!version.is_empty(), "a version: {}", to_xml(&answer));
}
on_both_servers!(version_is_answered);

async fn other_iqs_are_service_unavailable_when_iq_is_not_forwarded(kind: ServerKind) {
    let Some(stack) = Stack::start(kind, Reply::echo, "").await else {
        return;
    };
    let mut user = stack.client("user1").await;

    let answer = user
        .iq(
            "echo@bot.localhost",
            "get",
            "other-1",
            "<query xmlns='urn:example:weather'/>",
        )
        .await;

    let error = stanza_error(&answer).unwrap_or_else(|| panic!("an error: {}", to_xml(&answer)));
    assert_eq!(
        (error.type_.as_str(), error.condition.as_str()),
        ("cancel", "service-unavailable"),
        "{}",
        to_xml(&answer)
    );
    assert!(
        stack.hook.requests().is_empty(),
        "iq is not forwarded by default"
    );
}
on_both_servers!(other_iqs_are_service_unavailable_when_iq_is_not_forwarded);

async fn messages_are_service_unavailable_when_message_is_not_forwarded(kind: ServerKind) {
    let Some(stack) = Stack::start(kind, Reply::echo, "stanzas = [\"iq\"]").await else {
        return;
    };
    let mut user = stack.client("user1").await;

    let reply = user.chat("echo@bot.localhost", "nofwd-1", "anyone?").await;

    let error = stanza_error(&reply).unwrap_or_else(|| panic!("an error: {}", to_xml(&reply)));
    assert_eq!(
        (error.type_.as_str(), error.condition.as_str()),
        ("cancel", "service-unavailable"),
        "{}",
        to_xml(&reply)
    );
    assert_eq!(reply.attr("id"), Some("nofwd-1"));
    assert!(stack.hook.requests().is_empty(), "message is not forwarded");
}
on_both_servers!(messages_are_service_unavailable_when_message_is_not_forwarded);
