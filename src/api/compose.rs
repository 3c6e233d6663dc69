//! An API request's body → the stanza it asks for, and an iq answer → its JSON. Pure: it neither
//! checks who may send (that is [`super::auth`]'s) nor sends.
//!
//! JSON takes the fields of a hook's JSON reply (README, "How the response becomes the reply"):
//! `kind` (default `message`), `to`, `from`, `type`, `id`, `body`, `subject`, `thread`,
//! `payload` (iq: XML of one child element), `error` (iq error: `type`, `condition`, `text`), or
//! `stanza` (a whole stanza as XML). XML goes through the same restricted, bounded reader as the
//! server's stream.

use minidom::Element;
use serde::{Deserialize, Serialize};

use crate::xmpp::codec::{self, NS_COMPONENT, ReadLimits};
use crate::xmpp::stanza::{ErrorType, Kind, NS_STANZAS, Stanza, StanzaError, ncname};

/// What is wrong with a request body: `Syntax` is a `400`, `Invalid` a `422`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ComposeError {
    #[error("{0}")]
    Syntax(String),
    #[error("{0}")]
    Invalid(String),
}

/// The JSON form of a stanza to send.
#[derive(Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"to": "alice@localhost", "from": "alerts", "type": "chat", "body": "disk full on db1"}))]
pub(crate) struct StanzaRequest {
    /// `message` (default), `presence` or `iq`.
    pub(crate) kind: Option<String>,
    pub(crate) to: Option<String>,
    /// A localpart, or a bare or full JID of the component's domain; default: the token's
    /// first localpart without `*`.
    pub(crate) from: Option<String>,
    #[serde(rename = "type")]
    pub(crate) type_: Option<String>,
    /// Generated when absent.
    pub(crate) id: Option<String>,
    pub(crate) body: Option<String>,
    pub(crate) subject: Option<String>,
    pub(crate) thread: Option<String>,
    /// iq: the XML of its one child element.
    pub(crate) payload: Option<String>,
    /// iq `error`: the error to send.
    pub(crate) error: Option<ErrorRequest>,
    /// A whole stanza as XML; no other field may be set with it.
    pub(crate) stanza: Option<String>,
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ErrorRequest {
    /// `cancel`, `modify`, `auth`, `wait` (default `cancel`).
    #[serde(rename = "type")]
    pub(crate) type_: Option<String>,
    /// A defined condition of RFC 6120 §8.3.3, e.g. `item-not-found`.
    pub(crate) condition: String,
    pub(crate) text: Option<String>,
}

/// The answer to an iq sent through the API.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct IqAnswer {
    pub(crate) kind: &'static str,
    /// `result` or `error`.
    #[serde(rename = "type")]
    pub(crate) type_: String,
    pub(crate) from: Option<String>,
    pub(crate) to: Option<String>,
    pub(crate) id: Option<String>,
    /// The result's child element as XML.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) payload: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<ErrorAnswer>,
    /// The whole answer as XML.
    pub(crate) stanza: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorAnswer {
    #[serde(rename = "type")]
    pub(crate) type_: Option<String>,
    pub(crate) condition: Option<String>,
    pub(crate) text: Option<String>,
}

/// The stanza a JSON body asks for; `from` is left as given (the caller resolves it).
pub(crate) fn from_json(body: &[u8], limits: ReadLimits) -> Result<Element, ComposeError> {
    let request: StanzaRequest = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ComposeError::Invalid(format!("the JSON does not describe a stanza: {e}"))
        } else {
            ComposeError::Syntax(format!("the body is not valid JSON: {e}"))
        }
    })?;
    from_request(request, limits)
}

