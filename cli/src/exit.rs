//! Exit codes (0 success, 1 the run failed, 2 usage or configuration, 3 infrastructure) and
//! the mapping from library errors to them, in one place.

use shardci_planning::plan::PlanError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Success = 0,
    RunFailed = 1,
    Usage = 2,
    Infrastructure = 3,
}

impl From<Code> for std::process::ExitCode {
    fn from(code: Code) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}

/// An error on its way to becoming an exit code and a message.
#[derive(Debug)]
pub struct Failure {
    pub code: Code,
    pub error: anyhow::Error,
    /// The coordinator was lost on the way (UNAVAILABLE, a reset): asking again, maybe of
    /// another coordinator, may succeed.
    pub connection_lost: bool,
}

impl Failure {
    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: Code::Usage,
            error: error.into(),
            connection_lost: false,
        }
    }

    pub fn infrastructure(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: Code::Infrastructure,
            error: error.into(),
            connection_lost: false,
        }
    }
}

impl From<shardci_planning::config::ConfigError> for Failure {
    fn from(error: shardci_planning::config::ConfigError) -> Self {
        Self {
            code: Code::Usage,
            error: error.into(),
            connection_lost: false,
        }
    }
}

impl From<PlanError> for Failure {
    fn from(error: PlanError) -> Self {
        let code = if error.is_usage() {
            Code::Usage
        } else {
            Code::Infrastructure
        };
        Self {
            code,
            error: error.into(),
            connection_lost: false,
        }
    }
}
