//! `reply_decision`: webhook answer → reply. An arbitrary original stanza (message, presence or
//! iq from templates with fuzz-chosen type, addresses, id and body, or fully fuzz-written XML)
//! meets an arbitrary hook outcome (any status, a content type from the ones the rules tell
//! apart or an arbitrary one, any body; sometimes a timeout or another failure). It checks that deciding never
//! panics; that an error or an iq result is never answered; that every bounce can be built
//! into an error reply; and that every stanza the bridge would send (a reply, or a bounce),
//! once it passes the outbound checks, parses back as exactly one stanza of the same kind whose
//! `from` lies in the component's domain and whose elements, attributes and text are the ones
//! that were checked, so the server reads what the bridge meant to send.
//!
//! Input layout: byte 0 the template, byte 1 the `type` attribute, bytes 2–3 the HTTP status
//! (big-endian), byte 4 the content type, byte 5 flags (bit 0: no usable answer, bits 2–3 then
//! tell which: a timeout, a connect failure, a malformed response, a body over the size limit;
//! bit 1: a `Retry-After`); then fields separated by NUL bytes: original `id` (`-` for none),
//! `from`, `to`, body text (the whole stanza for the last template), `type` (when byte 1 asks
//! for a fuzz-chosen one), content type (when byte 4 asks for an arbitrary one), an empty field
//! taking a working default; the rest, NULs included, is the hook's response body.
#![no_main]

use std::time::Duration;

use bytes::Bytes;
use component_http::bridge::reply::{Decision, decide};
use component_http::webhook::outcome::HookOutcome;
use component_http::xmpp::codec::{ReadLimits, parse_stanza};
use component_http::xmpp::stanza::{Outbound, Stanza, error_reply};
use component_http::xmpp::write::escape_attr;
use libfuzzer_sys::fuzz_target;
use minidom::{Element, Node};

const DOMAIN: &str = "bot.localhost";
const MAX_BYTES: usize = 262_144;

const TYPES: &[Option<&str>] = &[
    None,
    Some("chat"),
    Some("normal"),
    Some("groupchat"),
    Some("headline"),
    Some("error"),
    Some("get"),
    Some("set"),
    Some("result"),
    Some("unavailable"),
    Some("subscribe"),
    Some("probe"),
    Some(""),
];

const CONTENT_TYPES: &[Option<&str>] = &[
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    Some("application/xmpp+xml"),
    Some("text/plain"),
    Some("text/plain; charset=utf-8"),
    Some("application/problem+json"),
    Some("application/vnd.bot+json"),
    Some("text/html"),
    None,
];

/// Splits off the next NUL-terminated field.
fn field<'a>(rest: &mut &'a [u8]) -> &'a [u8] {
    match rest.iter().position(|&b| b == 0) {
        Some(at) => {
            let (head, tail) = rest.split_at(at);
            *rest = &tail[1..];
            head
        }
        None => std::mem::take(rest),
    }
}

fn text_or<'a>(bytes: &'a [u8], default: &'a str) -> &'a str {
    match std::str::from_utf8(bytes) {
        Ok("") | Err(_) => default,
        Ok(text) => text,
    }
}

/// The original stanza's XML.
fn original(
    template: u8,
    type_: Option<&str>,
    id: &str,
    from: &str,
    to: &str,
    body: &str,
) -> String {
    let mut attrs = format!(" to='{}' from='{}'", escape_attr(to), escape_attr(from));
    if !id.is_empty() {
        attrs.push_str(&format!(" id='{}'", escape_attr(id)));
    }
    if let Some(type_) = type_ {
        attrs.push_str(&format!(" type='{}'", escape_attr(type_)));
    }
    let raw = body;
    let body = escape_attr(body);
    match template % 8 {
        0 | 1 => format!("<message{attrs}><body>{body}</body></message>"),
        2 => format!(
            "<message{attrs} xml:lang='en'><subject>s</subject><body xml:lang='de'>{body}</body></message>"
        ),
        3 => format!("<presence{attrs}><status>{body}</status></presence>"),
        4 => format!("<iq{attrs}><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"),
        5 => format!("<iq{attrs}><query xmlns='urn:x'><item>{body}</item></query></iq>"),
        6 => format!("<iq{attrs}/>"),
        // The body field is the whole stanza, unescaped.
        _ => raw.to_owned(),
    }
}

/// An element as the server would see it: names, namespaces, attributes and text, with adjacent
/// text joined and empty text dropped (serialisation cannot keep those apart).
#[derive(Debug, PartialEq, Eq)]
enum Canon {
    Element {
        name: String,
        ns: String,
        attrs: Vec<(String, String)>,
        children: Vec<Canon>,
    },
    Text(String),
}

