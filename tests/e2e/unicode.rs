//! Text survives the trip both ways: XML's special characters, emoji (outside the BMP, with
//! modifiers), right-to-left scripts and mixed text reach the hook exactly as typed and come back
//! to the user exactly as the hook wrote them, in the `body` field and in a `stanza` field.

use serde_json::json;

use crate::harness::ServerKind;
use crate::harness::{Reply, Request, Stack, body, echo_text};

const TEXTS: &[&str] = &[
    "<&>\"'",
    "a <b>bold</b> &amp; 'quoted' \"text\" ]]> <!-- not a comment -->",
    "emoji 😀🎉 👍🏽 👩‍💻",
    "שלום עולם",
    "مرحبا بالعالم",
    "mixed: hello שלום 123 مرحبا <&> 😀",
    "line one\nline two\ttabbed",
];

async fn special_characters_and_unicode_survive_both_ways(kind: ServerKind) {
    let Some(stack) = Stack::start(kind, Reply::echo, "").await else {
        return;
    };
    let mut user = stack.client("user1").await;

    for (n, text) in TEXTS.iter().enumerate() {
        let reply = user
            .chat("echo@bot.localhost", &format!("uni-{n}"), text)
            .await;
        let requests = stack.hook.wait_requests(n + 1).await;
        assert_eq!(
            requests[n].json["body"].as_str(),
            Some(*text),
            "what the hook received"
        );
        assert_eq!(body(&reply), Some(echo_text(text)), "what came back");
    }
}
on_both_servers!(special_characters_and_unicode_survive_both_ways);

async fn special_characters_in_a_stanza_field_reach_the_user(kind: ServerKind) {
    let Some(stack) = Stack::start(kind,
        |_: &Request| {
            Reply::json(json!({
                "stanza": "<message type='chat'><body>&lt;tag&gt; &amp; &quot;quotes&quot; &apos;apostrophes&apos; 😀 שלום</body></message>"
            }))
        },
        "",
    )
    .await
    else {
        return;
    };
    let mut user = stack.client("user1").await;

    let reply = user.chat("echo@bot.localhost", "uni-stanza", "go").await;

    assert_eq!(
        body(&reply).as_deref(),
        Some("<tag> & \"quotes\" 'apostrophes' 😀 שלום")
    );
}
on_both_servers!(special_characters_in_a_stanza_field_reach_the_user);
