//! The configuration file (README, "Configuration reference" and "Command line"): unknown keys and
//! a missing secret stop the bridge with exit code 2 and a message naming the key;
//! mod_component_http's option names are accepted; the secret may come from the environment or a
//! file; secrets never appear in the logs.

use crate::helpers::*;

fn base(server: &str, hook: &str) -> String {
    format!(
        "domain = \"{DOMAIN}\"\nserver = \"{server}\"\nsecret = \"{SECRET}\"\ncomponent_post_url = \"{hook}\"\n"
    )
}

#[tokio::test]
async fn an_unknown_key_exits_2_naming_the_key_and_its_line() {
    let server = XmppServer::start().await;
    let hook = Hook::echo().await;
    let text = format!(
        "{}colour_scheme = \"blue\"\n",
        base(&server.address(), &hook.url())
    );
    let line = text.lines().count();
    let finished = run_config(&text, &[]).await;
    assert_eq!(finished.code(), Some(2), "stderr:\n{}", finished.stderr);
    assert!(
        finished.stderr.contains("colour_scheme"),
        "stderr:\n{}",
        finished.stderr
    );
    assert!(
        finished.stderr.contains(&format!("line {line}")),
        "the message gives the line ({line}):\n{}",
        finished.stderr
    );

    let text = format!(
        "{}\n[webhook]\ntimeout = \"5s\"\nretries = 3\n",
        base(&server.address(), &hook.url())
    );
    let finished = run_config(&text, &[]).await;
    assert_eq!(finished.code(), Some(2), "stderr:\n{}", finished.stderr);
    assert!(
        finished.stderr.contains("retries"),
        "stderr:\n{}",
        finished.stderr
    );
    assert_eq!(
        server.connections(),
        0,
        "a bad configuration never connects"
    );
}

#[tokio::test]
async fn a_missing_secret_exits_2() {
    let server = XmppServer::start().await;
    let hook = Hook::echo().await;
    let text = format!(
        "domain = \"{DOMAIN}\"\nserver = \"{}\"\ncomponent_post_url = \"{}\"\n",
        server.address(),
        hook.url()
    );
    let finished = run_config(&text, &[]).await;
    assert_eq!(finished.code(), Some(2), "stderr:\n{}", finished.stderr);
    assert!(
        finished.stderr.contains("secret"),
        "stderr:\n{}",
        finished.stderr
    );

    let finished = run_config(
        &format!("{text}secret_file = \"missing-secret.txt\"\n"),
        &[],
    )
    .await;
    assert_eq!(
        finished.code(),
        Some(2),
        "an unreadable secret_file; stderr:\n{}",
        finished.stderr
    );
    assert!(
        finished.stderr.contains("secret_file"),
        "stderr:\n{}",
        finished.stderr
    );
}

#[tokio::test]
async fn mod_component_http_option_names_are_accepted() {
    // component_post_url (used everywhere) and component_post_stanzas.
    let mut stack = Stack::start(Reply::echo, |c| {
        c.key("component_post_stanzas = [\"message\", \"iq\"]")
    })
    .await;
    stack
        .conn
        .send(&iq(
            "get",
            "alice@localhost/r",
            "echo@bot.localhost",
            "q1",
            "<query xmlns='urn:example:q'/>",
        ))
        .await;
    let request = stack.hook.request_with_id("q1").await;
    assert_eq!(request.field("kind"), Some("iq"));

    // post_stanza_types.
    let mut stack =
        Stack::start(Reply::echo, |c| c.key("post_stanza_types = [\"presence\"]")).await;
    stack
        .conn
        .send("<presence from='alice@localhost/r' to='echo@bot.localhost' id='p1'/>")
        .await;
    let request = stack.hook.request_with_id("p1").await;
    assert_eq!(request.field("kind"), Some("presence"));
    stack
        .conn
        .send(&chat("alice@localhost/r", "echo@bot.localhost", "m1", "hi"))
        .await;
    let reply = stack.conn.with_id("m1").await;
    assert_eq!(
        stanza_error(&reply).map(|e| e.condition).as_deref(),
        Some("service-unavailable"),
        "messages are no longer forwarded: {}",
        to_xml(&reply)
    );

    // [webhook] url instead of component_post_url.
    let mut server = XmppServer::start().await;
    let hook = Hook::echo().await;
    let text = format!(
        "domain = \"{DOMAIN}\"\nserver = \"{}\"\nsecret = \"{SECRET}\"\n\n[webhook]\nurl = \"{}\"\n",
        server.address(),
        hook.url()
    );
    let _bridge = Bridge::spawn_with(&text, &[], &[], "info", &[]);
    let mut conn = server.accept().await;
    conn.send(&chat("alice@localhost/r", "echo@bot.localhost", "w1", "hi"))
        .await;
    assert_echo(&conn.with_id("w1").await, "hi");
}