pub(crate) fn from_request(
    request: StanzaRequest,
    limits: ReadLimits,
) -> Result<Element, ComposeError> {
    if let Some(xml) = &request.stanza {
        let only_stanza = StanzaRequest {
            stanza: request.stanza.clone(),
            ..StanzaRequest::default()
        };
        if serde_json::to_value(&request).ok() != serde_json::to_value(&only_stanza).ok() {
            return Err(invalid(
                "`stanza` carries the whole stanza; set its attributes and children in the XML, not in other fields",
            ));
        }
        return from_xml(xml, limits);
    }
    let kind = match request.kind.as_deref() {
        None => Kind::Message,
        Some(name) => Kind::parse(name)
            .ok_or_else(|| invalid("`kind` must be \"message\", \"presence\" or \"iq\""))?,
    };
    let to = request
        .to
        .as_deref()
        .filter(|to| !to.is_empty())
        .ok_or_else(|| invalid("`to` is required: the JID to send to"))?;
    let mut element = Element::bare(kind.as_str(), NS_COMPONENT);
    let id = request.id.clone().unwrap_or_else(new_id);
    for (name, value) in [
        ("to", Some(to)),
        ("from", request.from.as_deref()),
        ("id", Some(id.as_str())),
        ("type", request.type_.as_deref()),
    ] {
        if let Some(value) = value {
            element.set_attr(rxml::Namespace::NONE, ncname(name), value);
        }
    }
    match kind {
        Kind::Message => {
            for (name, value) in [
                ("subject", &request.subject),
                ("body", &request.body),
                ("thread", &request.thread),
            ] {
                if let Some(text) = value {
                    element.append_child(text_child(name, text));
                }
            }
            refuse_fields(&request, &["payload", "error"], "message")?;
        }
        Kind::Presence => {
            if let Some(status) = &request.body {
                element.append_child(text_child("status", status));
            }
            refuse_fields(
                &request,
                &["payload", "error", "subject", "thread"],
                "presence",
            )?;
        }
        Kind::Iq => {
            refuse_fields(&request, &["body", "subject", "thread"], "iq")?;
            let type_ = request.type_.as_deref().unwrap_or_default();
            let payload = match &request.payload {
                // The payload sits one level below the iq, so it may nest one level less.
                Some(xml) => Some(
                    codec::parse_stanza(xml, limits.nested_one_level())
                        .map_err(|e| invalid(format!("`payload` is not acceptable XML: {e}")))?
                        .element,
                ),
                None => None,
            };
            match type_ {
                "get" | "set" if payload.is_none() => {
                    return Err(invalid(
                        "an iq get or set needs `payload`: the XML of its one child element",
                    ));
                }
                "get" | "set" | "result" => {}
                "error" => {
                    let error = request
                        .error
                        .as_ref()
                        .ok_or_else(|| invalid("an iq error needs `error` with its `condition`"))?;
                    element.append_child(error_element(error)?);
                }
                _ => {
                    return Err(invalid(
                        "an iq needs `type`: \"get\", \"set\", \"result\" or \"error\"",
                    ));
                }
            }
            if let Some(payload) = payload {
                element.append_child(payload);
            }
        }
    }
    Ok(element)
}

/// A whole stanza as XML (`stanza` field or `application/xmpp+xml`); an id is added if missing.
pub(crate) fn from_xml(xml: &str, limits: ReadLimits) -> Result<Element, ComposeError> {
    let mut element = codec::parse_stanza(xml, limits)
        .map_err(|e| invalid(format!("the stanza is not acceptable XML: {e}")))?
        .element;
    if Kind::of(&element).is_none() {
        return Err(invalid(
            "the XML is not a stanza: <message/>, <presence/> or <iq/> in jabber:component:accept",
        ));
    }
    if element.attr("id").is_none() {
        element.set_attr(rxml::Namespace::NONE, ncname("id"), new_id());
    }
    Ok(element)
}

/// The JSON of an iq's answer.
pub(crate) fn iq_answer(stanza: &Stanza) -> IqAnswer {
    let tree = stanza.tree();
    let child = |name: &str| {
        tree.as_ref()
            .and_then(|t| t.children().find(|c| c.name() == name))
            .cloned()
    };
    let error = child("error").map(|error| ErrorAnswer {
        type_: error.attr("type").map(str::to_owned),
        condition: error
            .children()
            .find(|c| c.ns() == NS_STANZAS && c.name() != "text")
            .map(|c| c.name().to_owned()),
        text: error.get_child("text", NS_STANZAS).map(|t| t.text()),
    });
    let payload = tree
        .as_ref()
        .and_then(|t| t.children().find(|c| c.name() != "error"))
        .map(String::from);
    IqAnswer {
        kind: "iq",
        type_: stanza.type_().unwrap_or_default().to_owned(),
        from: stanza.from().map(str::to_owned),
        to: stanza.to().map(str::to_owned),
        id: stanza.id().map(str::to_owned),
        payload,
        error,
        stanza: stanza.raw.clone(),
    }
}

fn error_element(error: &ErrorRequest) -> Result<Element, ComposeError> {
    let type_ = match error.type_.as_deref() {
        None => ErrorType::Cancel,
        Some("cancel") => ErrorType::Cancel,
        Some("modify") => ErrorType::Modify,
        Some("auth") => ErrorType::Auth,
        Some("wait") => ErrorType::Wait,
        Some(_) => {
            return Err(invalid(
                "`error.type` must be \"cancel\", \"modify\", \"auth\" or \"wait\"",
            ));
        }
    };
    let condition = DEFINED_CONDITIONS
        .iter()
        .find(|c| **c == error.condition)
        .ok_or_else(|| {
            invalid(format!(
                "`error.condition` must be a defined condition of RFC 6120 §8.3.3, e.g. \"item-not-found\"; one of: {}",
                DEFINED_CONDITIONS.join(", ")
            ))
        })?;
    let mut stanza_error = StanzaError::new(type_, condition);
    if let Some(text) = &error.text {
        stanza_error = stanza_error.with_text(text.clone());
    }
    Ok(stanza_error.to_element(None))
}

