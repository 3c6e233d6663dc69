//! The MUC rooms of `[[rooms]]` (README, "Rooms"): the component joins each one on every
//! connection (its join presence is among the first stanzas written, [`Rooms::greeting`]),
//! follows its own occupant presence to know whether it is in, rejoins when the room lets it out
//! (a room or server restart) unless it was kicked or banned, and tells the API which rooms it may
//! post into ([`Rooms::sender_for`]). It takes every presence from a configured room, so occupants
//! coming and going are neither forwarded to the hook nor answered, and it drops the room's
//! reflection of the component's own messages, so that an echo bot in a room does not answer
//! itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use minidom::Element;
use tracing::{error, info, warn};

use crate::bridge::outbox::Outbox;
use crate::config::{Config, RoomConfig};
use crate::limits;
use crate::xmpp::codec::NS_COMPONENT;
use crate::xmpp::stanza::{Kind, Origin, Outbound, Stanza, bare, ncname};

const NS_MUC: &str = "http://jabber.org/protocol/muc";
const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";

/// Whether the component is in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Joining,
    Joined,
    /// Out, and why (shown in the API's `409`).
    Out(String),
}

/// Why the API cannot post into a room.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RoomRefusal {
    NotConfigured(String),
    NotJoined { room: String, why: String },
}

impl std::fmt::Display for RoomRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RoomRefusal::NotConfigured(room) => write!(
                f,
                "no [[rooms]] entry joins {room}: add one with jid = \"{room}\", a nick and the localpart to join as (`from`), and restart"
            ),
            RoomRefusal::NotJoined { room, why } => write!(
                f,
                "the component is not in {room} at the moment ({why}); it rejoins by itself, try again later"
            ),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Rooms {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<Config>,
    outbox: Outbox,
    state: Mutex<HashMap<String, State>>,
}

impl Rooms {
    pub(crate) fn new(config: Arc<Config>, outbox: Outbox) -> Self {
        let state = config
            .rooms
            .iter()
            .map(|room| (room.jid.clone(), State::Out("not joined yet".into())))
            .collect();
        Self {
            inner: Arc::new(Inner {
                config,
                outbox,
                state: Mutex::new(state),
            }),
        }
    }

    /// The join presences of every room, checked: written first on every new connection.
    pub(crate) fn greeting(&self) -> Vec<Outbound> {
        let inner = &self.inner;
        inner
            .config
            .rooms
            .iter()
            .filter_map(
                |room| match inner.outbox.check(inner.join(room), Origin::Local) {
                    Ok(out) => Some(out),
                    Err(reason) => {
                        error!(room = %room.jid, "the join presence is refused: {reason}");
                        None
                    }
                },
            )
            .collect()
    }

    /// The link is up again: the greeting is joining every room.
    pub(crate) fn link_up(&self) {
        for state in self.inner.lock().values_mut() {
            *state = State::Joining;
        }
    }

    /// The link is down: the component is in no room.
    pub(crate) fn link_down(&self) {
        for state in self.inner.lock().values_mut() {
            *state = State::Out("the XMPP link is down".into());
        }
    }

    /// Takes a stanza that belongs to the rooms: every presence from a configured room, and the
    /// room's reflection of the component's own groupchat. Returns it back otherwise.
    pub(crate) fn take(&self, stanza: Stanza) -> Option<Stanza> {
        // Every stanza read passes here: without rooms, nothing to look up.
        if self.inner.config.rooms.is_empty() {
            return Some(stanza);
        }
        let Some(from) = stanza.from() else {
            return Some(stanza);
        };
        let Some(room) = self.room_of(from) else {
            return Some(stanza);
        };
        let own = from.split_once('/').map(|(_, nick)| nick) == Some(room.nick.as_str());
        match stanza.kind {
            Kind::Presence => {
                if own {
                    self.own_presence(room, &stanza);
                }
                None
            }
            Kind::Message if own && stanza.type_() == Some("groupchat") => None,
            _ => Some(stanza),
        }
    }

    /// The rooms the component is in now, in configuration order.
    pub(crate) fn joined(&self) -> Vec<String> {
        let state = self.inner.lock();
        let rooms = &self.inner.config.rooms;
        rooms
            .iter()
            .filter(|room| state.get(&room.jid) == Some(&State::Joined))
            .map(|room| room.jid.clone())
            .collect()
    }