#[tokio::test]
async fn the_secret_may_come_from_the_environment_or_a_file() {
    let mut server = XmppServer::start().await;
    let hook = Hook::echo().await;
    let _bridge = BridgeConfig::new(&server, &hook.url())
        .without_secret()
        .env("COMPONENT_HTTP_SECRET", SECRET)
        .spawn();
    // `accept` checks the digest against SECRET.
    let mut conn = server.accept().await;
    conn.send(&chat(
        "alice@localhost/r",
        "echo@bot.localhost",
        "e1",
        "env",
    ))
    .await;
    assert_echo(&conn.with_id("e1").await, "env");

    let mut server = XmppServer::start().await;
    let _bridge = BridgeConfig::new(&server, &hook.url())
        .without_secret()
        .key("secret_file = \"component.secret\"")
        .file("component.secret", &format!("{SECRET}\n"))
        .spawn();
    let mut conn = server.accept().await;
    conn.send(&chat(
        "alice@localhost/r",
        "echo@bot.localhost",
        "f1",
        "file",
    ))
    .await;
    assert_echo(&conn.with_id("f1").await, "file");
}

#[tokio::test]
async fn secrets_never_appear_in_the_logs() {
    let hook_token = "Bearer throwaway-hook-token-4c1d";
    let secret = "throwaway-component-secret-9f2e";
    let mut server = XmppServer::start().await;
    let hook = Hook::echo().await;
    let config = BridgeConfig::new(&server, &hook.url())
        .without_secret()
        .key(&format!("secret = \"{secret}\""))
        .table(&format!("[webhook]\nauthorization = \"{hook_token}\""))
        .rust_log("debug");
    let mut bridge = config.spawn();

    // A delivery with the Authorization header, then a clean stop.
    let mut conn = server.accept_with(secret, Answer::Accept).await;
    conn.send(&chat(
        "alice@localhost/r",
        "echo@bot.localhost",
        "s1",
        "psst",
    ))
    .await;
    assert_echo(&conn.with_id("s1").await, "psst");
    let request = hook.request_with_id("s1").await;
    assert_eq!(request.header("authorization").as_deref(), Some(hook_token));
    bridge.terminate();
    bridge
        .exit_within(WAIT)
        .await
        .expect("the bridge stops on SIGTERM");

    let log = bridge.log();
    assert!(
        log.contains("DEBUG"),
        "the bridge ran with debug logs:\n{log}"
    );
    assert!(
        !log.contains(secret),
        "the component secret appears in the logs"
    );
    assert!(
        !log.contains("throwaway-hook-token"),
        "the hook token appears in the logs"
    );

    // `check` against a server that refuses the secret: the error path prints no secret either.
    let check = tokio::spawn(async move { config.check().await });
    server
        .accept_with(secret, Answer::StreamError("not-authorized"))
        .await;
    let check = check.await.expect("the check task");
    let printed = format!("{}{}", check.stdout, check.stderr);
    assert!(
        printed.contains("not-authorized"),
        "check reports the refusal:\n{printed}"
    );
    assert!(
        printed.contains("DEBUG"),
        "check ran with debug logs:\n{printed}"
    );
    assert!(
        !printed.contains(secret),
        "check prints the component secret"
    );
    assert!(
        !printed.contains("throwaway-hook-token"),
        "check prints the hook token"
    );
}
