//! `component-http check`: the configuration is valid (already, if we got here), the server
//! accepts the component, the hook answers HTTP. Prints one line per check.

use crate::config::Config;
use crate::webhook::client::HookClient;
use crate::xmpp::session;

/// Runs the checks; returns whether all passed.
pub async fn run(config: &Config) -> bool {
    println!(
        "ok    configuration: domain {}, server {}, hook {}",
        config.domain, config.server, config.webhook.url
    );
    let mut all_ok = true;
    match session::connect(config).await {
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
            Ok(status) => println!(
                "ok    hook {} answers HTTP (HEAD gave {status})",
                config.webhook.url
            ),
            Err(error) => {
                all_ok = false;
                println!("FAIL  hook {}: {error}", config.webhook.url);
            }
        },
        Err(error) => {
            all_ok = false;
            println!("FAIL  {error}");
        }
    }
    all_ok
}
