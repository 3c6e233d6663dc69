//! The HTTP API end to end: through a real server to real clients (README, "The HTTP API").
//! What is sent reaches a logged-in user; what is accepted while the server is down, or just
//! before the bridge is killed, is delivered afterwards; an iq waits for the server's answer; a
//! hook's `202` to a user's iq is answered later; groupchat reaches a room's occupant from the
//! component's nick, after a server restart too; `/msg` takes `curl -u`; repeats with an
//! `Idempotency-Key` send nothing.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::ServerKind;
use crate::harness::{
    Bridge, DOMAIN, Hook, REPLY_TIMEOUT, Reply, Request, Server, ServerOptions, Stack, XmppClient,
    body,
};

const TOKEN: &str = "alerts-throwaway-token-0123";
/// A room of the test server's MUC service ([`crate::harness::MUC`]).
const ROOM: &str = "ops@conference.localhost";

/// `[api]` with one token for `alerts`, and `ops@conference.localhost` kept joined.
fn api_config(top_level: &str) -> String {
    format!(
        "{top_level}\n[api]\nlisten = \"127.0.0.1:0\"\n\
         [[api.tokens]]\nname = \"alerts\"\ntoken = \"{TOKEN}\"\nfrom = [\"alerts\"]\n\
         [[rooms]]\njid = \"{ROOM}\"\nnick = \"Alerts\"\nfrom = \"alerts\"\n"
    )
}

struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    async fn of(bridge: &Bridge) -> Api {
        component_http::tls::install_crypto_provider();
        Api {
            client: reqwest::Client::new(),
            base: bridge.api_base().await,
        }
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.base))
            .timeout(Duration::from_secs(30))
    }

    async fn stanza(&self, body: Value) -> (StatusCode, Value) {
        answer(self.post("/v1/stanzas").bearer_auth(TOKEN).json(&body)).await
    }

    /// Posts until the answer is not a `409` (the room is being joined).
    async fn post_into_room(&self, body: Value) -> Value {
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            let (status, answer) = self.stanza(body.clone()).await;
            if status != StatusCode::CONFLICT {
                assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
                return answer;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the component never got into the room: {answer}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn answer(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("the API answers");
    let status = response.status();
    let text = response.text().await.expect("a body");
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("the answer ({status}) is not JSON ({e}): {text}"));
    (status, value)
}

/// The next message from `from`.
async fn message_from(user: &mut XmppClient, from: &str) -> tokio_xmpp::minidom::Element {
    user.recv_where(&format!("a message from {from}"), REPLY_TIMEOUT, |e| {
        e.name() == "message" && e.attr("from") == Some(from)
    })
    .await
}

async fn api_messages_reach_a_user_also_when_sent_while_the_server_or_the_bridge_was_down(
    kind: ServerKind,
) {
    if !kind.require() {
        return;
    }
    // Offline storage, so that what the bridge writes before the user is back waits for them.
    let mut server = Server::start_with(
        kind,
        &ServerOptions {
            offline_messages: true,
            ..ServerOptions::default()
        },
    )
    .await;
    let hook = Hook::start(Reply::echo).await;
    let mut bridge = Bridge::start(&server, &hook.url(), &api_config("")).await;
    let api = Api::of(&bridge).await;
    let mut user = server.client("user1").await;
    let alerts = format!("alerts@{DOMAIN}");

    let (status, accepted) = api
        .stanza(json!({ "to": "user1@localhost", "body": "disk full" }))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let got = message_from(&mut user, &alerts).await;
    assert_eq!(body(&got).as_deref(), Some("disk full"));
    assert_eq!(got.attr("id"), accepted["id"].as_str());

    // mod_post_msg's way, as `curl -u alerts@bot.localhost:TOKEN --data-binary …` sends it.
    let (status, created) = answer(
        api.post("/msg/user1@localhost")
            .basic_auth(&alerts, Some(TOKEN))
            .header("content-type", "text/plain")
            .body("backup done"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        body(&message_from(&mut user, &alerts).await).as_deref(),
        Some("backup done")
    );

    // The server goes down; what is accepted meanwhile is delivered once it is back.
    user.close().await;
    server.kill();
    bridge.wait_link_down().await;
    let (status, _) = api
        .stanza(json!({ "to": "user1@localhost", "body": "while the server was down" }))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // And the bridge dies right after a 202 (SIGKILL: nothing flushed).
    let (status, _) = api
        .stanza(json!({ "to": "user1@localhost", "body": "just before the crash" }))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    bridge.kill();
    server.start_again().await;
    let mut user = server.client("user1").await;
    bridge.restart(&server).await;
    let first = message_from(&mut user, &alerts).await;
    let second = message_from(&mut user, &alerts).await;
    assert_eq!(body(&first).as_deref(), Some("while the server was down"));
    assert_eq!(body(&second).as_deref(), Some("just before the crash"));

    // Repeats with one Idempotency-Key: one message.
    let api = Api::of(&bridge).await;
    for _ in 0..3 {
        let (status, _) = answer(
            api.post("/v1/stanzas")
                .bearer_auth(TOKEN)
                .header("idempotency-key", "alert-42")
                .json(&json!({ "to": "user1@localhost", "body": "only once" })),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let (status, _) = api
        .stanza(json!({ "to": "user1@localhost", "body": "marker" }))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        body(&message_from(&mut user, &alerts).await).as_deref(),
        Some("only once")
    );
    assert_eq!(
        body(&message_from(&mut user, &alerts).await).as_deref(),
        Some("marker")
    );
}
on_both_servers!(api_messages_reach_a_user_also_when_sent_while_the_server_or_the_bridge_was_down);

async fn an_iq_through_the_api_gets_the_servers_answer_and_a_hooks_202_is_answered_later(
    kind: ServerKind,
) {
    let Some(stack) = Stack::start(
        kind,
        |_: &Request| Reply::status(202),
        &api_config("stanzas = [\"message\", \"iq\"]\niq_timeout = \"2s\""),
    )
    .await
    else {
        return;
    };
    let api = Api::of(&stack.bridge).await;
    // A ping to the server's own domain.
    let (status, pong) = api
        .stanza(json!({
            "kind": "iq", "type": "get", "to": "localhost",
            "payload": "<ping xmlns='urn:xmpp:ping'/>"
        }))
        .await;
    assert_eq!(status, StatusCode::OK, "{pong}");
    assert_eq!(pong["type"], "result");
    assert_eq!(pong["from"], "localhost");

    // The user's iq: the hook answers 202, the answer comes later through the API.
    let mut user = stack.client("user1").await;
    user.send_xml(&format!(
        "<iq to='alerts@{DOMAIN}' type='get' id='weather-1'><query xmlns='urn:example:weather'/></iq>"
    ))
    .await;
    stack.hook.wait_requests(1).await;
    // The hook's 202 may still be on its way to the bridge: until it is there, nothing waits
    // (409, and nothing is sent).
    let answer_later = json!({
        "kind": "iq", "type": "result", "id": "weather-1",
        "to": user.jid.to_string(), "from": "alerts",
        "payload": "<query xmlns='urn:example:weather'><sky>clear</sky></query>"
    });
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    loop {
        let (status, accepted) = api.stanza(answer_later.clone()).await;
        if status == StatusCode::ACCEPTED {
            break;
        }
        assert_eq!(status, StatusCode::CONFLICT, "{accepted}");
        assert!(tokio::time::Instant::now() < deadline, "{accepted}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let result = user.recv_iq("weather-1").await;
    assert_eq!(result.attr("type"), Some("result"));
    assert!(crate::harness::to_xml(&result).contains("clear"));
    // iq_timeout passes, and no timeout error follows the answer.
    let late = user
        .try_recv_where("a second answer", Duration::from_secs(3), |e| {
            e.attr("id") == Some("weather-1")
        })
        .await;
    assert!(late.is_none(), "a timeout error followed: {late:?}");
}
on_both_servers!(an_iq_through_the_api_gets_the_servers_answer_and_a_hooks_202_is_answered_later);

/// Joins `ROOM` as `nick` and waits for the room's own presence back.
async fn join_room(user: &mut XmppClient, nick: &str) {
    user.send_xml(&format!(
        "<presence to='{ROOM}/{nick}'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ))
    .await;
    let own = format!("{ROOM}/{nick}");
    user.recv_where("the room's presence for us", REPLY_TIMEOUT, |e| {
        e.name() == "presence" && e.attr("from") == Some(own.as_str())
    })
    .await;
}

async fn groupchat_through_the_api_reaches_an_occupant_from_the_nick_also_after_a_restart(
    kind: ServerKind,
) {
    let Some(mut stack) = Stack::start(kind, Reply::echo, &api_config("")).await else {
        return;
    };
    let api = Api::of(&stack.bridge).await;
    let mut user = stack.client("user1").await;
    join_room(&mut user, "user1").await;
    let from_nick = format!("{ROOM}/Alerts");
    api.post_into_room(json!({ "to": ROOM, "type": "groupchat", "body": "disk full" }))
        .await;
    let got = user
        .recv_where("the alert in the room", REPLY_TIMEOUT, |e| {
            e.attr("from") == Some(from_nick.as_str()) && body(e).as_deref() == Some("disk full")
        })
        .await;
    assert_eq!(got.attr("type"), Some("groupchat"));

    // The server restarts: the bridge reconnects and joins again by itself.
    user.close().await;
    stack.server.kill_and_restart().await;
    let mut user = stack.client("user1").await;
    join_room(&mut user, "user1").await;
    api.post_into_room(json!({ "to": ROOM, "type": "groupchat", "body": "after the restart" }))
        .await;
    user.recv_where("the alert after the restart", REPLY_TIMEOUT, |e| {
        e.attr("from") == Some(from_nick.as_str())
            && body(e).as_deref() == Some("after the restart")
    })
    .await;
}
on_both_servers!(groupchat_through_the_api_reaches_an_occupant_from_the_nick_also_after_a_restart);

/// Polls `GET /health` until it answers `want`; returns how long that took.
async fn health_becomes(api: &Api, want: StatusCode) -> Duration {
    let started = std::time::Instant::now();
    loop {
        let response = api
            .client
            .get(format!("{}/health", api.base))
            .send()
            .await
            .expect("/health answers");
        if response.status() == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < REPLY_TIMEOUT,
            "/health stayed {}",
            response.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn health_is_503_within_a_second_of_the_server_dying_and_200_within_a_second_of_the_reconnect(
    kind: ServerKind,
) {
    let Some(mut stack) = Stack::start(kind, Reply::echo, &api_config("")).await else {
        return;
    };
    let api = Api::of(&stack.bridge).await;
    health_becomes(&api, StatusCode::OK).await;

    stack.server.kill();
    let took = health_becomes(&api, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        took < Duration::from_secs(1),
        "503 only {took:?} after the server died"
    );

    let logins = stack.server.component_logins();
    stack.server.start_again().await;
    // From the moment the server has accepted the component again.
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    while stack.server.component_logins() == logins {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bridge did not reconnect"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = health_becomes(&api, StatusCode::OK).await;
    assert!(
        took < Duration::from_secs(1),
        "200 only {took:?} after the reconnect"
    );
}
on_both_servers!(
    health_is_503_within_a_second_of_the_server_dying_and_200_within_a_second_of_the_reconnect
);
