//! `component-http check`: the configuration is valid (already, if we got here), the server
//! accepts the component, the hook answers HTTP, the durable queue can be opened. Prints one
//! line per check.

use crate::config::Config;
use crate::queue::redb::RedbQueue;
use crate::queue::{Backend, QueueError};
use crate::webhook::client::HookClient;
use crate::xmpp::connect;

/// Runs the checks; returns whether all passed.
pub async fn run(config: &Config) -> bool {
    let hook_url = config.webhook.shown_url();
    println!(
        "ok    configuration: domain {}, server {}, hook {hook_url}",
        config.domain, config.server
    );
    let mut all_ok = true;
    match connect::connect(config).await {
        Ok(_) => println!(
            "ok    XMPP server {} accepted the component {}",
            config.server, config.domain
        ),
        Err(error) => {
            all_ok = false;
            println!("FAIL  XMPP server {}: {error}", config.server);
            if let Some(advice) = error.configuration_advice() {
                println!("      fix: {advice}");
            }
        }
    }
    match HookClient::new(&config.webhook) {
        Ok(hook) => match hook.probe().await {
            Ok(status) => println!("ok    hook {hook_url} answers HTTP (HEAD gave {status})"),
            Err(error) => {
                all_ok = false;
                println!("FAIL  hook {hook_url}: {error}");
            }
        },
        Err(error) => {
            all_ok = false;
            println!("FAIL  {error}");
        }
    }
    if config.queue.durable {
        let dir = &config.queue.data_dir;
        let waiting = match RedbQueue::open(dir) {
            Ok(queue) => queue.pending().await,
            Err(error) => Err(error),
        };
        match waiting {
            Ok(waiting) => println!(
                "ok    queue in {}: {} stanza(s) waiting",
                dir.display(),
                waiting.len()
            ),
            // A running instance holds the queue: it opened it, so it is usable.
            Err(QueueError::InUse { .. }) => println!(
                "ok    queue in {}: in use by the running instance",
                dir.display()
            ),
            Err(error) => {
                all_ok = false;
                println!("FAIL  {error}");
            }
        }
    }
    all_ok
}
