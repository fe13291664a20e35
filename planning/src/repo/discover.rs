//! Connector discovery: find every connector of the monorepo (Airbyte's layout or a generic
//! one), detect its language, and attach its docs page.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::airbyte::parse_metadata;
use super::connector::Connector;
use super::tree::SourceTree;
use crate::config::{Config, Language, Layout, compile_glob};

/// A connector metadata file that cannot be used, naming the file and (when known) the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {}{message}", field.as_ref().map(|f| format!("field {f}: ")).unwrap_or_default())]
pub struct MetadataError {
    pub path: String,
    pub field: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// Every broken metadata file at once, so one run shows them all.
    #[error("{} connector metadata file(s) cannot be used:\n  {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Metadata(Vec<MetadataError>),
    #[error("two connectors are named {name}: {first} and {second}")]
    DuplicateName {
        name: String,
        first: String,
        second: String,
    },
}

/// The connectors of a monorepo, sorted by name.
#[derive(Debug, Clone, Default)]
pub struct Connectors {
    list: Vec<Connector>,
    /// Connector folder -> index, to find the owner of a path by its ancestors.
    by_dir: BTreeMap<String, usize>,
    /// Docs page -> index.
    by_docs: BTreeMap<String, usize>,
    /// What discovery read but doubts (an unknown support level), each naming file:line.
    pub warnings: Vec<String>,
}

