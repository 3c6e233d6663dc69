//! Delivery order and concurrency (README, "Delivery"): one conversation reaches the hook one
//! stanza at a time in arrival order; different conversations run concurrently; `ordering = "none"`
//! runs everything at once; and at `max_in_flight` the bridge stops reading the socket, so a
//! stalled hook turns into TCP backpressure rather than memory.

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
async fn a_stalled_hook_fills_the_queue_then_new_stanzas_are_refused_at_once() {
    let mut stack = Stack::start(
        |_: &Request| Reply::json(serde_json::json!({})).held(),
        |c| c.key("max_in_flight = 2").key("queue_max_stanzas = 20"),
    )
    .await;
    let padding = "p".repeat(8 * 1024);
    let send = |n: usize| {
        chat(
            &format!("user{n}@localhost/r"),
            ECHO,
            &format!("b{n}"),
            &padding,
        )
    };
    for n in 0..20 {
        stack.conn.send(&send(n)).await;
    }
    stack.hook.wait_requests(2).await;
    let before = stack.bridge.memory();
    // 16 MiB more while the hook is stalled: every one is refused at once, none is buffered.
    let refused = 2000;
    for n in 20..20 + refused {
        stack.conn.send(&send(n)).await;
    }
    for n in 20..20 + refused {
        let reply = stack.conn.with_id(&format!("b{n}")).await;
        let error = assert_error_reply(
            &reply,
            &format!("user{n}@localhost/r"),
            ECHO,
            &format!("b{n}"),
        );
        assert_eq!(
            (error.type_.as_str(), error.condition.as_str()),
            ("wait", "resource-constraint"),
            "{}",
            to_xml(&reply)
        );
    }
    assert_eq!(
        stack.hook.requests().len(),
        2,
        "only max_in_flight calls while the hook is stalled"
    );
    let after = stack.bridge.memory();
    assert!(
        after.current_kib < before.current_kib + 16 * 1024,
        "memory must stay flat while stanzas are refused ({} KiB before, {} KiB after)",
        before.current_kib,
        after.current_kib
    );
    assert_eq!(
        stack.server.connections(),
        1,
        "a full queue is not a reason to reconnect"
    );

    // Once the hook answers, the 20 that were taken are delivered, and only they.
    stack.hook.release();
    let delivered = stack.hook.wait_requests(20).await;
    assert!(
        stack.hook.max_concurrent() <= 2,
        "never more than max_in_flight at once"
    );
    let mut ids: Vec<String> = delivered
        .iter()
        .filter_map(|r| r.field("id").map(str::to_owned))
        .collect();
    ids.sort_by_key(|id| id[1..].parse::<usize>().unwrap_or(usize::MAX));
    assert_eq!(ids, (0..20).map(|n| format!("b{n}")).collect::<Vec<_>>());
    stack.conn.send(&send(9999)).await;
    stack.hook.wait_requests(21).await;
}

#[tokio::test]
async fn the_queue_is_bounded_by_bytes_too() {
    let mut stack = Stack::start(
        |_: &Request| Reply::json(serde_json::json!({})).held(),
        |c| c.key("max_in_flight = 1").key("queue_max_bytes = 262144"),
    )
    .await;
    let padding = "p".repeat(60 * 1024);
    for n in 0..6 {
        let stanza = chat(
            &format!("user{n}@localhost/r"),
            ECHO,
            &format!("b{n}"),
            &padding,
        );
        stack.conn.send(&stanza).await;
    }
    // 4 stanzas of about 60 KiB fit in 256 KiB; the 5th and 6th do not.
    for n in [4, 5] {
        let reply = stack.conn.with_id(&format!("b{n}")).await;
        let error = stanza_error(&reply).expect("a stanza error");
        assert_eq!(error.condition, "resource-constraint", "{}", to_xml(&reply));
    }
    stack.hook.release();
    assert_eq!(stack.hook.wait_requests(4).await.len(), 4);
}
