//! Stanza → webhook request body: the JSON object of mod_component_http (`to`, `from`, `kind`,
//! `body`, `stanza`) plus `id`, `type` and `lang` (README, "The webhook contract"). Keys without a
//! value are omitted.
//!
//! The `stanza` field is the stanza's bytes as received: it is already XML without the stream's
//! namespace declaration, so nothing is serialised twice.

use serde::Serialize;

use crate::xmpp::stanza::Stanza;

#[derive(Debug, Serialize)]
pub struct HookRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) to: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) from: Option<&'a str>,
    pub(crate) kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) body: Option<&'a str>,
    pub(crate) stanza: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub(crate) type_: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) lang: Option<&'a str>,
}

impl<'a> HookRequest<'a> {
    pub fn of(stanza: &'a Stanza) -> Self {
        Self {
            to: stanza.to(),
            from: stanza.from(),
            kind: stanza.kind.as_str(),
            body: stanza.body(),
            stanza: &stanza.raw,
            id: stanza.id(),
            type_: stanza.type_(),
            lang: stanza.lang(),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serialising borrowed strings and options into a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::stanza::tests::stanza;

    #[test]
    fn message_maps_to_the_module_fields_plus_ours() {
        let s = stanza(
            "<message to='echo@bot.localhost' from='u@localhost/r' type='chat' id='m1' xml:lang='en'>\
             <body xml:lang='de'>Hallo</body><body>Hello &lt;&amp;&gt; \u{1F600}</body></message>",
        );
        let json: serde_json::Value =
            serde_json::from_slice(&HookRequest::of(&s).to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "to": "echo@bot.localhost",
                "from": "u@localhost/r",
                "kind": "message",
                "body": "Hello <&> \u{1F600}",
                "stanza": s.raw,
                "id": "m1",
                "type": "chat",
                "lang": "en",
            })
        );
        assert!(
            !json["stanza"]
                .as_str()
                .unwrap()
                .contains("jabber:component:accept")
        );
    }

    proptest::proptest! {
        /// Whatever text a message carries, the hook receives exactly that text as `body`.
        #[test]
        fn body_text_survives_the_round_trip(text in "[^\u{0}-\u{8}\u{b}\u{c}\u{e}-\u{1f}\u{fffe}\u{ffff}]{0,64}") {
            let xml = format!("<message to='a@bot' from='b@c'><body>{}</body></message>", crate::xmpp::write::escape_attr(&text));
            let s = stanza(&xml);
            let json: serde_json::Value = serde_json::from_slice(&HookRequest::of(&s).to_json()).unwrap();
            proptest::prop_assert_eq!(json["body"].as_str().unwrap(), text.as_str());
            proptest::prop_assert_eq!(json["stanza"].as_str().unwrap(), xml.as_str());
        }
    }

    #[test]
    fn first_body_when_all_have_a_language_and_absent_keys_are_omitted() {
        let s = stanza(
            "<message to='a@bot' from='b@c'><body xml:lang='fr'>Salut</body><body xml:lang='en'>Hi</body></message>",
        );
        let json: serde_json::Value =
            serde_json::from_slice(&HookRequest::of(&s).to_json()).unwrap();
        assert_eq!(json["body"], "Salut");
        let presence = stanza("<presence to='bot' from='b@c'/>");
        let json: serde_json::Value =
            serde_json::from_slice(&HookRequest::of(&presence).to_json()).unwrap();
        let keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["from", "kind", "stanza", "to"]);
    }
}
