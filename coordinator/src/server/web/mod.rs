//! A read-only web view of the coordinator (`--web-listen`): the runs, a run's matrix and jobs
//! changing in place while it goes, and each step's log as it is written, with a link to the
//! stored report once there is one. Plain HTTP/1.1 from the hyper tonic already builds on; the
//! pages hold no external asset.
//!
//! Behind the same tokens as the client API: a token with the `read` scope, as
//! `authorization: Bearer <token>` or `?token=<token>` (the pages pass theirs on); without
//! one it is refused, unless no token grants `read` (loopback development, as for gRPC).
//! Only GET is answered: nothing here changes a run.

mod model;
mod pages;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::auth::{Scope, Tokens};
use super::commands::{Command, Coordinator, LogRead};
use crate::election::Role;
use shardci_types::RunId;

/// How long a page's request for the next change of a run waits before answering unchanged.
const LONG_POLL: Duration = Duration::from_secs(20);
/// How often a waiting request looks again.
const LOOK_EVERY: Duration = Duration::from_millis(200);
/// Most of a log one request returns.
const LOG_PART: usize = 256 << 10;
/// Runs the list shows.
const RUNS_LISTED: usize = 100;

#[derive(Clone)]
pub(crate) struct Web {
    pub coordinator: Coordinator,
    pub roles: watch::Receiver<Role>,
    pub tokens: Arc<Tokens>,
    /// `POST /webhooks/github` and `/webhooks/gitlab`, when repositories are configured.
    pub webhooks: Option<Arc<super::webhooks::Webhooks>>,
}

type Answer = Response<Full<Bytes>>;

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Answer {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Tokens may sit in page addresses: never send them on to another site.
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn text(status: StatusCode, body: impl Into<String>) -> Answer {
    respond(status, "text/plain; charset=utf-8", body.into())
}

fn html(body: String) -> Answer {
    respond(StatusCode::OK, "text/html; charset=utf-8", body)
}

fn json_answer(value: &Value) -> Answer {
    respond(
        StatusCode::OK,
        "application/json",
        serde_json::to_vec(value).unwrap_or_default(),
    )
}

/// The query's parameters, decoded.
fn query(request: &Request<Incoming>) -> Vec<(String, String)> {
    request.uri().query().map_or_else(Vec::new, |q| {
        url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect()
    })
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

async fn answer(request: Request<Incoming>, web: Web) -> Result<Answer, Infallible> {
    match request.uri().path() {
        "/webhooks/github" => {
            return Ok(webhook(request, &web, super::webhooks::Forge::GitHub).await);
        }
        "/webhooks/gitlab" => {
            return Ok(webhook(request, &web, super::webhooks::Forge::GitLab).await);
        }
        _ => {}
    }
    if request.method() != Method::GET {
        return Ok(text(
            StatusCode::METHOD_NOT_ALLOWED,
            "the web view only reads: GET\n",
        ));
    }
    let params = query(&request);
    let bearer = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let given = bearer.as_deref().or_else(|| param(&params, "token"));
    if !web.tokens.allows(given, Scope::Read) {
        return Ok(text(
            StatusCode::UNAUTHORIZED,
            "a token with the read scope is required: add ?token=<token> to the address, or send authorization: Bearer <token>\n",
        ));
    }
    if !matches!(*web.roles.borrow(), Role::Leader) {
        return Ok(text(
            StatusCode::SERVICE_UNAVAILABLE,
            "this coordinator stands by; open the web view of the one that leads\n",
        ));
    }
    let path = request.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    Ok(match segments.as_slice() {
        [""] => html(pages::runs()),
        ["runs", run] => html(pages::run(run)),
        ["runs", run, "logs"] => match (param(&params, "job"), param(&params, "step")) {
            (Some(job), Some(step)) => html(pages::log(run, job, step)),
            _ => text(
                StatusCode::BAD_REQUEST,
                "logs need ?job=<job id>&step=<step>\n",
            ),
        },
        ["api", "runs"] => runs(&web).await,
        ["api", "runs", run] => run_detail(&web, run, param(&params, "after")).await,
        ["api", "logs"] => logs(&web, &params).await,
        _ => text(StatusCode::NOT_FOUND, "no such page\n"),
    })
}

/// A webhook delivery: its signature (GitHub) or its token (GitLab), not a read token, says
/// who sent it.
async fn webhook(request: Request<Incoming>, web: &Web, forge: super::webhooks::Forge) -> Answer {
    use super::webhooks::{Delivery, Forge, MAX_BODY, Outcome};
    use http_body_util::BodyExt;
    let Some(webhooks) = &web.webhooks else {
        return text(
            StatusCode::NOT_FOUND,
            "webhooks are off: no repository is configured (--repositories)\n",
        );
    };
    if request.method() != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "webhooks are POSTed\n");
    }
    if !matches!(*web.roles.borrow(), Role::Leader) {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "this coordinator stands by; deliver to the one that leads\n",
        );
    }
    let too_large = || {
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a webhook body may hold at most {MAX_BODY} bytes\n"),
        )
    };
    let declared = request
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return too_large();
    }
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (event, delivery, credential) = match forge {
        Forge::GitHub => (
            header("x-github-event"),
            header("x-github-delivery"),
            header("x-hub-signature-256"),
        ),
        Forge::GitLab => (
            header("x-gitlab-event"),
            header("x-gitlab-event-uuid"),
            header("x-gitlab-token"),
        ),
    };
    let body = match http_body_util::Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return too_large(),
    };
    let outcome = webhooks.deliver(
        Delivery {
            forge,
            event: event.as_deref(),
            id: delivery.as_deref(),
            credential: credential.as_deref(),
        },
        &body,
    );
    let (status, message) = match outcome {
        Outcome::Accepted(m) => (StatusCode::ACCEPTED, m),
        Outcome::Ignored(m) => (StatusCode::OK, m),
        Outcome::Refused(code, m) => (
            StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
            m,
        ),
    };
    if status.is_client_error() {
        tracing::warn!(%status, %message, "refused a webhook delivery");
    }
    text(status, format!("{message}\n"))
}

