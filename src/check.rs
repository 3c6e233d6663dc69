//! `component-http check` (README, "Command line"): the configuration is valid (already, if we
//! got here), each `[api] listen` address can be bound, each API token's source is there (and a
//! token file is private to its owner), each room is well formed, the server accepts the
//! component, the hook answers HTTP, the durable queue can be opened. Prints one line per check,
//! and under a failure or a warning the fix. It never prints a secret: a token is shown by its
//! name and where it comes from, nothing of its value.

use std::fmt::Display;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;

use crate::config::{Config, QueueBackend, TokenSource};
use crate::queue::postgres;
use crate::queue::redb::RedbQueue;
use crate::queue::{Backend, QueueError};
use crate::webhook::client::HookClient;
use crate::xmpp::connect;

/// Runs the checks; returns whether all passed (warnings do not fail).
pub async fn run(config: &Config) -> bool {
    let mut report = Report::default();
    let hook_url = config.webhook.shown_url();
    report.ok(format!(
        "configuration: domain {}, server {}, hook {hook_url}",
        config.domain, config.server
    ));
    api(config, &mut report).await;
    rooms(config, &mut report);
    match connect::connect(config).await {
        Ok(_) => report.ok(format!(
            "XMPP server {} accepted the component {}",
            config.server, config.domain
        )),
        Err(error) => report.fail(
            format!("XMPP server {}: {error}", config.server),
            error.configuration_advice(),
        ),
    }
    match HookClient::new(&config.webhook) {
        Ok(hook) => match hook.probe().await {
            Ok(status) => report.ok(format!("hook {hook_url} answers HTTP (HEAD gave {status})")),
            Err(error) => report.fail(format!("hook {hook_url}: {error}"), None::<&str>),
        },
        Err(error) => report.fail(error, None::<&str>),
    }
    if let QueueBackend::Postgres(postgres) = &config.queue.backend {
        match postgres::database_version(postgres).await {
            Ok(version) if version > postgres::schema_version() => report.fail(
                format!(
                    "PostgreSQL queue: schema version {version} is newer than this build's ({})",
                    postgres::schema_version()
                ),
                Some("run the newest component-http on every instance that shares the database"),
            ),
            Ok(version) => report.ok(format!(
                "PostgreSQL queue reachable as instance {:?}: schema version {version}{}",
                postgres.instance,
                if version < postgres::schema_version() {
                    format!(" (brought to {} at the next start)", postgres::schema_version())
                } else {
                    String::new()
                }
            )),
            Err(error) => report.fail(
                error,
                Some("check postgres_url (host, port, user, password, database) and that the server accepts this host"),
            ),
        }
    }
    if matches!(config.queue.backend, QueueBackend::Durable) {
        let dir = &config.queue.data_dir;
        let waiting = match RedbQueue::open(dir) {
            Ok(queue) => queue.pending().await,
            Err(error) => Err(error),
        };
        match waiting {
            Ok(waiting) => report.ok(format!(
                "queue in {}: {} stanza(s) waiting",
                dir.display(),
                waiting.len()
            )),
            // A running instance holds the queue: it opened it, so it is usable.
            Err(QueueError::InUse { .. }) => report.ok(format!(
                "queue in {}: in use by the running instance",
                dir.display()
            )),
            Err(error) => report.fail(error, None::<&str>),
        }
    }
    !report.failed
}

/// The HTTP API: its addresses can be bound, its tokens' sources are there.
async fn api(config: &Config, report: &mut Report) {
    let Some(api) = &config.api else {
        report.ok("HTTP API off ([api] listen is not set)");
        return;
    };
    for address in &api.listen {
        // Bound as the running instance binds it, and closed at once.
        match crate::api::listen_on(*address).await {
            Ok(listener) => {
                drop(listener);
                report.ok(format!("HTTP API can listen on {address}"));
            }
            Err(error) => {
                let (text, fix) = cannot_listen(*address, &error);
                report.fail(text, fix);
            }
        }
    }
    for token in &api.tokens {
        let name = &token.name;
        match &token.source {
            // Loading the configuration read the token: the file was readable and held one.
            TokenSource::File(path) => match std::fs::metadata(path) {
                Ok(metadata) => match open_to_others(metadata.permissions().mode()) {
                    None => report.ok(format!(
                        "API token {name:?}: {}, readable and non-empty",
                        token.source
                    )),
                    Some(mode) => report.warn(
                        format!(
                            "API token {name:?}: {}, readable and non-empty, but its mode is {mode:04o}: group or others may access it",
                            token.source
                        ),
                        format!("chmod 600 {}", path.display()),
                    ),
                },
                Err(error) => report.fail(
                    format!("API token {name:?}: {}: {error}", token.source),
                    Some(format!(
                        "make {} readable by the user component-http runs as",
                        path.display()
                    )),
                ),
            },
            TokenSource::Env(_) => report.ok(format!(
                "API token {name:?}: {}, set and non-empty",
                token.source
            )),
            TokenSource::Inline => report.ok(format!("API token {name:?}: {}", token.source)),
        }
    }
}

