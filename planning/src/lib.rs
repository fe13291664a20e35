//! shardci's planner: from a repository, a diff, the event and labels, what must run and why.
//!
//! Everything a CLI or a trigger needs to plan without a server: `config` (the `shardci.toml`
//! model and its validation), `repo` (connector discovery, git changes, source bundles) and
//! `plan` (selection with reasons, modes, matrix expansion, step DAGs, duration estimates,
//! sharding). Planning is synchronous and pure over its inputs; only `repo` reads files and runs
//! git.

pub mod config;
pub mod plan;
pub mod repo;
