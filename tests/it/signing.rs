//! Signed webhook calls (README, "Signed calls": Standard Webhooks 1.0) and the delivery id
//! (README, "Delivery"): every call carries `webhook-id`; with `signing_secret` set, also
//! `webhook-timestamp` and a
//! `webhook-signature` that verifies over the exact body bytes the hook received, one per secret.
//! The signatures are recomputed here independently, and checked once more by the Standard
//! Webhooks Python library when it is installed.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::helpers::*;

const ENV_SIGNING_SECRET: &str = "COMPONENT_HTTP_WEBHOOK_SIGNING_SECRET";

/// Throwaway signing keys; the first is the specification's test vector secret.
const FIRST_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SECOND_SECRET: &str = "whsec_dGhyb3dhd2F5IHNlY29uZCBzaWduaW5nIGtleQ==";
/// A key the bridge is not configured with.
const UNRELATED_SECRET: &str = "whsec_dW5yZWxhdGVkIHRocm93YXdheSBrZXk=";

/// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, computed here without the bridge's code.
fn expected_signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let encoded = secret
        .strip_prefix("whsec_")
        .expect("test secrets start with whsec_");
    let key = STANDARD.decode(encoded).expect("test secrets are base64");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

fn required(request: &Request, name: &str) -> String {
    request.header(name).unwrap_or_else(|| {
        panic!(
            "the hook call has no `{name}` header; headers: {:?}",
            request.headers
        )
    })
}

/// Checks `webhook-id` and `webhook-timestamp` and returns the signatures of the call.
fn signatures(request: &Request) -> Vec<String> {
    let id = required(request, "webhook-id");
    assert!(id.starts_with("msg_"), "webhook-id {id:?}");
    let timestamp = required(request, "webhook-timestamp");
    let seconds: u64 = timestamp
        .parse()
        .unwrap_or_else(|_| panic!("webhook-timestamp is not Unix seconds: {timestamp:?}"));
    let now = now_secs();
    assert!(
        seconds.abs_diff(now) <= 5,
        "webhook-timestamp {seconds} is not within a few seconds of now ({now})"
    );
    required(request, "webhook-signature")
        .split(' ')
        .map(str::to_owned)
        .collect()
}

/// Asserts that the signatures of the call are exactly those of `secrets`, in order.
fn assert_signed_by(request: &Request, secrets: &[&str]) {
    let got = signatures(request);
    let id = required(request, "webhook-id");
    let timestamp = required(request, "webhook-timestamp");
    let expected: Vec<String> = secrets
        .iter()
        .map(|secret| expected_signature(secret, &id, &timestamp, &request.raw))
        .collect();
    assert_eq!(
        got,
        expected,
        "the signatures do not verify over the body received: {:?}",
        String::from_utf8_lossy(&request.raw)
    );
}

fn signing_table(value: &str) -> String {
    format!("[webhook]\nsigning_secret = {value}")
}

#[tokio::test]
async fn a_signed_call_carries_an_id_a_fresh_timestamp_and_a_signature_that_verifies() {
    let mut stack = Stack::start(Reply::echo, |c| {
        c.table(&signing_table(&format!("\"{FIRST_SECRET}\"")))
    })
    .await;
    let reply = stack
        .round_trip("alice@localhost/phone", "s1", "sign me")
        .await;
    assert_echo(&reply, "sign me");
    let request = stack.hook.request_with_id("s1").await;
    assert_signed_by(&request, &[FIRST_SECRET]);
    assert!(
        !stack.bridge.log().contains(&FIRST_SECRET[6..]),
        "the log shows the signing secret"
    );
}

#[tokio::test]
async fn with_two_secrets_both_signatures_are_present() {
    let mut stack = Stack::start(Reply::echo, |c| {
        c.table(&signing_table(&format!(
            "[\"{FIRST_SECRET}\", \"{SECOND_SECRET}\"]"
        )))
    })
    .await;
    stack
        .round_trip("alice@localhost/phone", "r1", "rotate")
        .await;
    let request = stack.hook.request_with_id("r1").await;
    assert_signed_by(&request, &[FIRST_SECRET, SECOND_SECRET]);
}

#[tokio::test]
async fn signing_secrets_from_a_file_or_the_environment_sign_too() {
    let mut stack = Stack::start(Reply::echo, |c| {
        c.file(
            "signing-secrets",
            &format!("{SECOND_SECRET}\n{FIRST_SECRET}\n"),
        )
        .table("[webhook]\nsigning_secret_file = \"signing-secrets\"")
    })
    .await;
    stack
        .round_trip("alice@localhost/phone", "f1", "file")
        .await;
    let request = stack.hook.request_with_id("f1").await;
    assert_signed_by(&request, &[SECOND_SECRET, FIRST_SECRET]);

    let mut stack = Stack::start(Reply::echo, |c| {
        c.env(
            ENV_SIGNING_SECRET,
            &format!("{FIRST_SECRET},{SECOND_SECRET}"),
        )
    })
    .await;
    stack.round_trip("alice@localhost/phone", "e1", "env").await;
    let request = stack.hook.request_with_id("e1").await;
    assert_signed_by(&request, &[FIRST_SECRET, SECOND_SECRET]);
}

