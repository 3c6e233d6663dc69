//! Stanzas as the bridge handles them: kind and addressing attributes, stanza error replies
//! (RFC 6120 §8.3), and the checks every outgoing stanza passes before it reaches the socket.
//!
//! The server closes the whole stream on a stanza it cannot accept (a `from` outside the
//! component's domain, a missing `to`, a character XML forbids), so [`Outbound::check`] refuses
//! such stanzas here, where one bad reply costs one reply and not the link.

use minidom::Element;

use crate::xmpp::codec::{NS_COMPONENT, ReadElement};

pub(crate) const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

/// The three stanza kinds (RFC 6120 §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Message,
    Presence,
    Iq,
}

impl Kind {
    pub(crate) fn of(element: &Element) -> Option<Kind> {
        if element.ns() != NS_COMPONENT {
            return None;
        }
        match element.name() {
            "message" => Some(Kind::Message),
            "presence" => Some(Kind::Presence),
            "iq" => Some(Kind::Iq),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Message => "message",
            Kind::Presence => "presence",
            Kind::Iq => "iq",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<Kind> {
        match name {
            "message" => Some(Kind::Message),
            "presence" => Some(Kind::Presence),
            "iq" => Some(Kind::Iq),
            _ => None,
        }
    }
}

/// A stanza read from the stream, in the form the bridge holds it: its bytes as received, its
/// kind, and the few values routing, the hook's JSON and replies need. The parsed element tree
/// is not kept: it costs up to about 60 times the stanza's XML (an element or attribute takes a
/// few hundred bytes of tree for a few bytes of text), so a held stanza would cost far more
/// than the queue's byte bound says. What it holds here is at most about twice its XML; code
/// that needs the tree parses [`Stanza::raw`] again ([`Stanza::tree`]).
#[derive(Debug, Clone)]
pub struct Stanza {
    pub kind: Kind,
    pub raw: String,
    to: Option<String>,
    from: Option<String>,
    id: Option<String>,
    type_: Option<String>,
    lang: Option<String>,
    /// A message's `<body>` text: the one without `xml:lang`, else the first.
    body: Option<String>,
}

impl Stanza {
    /// The stanza a top-level element of the stream holds; `None` for any other element. The
    /// element is dropped once the values the bridge needs are taken from it.
    pub fn from_read(read: ReadElement) -> Option<Stanza> {
        let element = &read.element;
        let kind = Kind::of(element)?;
        let attr = |name: &str| element.attr(name).map(str::to_owned);
        Some(Stanza {
            kind,
            to: attr("to"),
            from: attr("from"),
            id: attr("id"),
            type_: attr("type"),
            lang: element
                .attr_ns(rxml::Namespace::xml(), "lang")
                .map(str::to_owned),
            body: (kind == Kind::Message)
                .then(|| message_body(element))
                .flatten(),
            raw: read.raw,
        })
    }

    /// The element tree, parsed again from [`Stanza::raw`]; `None` only if the text no longer
    /// parses, which cannot happen for text the stream reader accepted.
    pub fn tree(&self) -> Option<Element> {
        // The text passed the stream's limits when it was read; these only keep the parser's.
        let limits = crate::xmpp::codec::ReadLimits {
            max_stanza_bytes: self.raw.len() + crate::limits::XML_TOKEN_SLACK_BYTES,
            max_depth: *crate::limits::MAX_DEPTH_RANGE.end(),
        };
        crate::xmpp::codec::parse_stanza(&self.raw, limits)
            .ok()
            .map(|read| read.element)
    }

    pub fn to(&self) -> Option<&str> {
        self.to.as_deref()
    }
    pub fn from(&self) -> Option<&str> {
        self.from.as_deref()
    }
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }
    pub fn type_(&self) -> Option<&str> {
        self.type_.as_deref()
    }
    /// `xml:lang` of the stanza.
    pub fn lang(&self) -> Option<&str> {
        self.lang.as_deref()
    }
    /// A message's `<body>` text (the one without `xml:lang`, else the first).
    pub fn body(&self) -> Option<&str> {
        self.body.as_deref()
    }
    /// A reply of kind `name` and type `type_`: addressed back to the sender (`to` and `from`
    /// swapped) with the same id, as error replies and iq results both are.
    pub(crate) fn reply_builder(&self, name: &str, type_: &str) -> minidom::ElementBuilder {
        let mut reply = Element::builder(name, NS_COMPONENT).attr(ncname("type"), type_);
        for (attr, value) in [("to", self.from()), ("from", self.to()), ("id", self.id())] {
            if let Some(value) = value {
                reply = reply.attr(ncname(attr), value);
            }
        }
        reply
    }

    /// An `error` stanza, or an iq `result`: RFC 6120 forbids answering either.
    pub fn must_not_be_answered(&self) -> bool {
        match self.type_() {
            Some("error") => true,
            Some("result") => self.kind == Kind::Iq,
            _ => false,
        }
    }
}

/// The text of a message's `<body>`: the one without `xml:lang`, else the first.
fn message_body(message: &Element) -> Option<String> {
    let mut first = None;
    for body in message.children().filter(|c| c.is("body", NS_COMPONENT)) {
        if body.attr_ns(rxml::Namespace::xml(), "lang").is_none() {
            return Some(body.text());
        }
        first.get_or_insert(body);
    }
    first.map(|body| body.text())
}

/// RFC 6120 §8.3.2 error types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorType {
    Auth,
    Cancel,
    Modify,
    Wait,
}

