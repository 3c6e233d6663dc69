//! Delivery order and concurrency (SPEC §3): one conversation reaches the hook one stanza at a
//! time in arrival order; different conversations run concurrently; `ordering = "none"` runs
//! everything at once; and at `max_in_flight` the bridge stops reading the socket, so a stalled
//! hook turns into TCP backpressure rather than memory.

use std::time::Duration;

use crate::helpers::*;

const ECHO: &str = "echo@bot.localhost";

#[tokio::test]
async fn one_conversation_reaches_the_hook_serially_and_in_order() {
    let mut stack = Stack::start(
        |r: &Request| Reply::echo(r).delay(Duration::from_millis(150)),
        |c| c.key("ordering = \"conversation\""),
    )
    .await;
    // Two resources of one account are one conversation with the same addressee.
    let senders = ["alice@localhost/phone", "alice@localhost/laptop"];
    let mut burst = String::new();
    for n in 0..6 {
        burst.push_str(&chat(
            senders[n % 2],
            ECHO,
            &format!("o{n}"),
            &format!("{n}"),
        ));
    }
    stack.conn.send(&burst).await;
    let requests = stack.hook.wait_answered(6).await;
    let bodies: Vec<&str> = requests
        .iter()
        .map(|r| r.field("body").unwrap_or("?"))
        .collect();
    assert_eq!(bodies, ["0", "1", "2", "3", "4", "5"], "arrival order");
    for pair in requests.windows(2) {
        let finished = pair[0].answered.expect("answered");
        assert!(
            pair[1].arrived >= finished,
            "{} started before {} was answered",
            pair[1].json,
            pair[0].json
        );
    }
    assert_eq!(stack.hook.max_concurrent(), 1);
    for n in 0..6 {
        let reply = stack.conn.with_id(&format!("o{n}")).await;
        assert_echo(&reply, &n.to_string());
    }
}

#[tokio::test]
async fn different_conversations_run_concurrently() {
    let delay = Duration::from_millis(600);
    let mut stack = Stack::start(move |r: &Request| Reply::echo(r).delay(delay), |c| c).await;
    let mut burst = String::new();
    for n in 0..4 {
        burst.push_str(&chat(
            &format!("user{n}@localhost/r"),
            ECHO,
            &format!("c{n}"),
            "hi",
        ));
    }
    let started = tokio::time::Instant::now();
    stack.conn.send(&burst).await;
    for n in 0..4 {
        stack.conn.with_id(&format!("c{n}")).await;
    }
    assert!(
        stack.hook.max_concurrent() >= 2,
        "different senders must overlap at the hook (max concurrency {})",
        stack.hook.max_concurrent()
    );
    assert!(
        started.elapsed() < delay * 4,
        "four conversations must not be delivered one after the other ({:?})",
        started.elapsed()
    );

    // One sender writing to two addressees is two conversations too.
    let mut burst = String::new();
    for (n, to) in ["a@bot.localhost", "b@bot.localhost"].iter().enumerate() {
        burst.push_str(&chat("zed@localhost/r", to, &format!("t{n}"), "hi"));
    }
    let before = stack.hook.requests().len();
    stack.conn.send(&burst).await;
    stack.conn.with_id("t0").await;
    stack.conn.with_id("t1").await;
    let requests = stack.hook.requests();
    let (a, b) = (&requests[before], &requests[before + 1]);
    assert!(
        b.arrived < a.answered.expect("answered"),
        "two addressees of one sender must overlap"
    );
}

#[tokio::test]
async fn ordering_none_delivers_one_sender_concurrently() {
    let mut stack = Stack::start(
        |r: &Request| Reply::echo(r).delay(Duration::from_millis(400)),
        |c| c.key("ordering = \"none\""),
    )
    .await;
    let mut burst = String::new();
    for n in 0..3 {
        burst.push_str(&chat("alice@localhost/phone", ECHO, &format!("n{n}"), "hi"));
    }
    stack.conn.send(&burst).await;
    for n in 0..3 {
        stack.conn.with_id(&format!("n{n}")).await;
    }
    assert!(
        stack.hook.max_concurrent() >= 2,
        "ordering = \"none\" runs one sender's stanzas concurrently"
    );
}

#[tokio::test]
async fn at_max_in_flight_a_stalled_hook_stops_the_reading() {
    let mut stack = Stack::start(
        |_: &Request| Reply::json(serde_json::json!({})).held(),
        |c| c.key("max_in_flight = 2"),
    )
    .await;
    let padding = "p".repeat(8 * 1024);
    let limit: usize = 256 * 1024 * 1024;
    let mut written = 0usize;
    let mut blocked = false;
    let mut n = 0usize;
    while written < limit {
        let stanza = chat(
            &format!("user{n}@localhost/r"),
            ECHO,
            &format!("b{n}"),
            &padding,
        );
        match stack
            .conn
            .send_within(stanza.as_bytes(), Duration::from_secs(2))
            .await
        {
            Ok(true) => written += stanza.len(),
            Ok(false) => {
                blocked = true;
                break;
            }
            Err(e) => panic!("the bridge dropped the link under load: {e}"),
        }
        n += 1;
    }
    assert!(
        blocked,
        "the bridge kept reading {written} bytes while its hook was stalled"
    );
    assert_eq!(
        stack.hook.requests().len(),
        2,
        "only max_in_flight stanzas may be delivered while the hook is stalled"
    );
    assert_eq!(stack.hook.max_concurrent(), 2);
    let memory = stack.bridge.memory();
    assert!(
        memory.current_kib < 64 * 1024,
        "the bridge must not buffer what it cannot deliver ({} KiB resident after {written} bytes)",
        memory.current_kib
    );
    assert_eq!(
        stack.server.connections(),
        1,
        "backpressure is not a reason to reconnect"
    );

    // Once the hook answers, delivery and reading resume.
    stack.hook.release();
    stack.hook.wait_requests(3).await;
    assert!(
        stack.hook.max_concurrent() <= 2,
        "never more than max_in_flight at once"
    );
}
