//! What the logs may show of text that comes from outside: bounded, escaped excerpts of
//! stanzas and hook answers, and URLs without their credentials.
//!
//! A log line must stay one short line whatever a peer sends (a 200 KB stanza, control
//! characters, a forged newline), and must never carry a password or token that an operator put
//! in the hook's URL. Pure functions; a leaf module.

use std::fmt::Write as _;

/// The most characters of outside text a log line shows.
pub(crate) const EXCERPT_CHARS: usize = 200;

/// `text` with control characters and quotes escaped, cut after [`EXCERPT_CHARS`] characters
/// with a note of its full size.
pub(crate) fn excerpt(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    for c in chars.by_ref().take(EXCERPT_CHARS) {
        let _ = write!(out, "{}", c.escape_debug());
    }
    if chars.next().is_some() {
        let _ = write!(out, "… ({} bytes in all)", text.len());
    }
    out
}

/// A URL as logs and messages show it: any `user:password@` and the query (which often
/// carries a token) are replaced by `REDACTED`.
pub(crate) fn redacted_url(url: &url::Url) -> String {
    let mut shown = url.clone();
    let had_credentials = !shown.username().is_empty() || shown.password().is_some();
    if had_credentials {
        let _ = shown.set_password(None);
        let _ = shown.set_username("REDACTED");
    }
    if shown.query().is_some() {
        shown.set_query(Some("REDACTED"));
    }
    shown.set_fragment(None);
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_short_escaped_single_lines() {
        assert_eq!(excerpt("<message/>"), "<message/>");
        assert_eq!(excerpt("a\nb\u{1}\"c"), "a\\nb\\u{1}\\\"c");
        let long = "x".repeat(100_000);
        let shown = excerpt(&long);
        assert!(shown.starts_with(&"x".repeat(EXCERPT_CHARS)));
        assert!(shown.ends_with("… (100000 bytes in all)"), "{shown}");
        assert!(shown.len() < 300);
    }

    #[test]
    fn urls_lose_credentials_and_query() {
        let url =
            url::Url::parse("http://user:PASS@hooks.example.org:8080/hook?token=T#f").unwrap();
        let shown = redacted_url(&url);
        assert_eq!(
            shown,
            "http://REDACTED@hooks.example.org:8080/hook?REDACTED"
        );
        assert!(!shown.contains("PASS") && !shown.contains("T#"));
        let plain = url::Url::parse("https://hooks.example.org/xmpp").unwrap();
        assert_eq!(redacted_url(&plain), "https://hooks.example.org/xmpp");
    }
}
