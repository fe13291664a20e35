//! Talking to a coordinator: connecting with the token and API version on every call,
//! uploading source bundles, and turning statuses into exit codes.

use std::path::Path;

use shardci_proto::endpoint::{ClientTls, addresses, endpoint, error_chain};
use shardci_proto::v1 as pb;
use shardci_proto::v1::client_service_client::ClientServiceClient;
use shardci_proto::{API_VERSION, API_VERSION_HEADER};
use tokio::io::AsyncReadExt;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::args::Remote;

use crate::exit::Failure;

#[derive(Clone)]
pub struct Credentials {
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        if let Ok(version) = API_VERSION.to_string().parse() {
            request.metadata_mut().insert(API_VERSION_HEADER, version);
        }
        Ok(request)
    }
}

pub type Client = ClientServiceClient<InterceptedService<Channel, Credentials>>;

/// Connects to the coordinator that leads. Given several addresses (comma separated), asks
/// each in turn and keeps the first that answers as leader: standbys answer UNAVAILABLE.
pub async fn connect(remote: &Remote) -> Result<Client, Failure> {
    let token = match remote.token.as_deref() {
        Some(t) => Some(format!("Bearer {t}").parse().map_err(|_| {
            Failure::usage(anyhow::anyhow!(
                "the token has characters a header cannot carry"
            ))
        })?),
        None => None,
    };
    let addresses = addresses(&remote.coordinator);
    let tls = ClientTls {
        ca: remote.ca.clone(),
        identity: None,
        insecure: remote.insecure,
    };
    let mut answers = Vec::new();
    for url in &addresses {
        let endpoint = endpoint(url, &tls).map_err(Failure::usage)?;
        let channel = match endpoint.connect().await {
            Ok(channel) => channel,
            Err(e) => {
                answers.push(format!("{url}: {}", error_chain(&e)));
                continue;
            }
        };
        let mut client = ClientServiceClient::with_interceptor(
            channel,
            Credentials {
                token: token.clone(),
            },
        )
        .max_decoding_message_size(64 << 20);
        if addresses.len() == 1 {
            return Ok(client);
        }
        match client.ping(pb::PingRequest {}).await {
            Ok(_) => return Ok(client),
            Err(status) => answers.push(format!("{url}: {}", status.message())),
        }
    }
    Err(Failure::infrastructure(anyhow::anyhow!(
        "failed to reach a leading coordinator: {}",
        if answers.is_empty() {
            "no address given".to_string()
        } else {
            answers.join("; ")
        }
    )))
}

/// A status from the coordinator as an exit code: its refusals of our input are usage errors.
pub fn status_failure(what: &str, status: tonic::Status) -> Failure {
    let error = anyhow::anyhow!("{what}: {} ({:?})", status.message(), status.code());
    let lost = matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    );
    let failure = match status.code() {
        tonic::Code::InvalidArgument
        | tonic::Code::NotFound
        | tonic::Code::AlreadyExists
        | tonic::Code::FailedPrecondition
        | tonic::Code::Unauthenticated
        | tonic::Code::PermissionDenied => Failure::usage(error),
        _ => Failure::infrastructure(error),
    };
    Failure {
        connection_lost: lost,
        ..failure
    }
}

/// Streams a bundle file to the coordinator in 1 MiB chunks.
pub async fn upload(
    client: &mut Client,
    path: &Path,
    digest: &str,
) -> Result<pb::UploadSourceResponse, Failure> {
    let mut file = tokio::fs::File::open(path).await.map_err(|e| {
        Failure::infrastructure(anyhow::anyhow!(
            "failed to open the bundle {}: {e}",
            path.display()
        ))
    })?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let digest = digest.to_string();
    let reader = tokio::spawn(async move {
        let mut buffer = vec![0u8; 1 << 20];
        let mut first = true;
        loop {
            let n = file.read(&mut buffer).await?;
            if n == 0 && !first {
                break;
            }
            let chunk = pb::SourceChunk {
                expected_digest: if first { digest.clone() } else { String::new() },
                data: buffer[..n].to_vec(),
            };
            first = false;
            if tx.send(chunk).await.is_err() || n == 0 {
                break;
            }
        }
        Ok::<(), std::io::Error>(())
    });
    let response = client
        .upload_source(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| status_failure("failed to upload the source", s))?
        .into_inner();
    reader
        .await
        .map_err(|e| Failure::infrastructure(anyhow::anyhow!("{e}")))?
        .map_err(|e| Failure::infrastructure(anyhow::anyhow!("failed to read the bundle: {e}")))?;
    Ok(response)
}
