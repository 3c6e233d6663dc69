//! A failing hook becomes a stanza error the user sees (README, "How the response becomes the
//! reply", its table): the error comes back to the sender from the addressed JID with the same id,
//! with the table's type, condition and text, or the hook's short `text/plain` body as text.

use std::time::Duration;

use crate::harness::ServerKind;
use crate::harness::{
    BOUNCE_AT_ONCE, ClosedPort, Reply, Request, Stack, StanzaErrorInfo, stanza_error, to_xml,
};

struct Case {
    /// Message body; the hook picks its answer from it.
    trigger: &'static str,
    reply: fn() -> Reply,
    type_: &'static str,
    condition: &'static str,
    text: Option<&'static str>,
}

const LONG_TEXT: &str = "this plain text answer is far longer than what may become an error text, so the \
    table's text must be used instead; it goes on and on to pass the limit of two hundred and fifty six \
    bytes that the specification sets for a text/plain body to be copied into the stanza error's text";

fn cases() -> Vec<Case> {
    vec![
        Case {
            trigger: "404",
            reply: || Reply::status(404),
            type_: "cancel",
            condition: "item-not-found",
            text: None,
        },
        Case {
            trigger: "503",
            reply: || Reply::status(503),
            type_: "wait",
            condition: "remote-server-timeout",
            text: Some("Service temporarily unavailable"),
        },
        Case {
            trigger: "429",
            reply: || Reply::status(429).header("retry-after", "0"),
            type_: "wait",
            condition: "resource-constraint",
            text: Some("Too many requests"),
        },
        Case {
            // Followed, the POST would become a GET of a route that only takes POST (405).
            trigger: "302",
            reply: || Reply::status(302).header("location", "/hook"),
            type_: "cancel",
            condition: "service-unavailable",
            text: None,
        },
        Case {
            trigger: "400",
            reply: || Reply::status(400),
            type_: "modify",
            condition: "bad-request",
            text: None,
        },
        Case {
            trigger: "401",
            reply: || Reply::status(401),
            type_: "auth",
            condition: "not-authorized",
            text: None,
        },
        Case {
            trigger: "500",
            reply: || Reply::status(500),
            type_: "cancel",
            condition: "internal-server-error",
            text: None,
        },
        Case {
            trigger: "502",
            reply: || Reply::status(502),
            type_: "cancel",
            condition: "remote-server-timeout",
            text: Some("Bad gateway"),
        },
        Case {
            trigger: "418",
            reply: || Reply::status(418),
            type_: "cancel",
            condition: "service-unavailable",
            text: None,
        },
        Case {
            trigger: "404 with text",
            reply: || {
                Reply::status(404)
                    .content_type("text/plain; charset=utf-8")
                    .body("No bot by that name here")
            },
            type_: "cancel",
            condition: "item-not-found",
            text: Some("No bot by that name here"),
        },
        Case {
            trigger: "503 with long text",
            reply: || {
                Reply::status(503)
                    .content_type("text/plain")
                    .body(LONG_TEXT)
            },
            type_: "wait",
            condition: "remote-server-timeout",
            text: Some("Service temporarily unavailable"),
        },
    ]
}

async fn hook_failures_become_the_stanza_errors_of_the_table(kind: ServerKind) {
    let Some(stack) = Stack::start(
        kind,
        |request: &Request| {
            let trigger = request.json["body"].as_str().unwrap_or("");
            cases()
                .into_iter()
                .find(|case| case.trigger == trigger)
                .map_or_else(|| Reply::status(599), |case| (case.reply)())
        },
        BOUNCE_AT_ONCE,
    )
    .await
    else {
        return;
    };
    let mut user = stack.client("user1").await;
    let me = user.jid.to_string();

    let mut wrong = Vec::new();
    for (n, case) in cases().iter().enumerate() {
        let id = format!("http-{n}");
        let reply = user.chat("echo@bot.localhost", &id, case.trigger).await;
        let expected = (case.type_, case.condition, case.text);
        let Some(error) = stanza_error(&reply) else {
            wrong.push(format!(
                "{}: not an error: {}",
                case.trigger,
                to_xml(&reply)
            ));
            continue;
        };
        let got = (
            error.type_.as_str(),
            error.condition.as_str(),
            error.text.as_deref(),
        );
        if got != expected
            || reply.attr("id") != Some(id.as_str())
            || reply.attr("from") != Some("echo@bot.localhost")
            || reply.attr("to") != Some(me.as_str())
            || !by_is_the_component(&error)
        {
            wrong.push(format!(
                "{}: expected {expected:?} with id {id}, from echo@bot.localhost, a `by` in the domain; got {}",
                case.trigger,
                to_xml(&reply)
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "wrong stanza errors:\n{}",
        wrong.join("\n")
    );
}
on_both_servers!(hook_failures_become_the_stanza_errors_of_the_table);

fn by_is_the_component(error: &StanzaErrorInfo) -> bool {
    error.by.as_deref().is_some_and(|by| {
        by.split('/')
            .next()
            .is_some_and(|b| b.ends_with("bot.localhost"))
    })
}

async fn an_unreachable_hook_is_a_connection_failure(kind: ServerKind) {
    if !kind.require() {
        return;
    }
    let server = crate::harness::Server::start(kind).await;
    // Nothing listens there, and no other test can take the port while this one runs.
    let closed = ClosedPort::new();
    let _bridge = crate::harness::Bridge::start(
        &server,
        &format!("http://127.0.0.1:{}/hook", closed.port),
        BOUNCE_AT_ONCE,
    )
    .await;
    let mut user = server.client("user1").await;

    let reply = user
        .chat("echo@bot.localhost", "refused-1", "anyone?")
        .await;

    let error = stanza_error(&reply).unwrap_or_else(|| panic!("an error: {}", to_xml(&reply)));
    assert_eq!(
        (
            error.type_.as_str(),
            error.condition.as_str(),
            error.text.as_deref()
        ),
        (
            "cancel",
            "remote-server-timeout",
            Some("Connection failure")
        ),
        "{}",
        to_xml(&reply)
    );
    assert_eq!(reply.attr("id"), Some("refused-1"));
    assert_eq!(reply.attr("from"), Some("echo@bot.localhost"));
}
on_both_servers!(an_unreachable_hook_is_a_connection_failure);

async fn a_hook_slower_than_the_timeout_is_a_timeout(kind: ServerKind) {
    let Some(stack) = Stack::start(
        kind,
        |request: &Request| Reply::echo(request).delay(Duration::from_secs(4)),
        &format!("{BOUNCE_AT_ONCE}\n[webhook]\ntimeout = \"1s\""),
    )
    .await
    else {
        return;
    };
    let mut user = stack.client("user1").await;

    let reply = user
        .chat("echo@bot.localhost", "slow-1", "still there?")
        .await;

    let error = stanza_error(&reply).unwrap_or_else(|| panic!("an error: {}", to_xml(&reply)));
    assert_eq!(
        (
            error.type_.as_str(),
            error.condition.as_str(),
            error.text.as_deref()
        ),
        ("wait", "remote-server-timeout", Some("Timeout")),
        "{}",
        to_xml(&reply)
    );
}
on_both_servers!(a_hook_slower_than_the_timeout_is_a_timeout);