/// The rooms: loading the configuration checked each (a bare room JID off the component's own
/// domain, a nickname, a localpart); this says what the component will join them as.
fn rooms(config: &Config, report: &mut Report) {
    for room in &config.rooms {
        report.ok(format!(
            "room {}: joins as {}@{}/{} with nick {:?}",
            room.jid, room.from, config.domain, config.resource, room.nick
        ));
    }
}

/// Why `address` cannot be bound, and what to do about it.
fn cannot_listen(address: SocketAddr, error: &std::io::Error) -> (String, Option<String>) {
    use std::io::ErrorKind;
    let port = address.port();
    let text = format!("HTTP API cannot listen on {address}: {error}");
    match error.kind() {
        ErrorKind::AddrInUse => (
            format!("{text}; it may be the running instance of component-http"),
            Some(format!(
                "stop the running instance (`ss -ltnp 'sport = :{port}'` shows what holds the port), or choose another port in [api] listen"
            )),
        ),
        ErrorKind::PermissionDenied => (
            text,
            Some(format!(
                "port {port} needs privileges: choose a port from 1024 up in [api] listen, or grant CAP_NET_BIND_SERVICE"
            )),
        ),
        ErrorKind::AddrNotAvailable => (
            text,
            Some(format!(
                "{} is not an address of this machine: use one of its addresses (e.g. 127.0.0.1) in [api] listen",
                address.ip()
            )),
        ),
        _ => (text, None),
    }
}

/// The permission bits of a file mode, when group or others have any access.
fn open_to_others(mode: u32) -> Option<u32> {
    let permissions = mode & 0o7777;
    (permissions & 0o077 != 0).then_some(permissions)
}

/// What `check` printed so far, and whether anything failed.
#[derive(Default)]
struct Report {
    failed: bool,
}

impl Report {
    fn ok(&mut self, what: impl Display) {
        println!("ok    {what}");
    }

    /// Does not fail the check.
    fn warn(&mut self, what: impl Display, fix: impl Display) {
        println!("warn  {what}");
        println!("      fix: {fix}");
    }

    fn fail(&mut self, what: impl Display, fix: Option<impl Display>) {
        self.failed = true;
        println!("FAIL  {what}");
        if let Some(fix) = fix {
            println!("      fix: {fix}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_in_use_points_at_the_running_instance() {
        let address: SocketAddr = "127.0.0.1:5281".parse().unwrap();
        let error = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let (text, fix) = cannot_listen(address, &error);
        assert!(text.contains("127.0.0.1:5281"), "{text}");
        assert!(text.contains("running instance"), "{text}");
        let fix = fix.unwrap_or_default();
        assert!(fix.contains("stop the running instance"), "{fix}");
        assert!(fix.contains("another port"), "{fix}");
        assert!(fix.contains(":5281"), "{fix}");

        let error = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let (_, fix) = cannot_listen("0.0.0.0:80".parse().unwrap(), &error);
        assert!(fix.unwrap_or_default().contains("1024"));
    }

    #[test]
    fn only_owner_only_modes_are_private() {
        assert_eq!(open_to_others(0o100600), None);
        assert_eq!(open_to_others(0o100400), None);
        assert_eq!(open_to_others(0o100700), None);
        assert_eq!(open_to_others(0o100640), Some(0o640));
        assert_eq!(open_to_others(0o100604), Some(0o604));
        assert_eq!(open_to_others(0o100644), Some(0o644));
    }
}