impl ErrorType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorType::Auth => "auth",
            ErrorType::Cancel => "cancel",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
        }
    }
}

/// A stanza error to send back: type, defined condition and optional human-readable text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StanzaError {
    pub(crate) type_: ErrorType,
    pub(crate) condition: &'static str,
    pub(crate) text: Option<String>,
}

impl StanzaError {
    pub(crate) fn new(type_: ErrorType, condition: &'static str) -> Self {
        Self {
            type_,
            condition,
            text: None,
        }
    }
    pub(crate) fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }
    pub(crate) fn service_unavailable() -> Self {
        Self::new(ErrorType::Cancel, "service-unavailable")
    }
    pub(crate) fn internal_server_error() -> Self {
        Self::new(ErrorType::Cancel, "internal-server-error")
    }

    /// Its `<error>` element, generated `by` the given JID if any.
    pub(crate) fn to_element(&self, by: Option<&str>) -> Element {
        let mut error = Element::builder("error", NS_COMPONENT)
            .attr(ncname("type"), self.type_.as_str())
            .append(Element::bare(self.condition, NS_STANZAS));
        if let Some(by) = by {
            error = error.attr(ncname("by"), by);
        }
        if let Some(text) = &self.text {
            error = error.append(
                Element::builder("text", NS_STANZAS)
                    .append(text.as_str())
                    .build(),
            );
        }
        error.build()
    }
}

/// The error reply to `original`: addresses swapped, same id, an `<error>` carrying `by`.
/// `None` when the original must not be answered (an error, or an iq result).
pub fn error_reply(original: &Stanza, error: &StanzaError, by: &str) -> Option<Element> {
    if original.must_not_be_answered() {
        return None;
    }
    Some(
        original
            .reply_builder(original.kind.as_str(), "error")
            .append(error.to_element(Some(by)))
            .build(),
    )
}

/// A builder-ready attribute name for the handful of fixed names the bridge writes.
pub fn ncname(name: &'static str) -> rxml::NcName {
    // Only literals of this crate are passed here, never input from the network.
    rxml::NcName::try_from(name).expect("attribute names in this crate are valid NCNames")
}

/// Why an outgoing stanza was refused before the socket.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OutboundError {
    #[error("<{0}> is not a stanza (message, presence or iq in jabber:component:accept)")]
    NotAStanza(String),
    #[error("it has no `to` address")]
    MissingTo,
    #[error("its `to` {0:?} is not a valid JID")]
    InvalidTo(String),
    #[error("it has no `from` address")]
    MissingFrom,
    #[error("its `from` {from:?} is outside the component's domain {domain}")]
    ForeignFrom { from: String, domain: String },
    #[error("it contains a character XML 1.0 does not allow (U+{0:04X})")]
    InvalidCharacter(u32),
    #[error("it is {size} bytes, over max_stanza_bytes ({limit})")]
    TooLarge { size: usize, limit: usize },
}

