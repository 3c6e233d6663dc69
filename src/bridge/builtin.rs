//! What the component answers itself (the README section of that name): presence for
//! the domain and its JIDs, service discovery, XEP-0199 ping, XEP-0092 version, and
//! `service-unavailable` for the rest. Pure: a stanza in, the stanzas to send out.

use minidom::Element;

use crate::bridge::reply::iq_result;
use crate::config::Config;
use crate::xmpp::codec::NS_COMPONENT;
use crate::xmpp::stanza::{ErrorType, Kind, Stanza, StanzaError, bare, error_reply, ncname};

pub(crate) const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub(crate) const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
pub(crate) const NS_PING: &str = "urn:xmpp:ping";
pub(crate) const NS_VERSION: &str = "jabber:iq:version";

/// The answers to a stanza that is not forwarded to the hook.
pub(crate) fn answer(stanza: &Stanza, config: &Config) -> Vec<Element> {
    match stanza.kind {
        Kind::Presence => presence(stanza, config),
        Kind::Iq => iq(stanza, config).into_iter().collect(),
        Kind::Message => error_reply(stanza, &StanzaError::service_unavailable(), &config.domain)
            .into_iter()
            .collect(),
    }
}

fn presence(stanza: &Stanza, config: &Config) -> Vec<Element> {
    let (Some(to), Some(from)) = (stanza.to(), stanza.from()) else {
        return Vec::new();
    };
    let Some(bare_to) = bare(to) else {
        return Vec::new();
    };
    let with_resource = format!("{bare_to}/{}", config.resource);
    let simple = |type_: Option<&str>, from_jid: &str| {
        let mut builder = Element::builder("presence", NS_COMPONENT)
            .attr(ncname("to"), from)
            .attr(ncname("from"), from_jid);
        if let Some(type_) = type_ {
            builder = builder.attr(ncname("type"), type_);
        }
        builder.build()
    };
    let available = || {
        let mut element = simple(None, &with_resource);
        if let Some(show) = &config.presence_show {
            element.append_child(
                Element::builder("show", NS_COMPONENT)
                    .append(show.as_str())
                    .build(),
            );
        }
        if let Some(status) = &config.presence_status {
            element.append_child(
                Element::builder("status", NS_COMPONENT)
                    .append(status.as_str())
                    .build(),
            );
        }
        element
    };
    match stanza.type_() {
        Some("probe") => vec![available()],
        Some("subscribe") => vec![simple(Some("subscribed"), &bare_to), available()],
        Some("unsubscribe") => vec![
            simple(Some("unsubscribed"), &bare_to),
            simple(Some("unavailable"), &with_resource),
        ],
        _ => Vec::new(),
    }
}

fn iq(stanza: &Stanza, config: &Config) -> Option<Element> {
    if !matches!(stanza.type_(), Some("get" | "set")) {
        return None;
    }
    let tree = stanza.tree();
    let mut children = tree.iter().flat_map(Element::children);
    let (Some(payload), None) = (children.next(), children.next()) else {
        // RFC 6120 §8.2.3: a get or set has exactly one child.
        return error_reply(
            stanza,
            &StanzaError::new(ErrorType::Modify, "bad-request"),
            &config.domain,
        );
    };
    let is_get = stanza.type_() == Some("get");
    let answer = match (payload.ns().as_str(), payload.name(), is_get) {
        (NS_DISCO_INFO, "query", true) => Some(disco_info(stanza, payload, config)),
        (NS_DISCO_ITEMS, "query", true) => {
            Some(with_node(Element::bare("query", NS_DISCO_ITEMS), payload))
        }
        (NS_PING, "ping", true) => None,
        (NS_VERSION, "query", true) => Some(
            Element::builder("query", NS_VERSION)
                .append(
                    Element::builder("name", NS_VERSION)
                        .append("component-http")
                        .build(),
                )
                .append(
                    Element::builder("version", NS_VERSION)
                        .append(env!("CARGO_PKG_VERSION"))
                        .build(),
                )
                .build(),
        ),
        _ => return error_reply(stanza, &StanzaError::service_unavailable(), &config.domain),
    };
    Some(iq_result(stanza, answer))
}