#[tokio::test]
async fn every_stanza_gets_its_own_webhook_id_also_across_restarts() {
    let mut stack = Stack::start(Reply::echo, |c| {
        c.table(&signing_table(&format!("\"{FIRST_SECRET}\"")))
    })
    .await;
    // Same conversation and different conversations.
    stack.round_trip("alice@localhost/phone", "d1", "one").await;
    stack.round_trip("alice@localhost/phone", "d2", "two").await;
    stack
        .round_trip("bob@localhost/laptop", "d3", "three")
        .await;
    let mut ids = Vec::new();
    for stanza in ["d1", "d2", "d3"] {
        let request = stack.hook.request_with_id(stanza).await;
        assert_signed_by(&request, &[FIRST_SECRET]);
        ids.push(required(&request, "webhook-id"));
    }

    // A restarted bridge numbers again from the start; its ids must still be new.
    let mut restarted = Stack::start(Reply::echo, |c| c).await;
    restarted
        .round_trip("alice@localhost/phone", "d1", "one")
        .await;
    let request = restarted.hook.request_with_id("d1").await;
    ids.push(required(&request, "webhook-id"));

    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "webhook-ids repeat: {ids:?}");
}

#[tokio::test]
async fn without_a_secret_the_id_is_still_there_and_nothing_is_signed() {
    // An empty variable counts as unset; it also hides one inherited from the test's shell.
    let mut stack = Stack::start(Reply::echo, |c| c.env(ENV_SIGNING_SECRET, "")).await;
    stack
        .round_trip("alice@localhost/phone", "u1", "plain")
        .await;
    let request = stack.hook.request_with_id("u1").await;
    let id = required(&request, "webhook-id");
    assert!(id.starts_with("msg_"), "webhook-id {id:?}");
    for name in ["webhook-signature", "webhook-timestamp"] {
        assert_eq!(
            request.header(name),
            None,
            "an unsigned call carries `{name}`"
        );
    }
}

#[tokio::test]
async fn a_malformed_signing_secret_exits_2_naming_the_key_not_the_secret() {
    let server = XmppServer::start().await;
    let hook = Hook::echo().await;
    let bad = "whsec_not%base64%at-all";
    let text = format!(
        "{}\n[webhook]\nsigning_secret = [\"{FIRST_SECRET}\", \"{bad}\"]\n",
        BridgeConfig::new(&server, &hook.url()).text()
    );
    let finished = run_config(&text, &[]).await;
    assert_eq!(finished.code(), Some(2), "stderr:\n{}", finished.stderr);
    assert!(
        finished.stderr.contains("webhook.signing_secret")
            && finished.stderr.contains("secret 2 of 2"),
        "stderr:\n{}",
        finished.stderr
    );
    assert!(
        !finished.stderr.contains("not%base64") && !finished.stderr.contains(&FIRST_SECRET[6..]),
        "the message shows a secret:\n{}",
        finished.stderr
    );
    assert_eq!(
        server.connections(),
        0,
        "a bad configuration never connects"
    );
}

// ---------------------------------------------------------------------------------------------
// An independent verifier: the Standard Webhooks reference library for Python.

const VERIFY_PY: &str = r#"
import json, sys
import standardwebhooks
secret, headers = sys.argv[1], json.loads(sys.argv[2])
body = sys.stdin.buffer.read()
standardwebhooks.Webhook(secret).verify(body, headers)
"#;

fn python_has_standardwebhooks() -> bool {
    Command::new("python3")
        .args(["-c", "import standardwebhooks"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Runs the library's `verify` on the body and headers as the hook received them; its stderr
/// when it refuses them.
fn python_verify(secret: &str, request: &Request) -> Result<(), String> {
    let headers: BTreeMap<String, String> = request
        .headers
        .iter()
        .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_owned())))
        .collect();
    let headers = serde_json::to_string(&headers).expect("headers as JSON");
    let mut child = Command::new("python3")
        .args(["-c", VERIFY_PY, secret, &headers])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    child
        .stdin
        .take()
        .expect("python3's stdin")
        .write_all(&request.raw)
        .expect("write the body to python3");
    let output = child.wait_with_output().expect("wait for python3");
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[tokio::test]
async fn the_standard_webhooks_python_library_verifies_the_calls() {
    if !python_has_standardwebhooks() {
        let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
        assert!(
            !ci,
            "the Python package `standardwebhooks` is required for this test (CI=true): pip install standardwebhooks"
        );
        eprintln!(
            "notice: skipping the Standard Webhooks cross-check: python3 with `standardwebhooks` is not installed (pip install standardwebhooks)"
        );
        return;
    }
    let mut stack = Stack::start(Reply::echo, |c| {
        c.table(&signing_table(&format!(
            "[\"{FIRST_SECRET}\", \"{SECOND_SECRET}\"]"
        )))
    })
    .await;
    // Characters that JSON and UTF-8 encode in more than one way: the signature covers the bytes.
    let said = "ünïcödé \"quoted\" & <tagged> ✓";
    stack.round_trip("alice@localhost/phone", "py1", said).await;
    let request = stack.hook.request_with_id("py1").await;

    // A hook that knows only the old key, or only the new one, accepts the call.
    for secret in [FIRST_SECRET, SECOND_SECRET] {
        if let Err(stderr) = python_verify(secret, &request) {
            panic!("standardwebhooks refused a call signed with a configured secret:\n{stderr}");
        }
    }
    // The cross-check is real: a key the bridge does not have is refused.
    assert!(
        python_verify(UNRELATED_SECRET, &request).is_err(),
        "standardwebhooks accepted a call with a key the bridge never had"
    );
}
