//! `shardci connectors list`.

use std::collections::BTreeSet;

use serde_json::json;
use shardci_planning::plan::{FileClass, PlanError, Workspace, classify};
use shardci_planning::repo::Connector;

use super::plan::filters;
use crate::args::ListArgs;
use crate::exit::{Code, Failure};

pub fn list(args: ListArgs) -> Result<Code, Failure> {
    let filters = filters(&args.filters)?;
    let workspace = Workspace::open(&args.repo, None)?;
    let modified: Option<BTreeSet<String>> = if args.modified {
        Some(modified_connectors(&workspace, args.base.as_deref())?)
    } else {
        if args.base.is_some() {
            return Err(Failure::usage(anyhow::anyhow!(
                "--base only applies with --modified"
            )));
        }
        None
    };
    let connectors: Vec<&Connector> = workspace
        .connectors
        .all()
        .iter()
        .filter(|c| filters.keeps(c))
        .filter(|c| modified.as_ref().is_none_or(|m| m.contains(&c.name)))
        .collect();
    if args.json {
        let items: Vec<_> = connectors
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "dir": c.dir,
                    "language": c.language,
                    "type": c.connector_type,
                    "version": c.version,
                    "support_level": c.support_level,
                    "docker_repository": c.docker_repository,
                    "enabled_suites": suites(c, &workspace),
                    "docs_page": c.docs_page,
                })
            })
            .collect();
        let text = serde_json::to_string_pretty(&items).map_err(Failure::infrastructure)?;
        println!("{text}");
        return Ok(Code::Success);
    }
    let rows: Vec<[String; 5]> = connectors
        .iter()
        .map(|c| {
            [
                c.name.clone(),
                c.language.to_string(),
                c.version.clone().unwrap_or_else(|| "-".into()),
                c.support_level.clone().unwrap_or_else(|| "-".into()),
                suites(c, &workspace).join(","),
            ]
        })
        .collect();
    let header = ["NAME", "LANGUAGE", "VERSION", "SUPPORT", "SUITES"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
    eprintln!("{} connector(s)", rows.len());
    Ok(Code::Success)
}

/// Test types the connector's metadata enables (every configured suite if unrestricted).
fn suites(connector: &Connector, workspace: &Workspace) -> Vec<String> {
    workspace
        .config
        .test_types
        .values()
        .filter(|t| t.suite.as_ref().is_none_or(|s| connector.suite_enabled(s)))
        .map(|t| t.name.clone())
        .collect()
}

fn modified_connectors(
    workspace: &Workspace,
    base: Option<&str>,
) -> Result<BTreeSet<String>, Failure> {
    let git = &workspace.git;
    let default = &workspace.config.default_branch;
    let base = match base {
        Some(b) => b.to_string(),
        None => [format!("origin/{default}"), default.clone()]
            .into_iter()
            .find(|r| git.ref_exists(r))
            .ok_or_else(|| {
                Failure::usage(anyhow::anyhow!(
                    "no --base given, and neither origin/{default} nor {default} exists"
                ))
            })?,
    };
    let base_commit = git.resolve(&base).map_err(PlanError::from)?;
    let head = git.resolve("HEAD").map_err(PlanError::from)?;
    let merge_base = git
        .merge_base(&base_commit, &head)
        .map_err(PlanError::from)?;
    let changes = git
        .diff_working_tree(&merge_base)
        .map_err(PlanError::from)?;
    Ok(classify(&workspace.config, &workspace.connectors, &changes)
        .into_iter()
        .filter_map(|f| match f.class {
            FileClass::Connector { connector, .. } | FileClass::DocsPage { connector } => {
                Some(connector)
            }
            _ => None,
        })
        .collect())
}