/// RFC 6120 §8.3.3.
const DEFINED_CONDITIONS: &[&str] = &[
    "bad-request",
    "conflict",
    "feature-not-implemented",
    "forbidden",
    "gone",
    "internal-server-error",
    "item-not-found",
    "jid-malformed",
    "not-acceptable",
    "not-allowed",
    "not-authorized",
    "policy-violation",
    "recipient-unavailable",
    "redirect",
    "registration-required",
    "remote-server-not-found",
    "remote-server-timeout",
    "resource-constraint",
    "service-unavailable",
    "subscription-required",
    "undefined-condition",
    "unexpected-request",
];

fn refuse_fields(request: &StanzaRequest, fields: &[&str], kind: &str) -> Result<(), ComposeError> {
    let set = |field: &str| match field {
        "payload" => request.payload.is_some(),
        "error" => request.error.is_some(),
        "subject" => request.subject.is_some(),
        "thread" => request.thread.is_some(),
        "body" => request.body.is_some(),
        _ => false,
    };
    match fields.iter().find(|f| set(f)) {
        Some(field) => Err(invalid(format!("`{field}` does not apply to a {kind}"))),
        None => Ok(()),
    }
}

fn text_child(name: &str, text: &str) -> Element {
    Element::builder(name, NS_COMPONENT).append(text).build()
}

fn invalid(message: impl Into<String>) -> ComposeError {
    ComposeError::Invalid(message.into())
}

/// A fresh stanza id.
fn new_id() -> String {
    format!("api-{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(body: &str) -> Result<Element, ComposeError> {
        from_json(body.as_bytes(), ReadLimits::default())
    }

    #[test]
    fn a_message_gets_its_fields_and_an_id() {
        let element = json(
            r#"{"to":"alice@example.org","body":"disk full","type":"headline","thread":"t1"}"#,
        )
        .unwrap();
        assert_eq!(element.name(), "message");
        assert_eq!(element.attr("to"), Some("alice@example.org"));
        assert_eq!(element.attr("type"), Some("headline"));
        assert!(element.attr("id").unwrap().starts_with("api-"));
        assert_eq!(
            element.get_child("body", NS_COMPONENT).unwrap().text(),
            "disk full"
        );
        assert_eq!(
            element.get_child("thread", NS_COMPONENT).unwrap().text(),
            "t1"
        );
    }

    #[test]
    fn iq_needs_a_type_and_get_needs_a_payload() {
        let ping = json(r#"{"kind":"iq","type":"get","to":"example.org","payload":"<ping xmlns='urn:xmpp:ping'/>"}"#)
            .unwrap();
        assert!(ping.has_child("ping", "urn:xmpp:ping"));
        for body in [
            r#"{"kind":"iq","to":"x@example.org"}"#,
            r#"{"kind":"iq","type":"get","to":"x@example.org"}"#,
            r#"{"kind":"iq","type":"error","to":"x@example.org"}"#,
            r#"{"kind":"iq","type":"error","to":"x@example.org","error":{"condition":"made-up"}}"#,
            r#"{"kind":"iq","type":"result","to":"x@example.org","body":"no"}"#,
        ] {
            assert!(
                matches!(json(body), Err(ComposeError::Invalid(_))),
                "{body}"
            );
        }
        let error = json(r#"{"kind":"iq","type":"error","to":"x@example.org","id":"q1","error":{"type":"wait","condition":"item-not-found","text":"gone"}}"#)
            .unwrap();
        let child = error.get_child("error", NS_COMPONENT).unwrap();
        assert_eq!(child.attr("type"), Some("wait"));
        assert!(child.has_child("item-not-found", NS_STANZAS));
    }

    #[test]
    fn malformed_bodies_are_told_apart_from_wrong_ones() {
        assert!(matches!(json("{"), Err(ComposeError::Syntax(_))));
        assert!(matches!(json("[1]"), Err(ComposeError::Invalid(_))));
        assert!(
            matches!(json(r#"{"to":"a@b","bdy":"x"}"#), Err(ComposeError::Invalid(m)) if m.contains("bdy"))
        );
        assert!(
            matches!(json(r#"{"body":"x"}"#), Err(ComposeError::Invalid(m)) if m.contains("`to`"))
        );
        assert!(matches!(
            json(r#"{"kind":"mesage","to":"a@b"}"#),
            Err(ComposeError::Invalid(_))
        ));
    }

    #[test]
    fn a_whole_stanza_goes_through_the_restricted_reader_alone() {
        let element = json(r#"{"stanza":"<message to='a@b'><body>hi</body></message>"}"#).unwrap();
        assert_eq!(element.attr("to"), Some("a@b"));
        assert!(element.attr("id").is_some());
        assert!(matches!(
            json(r#"{"stanza":"<message to='a@b'/>","body":"x"}"#),
            Err(ComposeError::Invalid(_))
        ));
        for xml in [
            "<message to='a@b'><body>hi</body></message><message/>",
            "<!DOCTYPE x><message/>",
            "</stream:stream>",
            "<foo xmlns='bar'/>",
            "<message to='a@b'>",
        ] {
            assert!(
                matches!(
                    from_xml(xml, ReadLimits::default()),
                    Err(ComposeError::Invalid(_))
                ),
                "{xml}"
            );
        }
    }
}
