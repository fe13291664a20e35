//! A step's identity: a digest of everything that can change what running it gives. Two steps
//! with the same key are the same work, whichever job, shard, worker or run asks for it, so one
//! execution's success can stand for the others (docs/design.md, "Build once, test many").

use sha2::{Digest, Sha256};

use crate::StepSpec;

/// Changes whenever what goes into a key changes, so old cache entries stop matching.
pub const STEP_KEY_VERSION: &str = "shardci-step-key/1";

/// The key of `step` when its image resolved to `image_id` on the worker, the files its
/// `inputs` match hash to `inputs_digest`, and the steps it depends on have the keys
/// `dependencies` (in any order).
///
/// In the key: the step's name, image (as named and as resolved), command, working folder,
/// environment (which holds the matrix values the step reads), secret *names*, timeout,
/// resource limits, network, user, capabilities, root filesystem mode, the image it builds,
/// its artifact and input globs, the content of its inputs and its dependencies' keys. Not in
/// it: the job, shard, attempt and run that ask for it, secret values, its dependencies'
/// names (their keys stand for them) and whether it may be cached.
pub fn step_key(
    step: &StepSpec,
    image_id: &str,
    inputs_digest: &str,
    dependencies: &[&str],
) -> String {
    let mut digest = Sha256::new();
    // Every field is its name and value, each length-prefixed, so no two different field lists
    // encode to the same bytes.
    let mut field = |name: &str, value: &[u8]| {
        for part in [name.as_bytes(), value] {
            digest.update((part.len() as u64).to_le_bytes());
            digest.update(part);
        }
    };
    field("version", STEP_KEY_VERSION.as_bytes());
    field("name", step.name.as_bytes());
    field("image", step.image.as_bytes());
    field("image_id", image_id.as_bytes());
    field("command", step.command.as_bytes());
    field("workdir", step.workdir.as_bytes());
    let mut env: Vec<&(String, String)> = step.env.iter().collect();
    env.sort();
    for (name, value) in env {
        field("env", name.as_bytes());
        field("env_value", value.as_bytes());
    }
    let mut secrets: Vec<&String> = step.secrets.iter().collect();
    secrets.sort();
    for name in secrets {
        field("secret", name.as_bytes());
    }
    field(
        "timeout_ms",
        &(step.timeout.as_millis() as u64).to_le_bytes(),
    );
    field("memory", &step.resources.memory_bytes.to_le_bytes());
    field("milli_cpus", &step.resources.milli_cpus.to_le_bytes());
    field("pids", &step.resources.pids.to_le_bytes());
    field("network", &[u8::from(step.network)]);
    field("user", step.user.as_deref().unwrap_or("").as_bytes());
    for cap in &step.cap_add {
        field("cap_add", cap.as_bytes());
    }
    field("read_only_root", &[u8::from(step.read_only_root)]);
    if let Some(build) = &step.build_image {
        field("build_context", build.context.as_bytes());
        field("build_dockerfile", build.dockerfile.as_bytes());
        field("build_tag", build.tag.as_bytes());
    }
    if let Some(r) = &step.regression {
        field("regression_control", r.control_image.as_bytes());
        field("regression_target", r.target_image.as_bytes());
        field(
            "regression_config_file",
            r.config_file.as_deref().unwrap_or("").as_bytes(),
        );
        field(
            "regression_config_secret",
            r.config_secret.as_deref().unwrap_or("").as_bytes(),
        );
        for command in &r.commands {
            field("regression_command", command.as_bytes());
        }
        field(
            "regression_catalog",
            r.catalog.as_deref().unwrap_or("").as_bytes(),
        );
    }
    for glob in &step.artifacts {
        field("artifact", glob.as_bytes());
    }
    for glob in &step.inputs {
        field("input", glob.as_bytes());
    }
    field("inputs_digest", inputs_digest.as_bytes());
    let mut dependencies = dependencies.to_vec();
    dependencies.sort_unstable();
    for key in dependencies {
        field("dependency", key.as_bytes());
    }
    hex::encode(digest.finalize())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ImageBuild;

    fn base() -> StepSpec {
        StepSpec {
            env: vec![
                ("SHARDCI_CONNECTOR".into(), "source-a".into()),
                ("SHARDCI_MATRIX_PYTHON".into(), "3.11".into()),
            ],
            secrets: vec!["TOKEN".into()],
            inputs: vec!["connectors/source-a/**".into()],
            artifacts: vec!["dist/**".into()],
            ..StepSpec::new("build", "busybox:1", "make")
        }
    }

    fn key(step: &StepSpec) -> String {
        step_key(step, "sha256:aaa", "inputs-1", &["dep-1", "dep-2"])
    }

    #[test]
    fn every_input_of_a_step_changes_its_key() {
        let original = key(&base());
        type Change = fn(&mut StepSpec);
        let changes: Vec<(&str, Change)> = vec![
            ("name", |s| s.name = "unit".into()),
            ("image", |s| s.image = "busybox:2".into()),
            ("command", |s| s.command = "make all".into()),
            ("workdir", |s| s.workdir = "connectors/source-a".into()),
            ("env value", |s| s.env[1].1 = "3.12".into()),
            ("env name", |s| s.env[1].0 = "SHARDCI_MATRIX_PY".into()),
            ("env added", |s| s.env.push(("X".into(), String::new()))),
            ("secret name", |s| s.secrets = vec!["OTHER".into()]),
            ("timeout", |s| s.timeout = Duration::from_secs(1)),
            ("memory", |s| s.resources.memory_bytes += 1),
            ("cpus", |s| s.resources.milli_cpus += 1),
            ("pids", |s| s.resources.pids += 1),
            ("network", |s| s.network = true),
            ("user", |s| s.user = Some("1000".into())),
            ("cap_add", |s| s.cap_add = vec!["NET_ADMIN".into()]),
            ("root", |s| s.read_only_root = false),
            ("artifacts", |s| s.artifacts.clear()),
            ("inputs", |s| s.inputs.push("shared/**".into())),
            ("build_image", |s| {
                s.build_image = Some(ImageBuild {
                    context: ".".into(),
                    dockerfile: "Dockerfile".into(),
                    tag: "a:dev".into(),
                })
            }),
        ];
        for (what, change) in changes {
            let mut step = base();
            change(&mut step);
            assert_ne!(key(&step), original, "changing the {what} changes the key");
        }
        let step = base();
        assert_ne!(
            step_key(&step, "sha256:bbb", "inputs-1", &["dep-1", "dep-2"]),
            original,
            "the resolved image"
        );
        assert_ne!(
            step_key(&step, "sha256:aaa", "inputs-2", &["dep-1", "dep-2"]),
            original,
            "the inputs' content"
        );
        assert_ne!(
            step_key(&step, "sha256:aaa", "inputs-1", &["dep-1"]),
            original,
            "a dependency's key"
        );
    }

    #[test]
    fn what_does_not_change_a_step_s_result_leaves_its_key_alone() {
        let original = key(&base());
        let mut step = base();
        step.cache = !step.cache;
        step.depends_on = vec!["renamed-dependency".into()];
        step.env.reverse();
        assert_eq!(key(&step), original);
        assert_eq!(
            step_key(&base(), "sha256:aaa", "inputs-1", &["dep-2", "dep-1"]),
            original,
            "dependencies in another order"
        );
        assert_eq!(original.len(), 64);
    }
}
