//! Incremental, bounded reader of the XEP-0114 stream: bytes in, [`Frame`]s out.
//!
//! It owns XML well-formedness and the memory bounds of reading: restricted XML (no DTD, no
//! processing instruction, no comment, no undeclared entity: RFC 6120 §11.1) is enforced by
//! `rxml`, elements are built by `minidom`'s tree builder, and every stanza is held to a byte and
//! a depth limit *while* it is read, so a hostile peer never makes it allocate without bound.
//! It keeps each stanza's raw bytes as received, which become the `stanza` field of the webhook
//! payload without serialising the element again. It does no I/O and knows nothing of stanza
//! semantics.

use std::collections::HashSet;

use bytes::{Buf, BytesMut};
use minidom::Element;
use minidom::tree_builder::TreeBuilder;
use rxml::error::EndOrError;
use rxml::{Options, Parse, RawEvent, RawParser, RawQName, WithOptions};

use crate::limits;
use crate::xmpp::write::stream_header;

pub(crate) const NS_STREAMS: &str = "http://etherx.jabber.org/streams";
pub(crate) const NS_COMPONENT: &str = "jabber:component:accept";
const DOCTYPE: &[u8] = b"<!DOCTYPE";
/// An empty CDATA section: the one construct the lexer consumes without emitting any event.
const EMPTY_CDATA: &[u8] = b"<![CDATA[]]>";

/// Bounds applied while reading.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    pub max_stanza_bytes: usize,
    pub max_depth: usize,
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self {
            max_stanza_bytes: limits::DEFAULT_MAX_STANZA_BYTES,
            max_depth: limits::DEFAULT_MAX_DEPTH,
        }
    }
}

impl ReadLimits {
    /// The limits for XML that will be put one level inside a stanza (an iq's payload): one
    /// level less, so the stanza built around it still keeps `max_depth`.
    pub(crate) fn nested_one_level(self) -> Self {
        Self {
            max_depth: self.max_depth.saturating_sub(1),
            ..self
        }
    }
}

/// The attributes of the server's `<stream:stream>` header that matter to a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHeader {
    pub id: Option<String>,
    pub from: Option<String>,
    pub version: Option<String>,
}

/// A top-level element of the stream, with its bytes exactly as they were received.
#[derive(Debug, Clone)]
pub struct ReadElement {
    pub element: Element,
    /// The element's XML as received. It does not repeat the stream's namespace declarations,
    /// which is what the webhook's `stanza` field wants.
    pub raw: String,
}

/// What the reader yields.
#[derive(Debug, Clone)]
pub enum Frame {
    Open(StreamHeader),
    Element(Box<ReadElement>),
    Close,
}

/// Why the stream cannot be read further. Each maps to the stream error the component sends
/// before it closes the connection.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CodecError {
    #[error("XML refused: {0}")]
    NotWellFormed(String),
    #[error("XML refused: {0} (restricted XML: no DTD, processing instruction or comment)")]
    RestrictedXml(String),
    #[error("a stanza exceeds {limit} bytes (max_stanza_bytes)")]
    StanzaTooLarge { limit: usize },
    #[error("a stanza nests elements deeper than {limit} (max_depth)")]
    TooDeep { limit: usize },
    #[error("the stream's root is <{0}>, not <stream:stream>")]
    BadRoot(String),
}

impl CodecError {
    /// The RFC 6120 §4.9.3 condition to send in the `<stream:error>`.
    pub(crate) fn stream_condition(&self) -> &'static str {
        match self {
            CodecError::NotWellFormed(_) => "not-well-formed",
            CodecError::RestrictedXml(_) => "restricted-xml",
            CodecError::StanzaTooLarge { .. } | CodecError::TooDeep { .. } => "policy-violation",
            CodecError::BadRoot(_) => "invalid-namespace",
        }
    }
}

