//! Signatures of webhook calls by Standard Webhooks 1.0 (README, "Signed calls"): the
//! `webhook-signature` header is `v1,` followed by the base64 HMAC-SHA256 of
//! `"{id}.{timestamp}.{body}"`, one signature per configured secret, separated by spaces, so that a
//! hook can move to a new secret while the old one is still accepted.
//!
//! This module owns the secret format (`whsec_` followed by the key in base64) and the
//! signature; it is pure and does no I/O. It must never show a key: [`Signer`]'s `Debug` gives
//! only how many keys it holds, and [`SecretError`] says what is wrong and which secret (by
//! position), never the secret itself.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The delivery's id: the same on every attempt, for the hook to deduplicate.
pub(crate) const HEADER_ID: &str = "webhook-id";
/// Unix seconds when the call was signed; verifiers refuse stale ones (replay protection).
pub(crate) const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// `v1,<base64>` per secret, space-separated.
pub(crate) const HEADER_SIGNATURE: &str = "webhook-signature";

/// What every Standard Webhooks secret starts with.
pub(crate) const SECRET_PREFIX: &str = "whsec_";

/// Standard base64 with or without the trailing `=`: verifiers accept both, and an operator who
/// copied a secret without its padding means the same key.
const SECRET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Which of the configured secrets an error is about; shown only when there are several.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) index: usize,
    pub(crate) count: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.count > 1 {
            write!(f, "(secret {} of {}) ", self.index + 1, self.count)
        } else {
            Ok(())
        }
    }
}

/// Why a signing secret is refused. The messages follow a configuration key's name, as in
/// "`webhook.signing_secret` does not start with …".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SecretError {
    #[error("holds no secret: give at least one `whsec_…` secret, or leave signing unset")]
    NoSecret,
    #[error(
        "{0}does not start with `whsec_`: a Standard Webhooks secret is `whsec_` followed by the key in base64"
    )]
    Prefix(Position),
    #[error(
        "{0}is not valid base64 after `whsec_`: the part after the prefix must be the key in standard base64"
    )]
    Base64(Position),
    #[error("{0}has an empty key after `whsec_`")]
    Empty(Position),
    #[error("{0}cannot be used as an HMAC-SHA256 key")]
    Key(Position),
}

/// Signs webhook calls with one or more keys.
#[derive(Clone)]
pub(crate) struct Signer {
    /// One keyed HMAC per secret, in the configured order; cloned for each signature.
    keys: Vec<Hmac<Sha256>>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({} keys, [redacted])", self.keys.len())
    }
}

impl Signer {
    /// Builds a signer from secrets of the form `whsec_<base64 of the key>`; all are checked,
    /// and the first bad one is reported by position.
    pub(crate) fn new<S: AsRef<str>>(secrets: &[S]) -> Result<Signer, SecretError> {
        if secrets.is_empty() {
            return Err(SecretError::NoSecret);
        }
        let count = secrets.len();
        let keys = secrets
            .iter()
            .enumerate()
            .map(|(index, secret)| key(secret.as_ref(), Position { index, count }))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Signer { keys })
    }

    /// How many secrets sign each call.
    #[cfg(test)]
    pub(crate) fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// The `webhook-signature` header value for this id, timestamp (Unix seconds) and the exact
    /// body bytes sent.
    pub(crate) fn sign(&self, id: &str, timestamp_secs: u64, body: &[u8]) -> String {
        let timestamp = timestamp_secs.to_string();
        let mut header = String::with_capacity(self.keys.len() * 48);
        for key in &self.keys {
            let mut mac = key.clone();
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.as_bytes());
            mac.update(b".");
            mac.update(body);
            if !header.is_empty() {
                header.push(' ');
            }
            header.push_str("v1,");
            STANDARD.encode_string(mac.finalize().into_bytes(), &mut header);
        }
        header
    }
}

/// The keyed HMAC of one secret.
fn key(secret: &str, position: Position) -> Result<Hmac<Sha256>, SecretError> {
    let encoded = secret
        .strip_prefix(SECRET_PREFIX)
        .ok_or(SecretError::Prefix(position))?;
    // The decoder's own error names the offending byte, which is part of the secret: dropped.
    let key = SECRET_BASE64
        .decode(encoded)
        .map_err(|_| SecretError::Base64(position))?;
    if key.is_empty() {
        return Err(SecretError::Empty(position));
    }
    <Hmac<Sha256> as Mac>::new_from_slice(&key).map_err(|_| SecretError::Key(position))
}