fn shutting_down() -> Answer {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "the coordinator is shutting down\n",
    )
}

async fn runs(web: &Web) -> Answer {
    match web
        .coordinator
        .call(|reply| Command::ListRuns { reply })
        .await
    {
        Ok(runs) => {
            let runs: Vec<Value> = runs
                .iter()
                .take(RUNS_LISTED)
                .map(|(view, record)| model::run_summary(view, record))
                .collect();
            json_answer(&json!({ "runs": runs }))
        }
        Err(_) => shutting_down(),
    }
}

/// The run, as soon as it differs from `after` (a version the page has), or after
/// [`LONG_POLL`] unchanged; at once for a finished run or a page with no version.
async fn run_detail(web: &Web, run: &str, after: Option<&str>) -> Answer {
    let started = Instant::now();
    loop {
        let found = web
            .coordinator
            .call(|reply| Command::GetRun {
                run: RunId(run.to_string()),
                reply,
            })
            .await;
        let detail = match found {
            Ok(Some((view, record))) => model::run_detail(&view, &record),
            Ok(None) => return text(StatusCode::NOT_FOUND, format!("no run {run}\n")),
            Err(_) => return shutting_down(),
        };
        let unchanged = after.is_some_and(|a| detail["version"].as_str() == Some(a));
        if !unchanged || detail["finished"] == json!(true) || started.elapsed() >= LONG_POLL {
            return json_answer(&detail);
        }
        tokio::time::sleep(LOOK_EVERY).await;
    }
}

