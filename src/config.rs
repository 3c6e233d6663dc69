//! The configuration file: its TOML shape, mod_component_http's option names as aliases, secrets
//! from the file, a `*_file` path or the environment, and validation into a [`Config`] the rest of
//! the program can trust.
//!
//! Unknown keys are refused with their name and line (a typo must not silently fall back to a
//! default). Secrets live in [`Secret`], whose `Debug` never shows the value; webhook signing
//! secrets are checked here by building their [`Signer`], so a malformed one stops the start.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::limits;
use crate::webhook::signing::Signer;

/// Environment variable that may carry the component secret.
pub(crate) const ENV_SECRET: &str = "COMPONENT_HTTP_SECRET";
/// Where `postgres_url` comes from when neither it nor `postgres_url_file` is set.
pub(crate) const ENV_POSTGRES_URL: &str = "COMPONENT_HTTP_POSTGRES_URL";
/// Environment variable that may carry the webhook's `Authorization` header value.
pub(crate) const ENV_WEBHOOK_AUTHORIZATION: &str = "COMPONENT_HTTP_WEBHOOK_AUTHORIZATION";
/// Environment variable that may carry the webhook signing secrets (comma- or
/// whitespace-separated).
pub(crate) const ENV_WEBHOOK_SIGNING_SECRET: &str = "COMPONENT_HTTP_WEBHOOK_SIGNING_SECRET";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: `{key}` {problem}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        problem: String,
    },
}

/// A value that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
impl Secret {
    pub(crate) fn for_tests(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Which stanza kinds are forwarded to the hook (README, "The webhook contract").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Forwarded {
    pub(crate) message: bool,
    pub(crate) presence: bool,
    pub(crate) iq: bool,
}

/// How deliveries are ordered (README, "Delivery").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Ordering {
    /// Serial per (sender bare JID, addressed JID), concurrent across conversations.
    Conversation,
    /// Fully concurrent, like mod_component_http.
    None,
}

#[derive(Debug, Clone)]
pub(crate) struct WebhookConfig {
    /// May carry credentials: show it only through [`WebhookConfig::shown_url`].
    pub(crate) url: url::Url,
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_response_bytes: usize,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) authorization: Option<Secret>,
    /// Standard Webhooks signing (README, "Signed calls"), when `signing_secret` or one of its
    /// sources is set.
    pub(crate) signing: Option<Signer>,
    /// Speak HTTP/2 to an `http://` hook without negotiation (h2c); `https://` hooks get
    /// HTTP/2 through ALPN whenever they offer it.
    pub(crate) http2_prior_knowledge: bool,
    /// Roots to trust for an `https://` hook instead of the system's (`webhook.tls_ca_file`).
    pub(crate) tls_roots: Option<rustls::RootCertStore>,
}

impl WebhookConfig {
    /// The hook's URL as logs and messages show it: without credentials or query.
    pub(crate) fn shown_url(&self) -> String {
        crate::logging::redacted_url(&self.url)
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The component's domain, lowercased.
    pub(crate) domain: String,
    /// `host:port` of the server's component listener.
    pub(crate) server: String,
    pub(crate) secret: Secret,
    pub(crate) tls: bool,
    /// Name to verify the server's certificate against; the host of `server` by default.
    pub(crate) tls_server_name: String,
    /// Roots to trust for the server instead of the system's (`tls_ca_file`).
    pub(crate) tls_roots: Option<rustls::RootCertStore>,
    pub(crate) forwarded: Forwarded,
    pub(crate) ordering: Ordering,
    pub(crate) max_in_flight: usize,
    pub(crate) iq_timeout: Duration,
    pub(crate) keepalive_interval: Duration,
    pub(crate) max_stanza_bytes: usize,
    pub(crate) max_depth: usize,
    pub(crate) resource: String,
    pub(crate) presence_show: Option<String>,
    pub(crate) presence_status: Option<String>,
    pub(crate) disco_name: String,
    pub(crate) webhook: WebhookConfig,
    pub queue: QueueConfig,
    /// The inbound HTTP API (README, "The HTTP API"); `None` unless `[api] listen` is set.
    pub(crate) api: Option<ApiConfig>,
    /// MUC rooms the component keeps joined, so that the API can post into them.
    pub(crate) rooms: Vec<RoomConfig>,
}

/// One `[[rooms]]` entry.
#[derive(Debug, Clone)]
pub(crate) struct RoomConfig {
    /// The room's bare JID.
    pub(crate) jid: String,
    pub(crate) nick: String,
    /// The localpart the component joins as.
    pub(crate) from: String,
}

#[derive(Debug, Clone)]
pub(crate) struct ApiConfig {
    pub(crate) listen: Vec<std::net::SocketAddr>,
    /// A request body larger than this is refused with `413`.
    pub(crate) max_body_bytes: usize,
    pub(crate) tokens: Vec<ApiToken>,
}

/// One `[[api.tokens]]` entry.
#[derive(Debug, Clone)]
pub(crate) struct ApiToken {
    /// Shown in logs instead of the token.
    pub(crate) name: String,
    pub(crate) token: Secret,
    /// Where the token was read from, for `check` to report.
    pub(crate) source: TokenSource,
    /// Localparts this token may send as: exact, with `*` globs, or `""` for the bare domain.
    pub(crate) from: Vec<String>,
}

/// Where an `[[api.tokens]]` entry's token comes from: what `check` names, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenSource {
    /// `token`: written in the configuration file.
    Inline,
    /// `token_file`: this file (resolved relative to the configuration file).
    File(PathBuf),
    /// `token_env`: this environment variable.
    Env(String),
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::Inline => f.write_str("inline in the configuration file"),
            TokenSource::File(path) => write!(f, "file {}", path.display()),
            TokenSource::Env(variable) => write!(f, "environment variable {variable}"),
        }
    }
}

/// Where forwarded stanzas wait, how many may, and how long they are retried (README, "Delivery").
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Holds the queue file and the control socket.
    pub data_dir: PathBuf,
    pub(crate) backend: QueueBackend,
    pub(crate) max_stanzas: usize,
    pub(crate) max_bytes: usize,
    pub(crate) retry_for: Duration,
    pub(crate) retry_max_interval: Duration,
}

impl QueueBackend {
    /// The value of `queue` that chose it.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            QueueBackend::Durable => "durable",
            QueueBackend::Memory => "memory",
            QueueBackend::Postgres(_) => "postgres",
        }
    }
}

/// Which queue: `queue = "durable" | "memory" | "postgres"`.
#[derive(Debug, Clone)]
pub(crate) enum QueueBackend {
    /// The default: one file under `data_dir`; stanzas are on disk before their first POST.
    Durable,
    /// Stanzas are lost if the process dies.
    Memory,
    /// A PostgreSQL database that several instances share.
    Postgres(PostgresConfig),
}

