//! What the component answers itself (the README section of that name): presence
//! subscription and probes for the domain, bare and full JIDs; disco#info, disco#items, ping and
//! version; service-unavailable for any other iq and for messages when messages are not forwarded;
//! nothing for errors and results. The hook never sees any of it.

use minidom::Element;

use crate::helpers::*;

const SENDER: &str = "alice@localhost/phone";

/// A ping to the domain, answered locally: what comes before its result came before it.
async fn sent_before_ping(conn: &mut Conn, stanza: &str) -> Vec<Element> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let id = format!(
        "ping-marker-{}",
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    conn.send(stanza).await;
    conn.send(&iq(
        "get",
        SENDER,
        DOMAIN,
        &id,
        &format!("<ping xmlns='{NS_PING}'/>"),
    ))
    .await;
    let mut before = Vec::new();
    loop {
        let next = conn.next_to(SENDER).await;
        if next.attr("id") == Some(id.as_str()) {
            assert_eq!(next.attr("type"), Some("result"), "{}", to_xml(&next));
            return before;
        }
        before.push(next);
    }
}

fn presence(type_: &str, to: &str) -> String {
    format!("<presence type='{type_}' from='{SENDER}' to='{to}'/>")
}

fn bare(jid: &str) -> &str {
    jid.split('/').next().unwrap_or(jid)
}

#[tokio::test]
async fn presence_is_answered_for_the_domain_bare_and_full_jids() {
    let mut stack = Stack::echo().await;
    for to in [
        "bot.localhost",
        "echo@bot.localhost",
        "echo@bot.localhost/desk",
    ] {
        let bare_to = bare(to);
        let with_resource = format!("{bare_to}/default");

        let sent = sent_before_ping(&mut stack.conn, &presence("subscribe", to)).await;
        assert_eq!(
            sent.len(),
            2,
            "subscribe to {to}: {:?}",
            sent.iter().map(to_xml).collect::<Vec<_>>()
        );
        assert_eq!(
            sent[0].attr("type"),
            Some("subscribed"),
            "{}",
            to_xml(&sent[0])
        );
        assert_eq!(
            sent[0].attr("from"),
            Some(bare_to),
            "subscribed comes from the bare JID"
        );
        assert_eq!(
            sent[1].attr("type"),
            None,
            "then available: {}",
            to_xml(&sent[1])
        );
        assert_eq!(sent[1].attr("from"), Some(with_resource.as_str()));
        assert!(
            sent.iter()
                .all(|p| p.is("presence", NS_COMPONENT) && p.attr("to") == Some(SENDER))
        );

        let sent = sent_before_ping(&mut stack.conn, &presence("probe", to)).await;
        assert_eq!(sent.len(), 1, "probe to {to}");
        assert_eq!(
            sent[0].attr("type"),
            None,
            "a probe gets available presence"
        );
        assert_eq!(sent[0].attr("from"), Some(with_resource.as_str()));

        let sent = sent_before_ping(&mut stack.conn, &presence("unsubscribe", to)).await;
        assert_eq!(sent.len(), 2, "unsubscribe to {to}");
        assert_eq!(sent[0].attr("type"), Some("unsubscribed"));
        assert_eq!(sent[0].attr("from"), Some(bare_to));
        assert_eq!(sent[1].attr("type"), Some("unavailable"));
        assert_eq!(sent[1].attr("from"), Some(with_resource.as_str()));

        for other in ["subscribed", "unsubscribed", "unavailable"] {
            let sent = sent_before_ping(&mut stack.conn, &presence(other, to)).await;
            assert!(sent.is_empty(), "presence {other} to {to} is swallowed");
        }
        let sent = sent_before_ping(
            &mut stack.conn,
            &format!("<presence from='{SENDER}' to='{to}'/>"),
        )
        .await;
        assert!(sent.is_empty(), "available presence to {to} is swallowed");
    }
    assert!(
        stack.hook.requests().is_empty(),
        "presence is not forwarded by default"
    );
}

#[tokio::test]
async fn presence_carries_the_configured_resource_show_and_status() {
    let mut stack = Stack::start(Reply::echo, |c| {
        c.key("resource = \"helper\"")
            .table("[presence]\nshow = \"chat\"\nstatus = \"Ready to help\"")
    })
    .await;
    let sent = sent_before_ping(&mut stack.conn, &presence("probe", "echo@bot.localhost")).await;
    assert_eq!(sent.len(), 1);
    let available = &sent[0];
    assert_eq!(available.attr("from"), Some("echo@bot.localhost/helper"));
    assert_eq!(
        available
            .get_child("show", NS_COMPONENT)
            .map(Element::text)
            .as_deref(),
        Some("chat")
    );
    assert_eq!(
        available
            .get_child("status", NS_COMPONENT)
            .map(Element::text)
            .as_deref(),
        Some("Ready to help")
    );
}

