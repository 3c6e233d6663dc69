//! `POST /v1/stanzas` and `POST /msg/{to}` (README, "The HTTP API"): authenticate, read the body
//! within its limit, compose the stanza, check who it may come from, and hand it to
//! [`Outgoing`](crate::bridge::outgoing::Outgoing): messages and presence are queued (`202`, or
//! `201` on `/msg`), iq answers complete a waiting iq, iq requests wait for their answer.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use minidom::Element;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::api::auth::{self, Caller};
use crate::api::compose::{self, ComposeError, IqAnswer, StanzaRequest};
use crate::api::idempotency::{self, Claim, Start};
use crate::api::{ApiState, Problem};
use crate::bridge::outgoing::{Dispatched, SendError};
use crate::limits;
use crate::xmpp::codec::ReadLimits;
use crate::xmpp::stanza::{Kind, ncname};

/// The answer to a stanza accepted for sending.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Accepted {
    /// The stanza's `id` (generated when the request gave none).
    pub(crate) id: String,
}

/// Sends one stanza.
#[utoipa::path(
    post,
    path = "/v1/stanzas",
    params(("timeout" = Option<u64>, Query, minimum = 1, maximum = 120, description = "iq get/set: seconds to wait for the answer (1 to 120, default 30)")),
    request_body(
        description = "The stanza: its fields as JSON, or the stanza itself as application/xmpp+xml",
        content(
            (StanzaRequest = "application/json"),
            (String = "application/xmpp+xml")
        )
    ),
    responses(
        (status = 200, description = "iq get/set: its answer", body = IqAnswer),
        (status = 202, description = "message, presence, iq result/error: accepted", body = Accepted),
        (status = 400, description = "unreadable body or query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "no or unknown token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`from` outside the token's localparts or the domain", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "an iq answer nothing waits for, an id in use, or a room not joined", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "body over max_body_bytes", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "another media type", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "not an acceptable stanza", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "queue full or link down; see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "no answer to the iq in time", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn post_stanza(
    State(state): State<ApiState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (caller, claim) = match admit(&state, &headers).await {
        Ok(admitted) => admitted,
        Err(answer) => return answer,
    };
    let wait = match iq_wait(&query) {
        Ok(wait) => wait,
        Err(problem) => return problem.into_response(),
    };
    let bytes = match read_body(&state, body).await {
        Ok(bytes) => bytes,
        Err(problem) => return problem.into_response(),
    };
    let limits = read_limits(&state);
    let composed = match media(&headers) {
        Media::Json => compose::from_json(&bytes, limits),
        Media::Xmpp => match std::str::from_utf8(&bytes) {
            Ok(xml) => compose::from_xml(xml, limits),
            Err(_) => Err(ComposeError::Syntax("the body is not UTF-8".into())),
        },
        _ => {
            return Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the stanza as application/json (its fields) or application/xmpp+xml (the stanza)",
            )
            .into_response();
        }
    };
    let element = match composed {
        Ok(element) => element,
        Err(error) => return compose_problem(error).into_response(),
    };
    send(&state, &caller, element, wait, StatusCode::ACCEPTED, claim).await
}

/// The fields `/msg` takes from a form or JSON.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"body": "backup done", "type": "chat"}))]
pub(crate) struct MsgRequest {
    body: Option<String>,
    /// Default `chat`.
    #[serde(rename = "type")]
    type_: Option<String>,
    /// Instead of the path's.
    to: Option<String>,
}

/// mod_post_msg's form of the same: the path names the recipient, the body is the text.
#[utoipa::path(
    post,
    path = "/msg/{to}",
    params(("to" = String, Path, description = "The recipient's JID", example = "alice@localhost")),
    request_body(
        description = "The message text, or a form or JSON with `body`, `type` and `to`",
        content(
            (String = "text/plain"),
            (MsgRequest = "application/x-www-form-urlencoded"),
            (MsgRequest = "application/json")
        )
    ),
    responses(
        (status = 201, description = "accepted", body = Accepted),
        (status = 400, description = "unreadable body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "no or unknown token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`from` outside the token's localparts or the domain", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "body over max_body_bytes", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "another media type", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "an empty body or not an acceptable message", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "queue full; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn post_msg(
    State(state): State<ApiState>,
    Path(to): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (caller, claim) = match admit(&state, &headers).await {
        Ok(admitted) => admitted,
        Err(answer) => return answer,
    };
    let bytes = match read_body(&state, body).await {
        Ok(bytes) => bytes,
        Err(problem) => return problem.into_response(),
    };
    let fields = match media(&headers) {
        Media::Text | Media::Missing => match String::from_utf8(bytes.to_vec()) {
            Ok(text) => Ok(MsgRequest {
                body: Some(text),
                type_: None,
                to: None,
            }),
            Err(_) => Err(ComposeError::Syntax("the body is not UTF-8 text".into())),
        },
        Media::Json => serde_json::from_slice(&bytes)
            .map_err(|e| ComposeError::Syntax(format!("the body is not the JSON expected ({e})"))),
        Media::Form => serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| ComposeError::Syntax(format!("the form cannot be read ({e})"))),
        Media::Xmpp | Media::Other => {
            return Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "/msg takes text/plain, a form or JSON with `body`; send whole stanzas to /v1/stanzas",
            )
            .into_response();
        }
    };
    let fields = match fields {
        Ok(fields) => fields,
        Err(error) => return compose_problem(error).into_response(),
    };
    let Some(body) = fields.body.filter(|b| !b.is_empty()) else {
        return Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the message body is empty: send its text as text/plain, or `body` in a form or JSON",
        )
        .into_response();
    };
    let request = StanzaRequest {
        to: Some(fields.to.unwrap_or(to)),
        type_: Some(fields.type_.unwrap_or_else(|| "chat".into())),
        body: Some(body),
        ..StanzaRequest::default()
    };
    let element = match compose::from_request(request, read_limits(&state)) {
        Ok(element) => element,
        Err(error) => return compose_problem(error).into_response(),
    };
    send(&state, &caller, element, None, StatusCode::CREATED, claim).await
}