/// The push parser. Feed it bytes with [`StreamReader::feed`], then drain
/// [`StreamReader::next_frame`] until it yields `Ok(None)`.
pub struct StreamReader {
    parser: RawParser,
    tree: TreeBuilder,
    limits: ReadLimits,
    /// Bytes received and not yet handed to the lexer.
    input: BytesMut,
    /// Bytes the lexer consumed that no event has accounted for yet.
    unaccounted: BytesMut,
    /// Raw bytes of the top-level element being read.
    current: Vec<u8>,
    /// Element depth, the stream root being 1.
    depth: usize,
    /// Names of the attributes of the element head being read, to refuse a repeated one.
    head_attributes: HashSet<RawQName>,
    /// Inside the stream's root, outside any stanza: where whitespace is skipped.
    between_stanzas: bool,
    /// Set once an error was returned: the stream is over.
    failed: Option<CodecError>,
    closed: bool,
}

impl StreamReader {
    pub fn new(limits: ReadLimits) -> Self {
        let options = Options {
            // A token (e.g. an attribute value) may be as long as a whole stanza; the stanza
            // limit, checked on every consumed byte, fires first.
            max_token_length: limits
                .max_stanza_bytes
                .saturating_add(limits::XML_TOKEN_SLACK_BYTES),
            ..Options::default()
        };
        Self {
            parser: RawParser::with_options(options),
            tree: TreeBuilder::new(),
            limits,
            input: BytesMut::with_capacity(limits::READ_CHUNK_BYTES),
            unaccounted: BytesMut::new(),
            current: Vec::new(),
            depth: 0,
            head_attributes: HashSet::new(),
            between_stanzas: false,
            failed: None,
            closed: false,
        }
    }

