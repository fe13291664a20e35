//! Comparisons of a control and a target version's outputs.

pub mod catalog;
pub mod json_diff;
pub mod records;