/// Checks the sender and sends; `accepted` is the status of a queued stanza.
async fn send(
    state: &ApiState,
    caller: &Caller<'_>,
    mut element: Element,
    wait: Option<Duration>,
    accepted: StatusCode,
    claim: Option<Claim>,
) -> Response {
    let kind = Kind::of(&element);
    let type_ = element.attr("type").unwrap_or_default().to_owned();
    let from = if kind == Some(Kind::Message) && type_ == "groupchat" {
        room_sender(state, caller, &mut element)
    } else {
        sender(state, caller, element.attr("from"))
    };
    match from {
        Ok(from) => element.set_attr(rxml::Namespace::NONE, ncname("from"), from),
        Err(problem) => return problem.into_response(),
    }
    let id = element.attr("id").unwrap_or_default().to_owned();
    let accepted_body = serde_json::to_string(&Accepted { id: id.clone() }).unwrap_or_default();
    // A queued stanza's answer is remembered in the same commit as the stanza.
    let remember = claim
        .as_ref()
        .map(|claim| idempotency::record(claim, accepted, accepted_body.clone()));
    let wait = wait.unwrap_or(limits::API_IQ_TIMEOUT_DEFAULT);
    let (status, body) = match state.outgoing.dispatch(element, wait, remember).await {
        Ok(Dispatched::Queued) => {
            info!(token = %caller.token.name, id, "stanza accepted through the API");
            return json_response(accepted, accepted_body);
        }
        Ok(Dispatched::Answered) => (accepted, accepted_body),
        Ok(Dispatched::Reply(answer)) => (
            StatusCode::OK,
            serde_json::to_string(&compose::iq_answer(&answer)).unwrap_or_default(),
        ),
        Err(error) => return send_problem(error).into_response(),
    };
    if let Some(claim) = &claim
        && let Err(reason) = state
            .queue
            .remember(idempotency::record(claim, status, body.clone()))
            .await
    {
        warn!("the answer could not be remembered for its Idempotency-Key: {reason}");
    }
    json_response(status, body)
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// What every route does first: who calls, and the request's claim on its `Idempotency-Key`.
/// `Err` is the answer already: `401`, a problem with the key, or the first answer to a repeat.
async fn admit<'a>(
    state: &'a ApiState,
    headers: &HeaderMap,
) -> Result<(Caller<'a>, Option<Claim>), Response> {
    let caller = auth::authenticate(headers, &state.api.tokens)
        .map_err(|error| Problem::new(StatusCode::UNAUTHORIZED, error.detail()).into_response())?;
    let started = idempotency::start(
        headers,
        &caller.token.name,
        &state.queue,
        &state.in_progress,
    )
    .await
    .map_err(IntoResponse::into_response)?;
    match started {
        None => Ok((caller, None)),
        Some(Start::Fresh(claim)) => Ok((caller, Some(claim))),
        Some(Start::Repeat(first)) => {
            let status = StatusCode::from_u16(first.status).unwrap_or(StatusCode::OK);
            let mut response = json_response(status, first.body);
            response.headers_mut().insert(
                "idempotent-replayed",
                axum::http::HeaderValue::from_static("true"),
            );
            Err(response)
        }
    }
}

/// A groupchat goes to the room's bare JID from the JID the component joined it as, if the
/// token may send as that room's `from`.
fn room_sender(
    state: &ApiState,
    caller: &Caller<'_>,
    element: &mut Element,
) -> Result<String, Problem> {
    let to = element.attr("to").unwrap_or_default().to_owned();
    let (member, localpart) = state
        .rooms
        .sender_for(&to)
        .map_err(|refusal| Problem::new(StatusCode::CONFLICT, refusal.to_string()))?;
    if !auth::may_send_as(caller.token, &localpart) {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            format!(
                "the room is joined as {localpart:?}, which the token {:?} may not send as: add it to that token's `from`",
                caller.token.name
            ),
        ));
    }
    if let Some(room) = crate::xmpp::stanza::bare(&to) {
        element.set_attr(rxml::Namespace::NONE, ncname("to"), room);
    }
    Ok(member)
}