    /// The JID a groupchat to `to` is sent from, if the component is in that room.
    pub(crate) fn sender_for(&self, to: &str) -> Result<(String, String), RoomRefusal> {
        let room_jid = bare(to).unwrap_or_else(|| to.to_owned());
        let Some(room) = self.inner.config.rooms.iter().find(|r| r.jid == room_jid) else {
            return Err(RoomRefusal::NotConfigured(room_jid));
        };
        match self.inner.lock().get(&room.jid) {
            Some(State::Joined) => Ok((self.inner.member(room), room.from.clone())),
            Some(State::Joining) => Err(RoomRefusal::NotJoined {
                room: room_jid,
                why: "joining".into(),
            }),
            Some(State::Out(why)) => Err(RoomRefusal::NotJoined {
                room: room_jid,
                why: why.clone(),
            }),
            None => Err(RoomRefusal::NotConfigured(room_jid)),
        }
    }

    fn room_of(&self, from: &str) -> Option<&RoomConfig> {
        let room = bare(from)?;
        self.inner.config.rooms.iter().find(|r| r.jid == room)
    }

    fn own_presence(&self, room: &RoomConfig, presence: &Stanza) {
        let tree = presence.tree();
        let statuses: Vec<String> = tree
            .as_ref()
            .and_then(|t| t.get_child("x", NS_MUC_USER))
            .map(|x| {
                x.children()
                    .filter(|c| c.name() == "status")
                    .filter_map(|c| c.attr("code").map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let has = |code: &str| statuses.iter().any(|s| s == code);
        match presence.type_() {
            None => {
                info!(room = %room.jid, nick = %room.nick, "joined the room");
                self.set(room, State::Joined);
            }
            Some("error") => {
                let condition = tree
                    .as_ref()
                    .and_then(|t| t.get_child("error", NS_COMPONENT))
                    .and_then(|e| e.children().next().map(|c| c.name().to_owned()))
                    .unwrap_or_else(|| "undefined-condition".into());
                error!(room = %room.jid, nick = %room.nick, "cannot join the room: {condition}; {}", join_advice(&condition));
                self.set(room, State::Out(format!("joining failed: {condition}")));
            }
            Some("unavailable") if has("303") => {}
            Some("unavailable") if has("301") || has("307") => {
                let what = if has("301") { "banned" } else { "kicked" };
                warn!(room = %room.jid, nick = %room.nick, "{what} from the room; it is not rejoined until the next connection");
                self.set(room, State::Out(format!("{what} from the room")));
            }
            Some("unavailable") => {
                warn!(room = %room.jid, "the room let the component out (a restart?); rejoining in {:?}", limits::ROOM_REJOIN_DELAY);
                self.set(room, State::Out("left the room; rejoining".into()));
                let (rooms, room) = (self.clone(), room.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(limits::ROOM_REJOIN_DELAY).await;
                    rooms.rejoin(&room).await;
                });
            }
            Some(_) => {}
        }
    }

    /// Joins `room` again if it is still out and the link is up.
    async fn rejoin(&self, room: &RoomConfig) {
        {
            let mut state = self.inner.lock();
            match state.get(&room.jid) {
                Some(State::Out(why)) if why != "the XMPP link is down" => {
                    state.insert(room.jid.clone(), State::Joining);
                }
                _ => return,
            }
        }
        self.inner
            .outbox
            .send(self.inner.join(room), Origin::Local)
            .await;
    }

    fn set(&self, room: &RoomConfig, state: State) {
        self.inner.lock().insert(room.jid.clone(), state);
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, State>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The full JID the component is in `room` as.
    fn member(&self, room: &RoomConfig) -> String {
        format!(
            "{}@{}/{}",
            room.from, self.config.domain, self.config.resource
        )
    }

    /// The presence that joins `room`, asking for no history.
    fn join(&self, room: &RoomConfig) -> Element {
        Element::builder("presence", NS_COMPONENT)
            .attr(ncname("from"), self.member(room))
            .attr(ncname("to"), format!("{}/{}", room.jid, room.nick))
            .append(
                Element::builder("x", NS_MUC)
                    .append(
                        Element::builder("history", NS_MUC)
                            .attr(ncname("maxstanzas"), "0")
                            .build(),
                    )
                    .build(),
            )
            .build()
    }
}

/// What to do about a join the room refused.
fn join_advice(condition: &str) -> &'static str {
    match condition {
        "conflict" => "another occupant has this nick: choose another `nick` in [[rooms]]",
        "registration-required" => {
            "the room is members-only: make the `from` JID a member of the room (or open it)"
        }
        "not-authorized" => {
            "the room has a password, which component-http does not send: remove it or use another room"
        }
        "forbidden" => "the `from` JID is banned from the room: lift the ban",
        "item-not-found" | "remote-server-not-found" => {
            "the room does not exist and cannot be created from here: create it, or fix `jid`"
        }
        "not-allowed" => "the room cannot be created by this JID: create it first",
        "service-unavailable" => "the room is full, or the MUC service refuses: try again later",
        _ => "see the room's configuration",
    }
}
