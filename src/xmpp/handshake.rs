//! XEP-0114 §3 authentication: the handshake digest and the meaning of the server's answers.
//! Pure functions; the exchange itself runs in [`crate::xmpp::session`].

use sha1::{Digest, Sha1};

/// Lowercase hex SHA-1 of the stream id followed by the shared secret.
pub fn digest(stream_id: &str, secret: &str) -> String {
    let mut hasher = Sha1::new();
    hasher.update(stream_id.as_bytes());
    hasher.update(secret.as_bytes());
    hex::encode(hasher.finalize())
}

/// The `<handshake>` element the component sends.
pub fn handshake_element(stream_id: &str, secret: &str) -> String {
    format!("<handshake>{}</handshake>", digest(stream_id, secret))
}

/// What an operator should change when the server refuses the component with `condition`;
/// `None` for conditions that are not configuration errors.
pub(crate) fn configuration_advice(condition: &str) -> Option<&'static str> {
    match condition {
        "not-authorized" => Some(
            "the server refused the secret for this domain: in Prosody, make `secret` equal to \
             the component_secret of Component \"DOMAIN\"; in ejabberd, list DOMAIN in the `hosts` \
             of the `ejabberd_service` listener (a domain missing there is refused the same way) \
             with `password` equal to `secret`",
        ),
        "host-unknown" | "improper-addressing" => Some(
            "the server does not know this component domain: add it to the server's configuration \
             (Prosody: Component \"DOMAIN\"; ejabberd: ejabberd_service hosts) or fix `domain`",
        ),
        "conflict" => Some(
            "another connection is already serving this domain: stop the other instance, or give \
             each instance its own domain",
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_lowercase_hex_sha1_of_id_then_secret() {
        // Independently computed: sha1(b"3BF96D32sesame").hexdigest()
        assert_eq!(
            digest("3BF96D32", "sesame"),
            "7a98dc4c9e92493d7fd66a25364c862637789c45"
        );
        assert_eq!(
            handshake_element("abc123", "throwaway"),
            "<handshake>16b1388b2c0edb8d8f5487036ae694d1f56bbba9</handshake>"
        );
    }

    #[test]
    fn configuration_errors_have_advice() {
        for condition in ["not-authorized", "host-unknown", "conflict"] {
            assert!(configuration_advice(condition).is_some());
        }
        assert!(configuration_advice("system-shutdown").is_none());
    }

    #[test]
    fn not_authorized_names_both_servers_causes() {
        let advice = configuration_advice("not-authorized").unwrap_or_default();
        for cause in ["component_secret", "ejabberd_service", "hosts", "password"] {
            assert!(advice.contains(cause), "{cause}: {advice}");
        }
    }
}
