//! What the component writes on the stream besides stanzas: its stream header, a stream error
//! before it closes, and the escaping of text put into XML it builds by hand.

use crate::xmpp::codec::{NS_COMPONENT, NS_STREAMS};

/// Namespace of stream error conditions (RFC 6120 §4.9).
pub(crate) const NS_STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";

/// The stream header the component opens its side of the stream with (README, "The XMPP link").
pub fn stream_header(domain: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='{NS_COMPONENT}' xmlns:stream='{NS_STREAMS}' to='{}'>",
        escape_attr(domain)
    )
}

/// A stream error and the close of the stream, as the component ends a stream it cannot read.
pub(crate) fn stream_error_xml(condition: &str, text: &str) -> String {
    format!(
        "<stream:error><{condition} xmlns='{NS_STREAM_ERRORS}'/><text xmlns='{NS_STREAM_ERRORS}'>{}</text></stream:error></stream:stream>",
        escape_attr(text)
    )
}

/// Escapes a string for use inside a single- or double-quoted attribute value (or text).
pub fn escape_attr(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            // XML normalises literal line ends (and, in attributes, all white space); character
            // references survive parsing unchanged.
            '\r' => out.push_str("&#xD;"),
            '\n' => out.push_str("&#xA;"),
            '\t' => out.push_str("&#x9;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_header_escapes_the_domain() {
        assert!(stream_header("a'b").contains("to='a&apos;b'"));
    }

    #[test]
    fn a_stream_error_carries_its_escaped_text_and_closes_the_stream() {
        let xml = stream_error_xml("policy-violation", "a<b");
        assert!(xml.contains(&format!("<policy-violation xmlns='{NS_STREAM_ERRORS}'/>")));
        assert!(xml.contains(">a&lt;b</text>"));
        assert!(xml.ends_with("</stream:stream>"));
    }
}
