//! The checks every call passes before its body is read, as one tower layer in front of both
//! services: the API version header, a bearer token with the scope the method needs, and a
//! per-method cap on how much body the method may read. A refused call costs the coordinator
//! its headers, never its body: 32 unauthenticated 60 MiB requests do not move its memory.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use shardci_proto::{API_VERSION, API_VERSION_HEADER};
use tonic::Status;
use tonic::body::Body;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Plan, upload sources, submit and cancel runs.
    Submit,
    /// Read runs, logs and workers.
    Read,
    /// Steer the fleet (drain workers).
    Admin,
    /// Be a worker: hold a session, fetch sources.
    Worker,
}

impl Scope {
    const ALL: [Scope; 4] = [Scope::Submit, Scope::Read, Scope::Admin, Scope::Worker];

    fn as_str(self) -> &'static str {
        match self {
            Scope::Submit => "submit",
            Scope::Read => "read",
            Scope::Admin => "admin",
            Scope::Worker => "worker",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| format!("unknown scope {s:?} (expected submit, read, admin or worker)"))
    }
}

/// The bearer tokens a coordinator accepts, each with its scopes. A scope no token grants is
/// open (loopback development); the coordinator refuses to listen off loopback that way.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    grants: Vec<(String, BTreeSet<Scope>)>,
}

/// A malformed tokens file.
#[derive(Debug, thiserror::Error)]
#[error("{path}:{line}: {message}")]
pub struct TokensError {
    /// The file.
    pub path: String,
    /// The 1-based line.
    pub line: usize,
    /// What is wrong there.
    pub message: String,
}

impl Tokens {
    /// The classic pair: a client token (submit, read, admin) and a worker token.
    pub fn pair(client: Option<String>, worker: Option<String>) -> Self {
        let mut tokens = Tokens::default();
        if let Some(client) = client {
            tokens.grant(client, [Scope::Submit, Scope::Read, Scope::Admin]);
        }
        if let Some(worker) = worker {
            tokens.grant(worker, [Scope::Worker]);
        }
        tokens
    }

    /// Adds every grant of `other`.
    pub fn extend(&mut self, other: Tokens) {
        self.grants.extend(other.grants);
    }

    /// Grants `scopes` to `token`.
    pub fn grant(&mut self, token: String, scopes: impl IntoIterator<Item = Scope>) {
        self.grants.push((token, scopes.into_iter().collect()));
    }

    /// Reads a tokens file: one `TOKEN SCOPE[,SCOPE...]` per line; blank lines and `#`
    /// comments are skipped. `path` names the file in errors.
    pub fn parse(path: &str, text: &str) -> Result<Self, TokensError> {
        let mut tokens = Tokens::default();
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            let content = line.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let error = |message: String| TokensError {
                path: path.to_string(),
                line: line_no,
                message,
            };
            let mut parts = content.split_whitespace();
            let (Some(token), Some(scopes), None) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(error("expected `TOKEN SCOPE[,SCOPE...]`".into()));
            };
            if token.len() < 16 {
                return Err(error("a token needs at least 16 characters".into()));
            }
            let scopes = scopes
                .split(',')
                .map(str::parse)
                .collect::<Result<BTreeSet<Scope>, _>>()
                .map_err(error)?;
            tokens.grant(token.to_string(), scopes);
        }
        Ok(tokens)
    }

    /// Whether a token is needed to read runs and logs.
    pub fn guards_reading(&self) -> bool {
        self.required(Scope::Read)
    }

    /// Whether every scope has a token (a closed coordinator).
    pub fn closes_every_scope(&self) -> bool {
        Scope::ALL.into_iter().all(|scope| self.required(scope))
    }

    fn required(&self, scope: Scope) -> bool {
        self.grants
            .iter()
            .any(|(_, scopes)| scopes.contains(&scope))
    }

    pub(crate) fn allows(&self, given: Option<&str>, scope: Scope) -> bool {
        if !self.required(scope) {
            return true;
        }
        let Some(given) = given else {
            return false;
        };
        // Every token is compared whole, so the time taken says nothing about which matched.
        self.grants.iter().fold(false, |found, (token, scopes)| {
            found | (same_secret(given.as_bytes(), token.as_bytes()) && scopes.contains(&scope))
        })
    }
}

