//! The JSON Schemas of `docs/schema/` against what really goes over the wire (README, "The
//! webhook contract"): every request body the bridge POSTs (a message with body, language, id
//! and type; a groupchat message; a message without a body; presences; an iq get) is valid
//! against `webhook-request.schema.json`, and the reply bodies the tests answer with are valid
//! against `webhook-reply.schema.json`. A request with a key missing, added or out of place, and
//! a reply the bridge treats as a hook error, are invalid: the schemas are not too loose to fail.

use std::path::Path;

use jsonschema::Validator;
use serde_json::{Value, json};

use crate::helpers::*;

const ECHO: &str = "echo@bot.localhost";

fn load(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/schema")
        .join(format!("{name}.schema.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The schema `name`, checked against the JSON Schema 2020-12 meta-schema and compiled; each of
/// its own `examples` must be valid too.
fn validator(name: &str) -> Validator {
    let schema = load(name);
    if let Err(error) = jsonschema::draft202012::meta::validate(&schema) {
        panic!("{name} is not a valid JSON Schema 2020-12: {error}");
    }
    let validator = jsonschema::draft202012::new(&schema)
        .unwrap_or_else(|e| panic!("{name} does not compile: {e}"));
    let examples = schema["examples"].as_array().map(Vec::as_slice);
    for example in examples.unwrap_or_default() {
        assert_valid(&validator, name, example);
    }
    validator
}

fn errors(validator: &Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|error| format!("at {:?}: {error}", error.instance_path().as_str()))
        .collect()
}

fn assert_valid(validator: &Validator, name: &str, instance: &Value) {
    let errors = errors(validator, instance);
    assert!(
        errors.is_empty(),
        "{instance} is not valid against {name}:\n  {}",
        errors.join("\n  ")
    );
}

fn assert_invalid(validator: &Validator, name: &str, instance: &Value, why: &str) {
    assert!(
        !validator.is_valid(instance),
        "{instance} is valid against {name}, but {why}"
    );
}

#[tokio::test]
async fn every_request_the_bridge_sends_is_valid_against_the_request_schema() {
    const NAME: &str = "webhook-request";
    let requests = validator(NAME);
    let mut stack = Stack::start(
        |request: &Request| {
            if request.field("body").is_some() {
                Reply::echo(request)
            } else {
                Reply::status(204)
            }
        },
        |c| c.key("stanzas = [\"message\", \"presence\", \"iq\"]"),
    )
    .await;

    let stanzas = [
        // Every key of the contract: body (the one without xml:lang), id, type and lang.
        format!(
            "<message from='alice@localhost/phone' to='{ECHO}' id='m1' type='chat' xml:lang='en'>\
             <body xml:lang='de'>hallo</body><body>hi &lt;&amp;&gt; \"✓\"</body></message>"
        ),
        format!(
            "<message from='room@conference.localhost/nick' to='{ECHO}' id='g1' type='groupchat'>\
             <body>to the room</body></message>"
        ),
        // A chat state: no body key.
        format!(
            "<message from='alice@localhost/phone' to='{ECHO}' id='m2' type='chat'>\
             <composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
        ),
        format!(
            "<presence from='carol@localhost/laptop' to='{ECHO}' id='p1' type='unavailable'>\
             <status>gone</status></presence>"
        ),
        // Nothing but the addresses, to the bare domain.
        format!("<presence from='erin@localhost/desk' to='{DOMAIN}'/>"),
        iq(
            "get",
            "dave@localhost/desk",
            "echo@bot.localhost/default",
            "q1",
            "<query xmlns='urn:example:q'/>",
        ),
    ];
    for stanza in &stanzas {
        stack.conn.send(stanza).await;
    }
    let received = stack.hook.wait_requests(stanzas.len()).await;

    for request in &received {
        assert_eq!(
            request.header("content-type").as_deref(),
            Some("application/json"),
            "{:?}",
            request.raw
        );
        assert_valid(&requests, NAME, &request.json);
    }
    let kinds: Vec<&str> = received
        .iter()
        .filter_map(|request| request.field("kind"))
        .collect();
    for kind in ["message", "presence", "iq"] {
        assert!(kinds.contains(&kind), "no {kind} among {kinds:?}");
    }

    // The schema refuses what the bridge never sends.
    let by_id = |id: &str| {
        received
            .iter()
            .find(|request| request.field("id") == Some(id))
            .unwrap_or_else(|| panic!("no request for {id}"))
            .json
            .clone()
    };
    let message = by_id("m1");
    for key in ["kind", "to", "from", "stanza"] {
        let mut without = message.clone();
        without.as_object_mut().expect("an object").remove(key);
        assert_invalid(&requests, NAME, &without, &format!("`{key}` is required"));
    }
    let mut extra = message.clone();
    extra["thread"] = json!("t1");
    assert_invalid(&requests, NAME, &extra, "no other keys are sent");
    let mut null = message.clone();
    null["lang"] = Value::Null;
    assert_invalid(&requests, NAME, &null, "keys without a value are omitted");
    let mut unknown_kind = message;
    unknown_kind["kind"] = json!("telegram");
    assert_invalid(&requests, NAME, &unknown_kind, "kind is one of three");
    let mut presence_with_body = by_id("p1");
    presence_with_body["body"] = json!("hi");
    assert_invalid(
        &requests,
        NAME,
        &presence_with_body,
        "`body` is a message's field only",
    );
}

#[test]
fn the_reply_bodies_the_tests_answer_with_are_valid_against_the_reply_schema() {
    const NAME: &str = "webhook-reply";
    let replies = validator(NAME);

    // What the scripted echo bot and the example hooks answer.
    assert_valid(&replies, NAME, &json!({ "body": echo_text("hi") }));
    assert_valid(&replies, NAME, &json!({ "body": "You said: hi <&> ✓" }));

    // Those of tests/it/replies.rs and tests/e2e/responses.rs, which the bridge acts on.
    for reply in [
        json!({ "body": "r-chat" }),
        json!({ "kind": "message", "body": "r-kind" }),
        json!({
            "to": "carol@localhost", "from": "alias@bot.localhost",
            "type": "headline", "id": "given", "body": "r-explicit"
        }),
        json!({ "stanza": "<message type='headline'><body>s1</body></message>" }),
        json!({
            "stanza": "<message to='carol@localhost' from='alias@bot.localhost' id='s2-out'><body>s2</body></message>"
        }),
        json!({ "kind": "iq" }),
        json!({ "kind": "presence", "show": "away", "status": "out for lunch" }),
        json!({}),
    ] {
        assert_valid(&replies, NAME, &reply);
    }

    // Outside the schema: two replies the bridge treats as a hook error
    // (cancel/internal-server-error), a `show` RFC 6121 does not know, and a body that is not
    // an object.
    assert_invalid(
        &replies,
        NAME,
        &json!({ "kind": "telegram", "body": "x" }),
        "an unknown kind is a hook error",
    );
    assert_invalid(
        &replies,
        NAME,
        &json!({ "stanza": 42 }),
        "a stanza that is not a string is a hook error",
    );
    assert_invalid(
        &replies,
        NAME,
        &json!({ "kind": "presence", "show": "busy" }),
        "show is away, chat, dnd or xa",
    );
    assert_invalid(&replies, NAME, &json!(["body"]), "a reply is an object");
}
