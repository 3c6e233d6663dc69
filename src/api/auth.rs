//! Who is calling the API: `Authorization: Bearer TOKEN`, or HTTP Basic with `LOCALPART@DOMAIN`
//! and the token as password (as `curl -u` scripts written for mod_post_msg send it), and which
//! localparts that caller may send as. Tokens are compared in constant time and never shown.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine;
use subtle::ConstantTimeEq;

use crate::config::ApiToken;

/// A caller whose token matched.
pub(crate) struct Caller<'a> {
    pub(crate) token: &'a ApiToken,
    /// The user of a Basic header: the localpart it asks to send as.
    pub(crate) basic_user: Option<String>,
}

/// Why a request is not authenticated; each says what to send instead.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AuthError {
    Missing,
    Malformed,
    Unknown,
}

impl AuthError {
    pub(crate) fn detail(&self) -> &'static str {
        match self {
            AuthError::Missing => {
                "no credentials: send `Authorization: Bearer TOKEN` with a token of [[api.tokens]], or HTTP Basic with LOCALPART@DOMAIN and the token as password"
            }
            AuthError::Malformed => {
                "the Authorization header is neither `Bearer TOKEN` nor valid HTTP Basic (base64 of USER:TOKEN)"
            }
            AuthError::Unknown => "the token is not one of [[api.tokens]]",
        }
    }
}

/// Finds the token the request carries among `tokens`.
pub(crate) fn authenticate<'a>(
    headers: &HeaderMap,
    tokens: &'a [ApiToken],
) -> Result<Caller<'a>, AuthError> {
    let value = headers
        .get(AUTHORIZATION)
        .ok_or(AuthError::Missing)?
        .to_str()
        .map_err(|_| AuthError::Malformed)?;
    let (scheme, credentials) = value.trim().split_once(' ').ok_or(AuthError::Malformed)?;
    let credentials = credentials.trim();
    let (presented, basic_user) = if scheme.eq_ignore_ascii_case("bearer") {
        (credentials.to_owned(), None)
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or(AuthError::Malformed)?;
        let (user, password) = decoded.split_once(':').ok_or(AuthError::Malformed)?;
        (password.to_owned(), Some(user.to_owned()))
    } else {
        return Err(AuthError::Malformed);
    };
    // Every token is compared, so the time taken does not tell which one nearly matched.
    let mut found = None;
    for token in tokens {
        if bool::from(token.token.expose().as_bytes().ct_eq(presented.as_bytes())) {
            found = Some(token);
        }
    }
    found
        .map(|token| Caller { token, basic_user })
        .ok_or(AuthError::Unknown)
}

/// Whether `localpart` ("" for the bare domain) matches one of the token's `from` patterns.
pub(crate) fn may_send_as(token: &ApiToken, localpart: &str) -> bool {
    token
        .from
        .iter()
        .any(|pattern| glob_matches(pattern, localpart))
}

/// The localpart a token sends as when the request names none: its first pattern without `*`.
pub(crate) fn default_localpart(token: &ApiToken) -> Option<&str> {
    token
        .from
        .iter()
        .find(|pattern| !pattern.contains('*'))
        .map(String::as_str)
}

/// `*` matches any run of characters; everything else matches itself.
fn glob_matches(pattern: &str, text: &str) -> bool {
    let Some((first, rest)) = pattern.split_once('*') else {
        return pattern == text;
    };
    let Some(mut remaining) = text.strip_prefix(first) else {
        return false;
    };
    let mut parts: Vec<&str> = rest.split('*').collect();
    let last = parts.pop().unwrap_or_default();
    for part in parts {
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Secret, TokenSource};

    fn token(name: &str, value: &str, from: &[&str]) -> ApiToken {
        ApiToken {
            name: name.into(),
            token: Secret::for_tests(value),
            source: TokenSource::Inline,
            from: from.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn bearer_and_basic_find_their_token_and_nothing_else_does() {
        let tokens = [
            token("a", "aaaaaaaaaaaaaaaa", &["alerts"]),
            token("b", "bbbbbbbbbbbbbbbb", &["ops-*"]),
        ];
        let caller = authenticate(&headers("Bearer bbbbbbbbbbbbbbbb"), &tokens).unwrap();
        assert_eq!(caller.token.name, "b");
        assert_eq!(caller.basic_user, None);
        let basic = base64::engine::general_purpose::STANDARD
            .encode("alerts@bot.example.org:aaaaaaaaaaaaaaaa");
        let caller = authenticate(&headers(&format!("Basic {basic}")), &tokens).unwrap();
        assert_eq!(caller.token.name, "a");
        assert_eq!(caller.basic_user.as_deref(), Some("alerts@bot.example.org"));

        assert_eq!(
            authenticate(&HeaderMap::new(), &tokens).err(),
            Some(AuthError::Missing)
        );
        for bad in [
            "Bearer",
            "Token aaaaaaaaaaaaaaaa",
            "Basic !!!",
            "Basic YWJj",
        ] {
            assert_eq!(
                authenticate(&headers(bad), &tokens).err(),
                Some(AuthError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            authenticate(&headers("Bearer aaaaaaaaaaaaaaaab"), &tokens).err(),
            Some(AuthError::Unknown)
        );
    }

    #[test]
    fn localparts_match_exactly_or_by_glob() {
        let t = token("t", "tttttttttttttttt", &["alerts", "ops-*", "", "a*z*q"]);
        for ok in ["alerts", "ops-", "ops-db", "", "azq", "abzcdq"] {
            assert!(may_send_as(&t, ok), "{ok}");
        }
        for refused in ["alert", "alertsx", "xops-db", "ops", "abz"] {
            assert!(!may_send_as(&t, refused), "{refused}");
        }
        assert_eq!(default_localpart(&t), Some("alerts"));
        assert_eq!(default_localpart(&token("g", "x", &["ops-*"])), None);
    }
}
