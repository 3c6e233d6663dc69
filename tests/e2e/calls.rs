//! What the hook saw of numbered messages, shared by the durability and scaling tests: each
//! call decoded from its body (`senderN-SEQ`, maybe followed by padding), the sequence numbers
//! per sender, their order, and the rule that a `webhook-id` names exactly one message.

use std::collections::{BTreeMap, BTreeSet};

use tokio::time::Instant;

use crate::harness::Request;

/// A message: its sender's name and sequence number.
pub(crate) type Message = (String, u32);

/// One call the hook received.
pub(crate) struct Call {
    /// Its place among all calls, in arrival order.
    pub(crate) index: usize,
    pub(crate) sender: String,
    pub(crate) seq: u32,
    pub(crate) webhook_id: String,
    /// The path it posted to, without the leading `/`: the instance that made it, when each
    /// instance posts to a path of its own.
    pub(crate) instance: String,
    pub(crate) arrived: Instant,
    pub(crate) answered: Option<Instant>,
}

impl Call {
    pub(crate) fn message(&self) -> Message {
        (self.sender.clone(), self.seq)
    }
}

/// The calls the hook received, in arrival order, each decoded from its body and checked to
/// come from the sender the body names.
pub(crate) fn calls(requests: &[Request]) -> Vec<Call> {
    requests
        .iter()
        .enumerate()
        .map(|(index, request)| {
            let text = request.field("body").unwrap_or_default();
            let id = text.split(' ').next().unwrap_or_default();
            let (sender, seq) = id
                .rsplit_once('-')
                .and_then(|(sender, seq)| Some((sender.to_owned(), seq.parse().ok()?)))
                .unwrap_or_else(|| panic!("a call the test did not send: {}", request.json));
            let from = request.field("from").unwrap_or_default();
            assert!(
                from.starts_with(&format!("{sender}@")),
                "the call for {id} says it is from {from}"
            );
            Call {
                index,
                sender,
                seq,
                webhook_id: request.webhook_id(),
                instance: request.path.trim_start_matches('/').to_owned(),
                arrived: request.arrived,
                answered: request.answered,
            }
        })
        .collect()
}

/// Sender → the sequence numbers of `calls`, in arrival order.
pub(crate) fn seqs_by_sender<'a>(
    calls: impl IntoIterator<Item = &'a Call>,
) -> BTreeMap<String, Vec<u32>> {
    let mut by_sender: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for call in calls {
        by_sender
            .entry(call.sender.clone())
            .or_default()
            .push(call.seq);
    }
    by_sender
}

/// The senders whose sequence numbers are not strictly increasing, with their sequences.
pub(crate) fn out_of_order(by_sender: &BTreeMap<String, Vec<u32>>) -> Vec<String> {
    by_sender
        .iter()
        .filter(|(_, seqs)| seqs.windows(2).any(|w| w[0] >= w[1]))
        .map(|(sender, seqs)| format!("{sender}: {seqs:?}"))
        .collect()
}

/// Each `webhook-id` names one message, and every call for a message carries the same one.
pub(crate) fn assert_one_id_per_message(calls: &[Call]) {
    let mut messages_of_id: BTreeMap<&str, BTreeSet<Message>> = BTreeMap::new();
    let mut ids_of_message: BTreeMap<Message, BTreeSet<&str>> = BTreeMap::new();
    for call in calls {
        messages_of_id
            .entry(&call.webhook_id)
            .or_default()
            .insert(call.message());
        ids_of_message
            .entry(call.message())
            .or_default()
            .insert(&call.webhook_id);
    }
    let shared: Vec<_> = messages_of_id.iter().filter(|(_, m)| m.len() > 1).collect();
    assert!(
        shared.is_empty(),
        "webhook-ids naming several messages: {shared:?}"
    );
    let changed: Vec<_> = ids_of_message.iter().filter(|(_, i)| i.len() > 1).collect();
    assert!(
        changed.is_empty(),
        "messages posted under several webhook-ids: {changed:?}"
    );
}
