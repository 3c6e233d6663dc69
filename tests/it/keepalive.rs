//! Keepalive and dead-link detection (README, "The XMPP link"): an idle link gets whitespace and an
//! XEP-0199 ping to the server's domain; a link whose pings are answered stays up, one whose pings
//! go unanswered for two intervals is dropped and reconnected.

use std::time::Duration;

use minidom::Element;
use tokio::time::Instant;

use crate::helpers::*;

const INTERVAL: Duration = Duration::from_secs(1);
/// The domain of the server the component is attached to (the parent of [`DOMAIN`]).
const SERVER_DOMAIN: &str = "localhost";

fn is_ping(element: &Element) -> bool {
    element.is("iq", NS_COMPONENT)
        && element.attr("type") == Some("get")
        && element.has_child("ping", NS_PING)
}

async fn next_ping(conn: &mut Conn, within: Duration) -> Element {
    match conn.try_stanza_where(within, is_ping).await {
        Some(ping) => ping,
        None => panic!(
            "no XEP-0199 ping within {within:?}; the bridge wrote: {:?}",
            conn.output()
        ),
    }
}

#[tokio::test]
async fn an_idle_link_gets_whitespace_and_answered_pings_keep_it_up() {
    let mut stack = Stack::start(Reply::echo, |c| c.key("keepalive_interval = \"1s\"")).await;
    let ping = next_ping(&mut stack.conn, INTERVAL * 3).await;
    assert_eq!(
        ping.attr("to"),
        Some(SERVER_DOMAIN),
        "the ping goes to the server's domain: {}",
        to_xml(&ping)
    );
    let from = ping.attr("from").unwrap_or_default();
    assert!(
        from == DOMAIN
            || from.ends_with(&format!("@{DOMAIN}"))
            || from.starts_with(&format!("{DOMAIN}/")),
        "the ping must come from the component's domain: {}",
        to_xml(&ping)
    );
    let id = ping.attr("id").expect("a ping has an id").to_owned();

    let started = Instant::now();
    let mut answered = 1;
    stack
        .conn
        .send(&format!(
            "<iq type='result' from='{SERVER_DOMAIN}' to='{from}' id='{id}'/>"
        ))
        .await;
    // Keep answering for more than two intervals: the link must stay up.
    while started.elapsed() < INTERVAL * 4 {
        let Some(ping) = stack.conn.try_stanza_where(INTERVAL * 3, is_ping).await else {
            break;
        };
        let id = ping.attr("id").unwrap_or_default().to_owned();
        stack
            .conn
            .send(&format!(
                "<iq type='result' from='{SERVER_DOMAIN}' to='{from}' id='{id}'/>"
            ))
            .await;
        answered += 1;
    }
    assert!(
        !stack.conn.is_closed() && stack.server.connections() == 1,
        "answered pings must keep the link up"
    );
    assert!(answered >= 2, "pings must go on while the link is idle");
    assert!(
        stack.conn.whitespace_seen() >= 1,
        "an idle link gets whitespace keepalives; the bridge wrote: {:?}",
        stack.conn.output()
    );
    // The answers to its own pings are not forwarded anywhere.
    assert!(stack.hook.requests().is_empty());
    // And the link still carries stanzas.
    let reply = stack
        .round_trip("alice@localhost/phone", "m1", "awake?")
        .await;
    assert_echo(&reply, "awake?");
}

#[tokio::test]
async fn unanswered_pings_make_the_bridge_reconnect_after_two_intervals() {
    let mut stack = Stack::start(Reply::echo, |c| c.key("keepalive_interval = \"1s\"")).await;
    next_ping(&mut stack.conn, INTERVAL * 3).await;
    let pinged = Instant::now();
    assert!(
        stack.conn.closes_within(INTERVAL * 6).await,
        "the bridge must drop a link whose pings go unanswered"
    );
    let after = pinged.elapsed();
    assert!(
        after >= INTERVAL + INTERVAL / 2 && after <= INTERVAL * 4,
        "the link should be dropped about two intervals after the unanswered ping, was {after:?}"
    );
    let mut conn = stack.server.accept().await;
    conn.send(&chat(
        "alice@localhost/phone",
        "echo@bot.localhost",
        "m1",
        "again",
    ))
    .await;
    assert_echo(&conn.with_id("m1").await, "again");
}

#[tokio::test]
async fn an_error_answer_to_a_ping_also_proves_the_link_alive() {
    let mut stack = Stack::start(Reply::echo, |c| c.key("keepalive_interval = \"1s\"")).await;
    let started = Instant::now();
    while started.elapsed() < INTERVAL * 4 {
        let Some(ping) = stack.conn.try_stanza_where(INTERVAL * 3, is_ping).await else {
            break;
        };
        let id = ping.attr("id").unwrap_or_default().to_owned();
        let from = ping.attr("from").unwrap_or_default().to_owned();
        stack
            .conn
            .send(&format!(
                "<iq type='error' from='{SERVER_DOMAIN}' to='{from}' id='{id}'><error type='cancel'><service-unavailable xmlns='{NS_STANZAS}'/></error></iq>"
            ))
            .await;
    }
    assert!(
        !stack.conn.is_closed() && stack.server.connections() == 1,
        "a server that answers pings with an error is alive"
    );
}
