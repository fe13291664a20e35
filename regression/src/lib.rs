//! Connector regression tests: a control and a target version of a connector run the same
//! Airbyte protocol commands (spec, check, discover, read, read with state) in containers;
//! every output is kept on disk as it streams in, secrets masked; the outputs are compared
//! (records externally, in bounded memory) and the target is validated against what the
//! protocol promises; the verdicts land in a report (JSON, HTML, JUnit, Markdown).
//!
//! `session::run` is the whole run; `runner::ConnectorRunner` is where containers come from.

pub mod capture;
pub mod checks;
pub mod compare;
pub mod mask;
pub mod model;
pub mod protocol;
pub mod report;
pub mod runner;
pub mod schema;
pub mod session;

pub use capture::{CommandOutput, Exit};
pub use model::{Check, CheckKind, CheckStatus, Command, RegressionReport, Side};
pub use runner::{Confinement, ConnectorRunner, DockerRunner, Invocation};
pub use session::{Request, run};
