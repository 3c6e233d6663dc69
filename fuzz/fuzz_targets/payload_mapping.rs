//! `payload_mapping`: stanza → webhook JSON. Arbitrary XML, alone or inside a message, presence
//! or iq template, is read like a stanza from the stream; each stanza it yields is mapped to the
//! hook's request body. It checks that the mapping never panics; that the body is a JSON object
//! whose `kind` is the stanza's kind, whose `stanza` is the stanza's raw text exactly, and whose
//! `to`, `from`, `id`, `type`, `lang` and `body` are the stanza's values (absent keys omitted,
//! never null); and that the raw text parses again to the same kind of stanza with the same
//! attributes, as the bridge relies on when it needs the element tree later.
//!
//! Input layout: byte 0 chooses the template; the rest (UTF-8) is the XML or the text put
//! inside the template.
#![no_main]

use component_http::bridge::payload::HookRequest;
use component_http::xmpp::codec::{ReadLimits, parse_stanza};
use component_http::xmpp::stanza::{Kind, Stanza};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const LIMITS: ReadLimits = ReadLimits {
    max_stanza_bytes: 2048,
    max_depth: 16,
};

fn xml(template: u8, text: &str) -> String {
    match template % 8 {
        0 | 1 => text.to_owned(),
        2 => format!(
            "<message to='echo@bot.localhost' from='u@localhost/r' type='chat' id='m1'>{text}</message>"
        ),
        3 => format!(
            "<message to='echo@bot.localhost' from='u@localhost/r' type='chat' id='m1'><body>{text}</body></message>"
        ),
        4 => format!("<presence to='bot.localhost' from='u@localhost/r'>{text}</presence>"),
        5 => format!("<iq to='bot.localhost' from='u@localhost/r' type='get' id='q1'>{text}</iq>"),
        6 => format!("<message {text}><body>hi</body></message>"),
        _ => format!(
            "<message to='a@bot.localhost' from='b@c' xml:lang='en'><body xml:lang='de'>Hallo</body>{text}</message>"
        ),
    }
}

/// The JSON value of an optional string field: a string, or absent (never null).
fn expect_field(object: &serde_json::Map<String, Value>, key: &str, value: Option<&str>) {
    match (object.get(key), value) {
        (None, None) => {}
        (Some(Value::String(got)), Some(want)) => {
            assert_eq!(got, want, "`{key}` differs from the stanza's value")
        }
        (got, want) => panic!("`{key}` is {got:?}, the stanza's value is {want:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&template, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let xml = xml(template, text);
    let Ok(read) = parse_stanza(&xml, LIMITS) else {
        return;
    };
    let name = read.element.name().to_owned();
    let Some(stanza) = Stanza::from_read(read) else {
        return;
    };
    assert_eq!(stanza.kind.as_str(), name);

    let json = HookRequest::of(&stanza).to_json();
    let value: Value = serde_json::from_slice(&json).expect("the hook's body is JSON");
    let Value::Object(object) = value else {
        panic!("the hook's body is not a JSON object: {value}");
    };
    assert_eq!(
        object.get("kind").and_then(Value::as_str),
        Some(stanza.kind.as_str()),
        "`kind`"
    );
    assert_eq!(
        object.get("stanza").and_then(Value::as_str),
        Some(stanza.raw.as_str()),
        "`stanza` is not the raw text"
    );
    expect_field(&object, "to", stanza.to());
    expect_field(&object, "from", stanza.from());
    expect_field(&object, "id", stanza.id());
    expect_field(&object, "type", stanza.type_());
    expect_field(&object, "lang", stanza.lang());
    expect_field(&object, "body", stanza.body());
    if stanza.kind != Kind::Message {
        assert!(object.get("body").is_none(), "only a message has a body");
    }
    for key in object.keys() {
        assert!(
            matches!(
                key.as_str(),
                "to" | "from" | "kind" | "body" | "stanza" | "id" | "type" | "lang"
            ),
            "unexpected key {key:?}"
        );
    }

    // The raw text is a stanza on its own: the bridge parses it again for the element tree.
    let raw = &stanza.raw;
    let again = parse_stanza(raw, LIMITS)
        .unwrap_or_else(|e| panic!("the raw text {raw:?} of {xml:?} does not parse again: {e}"));
    let again = Stanza::from_read(again)
        .unwrap_or_else(|| panic!("the raw text {raw:?} of {xml:?} is no stanza again"));
    assert_eq!(again.kind, stanza.kind);
    assert_eq!(again.raw, stanza.raw);
    assert_eq!(again.to(), stanza.to());
    assert_eq!(again.from(), stanza.from());
    assert_eq!(again.id(), stanza.id());
    assert_eq!(again.type_(), stanza.type_());
    assert_eq!(again.body(), stanza.body());
    let tree = stanza
        .tree()
        .unwrap_or_else(|| panic!("Stanza::tree is None for the raw text {raw:?}"));
    assert_eq!(tree.name(), stanza.kind.as_str());
});
