//! Reports: a run's results analysed once ([`analyze`]) and rendered as JSON, a
//! self-contained HTML page, JUnit XML and a Markdown summary. Everything here is pure.

mod analyze;
mod ansi;
mod baseline;
mod escape;
mod excerpt;
mod html;
mod junit;
mod markdown;
mod model;
mod test_cases;
mod timeline;
mod trend;

pub use analyze::{ReportInput, analyze, log_key, safe_key};
pub(crate) use baseline::concluded;
pub use baseline::verdict;
pub use excerpt::excerpt;
pub use html::render_html;
pub use junit::render_junit;
pub use markdown::render_markdown;
pub use model::{
    Baseline, BaselineRun, Cell, ComparedWith, Counts, JobEntry, JobMeta, LostAttempt, RunReport,
    Skipped, StepEntry, StoredRun, Verdict,
};
pub use test_cases::{FAILING_CASES_KEPT, TestCase, TestSummary, read_junit};
pub use timeline::{Bar, Lane, Timeline, render_svg};