/// Compares in time independent of where the first difference is: the length leaks, the
/// content does not. Tokens and webhook secrets both go through it.
pub(crate) fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Most a small request may carry: ids, flags, a worker's hello.
const SMALL: usize = 64 << 10;
/// A plan of tens of thousands of jobs.
const PLAN: usize = 64 << 20;

/// The scope a method needs and the most body it may read (`None`: a long stream, limited per
/// message by the service).
fn policy(path: &str) -> Option<(Scope, Option<usize>)> {
    let (service, method) = path.trim_start_matches('/').split_once('/')?;
    Some(match (service, method) {
        ("shardci.v1.ClientService", "SubmitRun") => (Scope::Submit, Some(PLAN)),
        ("shardci.v1.ClientService", "UploadSource") => (Scope::Submit, None),
        ("shardci.v1.ClientService", "Plan" | "CancelRun") => (Scope::Submit, Some(SMALL)),
        ("shardci.v1.ClientService", "DrainWorker") => (Scope::Admin, Some(SMALL)),
        ("shardci.v1.ClientService", _) => (Scope::Read, Some(SMALL)),
        ("shardci.v1.WorkerService", "Session") => (Scope::Worker, None),
        ("shardci.v1.WorkerService", _) => (Scope::Worker, Some(SMALL)),
        _ => return None,
    })
}

/// Refuses a call that names another API version or lacks the token its method needs.
fn check(tokens: &Tokens, request: &http::Request<Body>) -> Result<Option<usize>, Status> {
    let headers = request.headers();
    // A call without the header is taken to speak this version (grpcurl, health checks);
    // one that names another version is refused.
    if let Some(version) = headers.get(API_VERSION_HEADER) {
        let version = version.to_str().unwrap_or("?");
        if version != API_VERSION.to_string() {
            let shown: String = version.chars().take(16).collect();
            return Err(Status::failed_precondition(format!(
                "this coordinator speaks shardci API v{API_VERSION}; the peer speaks v{shown}"
            )));
        }
    }
    if request.uri().path() == "/shardci.v1.ClientService/Ping" {
        // Says only "I lead"; a client finds the leader before it has anything to protect.
        return Ok(Some(SMALL));
    }
    let Some((scope, limit)) = policy(request.uri().path()) else {
        // Not ours: the router answers UNIMPLEMENTED without reading it.
        return Ok(Some(0));
    };
    let given = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if tokens.allows(given, scope) {
        Ok(limit)
    } else {
        Err(Status::unauthenticated(format!(
            "a token with the {} scope is required (authorization: Bearer <token>)",
            scope.as_str()
        )))
    }
}

fn is_worker_call(request: &http::Request<Body>) -> bool {
    request
        .uri()
        .path()
        .starts_with("/shardci.v1.WorkerService/")
}

/// Whether the TLS handshake verified a client certificate (rustls checked it against the
/// client CA; an unverifiable one fails the handshake).
fn has_client_cert(request: &http::Request<Body>) -> bool {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|info| info.peer_certs())
        .is_some_and(|certs| !certs.is_empty())
}

/// The layer that puts [`Guarded`] in front of the services.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    tokens: std::sync::Arc<Tokens>,
    require_worker_cert: bool,
}

impl AuthLayer {
    /// Checks calls against `tokens`.
    pub fn new(tokens: Tokens) -> Self {
        Self {
            tokens: std::sync::Arc::new(tokens),
            require_worker_cert: false,
        }
    }

    /// Refuses worker calls that came without a verified client certificate.
    pub fn require_worker_cert(mut self, required: bool) -> Self {
        self.require_worker_cert = required;
        self
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            tokens: self.tokens.clone(),
            require_worker_cert: self.require_worker_cert,
        }
    }
}

