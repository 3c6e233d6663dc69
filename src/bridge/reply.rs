//! Webhook outcome → what to send back (README, "How the response becomes the reply", rules 1 to
//! 5), including the HTTP status → stanza error table.
//!
//! Pure: it decides, it does not send. The caller checks the chosen stanza with
//! [`crate::xmpp::stanza::Outbound::check`] and logs the warning with the hook's URL.

use minidom::Element;
use serde_json::{Map, Value};

use crate::limits;
use crate::logging::excerpt;
use crate::webhook::outcome::HookOutcome;
use crate::xmpp::codec::{self, NS_COMPONENT, ReadLimits};
use crate::xmpp::stanza::{ErrorType, Kind, Stanza, StanzaError, bare, ncname, xml_safe};

/// What the bridge does about one forwarded stanza.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nothing is sent.
    Nothing,
    /// This stanza is sent (after the outbound checks).
    Send(Element),
    /// This error is sent to the original sender.
    Bounce(StanzaError),
    /// A forwarded iq the hook accepted with 202: it answers later, else `iq_timeout` bounces it.
    AnswerLater,
}

/// A decision plus, when the hook misbehaved, why (logged with the URL and status).
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub decision: Decision,
    pub(crate) warning: Option<String>,
}

impl Verdict {
    fn ok(decision: Decision) -> Self {
        Self {
            decision,
            warning: None,
        }
    }
    fn warn(decision: Decision, warning: impl Into<String>) -> Self {
        Self {
            decision,
            warning: Some(warning.into()),
        }
    }
}

/// The media types the rules distinguish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Media {
    Json,
    Xmpp,
    Text,
    Other,
}

fn media_of(content_type: Option<&str>) -> Media {
    let Some(mime) = content_type.and_then(|ct| ct.parse::<mime::Mime>().ok()) else {
        return Media::Other;
    };
    let (type_, subtype) = (mime.type_().as_str(), mime.subtype().as_str());
    let suffix = mime.suffix().map(|s| s.as_str());
    match (type_, subtype, suffix) {
        ("application", "json", _) | ("application", _, Some("json")) => Media::Json,
        ("application", "xmpp", Some("xml")) => Media::Xmpp,
        ("text", "plain", _) => Media::Text,
        _ => Media::Other,
    }
}

/// Decides the reply to `original` given the hook's outcome.
pub fn decide(original: &Stanza, outcome: &HookOutcome, limits: ReadLimits) -> Verdict {
    // Rule 1: errors and iq results are never answered, whatever the hook says.
    if original.must_not_be_answered() {
        return Verdict::ok(Decision::Nothing);
    }
    let (status, content_type, body) = match outcome {
        HookOutcome::ConnectFailure(reason) => {
            return Verdict::warn(
                Decision::Bounce(
                    StanzaError::new(ErrorType::Cancel, "remote-server-timeout")
                        .with_text("Connection failure"),
                ),
                format!("cannot reach the hook: {reason}"),
            );
        }
        HookOutcome::Timeout => {
            return Verdict::warn(
                Decision::Bounce(
                    StanzaError::new(ErrorType::Wait, "remote-server-timeout").with_text("Timeout"),
                ),
                "the hook did not answer in time",
            );
        }
        HookOutcome::Malformed(reason) => {
            return Verdict::warn(
                Decision::Bounce(
                    StanzaError::internal_server_error()
                        .with_text("The hook's response is malformed"),
                ),
                format!("the hook's response is malformed: {reason}"),
            );
        }
        HookOutcome::ResponseTooLarge { status, .. } if (200..300).contains(status) => {
            return unusable(original, "the response body exceeds max_response_bytes");
        }
        HookOutcome::ResponseTooLarge { status, .. } => return bounce_status(*status, None),
        HookOutcome::Response {
            status,
            content_type,
            body,
            ..
        } => (*status, content_type.as_deref(), body),
    };
    let media = media_of(content_type);
    match status {
        // Rule 2.
        200 | 201 if media == Media::Json => json_reply(original, body, limits),
        // Rule 3.
        200 | 201 if media == Media::Xmpp => match std::str::from_utf8(body) {
            Ok(xml) if !xml.trim().is_empty() => stanza_reply(original, xml, limits),
            _ => unusable(
                original,
                "the application/xmpp+xml body is empty or not UTF-8",
            ),
        },
        // Rule 4.
        202 if is_request_iq(original) => Verdict::ok(Decision::AnswerLater),
        200..=299 if is_request_iq(original) => {
            Verdict::ok(Decision::Send(iq_result(original, None)))
        }
        200..=299 => Verdict::ok(Decision::Nothing),
        // Rule 5.
        _ => {
            let text = (media == Media::Text && body.len() <= limits::ERROR_TEXT_MAX_BYTES)
                .then(|| std::str::from_utf8(body).ok())
                .flatten()
                .map(|t| xml_safe(t.trim()).into_owned())
                .filter(|t| !t.is_empty());
            bounce_status(status, text)
        }
    }
}

