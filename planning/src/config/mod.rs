//! `shardci.toml`: the schema, its loading and validation, and the checked [`Config`] the
//! planner reads.

mod error;
mod load;
mod model;
mod starter;
mod triggers;
mod units;

pub use error::{ConfigError, line_column};
pub use load::{Axis, Template, compile_glob};
pub use load::{CONFIG_FILE, Config, GlobList, Language, Rule, SharedComponent, TestType};
pub use model::{
    ConnectorOverride, Direction, Expand, ImageBuildConfig, ImageConfig, Layout, RegressionConfig,
    ResourcesConfig, ShardingConfig, StepFields, Unclassified,
};
pub use starter::{AIRBYTE_CONNECTORS_DIR, DetectedLayout, detect_layout, starter_config};
pub use triggers::{
    Conditions, Effects, EventTrigger, GraphPolicy, Group, LabelTrigger, Target, default_labels,
};
pub use units::{Bytes, Seconds, parse_duration, parse_size};