impl Connectors {
    pub fn new(mut list: Vec<Connector>) -> Result<Self, DiscoveryError> {
        list.sort_by(|a, b| a.name.cmp(&b.name));
        for pair in list.windows(2) {
            if pair[0].name == pair[1].name {
                return Err(DiscoveryError::DuplicateName {
                    name: pair[0].name.clone(),
                    first: pair[0].dir.clone(),
                    second: pair[1].dir.clone(),
                });
            }
        }
        let by_dir = list
            .iter()
            .enumerate()
            .map(|(i, c)| (c.dir.clone(), i))
            .collect();
        let by_docs = list
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.docs_page.clone().map(|d| (d, i)))
            .collect();
        Ok(Self {
            list,
            by_dir,
            by_docs,
            warnings: Vec::new(),
        })
    }

    pub fn all(&self) -> &[Connector] {
        &self.list
    }

    /// Records, per connector name, the version released on the base where it differs.
    pub fn set_released_versions(&mut self, released: &BTreeMap<String, String>) {
        for connector in &mut self.list {
            if let Some(version) = released.get(&connector.name)
                && connector.version.as_ref() != Some(version)
            {
                connector.released_version = Some(version.clone());
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&Connector> {
        self.list
            .binary_search_by(|c| c.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.list[i])
    }

    /// The connector whose folder holds `path`, and the path relative to that folder.
    pub fn owner_of<'p>(&self, path: &'p str) -> Option<(&Connector, &'p str)> {
        let mut end = path.len();
        while let Some(i) = path[..end].rfind('/') {
            if let Some(&idx) = self.by_dir.get(&path[..i]) {
                return Some((&self.list[idx], &path[i + 1..]));
            }
            end = i;
        }
        None
    }

    /// The connector whose docs page `path` is.
    pub fn docs_owner(&self, path: &str) -> Option<&Connector> {
        self.by_docs.get(path).map(|&i| &self.list[i])
    }
}

/// Finds the connectors of the monorepo described by `config`.
pub fn discover(config: &Config, tree: &dyn SourceTree) -> Result<Connectors, DiscoveryError> {
    let (list, warnings) = match config.layout {
        Layout::Airbyte => discover_airbyte(config, tree)?,
        Layout::Generic => (discover_generic(config, tree)?, Vec::new()),
    };
    let mut connectors = Connectors::new(list)?;
    connectors.warnings = warnings;
    Ok(connectors)
}

fn discover_airbyte(
    config: &Config,
    tree: &dyn SourceTree,
) -> Result<(Vec<Connector>, Vec<String>), DiscoveryError> {
    let base = &config.connectors_dir;
    let dirs: Vec<String> = tree
        .subdirs(base)
        .into_iter()
        .map(|name| format!("{base}/{name}"))
        .filter(|dir| tree.is_file(&format!("{dir}/metadata.yaml")))
        .collect();
    let paths: Vec<String> = dirs.iter().map(|d| format!("{d}/metadata.yaml")).collect();
    let contents = tree.read_many(&paths);
    let mut connectors = Vec::new();
    let mut errors = Vec::new();
    let mut texts = BTreeMap::new();
    for ((dir, path), content) in dirs.iter().zip(&paths).zip(contents) {
        let name = dir.rsplit('/').next().unwrap_or(dir).to_string();
        let parsed = content
            .map_err(|e| MetadataError {
                path: path.clone(),
                field: None,
                message: format!("failed to read: {e}"),
            })
            .and_then(|bytes| {
                let text = String::from_utf8(bytes).map_err(|_| MetadataError {
                    path: path.clone(),
                    field: None,
                    message: "not UTF-8 text".into(),
                })?;
                let parsed = parse_metadata(path, &text);
                texts.insert(path.clone(), text);
                parsed
            });
        match parsed {
            Err(e) => errors.push(e),
            Ok(meta) => {
                let connector_type = meta.connector_type.or_else(|| type_from_name(&name));
                let docs_page = connector_type
                    .as_deref()
                    .map(|t| docs_page_path(&config.docs_dir, t, &name))
                    .filter(|p| tree.is_file(p));
                let language = detect_language(tree, dir, &name, &meta.tags);
                connectors.push(Connector {
                    docker_repository: meta
                        .docker_repository
                        .unwrap_or_else(|| format!("airbyte/{name}")),
                    version: meta.docker_image_tag,
                    released_version: None,
                    support_level: meta.support_level,
                    tags: meta.tags,
                    enabled_suites: meta.test_suites,
                    depends_on: Vec::new(),
                    metadata_path: path.clone(),
                    docs_page,
                    connector_type,
                    language,
                    dir: dir.clone(),
                    name,
                });
            }
        }
    }
    if errors.is_empty() {
        let warnings = support_level_warnings(&connectors, &texts);
        Ok((connectors, warnings))
    } else {
        Err(DiscoveryError::Metadata(errors))
    }
}

/// The support levels Airbyte's metadata schema knows.
const SUPPORT_LEVELS: [&str; 3] = ["community", "certified", "archived"];

/// Support levels shardci does not know are read (they only matter when `archived`), but a
/// typo of `archived` would silently keep a connector in plans: each is named, at its line.
fn support_level_warnings(
    connectors: &[Connector],
    texts: &BTreeMap<String, String>,
) -> Vec<String> {
    connectors
        .iter()
        .filter_map(|c| {
            let level = c.support_level.as_deref()?;
            if SUPPORT_LEVELS.contains(&level) {
                return None;
            }
            let line = texts
                .get(&c.metadata_path)
                .and_then(|text| text.lines().position(|l| l.contains("supportLevel")))
                .map_or(String::new(), |i| format!(":{}", i + 1));
            Some(format!(
                "{}{line}: supportLevel {level:?} is not one of {} (read as not archived)",
                c.metadata_path,
                SUPPORT_LEVELS.join(", ")
            ))
        })
        .collect()
}

/// `docs/integrations/sources/faker.md` for `source-faker`.
fn docs_page_path(docs_dir: &str, connector_type: &str, name: &str) -> String {
    let short = name
        .strip_prefix(&format!("{connector_type}-"))
        .unwrap_or(name);
    format!("{docs_dir}/{connector_type}s/{short}.md")
}

fn type_from_name(name: &str) -> Option<String> {
    ["source", "destination"]
        .into_iter()
        .find(|t| name.starts_with(&format!("{t}-")))
        .map(str::to_string)
}

/// Airbyte's order: a root `manifest.yaml` means manifest-only; `<snake_name>/manifest.yaml`
/// low-code; `setup.py`/`pyproject.toml` python; `src/main/java|kotlin` java; then a
/// `language:<x>` tag; else generic.
pub fn detect_language(tree: &dyn SourceTree, dir: &str, name: &str, tags: &[String]) -> Language {
    let snake = name.replace('-', "_");
    if tree.is_file(&format!("{dir}/manifest.yaml")) {
        Language::ManifestOnly
    } else if tree.is_file(&format!("{dir}/{snake}/manifest.yaml")) {
        Language::LowCode
    } else if tree.is_file(&format!("{dir}/setup.py"))
        || tree.is_file(&format!("{dir}/pyproject.toml"))
    {
        Language::Python
    } else if tree.is_dir(&format!("{dir}/src/main/java"))
        || tree.is_dir(&format!("{dir}/src/main/kotlin"))
    {
        Language::Java
    } else {
        tags.iter()
            .filter_map(|t| t.strip_prefix("language:"))
            .find_map(|l| l.parse().ok())
            .unwrap_or(Language::Generic)
    }
}

/// The generic layout's small metadata file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GenericMetadata {
    name: Option<String>,
    language: Option<String>,
    version: Option<String>,
    support_level: Option<String>,
    #[serde(rename = "type")]
    connector_type: Option<String>,
    image: Option<String>,
    test_suites: Option<Vec<String>>,
    #[serde(default)]
    tags: Vec<String>,
    docs: Option<String>,
    /// Components (by name) whose changes also test this one.
    #[serde(default)]
    depends_on: Vec<String>,
}

