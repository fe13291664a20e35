//! `shardci report`: reports are a pure function of a run's stored results and logs, so they
//! can be regenerated (after a renderer improved, or a report was lost) at any time.

use shardci_reports::{RegenerateError, ReportStore, is_store_url, open_report_store};

use crate::args::{ReportArgs, ReportFormat};
use crate::exit::{Code, Failure};

/// The store `--store` names, else the repository's local one; it must exist.
pub fn existing_store(store: Option<&str>, repo: &std::path::Path) -> Result<ReportStore, Failure> {
    let location = store
        .map(str::to_string)
        .unwrap_or_else(|| repo.join(".shardci/store").display().to_string());
    if !is_store_url(&location) && !std::path::Path::new(&location).is_dir() {
        return Err(Failure::usage(anyhow::anyhow!(
            "no report store at {location} (pass --store or --repo)"
        )));
    }
    open_report_store(&location).map_err(|e| Failure::usage(anyhow::anyhow!(e)))
}

pub fn run(args: ReportArgs) -> Result<Code, Failure> {
    let store = existing_store(args.store.as_deref(), &args.repo)?;
    let rendered = super::runtime()?
        .block_on(store.regenerate(&args.run))
        .map_err(|e| match e {
            RegenerateError::NotFound(_) | RegenerateError::Corrupt(..) => {
                Failure::usage(anyhow::anyhow!(e))
            }
            RegenerateError::Store(_) => Failure::infrastructure(anyhow::anyhow!(e)),
        })?;
    let path = rendered
        .html_url
        .strip_prefix("file://")
        .unwrap_or(&rendered.html_url)
        .to_string();
    match args.format {
        ReportFormat::Html => println!("{path}"),
        ReportFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&rendered.report).unwrap_or_default()
        ),
        ReportFormat::Junit => print!("{}", rendered.junit),
        ReportFormat::Md => print!("{}", rendered.markdown),
    }
    if args.open {
        // Best effort: a headless machine has no browser, and that is not an error.
        let _ = std::process::Command::new("xdg-open").arg(&path).spawn();
    }
    Ok(Code::Success)
}