/// The full `from` JID: the request's (a localpart, or a JID of the domain), a Basic user's, or
/// the token's default; refused when outside what the token may send as.
fn sender(state: &ApiState, caller: &Caller<'_>, given: Option<&str>) -> Result<String, Problem> {
    let domain = &state.config.domain;
    let given = given.or(caller.basic_user.as_deref());
    let (localpart, resource) = match given {
        None => match auth::default_localpart(caller.token) {
            Some(localpart) => (localpart.to_owned(), None),
            None => {
                return Err(Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!(
                        "give `from`: the token {:?} has no localpart without `*` to default to",
                        caller.token.name
                    ),
                ));
            }
        },
        Some(text) if !text.contains('@') && !text.contains('/') && text != domain.as_str() => {
            (text.to_owned(), None)
        }
        Some(text) => {
            let jid = jid::Jid::new(text).map_err(|_| {
                Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("`from` {text:?} is not a valid JID or localpart"),
                )
            })?;
            if jid.domain().as_str() != domain.as_str() {
                return Err(Problem::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "`from` {text:?} is outside the component's domain {domain}; send from LOCALPART@{domain} or a bare localpart"
                    ),
                ));
            }
            (
                jid.node().map(|n| n.to_string()).unwrap_or_default(),
                jid.resource().map(|r| r.to_string()),
            )
        }
    };
    if !auth::may_send_as(caller.token, &localpart) {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            format!(
                "the token {:?} may not send as {:?}: add it to that token's `from` in [[api.tokens]]",
                caller.token.name, localpart
            ),
        ));
    }
    let bare = if localpart.is_empty() {
        domain.clone()
    } else {
        format!("{localpart}@{domain}")
    };
    let full = match resource {
        Some(resource) => format!("{bare}/{resource}"),
        None => bare,
    };
    jid::Jid::new(&full).map(|_| full.clone()).map_err(|_| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("`from` {full:?} is not a valid JID"),
        )
    })
}

fn iq_wait(query: &HashMap<String, String>) -> Result<Option<Duration>, Problem> {
    let Some(text) = query.get("timeout") else {
        return Ok(None);
    };
    let max = limits::API_IQ_TIMEOUT_MAX.as_secs();
    match text.parse::<u64>() {
        Ok(seconds) if (1..=max).contains(&seconds) => Ok(Some(Duration::from_secs(seconds))),
        _ => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            format!("`timeout` must be a whole number of seconds from 1 to {max}; got {text:?}"),
        )),
    }
}

async fn read_body(state: &ApiState, body: Body) -> Result<Bytes, Problem> {
    let limit = state.api.max_body_bytes;
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over {limit} bytes ([api] max_body_bytes), or was cut off"),
        )
    })
}

fn read_limits(state: &ApiState) -> ReadLimits {
    ReadLimits {
        max_stanza_bytes: state.config.max_stanza_bytes,
        max_depth: state.config.max_depth,
    }
}

enum Media {
    Json,
    Xmpp,
    Text,
    Form,
    /// No `Content-Type` at all.
    Missing,
    Other,
}

fn media(headers: &HeaderMap) -> Media {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Media::Missing;
    };
    let Some(mime) = value
        .to_str()
        .ok()
        .and_then(|v| v.parse::<mime::Mime>().ok())
    else {
        return Media::Other;
    };
    match (
        mime.type_().as_str(),
        mime.subtype().as_str(),
        mime.suffix().map(|s| s.as_str()),
    ) {
        ("application", "json", _) | ("application", _, Some("json")) => Media::Json,
        ("application", "xmpp", Some("xml")) => Media::Xmpp,
        ("text", "plain", _) => Media::Text,
        ("application", "x-www-form-urlencoded", _) => Media::Form,
        _ => Media::Other,
    }
}

fn compose_problem(error: ComposeError) -> Problem {
    match error {
        ComposeError::Syntax(detail) => Problem::new(StatusCode::BAD_REQUEST, detail),
        ComposeError::Invalid(detail) => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, detail),
    }
}

fn send_problem(error: SendError) -> Problem {
    let detail = error.to_string();
    match error {
        SendError::Refused(_) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{detail}; fix the stanza"),
        ),
        SendError::QueueFull
        | SendError::NotStored(_)
        | SendError::WriterBusy
        | SendError::TooManyWaiting => Problem::unavailable(format!("{detail}; try again later")),
        SendError::NothingWaiting { .. } => Problem::new(
            StatusCode::CONFLICT,
            format!("{detail} (it may have timed out after iq_timeout); nothing was sent"),
        ),
        SendError::DuplicateId => Problem::new(
            StatusCode::CONFLICT,
            format!("{detail}; use another id, or leave it out"),
        ),
        SendError::NoAnswer(_) => Problem::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "{detail}; raise ?timeout= (at most {} s) or try again",
                limits::API_IQ_TIMEOUT_MAX.as_secs()
            ),
        ),
    }
}
