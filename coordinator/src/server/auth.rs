//! The checks every call passes before its handler runs, as a tonic interceptor: the API
//! version header and the bearer token of the service's role. Interceptors see only the
//! metadata, so a refused call is refused before its body is read.

use shardci_proto::{API_VERSION, API_VERSION_HEADER};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Bearer tokens: clients and workers have distinct ones; `None` means not required.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    /// Required of `shardci` and other clients.
    pub client: Option<String>,
    /// Required of workers.
    pub worker: Option<String>,
}

/// Who a service serves, for the token it requires and the message it gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The client service.
    Client,
    /// The worker service.
    Worker,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Worker => "worker",
        }
    }
}

/// Checks the API version and the role's token on every call.
#[derive(Debug, Clone)]
pub struct Guard {
    role: Role,
    token: Option<String>,
}

impl Guard {
    /// The guard of `role`'s service under `tokens`.
    pub fn new(role: Role, tokens: &Tokens) -> Self {
        let token = match role {
            Role::Client => tokens.client.clone(),
            Role::Worker => tokens.worker.clone(),
        };
        Self { role, token }
    }
}

/// Compares in time independent of where the first difference is: the length leaks, the
/// content does not.
fn same_secret(given: &str, expected: &str) -> bool {
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

impl Interceptor for Guard {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let metadata = request.metadata();
        // A call without the header is taken to speak this version (grpcurl, health checks);
        // one that names another version is refused.
        if let Some(version) = metadata.get(API_VERSION_HEADER) {
            let version = version.to_str().unwrap_or("?");
            if version != API_VERSION.to_string() {
                return Err(Status::failed_precondition(format!(
                    "this coordinator speaks shardci API v{API_VERSION}; the peer speaks v{version}"
                )));
            }
        }
        if let Some(expected) = &self.token {
            let given = metadata
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if !given.is_some_and(|g| same_secret(g, expected)) {
                return Err(Status::unauthenticated(format!(
                    "a valid {} token is required (authorization: Bearer <token>)",
                    self.role.name()
                )));
            }
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&'static str, &str)]) -> Request<()> {
        let mut request = Request::new(());
        for (name, value) in headers {
            request
                .metadata_mut()
                .insert(*name, value.parse().expect("ascii"));
        }
        request
    }

    #[test]
    fn tokens_are_checked_per_role() {
        let tokens = Tokens {
            client: Some("c-secret".into()),
            worker: Some("w-secret".into()),
        };
        let mut client = Guard::new(Role::Client, &tokens);
        let mut worker = Guard::new(Role::Worker, &tokens);
        assert!(
            client
                .call(request(&[("authorization", "Bearer c-secret")]))
                .is_ok()
        );
        let refused = client
            .call(request(&[("authorization", "Bearer w-secret")]))
            .expect_err("a worker token is not a client token");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert!(refused.message().contains("client token"));
        assert!(worker.call(request(&[])).is_err());
        assert!(
            worker
                .call(request(&[("authorization", "Bearer w-secret")]))
                .is_ok()
        );
        let mut open = Guard::new(Role::Client, &Tokens::default());
        assert!(open.call(request(&[])).is_ok());
    }

    #[test]
    fn another_api_version_is_refused() {
        let mut guard = Guard::new(Role::Worker, &Tokens::default());
        let refused = guard
            .call(request(&[(API_VERSION_HEADER, "2")]))
            .expect_err("v2");
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        assert!(guard.call(request(&[(API_VERSION_HEADER, "1")])).is_ok());
    }
}
