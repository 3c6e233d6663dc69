//! `config_load`: configuration text → validated `Config`. It checks that loading never panics,
//! whatever the text: refusing it with an error is fine. Two kinds of input reach it: any text,
//! taken as the configuration file as it is (the corpus holds valid configurations for it to
//! mutate); and, when the input starts with the byte 0xFF (never the start of UTF-8 text), a
//! structured configuration built from the rest: the known keys and tables, and now and then an
//! unknown one, with values that are near the edges of what each key accepts (durations,
//! sizes, URLs, JIDs, header names, signing secrets) or arbitrary, so that the validation
//! behind the TOML parser is reached far more often than by mutating text.
//!
//! A configuration that names an absolute path (for `secret_file`, `tls_ca_file`, …) is
//! skipped: the harness must not read the machine's files, and a device such as `/dev/zero`
//! would be read without end. Relative paths resolve under a directory that does not exist.
#![no_main]

use std::path::Path;

use arbitrary::{Result, Unstructured};
use component_http::config::Config;
use libfuzzer_sys::fuzz_target;

/// `(table, key)`: the table is `""` for the top level.
const KEYS: &[(&str, &str)] = &[
    ("", "domain"),
    ("", "server"),
    ("", "secret"),
    ("", "secret_file"),
    ("", "tls"),
    ("", "tls_server_name"),
    ("", "tls_ca_file"),
    ("", "stanzas"),
    ("", "component_post_stanzas"),
    ("", "post_stanza_types"),
    ("", "ordering"),
    ("", "max_in_flight"),
    ("", "iq_timeout"),
    ("", "keepalive_interval"),
    ("", "max_stanza_bytes"),
    ("", "max_depth"),
    ("", "resource"),
    ("", "component_post_url"),
    ("", "data_dir"),
    ("", "queue"),
    ("", "queue_max_stanzas"),
    ("", "queue_max_bytes"),
    ("", "retry_for"),
    ("", "retry_max_interval"),
    ("presence", "show"),
    ("presence", "status"),
    ("disco", "name"),
    ("webhook", "url"),
    ("webhook", "timeout"),
    ("webhook", "connect_timeout"),
    ("webhook", "max_response_bytes"),
    ("webhook", "http2_prior_knowledge"),
    ("webhook", "authorization"),
    ("webhook", "authorization_file"),
    ("webhook", "signing_secret"),
    ("webhook", "signing_secret_file"),
    ("webhook.headers", "X-Env"),
];

/// Strings that sit on the edges of what the keys accept.
const STRINGS: &[&str] = &[
    "",
    "bot.localhost",
    "Bot.Example.ORG",
    "user@bot",
    "bot/res",
    "[::1]",
    "127.0.0.1:5347",
    "[::1]:5347",
    "[::1]",
    ":5347",
    "host:65536",
    "host:-1",
    "localhost:0",
    "http://127.0.0.1:8080/hook",
    "https://hooks.example.org/xmpp?x=1#f",
    "ftp://hooks",
    "http://",
    "http://[::1",
    "file:///etc",
    "30s",
    "0s",
    "1ms",
    "999ms",
    "1s",
    "5m",
    "24h",
    "1y",
    "18446744073709551615s",
    "18446744073709551616s",
    "99999999999999999999h",
    "1s 1s",
    "-1s",
    "message",
    "presence",
    "iq",
    "conversation",
    "none",
    "durable",
    "memory",
    "away",
    "chat",
    "dnd",
    "xa",
    "default",
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "whsec_dGhyb3dhd2F5IHNlY29uZCBzaWduaW5nIGtleQ==",
    "whsec_",
    "whsec_=",
    "whsec_%%%%",
    "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "Bearer abc",
    "a\nb",
    "\u{0}",
    "\u{feff}",
    "data",
    "secret.txt",
    "../x",
];

