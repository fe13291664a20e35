//! Reaching a coordinator, the same way for every client (the CLI, workers): `https://` speaks
//! TLS (the system's roots, or a private CA), with a client certificate when one is given;
//! plain `http://` is for loopback only unless the caller says it is on a closed network.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// How a client trusts, and proves itself to, the coordinator.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// A PEM file of CA certificates to trust instead of the system's roots.
    pub ca: Option<PathBuf>,
    /// A client certificate and key (PEM files), for coordinators that ask workers for one.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Allow plain `http://` to an address off loopback.
    pub insecure: bool,
}

/// Why a coordinator address cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// Not a URL tonic accepts.
    #[error("invalid coordinator address {url:?}: {message}")]
    Invalid {
        /// The address.
        url: String,
        /// What is wrong with it.
        message: String,
    },
    /// Plain HTTP off loopback without `insecure`.
    #[error(
        "refusing plain http:// to {host}, which is not loopback: tokens and logs would cross the \
         network in clear; use https:// (with --ca for a private CA) or pass --insecure on a \
         closed network"
    )]
    PlainOffLoopback {
        /// The host.
        host: String,
    },
    /// A certificate file could not be read.
    #[error("failed to read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, EndpointError> {
    std::fs::read(path).map_err(|source| EndpointError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Picks the process's TLS crypto provider (ring) once: the dependency graph enables more than
/// one, and rustls refuses to guess. Every TLS client and server calls this first.
pub fn ensure_crypto_provider() {
    // An error means a provider is already installed, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An endpoint for `url` with TLS set up as its scheme and `tls` say. Nothing is sent yet.
pub fn endpoint(url: &str, tls: &ClientTls) -> Result<Endpoint, EndpointError> {
    let invalid = |message: String| EndpointError::Invalid {
        url: url.to_string(),
        message,
    };
    let uri: tonic::codegen::http::Uri = url.parse().map_err(|e| invalid(format!("{e}")))?;
    let host = uri
        .host()
        .ok_or_else(|| invalid("no host".into()))?
        .to_string();
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| invalid(e.to_string()))?
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true);
    match uri.scheme_str() {
        Some("http") if is_loopback(&host) || tls.insecure => Ok(endpoint),
        Some("http") => Err(EndpointError::PlainOffLoopback { host }),
        Some("https") => {
            ensure_crypto_provider();
            let mut config = ClientTlsConfig::new()
                .domain_name(host.trim_start_matches('[').trim_end_matches(']'));
            config = match &tls.ca {
                Some(ca) => config.ca_certificate(Certificate::from_pem(read(ca)?)),
                None => config.with_native_roots(),
            };
            if let Some((cert, key)) = &tls.identity {
                config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            endpoint
                .tls_config(config)
                .map_err(|e| invalid(e.to_string()))
        }
        other => Err(invalid(format!(
            "the scheme must be http or https, not {}",
            other.unwrap_or("none")
        ))),
    }
}

/// The addresses in a comma-separated list (`http://a:7070,http://b:7070`: several
/// coordinators, one of which leads), in order, blanks dropped.
pub fn addresses(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect()
}

/// An error and its causes on one line: a TLS failure's reason (an unknown issuer) sits
/// several sources deep under "transport error".
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_for_loopback_unless_asked() {
        let open = ClientTls::default();
        for url in [
            "http://127.0.0.1:7070",
            "http://localhost:7070",
            "http://[::1]:7070",
        ] {
            assert!(endpoint(url, &open).is_ok(), "{url}");
        }
        let refused = endpoint("http://ci.invalid:7070", &open).expect_err("off loopback");
        assert!(
            refused
                .to_string()
                .contains("refusing plain http:// to ci.invalid")
        );
        let insecure = ClientTls {
            insecure: true,
            ..ClientTls::default()
        };
        assert!(endpoint("http://ci.invalid:7070", &insecure).is_ok());
        assert!(endpoint("https://ci.invalid:7070", &open).is_ok());
        assert!(endpoint("ftp://ci.invalid", &open).is_err());
        let missing = ClientTls {
            ca: Some("/nonexistent/ca.pem".into()),
            ..ClientTls::default()
        };
        let err = endpoint("https://ci.invalid:7070", &missing).expect_err("no CA file");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
