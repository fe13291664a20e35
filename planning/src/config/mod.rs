//! `shardci.toml`: the schema, its loading and validation, and the checked [`Config`] the
//! planner reads.

mod error;
mod load;
mod model;
mod units;

pub use error::{ConfigError, line_column};
pub use load::{Axis, Template, compile_glob};
pub use load::{CONFIG_FILE, Config, GlobList, Language, Rule, SharedComponent, TestType};
pub use model::{
    ConnectorOverride, Expand, ImageBuildConfig, ImageConfig, LabelsConfig, Layout,
    RegressionConfig, ResourcesConfig, ShardingConfig, StepFields,
};
pub use units::{Bytes, Seconds, parse_duration, parse_size};