/// `queue = "postgres"`: where the shared queue lives and who this instance is in it.
#[derive(Debug, Clone)]
pub(crate) struct PostgresConfig {
    /// `postgres_url` (a secret: it may hold a password).
    pub(crate) url: Secret,
    /// `instance`: unique among the instances sharing the database; the host name by default.
    pub(crate) instance: String,
    /// `queue_lease`: how long an instance that stopped renewing keeps its conversations
    /// before the others take them over.
    pub(crate) lease: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum QueueKind {
    Durable,
    Memory,
    Postgres,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    domain: Option<String>,
    server: Option<String>,
    secret: Option<String>,
    secret_file: Option<PathBuf>,
    tls: Option<bool>,
    tls_server_name: Option<String>,
    tls_ca_file: Option<PathBuf>,
    #[serde(alias = "component_post_stanzas", alias = "post_stanza_types")]
    stanzas: Option<Vec<String>>,
    ordering: Option<Ordering>,
    max_in_flight: Option<usize>,
    iq_timeout: Option<String>,
    keepalive_interval: Option<String>,
    max_stanza_bytes: Option<usize>,
    max_depth: Option<usize>,
    resource: Option<String>,
    component_post_url: Option<String>,
    data_dir: Option<PathBuf>,
    queue: Option<QueueKind>,
    postgres_url: Option<String>,
    postgres_url_file: Option<PathBuf>,
    instance: Option<String>,
    queue_lease: Option<String>,
    queue_max_stanzas: Option<usize>,
    queue_max_bytes: Option<usize>,
    retry_for: Option<String>,
    retry_max_interval: Option<String>,
    #[serde(default)]
    presence: RawPresence,
    #[serde(default)]
    disco: RawDisco,
    #[serde(default)]
    webhook: RawWebhook,
    api: Option<RawApi>,
    #[serde(default)]
    rooms: Vec<RawRoom>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoom {
    jid: Option<String>,
    nick: Option<String>,
    from: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    listen: Option<OneOrMany>,
    max_body_bytes: Option<usize>,
    #[serde(default)]
    tokens: Vec<RawToken>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    token_env: Option<String>,
    from: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPresence {
    show: Option<String>,
    status: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDisco {
    name: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: Option<String>,
    timeout: Option<String>,
    connect_timeout: Option<String>,
    max_response_bytes: Option<usize>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    authorization: Option<String>,
    authorization_file: Option<PathBuf>,
    http2_prior_knowledge: Option<bool>,
    signing_secret: Option<OneOrMany>,
    signing_secret_file: Option<PathBuf>,
    tls_ca_file: Option<PathBuf>,
}

/// A key that takes one string or a list of them (`signing_secret`, for key rotation).
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a string or an array of strings")]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(value) => vec![value],
            OneOrMany::Many(values) => values,
        }
    }
}

/// Where environment values come from; a function so tests need not touch the process env.
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Config {
    /// Reads and validates the file at `path`, taking secrets from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path, &|name| std::env::var(name).ok())
    }

    /// Parses and validates configuration text; `path` is only used in messages and to resolve
    /// `*_file` paths relative to the file.
    pub fn from_toml(text: &str, path: &Path, env: Env<'_>) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        Validator { path, env }.validate(raw)
    }
}

struct Validator<'a> {
    path: &'a Path,
    env: Env<'a>,
}