fn string(u: &mut Unstructured) -> Result<String> {
    if u.ratio(3, 4)? {
        Ok((*u.choose(STRINGS)?).to_owned())
    } else {
        u.arbitrary()
    }
}

/// A TOML value: mostly the kinds the keys expect, sometimes another.
fn value(u: &mut Unstructured) -> Result<String> {
    Ok(match u.int_in_range(0..=9)? {
        0..=3 => toml_string(&string(u)?),
        4 => u
            .choose(&[
                "0",
                "1",
                "2",
                "1023",
                "1024",
                "262144",
                "9223372036854775807",
                "-1",
                "18446744073709551615",
            ])?
            .to_string(),
        5 => u.arbitrary::<i64>()?.to_string(),
        6 => u.arbitrary::<bool>()?.to_string(),
        7 => {
            let n = u.int_in_range(0..=3)?;
            let mut items = Vec::new();
            for _ in 0..n {
                items.push(toml_string(&string(u)?));
            }
            format!("[{}]", items.join(", "))
        }
        8 => format!("{}", u.arbitrary::<f64>()?).replace("NaN", "nan"),
        _ => "{ a = 1 }".to_owned(),
    })
}

fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A configuration built from known keys: the required ones with working values unless the
/// input drops them, then any keys with edge or arbitrary values, grouped by table.
fn structured(u: &mut Unstructured) -> Result<String> {
    let mut entries: Vec<(String, String, String)> = Vec::new();
    let required = [
        ("", "domain", "\"bot.localhost\""),
        ("", "server", "\"127.0.0.1:5347\""),
        ("", "secret", "\"s\""),
        ("", "component_post_url", "\"http://127.0.0.1:8080/hook\""),
    ];
    for (table, key, default) in required {
        if u.ratio(7, 8)? {
            entries.push((table.into(), key.into(), default.into()));
        }
    }
    let n = u.int_in_range(0..=12)?;
    for _ in 0..n {
        let (table, key) = if u.ratio(1, 16)? {
            let key: String = u.arbitrary()?;
            (String::new(), toml_string(&key))
        } else {
            let (table, key) = *u.choose(KEYS)?;
            (table.to_owned(), key.to_owned())
        };
        let value = value(u)?;
        // A later value for the same key replaces the earlier one (TOML refuses duplicates,
        // which only tests the parser).
        entries.retain(|(t, k, _)| !(t == &table && k == &key));
        entries.push((table, key, value));
    }
    let mut text = String::new();
    let mut tables: Vec<&str> = entries.iter().map(|(t, _, _)| t.as_str()).collect();
    tables.sort();
    tables.dedup();
    for table in tables {
        if !table.is_empty() {
            text.push_str(&format!("[{table}]\n"));
        }
        for (t, key, value) in &entries {
            if t == table {
                text.push_str(&format!("{key} = {value}\n"));
            }
        }
    }
    Ok(text)
}

/// Whether the configuration names an absolute path anywhere (see the module comment).
fn names_an_absolute_path(text: &str) -> bool {
    fn walk(value: &toml::Value) -> bool {
        match value {
            toml::Value::String(s) => Path::new(s).has_root() || s.starts_with('~'),
            toml::Value::Array(items) => items.iter().any(walk),
            toml::Value::Table(table) => table.values().any(walk),
            _ => false,
        }
    }
    match toml::from_str::<toml::Table>(text) {
        Ok(table) => table.values().any(walk),
        // Text TOML refuses never reaches the code that opens files.
        Err(_) => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let text = match data.split_first() {
        Some((0xFF, rest)) => match structured(&mut Unstructured::new(rest)) {
            Ok(text) => text,
            Err(_) => return,
        },
        _ => String::from_utf8_lossy(data).into_owned(),
    };
    if names_an_absolute_path(&text) {
        return;
    }
    let _ = Config::from_toml(&text, Path::new("/nonexistent/fuzz.toml"), &|_| None);
});
