//! shardci's reports: a finished run's results analysed into one value (`report`), rendered as
//! JSON, a self-contained HTML page, JUnit XML and a Markdown summary, and published with the
//! logs, the plan and the duration history to an object store (`ReportStore`), which also
//! answers retention (`shardci gc`).

pub mod report;

mod branches;
mod open;
mod retention;
mod store;
mod test_files;

pub use branches::{BASELINE_RUNS, branch_name};
pub use open::{StoreOpenError, is_store_url, open_report_store};
pub use retention::StoredRunSummary;
pub use store::{
    FinishedRun, LogStream, RegenerateError, Rendered, ReportStore, file_log_stream,
    local_report_store,
};
