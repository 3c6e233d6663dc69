//! What an operator reads of a running instance (README, "Observability"): `/metrics` counts
//! exactly the traffic that went through, `/health` follows the link within a second,
//! `/v1/status` tells the state without credentials, and JSON logs carry each delivery's
//! `webhook-id` and conversation.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::api::{Api, TOKEN, message, with_api};
use crate::helpers::*;

/// The value of one sample line (`name{labels}`) of a Prometheus text; 0 when absent, as
/// Prometheus reads a series that was never created.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.trim().parse().expect("a number"))
        .unwrap_or(0.0)
}

async fn scrape(api: &Api) -> String {
    let response = api
        .client
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .expect("/metrics answers");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response.text().await.unwrap()
}

async fn health(api: &Api) -> (StatusCode, Value) {
    let response = api
        .client
        .get(format!("{}/health", api.base))
        .send()
        .await
        .expect("/health answers");
    (response.status(), response.json().await.expect("JSON"))
}

/// Polls `/health` until it answers `want`; returns how long that took.
async fn health_becomes(api: &Api, want: StatusCode) -> (Duration, Value) {
    let started = std::time::Instant::now();
    loop {
        let (status, body) = health(api).await;
        if status == want {
            return (started.elapsed(), body);
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "/health stayed {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// 1,000 messages of which 100 get a 500 and 50 time out, 20 API sends and one reconnection:
/// every counter says exactly that.
#[tokio::test]
async fn every_counter_equals_the_traffic_that_went_through() {
    let mut stack = Stack::start(
        |request: &Request| {
            let body = request.field("body").unwrap_or_default();
            if body.starts_with("fail") {
                Reply::status(500)
            } else if body.starts_with("slow") {
                Reply::echo(request).delay(Duration::from_secs(3))
            } else {
                Reply::echo(request)
            }
        },
        |c| {
            with_api(c)
                .key("retry_for = \"0s\"")
                .table("[webhook]\ntimeout = \"300ms\"")
        },
    )
    .await;
    let api = Api::of(&stack.bridge).await;
    let body_of_n = |n: usize| match n % 20 {
        0 | 1 => format!("fail {n}"),
        2 => format!("slow {n}"),
        _ => format!("hello {n}"),
    };
    let (mut fails, mut slows) = (0, 0);
    for half in [0..500, 500..1000] {
        let ids: Vec<String> = half.clone().map(|n| format!("m{n}")).collect();
        for (n, id) in half.clone().zip(&ids) {
            let body = body_of_n(n);
            fails += usize::from(body.starts_with("fail"));
            slows += usize::from(body.starts_with("slow"));
            let from = format!("user{}@localhost/r", n % 50);
            stack
                .conn
                .send(&chat(&from, "echo@bot.localhost", id, &body))
                .await;
        }
        for id in &ids {
            stack.conn.with_id(id).await;
        }
        if half.start == 0 {
            // One reconnection, with nothing in flight.
            let Stack {
                mut server,
                conn,
                bridge,
                hook,
            } = stack;
            drop(conn);
            let conn = server.accept().await;
            stack = Stack {
                server,
                hook,
                bridge,
                conn,
            };
        }
    }
    assert_eq!(
        (fails, slows),
        (100, 50),
        "the traffic as the issue sets it"
    );
    for n in 0..20 {
        let (status, accepted) = api
            .stanza(message("alice@localhost", &format!("api {n}")))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
        stack.conn.with_id(accepted["id"].as_str().unwrap()).await;
    }
    // What was written leaves the queue in the writer's next commit; the scrape may come first.
    let mut text = scrape(&api).await;
    for _ in 0..50 {
        if sample(&text, "component_http_queue_stanzas") == 0.0
            && sample(&text, "component_http_queue_oldest_pending_seconds") == 0.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        text = scrape(&api).await;
    }
    for (series, want) in [
        (
            "component_http_stanzas_received_total{kind=\"message\"}",
            1000.0,
        ),
        (
            "component_http_webhook_requests_total{outcome=\"2xx\"}",
            850.0,
        ),
        (
            "component_http_webhook_requests_total{outcome=\"5xx\"}",
            100.0,
        ),
        (
            "component_http_webhook_requests_total{outcome=\"timeout\"}",
            50.0,
        ),
        (
            "component_http_webhook_request_duration_seconds_count",
            1000.0,
        ),
        (
            "component_http_deliveries_total{result=\"delivered\"}",
            850.0,
        ),
        ("component_http_deliveries_total{result=\"bounced\"}", 150.0),
        (
            "component_http_deliveries_total{result=\"dead_letter\"}",
            0.0,
        ),
        ("component_http_retries_total", 0.0),
        (
            "component_http_stanzas_sent_total{kind=\"message\",origin=\"reply\"}",
            850.0,
        ),
        (
            "component_http_stanzas_sent_total{kind=\"message\",origin=\"local\"}",
            150.0,
        ),
        (
            "component_http_stanzas_sent_total{kind=\"message\",origin=\"api\"}",
            20.0,
        ),
        (
            "component_http_stanzas_refused_total{reason=\"queue_full\"}",
            0.0,
        ),
        (
            "component_http_api_requests_total{route=\"/v1/stanzas\",status=\"202\"}",
            20.0,
        ),
        ("component_http_xmpp_reconnects_total", 1.0),
        ("component_http_xmpp_link_up", 1.0),
        ("component_http_queue_stanzas", 0.0),
        ("component_http_queue_bytes", 0.0),
        ("component_http_queue_max_stanzas", 10000.0),
        ("component_http_dead_letters", 0.0),
        ("component_http_queue_oldest_pending_seconds", 0.0),
    ] {
        assert_eq!(sample(&text, series), want, "{series} in:\n{text}");
    }
    assert!(
        text.contains(&format!(
            "component_http_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    // The scrape itself is counted by the next one.
    let text = scrape(&api).await;
    assert!(
        sample(
            &text,
            "component_http_api_requests_total{route=\"/metrics\",status=\"200\"}"
        ) >= 1.0
    );
}

#[tokio::test]
async fn health_follows_the_link_within_a_second() {
    let stack = Stack::start(Reply::echo, with_api).await;
    let api = Api::of(&stack.bridge).await;
    let (status, body) = health(&api).await;
    assert_eq!((status, &body), (StatusCode::OK, &json!({"status": "ok"})));

    let Stack {
        mut server,
        conn,
        bridge: _bridge,
        hook: _hook,
    } = stack;
    drop(conn);
    let (took, body) = health_becomes(&api, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(took < Duration::from_secs(1), "503 only after {took:?}");
    let reason = body["reason"].as_str().expect("a reason");
    assert!(reason.starts_with("xmpp link down since "), "{reason}");

    let _conn = server.accept().await;
    let (took, _) = health_becomes(&api, StatusCode::OK).await;
    assert!(took < Duration::from_secs(1), "200 only after {took:?}");
}

#[tokio::test]
async fn status_needs_a_token_and_shows_no_credentials() {
    let mut server = XmppServer::start().await;
    let hook = Hook::start(|_: &Request| Reply::status(503)).await;
    let url = hook
        .url()
        .replacen("http://", "http://hookuser:hook-pass-secret@", 1);
    let bridge = with_api(BridgeConfig::new(&server, &url))
        .key("retry_for = \"0s\"")
        .spawn();
    let mut conn = server.accept().await;
    let api = Api::of(&bridge).await;

    let unauthenticated = api
        .client
        .get(format!("{}/v1/status", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);

    conn.send(&chat("alice@localhost/r", "echo@bot.localhost", "s1", "hi"))
        .await;
    conn.with_id("s1").await;
    let response = api
        .client
        .get(format!("{}/v1/status", api.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(
        !text.contains("hook-pass-secret") && !text.contains("hookuser"),
        "{text}"
    );
    let status: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["domain"], "bot.localhost");
    assert_eq!(status["link"]["up"], true);
    assert_eq!(status["queue"]["kind"], "durable");
    assert_eq!(status["queue"]["pending"], 0);
    assert_eq!(status["queue"]["dead_letters"], 0);
    assert!(
        status["webhook"]["url"]
            .as_str()
            .unwrap()
            .contains("REDACTED")
    );
    assert_eq!(status["webhook"]["last_error"]["status"], 503);
    assert_eq!(
        status["webhook"]["last_error"]["message"],
        "the hook answered HTTP 503"
    );
}

#[tokio::test]
async fn json_logs_carry_the_webhook_id_and_conversation_of_a_delivery() {
    let mut server = XmppServer::start().await;
    let hook = Hook::start(|_: &Request| Reply::status(500)).await;
    let bridge = BridgeConfig::new(&server, &hook.url())
        .key("retry_for = \"0s\"")
        .spawn_with_args(&["--log-format", "json"]);
    let mut conn = server.accept().await;
    conn.send(&chat("alice@localhost/r", "echo@bot.localhost", "j1", "hi"))
        .await;
    conn.with_id("j1").await;
    let webhook_id = hook.wait_requests(1).await[0].webhook_id();
    let log = bridge.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let about_it: Vec<&Value> = lines
        .iter()
        .filter(|line| line["span"]["webhook_id"] == webhook_id.as_str())
        .collect();
    assert!(!about_it.is_empty(), "no line carries {webhook_id}:\n{log}");
    for line in about_it {
        assert_eq!(
            line["span"]["conversation"], "alice@localhost → echo@bot.localhost",
            "{line}"
        );
    }
}