/// Where an outgoing stanza comes from: a hook's reply, the component itself (built-in answers,
/// errors, room joins), or the HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Reply,
    Local,
    Api,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Reply => "reply",
            Origin::Local => "local",
            Origin::Api => "api",
        }
    }
}

/// An outgoing stanza that passed [`Outbound::check`], serialised and ready for the writer.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub kind: Kind,
    pub bytes: String,
    pub origin: Origin,
    /// Reported on the session's `written` channel once the stanza is written to the socket,
    /// for a sender that keeps the stanza until then (README, "The HTTP API").
    pub receipt: Option<u64>,
}

impl Outbound {
    /// Checks and serialises a stanza for the component `domain`; the `from` is normalised
    /// (the domain part lowercased as configured).
    pub fn check(
        mut element: Element,
        domain: &str,
        max_bytes: usize,
    ) -> Result<Outbound, OutboundError> {
        let kind = Kind::of(&element)
            .ok_or_else(|| OutboundError::NotAStanza(element.name().to_owned()))?;
        let to = element.attr("to").ok_or(OutboundError::MissingTo)?;
        jid::Jid::new(to).map_err(|_| OutboundError::InvalidTo(to.to_owned()))?;
        let from = element.attr("from").ok_or(OutboundError::MissingFrom)?;
        let normalised = match jid::Jid::new(from) {
            Ok(jid) if jid.domain().as_str() == domain => jid.to_string(),
            _ => {
                return Err(OutboundError::ForeignFrom {
                    from: from.to_owned(),
                    domain: domain.to_owned(),
                });
            }
        };
        if normalised != from {
            element.set_attr(rxml::Namespace::NONE, ncname("from"), normalised);
        }
        check_characters(&element)?;
        let mut bytes = Vec::new();
        element
            .write_to(&mut bytes)
            .map_err(|_| OutboundError::NotAStanza(element.name().to_owned()))?;
        if bytes.len() > max_bytes {
            return Err(OutboundError::TooLarge {
                size: bytes.len(),
                limit: max_bytes,
            });
        }
        // The writer produces UTF-8 from UTF-8 strings.
        let bytes =
            String::from_utf8(bytes).map_err(|_| OutboundError::InvalidCharacter(0xFFFD))?;
        Ok(Outbound {
            kind,
            bytes,
            origin: Origin::Local,
            receipt: None,
        })
    }
}

/// XML 1.0 §2.2 Char: every text node and attribute value of the tree.
fn check_characters(element: &Element) -> Result<(), OutboundError> {
    let mut stack = vec![element];
    while let Some(element) = stack.pop() {
        for (_, value) in element.attrs() {
            check_text(value)?;
        }
        for node in element.nodes() {
            match node {
                minidom::Node::Element(child) => stack.push(child),
                minidom::Node::Text(text) => check_text(text)?,
            }
        }
    }
    Ok(())
}

fn check_text(text: &str) -> Result<(), OutboundError> {
    match text.chars().find(|&c| !is_xml_char(c)) {
        Some(c) => Err(OutboundError::InvalidCharacter(c as u32)),
        None => Ok(()),
    }
}