/// Up to [`LOG_PART`] of a step's log from `offset`: `{text, next, more, done}`; `done` once
/// the log is whole in the store.
async fn logs(web: &Web, params: &[(String, String)]) -> Answer {
    let (Some(run), Some(job), Some(step)) = (
        param(params, "run"),
        param(params, "job"),
        param(params, "step"),
    ) else {
        return text(
            StatusCode::BAD_REQUEST,
            "logs need ?run=<run>&job=<job id>&step=<step>\n",
        );
    };
    let offset: u64 = param(params, "offset")
        .and_then(|o| o.parse().ok())
        .unwrap_or(0);
    let key = (RunId(run.to_string()), job.to_string(), step.to_string());
    let read = match web
        .coordinator
        .call(|reply| Command::Logs {
            key,
            attempt: None,
            follow: false,
            reply,
        })
        .await
    {
        Ok(Some(read)) => read,
        Ok(None) => return text(StatusCode::NOT_FOUND, format!("no run {run}\n")),
        Err(_) => return shutting_down(),
    };
    let part = match read {
        LogRead::Live(snapshot, _) => match &snapshot.file {
            Some(file) => read_file_part(file, offset, snapshot.len).await,
            None => Ok((Vec::new(), false)),
        }
        .map(|(bytes, more)| (bytes, more, false)),
        LogRead::Stored { store, .. } => match store.read_log(run, job, step, None).await {
            Ok(Some(stream)) => read_stream_part(stream, offset).await,
            Ok(None) => Ok((Vec::new(), false, true)),
            Err(e) => Err(e.to_string()),
        },
    };
    match part {
        Ok((bytes, more, done)) => {
            let (text_part, used) = whole_characters(&bytes);
            json_answer(&json!({
                "text": text_part,
                "next": offset + used as u64,
                "more": more,
                "done": done && !more,
            }))
        }
        Err(e) => text(
            StatusCode::BAD_GATEWAY,
            format!("failed to read the log: {e}\n"),
        ),
    }
}

/// The text of `bytes` up to the last whole character (a part may end inside one), and how
/// many bytes that is.
fn whole_characters(bytes: &[u8]) -> (String, usize) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_string(), bytes.len()),
        Err(e) if e.error_len().is_none() => {
            let used = e.valid_up_to();
            (String::from_utf8_lossy(&bytes[..used]).into_owned(), used)
        }
        Err(_) => (String::from_utf8_lossy(bytes).into_owned(), bytes.len()),
    }
}

async fn read_file_part(
    file: &std::path::Path,
    offset: u64,
    len: u64,
) -> Result<(Vec<u8>, bool), String> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    if offset >= len {
        return Ok((Vec::new(), false));
    }
    let mut reader = tokio::fs::File::open(file)
        .await
        .map_err(|e| e.to_string())?;
    reader
        .seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(|e| e.to_string())?;
    let want = (len - offset).min(LOG_PART as u64) as usize;
    let mut bytes = vec![0u8; want];
    let mut filled = 0;
    while filled < want {
        let n = reader
            .read(&mut bytes[filled..])
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    bytes.truncate(filled);
    Ok((bytes, offset + (filled as u64) < len))
}

async fn read_stream_part(
    mut stream: shardci_reports::LogStream,
    offset: u64,
) -> Result<(Vec<u8>, bool, bool), String> {
    use futures_util::StreamExt;
    let mut skipped = 0u64;
    let mut bytes = Vec::new();
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(|e| e.to_string())?;
        let start = offset.saturating_sub(skipped).min(piece.len() as u64) as usize;
        skipped += piece.len() as u64;
        bytes.extend_from_slice(&piece[start..]);
        if bytes.len() >= LOG_PART {
            bytes.truncate(LOG_PART);
            return Ok((bytes, true, false));
        }
    }
    Ok((bytes, false, true))
}

/// Serves the web view on `listener` until `stop`.
pub(crate) async fn serve(listener: TcpListener, web: Web, stop: CancellationToken) {
    shardci_runtime::http::serve(listener, stop, "web", move |request| {
        answer(request, web.clone())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::whole_characters;

    #[test]
    fn parts_end_on_whole_characters() {
        let text = "é".as_bytes();
        assert_eq!(whole_characters(&[b'a', text[0]]), ("a".to_string(), 1));
        assert_eq!(whole_characters("aé".as_bytes()), ("aé".to_string(), 3));
    }
}