impl Validator<'_> {
    fn invalid(&self, key: &'static str, problem: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            key,
            problem: problem.into(),
        }
    }

    fn validate(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let domain = self.domain(raw.domain)?;
        let server = raw.server.ok_or_else(|| {
            self.invalid(
                "server",
                "is required: the XMPP server's component port, e.g. \"127.0.0.1:5347\"",
            )
        })?;
        let host = server_host(&server).ok_or_else(|| {
            self.invalid(
                "server",
                format!("must be host:port, e.g. \"127.0.0.1:5347\"; got {server:?}"),
            )
        })?;
        let secret = self
            .secret("secret", raw.secret, "secret_file", raw.secret_file, ENV_SECRET)?
            .ok_or_else(|| {
                self.invalid(
                    "secret",
                    format!("is required: set `secret`, `secret_file` or the {ENV_SECRET} environment variable to the server's component_secret"),
                )
            })?;
        let webhook = self.webhook(raw.component_post_url, raw.webhook)?;
        let resource = raw.resource.unwrap_or_else(|| "default".to_owned());
        if resource.is_empty() || jid::ResourcePart::new(&resource).is_err() {
            return Err(self.invalid("resource", "must be a valid, non-empty XMPP resource"));
        }
        let max_in_flight = self.count(
            "max_in_flight",
            raw.max_in_flight,
            limits::DEFAULT_MAX_IN_FLIGHT,
            limits::MAX_IN_FLIGHT_RANGE,
        )?;
        let max_stanza_bytes = self.count(
            "max_stanza_bytes",
            raw.max_stanza_bytes,
            limits::DEFAULT_MAX_STANZA_BYTES,
            limits::MAX_STANZA_BYTES_RANGE,
        )?;
        let max_depth = self.count(
            "max_depth",
            raw.max_depth,
            limits::DEFAULT_MAX_DEPTH,
            limits::MAX_DEPTH_RANGE,
        )?;
        let queue = QueueConfig {
            data_dir: self.relative(raw.data_dir.as_deref().unwrap_or(Path::new("data"))),
            backend: self.queue_backend(
                raw.queue,
                raw.postgres_url,
                raw.postgres_url_file,
                raw.instance,
                raw.queue_lease,
            )?,
            max_stanzas: self.count(
                "queue_max_stanzas",
                raw.queue_max_stanzas,
                limits::DEFAULT_QUEUE_MAX_STANZAS,
                limits::QUEUE_MAX_STANZAS_RANGE,
            )?,
            max_bytes: self.count(
                "queue_max_bytes",
                raw.queue_max_bytes,
                limits::DEFAULT_QUEUE_MAX_BYTES,
                limits::QUEUE_MAX_BYTES_RANGE,
            )?,
            retry_for: self.duration(
                "retry_for",
                raw.retry_for,
                limits::DEFAULT_RETRY_FOR,
                limits::RETRY_FOR_RANGE,
            )?,
            retry_max_interval: self.duration(
                "retry_max_interval",
                raw.retry_max_interval,
                limits::DEFAULT_RETRY_MAX_INTERVAL,
                limits::RETRY_MAX_INTERVAL_RANGE,
            )?,
        };
        if queue.max_bytes < max_stanza_bytes {
            return Err(self.invalid(
                "queue_max_bytes",
                format!("must be at least max_stanza_bytes ({max_stanza_bytes}), or no stanza of the largest size could ever wait"),
            ));
        }
        if let Some(show) = &raw.presence.show
            && !["away", "chat", "dnd", "xa"].contains(&show.as_str())
        {
            return Err(self.invalid(
                "presence.show",
                "must be one of \"away\", \"chat\", \"dnd\", \"xa\"",
            ));
        }
        let api = raw
            .api
            .map(|api| self.api(api, max_stanza_bytes))
            .transpose()?
            .flatten();
        let rooms = self.rooms(raw.rooms, &domain)?;
        Ok(Config {
            api,
            rooms,
            tls_server_name: raw.tls_server_name.unwrap_or_else(|| host.to_owned()),
            domain,
            server,
            secret,
            tls: raw.tls.unwrap_or(false),
            tls_roots: raw
                .tls_ca_file
                .map(|file| self.roots("tls_ca_file", &file))
                .transpose()?,
            forwarded: self.forwarded(raw.stanzas)?,
            ordering: raw.ordering.unwrap_or(Ordering::Conversation),
            max_in_flight,
            iq_timeout: self.duration(
                "iq_timeout",
                raw.iq_timeout,
                limits::DEFAULT_IQ_TIMEOUT,
                limits::IQ_TIMEOUT_RANGE,
            )?,
            keepalive_interval: self.duration(
                "keepalive_interval",
                raw.keepalive_interval,
                limits::DEFAULT_KEEPALIVE_INTERVAL,
                limits::KEEPALIVE_INTERVAL_RANGE,
            )?,
            max_stanza_bytes,
            max_depth,
            resource,
            presence_show: raw.presence.show,
            presence_status: raw.presence.status,
            disco_name: raw
                .disco
                .name
                .unwrap_or_else(|| "component-http".to_owned()),
            webhook,
            queue,
        })
    }

    fn domain(&self, domain: Option<String>) -> Result<String, ConfigError> {
        let domain = domain.ok_or_else(|| {
            self.invalid(
                "domain",
                "is required: the component's JID, e.g. \"bot.example.org\"",
            )
        })?;
        let lowered = domain.to_lowercase();
        match jid::Jid::new(&lowered) {
            Ok(jid) if jid.node().is_none() && jid.resource().is_none() => Ok(lowered),
            _ => Err(self.invalid(
                "domain",
                format!("must be a bare domain such as \"bot.example.org\"; got {domain:?}"),
            )),
        }
    }

    fn forwarded(&self, stanzas: Option<Vec<String>>) -> Result<Forwarded, ConfigError> {
        let mut forwarded = Forwarded::default();
        for kind in stanzas.unwrap_or_else(|| vec!["message".to_owned()]) {
            match kind.as_str() {
                "message" => forwarded.message = true,
                "presence" => forwarded.presence = true,
                "iq" => forwarded.iq = true,
                other => {
                    return Err(self.invalid(
                        "stanzas",
                        format!("lists {other:?}; allowed are \"message\", \"presence\", \"iq\""),
                    ));
                }
            }
        }
        Ok(forwarded)
    }

    fn webhook(
        &self,
        post_url: Option<String>,
        raw: RawWebhook,
    ) -> Result<WebhookConfig, ConfigError> {
        let url = match (post_url, raw.url) {
            (Some(a), Some(b)) if a != b => {
                return Err(self.invalid(
                    "component_post_url",
                    "and [webhook] url are both set and differ; keep one",
                ));
            }
            (Some(url), _) | (None, Some(url)) => url,
            (None, None) => {
                return Err(self.invalid("webhook.url", "is required (or its alias `component_post_url`): the URL stanzas are POSTed to"));
            }
        };
        let url = url::Url::parse(&url)
            .map_err(|e| self.invalid("webhook.url", format!("is not a valid URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(self.invalid("webhook.url", "must be an http:// or https:// URL"));
        }
        if raw.headers.len() > limits::MAX_HOOK_HEADERS {
            return Err(self.invalid(
                "webhook.headers",
                format!(
                    "has {} entries; at most {} are allowed",
                    raw.headers.len(),
                    limits::MAX_HOOK_HEADERS
                ),
            ));
        }
        for (name, value) in &raw.headers {
            if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err()
                || hyper::header::HeaderValue::from_str(value).is_err()
            {
                return Err(
                    self.invalid("webhook.headers", format!("has an invalid header {name:?}"))
                );
            }
        }
        let authorization = self.secret(
            "webhook.authorization",
            raw.authorization,
            "webhook.authorization_file",
            raw.authorization_file,
            ENV_WEBHOOK_AUTHORIZATION,
        )?;
        if let Some(auth) = &authorization
            && hyper::header::HeaderValue::from_str(auth.expose()).is_err()
        {
            return Err(self.invalid("webhook.authorization", "is not a valid header value"));
        }
        if authorization.is_some() && (!url.username().is_empty() || url.password().is_some()) {
            return Err(self.invalid(
                "webhook.url",
                "carries credentials (user:password@) while `webhook.authorization` is set too (in the file, a file or the environment); the URL's credentials would replace that header: keep one",
            ));
        }
        let signing = self.signing(raw.signing_secret, raw.signing_secret_file)?;
        Ok(WebhookConfig {
            url,
            timeout: self.duration(
                "webhook.timeout",
                raw.timeout,
                limits::DEFAULT_HOOK_TIMEOUT,
                limits::HOOK_TIMEOUT_RANGE,
            )?,
            connect_timeout: self.duration(
                "webhook.connect_timeout",
                raw.connect_timeout,
                limits::DEFAULT_HOOK_CONNECT_TIMEOUT,
                limits::HOOK_TIMEOUT_RANGE,
            )?,
            max_response_bytes: self.count(
                "webhook.max_response_bytes",
                raw.max_response_bytes,
                limits::DEFAULT_HOOK_MAX_RESPONSE_BYTES,
                limits::HOOK_MAX_RESPONSE_BYTES_RANGE,
            )?,
            headers: raw.headers.into_iter().collect(),
            authorization,
            http2_prior_knowledge: raw.http2_prior_knowledge.unwrap_or(false),
            signing,
            tls_roots: raw
                .tls_ca_file
                .map(|file| self.roots("webhook.tls_ca_file", &file))
                .transpose()?,
        })
    }

    /// The signing secrets from (in order) the file, `signing_secret_file` (one per line) or the
    /// environment (comma- or whitespace-separated), checked by building the [`Signer`]. As for
    /// [`Validator::secret`], the key and its file together are refused, and the environment is
    /// used only when neither is set. Errors name the source, never a secret.
    fn signing(
        &self,
        inline: Option<OneOrMany>,
        file: Option<PathBuf>,
    ) -> Result<Option<Signer>, ConfigError> {
        const KEY: &str = "webhook.signing_secret";
        const FILE_KEY: &str = "webhook.signing_secret_file";
        let (key, secrets): (&'static str, Vec<String>) = match (inline, file) {
            (Some(_), Some(_)) => {
                return Err(self.invalid(KEY, format!("and `{FILE_KEY}` are both set; keep one")));
            }
            (Some(inline), None) => (KEY, inline.into_vec()),
            (None, Some(file)) => {
                let file = self.relative(&file);
                let text = std::fs::read_to_string(&file).map_err(|e| {
                    self.invalid(
                        FILE_KEY,
                        format!("names {}, which cannot be read: {e}", file.display()),
                    )
                })?;
                let secrets = text
                    .lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty())
                    .map(str::to_owned)
                    .collect();
                (FILE_KEY, secrets)
            }
            (None, None) => match (self.env)(ENV_WEBHOOK_SIGNING_SECRET) {
                Some(value) if !value.trim().is_empty() => {
                    let secrets = value
                        .split(|c: char| c == ',' || c.is_whitespace())
                        .filter(|part| !part.is_empty())
                        .map(str::to_owned)
                        .collect();
                    (ENV_WEBHOOK_SIGNING_SECRET, secrets)
                }
                _ => return Ok(None),
            },
        };
        Signer::new(&secrets)
            .map(Some)
            .map_err(|problem| self.invalid(key, problem.to_string()))
    }

    /// The queue backend; the PostgreSQL keys only with `queue = "postgres"`, where the URL
    /// is required.
    fn queue_backend(
        &self,
        kind: Option<QueueKind>,
        url: Option<String>,
        url_file: Option<PathBuf>,
        instance: Option<String>,
        lease: Option<String>,
    ) -> Result<QueueBackend, ConfigError> {
        let kind = kind.unwrap_or(QueueKind::Durable);
        if kind != QueueKind::Postgres {
            let stray = [
                ("postgres_url", url.is_some()),
                ("postgres_url_file", url_file.is_some()),
                ("instance", instance.is_some()),
                ("queue_lease", lease.is_some()),
            ];
            if let Some((key, _)) = stray.iter().find(|(_, set)| *set) {
                return Err(self.invalid(
                    key,
                    "only applies to queue = \"postgres\"; remove it or set queue = \"postgres\"",
                ));
            }
            return Ok(match kind {
                QueueKind::Memory => QueueBackend::Memory,
                _ => QueueBackend::Durable,
            });
        }
        let url = self
            .secret("postgres_url", url, "postgres_url_file", url_file, ENV_POSTGRES_URL)?
            .ok_or_else(|| {
                self.invalid(
                    "postgres_url",
                    format!("is required with queue = \"postgres\": set `postgres_url`, `postgres_url_file` or the {ENV_POSTGRES_URL} environment variable, e.g. \"postgres://component_http@db.example.org/component_http\""),
                )
            })?;
        if !url.expose().starts_with("postgres://") && !url.expose().starts_with("postgresql://") {
            return Err(self.invalid(
                "postgres_url",
                "must start with postgres:// (e.g. \"postgres://USER@HOST/DATABASE\")",
            ));
        }
        let instance = match instance {
            Some(name) => name,
            None => host_name(),
        };
        if instance.is_empty()
            || instance.len() > 64
            || !instance
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(self.invalid(
                "instance",
                format!("is {instance:?}; use 1 to 64 letters, digits, '-', '_' or '.'"),
            ));
        }
        let lease = self.duration(
            "queue_lease",
            lease,
            limits::DEFAULT_QUEUE_LEASE,
            limits::QUEUE_LEASE_RANGE,
        )?;
        Ok(QueueBackend::Postgres(PostgresConfig {
            url,
            instance,
            lease,
        }))
    }

    /// A secret from (in order) the file, a `*_file` path, or the environment; more than one
    /// source is refused so that the operator knows which one is used.
    fn secret(
        &self,
        key: &'static str,
        inline: Option<String>,
        file_key: &'static str,
        file: Option<PathBuf>,
        env_name: &str,
    ) -> Result<Option<Secret>, ConfigError> {
        let from_env = (self.env)(env_name).filter(|v| !v.is_empty());
        let value = match (inline, file) {
            (Some(_), Some(_)) => {
                return Err(self.invalid(key, format!("and `{file_key}` are both set; keep one")));
            }
            (Some(value), None) => value,
            (None, Some(file)) => {
                let file = self.relative(&file);
                let text = std::fs::read_to_string(&file).map_err(|e| {
                    self.invalid(
                        file_key,
                        format!("names {}, which cannot be read: {e}", file.display()),
                    )
                })?;
                text.trim_end_matches(['\r', '\n']).to_owned()
            }
            (None, None) => match from_env {
                Some(value) => value,
                None => return Ok(None),
            },
        };
        if value.is_empty() {
            return Err(self.invalid(key, "is empty"));
        }
        Ok(Some(Secret(value)))
    }

    fn api(&self, raw: RawApi, max_stanza_bytes: usize) -> Result<Option<ApiConfig>, ConfigError> {
        let Some(listen) = raw.listen else {
            if !raw.tokens.is_empty() {
                return Err(self.invalid(
                    "api.listen",
                    "is not set, so the API is off and [[api.tokens]] are unused; set it, e.g. \"127.0.0.1:5281\"",
                ));
            }
            return Ok(None);
        };
        let listen = listen
            .into_vec()
            .iter()
            .map(|address| {
                address.parse().map_err(|_| {
                    self.invalid(
                        "api.listen",
                        format!("must be ip:port such as \"127.0.0.1:5281\" (or a list of them); got {address:?}"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if listen.is_empty() {
            return Err(self.invalid("api.listen", "is an empty list; give at least one ip:port"));
        }
        let max_body_bytes = self.count(
            "api.max_body_bytes",
            raw.max_body_bytes,
            max_stanza_bytes,
            limits::MAX_STANZA_BYTES_RANGE,
        )?;
        let mut tokens: Vec<ApiToken> = Vec::new();
        for (index, raw) in raw.tokens.into_iter().enumerate() {
            let token = self.api_token(index, raw)?;
            if tokens.iter().any(|t| t.name == token.name) {
                return Err(self.invalid(
                    "api.tokens.name",
                    format!(
                        "{:?} is used by two entries; names must be unique",
                        token.name
                    ),
                ));
            }
            if tokens.iter().any(|t| t.token == token.token) {
                return Err(self.invalid(
                    "api.tokens.token",
                    format!(
                        "of {:?} is the same as another entry's; give each its own",
                        token.name
                    ),
                ));
            }
            tokens.push(token);
        }
        Ok(Some(ApiConfig {
            listen,
            max_body_bytes,
            tokens,
        }))
    }

    fn api_token(&self, index: usize, raw: RawToken) -> Result<ApiToken, ConfigError> {
        let name = raw
            .name
            .filter(|n| !n.is_empty() && !n.chars().any(char::is_control))
            .ok_or_else(|| {
                self.invalid(
                    "api.tokens.name",
                    format!(
                        "is missing or not printable in entry {}: every token needs a name for the logs",
                        index + 1
                    ),
                )
            })?;
        let sources = [
            raw.token.is_some(),
            raw.token_file.is_some(),
            raw.token_env.is_some(),
        ];
        if sources.iter().filter(|set| **set).count() != 1 {
            return Err(self.invalid(
                "api.tokens.token",
                format!("of {name:?}: set exactly one of `token`, `token_file` and `token_env`"),
            ));
        }
        let source = match (&raw.token_file, &raw.token_env) {
            (Some(file), _) => TokenSource::File(self.relative(file)),
            (None, Some(variable)) => TokenSource::Env(variable.clone()),
            (None, None) => TokenSource::Inline,
        };
        let token = match raw.token_env {
            Some(variable) => (self.env)(&variable)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    self.invalid(
                        "api.tokens.token_env",
                        format!("of {name:?} names {variable:?}, which is not set or empty"),
                    )
                })?,
            None => self
                .secret(
                    "api.tokens.token",
                    raw.token,
                    "api.tokens.token_file",
                    raw.token_file,
                    "",
                )?
                .map(|secret| secret.0)
                .unwrap_or_default(),
        };
        if token.len() < limits::MIN_API_TOKEN_BYTES {
            return Err(self.invalid(
                "api.tokens.token",
                format!(
                    "of {name:?} is shorter than {} characters; use a long random one, e.g. `openssl rand -hex 32`",
                    limits::MIN_API_TOKEN_BYTES
                ),
            ));
        }
        let from = raw.from.unwrap_or_default();
        if from.is_empty() {
            return Err(self.invalid(
                "api.tokens.from",
                format!("of {name:?} is missing or empty: list the localparts this token may send as, e.g. [\"alerts\"]"),
            ));
        }
        for pattern in &from {
            let literal = pattern.replace('*', "a");
            if !pattern.is_empty() && jid::NodePart::new(&literal).is_err() {
                return Err(self.invalid(
                    "api.tokens.from",
                    format!("of {name:?} lists {pattern:?}, which is not a localpart (\"*\" globs and \"\" for the bare domain are allowed)"),
                ));
            }
        }
        Ok(ApiToken {
            name,
            token: Secret(token),
            source,
            from,
        })
    }

    /// The `[[rooms]]` entries: a room's bare JID (not on the component's own `domain`), a
    /// nickname, and a localpart to join as.
    fn rooms(&self, raw: Vec<RawRoom>, domain: &str) -> Result<Vec<RoomConfig>, ConfigError> {
        let mut rooms: Vec<RoomConfig> = Vec::new();
        for (index, room) in raw.into_iter().enumerate() {
            let entry = index + 1;
            let jid = room
                .jid
                .ok_or_else(|| self.invalid("rooms.jid", format!("is missing in entry {entry}")))?;
            let bare = match jid::Jid::new(&jid) {
                Ok(parsed) if parsed.resource().is_some() => {
                    return Err(self.invalid(
                        "rooms.jid",
                        format!("{jid:?} (entry {entry}) has a resource (/…): give the room's bare JID, and its nickname in `nick`"),
                    ));
                }
                Ok(parsed) if parsed.node().is_some() => parsed.to_bare(),
                _ => {
                    return Err(self.invalid(
                        "rooms.jid",
                        format!("{jid:?} (entry {entry}) is not a room's bare JID such as \"ops@conference.example.org\""),
                    ));
                }
            };
            if bare.domain().as_str() == domain {
                return Err(self.invalid(
                    "rooms.jid",
                    format!("{bare} is on the component's own domain; a room lives on the server's MUC service, e.g. \"ops@conference.example.org\""),
                ));
            }
            let bare = bare.to_string();
            if rooms.iter().any(|r| r.jid == bare) {
                return Err(self.invalid(
                    "rooms.jid",
                    format!("{bare} is listed twice; keep one entry per room"),
                ));
            }
            let nick = room.nick.unwrap_or_default();
            if nick.trim().is_empty() || jid::ResourcePart::new(&nick).is_err() {
                return Err(self.invalid(
                    "rooms.nick",
                    format!("of {bare} must be a non-empty nickname, e.g. \"alerts\""),
                ));
            }
            let from = room.from.unwrap_or_default();
            if from.is_empty() || jid::NodePart::new(&from).is_err() {
                return Err(self.invalid(
                    "rooms.from",
                    format!(
                        "of {bare} must be the localpart the component joins as, e.g. \"alerts\""
                    ),
                ));
            }
            rooms.push(RoomConfig {
                jid: bare,
                nick,
                from,
            });
        }
        Ok(rooms)
    }

    /// The roots of a `tls_ca_file` key (the server's or the hook's): the PEM certificates of
    /// the file, read and parsed once at load so that a typo, an unreadable file or one without
    /// a usable certificate fails at start, naming `key`.
    fn roots(&self, key: &'static str, file: &Path) -> Result<rustls::RootCertStore, ConfigError> {
        use rustls::pki_types::pem::PemObject;
        let file = self.relative(file);
        let certificates = rustls::pki_types::CertificateDer::pem_file_iter(&file)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                self.invalid(
                    key,
                    format!(
                        "names {}, which holds no readable PEM certificates: {e}",
                        file.display()
                    ),
                )
            })?;
        if certificates.is_empty() {
            return Err(self.invalid(
                key,
                format!("names {}, which holds no PEM certificate", file.display()),
            ));
        }
        let mut roots = rustls::RootCertStore::empty();
        for (index, certificate) in certificates.into_iter().enumerate() {
            roots.add(certificate).map_err(|e| {
                self.invalid(
                    key,
                    format!(
                        "names {}, whose certificate {} is not usable as a root: {e}",
                        file.display(),
                        index + 1
                    ),
                )
            })?;
        }
        Ok(roots)
    }

    /// A path from the file, relative to the file's directory.
    fn relative(&self, file: &Path) -> PathBuf {
        self.path
            .parent()
            .map(|dir| dir.join(file))
            .unwrap_or_else(|| file.to_owned())
    }

    /// A duration from the file (`"30s"`, `"5m"`), or `default`, within `range`.
    fn duration(
        &self,
        key: &'static str,
        value: Option<String>,
        default: Duration,
        range: RangeInclusive<Duration>,
    ) -> Result<Duration, ConfigError> {
        let Some(text) = value else {
            return Ok(default);
        };
        let duration = humantime::parse_duration(&text).map_err(|e| {
            self.invalid(
                key,
                format!("is not a duration such as \"30s\" or \"5m\" ({e})"),
            )
        })?;
        if !range.contains(&duration) {
            return Err(self.invalid(
                key,
                format!(
                    "is {text:?}; it must be from {} to {}",
                    humantime::format_duration(*range.start()),
                    humantime::format_duration(*range.end())
                ),
            ));
        }
        Ok(duration)
    }

    /// A count or size from the file, or `default`, within `range`.
    fn count(
        &self,
        key: &'static str,
        value: Option<usize>,
        default: usize,
        range: RangeInclusive<usize>,
    ) -> Result<usize, ConfigError> {
        let value = value.unwrap_or(default);
        if !range.contains(&value) {
            return Err(self.invalid(
                key,
                format!(
                    "is {value}; it must be from {} to {}",
                    range.start(),
                    range.end()
                ),
            ));
        }
        Ok(value)
    }
}

/// This machine's host name: the default `instance` of a shared queue.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_default()
}

