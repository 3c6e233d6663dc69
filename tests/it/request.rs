//! What the webhook receives (README, "The webhook contract"): a POST of a JSON object with `to`,
//! `from`,
//! `kind`, `body`, `stanza`, `id`, `type`, `lang` (keys without a value omitted) and the
//! headers: JSON content type, the bridge's User-Agent, the configured headers and
//! Authorization.

use std::collections::BTreeSet;

use crate::helpers::*;

const ECHO: &str = "echo@bot.localhost";

fn keys(request: &Request) -> BTreeSet<String> {
    request
        .json
        .as_object()
        .unwrap_or_else(|| panic!("the request body is not a JSON object: {:?}", request.raw))
        .keys()
        .cloned()
        .collect()
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| (*k).to_owned()).collect()
}

#[tokio::test]
async fn a_message_becomes_the_documented_json_with_the_documented_headers() {
    let mut stack = Stack::start(Reply::echo, |c| {
        c.table("[webhook]\nheaders = { \"X-Env\" = \"test\" }\nauthorization = \"Bearer throwaway-hook-token\"")
    })
    .await;
    let stanza = format!(
        "<message from='alice@localhost/phone' to='{ECHO}' id='m1' type='chat' xml:lang='en'>\
         <body xml:lang='de'>hallo</body><body>hello</body>\
         <x xmlns='urn:example:extra'>data &amp; more</x></message>"
    );
    stack.conn.send(&stanza).await;
    let request = stack.hook.request_with_id("m1").await;

    assert_eq!(request.method, "POST");
    assert_eq!(request.path, HOOK_PATH);
    assert_eq!(
        keys(&request),
        set(&["to", "from", "kind", "body", "stanza", "id", "type", "lang"])
    );
    assert_eq!(request.field("to"), Some(ECHO));
    assert_eq!(request.field("from"), Some("alice@localhost/phone"));
    assert_eq!(request.field("kind"), Some("message"));
    assert_eq!(
        request.field("body"),
        Some("hello"),
        "the body without xml:lang"
    );
    assert_eq!(request.field("id"), Some("m1"));
    assert_eq!(request.field("type"), Some("chat"));
    assert_eq!(request.field("lang"), Some("en"));

    let xml = request.field("stanza").expect("a stanza field");
    assert!(
        !xml.contains(NS_COMPONENT),
        "the stanza must not carry the stream's namespace declaration: {xml}"
    );
    assert!(
        xml.contains("xmlns='urn:example:extra'") || xml.contains("xmlns=\"urn:example:extra\""),
        "children keep their own namespace: {xml}"
    );
    let parsed = parse_in_stream(xml).expect("the stanza field is XML");
    assert!(parsed.is("message", NS_COMPONENT));
    assert_eq!(parsed.attr("id"), Some("m1"));
    assert_eq!(
        parsed
            .get_child("x", "urn:example:extra")
            .map(|x| x.text())
            .as_deref(),
        Some("data & more")
    );

    assert_eq!(
        request.header("content-type").as_deref(),
        Some("application/json")
    );
    let agent = request.header("user-agent").unwrap_or_default();
    assert!(
        agent.starts_with("component-http/") && agent.len() > "component-http/".len(),
        "User-Agent: {agent}"
    );
    assert_eq!(request.header("x-env").as_deref(), Some("test"));
    assert_eq!(
        request.header("authorization").as_deref(),
        Some("Bearer throwaway-hook-token")
    );
}

#[tokio::test]
async fn the_first_body_is_taken_when_every_body_has_a_language() {
    let mut stack = Stack::echo().await;
    stack
        .conn
        .send(&format!(
            "<message from='alice@localhost/phone' to='{ECHO}' id='m2' type='chat'>\
             <body xml:lang='fr'>bonjour</body><body xml:lang='de'>hallo</body></message>"
        ))
        .await;
    let request = stack.hook.request_with_id("m2").await;
    assert_eq!(request.field("body"), Some("bonjour"));
}

#[tokio::test]
async fn keys_without_a_value_are_omitted() {
    let mut stack = Stack::start(Reply::echo, |c| {
        c.key("stanzas = [\"message\", \"presence\", \"iq\"]")
    })
    .await;
    // A message with nothing but its addresses.
    stack
        .conn
        .send(&format!("<message from='bare@localhost' to='{ECHO}'/>"))
        .await;
    let bare = stack
        .hook
        .request_where("the bare message", |r| {
            r.field("from") == Some("bare@localhost")
        })
        .await;
    assert_eq!(keys(&bare), set(&["to", "from", "kind", "stanza"]));
    for value in bare.json.as_object().expect("an object").values() {
        assert!(!value.is_null(), "no null values: {}", bare.json);
    }

    // Presence and iq: their kind, and never a `body` key.
    stack
        .conn
        .send(&format!(
            "<presence from='carol@localhost/laptop' to='{ECHO}' id='p1'><status>around</status></presence>"
        ))
        .await;
    let presence = stack.hook.request_with_id("p1").await;
    assert_eq!(presence.field("kind"), Some("presence"));
    assert_eq!(
        keys(&presence),
        set(&["to", "from", "kind", "stanza", "id"])
    );

    stack
        .conn
        .send(&iq(
            "get",
            "dave@localhost/desk",
            ECHO,
            "q1",
            "<query xmlns='urn:example:q'/>",
        ))
        .await;
    let request = stack.hook.request_with_id("q1").await;
    assert_eq!(request.field("kind"), Some("iq"));
    assert_eq!(request.field("type"), Some("get"));
    assert_eq!(
        keys(&request),
        set(&["to", "from", "kind", "stanza", "id", "type"])
    );
    let xml = request.field("stanza").unwrap_or_default();
    assert!(
        xml.contains("urn:example:q"),
        "the iq's payload is in the stanza field: {xml}"
    );
}

#[tokio::test]
async fn a_redundant_stream_namespace_on_the_stanza_is_not_forwarded() {
    // Some servers repeat the stream's default namespace on every stanza.
    let mut stack = Stack::echo().await;
    stack
        .conn
        .send(&format!(
            "<message xmlns='{NS_COMPONENT}' from='alice@localhost/phone' to='{ECHO}' id='m3' type='chat'><body>hi</body></message>"
        ))
        .await;
    let request = stack.hook.request_with_id("m3").await;
    let xml = request.field("stanza").unwrap_or_default();
    assert!(
        !xml.contains(NS_COMPONENT),
        "the stanza field must not carry the stream's default namespace: {xml}"
    );
    assert!(parse_in_stream(xml).is_ok(), "{xml}");
}

#[tokio::test]
async fn every_address_form_of_the_domain_is_forwarded() {
    let mut stack = Stack::echo().await;
    for (n, to) in [
        "bot.localhost",
        "echo@bot.localhost",
        "echo@bot.localhost/desk",
    ]
    .iter()
    .enumerate()
    {
        let id = format!("a{n}");
        stack
            .conn
            .send(&chat("alice@localhost/phone", to, &id, "hi"))
            .await;
        let request = stack.hook.request_with_id(&id).await;
        assert_eq!(request.field("to"), Some(*to));
        let reply = stack.conn.with_id(&id).await;
        assert_eq!(reply.attr("from"), Some(*to), "{}", to_xml(&reply));
    }
}