fn bounce_status(status: u16, text: Option<String>) -> Verdict {
    let mut error = error_for_status(status);
    if text.is_some() {
        error.text = text;
    }
    Verdict::warn(
        Decision::Bounce(error),
        format!("the hook answered HTTP {status}"),
    )
}

fn is_request_iq(stanza: &Stanza) -> bool {
    stanza.kind == Kind::Iq && matches!(stanza.type_(), Some("get" | "set"))
}

/// No usable reply: nothing for messages and presence, `internal-server-error` for an iq.
fn unusable(original: &Stanza, why: &str) -> Verdict {
    let decision = if original.kind == Kind::Iq {
        Decision::Bounce(StanzaError::internal_server_error())
    } else {
        Decision::Nothing
    };
    Verdict::warn(decision, format!("no reply sent: {why}"))
}

/// The hook's mistake (unknown kind, invalid `stanza`): answered like a hook error.
fn hook_error(why: String) -> Verdict {
    Verdict::warn(Decision::Bounce(StanzaError::internal_server_error()), why)
}

fn json_reply(original: &Stanza, body: &[u8], limits: ReadLimits) -> Verdict {
    // Some frameworks start UTF-8 JSON with a byte order mark, which JSON parsers may ignore
    // (RFC 8259 §8.1).
    let body = body.strip_prefix("\u{feff}".as_bytes()).unwrap_or(body);
    let object = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => object,
        Ok(_) => return unusable(original, "the JSON response is not an object"),
        Err(e) if body.iter().all(u8::is_ascii_whitespace) => {
            let _ = e;
            return unusable(original, "the JSON response is empty");
        }
        Err(e) => return unusable(original, &format!("the JSON response is invalid ({e})")),
    };
    if let Some(xml) = object.get("stanza") {
        return match xml.as_str() {
            Some(xml) => stanza_reply(original, xml, limits),
            None => hook_error("the `stanza` field is not a string".into()),
        };
    }
    let kind = match field(&object, "kind") {
        None => None,
        Some(name) => match Kind::parse(name) {
            Some(kind) => Some(kind),
            None => {
                return hook_error(format!(
                    "the reply's `kind` \"{}\" is not message, presence or iq",
                    excerpt(name)
                ));
            }
        },
    };
    match kind {
        Some(Kind::Iq) => iq_reply(original, &object, limits),
        Some(Kind::Presence) => Verdict::ok(Decision::Send(presence_reply(original, &object))),
        Some(Kind::Message) | None => {
            if field(&object, "body").is_none() && field(&object, "subject").is_none() {
                return unusable(
                    original,
                    "the JSON response has no `body`, `subject`, `kind` or `stanza`",
                );
            }
            Verdict::ok(Decision::Send(message_reply(original, &object)))
        }
    }
}