    /// Hand received bytes to the reader. They are only buffered; parsing happens in
    /// [`StreamReader::next_frame`], so the buffer never holds more than one socket read.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, CodecError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if self.closed {
            return Ok(None);
        }
        match self.next_frame_inner() {
            Err(error) => {
                self.failed = Some(error.clone());
                self.input.clear();
                self.unaccounted.clear();
                self.current = Vec::new();
                self.tree = TreeBuilder::new();
                Err(error)
            }
            ok => ok,
        }
    }

    fn next_frame_inner(&mut self) -> Result<Option<Frame>, CodecError> {
        loop {
            if self.between_stanzas && self.unaccounted.is_empty() {
                // Whitespace between stanzas (keepalives) is dropped before the lexer sees it:
                // it is no part of any stanza, so it neither counts toward max_stanza_bytes
                // nor costs memory, however much of it a server sends.
                let blank = self
                    .input
                    .iter()
                    .take_while(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
                    .count();
                self.input.advance(blank);
            }
            let mut window: &[u8] = &self.input;
            let before = window.len();
            let parsed = self.parser.parse(&mut window, false);
            let consumed = before - window.len();
            self.unaccounted.extend_from_slice(&self.input[..consumed]);
            self.input.advance(consumed);
            self.check_stanza_size()?;
            let event = match parsed {
                Ok(Some(event)) => event,
                Ok(None) => return Ok(None),
                Err(EndOrError::NeedMoreData) => return Ok(None),
                Err(EndOrError::Error(error @ rxml::Error::RestrictedXml(_))) => {
                    return Err(CodecError::RestrictedXml(error.to_string()));
                }
                Err(EndOrError::Error(error)) => {
                    // rxml reports a DTD as a syntax error; RFC 6120 §11.1 names it restricted.
                    let tail = &self.unaccounted[self.unaccounted.len().saturating_sub(64)..];
                    let head = &self.input[..self.input.len().min(64)];
                    let around = [tail, head].concat();
                    let at_doctype = around.windows(DOCTYPE.len()).any(|w| w == DOCTYPE);
                    return Err(if at_doctype {
                        CodecError::RestrictedXml(format!("a document type declaration ({error})"))
                    } else {
                        CodecError::NotWellFormed(error.to_string())
                    });
                }
            };
            if let Some(frame) = self.handle(event)? {
                return Ok(Some(frame));
            }
        }
    }

    fn check_stanza_size(&self) -> Result<(), CodecError> {
        if self.depth >= 1
            && self.current.len() + self.unaccounted.len() > self.limits.max_stanza_bytes
        {
            return Err(CodecError::StanzaTooLarge {
                limit: self.limits.max_stanza_bytes,
            });
        }
        Ok(())
    }

    /// Moves the bytes of one event from `unaccounted` into the current element, or drops them
    /// when they lie between top-level elements.
    fn account(&mut self, event: &RawEvent, inside_element: bool) {
        let len = event.metrics().len().min(self.unaccounted.len());
        let bytes = self.unaccounted.split_to(len);
        if inside_element {
            self.current.extend_from_slice(&bytes);
        }
    }

    /// The lexer drops an empty CDATA section without an event, so no event's length covers its
    /// bytes; they always lie just before the next event's. Left in `unaccounted`, they would
    /// shift every later event's bytes and make the raw text disagree with the element.
    fn account_empty_cdata(&mut self) {
        let inside_element = self.depth >= 2;
        while self.unaccounted.starts_with(EMPTY_CDATA) {
            let bytes = self.unaccounted.split_to(EMPTY_CDATA.len());
            if inside_element {
                self.current.extend_from_slice(&bytes);
            }
        }
    }

    fn handle(&mut self, event: RawEvent) -> Result<Option<Frame>, CodecError> {
        self.account_empty_cdata();
        match &event {
            RawEvent::XmlDeclaration(..) => {
                self.account(&event, false);
                Ok(None)
            }
            RawEvent::ElementHeadOpen(..) => {
                self.depth += 1;
                self.between_stanzas = false;
                if self.depth > self.limits.max_depth.saturating_add(1) {
                    return Err(CodecError::TooDeep {
                        limit: self.limits.max_depth,
                    });
                }
                self.account(&event, self.depth >= 2);
                self.head_attributes.clear();
                self.build(event)?;
                Ok(None)
            }
            RawEvent::Attribute(_, qname @ (prefix, name), value) => {
                // XML forbids a repeated attribute. The element tree would keep one value and
                // the raw text both, so what is checked and what is forwarded could differ.
                if !self.head_attributes.insert(qname.clone()) {
                    let shown = match prefix {
                        Some(prefix) => format!("{prefix}:{name}"),
                        None => name.to_string(),
                    };
                    return Err(CodecError::NotWellFormed(format!(
                        "the attribute '{shown}' appears twice in one element"
                    )));
                }
                // A server may repeat the stream's default namespace on each stanza; the raw
                // text promises XML without it, like every other stanza.
                let redundant = self.depth == 2
                    && prefix.is_none()
                    && name.as_str() == "xmlns"
                    && value == NS_COMPONENT;
                self.account(&event, self.depth >= 2 && !redundant);
                self.build(event)?;
                Ok(None)
            }
            RawEvent::ElementHeadClose(..) => {
                self.account(&event, self.depth >= 2);
                self.build(event)?;
                if self.depth == 1 {
                    self.between_stanzas = true;
                    return self.stream_header().map(Some);
                }
                Ok(None)
            }
            RawEvent::Text(..) => {
                // Whitespace keepalives between stanzas are never kept: a long-lived stream
                // would otherwise grow the root element forever.
                let inside = self.depth >= 2;
                self.account(&event, inside);
                if inside {
                    self.build(event)?;
                }
                Ok(None)
            }
            RawEvent::ElementFoot(..) => {
                let inside = self.depth >= 2;
                self.account(&event, inside);
                self.build(event)?;
                self.depth = self.depth.saturating_sub(1);
                match self.depth {
                    0 => {
                        self.closed = true;
                        Ok(Some(Frame::Close))
                    }
                    1 => {
                        self.between_stanzas = true;
                        Ok(self.finish_element())
                    }
                    _ => Ok(None),
                }
            }
        }
    }

    fn build(&mut self, event: RawEvent) -> Result<(), CodecError> {
        self.tree
            .process_event(event)
            .map_err(|error| CodecError::NotWellFormed(error.to_string()))
    }

    fn stream_header(&mut self) -> Result<Frame, CodecError> {
        let Some(root) = self.tree.top() else {
            return Err(CodecError::NotWellFormed("no stream root".into()));
        };
        if !root.is("stream", NS_STREAMS) {
            return Err(CodecError::BadRoot(format!(
                "{} xmlns='{}'",
                root.name(),
                root.ns()
            )));
        }
        let attr = |name: &str| root.attr(name).map(str::to_owned);
        Ok(Frame::Open(StreamHeader {
            id: attr("id"),
            from: attr("from"),
            version: attr("version"),
        }))
    }

    fn finish_element(&mut self) -> Option<Frame> {
        let raw = std::mem::take(&mut self.current);
        let element = self.tree.unshift_child()?;
        // rxml only emits events for valid UTF-8, so the raw bytes are UTF-8 too.
        let raw = String::from_utf8(raw)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        Some(Frame::Element(Box::new(ReadElement { element, raw })))
    }
}

