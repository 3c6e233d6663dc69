//! The classic PHP echo bot of mod_component_http, unmodified (`examples/echo-bot.php`), served
//! by PHP's built-in web server, answers a real user through the bridge.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::harness::ServerKind;
use crate::harness::{
    Bridge, ChildGuard, Server, body, free_ports, port_open, require_tool, wait_until,
};

async fn the_php_echo_bot_works_unmodified(kind: ServerKind) {
    if !kind.require() || !require_tool("php", "php-cli") {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/echo-bot.php");
    assert!(script.is_file(), "{} is missing", script.display());
    let [port] = free_ports::<1>();
    let php = Command::new("php")
        .arg("-S")
        .arg(format!("127.0.0.1:{port}"))
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn php");
    let _php = ChildGuard::new(php);
    assert!(
        wait_until(std::time::Duration::from_secs(10), || port_open(port)).await,
        "php -S did not listen on 127.0.0.1:{port}"
    );

    let server = Server::start(kind).await;
    let _bridge = Bridge::start(&server, &format!("http://127.0.0.1:{port}/"), "").await;
    let mut user = server.client("user1").await;

    let reply = user.chat("echo@bot.localhost", "php-1", "hi").await;

    assert_eq!(body(&reply).as_deref(), Some("Did you say hi?"));
    assert_eq!(reply.attr("from"), Some("echo@bot.localhost"));
    assert_eq!(reply.attr("type"), Some("chat"));

    let reply = user.chat("bot.localhost", "php-2", "<&> 😀 שלום").await;
    assert_eq!(body(&reply).as_deref(), Some("Did you say <&> 😀 שלום?"));
}
on_both_servers!(the_php_echo_bot_works_unmodified);