/// A string field of the hook's JSON object. Its text is used as given: a character XML
/// forbids makes the outbound check refuse the whole reply, with a warning, rather than
/// silently sending something the hook did not write.
fn field<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    object.get(key).and_then(Value::as_str)
}

fn text_child(name: &str, text: &str) -> Element {
    Element::builder(name, NS_COMPONENT).append(text).build()
}

/// Starts a reply element with `to`, `from` and `id` taken from the object or defaulted from
/// the original (addresses swapped, id copied).
fn reply_base(
    name: &str,
    original: &Stanza,
    object: &Map<String, Value>,
    default_to: Option<String>,
) -> Element {
    let mut element = Element::bare(name, NS_COMPONENT);
    let fields = [
        (
            "to",
            field(object, "to")
                .map(str::to_owned)
                .or(default_to)
                .or_else(|| original.from().map(str::to_owned)),
        ),
        (
            "from",
            field(object, "from")
                .or_else(|| original.to())
                .map(str::to_owned),
        ),
        (
            "id",
            field(object, "id")
                .or_else(|| original.id())
                .map(str::to_owned),
        ),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            element.set_attr(rxml::Namespace::NONE, ncname(name), value);
        }
    }
    element
}

fn message_reply(original: &Stanza, object: &Map<String, Value>) -> Element {
    let groupchat = original.kind == Kind::Message && original.type_() == Some("groupchat");
    let room = groupchat.then(|| original.from().and_then(bare)).flatten();
    let mut element = reply_base("message", original, object, room);
    let type_ = field(object, "type").unwrap_or(if groupchat { "groupchat" } else { "chat" });
    element.set_attr(rxml::Namespace::NONE, ncname("type"), type_);
    for key in ["subject", "body"] {
        if let Some(text) = field(object, key) {
            element.append_child(text_child(key, text));
        }
    }
    element
}

fn presence_reply(original: &Stanza, object: &Map<String, Value>) -> Element {
    let mut element = reply_base("presence", original, object, None);
    if let Some(type_) = field(object, "type") {
        element.set_attr(rxml::Namespace::NONE, ncname("type"), type_);
    }
    for (key, child) in [("show", "show"), ("body", "status"), ("status", "status")] {
        if let Some(text) = field(object, key) {
            element.append_child(text_child(child, text));
        }
    }
    element
}

/// `kind = "iq"`: a `result` to the original iq (same id), with the optional `payload` field
/// (XML of one child element) inside.
fn iq_reply(original: &Stanza, object: &Map<String, Value>, limits: ReadLimits) -> Verdict {
    if !is_request_iq(original) {
        return hook_error(
            "the reply's kind is \"iq\" but the original stanza is not an iq get or set".into(),
        );
    }
    let payload = match object.get("payload") {
        None => None,
        // The payload sits one level below the iq, so it may nest one level less.
        Some(Value::String(xml)) => match codec::parse_stanza(xml, limits.nested_one_level()) {
            Ok(read) => Some(read.element),
            Err(e) => return hook_error(format!("the reply's `payload` is not XML: {e}")),
        },
        Some(_) => return hook_error("the reply's `payload` is not a string".into()),
    };
    Verdict::ok(Decision::Send(iq_result(original, payload)))
}

/// An iq `result` to `original`, optionally carrying `payload`.
pub(crate) fn iq_result(original: &Stanza, payload: Option<Element>) -> Element {
    let mut result = original.reply_builder("iq", "result");
    if let Some(payload) = payload {
        result = result.append(payload);
    }
    result.build()
}

/// A complete stanza from the hook (`stanza` field or `application/xmpp+xml`): missing `to` and
/// `from` are filled with the swapped originals.
fn stanza_reply(original: &Stanza, xml: &str, limits: ReadLimits) -> Verdict {
    let mut element = match codec::parse_stanza(xml, limits) {
        Ok(read) => read.element,
        Err(e) => return hook_error(format!("the reply stanza is not acceptable XML: {e}")),
    };
    for (name, value) in [("to", original.from()), ("from", original.to())] {
        if element.attr(name).is_none()
            && let Some(value) = value
        {
            element.set_attr(rxml::Namespace::NONE, ncname(name), value);
        }
    }
    Verdict::ok(Decision::Send(element))
}

