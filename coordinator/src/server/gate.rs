//! The layer that lets calls through only while this coordinator leads. A standby answers
//! every call with UNAVAILABLE, naming the leader in the message and in the
//! `shardci-leader` header, so clients and workers given several addresses move on at once.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::watch;
use tonic::Status;
use tonic::body::Body;

use crate::election::Role;

pub use shardci_proto::LEADER_HEADER;

/// Puts [`Gated`] in front of the services.
#[derive(Debug, Clone)]
pub struct LeaderGate {
    role: watch::Receiver<Role>,
}

impl LeaderGate {
    /// Lets calls through while `role` says this coordinator leads.
    pub fn new(role: watch::Receiver<Role>) -> Self {
        Self { role }
    }
}

impl<S> tower_layer::Layer<S> for LeaderGate {
    type Service = Gated<S>;

    fn layer(&self, inner: S) -> Gated<S> {
        Gated {
            inner,
            role: self.role.clone(),
        }
    }
}

/// A service that only the leader serves.
#[derive(Debug, Clone)]
pub struct Gated<S> {
    inner: S,
    role: watch::Receiver<Role>,
}

fn standby_status(leader: Option<&str>) -> Status {
    let mut status = Status::unavailable(match leader {
        Some(leader) => format!("this coordinator stands by; the leader is {leader}"),
        None => "this coordinator stands by; no coordinator leads yet".to_string(),
    });
    if let Some(value) = leader.and_then(|l| l.parse().ok()) {
        status.metadata_mut().insert(LEADER_HEADER, value);
    }
    status
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> tower_service::Service<http::Request<Body>> for Gated<S>
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
        let refusal = match &*self.role.borrow() {
            Role::Leader => None,
            Role::Standby { leader } => Some(standby_status(leader.as_deref())),
        };
        match refusal {
            Some(status) => Box::pin(std::future::ready(Ok(status.into_http()))),
            None => Box::pin(self.inner.call(request)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_names_the_leader_in_message_and_header() {
        let status = standby_status(Some("https://c1:7070"));
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().contains("https://c1:7070"));
        assert_eq!(
            status
                .metadata()
                .get(LEADER_HEADER)
                .and_then(|v| v.to_str().ok()),
            Some("https://c1:7070")
        );
        assert!(standby_status(None).metadata().get(LEADER_HEADER).is_none());
    }
}