fn with_node(mut query: Element, request: &Element) -> Element {
    if let Some(node) = request.attr("node") {
        query.set_attr(rxml::Namespace::NONE, ncname("node"), node);
    }
    query
}

fn disco_info(stanza: &Stanza, request: &Element, config: &Config) -> Element {
    let is_domain = stanza
        .to()
        .and_then(bare)
        .is_some_and(|to| to == config.domain);
    let (category, type_) = if is_domain {
        ("component", "generic")
    } else {
        ("client", "bot")
    };
    let mut query = Element::builder("query", NS_DISCO_INFO).append(
        Element::builder("identity", NS_DISCO_INFO)
            .attr(ncname("category"), category)
            .attr(ncname("type"), type_)
            .attr(ncname("name"), config.disco_name.as_str())
            .build(),
    );
    for feature in [NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING, NS_VERSION] {
        query = query.append(
            Element::builder("feature", NS_DISCO_INFO)
                .attr(ncname("var"), feature)
                .build(),
        );
    }
    with_node(query.build(), request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::stanza::NS_STANZAS;
    use crate::xmpp::stanza::tests::stanza;
    use std::path::Path;

    fn config(extra: &str) -> Config {
        let text = format!(
            "domain = \"bot.localhost\"\nserver = \"127.0.0.1:5347\"\nsecret = \"x\"\ncomponent_post_url = \"http://127.0.0.1:1/\"\n{extra}"
        );
        Config::from_toml(&text, Path::new("t.toml"), &|_| None).unwrap()
    }

    #[test]
    fn subscribe_is_accepted_from_the_bare_jid_then_available_with_resource() {
        for to in [
            "bot.localhost",
            "echo@bot.localhost",
            "echo@bot.localhost/x",
        ] {
            let out = answer(
                &stanza(&format!(
                    "<presence type='subscribe' to='{to}' from='u@localhost'/>"
                )),
                &config(""),
            );
            let bare_to = to.split('/').next().unwrap();
            assert_eq!(out.len(), 2);
            assert_eq!(out[0].attr("type"), Some("subscribed"));
            assert_eq!(out[0].attr("from"), Some(bare_to));
            assert_eq!(out[0].attr("to"), Some("u@localhost"));
            assert_eq!(out[1].attr("type"), None);
            assert_eq!(
                out[1].attr("from"),
                Some(format!("{bare_to}/default").as_str())
            );
        }
    }

    #[test]
    fn probe_unsubscribe_and_others() {
        let cfg = config("resource = \"bot\"\n[presence]\nshow = \"chat\"\nstatus = \"Ready\"\n");
        let out = answer(
            &stanza("<presence type='probe' to='echo@bot.localhost' from='u@localhost'/>"),
            &cfg,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].attr("from"), Some("echo@bot.localhost/bot"));
        assert_eq!(
            out[0].get_child("show", NS_COMPONENT).unwrap().text(),
            "chat"
        );
        assert_eq!(
            out[0].get_child("status", NS_COMPONENT).unwrap().text(),
            "Ready"
        );
        let out = answer(
            &stanza("<presence type='unsubscribe' to='echo@bot.localhost' from='u@localhost'/>"),
            &cfg,
        );
        assert_eq!(
            out.iter().map(|e| e.attr("type")).collect::<Vec<_>>(),
            [Some("unsubscribed"), Some("unavailable")]
        );
        for type_ in [
            "",
            " type='unavailable'",
            " type='subscribed'",
            " type='error'",
        ] {
            let out = answer(
                &stanza(&format!(
                    "<presence{type_} to='echo@bot.localhost' from='u@localhost'/>"
                )),
                &cfg,
            );
            assert!(out.is_empty(), "{type_}");
        }
    }

    #[test]
    fn disco_ping_version_and_the_rest() {
        let cfg = config("");
        let info = |to: &str| {
            let out = answer(
                &stanza(&format!(
                    "<iq type='get' id='d' to='{to}' from='u@localhost/r'><query xmlns='{NS_DISCO_INFO}'/></iq>"
                )),
                &cfg,
            );
            let query = out[0].get_child("query", NS_DISCO_INFO).unwrap().clone();
            let identity = query.get_child("identity", NS_DISCO_INFO).unwrap().clone();
            let features: Vec<_> = query
                .children()
                .filter_map(|c| c.attr("var").map(str::to_owned))
                .collect();
            (
                identity.attr("category").unwrap().to_owned(),
                identity.attr("type").unwrap().to_owned(),
                features,
            )
        };
        let (category, type_, features) = info("bot.localhost");
        assert_eq!(
            (category.as_str(), type_.as_str()),
            ("component", "generic")
        );
        assert!(features.iter().any(|f| f == NS_PING) && features.iter().any(|f| f == NS_VERSION));
        let (category, type_, _) = info("echo@bot.localhost");
        assert_eq!((category.as_str(), type_.as_str()), ("client", "bot"));

        let out = answer(
            &stanza(&format!(
                "<iq type='get' id='p' to='bot.localhost' from='u@localhost/r'><ping xmlns='{NS_PING}'/></iq>"
            )),
            &cfg,
        );
        assert_eq!(
            (
                out[0].attr("type"),
                out[0].attr("id"),
                out[0].children().count()
            ),
            (Some("result"), Some("p"), 0)
        );
        let out = answer(
            &stanza(&format!(
                "<iq type='get' id='v' to='bot.localhost' from='u@localhost/r'><query xmlns='{NS_VERSION}'/></iq>"
            )),
            &cfg,
        );
        assert_eq!(
            out[0]
                .get_child("query", NS_VERSION)
                .unwrap()
                .get_child("name", NS_VERSION)
                .unwrap()
                .text(),
            "component-http"
        );
        let out = answer(
            &stanza(&format!(
                "<iq type='get' id='i' to='bot.localhost' from='u@localhost/r'><query xmlns='{NS_DISCO_ITEMS}' node='n'/></iq>"
            )),
            &cfg,
        );
        let items = out[0].get_child("query", NS_DISCO_ITEMS).unwrap();
        assert_eq!(
            (items.children().count(), items.attr("node")),
            (0, Some("n"))
        );

        let out = answer(
            &stanza(
                "<iq type='set' id='s' to='bot.localhost' from='u@localhost/r'><query xmlns='jabber:iq:roster'/></iq>",
            ),
            &cfg,
        );
        assert!(
            out[0]
                .get_child("error", NS_COMPONENT)
                .unwrap()
                .has_child("service-unavailable", NS_STANZAS)
        );
        let out = answer(
            &stanza("<iq type='get' id='e' to='bot.localhost' from='u@localhost/r'/>"),
            &cfg,
        );
        assert!(
            out[0]
                .get_child("error", NS_COMPONENT)
                .unwrap()
                .has_child("bad-request", NS_STANZAS)
        );
        assert!(
            answer(
                &stanza("<iq type='result' id='r' to='bot.localhost' from='u@localhost/r'/>"),
                &cfg
            )
            .is_empty()
        );
    }

    #[test]
    fn messages_not_forwarded_are_refused_except_errors() {
        let cfg = config("");
        let out = answer(
            &stanza(
                "<message to='echo@bot.localhost' from='u@localhost' id='m'><body>x</body></message>",
            ),
            &cfg,
        );
        assert!(
            out[0]
                .get_child("error", NS_COMPONENT)
                .unwrap()
                .has_child("service-unavailable", NS_STANZAS)
        );
        assert!(
            answer(
                &stanza("<message type='error' to='echo@bot.localhost' from='u@localhost'/>"),
                &cfg
            )
            .is_empty()
        );
    }
}