/// Parses one stanza given as a string (a hook's `stanza` field or an `application/xmpp+xml`
/// body) with the same limits as the stream. The stanza may omit its namespace: like a stanza
/// on the stream, it inherits `jabber:component:accept`. Exactly one element is accepted:
/// text that closes the stream (`<message/></stream:stream><message/>`) or carries a second
/// element is refused whole, never cut to its first part.
pub fn parse_stanza(xml: &str, limits: ReadLimits) -> Result<ReadElement, CodecError> {
    let mut reader = StreamReader::new(limits);
    reader.feed(stream_header("parse.invalid").as_bytes());
    reader.feed(xml.trim().as_bytes());
    let mut found = None;
    let mut closing = false;
    loop {
        match reader.next_frame()? {
            Some(Frame::Open(_)) => {}
            Some(Frame::Element(element)) => {
                if found.is_some() {
                    return Err(CodecError::NotWellFormed("more than one element".into()));
                }
                found = Some(*element);
            }
            Some(Frame::Close) if closing => break,
            Some(Frame::Close) => {
                return Err(CodecError::NotWellFormed(
                    "the XML closes the stream (</stream:stream>)".into(),
                ));
            }
            None if closing => {
                return Err(CodecError::NotWellFormed("the XML is incomplete".into()));
            }
            None => {
                closing = true;
                reader.feed(b"</stream:stream>");
            }
        }
    }
    found.ok_or_else(|| CodecError::NotWellFormed("no element".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::write::escape_attr;

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
        xmlns:stream='http://etherx.jabber.org/streams' from='bot.localhost' id='abc123'>";

    fn read_all(reader: &mut StreamReader) -> Result<Vec<Frame>, CodecError> {
        let mut frames = Vec::new();
        while let Some(frame) = reader.next_frame()? {
            frames.push(frame);
        }
        Ok(frames)
    }

    /// Reads `xml` after the server's stream header, with the default limits.
    fn read_after_header(xml: &str) -> Result<Vec<Frame>, CodecError> {
        let mut reader = StreamReader::new(ReadLimits::default());
        reader.feed(HEADER.as_bytes());
        reader.feed(xml.as_bytes());
        read_all(&mut reader)
    }

    fn elements(frames: &[Frame]) -> Vec<&ReadElement> {
        frames
            .iter()
            .filter_map(|f| match f {
                Frame::Element(e) => Some(&**e),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn reads_header_then_stanzas_with_raw_bytes() {
        let mut reader = StreamReader::new(ReadLimits::default());
        let stanza = "<message to='echo@bot.localhost' from='a@localhost/r' type='chat' id='1'>\
            <body>hi &amp; &lt;bye&gt; \u{1F600}</body></message>";
        reader.feed(HEADER.as_bytes());
        reader.feed(b"  \n");
        reader.feed(stanza.as_bytes());
        let frames = read_all(&mut reader).unwrap();
        match &frames[0] {
            Frame::Open(h) => {
                assert_eq!(h.id.as_deref(), Some("abc123"));
                assert_eq!(h.version, None);
            }
            other => panic!("expected the header, got {other:?}"),
        }
        let read = elements(&frames);
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].raw, stanza);
        assert_eq!(read[0].element.ns(), NS_COMPONENT);
        assert_eq!(
            read[0]
                .element
                .get_child("body", NS_COMPONENT)
                .unwrap()
                .text(),
            "hi & <bye> \u{1F600}"
        );
    }

    #[test]
    fn byte_at_a_time_gives_the_same_result() {
        let stanza = "<iq type='get' id='x' to='bot.localhost' from='u@localhost/r'>\
            <query xmlns='http://jabber.org/protocol/disco#info'/></iq>";
        let input = format!(
            "{HEADER}{stanza} <presence to='bot.localhost' from='u@localhost'/></stream:stream>"
        );
        let mut reader = StreamReader::new(ReadLimits::default());
        let mut frames = Vec::new();
        for byte in input.as_bytes() {
            reader.feed(std::slice::from_ref(byte));
            frames.extend(read_all(&mut reader).unwrap());
        }
        let read = elements(&frames);
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].raw, stanza);
        assert_eq!(
            read[1].raw,
            "<presence to='bot.localhost' from='u@localhost'/>"
        );
        assert!(matches!(frames.last(), Some(Frame::Close)));
    }

    #[test]
    fn whitespace_between_stanzas_is_not_retained() {
        let mut reader = StreamReader::new(ReadLimits::default());
        reader.feed(HEADER.as_bytes());
        read_all(&mut reader).unwrap();
        for _ in 0..200_000 {
            reader.feed(b" ");
            read_all(&mut reader).unwrap();
            assert!(
                reader.unaccounted.len()
                    <= limits::DEFAULT_MAX_STANZA_BYTES + limits::XML_TOKEN_SLACK_BYTES
            );
        }
        reader.feed(b"<message to='bot.localhost' from='a@b'/>");
        let frames = read_all(&mut reader).unwrap();
        assert_eq!(
            elements(&frames)[0].raw,
            "<message to='bot.localhost' from='a@b'/>"
        );
    }

    #[test]
    fn whitespace_between_stanzas_never_counts_toward_the_stanza_limit() {
        let limits = ReadLimits {
            max_stanza_bytes: 1024,
            max_depth: 8,
        };
        let mut reader = StreamReader::new(limits);
        reader.feed(HEADER.as_bytes());
        read_all(&mut reader).unwrap();
        for chunk in [" ".repeat(300 * 1024), "\n\t\r ".repeat(50_000)] {
            reader.feed(chunk.as_bytes());
            read_all(&mut reader).unwrap();
        }
        reader.feed(b"<message to='bot.localhost' from='a@b'/>  ");
        let frames = read_all(&mut reader).unwrap();
        assert_eq!(
            elements(&frames)[0].raw,
            "<message to='bot.localhost' from='a@b'/>"
        );
        assert!(reader.input.is_empty() && reader.unaccounted.is_empty());
    }

    #[test]
    fn oversize_stanza_is_refused_while_reading() {
        let limits = ReadLimits {
            max_stanza_bytes: 1024,
            max_depth: 64,
        };
        let mut reader = StreamReader::new(limits);
        reader.feed(HEADER.as_bytes());
        read_all(&mut reader).unwrap();
        reader.feed(b"<message to='bot.localhost' from='a@b'><body>");
        let mut result = Ok(Vec::new());
        for _ in 0..100 {
            reader.feed(&[b'x'; 100]);
            result = read_all(&mut reader);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(
            result.unwrap_err(),
            CodecError::StanzaTooLarge { limit: 1024 }
        );
        assert!(
            reader.input.is_empty(),
            "nothing is retained after the error"
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let limits = ReadLimits {
            max_stanza_bytes: 1 << 20,
            max_depth: 8,
        };
        let mut reader = StreamReader::new(limits);
        reader.feed(HEADER.as_bytes());
        reader.feed(b"<message to='bot.localhost' from='a@b'>");
        reader.feed("<x>".repeat(8).as_bytes());
        assert_eq!(
            read_all(&mut reader).unwrap_err(),
            CodecError::TooDeep { limit: 8 }
        );
        let mut ok = StreamReader::new(limits);
        ok.feed(HEADER.as_bytes());
        ok.feed(
            format!(
                "<message to='bot.localhost' from='a@b'>{}{}</message>",
                "<x>".repeat(7),
                "</x>".repeat(7)
            )
            .as_bytes(),
        );
        assert_eq!(elements(&read_all(&mut ok).unwrap()).len(), 1);
    }

    #[test]
    fn restricted_xml_is_refused_as_such() {
        for bad in [
            "<!DOCTYPE foo [<!ENTITY x 'y'>]>",
            "<message to='a' from='b'><?pi x?></message>",
            "<message to='a' from='b'><!-- c --></message>",
            "<!-- c --><message to='a' from='b'/>",
        ] {
            let result = read_after_header(bad);
            assert!(
                matches!(result, Err(CodecError::RestrictedXml(_))),
                "{bad:?} gave {result:?}"
            );
            assert_eq!(result.unwrap_err().stream_condition(), "restricted-xml");
        }
    }

    #[test]
    fn malformed_xml_is_refused() {
        for bad in [
            "<message to='a' from='b'>&x;</message>",
            "<message to='a' from='b'></mess>",
            "<message to='a' from='b'><u:x/></message>",
            "<message to='a' to='b'>\u{0}</message>",
        ] {
            let result = read_after_header(bad);
            assert!(
                matches!(result, Err(CodecError::NotWellFormed(_))),
                "{bad:?} gave {result:?}"
            );
            assert_eq!(result.unwrap_err().stream_condition(), "not-well-formed");
        }
    }

    #[test]
    fn an_empty_cdata_section_keeps_the_raw_text_of_every_stanza_exact() {
        let first = "<message to='a@b'>a<![CDATA[]]>b<![CDATA[]]><![CDATA[]]></message>";
        let second = "<message to='c@d' from='e@f'><body>secret</body></message>";
        let mut reader = StreamReader::new(ReadLimits::default());
        reader.feed(HEADER.as_bytes());
        reader.feed(b"<![CDATA[]]>");
        reader.feed(first.as_bytes());
        reader.feed(second.as_bytes());
        let frames = read_all(&mut reader).unwrap();
        let read = elements(&frames);
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].raw, first);
        assert_eq!(read[0].element.text(), "ab");
        assert_eq!(read[1].raw, second);
        assert_eq!(read[1].element.attr("to"), Some("c@d"));
    }

    #[test]
    fn a_repeated_attribute_is_refused_as_not_well_formed() {
        for bad in [
            "<message to='a@b' to='c@d'/>",
            "<message xmlns='urn:evil' xmlns='jabber:component:accept' to='a@b'/>",
            "<message to='a@b'><x xmlns:p='urn:p' p:y='1' p:y='2'/></message>",
        ] {
            let result = read_after_header(bad);
            assert!(
                matches!(result, Err(CodecError::NotWellFormed(ref why)) if why.contains("twice")),
                "{bad:?} gave {result:?}"
            );
        }
        // The same name on two elements is no repetition.
        let fine = "<message to='a@b'><x id='1'/><y id='1'/></message>";
        assert_eq!(elements(&read_after_header(fine).unwrap())[0].raw, fine);
    }

    #[test]
    fn a_doctype_before_the_stream_is_refused() {
        let mut reader = StreamReader::new(ReadLimits::default());
        reader.feed(b"<?xml version='1.0'?><!DOCTYPE stream:stream><stream:stream>");
        assert!(matches!(
            read_all(&mut reader),
            Err(CodecError::RestrictedXml(_))
        ));
    }

    #[test]
    fn a_long_attribute_within_the_stanza_limit_is_read_and_a_longer_one_hits_the_limit() {
        let limits = ReadLimits {
            max_stanza_bytes: 200 * 1024,
            max_depth: 64,
        };
        let mut reader = StreamReader::new(limits);
        reader.feed(HEADER.as_bytes());
        let value = "v".repeat(150 * 1024);
        reader.feed(format!("<message to='a@bot' from='b@c' x='{value}'/>").as_bytes());
        let frames = read_all(&mut reader).unwrap();
        assert_eq!(
            elements(&frames)[0].element.attr("x").map(str::len),
            Some(value.len())
        );
        reader.feed(b"<message to='a@bot' from='b@c' x='");
        let mut result = Ok(Vec::new());
        for _ in 0..300 {
            reader.feed(&[b'v'; 1024]);
            result = read_all(&mut reader);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(
            result.unwrap_err(),
            CodecError::StanzaTooLarge { limit: 200 * 1024 }
        );
    }

    #[test]
    fn a_redundant_stream_namespace_is_left_out_of_the_raw_text() {
        let frames = read_after_header(
            "<message xmlns='jabber:component:accept' to='a@bot' from='b@c'><x xmlns='urn:x'/></message>",
        )
        .unwrap();
        let read = elements(&frames)[0];
        assert_eq!(
            read.raw,
            "<message to='a@bot' from='b@c'><x xmlns='urn:x'/></message>"
        );
        assert_eq!(read.element.ns(), NS_COMPONENT);
    }

    #[test]
    fn wrong_root_is_refused() {
        let mut reader = StreamReader::new(ReadLimits::default());
        reader.feed(b"<html xmlns='http://www.w3.org/1999/xhtml'>");
        assert!(matches!(read_all(&mut reader), Err(CodecError::BadRoot(_))));
    }

    #[test]
    fn parse_stanza_accepts_namespace_less_hook_xml() {
        let read = parse_stanza(
            "<message to='a@b'><body>x</body></message>",
            ReadLimits::default(),
        )
        .unwrap();
        assert_eq!(read.element.ns(), NS_COMPONENT);
        assert_eq!(
            read.element.get_child("body", NS_COMPONENT).unwrap().text(),
            "x"
        );
        assert!(parse_stanza("<a/><b/>", ReadLimits::default()).is_err());
        assert!(parse_stanza("<a>", ReadLimits::default()).is_err());
        assert!(parse_stanza("", ReadLimits::default()).is_err());
        assert!(parse_stanza("text", ReadLimits::default()).is_err());
        for smuggled in [
            "<message to='a@b'/></stream:stream><message to='c@d'/>",
            "<message to='a@b'/></stream:stream>",
        ] {
            assert!(
                parse_stanza(smuggled, ReadLimits::default()).is_err(),
                "{smuggled}"
            );
        }
    }

    proptest::proptest! {
        /// However the bytes are cut into reads, the same stanzas come out with the same raw text.
        #[test]
        fn chunking_never_changes_what_is_read(
            texts in proptest::collection::vec("[^\u{0}-\u{8}\u{b}\u{c}\u{e}-\u{1f}\u{fffe}\u{ffff}]{0,40}", 1..6),
            cuts in proptest::collection::vec(1usize..64, 1..40),
        ) {
            let stanzas: Vec<String> = texts
                .iter()
                .enumerate()
                .map(|(i, text)| format!("<message to='a@bot' from='b@c' id='{i}'><body>{}</body></message>", escape_attr(text)))
                .collect();
            let input = format!("{HEADER}{}</stream:stream>", stanzas.join("\n"));
            let mut reader = StreamReader::new(ReadLimits::default());
            let mut frames = Vec::new();
            let mut rest = input.as_bytes();
            let mut cut = cuts.iter().cycle();
            while !rest.is_empty() {
                let n = (*cut.next().unwrap()).min(rest.len());
                reader.feed(&rest[..n]);
                rest = &rest[n..];
                frames.extend(read_all(&mut reader).unwrap());
            }
            let read = elements(&frames);
            proptest::prop_assert_eq!(read.len(), stanzas.len());
            for ((element, raw), text) in read.iter().zip(&stanzas).zip(&texts) {
                proptest::prop_assert_eq!(&element.raw, raw);
                proptest::prop_assert_eq!(element.element.get_child("body", NS_COMPONENT).unwrap().text(), text.as_str());
            }
            proptest::prop_assert!(matches!(frames.last(), Some(Frame::Close)));
        }

        /// Arbitrary bytes never panic the reader, and an error is final.
        #[test]
        fn arbitrary_bytes_are_refused_or_read_without_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut reader = StreamReader::new(ReadLimits { max_stanza_bytes: 1024, max_depth: 8 });
            reader.feed(HEADER.as_bytes());
            reader.feed(&bytes);
            if read_all(&mut reader).is_err() {
                reader.feed(b"<message to='a' from='b'/>");
                proptest::prop_assert!(reader.next_frame().is_err());
            }
        }
    }
}