fn features(result: &Element) -> Vec<String> {
    result
        .get_child("query", NS_DISCO_INFO)
        .map(|q| {
            q.children()
                .filter(|c| c.is("feature", NS_DISCO_INFO))
                .filter_map(|c| c.attr("var").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn identity(result: &Element) -> Option<(String, String)> {
    let identity = result
        .get_child("query", NS_DISCO_INFO)?
        .get_child("identity", NS_DISCO_INFO)?;
    Some((
        identity.attr("category")?.to_owned(),
        identity.attr("type")?.to_owned(),
    ))
}

async fn ask(conn: &mut Conn, type_: &str, to: &str, id: &str, payload: &str) -> Element {
    conn.send(&iq(type_, SENDER, to, id, payload)).await;
    let reply = conn.with_id(id).await;
    assert!(reply.is("iq", NS_COMPONENT), "{}", to_xml(&reply));
    assert_eq!(reply.attr("to"), Some(SENDER), "{}", to_xml(&reply));
    assert_eq!(reply.attr("from"), Some(to), "{}", to_xml(&reply));
    reply
}

#[tokio::test]
async fn disco_ping_and_version_are_answered_and_other_iqs_refused() {
    let mut stack = Stack::echo().await;
    let conn = &mut stack.conn;

    let info = ask(
        conn,
        "get",
        DOMAIN,
        "d1",
        &format!("<query xmlns='{NS_DISCO_INFO}'/>"),
    )
    .await;
    assert_eq!(info.attr("type"), Some("result"), "{}", to_xml(&info));
    assert_eq!(
        identity(&info),
        Some(("component".into(), "generic".into())),
        "{}",
        to_xml(&info)
    );
    let vars = features(&info);
    for feature in [NS_DISCO_INFO, NS_PING, NS_VERSION] {
        assert!(
            vars.iter().any(|v| v == feature),
            "disco#info lists {feature}: {vars:?}"
        );
    }

    let info = ask(
        conn,
        "get",
        "echo@bot.localhost",
        "d2",
        &format!("<query xmlns='{NS_DISCO_INFO}'/>"),
    )
    .await;
    assert_eq!(
        identity(&info),
        Some(("client".into(), "bot".into())),
        "{}",
        to_xml(&info)
    );

    let items = ask(
        conn,
        "get",
        DOMAIN,
        "d3",
        &format!("<query xmlns='{NS_DISCO_ITEMS}'/>"),
    )
    .await;
    assert_eq!(items.attr("type"), Some("result"));
    let query = items
        .get_child("query", NS_DISCO_ITEMS)
        .expect("a disco#items query");
    assert_eq!(query.children().count(), 0, "no items: {}", to_xml(&items));

    let pong = ask(
        conn,
        "get",
        "echo@bot.localhost/desk",
        "p1",
        &format!("<ping xmlns='{NS_PING}'/>"),
    )
    .await;
    assert_eq!(pong.attr("type"), Some("result"), "{}", to_xml(&pong));

    let version = ask(
        conn,
        "get",
        DOMAIN,
        "v1",
        &format!("<query xmlns='{NS_VERSION}'/>"),
    )
    .await;
    assert_eq!(version.attr("type"), Some("result"));
    let query = version
        .get_child("query", NS_VERSION)
        .expect("a version query");
    assert!(
        query
            .get_child("name", NS_VERSION)
            .is_some_and(|n| !n.text().is_empty())
            && query
                .get_child("version", NS_VERSION)
                .is_some_and(|v| !v.text().is_empty()),
        "{}",
        to_xml(&version)
    );

    for (type_, id, payload) in [
        ("get", "o1", "<query xmlns='jabber:iq:roster'/>"),
        ("set", "o2", "<query xmlns='jabber:iq:roster'/>"),
        (
            "set",
            "o3",
            &format!("<query xmlns='{NS_DISCO_INFO}'/>") as &str,
        ),
        ("get", "o4", "<vCard xmlns='vcard-temp'/>"),
    ] {
        let reply = ask(conn, type_, "echo@bot.localhost", id, payload).await;
        let error = assert_error_reply(&reply, SENDER, "echo@bot.localhost", id);
        assert_eq!(
            (error.type_.as_str(), error.condition.as_str()),
            ("cancel", "service-unavailable"),
            "{}",
            to_xml(&reply)
        );
    }

    for stanza in [
        format!("<iq type='result' from='{SENDER}' to='{DOMAIN}' id='r1'/>"),
        format!(
            "<iq type='error' from='{SENDER}' to='{DOMAIN}' id='r2'><error type='cancel'><item-not-found xmlns='{NS_STANZAS}'/></error></iq>"
        ),
    ] {
        let sent = sent_before_ping(conn, &stanza).await;
        assert!(
            sent.is_empty(),
            "results and errors get nothing: {:?}",
            sent.iter().map(to_xml).collect::<Vec<_>>()
        );
    }
    assert!(
        stack.hook.requests().is_empty(),
        "iq is not forwarded by default"
    );
}

#[tokio::test]
async fn messages_are_refused_when_not_forwarded() {
    let mut stack = Stack::start(Reply::echo, |c| c.key("stanzas = [\"presence\"]")).await;
    let to = "echo@bot.localhost";
    stack.conn.send(&chat(SENDER, to, "m1", "hello?")).await;
    let reply = stack.conn.with_id("m1").await;
    let error = assert_error_reply(&reply, SENDER, to, "m1");
    assert_eq!(
        (error.type_.as_str(), error.condition.as_str()),
        ("cancel", "service-unavailable")
    );
    assert!(reply.is("message", NS_COMPONENT));

    let sent = sent_before_ping(
        &mut stack.conn,
        &format!(
            "<message type='error' from='{SENDER}' to='{to}' id='m2'><error type='cancel'><item-not-found xmlns='{NS_STANZAS}'/></error></message>"
        ),
    )
    .await;
    assert!(sent.is_empty(), "an error message gets nothing");
    assert!(
        stack
            .hook
            .requests()
            .iter()
            .all(|r| r.field("kind") != Some("message")),
        "messages must not reach the hook when not listed in `stanzas`"
    );
}
