//! The request the hook receives (README, "The webhook contract"): headers, and the JSON object
//! with `to`,
//! `from`, `kind`, `body`, `stanza` (without the stream's default namespace), `id`, `type`,
//! keys without a value left out, for messages, presence and iq.

use tokio_xmpp::minidom::Element;

use crate::harness::ServerKind;
use crate::harness::{Reply, Request, Stack, parse_stanza_xml};

const EXTRA_NS: &str = "urn:example:extra";

/// Every value is present (no `null`) and the stanza names no stream namespace.
fn assert_clean(request: &Request) {
    let object = request
        .json
        .as_object()
        .unwrap_or_else(|| panic!("a JSON object: {}", String::from_utf8_lossy(&request.raw)));
    for (key, value) in object {
        assert!(
            !value.is_null(),
            "`{key}` is null instead of left out: {}",
            request.json
        );
    }
    let stanza = request.json["stanza"].as_str().expect("a `stanza` string");
    for ns in ["jabber:client", "jabber:component:accept", "jabber:server"] {
        assert!(
            !stanza.contains(ns),
            "the stanza carries the stream namespace {ns}: {stanza}"
        );
    }
}

/// The `stanza` field parsed as it would be inside a stream.
fn parsed_stanza(request: &Request) -> Element {
    parse_stanza_xml(
        request.json["stanza"].as_str().expect("a `stanza` string"),
        "jabber:component:accept",
    )
}

async fn a_message_is_posted_as_mod_component_http_json(kind: ServerKind) {
    let Some(stack) = Stack::start(kind, Reply::echo, "").await else {
        return;
    };
    let mut user = stack.client("user1").await;
    let me = user.jid.to_string();

    user.send_xml(&format!(
        "<message to='echo@bot.localhost' type='chat' id='json-1'><body>what do I look like?</body><x xmlns='{EXTRA_NS}'>extra &amp; data</x></message>"
    ))
    .await;
    user.recv_message_from_component().await;

    let requests = stack.hook.wait_requests(1).await;
    let request = &requests[0];
    let content_type = request
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        content_type.starts_with("application/json"),
        "content-type: {content_type:?}"
    );
    let user_agent = request
        .headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        user_agent.starts_with("component-http/"),
        "user-agent: {user_agent:?}"
    );

    let json = &request.json;
    assert_eq!(json["to"], "echo@bot.localhost");
    assert_eq!(json["from"], me.as_str());
    assert_eq!(json["kind"], "message");
    assert_eq!(json["body"], "what do I look like?");
    assert_eq!(json["id"], "json-1");
    assert_eq!(json["type"], "chat");
    assert_clean(request);

    let stanza = parsed_stanza(request);
    assert_eq!(stanza.name(), "message");
    assert_eq!(
        stanza.ns(),
        "jabber:component:accept",
        "no namespace of its own"
    );
    assert_eq!(stanza.attr("to"), Some("echo@bot.localhost"));
    assert_eq!(stanza.attr("from"), Some(me.as_str()));
    assert_eq!(stanza.attr("id"), Some("json-1"));
    let extra = stanza
        .get_child("x", EXTRA_NS)
        .unwrap_or_else(|| panic!("the payload keeps its namespace: {}", json["stanza"]));
    assert_eq!(extra.text(), "extra & data");
}
on_both_servers!(a_message_is_posted_as_mod_component_http_json);

async fn presence_iq_and_bodyless_messages_are_posted_with_their_kind(kind: ServerKind) {
    let Some(stack) = Stack::start(
        kind,
        |_: &Request| Reply::status(204),
        "stanzas = [\"message\", \"presence\", \"iq\"]",
    )
    .await
    else {
        return;
    };
    let mut user = stack.client("user1").await;
    let me = user.jid.to_string();

    // A directed presence, a chat state without a body, an iq.
    user.send_xml(
        "<presence to='echo@bot.localhost' id='pres-1'><status>around</status></presence>",
    )
    .await;
    let presence = stack.hook.wait_requests(1).await.remove(0);
    user.send_xml(
        "<message to='echo@bot.localhost' type='chat' id='state-1'><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
    )
    .await;
    let state = stack.hook.wait_requests(2).await.remove(1);
    let answer = user
        .iq(
            "echo@bot.localhost",
            "get",
            "iq-1",
            "<query xmlns='urn:example:weather'/>",
        )
        .await;
    assert_eq!(
        answer.attr("type"),
        Some("result"),
        "204 is an empty result"
    );
    let iq = stack.hook.wait_requests(3).await.remove(2);

    assert_eq!(presence.json["kind"], "presence");
    assert_eq!(presence.json["from"], me.as_str());
    assert_eq!(presence.json["to"], "echo@bot.localhost");
    assert_eq!(presence.json["id"], "pres-1");
    assert!(
        presence.json.get("body").is_none(),
        "no body: {}",
        presence.json
    );
    assert!(
        presence.json.get("type").is_none(),
        "available has no type: {}",
        presence.json
    );
    assert_clean(&presence);
    assert_eq!(parsed_stanza(&presence).name(), "presence");

    assert_eq!(state.json["kind"], "message");
    assert!(state.json.get("body").is_none(), "no body: {}", state.json);
    assert_clean(&state);
    assert!(
        parsed_stanza(&state)
            .get_child("active", "http://jabber.org/protocol/chatstates")
            .is_some(),
        "{}",
        state.json["stanza"]
    );

    assert_eq!(iq.json["kind"], "iq");
    assert_eq!(iq.json["type"], "get");
    assert_eq!(iq.json["id"], "iq-1");
    assert_clean(&iq);
    let stanza = parsed_stanza(&iq);
    assert_eq!(stanza.name(), "iq");
    assert!(
        stanza.get_child("query", "urn:example:weather").is_some(),
        "{}",
        iq.json["stanza"]
    );
}
on_both_servers!(presence_iq_and_bodyless_messages_are_posted_with_their_kind);