pub(crate) fn is_xml_char(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Removes characters XML 1.0 forbids, for text taken from a hook's JSON.
pub(crate) fn xml_safe(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().all(is_xml_char) {
        std::borrow::Cow::Borrowed(text)
    } else {
        std::borrow::Cow::Owned(text.chars().filter(|&c| is_xml_char(c)).collect())
    }
}

/// The bare form (`local@domain` or `domain`) of a JID string, if it is one.
pub(crate) fn bare(jid: &str) -> Option<String> {
    jid::Jid::new(jid).ok().map(|jid| jid.to_bare().to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::xmpp::codec::{ReadLimits, parse_stanza};

    /// A stanza from XML, for tests across the crate.
    pub(crate) fn stanza(xml: &str) -> Stanza {
        Stanza::from_read(parse_stanza(xml, ReadLimits::default()).expect("test XML parses"))
            .expect("test XML is a stanza")
    }

    #[test]
    fn error_reply_swaps_addresses_and_keeps_the_id() {
        let original = stanza(
            "<message to='echo@bot.localhost' from='u@localhost/r' id='m1' type='chat'><body>x</body></message>",
        );
        let error = StanzaError::new(ErrorType::Wait, "remote-server-timeout").with_text("Timeout");
        let reply = error_reply(&original, &error, "bot.localhost").unwrap();
        assert_eq!(reply.attr("to"), Some("u@localhost/r"));
        assert_eq!(reply.attr("from"), Some("echo@bot.localhost"));
        assert_eq!(reply.attr("id"), Some("m1"));
        assert_eq!(reply.attr("type"), Some("error"));
        let e = reply.get_child("error", NS_COMPONENT).unwrap();
        assert_eq!(e.attr("type"), Some("wait"));
        assert_eq!(e.attr("by"), Some("bot.localhost"));
        assert!(e.has_child("remote-server-timeout", NS_STANZAS));
        assert_eq!(e.get_child("text", NS_STANZAS).unwrap().text(), "Timeout");
    }

    #[test]
    fn errors_and_results_are_never_answered() {
        let error = StanzaError::service_unavailable();
        for xml in [
            "<message to='a@bot.localhost' from='u@localhost' type='error'/>",
            "<iq to='bot.localhost' from='u@localhost' type='result' id='1'/>",
            "<iq to='bot.localhost' from='u@localhost' type='error' id='1'/>",
            "<presence to='bot.localhost' from='u@localhost' type='error'/>",
        ] {
            assert!(
                error_reply(&stanza(xml), &error, "bot.localhost").is_none(),
                "{xml}"
            );
        }
    }

    #[test]
    fn outbound_check_refuses_what_would_kill_the_stream() {
        let check = |xml: &str| {
            Outbound::check(
                parse_stanza(xml, ReadLimits::default()).unwrap().element,
                "bot.localhost",
                4096,
            )
        };
        assert!(
            check("<message to='u@localhost' from='echo@bot.localhost'><body>ok</body></message>")
                .is_ok()
        );
        assert_eq!(
            check("<message from='echo@bot.localhost'/>").unwrap_err(),
            OutboundError::MissingTo
        );
        assert_eq!(
            check("<message to='u@localhost'/>").unwrap_err(),
            OutboundError::MissingFrom
        );
        assert!(matches!(
            check("<message to='u@localhost' from='x@evil.example'/>").unwrap_err(),
            OutboundError::ForeignFrom { .. }
        ));
        assert!(matches!(
            check("<message to='u@localhost' from='x@sub.bot.localhost'/>").unwrap_err(),
            OutboundError::ForeignFrom { .. }
        ));
        assert!(matches!(
            check("<foo to='u@localhost' from='bot.localhost'/>").unwrap_err(),
            OutboundError::NotAStanza(_)
        ));
        let big = format!(
            "<message to='u@localhost' from='bot.localhost'><body>{}</body></message>",
            "x".repeat(5000)
        );
        assert!(matches!(
            check(&big).unwrap_err(),
            OutboundError::TooLarge { .. }
        ));
        let mut element = parse_stanza(
            "<message to='u@localhost' from='bot.localhost'/>",
            ReadLimits::default(),
        )
        .unwrap()
        .element;
        element.append_child(
            Element::builder("body", NS_COMPONENT)
                .append("a\u{1}b")
                .build(),
        );
        assert_eq!(
            Outbound::check(element, "bot.localhost", 4096).unwrap_err(),
            OutboundError::InvalidCharacter(1)
        );
    }

    #[test]
    fn outbound_from_is_normalised_to_the_configured_case() {
        let element = parse_stanza(
            "<message to='u@localhost' from='Echo@BOT.localhost'/>",
            ReadLimits::default(),
        )
        .unwrap()
        .element;
        let out = Outbound::check(element, "bot.localhost", 4096).unwrap();
        assert!(
            out.bytes.contains("from='echo@bot.localhost'")
                || out.bytes.contains("from=\"echo@bot.localhost\""),
            "{}",
            out.bytes
        );
    }

    #[test]
    fn xml_safe_drops_forbidden_characters_only() {
        assert_eq!(xml_safe("a\u{0}b\u{1F600}\tc\u{FFFE}"), "ab\u{1F600}\tc");
    }
}