fn discover_generic(
    config: &Config,
    tree: &dyn SourceTree,
) -> Result<Vec<Connector>, DiscoveryError> {
    let Some(pattern) = &config.metadata_glob else {
        return Ok(Vec::new());
    };
    let matcher = compile_glob(pattern)
        .map(|g| g.compile_matcher())
        .map_err(|e| {
            DiscoveryError::Metadata(vec![MetadataError {
                path: config.source_path.display().to_string(),
                field: Some("discovery.metadata".into()),
                message: e.to_string(),
            }])
        })?;
    let literal_prefix: String = pattern
        .split('/')
        .take_while(|part| !part.contains(['*', '?', '[', '{']))
        .collect::<Vec<_>>()
        .join("/");
    let paths: Vec<String> = tree
        .files_under(&literal_prefix)
        .into_iter()
        .filter(|p| matcher.is_match(p))
        .collect();
    let contents = tree.read_many(&paths);
    let mut connectors = Vec::new();
    let mut errors = Vec::new();
    for (path, content) in paths.iter().zip(contents) {
        let dir = path.rsplit_once('/').map_or("", |(d, _)| d).to_string();
        let fail = |message: String| MetadataError {
            path: path.clone(),
            field: None,
            message,
        };
        let parsed = content
            .map_err(|e| fail(format!("failed to read: {e}")))
            .and_then(|b| String::from_utf8(b).map_err(|_| fail("not UTF-8 text".into())))
            .and_then(|text| {
                toml::from_str::<GenericMetadata>(&text).map_err(|e| {
                    let (line, column) =
                        crate::config::line_column(&text, e.span().map_or(0, |s| s.start));
                    fail(format!("{line}:{column}: {}", e.message().trim_end()))
                })
            });
        let meta = match parsed {
            Ok(meta) => meta,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let name = meta
            .name
            .clone()
            .unwrap_or_else(|| dir.rsplit('/').next().unwrap_or(&dir).to_string());
        let language = match meta.language.as_deref() {
            Some(l) => match l.parse() {
                Ok(l) => l,
                Err(e) => {
                    errors.push(MetadataError {
                        path: path.clone(),
                        field: Some("language".into()),
                        message: e,
                    });
                    continue;
                }
            },
            None => detect_language(tree, &dir, &name, &meta.tags),
        };
        let docs_page = meta.docs.map(|d| format!("{dir}/{d}"));
        connectors.push(Connector {
            docker_repository: meta.image.unwrap_or_else(|| format!("shardci/{name}")),
            version: meta.version,
            released_version: None,
            support_level: meta.support_level.map(|s| s.to_ascii_lowercase()),
            connector_type: meta.connector_type,
            tags: meta.tags,
            enabled_suites: meta.test_suites,
            depends_on: meta.depends_on,
            metadata_path: path.clone(),
            docs_page,
            language,
            dir,
            name,
        });
    }
    let known: std::collections::BTreeSet<&str> = connectors
        .iter()
        .map(|c| c.name.as_str())
        .chain(config.shared.iter().map(|s| s.name.as_str()))
        .collect();
    for connector in &connectors {
        for dep in &connector.depends_on {
            if !known.contains(dep.as_str()) {
                errors.push(MetadataError {
                    path: connector.metadata_path.clone(),
                    field: Some("depends_on".into()),
                    message: format!(
                        "{dep:?} is neither a discovered component nor a shared component"
                    ),
                });
            }
        }
    }
    if errors.is_empty() {
        Ok(connectors)
    } else {
        Err(DiscoveryError::Metadata(errors))
    }
}