/// A service behind the checks.
#[derive(Debug, Clone)]
pub struct Guarded<S> {
    inner: S,
    tokens: std::sync::Arc<Tokens>,
    require_worker_cert: bool,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> tower_service::Service<http::Request<Body>> for Guarded<S>
where
    S: tower_service::Service<http::Request<Body>, Response = http::Response<Body>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let checked = check(&self.tokens, &request).and_then(|limit| {
            if self.require_worker_cert && is_worker_call(&request) && !has_client_cert(&request) {
                return Err(Status::unauthenticated(
                    "workers must present a client certificate signed by the coordinator's client CA",
                ));
            }
            Ok(limit)
        });
        match checked {
            Err(status) => Box::pin(std::future::ready(Ok(status.into_http()))),
            Ok(limit) => {
                let request = match limit {
                    // Past the cap the body errors and the call fails; nothing larger is read.
                    Some(limit) => {
                        request.map(|body| Body::new(http_body_util::Limited::new(body, limit)))
                    }
                    None => request,
                };
                Box::pin(self.inner.call(request))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, headers: &[(&'static str, &str)]) -> http::Request<Body> {
        let mut request = http::Request::builder().uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(Body::empty()).expect("a request")
    }

    fn tokens() -> Tokens {
        Tokens::parse(
            "tokens",
            "# people\nreader-0123456789abcdef read\nsubmitter-0123456789abcd submit,read\n\
             worker-0123456789abcdefg worker\nadmin-0123456789abcdefgh admin # the platform team\n",
        )
        .expect("a valid file")
    }

    #[test]
    fn each_method_needs_its_scope() {
        let tokens = tokens();
        let call = |path: &str, token: &str| {
            let bearer = format!("Bearer {token}");
            check(&tokens, &request(path, &[("authorization", &bearer)]))
        };
        assert!(
            call(
                "/shardci.v1.ClientService/GetRun",
                "reader-0123456789abcdef"
            )
            .is_ok()
        );
        let refused = call(
            "/shardci.v1.ClientService/SubmitRun",
            "reader-0123456789abcdef",
        )
        .expect_err("reading is not submitting");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert!(
            refused.message().contains("submit scope"),
            "{}",
            refused.message()
        );
        assert!(
            call(
                "/shardci.v1.ClientService/SubmitRun",
                "submitter-0123456789abcd"
            )
            .is_ok()
        );
        assert!(
            call(
                "/shardci.v1.ClientService/DrainWorker",
                "submitter-0123456789abcd"
            )
            .is_err()
        );
        assert!(
            call(
                "/shardci.v1.WorkerService/Session",
                "reader-0123456789abcdef"
            )
            .is_err()
        );
        assert!(
            call(
                "/shardci.v1.WorkerService/Session",
                "worker-0123456789abcdefg"
            )
            .is_ok()
        );
        assert!(check(&tokens, &request("/shardci.v1.ClientService/GetRun", &[])).is_err());
        assert!(
            call(
                "/shardci.v1.ClientService/DrainWorker",
                "admin-0123456789abcdefgh"
            )
            .is_ok()
        );
        assert!(tokens.closes_every_scope());
        // A scope no token grants is open, as on a loopback development coordinator.
        let no_admin = Tokens::pair(None, Some("w".into()));
        assert!(!no_admin.closes_every_scope());
        assert!(
            check(
                &no_admin,
                &request("/shardci.v1.ClientService/DrainWorker", &[])
            )
            .is_ok()
        );
        assert_eq!(
            check(
                &Tokens::default(),
                &request("/shardci.v1.ClientService/GetRun", &[])
            )
            .ok(),
            Some(Some(SMALL))
        );
    }

    #[test]
    fn another_api_version_is_refused() {
        let refused = check(
            &Tokens::default(),
            &request(
                "/shardci.v1.WorkerService/Session",
                &[(API_VERSION_HEADER, "2")],
            ),
        )
        .expect_err("v2");
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    }

    #[test]
    fn a_bad_tokens_file_names_the_line() {
        let err = Tokens::parse(
            "/etc/shardci/tokens",
            "ok-0123456789abcdef read\nshort read\n",
        )
        .expect_err("too short");
        assert_eq!(
            err.to_string(),
            "/etc/shardci/tokens:2: a token needs at least 16 characters"
        );
        let err = Tokens::parse("t", "x-0123456789abcdefgh write\n").expect_err("no such scope");
        assert!(
            err.to_string().starts_with("t:1: unknown scope \"write\""),
            "{err}"
        );
        let pair = Tokens::pair(Some("c".into()), Some("w".into()));
        assert!(pair.closes_every_scope());
    }
}
