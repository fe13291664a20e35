//! The plain HTTP/1.1 listeners beside gRPC (`/metrics`, the coordinator's web view): accept,
//! serve each connection with hyper until `stop`.

use std::convert::Infallible;
use std::future::Future;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves `answer` on `listener` until `stop`; `what` names the listener in logs.
pub async fn serve<A, F>(
    listener: TcpListener,
    stop: CancellationToken,
    what: &'static str,
    answer: A,
) where
    A: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, listener = what, "failed to accept a connection");
                    continue;
                }
            },
        };
        let answer = answer.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(answer);
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::select! {
                () = stop.cancelled() => {}
                served = connection => {
                    if let Err(e) = served {
                        tracing::debug!(error = %e, listener = what, "a connection ended with an error");
                    }
                }
            }
        });
    }
}
