//! The memory budget (README, "Delivery", bounds): with a hook that never answers and the default
//! bounds, stanzas of every adversarial shape (many elements, many attributes, many namespace
//! declarations, much text) are held at a small constant factor of their XML, so the bridge's
//! peak memory stays under the formula the README gives, however they are shaped.

use std::time::Duration;

use crate::helpers::*;

const ECHO: &str = "echo@bot.localhost";
/// Default `queue_max_bytes`.
const QUEUE_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// The README's budget: peak RSS ≤ 48 MiB + 4 × queue_max_bytes.
const BUDGET_KIB: u64 = 48 * 1024 + 4 * QUEUE_MAX_BYTES / 1024;
/// What is pushed at the bridge: more than the queue may hold.
const PUSHED_BYTES: usize = 80 * 1024 * 1024;
/// Each stanza's filler, under the default max_stanza_bytes (256 KiB) with its envelope.
const FILLER_BYTES: usize = 240 * 1024;

fn filler(unit: impl Fn(usize) -> String) -> String {
    let mut text = String::with_capacity(FILLER_BYTES + 64);
    let mut i = 0;
    while text.len() < FILLER_BYTES {
        text.push_str(&unit(i));
        i += 1;
    }
    text
}

async fn peak_with(shape: &str, inner: String) -> u64 {
    let mut stack = Stack::start(|_: &Request| Reply::status(200).held(), |c| c).await;
    let mut sent = 0;
    let mut i = 0;
    while sent < PUSHED_BYTES {
        let stanza = format!(
            "<message from='u{}@localhost/r' to='{ECHO}' id='{shape}{i}' type='chat'><body>x</body>{inner}</message>",
            i % 300
        );
        match stack
            .conn
            .send_within(stanza.as_bytes(), Duration::from_secs(5))
            .await
        {
            Ok(true) => sent += stanza.len(),
            // The bridge stopped reading: it is full, which is the other way to stay bounded.
            _ => break,
        }
        i += 1;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let peak = stack.bridge.memory().peak_kib;
    eprintln!(
        "{shape}: pushed {} MiB in {i} stanzas, peak RSS {} MiB",
        sent >> 20,
        peak / 1024
    );
    assert!(
        sent >= QUEUE_MAX_BYTES as usize,
        "{shape}: only {sent} bytes were taken before the bridge stopped reading"
    );
    assert!(
        peak <= BUDGET_KIB,
        "{shape}: peak RSS {peak} KiB is over the budget of {BUDGET_KIB} KiB"
    );
    peak
}

#[tokio::test]
async fn many_empty_elements() {
    peak_with("elements", filler(|_| "<a/>".to_owned())).await;
}

#[tokio::test]
async fn many_attributes() {
    let attributes = filler(|i| format!(" a{i}=''"));
    peak_with("attributes", format!("<x xmlns='urn:x'{attributes}/>")).await;
}

#[tokio::test]
async fn many_namespace_declarations() {
    peak_with(
        "namespaces",
        filler(|i| format!("<p{i}:x xmlns:p{i}='urn:{i}'/>")),
    )
    .await;
}

#[tokio::test]
async fn much_escaped_text() {
    peak_with(
        "text",
        format!(
            "<y xmlns='urn:y'>{}</y>",
            filler(|_| "&lt;&amp;\"".to_owned())
        ),
    )
    .await;
}
