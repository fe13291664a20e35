//! Building images locally: there may be no registry to pull from, so the images steps run in
//! are built from Dockerfiles in the repository (plus files taken from the host, such as a
//! static busybox), and connector images are built by their `build` step.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::query_parameters::BuildImageOptionsBuilder;
use futures_util::StreamExt;

use crate::logs::LogSink;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The build ran and failed (a bad Dockerfile, a failing RUN).
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Engine(#[from] BollardError),
}

/// An image the project builds itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectImage {
    pub tag: String,
    pub context: PathBuf,
    /// Relative to the context.
    pub dockerfile: String,
    /// Files copied from the host into the build context: (name in context, host path).
    pub host_files: Vec<(String, PathBuf)>,
}

/// An image holding nothing but Debian's static busybox (installed as `/bin/*`): what steps
/// and tests run in where no registry can be reached. Writes its Dockerfile into `dir`.
pub fn busybox_image(tag: &str, dir: &Path) -> std::io::Result<ProjectImage> {
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nENV PATH=/bin\n",
    )?;
    Ok(ProjectImage {
        tag: tag.to_string(),
        context: dir.to_path_buf(),
        dockerfile: "Dockerfile".into(),
        host_files: vec![("busybox".into(), PathBuf::from("/bin/busybox"))],
    })
}

/// A tar of `context` (and extra host files) to send to the Engine as a build context.
pub fn tar_context(context: &Path, host_files: &[(String, PathBuf)]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder.append_dir_all(".", context)?;
    for (name, host) in host_files {
        let mut file = std::fs::File::open(host)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", host.display())))?;
        builder.append_file(name, &mut file)?;
    }
    builder.into_inner()
}

/// Builds `tag` from a packed context, streaming the build output to `logs`.
pub async fn build(
    docker: &Docker,
    tag: &str,
    dockerfile: &str,
    context_tar: Vec<u8>,
    labels: &HashMap<String, String>,
    logs: &mut dyn LogSink,
) -> Result<(), BuildError> {
    let options = BuildImageOptionsBuilder::default()
        .dockerfile(dockerfile)
        .t(tag)
        .rm(true)
        .forcerm(true)
        .labels(labels)
        .build();
    let mut stream =
        docker.build_image(options, None, Some(bollard::body_full(context_tar.into())));
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(text) = info.stream {
                    logs.write(text.as_bytes());
                }
                if let Some(error) = info.error_detail.and_then(|d| d.message) {
                    return Err(BuildError::Failed(error));
                }
            }
            Err(BollardError::DockerStreamError { error }) => {
                return Err(BuildError::Failed(error));
            }
            Err(e) => return Err(e.into()),
        }
    }
    // The classic builder reports some failures only by not producing the image.
    match docker.inspect_image(tag).await {
        Ok(_) => Ok(()),
        Err(BollardError::DockerResponseServerError {
            status_code: 404, ..
        }) => Err(BuildError::Failed(format!(
            "the build produced no image {tag}"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Builds `image` unless the Engine already has it. Returns whether it built.
pub async fn ensure(
    docker: &Docker,
    image: &ProjectImage,
    logs: &mut dyn LogSink,
) -> Result<bool, BuildError> {
    match docker.inspect_image(&image.tag).await {
        Ok(_) => return Ok(false),
        Err(BollardError::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(e) => return Err(e.into()),
    }
    let tar = tar_context(&image.context, &image.host_files).map_err(|e| {
        BuildError::Failed(format!("failed to pack {}: {e}", image.context.display()))
    })?;
    let labels = HashMap::from([(
        crate::executor::LABEL_MANAGED.to_string(),
        "true".to_string(),
    )]);
    build(docker, &image.tag, &image.dockerfile, tar, &labels, logs).await?;
    Ok(true)
}