fn canon(element: &Element) -> Canon {
    let mut attrs: Vec<(String, String)> = element
        .attrs()
        .iter()
        .map(|((ns, name), value)| (format!("{ns:?} {name}"), value.clone()))
        .collect();
    attrs.sort();
    let mut children = Vec::new();
    for node in element.nodes() {
        match node {
            Node::Element(child) => children.push(canon(child)),
            Node::Text(text) if text.is_empty() => {}
            Node::Text(text) => match children.last_mut() {
                Some(Canon::Text(previous)) => previous.push_str(text),
                _ => children.push(Canon::Text(text.clone())),
            },
        }
    }
    Canon::Element {
        name: element.name().to_owned(),
        ns: element.ns(),
        attrs,
        children,
    }
}

/// What reaches the server, if the outbound checks let it through, must be what was meant.
fn check_sent(element: Element, what: &str) {
    let kind_before = element.name().to_owned();
    let Ok(out) = Outbound::check(element.clone(), DOMAIN, MAX_BYTES) else {
        return;
    };
    assert_eq!(out.kind.as_str(), kind_before, "{what}: the kind changed");
    let read = parse_stanza(&out.bytes, ReadLimits::default()).unwrap_or_else(|e| {
        panic!(
            "{what}: the bytes sent do not parse back ({e}): {}",
            out.bytes
        )
    });
    let sent = read.element.clone();
    let stanza = Stanza::from_read(read)
        .unwrap_or_else(|| panic!("{what}: the bytes sent are not a stanza: {}", out.bytes));
    assert_eq!(stanza.kind, out.kind, "{what}: {}", out.bytes);
    let from = stanza.from().expect("a checked stanza has a from");
    let jid = jid::Jid::new(from).unwrap_or_else(|e| {
        panic!(
            "{what}: the from {from:?} sent is not a JID ({e}): {}",
            out.bytes
        )
    });
    assert_eq!(
        jid.domain().as_str(),
        DOMAIN,
        "{what}: from {from:?} is outside the domain"
    );
    assert!(stanza.to().is_some(), "{what}: no to: {}", out.bytes);

    // The server reads exactly the checked element (with `from` normalised).
    let mut meant = element;
    meant.set_attr(
        rxml::Namespace::NONE,
        component_http::xmpp::stanza::ncname("from"),
        from.to_owned(),
    );
    assert_eq!(
        canon(&sent),
        canon(&meant),
        "{what}: the server would read something else than was checked: {}",
        out.bytes
    );
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let (head, mut rest) = data.split_at(6);
    let id = text_or(field(&mut rest), "m1");
    let from = text_or(field(&mut rest), "u@localhost/r");
    let to = text_or(field(&mut rest), "echo@bot.localhost");
    let body = text_or(field(&mut rest), "hi");
    let chosen_type = field(&mut rest);
    let chosen_content_type = field(&mut rest);
    let hook_body = rest;

    let type_ = match TYPES.get(usize::from(head[1]) % (TYPES.len() + 1)) {
        Some(type_) => *type_,
        None => std::str::from_utf8(chosen_type).ok(),
    };
    let xml = original(
        head[0],
        type_,
        if id == "-" { "" } else { id },
        from,
        to,
        body,
    );
    let Ok(read) = parse_stanza(&xml, ReadLimits::default()) else {
        return;
    };
    let Some(stanza) = Stanza::from_read(read) else {
        return;
    };

    let status = u16::from_be_bytes([head[2], head[3]]);
    let retry_after = (head[5] & 2 == 2).then(|| Duration::from_secs(u64::from(head[5])));
    let outcome = if head[5] & 1 == 1 {
        let reason = String::from_utf8_lossy(hook_body).into_owned();
        match (head[5] >> 2) & 3 {
            0 => HookOutcome::Timeout,
            1 => HookOutcome::ConnectFailure(reason),
            2 => HookOutcome::Malformed(reason),
            _ => HookOutcome::ResponseTooLarge {
                status,
                retry_after,
            },
        }
    } else {
        let content_type = match CONTENT_TYPES.get(usize::from(head[4]) % (CONTENT_TYPES.len() + 1))
        {
            Some(content_type) => content_type.map(str::to_owned),
            None => Some(String::from_utf8_lossy(chosen_content_type).into_owned()),
        };
        HookOutcome::Response {
            status,
            content_type,
            body: Bytes::copy_from_slice(hook_body),
            retry_after,
        }
    };

    let verdict = decide(&stanza, &outcome, ReadLimits::default());
    if stanza.must_not_be_answered() {
        assert_eq!(
            verdict.decision,
            Decision::Nothing,
            "an error or iq result was answered"
        );
    }
    match verdict.decision {
        Decision::Send(element) => check_sent(element, "reply"),
        Decision::Bounce(error) => {
            let reply = error_reply(&stanza, &error, DOMAIN)
                .expect("a bounce is only decided for a stanza that may be answered");
            check_sent(reply, "bounce");
        }
        Decision::Nothing | Decision::AnswerLater => {}
    }
});
