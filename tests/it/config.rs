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

// ---------------------------------------------------------------------------------------------
// `check` reports the API's addresses, its tokens' sources and the rooms (README, "Command line")

/// Runs `check` against a server that accepts the component and a live hook.
async fn check_with(config: impl FnOnce(BridgeConfig) -> BridgeConfig) -> Finished {
    let mut server = XmppServer::start().await;
    let hook = Hook::echo().await;
    let config = config(BridgeConfig::new(&server, &hook.url()));
    let check = tokio::spawn(async move { config.check().await });
    let _conn = server.accept().await;
    check.await.expect("the check task")
}

/// A token file with `mode`, outside the bridge's directory (its path is absolute).
fn token_file(dir: &tempfile::TempDir, token: &str, mode: u32) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.path().join("alerts.token");
    std::fs::write(&path, format!("{token}\n")).expect("write the token file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .expect("set the token file's mode");
    path.display().to_string()
}

#[tokio::test]
async fn check_fails_with_the_fix_when_an_api_address_is_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port to hold");
    let address = taken.local_addr().expect("its address");
    let finished = check_with(|c| c.table(&format!("[api]\nlisten = \"{address}\""))).await;
    let out = &finished.stdout;
    assert_eq!(finished.code(), Some(1), "stdout:\n{out}");
    let lines: Vec<&str> = out.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with(&format!("FAIL  HTTP API cannot listen on {address}")))
        .unwrap_or_else(|| panic!("no FAIL line for {address}:\n{out}"));
    assert!(lines[at].contains("running instance"), "{}", lines[at]);
    let fix = lines.get(at + 1).copied().unwrap_or_default();
    assert!(
        fix.starts_with("      fix: stop the running instance") && fix.contains("another port"),
        "the fix follows the failure:\n{out}"
    );
    assert!(
        out.contains("ok    XMPP server"),
        "only the API failed:\n{out}"
    );
    drop(taken);
}

#[tokio::test]
async fn check_says_the_api_can_listen_where_each_token_comes_from_and_how_rooms_are_joined() {
    const FILE_TOKEN: &str = "file-token-3a7c1e9b5d";
    const ENV_TOKEN: &str = "env-token-8f2d6b4a0c";
    const INLINE_TOKEN: &str = "inline-token-5e9a3c7b1f";
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = token_file(&dir, FILE_TOKEN, 0o600);
    let finished = check_with(|c| {
        c.env("OPS_TOKEN", ENV_TOKEN).table(&format!(
            "[api]\nlisten = \"127.0.0.1:0\"\n\
             [[api.tokens]]\nname = \"alerts\"\ntoken_file = \"{path}\"\nfrom = [\"alerts\"]\n\
             [[api.tokens]]\nname = \"ops\"\ntoken_env = \"OPS_TOKEN\"\nfrom = [\"ops-*\"]\n\
             [[api.tokens]]\nname = \"cron\"\ntoken = \"{INLINE_TOKEN}\"\nfrom = [\"cron\"]\n\n\
             [[rooms]]\njid = \"ops@conference.localhost\"\nnick = \"ops-bot\"\nfrom = \"alerts\"\n\
             [[rooms]]\njid = \"dev@conference.localhost\"\nnick = \"Alerts\"\nfrom = \"dev\"\n"
        ))
    })
    .await;
    let out = &finished.stdout;
    assert_eq!(
        finished.code(),
        Some(0),
        "stdout:\n{out}\nstderr:\n{}",
        finished.stderr
    );
    for line in [
        "ok    HTTP API can listen on 127.0.0.1:0".to_owned(),
        format!("ok    API token \"alerts\": file {path}, readable and non-empty"),
        "ok    API token \"ops\": environment variable OPS_TOKEN, set and non-empty".to_owned(),
        "ok    API token \"cron\": inline in the configuration file".to_owned(),
        "ok    room ops@conference.localhost: joins as alerts@bot.localhost/default with nick \"ops-bot\"".to_owned(),
        "ok    room dev@conference.localhost: joins as dev@bot.localhost/default with nick \"Alerts\"".to_owned(),
    ] {
        assert!(out.lines().any(|l| l == line), "missing {line:?}:\n{out}");
    }
    assert!(!out.contains("FAIL") && !out.contains("warn"), "{out}");
    let printed = format!("{out}{}", finished.stderr);
    for token in [FILE_TOKEN, ENV_TOKEN, INLINE_TOKEN] {
        assert!(
            !printed.contains(token),
            "check printed a token:\n{printed}"
        );
    }
}

#[tokio::test]
async fn check_warns_with_chmod_when_a_token_file_is_open_to_the_group() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = token_file(&dir, "group-readable-token-6d1f", 0o640);
    let finished = check_with(|c| {
        c.table(&format!(
            "[api]\nlisten = \"127.0.0.1:0\"\n\
             [[api.tokens]]\nname = \"alerts\"\ntoken_file = \"{path}\"\nfrom = [\"alerts\"]\n"
        ))
    })
    .await;
    let out = &finished.stdout;
    assert_eq!(finished.code(), Some(0), "a warning does not fail:\n{out}");
    let lines: Vec<&str> = out.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("warn  API token \"alerts\""))
        .unwrap_or_else(|| panic!("no warning for the token file:\n{out}"));
    assert!(lines[at].contains("0640"), "{}", lines[at]);
    assert_eq!(
        lines.get(at + 1).copied(),
        Some(format!("      fix: chmod 600 {path}").as_str()),
        "{out}"
    );
    assert!(!out.contains("group-readable-token"), "{out}");
}

#[tokio::test]
async fn check_advice_for_not_authorized_names_ejabberd_service_hosts() {
    let mut server = XmppServer::start().await;
    let hook = Hook::echo().await;
    let config = BridgeConfig::new(&server, &hook.url());
    let check = tokio::spawn(async move { config.check().await });
    server
        .accept_with(SECRET, Answer::StreamError("not-authorized"))
        .await;
    let finished = check.await.expect("the check task");
    let out = &finished.stdout;
    assert_eq!(finished.code(), Some(1), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("FAIL  XMPP server") && l.contains("not-authorized"))
        .unwrap_or_else(|| panic!("no FAIL line for not-authorized:\n{out}"));
    let fix = lines.get(at + 1).copied().unwrap_or_default();
    assert!(fix.starts_with("      fix: "), "{out}");
    for cause in ["component_secret", "ejabberd_service", "hosts", "password"] {
        assert!(fix.contains(cause), "the fix names {cause}: {fix}");
    }
    // Without [api] listen, one line says the API is off.
    assert!(
        out.lines()
            .any(|l| l == "ok    HTTP API off ([api] listen is not set)"),
        "{out}"
    );
}