/// Now, in Unix seconds, for `webhook-timestamp`; a clock before 1970 gives 0 (the hook's
/// tolerance check then refuses the call, which is the right outcome for a broken clock).
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TIMESTAMP: u64 = 1614265330;
    const SPEC_BODY: &str = r#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn other_secret() -> String {
        format!(
            "{SECRET_PREFIX}{}",
            STANDARD.encode(b"a second key, for the rotation test")
        )
    }

    #[test]
    fn the_specification_test_vector() {
        let signer = Signer::new(&[SPEC_SECRET]).unwrap();
        assert_eq!(
            signer.sign(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY.as_bytes()),
            SPEC_SIGNATURE
        );
    }

    #[test]
    fn id_timestamp_and_body_are_all_signed() {
        let signer = Signer::new(&[SPEC_SECRET]).unwrap();
        let body = SPEC_BODY.as_bytes();
        assert_ne!(
            signer.sign("msg_other", SPEC_TIMESTAMP, body),
            SPEC_SIGNATURE
        );
        assert_ne!(
            signer.sign(SPEC_ID, SPEC_TIMESTAMP + 1, body),
            SPEC_SIGNATURE
        );
        assert_ne!(
            signer.sign(SPEC_ID, SPEC_TIMESTAMP, br#"{"test": 2432232315}"#),
            SPEC_SIGNATURE
        );
    }

    #[test]
    fn several_secrets_give_one_signature_each_in_order() {
        let other = other_secret();
        let both = Signer::new(&[SPEC_SECRET, other.as_str()]).unwrap();
        assert_eq!(both.key_count(), 2);
        let header = both.sign(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY.as_bytes());
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2, "{header}");
        assert_eq!(parts[0], SPEC_SIGNATURE);
        let alone = Signer::new(&[other.as_str()]).unwrap();
        assert_eq!(
            parts[1],
            alone.sign(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY.as_bytes())
        );
        assert_ne!(parts[0], parts[1]);
    }

    #[test]
    fn a_secret_without_padding_is_the_same_key() {
        // 35 key bytes: the base64 form ends in one `=`.
        let padded = other_secret();
        assert!(padded.ends_with('='), "{padded}");
        let unpadded = padded.trim_end_matches('=');
        let a = Signer::new(&[padded.as_str()]).unwrap();
        let b = Signer::new(&[unpadded]).unwrap();
        assert_eq!(a.sign("i", 1, b"x"), b.sign("i", 1, b"x"));
    }

    #[test]
    fn malformed_secrets_are_refused_saying_what_is_wrong_but_not_the_secret() {
        let single = Position { index: 0, count: 1 };
        let cases: [(&str, SecretError); 5] = [
            (
                "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                SecretError::Prefix(single),
            ),
            (
                "WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                SecretError::Prefix(single),
            ),
            (
                "whsec_MfKQ9r8G!YqrTwjUPD8ILPZIo2LaLaSw",
                SecretError::Base64(single),
            ),
            (
                "whsec_MfKQ9r8GKYqr TwjUPD8ILPZIo2LaLaSw",
                SecretError::Base64(single),
            ),
            ("whsec_", SecretError::Empty(single)),
        ];
        for (secret, expected) in cases {
            let error = Signer::new(&[secret]).unwrap_err();
            assert_eq!(error, expected, "{secret}");
            for shown in [error.to_string(), format!("{error:?}")] {
                let key_part = secret.trim_start_matches("whsec_");
                assert!(
                    key_part.is_empty() || !shown.contains(key_part),
                    "the error shows the secret: {shown}"
                );
                assert!(!shown.contains("!Yqr"), "{shown}");
            }
        }
        let none: [&str; 0] = [];
        assert_eq!(Signer::new(&none).unwrap_err(), SecretError::NoSecret);
    }

    #[test]
    fn with_several_secrets_the_bad_one_is_named_by_position() {
        let other = other_secret();
        let error = Signer::new(&[SPEC_SECRET, other.as_str(), "not-a-secret"]).unwrap_err();
        assert_eq!(error, SecretError::Prefix(Position { index: 2, count: 3 }));
        let message = error.to_string();
        assert!(message.contains("secret 3 of 3"), "{message}");
        assert!(!message.contains("not-a-secret"), "{message}");
        // With one secret there is nothing to number.
        let message = Signer::new(&["nope"]).unwrap_err().to_string();
        assert!(
            message.starts_with("does not start with `whsec_`"),
            "{message}"
        );
    }

    #[test]
    fn debug_never_shows_a_key() {
        let other = other_secret();
        let signer = Signer::new(&[SPEC_SECRET, other.as_str()]).unwrap();
        let shown = format!("{signer:?} {signer:#?}");
        assert_eq!(format!("{signer:?}"), "Signer(2 keys, [redacted])");
        for secret in [SPEC_SECRET, other.as_str()] {
            let encoded = secret.trim_start_matches(SECRET_PREFIX);
            assert!(!shown.contains(encoded), "{shown}");
        }
        assert!(!shown.contains("a second key"), "{shown}");
    }
}