/// The host part of `host:port` (brackets removed from an IPv6 literal), if the port is valid.
fn server_host(server: &str) -> Option<&str> {
    let (host, port) = server.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
domain = "Bot.Example.org"
server = "127.0.0.1:5347"
secret = "throwaway"
component_post_url = "https://hooks.example.org/xmpp"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("test.toml"), &|_| None)
    }

    #[test]
    fn api_tokens_come_from_one_source_each_and_bad_ones_name_their_key() {
        let api = |tokens: &str| {
            format!("{MINIMAL}\n[api]\nlisten = [\"127.0.0.1:5281\", \"[::1]:5281\"]\n{tokens}")
        };
        let text = api(
            "[[api.tokens]]\nname = \"a\"\ntoken = \"0123456789abcdef\"\nfrom = [\"alerts\", \"ops-*\"]\n\
             [[api.tokens]]\nname = \"b\"\ntoken_env = \"B_TOKEN\"\nfrom = [\"\"]\n",
        );
        let config = Config::from_toml(&text, Path::new("t.toml"), &|name| {
            (name == "B_TOKEN").then(|| "fedcba9876543210".to_owned())
        })
        .unwrap();
        let api_config = config.api.as_ref().unwrap();
        assert_eq!(api_config.listen.len(), 2);
        assert_eq!(api_config.max_body_bytes, config.max_stanza_bytes);
        assert_eq!(api_config.tokens[1].token.expose(), "fedcba9876543210");
        assert!(!format!("{config:?}").contains("0123456789abcdef"));
        assert!(
            parse(MINIMAL).unwrap().api.is_none(),
            "off unless listen is set"
        );

        let one = |fields: &str| api(&format!("[[api.tokens]]\nname = \"a\"\n{fields}\n"));
        let cases = [
            (one("from = [\"a\"]"), "api.tokens.token"),
            (
                one("token = \"0123456789abcdef\"\ntoken_env = \"X\"\nfrom = [\"a\"]"),
                "api.tokens.token",
            ),
            (one("token = \"short\"\nfrom = [\"a\"]"), "api.tokens.token"),
            (
                one("token_env = \"UNSET\"\nfrom = [\"a\"]"),
                "api.tokens.token_env",
            ),
            (
                one("token_file = \"/nonexistent/token\"\nfrom = [\"a\"]"),
                "api.tokens.token_file",
            ),
            (one("token = \"0123456789abcdef\""), "api.tokens.from"),
            (
                one("token = \"0123456789abcdef\"\nfrom = [\"a b\"]"),
                "api.tokens.from",
            ),
            (
                api("[[api.tokens]]\ntoken = \"0123456789abcdef\"\nfrom = [\"a\"]\n"),
                "api.tokens.name",
            ),
            (
                format!("{MINIMAL}\n[api]\nlisten = \"localhost\"\n"),
                "api.listen",
            ),
            (
                format!(
                    "{MINIMAL}\n[api]\n[[api.tokens]]\nname = \"a\"\ntoken = \"0123456789abcdef\"\nfrom = [\"a\"]\n"
                ),
                "api.listen",
            ),
        ];
        for (text, key) in cases {
            let error = parse(&text).unwrap_err().to_string();
            assert!(error.contains(&format!("`{key}`")), "{key}: {error}");
            assert!(!error.contains("0123456789abcdef"), "{error}");
        }
    }

    #[test]
    fn api_tokens_keep_where_they_came_from_for_check() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("alerts.token"), "0123456789abcdef\n").unwrap();
        let text = format!(
            "{MINIMAL}\n[api]\nlisten = \"127.0.0.1:5281\"\n\
             [[api.tokens]]\nname = \"inline\"\ntoken = \"aaaaaaaaaaaaaaaa\"\nfrom = [\"a\"]\n\
             [[api.tokens]]\nname = \"file\"\ntoken_file = \"alerts.token\"\nfrom = [\"a\"]\n\
             [[api.tokens]]\nname = \"env\"\ntoken_env = \"B_TOKEN\"\nfrom = [\"a\"]\n"
        );
        let config = Config::from_toml(&text, &dir.path().join("c.toml"), &|name| {
            (name == "B_TOKEN").then(|| "fedcba9876543210".to_owned())
        })
        .unwrap();
        let sources: Vec<_> = config
            .api
            .unwrap()
            .tokens
            .into_iter()
            .map(|t| t.source)
            .collect();
        assert_eq!(
            sources,
            [
                TokenSource::Inline,
                TokenSource::File(dir.path().join("alerts.token")),
                TokenSource::Env("B_TOKEN".into()),
            ]
        );
        let shown = sources.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(shown[2], "environment variable B_TOKEN");
        assert!(shown.iter().all(|s| !s.contains("0123456789abcdef")));
    }

    #[test]
    fn rooms_are_read_normalized() {
        let config = parse(&format!(
            "{MINIMAL}\n[[rooms]]\njid = \"Ops@Conference.Example.org\"\nnick = \"ops bot\"\nfrom = \"alerts\"\n\
             [[rooms]]\njid = \"dev@conference.example.org\"\nnick = \"Alerts\"\nfrom = \"dev-bot\"\n"
        ))
        .unwrap();
        let rooms: Vec<_> = config
            .rooms
            .iter()
            .map(|r| (r.jid.as_str(), r.nick.as_str(), r.from.as_str()))
            .collect();
        assert_eq!(
            rooms,
            [
                ("ops@conference.example.org", "ops bot", "alerts"),
                ("dev@conference.example.org", "Alerts", "dev-bot"),
            ]
        );
        assert!(parse(MINIMAL).unwrap().rooms.is_empty());
    }

    #[test]
    fn bad_rooms_name_their_key_and_what_to_do() {
        let room = |fields: &str| format!("{MINIMAL}\n[[rooms]]\n{fields}\n");
        let cases = [
            (
                room("nick = \"a\"\nfrom = \"a\""),
                "`rooms.jid`",
                "missing in entry 1",
            ),
            (
                room("jid = \"ops@conference.example.org/alerts\"\nnick = \"a\"\nfrom = \"a\""),
                "`rooms.jid`",
                "has a resource",
            ),
            (
                room("jid = \"conference.example.org\"\nnick = \"a\"\nfrom = \"a\""),
                "`rooms.jid`",
                "not a room's bare JID",
            ),
            (
                room("jid = \"a b@conference.example.org\"\nnick = \"a\"\nfrom = \"a\""),
                "`rooms.jid`",
                "not a room's bare JID",
            ),
            (
                room("jid = \"ops@bot.example.org\"\nnick = \"a\"\nfrom = \"a\""),
                "`rooms.jid`",
                "the component's own domain",
            ),
            (
                format!(
                    "{}[[rooms]]\njid = \"OPS@conference.example.org\"\nnick = \"b\"\nfrom = \"b\"\n",
                    room("jid = \"ops@conference.example.org\"\nnick = \"a\"\nfrom = \"a\"")
                ),
                "`rooms.jid`",
                "listed twice",
            ),
            (
                room("jid = \"ops@conference.example.org\"\nfrom = \"a\""),
                "`rooms.nick`",
                "non-empty nickname",
            ),
            (
                room("jid = \"ops@conference.example.org\"\nnick = \"   \"\nfrom = \"a\""),
                "`rooms.nick`",
                "non-empty nickname",
            ),
            (
                room("jid = \"ops@conference.example.org\"\nnick = \"a\""),
                "`rooms.from`",
                "the localpart the component joins as",
            ),
            (
                room("jid = \"ops@conference.example.org\"\nnick = \"a\"\nfrom = \"al@rts\""),
                "`rooms.from`",
                "the localpart the component joins as",
            ),
            (
                room(
                    "jid = \"ops@conference.example.org\"\nnick = \"a\"\nfrom = \"a\"\nroom = \"x\"",
                ),
                "`room`",
                "unknown field",
            ),
        ];
        for (text, key, what) in cases {
            let error = parse(&text).unwrap_err().to_string();
            assert!(error.contains(key), "{key}: {error}");
            assert!(error.contains(what), "{key}: {error}");
        }
    }

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.domain, "bot.example.org");
        assert_eq!(config.tls_server_name, "127.0.0.1");
        assert_eq!(
            config.forwarded,
            Forwarded {
                message: true,
                presence: false,
                iq: false
            }
        );
        assert_eq!(config.ordering, Ordering::Conversation);
        assert_eq!(config.max_in_flight, 256);
        assert_eq!(config.iq_timeout, Duration::from_secs(30));
        assert_eq!(config.keepalive_interval, Duration::from_secs(60));
        assert_eq!(config.max_stanza_bytes, 256 * 1024);
        assert_eq!(config.max_depth, 64);
        assert_eq!(config.resource, "default");
        assert_eq!(config.webhook.timeout, Duration::from_secs(15));
        assert_eq!(config.webhook.connect_timeout, Duration::from_secs(5));
        assert_eq!(config.webhook.max_response_bytes, 1024 * 1024);
        assert_eq!(
            config.webhook.url.as_str(),
            "https://hooks.example.org/xmpp"
        );
        assert!(!config.webhook.http2_prior_knowledge);
        let h2c = parse(&format!(
            "{MINIMAL}[webhook]\nhttp2_prior_knowledge = true\n"
        ))
        .unwrap();
        assert!(h2c.webhook.http2_prior_knowledge);
        let queue = &config.queue;
        assert!(matches!(queue.backend, QueueBackend::Durable));
        assert_eq!(queue.data_dir, Path::new("data"), "next to the file");
        assert_eq!(queue.max_stanzas, 10_000);
        assert_eq!(queue.max_bytes, 64 * 1024 * 1024);
        assert_eq!(queue.retry_for, Duration::from_secs(24 * 3600));
        assert_eq!(queue.retry_max_interval, Duration::from_secs(300));
    }

    #[test]
    fn queue_keys_are_read_and_checked() {
        let config = parse(&format!(
            "{MINIMAL}data_dir = \"/var/lib/component-http\"\nqueue = \"memory\"\nqueue_max_stanzas = 5\nqueue_max_bytes = 1000000\nretry_for = \"0s\"\nretry_max_interval = \"1m\"\n"
        ))
        .unwrap();
        let queue = &config.queue;
        assert!(matches!(queue.backend, QueueBackend::Memory));
        assert_eq!(queue.data_dir, Path::new("/var/lib/component-http"));
        assert_eq!((queue.max_stanzas, queue.max_bytes), (5, 1_000_000));
        assert_eq!(queue.retry_for, Duration::ZERO);
        assert_eq!(queue.retry_max_interval, Duration::from_secs(60));
        for (line, key) in [
            ("queue = \"disk\"", "queue"),
            ("queue_max_stanzas = 0", "queue_max_stanzas"),
            ("queue_max_bytes = 100", "queue_max_bytes"),
            ("retry_for = \"forever\"", "retry_for"),
            ("retry_max_interval = \"10ms\"", "retry_max_interval"),
        ] {
            let error = parse(&format!("{MINIMAL}{line}\n"))
                .unwrap_err()
                .to_string();
            assert!(error.contains(key), "{line}: {error}");
        }
    }

    #[test]
    fn a_postgres_queue_needs_its_url_and_a_valid_instance_name() {
        let config = parse(&format!(
            "{MINIMAL}queue = \"postgres\"\npostgres_url = \"postgres://bridge:throwaway@127.0.0.1/queue\"\ninstance = \"a-1\"\nqueue_lease = \"5s\"\n"
        ))
        .unwrap();
        let QueueBackend::Postgres(postgres) = &config.queue.backend else {
            panic!("not postgres: {:?}", config.queue.backend);
        };
        assert_eq!(
            postgres.url.expose(),
            "postgres://bridge:throwaway@127.0.0.1/queue"
        );
        assert_eq!(
            (postgres.instance.as_str(), postgres.lease),
            ("a-1", Duration::from_secs(5))
        );
        assert!(
            !format!("{config:?}").contains("throwaway"),
            "the URL is a secret"
        );

        for (extra, key) in [
            ("queue = \"postgres\"\n", "COMPONENT_HTTP_POSTGRES_URL"),
            (
                "queue = \"postgres\"\npostgres_url = \"mysql://x\"\n",
                "postgres_url",
            ),
            (
                "queue = \"postgres\"\npostgres_url = \"postgres://x\"\ninstance = \"a b\"\n",
                "instance",
            ),
            ("postgres_url = \"postgres://x\"\n", "postgres_url"),
            ("queue = \"memory\"\ninstance = \"a\"\n", "instance"),
        ] {
            let error = parse(&format!("{MINIMAL}{extra}")).unwrap_err().to_string();
            assert!(error.contains(key), "{extra:?}: {error}");
        }
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let err = parse(&format!("{MINIMAL}\nordring = \"none\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ordring"), "{err}");
        assert!(err.contains("line 7"), "{err}");
        let err = parse(&format!("{MINIMAL}\n[webhook]\ntimout = \"1s\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("timout"), "{err}");
    }

    #[test]
    fn module_aliases_are_accepted() {
        for key in ["stanzas", "component_post_stanzas", "post_stanza_types"] {
            let config = parse(&format!("{MINIMAL}\n{key} = [\"iq\", \"presence\"]\n")).unwrap();
            assert_eq!(
                config.forwarded,
                Forwarded {
                    message: false,
                    presence: true,
                    iq: true
                }
            );
        }
        let text = MINIMAL.replace("component_post_url = ", "[webhook]\nurl = ");
        assert_eq!(
            parse(&text).unwrap().webhook.url.as_str(),
            "https://hooks.example.org/xmpp"
        );
    }

    #[test]
    fn secret_from_env_and_file_and_never_in_debug() {
        let text = MINIMAL.replace("secret = \"throwaway\"\n", "");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains(ENV_SECRET), "{err}");
        let config = Config::from_toml(&text, Path::new("x.toml"), &|name| {
            (name == ENV_SECRET).then(|| "from-env".to_owned())
        })
        .unwrap();
        assert_eq!(config.secret.expose(), "from-env");
        assert!(!format!("{config:?}").contains("from-env"));

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), "from-file\n").unwrap();
        let text = format!("{text}secret_file = \"secret\"\n");
        let config = Config::from_toml(&text, &dir.path().join("c.toml"), &|_| None).unwrap();
        assert_eq!(config.secret.expose(), "from-file");
    }

    #[test]
    fn bad_values_say_what_to_do() {
        let cases = [
            (
                "domain = \"Bot.Example.org\"",
                "domain = \"user@bot\"",
                "domain",
            ),
            (
                "server = \"127.0.0.1:5347\"",
                "server = \"127.0.0.1\"",
                "server",
            ),
            ("https://hooks", "ftp://hooks", "webhook.url"),
            (
                MINIMAL,
                &format!("{MINIMAL}stanzas = [\"mesage\"]"),
                "mesage",
            ),
            (
                MINIMAL,
                &format!("{MINIMAL}iq_timeout = \"soon\""),
                "iq_timeout",
            ),
            (
                MINIMAL,
                &format!("{MINIMAL}ordering = \"random\""),
                "ordering",
            ),
            (
                MINIMAL,
                &format!("{MINIMAL}max_in_flight = 0"),
                "max_in_flight",
            ),
        ];
        for (from, to, expected) in cases {
            let err = parse(&MINIMAL.replace(from, to)).unwrap_err().to_string();
            assert!(err.contains(expected), "{to}: {err}");
        }
    }

    const SIGNING_A: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SIGNING_B: &str = "whsec_dGhyb3dhd2F5IHNlY29uZCBzaWduaW5nIGtleQ==";

    /// How many keys sign, and the signature of a fixed call (to tell which keys they are).
    fn signing_of(config: &Config) -> Option<(usize, String)> {
        config
            .webhook
            .signing
            .as_ref()
            .map(|signer| (signer.key_count(), signer.sign("msg_1", 1, b"{}")))
    }

    fn signature_with(secrets: &[&str]) -> (usize, String) {
        let signer = Signer::new(secrets).unwrap();
        (signer.key_count(), signer.sign("msg_1", 1, b"{}"))
    }

    #[test]
    fn signing_is_off_unless_a_secret_is_given() {
        assert!(parse(MINIMAL).unwrap().webhook.signing.is_none());
    }

    #[test]
    fn signing_secret_is_a_string_or_a_list() {
        let one = parse(&format!(
            "{MINIMAL}[webhook]\nsigning_secret = \"{SIGNING_A}\"\n"
        ))
        .unwrap();
        assert_eq!(signing_of(&one), Some(signature_with(&[SIGNING_A])));
        let two = parse(&format!(
            "{MINIMAL}[webhook]\nsigning_secret = [\"{SIGNING_A}\", \"{SIGNING_B}\"]\n"
        ))
        .unwrap();
        assert_eq!(
            signing_of(&two),
            Some(signature_with(&[SIGNING_A, SIGNING_B]))
        );
        let shown = format!("{two:?}");
        for secret in [SIGNING_A, SIGNING_B] {
            assert!(!shown.contains(&secret[6..]), "{shown}");
        }

        let err = parse(&format!("{MINIMAL}[webhook]\nsigning_secret = 42\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("a string or an array of strings"), "{err}");
        let err = parse(&format!("{MINIMAL}[webhook]\nsigning_secret = []\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`webhook.signing_secret` holds no secret"),
            "{err}"
        );
    }

    #[test]
    fn signing_secrets_from_a_file_one_per_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("signing"),
            format!("{SIGNING_A}\r\n\n  {SIGNING_B}  \n"),
        )
        .unwrap();
        let text = format!("{MINIMAL}[webhook]\nsigning_secret_file = \"signing\"\n");
        let config = Config::from_toml(&text, &dir.path().join("c.toml"), &|_| None).unwrap();
        assert_eq!(
            signing_of(&config),
            Some(signature_with(&[SIGNING_A, SIGNING_B]))
        );

        std::fs::write(dir.path().join("signing"), "\n\n").unwrap();
        let err = Config::from_toml(&text, &dir.path().join("c.toml"), &|_| None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`webhook.signing_secret_file` holds no secret"),
            "{err}"
        );

        let err = Config::from_toml(&text, &dir.path().join("elsewhere/c.toml"), &|_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`webhook.signing_secret_file` names"), "{err}");
    }

    #[test]
    fn signing_secrets_from_the_environment_only_when_the_file_has_none() {
        let from_env = |value: &'static str| {
            move |name: &str| (name == ENV_WEBHOOK_SIGNING_SECRET).then(|| value.to_owned())
        };
        let env = from_env(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, whsec_dGhyb3dhd2F5IHNlY29uZCBzaWduaW5nIGtleQ==",
        );
        let config = Config::from_toml(MINIMAL, Path::new("x.toml"), &env).unwrap();
        assert_eq!(
            signing_of(&config),
            Some(signature_with(&[SIGNING_A, SIGNING_B]))
        );
        let env = from_env(
            " whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\twhsec_dGhyb3dhd2F5IHNlY29uZCBzaWduaW5nIGtleQ==\n",
        );
        let config = Config::from_toml(MINIMAL, Path::new("x.toml"), &env).unwrap();
        assert_eq!(
            signing_of(&config),
            Some(signature_with(&[SIGNING_A, SIGNING_B]))
        );

        // The file's key wins over the environment.
        let text = format!("{MINIMAL}[webhook]\nsigning_secret = \"{SIGNING_B}\"\n");
        let config = Config::from_toml(&text, Path::new("x.toml"), &env).unwrap();
        assert_eq!(signing_of(&config), Some(signature_with(&[SIGNING_B])));

        // An empty variable is no variable.
        let config = Config::from_toml(MINIMAL, Path::new("x.toml"), &from_env("")).unwrap();
        assert!(config.webhook.signing.is_none());

        let err = Config::from_toml(MINIMAL, Path::new("x.toml"), &from_env("hunter2-secret"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(ENV_WEBHOOK_SIGNING_SECRET), "{err}");
        assert!(err.contains("does not start with `whsec_`"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn bad_signing_secrets_are_refused_naming_the_key_not_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("signing"), format!("{SIGNING_A}\n")).unwrap();
        let both = format!(
            "{MINIMAL}[webhook]\nsigning_secret = \"{SIGNING_A}\"\nsigning_secret_file = \"signing\"\n"
        );
        let err = Config::from_toml(&both, &dir.path().join("c.toml"), &|_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("are both set"), "{err}");

        let cases = [
            (
                "\"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"",
                "does not start with `whsec_`",
            ),
            (
                "\"whsec_MfKQ9r8GKYqr%TwjUPD8ILPZIo2LaLaSw\"",
                "is not valid base64",
            ),
            ("\"whsec_\"", "empty key"),
            (
                "[\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\", \"whsec_MfKQ9r8GKYqr%TwjUPD8ILPZIo2LaLaSw\"]",
                "(secret 2 of 2) is not valid base64",
            ),
        ];
        for (value, expected) in cases {
            let err = parse(&format!("{MINIMAL}[webhook]\nsigning_secret = {value}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("`webhook.signing_secret`"), "{value}: {err}");
            assert!(err.contains(expected), "{value}: {err}");
            assert!(
                !err.contains("MfKQ9r8GKYqr"),
                "the error shows the secret: {err}"
            );
        }
    }

    #[test]
    fn conflicting_url_sources_are_refused() {
        let text = format!("{MINIMAL}[webhook]\nurl = \"https://other.example.org/\"\n");
        assert!(parse(&text).unwrap_err().to_string().contains("differ"));
    }

    #[test]
    fn tls_ca_files_are_read_at_load_and_bad_ones_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(dir.path().join("ca.pem"), certified.cert.pem()).unwrap();
        std::fs::write(dir.path().join("empty.pem"), "no certificate in here\n").unwrap();
        std::fs::write(
            dir.path().join("broken.pem"),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let load = |text: &str| Config::from_toml(text, &dir.path().join("c.toml"), &|_| None);

        let defaults = load(MINIMAL).unwrap();
        assert!(
            defaults.tls_roots.is_none(),
            "the system's roots by default"
        );
        assert!(
            defaults.webhook.tls_roots.is_none(),
            "the system's roots by default"
        );
        // Relative to the configuration file, whatever the working directory.
        let config = load(&format!(
            "{MINIMAL}tls_ca_file = \"ca.pem\"\n[webhook]\ntls_ca_file = \"ca.pem\"\n"
        ))
        .unwrap();
        assert_eq!(config.tls_roots.map(|roots| roots.len()), Some(1));
        assert_eq!(config.webhook.tls_roots.map(|roots| roots.len()), Some(1));

        for (file, what) in [
            ("missing.pem", "no readable PEM certificates"),
            ("empty.pem", "no PEM certificate"),
            ("broken.pem", "certificate 1 is not usable as a root"),
        ] {
            for (table, key) in [("", "tls_ca_file"), ("[webhook]\n", "webhook.tls_ca_file")] {
                let error = load(&format!("{MINIMAL}{table}tls_ca_file = \"{file}\"\n"))
                    .unwrap_err()
                    .to_string();
                assert!(error.contains(&format!("`{key}`")), "{key} {file}: {error}");
                assert!(error.contains(file), "{key} {file}: {error}");
                assert!(error.contains(what), "{key} {file}: {error}");
            }
        }
    }
}
