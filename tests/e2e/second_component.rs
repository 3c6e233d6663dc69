//! A second bridge for the same domain (README, "The XMPP server's side"). Prosody allows one
//! connection per component domain: the second is refused with the stream error `conflict` and
//! the first keeps serving the domain. ejabberd accepts several and spreads the stanzas across
//! them, so two instances share the conversation (each message answered once, by either).

use std::collections::BTreeSet;
use std::time::Duration;

use crate::harness::ServerKind;
use crate::harness::{Bridge, Hook, REPLY_TIMEOUT, Reply, Stack, body, echo_text, wait_until};

/// Enough messages that ejabberd, which picks a connection at random for each stanza, gives
/// both some (all on one: a chance of 2 in 2^20).
const MESSAGES: usize = 20;

async fn a_second_bridge_for_the_domain_is_refused_or_shares_the_load(kind: ServerKind) {
    let Some(stack) = Stack::start(kind, Reply::echo, "").await else {
        return;
    };
    let second_hook = Hook::start(Reply::echo).await;
    let logins = stack.server.component_logins();
    let second = Bridge::start_unchecked(&stack.server, &second_hook.url(), "");
    match kind {
        ServerKind::Prosody => {
            let refused = wait_until(REPLY_TIMEOUT, || {
                std::fs::read_to_string(second.log_path())
                    .unwrap_or_default()
                    .contains("conflict")
            })
            .await;
            assert!(
                refused,
                "Prosody did not refuse the second bridge with `conflict`"
            );
            assert_eq!(
                stack.server.component_logins(),
                logins,
                "Prosody let the second bridge in"
            );
        }
        ServerKind::Ejabberd => {
            let accepted =
                wait_until(REPLY_TIMEOUT, || stack.server.component_logins() > logins).await;
            assert!(accepted, "ejabberd did not accept the second bridge");
        }
    }

    let mut user = stack.client("user1").await;
    let mut expected = BTreeSet::new();
    for n in 0..MESSAGES {
        let text = format!("message {n}");
        user.send_xml(&format!(
            "<message to='echo@bot.localhost' type='chat' id='second-{n}'><body>{text}</body></message>"
        ))
        .await;
        expected.insert(echo_text(&text));
    }
    // With two instances the order across them is not kept: collect, then compare as sets.
    let mut echoes = BTreeSet::new();
    for _ in 0..MESSAGES {
        let reply = user.recv_message_from_component().await;
        let text = body(&reply).unwrap_or_default();
        assert!(echoes.insert(text.clone()), "answered twice: {text}");
    }
    assert_eq!(echoes, expected, "every message answered once");
    let extra = user
        .try_recv_where("another answer", Duration::from_millis(500), |e| {
            e.name() == "message"
        })
        .await;
    assert!(extra.is_none(), "an extra answer: {extra:?}");

    let (first_calls, second_calls) = (stack.hook.requests().len(), second_hook.requests().len());
    assert_eq!(first_calls + second_calls, MESSAGES);
    match kind {
        ServerKind::Prosody => assert_eq!(second_calls, 0, "the refused bridge got stanzas"),
        // ejabberd's documented behaviour, which the README warns about: several instances
        // share the domain.
        ServerKind::Ejabberd => assert!(
            first_calls > 0 && second_calls > 0,
            "ejabberd sent {first_calls} to the first bridge and {second_calls} to the second"
        ),
    }
}
on_both_servers!(a_second_bridge_for_the_domain_is_refused_or_shares_the_load);
