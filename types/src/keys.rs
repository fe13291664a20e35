//! Names every side must spell the same way: where a step's log and artifacts live in the
//! store (DESIGN.md, storage layout) and how a matrix value reaches a step's environment.

/// The environment variable through which a job's matrix value for `axis` reaches its steps
/// (`python` -> `SHARDCI_MATRIX_PYTHON`). Plans share one step list across matrix points, so
/// every runner must export these the same way.
pub fn matrix_env_var(axis: &str) -> String {
    let name: String = axis
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("SHARDCI_MATRIX_{name}")
}

/// A job id as one object-store key segment: ids contain `/`, `[`, `=` and `,`.
pub fn job_key(job: &str) -> String {
    job.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Where a step's log and artifacts live in the store; the coordinator and the workers that
/// upload directly must agree on it.
pub fn step_prefix(run: &str, job: &str, step: &str) -> String {
    format!("runs/{run}/jobs/{}/{step}", job_key(job))
}

/// The key of a step's log in the store: `log.txt` for the attempt that decided the job,
/// `log.attempt-<n>.txt` for earlier attempts, so a retried job's attempts stay apart.
pub fn log_key(run: &str, job: &str, step: &str, attempt: Option<u32>) -> String {
    match attempt {
        None => format!("{}/log.txt", step_prefix(run, job, step)),
        Some(n) => format!("{}/log.attempt-{n}.txt", step_prefix(run, job, step)),
    }
}

/// Whether a worker-reported artifact path stays inside its step's `artifacts/` folder.
pub fn valid_artifact_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 1024
        && !path.starts_with('/')
        && !path.contains('\\')
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

#[cfg(test)]
mod tests {
    #[test]
    fn artifact_paths_stay_in_their_folder() {
        assert!(super::valid_artifact_path("reports/junit.xml"));
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a\\b",
            "./a",
        ] {
            assert!(!super::valid_artifact_path(bad), "{bad:?}");
        }
        assert_eq!(
            super::step_prefix("r1", "c/unit[py=3.11]", "unit"),
            "runs/r1/jobs/c_unit_py_3.11_/unit"
        );
    }

    #[test]
    fn matrix_axes_become_upper_case_variables() {
        assert_eq!(super::matrix_env_var("python"), "SHARDCI_MATRIX_PYTHON");
        assert_eq!(
            super::matrix_env_var("db-backend.v2"),
            "SHARDCI_MATRIX_DB_BACKEND_V2"
        );
    }
}