/// The table of the README's "How the response becomes the reply": HTTP status → stanza error.
pub(crate) fn error_for_status(status: u16) -> StanzaError {
    use ErrorType::*;
    let (type_, condition, text) = match status {
        300..=399 => (Cancel, "service-unavailable", None),
        400 | 411 | 416 | 422 => (Modify, "bad-request", None),
        401 => (Auth, "not-authorized", None),
        402 => (Auth, "forbidden", Some("Payment required")),
        403 | 451 => (Auth, "forbidden", None),
        404 => (Cancel, "item-not-found", None),
        405 => (Cancel, "not-allowed", None),
        406 => (Modify, "not-acceptable", None),
        408 => (Wait, "remote-server-timeout", None),
        409 | 412 => (Cancel, "conflict", None),
        410 => (Cancel, "gone", None),
        413 | 414 | 431 => (Modify, "resource-constraint", None),
        415 => (Cancel, "feature-not-implemented", None),
        423 | 429 => (Wait, "resource-constraint", Some("Too many requests")),
        500 => (Cancel, "internal-server-error", None),
        501 => (Cancel, "feature-not-implemented", None),
        502 => (Cancel, "remote-server-timeout", Some("Bad gateway")),
        503 => (
            Wait,
            "remote-server-timeout",
            Some("Service temporarily unavailable"),
        ),
        504 => (Wait, "remote-server-timeout", Some("Gateway timeout")),
        _ => (Cancel, "service-unavailable", None),
    };
    StanzaError {
        type_,
        condition,
        text: text.map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::stanza::NS_STANZAS;
    use crate::xmpp::stanza::tests::stanza;
    use bytes::Bytes;

    fn chat() -> Stanza {
        stanza(
            "<message to='echo@bot.localhost' from='u@localhost/r' type='chat' id='m1'><body>hi</body></message>",
        )
    }

    fn iq_get() -> Stanza {
        stanza(
            "<iq to='echo@bot.localhost' from='u@localhost/r' type='get' id='q1'><query xmlns='urn:x'/></iq>",
        )
    }

    fn response(status: u16, content_type: &str, body: &str) -> HookOutcome {
        HookOutcome::Response {
            status,
            content_type: (!content_type.is_empty()).then(|| content_type.to_owned()),
            body: Bytes::copy_from_slice(body.as_bytes()),
            retry_after: None,
        }
    }

    fn sent(verdict: Verdict) -> Element {
        match verdict.decision {
            Decision::Send(element) => element,
            other => panic!("expected a reply, got {other:?} ({:?})", verdict.warning),
        }
    }

    fn body_of(element: &Element) -> String {
        element
            .get_child("body", NS_COMPONENT)
            .map(|b| b.text())
            .unwrap_or_default()
    }

    #[test]
    fn echo_bot_reply_gets_the_defaults() {
        let reply = sent(decide(
            &chat(),
            &response(200, "application/json", r#"{"body":"Did you say hi?"}"#),
            ReadLimits::default(),
        ));
        assert_eq!(reply.name(), "message");
        assert_eq!(reply.attr("to"), Some("u@localhost/r"));
        assert_eq!(reply.attr("from"), Some("echo@bot.localhost"));
        assert_eq!(reply.attr("type"), Some("chat"));
        assert_eq!(reply.attr("id"), Some("m1"));
        assert_eq!(body_of(&reply), "Did you say hi?");
    }

    #[test]
    fn json_media_types_with_parameters_and_suffixes() {
        for ct in [
            "application/json; charset=utf-8",
            "Application/JSON;charset=UTF-8",
            "application/vnd.bot+json",
        ] {
            let reply = sent(decide(
                &chat(),
                &response(201, ct, r#"{"body":"x"}"#),
                ReadLimits::default(),
            ));
            assert_eq!(body_of(&reply), "x", "{ct}");
        }
        let verdict = decide(
            &chat(),
            &response(200, "text/html", r#"{"body":"x"}"#),
            ReadLimits::default(),
        );
        assert_eq!(verdict.decision, Decision::Nothing);
    }

    #[test]
    fn explicit_fields_override_defaults() {
        let reply = sent(decide(
            &chat(),
            &response(
                200,
                "application/json",
                r#"{"body":"b","to":"x@localhost","from":"other@bot.localhost","type":"normal","id":"r1","subject":"s"}"#,
            ),
            ReadLimits::default(),
        ));
        assert_eq!(reply.attr("to"), Some("x@localhost"));
        assert_eq!(reply.attr("from"), Some("other@bot.localhost"));
        assert_eq!(reply.attr("type"), Some("normal"));
        assert_eq!(reply.attr("id"), Some("r1"));
        assert_eq!(
            reply.get_child("subject", NS_COMPONENT).unwrap().text(),
            "s"
        );
    }

    #[test]
    fn groupchat_reply_goes_to_the_room() {
        let original = stanza(
            "<message to='bot.localhost' from='room@muc.localhost/nick' type='groupchat'><body>hi</body></message>",
        );
        let reply = sent(decide(
            &original,
            &response(200, "application/json", r#"{"body":"yo"}"#),
            ReadLimits::default(),
        ));
        assert_eq!(reply.attr("to"), Some("room@muc.localhost"));
        assert_eq!(reply.attr("type"), Some("groupchat"));
    }

    #[test]
    fn stanza_field_and_xmpp_xml_fill_missing_addresses() {
        let json = r#"{"stanza":"<message type='headline'><body>raw</body></message>"}"#;
        let reply = sent(decide(
            &chat(),
            &response(200, "application/json", json),
            ReadLimits::default(),
        ));
        assert_eq!(reply.attr("to"), Some("u@localhost/r"));
        assert_eq!(reply.attr("from"), Some("echo@bot.localhost"));
        assert_eq!(reply.attr("type"), Some("headline"));
        let xml = "<message to='z@localhost' from='echo@bot.localhost'><body>x</body></message>";
        let reply = sent(decide(
            &chat(),
            &response(200, "application/xmpp+xml", xml),
            ReadLimits::default(),
        ));
        assert_eq!(reply.attr("to"), Some("z@localhost"));
        let bad = decide(
            &chat(),
            &response(200, "application/xmpp+xml", "<message>"),
            ReadLimits::default(),
        );
        assert!(
            matches!(bad.decision, Decision::Bounce(ref e) if e.condition == "internal-server-error")
        );
    }

    #[test]
    fn iq_kind_builds_a_result() {
        let json = r#"{"kind":"iq","payload":"<query xmlns='urn:x'><item/></query>"}"#;
        let reply = sent(decide(
            &iq_get(),
            &response(200, "application/json", json),
            ReadLimits::default(),
        ));
        assert_eq!(reply.attr("type"), Some("result"));
        assert_eq!(reply.attr("id"), Some("q1"));
        assert_eq!(reply.attr("to"), Some("u@localhost/r"));
        assert!(
            reply
                .get_child("query", "urn:x")
                .unwrap()
                .has_child("item", "urn:x")
        );
        let verdict = decide(
            &chat(),
            &response(200, "application/json", r#"{"kind":"iq"}"#),
            ReadLimits::default(),
        );
        assert!(matches!(verdict.decision, Decision::Bounce(_)));
    }

    #[test]
    fn an_iq_payload_may_nest_one_level_less_than_max_depth() {
        let limits = ReadLimits {
            max_depth: 3,
            ..ReadLimits::default()
        };
        let depth_of = |element: &Element| {
            fn depth(element: &Element) -> usize {
                1 + element.children().map(depth).max().unwrap_or(0)
            }
            depth(element)
        };
        let fits = r#"{"kind":"iq","payload":"<a xmlns='urn:x'><b/></a>"}"#;
        let reply = sent(decide(
            &iq_get(),
            &response(200, "application/json", fits),
            limits,
        ));
        assert_eq!(depth_of(&reply), 3);
        let deeper = r#"{"kind":"iq","payload":"<a xmlns='urn:x'><b><c/></b></a>"}"#;
        let verdict = decide(
            &iq_get(),
            &response(200, "application/json", deeper),
            limits,
        );
        assert!(
            matches!(verdict.decision, Decision::Bounce(ref e) if e.condition == "internal-server-error"),
            "a payload that makes the iq deeper than max_depth is refused, got {:?}",
            verdict.decision
        );
    }

    #[test]
    fn a_character_xml_forbids_makes_the_reply_refused_not_altered() {
        let reply = sent(decide(
            &chat(),
            &response(200, "application/json", r#"{"body":"a\u0001b"}"#),
            ReadLimits::default(),
        ));
        assert_eq!(body_of(&reply), "a\u{1}b");
        let refused = crate::xmpp::stanza::Outbound::check(reply, "bot.localhost", 4096);
        assert_eq!(
            refused.unwrap_err(),
            crate::xmpp::stanza::OutboundError::InvalidCharacter(1)
        );
    }

    #[test]
    fn unknown_kind_is_a_hook_error() {
        let verdict = decide(
            &chat(),
            &response(200, "application/json", r#"{"kind":"fax","body":"x"}"#),
            ReadLimits::default(),
        );
        assert!(
            matches!(verdict.decision, Decision::Bounce(ref e) if e.condition == "internal-server-error")
        );
        assert!(verdict.warning.unwrap().contains("fax"));
    }

    #[test]
    fn unusable_bodies_reply_nothing_to_messages_and_an_error_to_iqs() {
        for body in ["", "{}", "not json", "[1]", r#"{"to":"x@y"}"#] {
            let verdict = decide(
                &chat(),
                &response(200, "application/json", body),
                ReadLimits::default(),
            );
            assert_eq!(verdict.decision, Decision::Nothing, "{body:?}");
            assert!(verdict.warning.is_some(), "{body:?}");
            let verdict = decide(
                &iq_get(),
                &response(200, "application/json", body),
                ReadLimits::default(),
            );
            assert!(
                matches!(verdict.decision, Decision::Bounce(ref e) if e.condition == "internal-server-error"),
                "{body:?}"
            );
        }
    }

    #[test]
    fn other_2xx_accept_without_reply_and_iq_204_202() {
        for status in [202, 204, 200] {
            assert_eq!(
                decide(&chat(), &response(status, "", ""), ReadLimits::default()).decision,
                Decision::Nothing
            );
        }
        let reply = sent(decide(
            &iq_get(),
            &response(204, "", ""),
            ReadLimits::default(),
        ));
        assert_eq!(reply.attr("type"), Some("result"));
        assert_eq!(reply.children().count(), 0);
        assert_eq!(
            decide(&iq_get(), &response(202, "", ""), ReadLimits::default()).decision,
            Decision::AnswerLater
        );
    }

    #[test]
    fn errors_and_results_are_never_answered_whatever_the_hook_says() {
        let error = stanza("<message to='echo@bot.localhost' from='u@localhost' type='error'/>");
        let result =
            stanza("<iq to='echo@bot.localhost' from='u@localhost' type='result' id='1'/>");
        for original in [error, result] {
            for outcome in [
                response(200, "application/json", r#"{"body":"x"}"#),
                response(500, "", ""),
                HookOutcome::Timeout,
            ] {
                assert_eq!(
                    decide(&original, &outcome, ReadLimits::default()).decision,
                    Decision::Nothing
                );
            }
        }
    }

    #[test]
    fn short_plain_text_becomes_the_error_text() {
        let verdict = decide(
            &chat(),
            &response(404, "text/plain; charset=utf-8", "No such bot\n"),
            ReadLimits::default(),
        );
        assert_eq!(
            verdict.decision,
            Decision::Bounce(error_for_status(404).with_text("No such bot"))
        );
        let long = "x".repeat(300);
        let verdict = decide(
            &chat(),
            &response(503, "text/plain", &long),
            ReadLimits::default(),
        );
        assert_eq!(verdict.decision, Decision::Bounce(error_for_status(503)));
        let verdict = decide(
            &chat(),
            &response(500, "text/html", "<h1>oops</h1>"),
            ReadLimits::default(),
        );
        assert_eq!(verdict.decision, Decision::Bounce(error_for_status(500)));
    }

    #[test]
    fn transport_failures() {
        let verdict = decide(
            &chat(),
            &HookOutcome::ConnectFailure("refused".into()),
            ReadLimits::default(),
        );
        assert_eq!(
            verdict.decision,
            Decision::Bounce(
                StanzaError::new(ErrorType::Cancel, "remote-server-timeout")
                    .with_text("Connection failure")
            )
        );
        let verdict = decide(&chat(), &HookOutcome::Timeout, ReadLimits::default());
        assert_eq!(
            verdict.decision,
            Decision::Bounce(
                StanzaError::new(ErrorType::Wait, "remote-server-timeout").with_text("Timeout")
            )
        );
    }

    #[test]
    fn the_whole_error_table() {
        use ErrorType::*;
        let table: &[(&[u16], ErrorType, &str, Option<&str>)] = &[
            (
                &[300, 301, 302, 307, 308],
                Cancel,
                "service-unavailable",
                None,
            ),
            (&[400, 411, 416, 422], Modify, "bad-request", None),
            (&[401], Auth, "not-authorized", None),
            (&[402], Auth, "forbidden", Some("Payment required")),
            (&[403, 451], Auth, "forbidden", None),
            (&[404], Cancel, "item-not-found", None),
            (&[405], Cancel, "not-allowed", None),
            (&[406], Modify, "not-acceptable", None),
            (&[408], Wait, "remote-server-timeout", None),
            (&[409, 412], Cancel, "conflict", None),
            (&[410], Cancel, "gone", None),
            (&[413, 414, 431], Modify, "resource-constraint", None),
            (&[415], Cancel, "feature-not-implemented", None),
            (
                &[423, 429],
                Wait,
                "resource-constraint",
                Some("Too many requests"),
            ),
            (&[500], Cancel, "internal-server-error", None),
            (&[501], Cancel, "feature-not-implemented", None),
            (&[502], Cancel, "remote-server-timeout", Some("Bad gateway")),
            (
                &[503],
                Wait,
                "remote-server-timeout",
                Some("Service temporarily unavailable"),
            ),
            (
                &[504],
                Wait,
                "remote-server-timeout",
                Some("Gateway timeout"),
            ),
            (
                &[100, 418, 420, 505, 599],
                Cancel,
                "service-unavailable",
                None,
            ),
        ];
        for (statuses, type_, condition, text) in table {
            for &status in *statuses {
                let verdict = decide(&chat(), &response(status, "", ""), ReadLimits::default());
                let expected = StanzaError {
                    type_: *type_,
                    condition,
                    text: text.map(str::to_owned),
                };
                assert_eq!(
                    verdict.decision,
                    Decision::Bounce(expected),
                    "HTTP {status}"
                );
            }
        }
        // The error element itself carries the condition in the stanzas namespace.
        let reply =
            crate::xmpp::stanza::error_reply(&chat(), &error_for_status(404), "bot.localhost")
                .unwrap();
        assert!(
            reply
                .get_child("error", NS_COMPONENT)
                .unwrap()
                .has_child("item-not-found", NS_STANZAS)
        );
    }
}
