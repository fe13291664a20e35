//! Airbyte's `metadata.yaml`: read what planning needs, tolerate everything else.
//!
//! Real metadata files are messy (numbers where strings are expected, missing optional
//! fields, fields nobody reads). Missing or odd values of fields planning does not need are
//! defaulted; a field it does need with an unusable value is an error naming the file and the
//! field path.

use yaml_rust2::{Yaml, YamlLoader};

use super::discover::MetadataError;

/// The fields of `metadata.yaml` that shardci uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AirbyteMetadata {
    pub docker_repository: Option<String>,
    pub docker_image_tag: Option<String>,
    pub connector_type: Option<String>,
    pub support_level: Option<String>,
    pub tags: Vec<String>,
    /// `None` when `connectorTestSuitesOptions` is absent (every suite enabled).
    pub test_suites: Option<Vec<String>>,
}

pub fn parse_metadata(path: &str, text: &str) -> Result<AirbyteMetadata, MetadataError> {
    let error = |field: &str, message: String| MetadataError {
        path: path.to_string(),
        field: (!field.is_empty()).then(|| field.to_string()),
        message,
    };
    let docs =
        YamlLoader::load_from_str(text).map_err(|e| error("", format!("not valid YAML: {e}")))?;
    let Some(doc) = docs.first() else {
        return Err(error(
            "",
            "the file is empty; expected a mapping with a `data` field".into(),
        ));
    };
    if doc.as_hash().is_none() {
        return Err(error(
            "",
            format!("expected a mapping at the top level, found {}", kind(doc)),
        ));
    }
    let data = &doc["data"];
    if data.as_hash().is_none() {
        return Err(error(
            "data",
            match data {
                Yaml::BadValue => "missing; Airbyte metadata keeps everything under `data`".into(),
                other => format!("expected a mapping, found {}", kind(other)),
            },
        ));
    }
    let text_field = |name: &str| scalar_text(&data[name]);
    let tags = match &data["tags"] {
        Yaml::Array(items) => items.iter().filter_map(scalar_text).collect(),
        _ => Vec::new(),
    };
    let test_suites = match &data["connectorTestSuitesOptions"] {
        Yaml::BadValue | Yaml::Null => None,
        Yaml::Array(items) => {
            let mut suites = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let field = format!("data.connectorTestSuitesOptions[{i}].suite");
                match &item["suite"] {
                    Yaml::String(s) => suites.push(s.clone()),
                    Yaml::BadValue => {
                        return Err(error(&field, "missing; each entry names a `suite`".into()));
                    }
                    other => {
                        return Err(error(
                            &field,
                            format!("expected a suite name, found {}", kind(other)),
                        ));
                    }
                }
            }
            Some(suites)
        }
        other => {
            return Err(error(
                "data.connectorTestSuitesOptions",
                format!(
                    "expected a list of {{suite: ...}} entries, found {}",
                    kind(other)
                ),
            ));
        }
    };
    let support_level = match &data["supportLevel"] {
        Yaml::BadValue | Yaml::Null => None,
        Yaml::String(s) => Some(s.to_ascii_lowercase()),
        other => {
            // Planning needs this field (archived connectors are never selected).
            return Err(error(
                "data.supportLevel",
                format!(
                    "expected a string such as \"certified\" or \"archived\", found {}",
                    kind(other)
                ),
            ));
        }
    };
    Ok(AirbyteMetadata {
        docker_repository: text_field("dockerRepository"),
        docker_image_tag: text_field("dockerImageTag"),
        connector_type: text_field("connectorType"),
        support_level,
        tags,
        test_suites,
    })
}

/// Text of a scalar, accepting numbers and booleans written without quotes (`dockerImageTag: 0.1`).
fn scalar_text(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn kind(value: &Yaml) -> &'static str {
    match value {
        Yaml::Real(_) => "a number",
        Yaml::Integer(_) => "an integer",
        Yaml::String(_) => "a string",
        Yaml::Boolean(_) => "a boolean",
        Yaml::Array(_) => "a list",
        Yaml::Hash(_) => "a mapping",
        Yaml::Alias(_) => "an alias",
        Yaml::Null => "null",
        Yaml::BadValue => "nothing",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_fields_planning_needs() {
        let meta = parse_metadata(
            "m.yaml",
            "data:\n  dockerRepository: airbyte/source-x\n  dockerImageTag: 0.1\n  supportLevel: Certified\n  tags: [language:python, cdk:low-code]\n  connectorTestSuitesOptions:\n    - suite: unitTests\n    - suite: acceptanceTests\n      testSecrets: []\n  extra: {whatever: true}\n",
        )
        .unwrap();
        assert_eq!(meta.docker_repository.as_deref(), Some("airbyte/source-x"));
        assert_eq!(meta.docker_image_tag.as_deref(), Some("0.1"));
        assert_eq!(meta.support_level.as_deref(), Some("certified"));
        assert_eq!(meta.tags, vec!["language:python", "cdk:low-code"]);
        assert_eq!(
            meta.test_suites,
            Some(vec!["unitTests".to_string(), "acceptanceTests".to_string()])
        );
    }

    #[test]
    fn tolerates_missing_optional_fields() {
        let meta = parse_metadata("m.yaml", "data:\n  name: X\n").unwrap();
        assert_eq!(meta, AirbyteMetadata::default());
    }

    #[test]
    fn names_the_file_and_field_when_a_needed_field_is_unusable() {
        let err = parse_metadata(
            "c/metadata.yaml",
            "data:\n  connectorTestSuitesOptions: true\n",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "c/metadata.yaml: field data.connectorTestSuitesOptions: expected a list of {suite: ...} entries, found a boolean"
        );
        let err = parse_metadata(
            "c/metadata.yaml",
            "data:\n  connectorTestSuitesOptions:\n    - {testSecrets: []}\n",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("data.connectorTestSuitesOptions[0].suite"),
            "{err}"
        );
    }

    #[test]
    fn rejects_yaml_that_is_not_yaml_or_lacks_data() {
        let err = parse_metadata("m.yaml", "data: [unclosed\n").unwrap_err();
        assert!(
            err.to_string().starts_with("m.yaml: not valid YAML"),
            "{err}"
        );
        let err = parse_metadata("m.yaml", "metadataSpecVersion: 1.0\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "m.yaml: field data: missing; Airbyte metadata keeps everything under `data`"
        );
        assert!(parse_metadata("m.yaml", "").is_err());
        assert!(parse_metadata("m.yaml", "- a list\n").is_err());
    }
}
