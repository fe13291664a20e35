//! Matrix expansion: which points of the configured axes a job runs on, given the versions
//! mode. `all` crosses `cross` axes and pairs `zip` axes (Airflow's reduced matrix).

use crate::config::{Axis, Expand};

use super::model::Versions;

/// One matrix point: (axis, value) in axis declaration order.
pub type Point = Vec<(String, String)>;

/// The points for the axes that apply to a job; a single empty point when none apply.
pub fn points(axes: &[&Axis], versions: Versions) -> Vec<Point> {
    match versions {
        Versions::Default => vec![
            axes.iter()
                .map(|a| (a.name.clone(), a.default.clone()))
                .collect(),
        ],
        Versions::Latest => vec![
            axes.iter()
                .map(|a| (a.name.clone(), a.latest.clone()))
                .collect(),
        ],
        Versions::All => all_points(axes),
    }
}

fn all_points(axes: &[&Axis]) -> Vec<Point> {
    let zipped: Vec<&Axis> = axes
        .iter()
        .copied()
        .filter(|a| a.expand == Expand::Zip)
        .collect();
    // Zip axes advance together; a shorter one wraps around so every value of every axis runs.
    let zip_len = zipped.iter().map(|a| a.values.len()).max().unwrap_or(1);
    let zip_rows: Vec<Vec<(&str, &str)>> = (0..zip_len)
        .map(|i| {
            zipped
                .iter()
                .map(|a| (a.name.as_str(), a.values[i % a.values.len()].as_str()))
                .collect()
        })
        .collect();
    let mut rows: Vec<Vec<(&str, &str)>> = zip_rows;
    for axis in axes.iter().filter(|a| a.expand == Expand::Cross) {
        rows = rows
            .into_iter()
            .flat_map(|row| {
                axis.values.iter().map(move |v| {
                    let mut longer = row.clone();
                    longer.push((axis.name.as_str(), v.as_str()));
                    longer
                })
            })
            .collect();
    }
    // Present each point in axis declaration order.
    rows.into_iter()
        .map(|row| {
            axes.iter()
                .filter_map(|axis| {
                    row.iter()
                        .find(|(name, _)| *name == axis.name)
                        .map(|(n, v)| (n.to_string(), v.to_string()))
                })
                .collect()
        })
        .collect()
}

/// `connector/test_type[axis=value,...]`.
pub fn job_id(connector: &str, test_type: &str, point: &Point) -> String {
    if point.is_empty() {
        format!("{connector}/{test_type}")
    } else {
        let inner: Vec<String> = point.iter().map(|(a, v)| format!("{a}={v}")).collect();
        format!("{connector}/{test_type}[{}]", inner.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axis(name: &str, values: &[&str], expand: Expand) -> Axis {
        Axis {
            name: name.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
            default: values[0].into(),
            latest: values[values.len() - 1].into(),
            expand,
            languages: vec![],
            test_types: vec![],
        }
    }

    #[test]
    fn cross_axes_multiply() {
        let a = axis("python", &["3.11", "3.10", "3.12"], Expand::Cross);
        let b = axis("cdk", &["pinned", "latest"], Expand::Cross);
        let points = points(&[&a, &b], Versions::All);
        assert_eq!(points.len(), 6);
        assert_eq!(
            job_id("c", "unit", &points[0]),
            "c/unit[python=3.11,cdk=pinned]"
        );
    }

    #[test]
    fn zip_axes_pair_up_and_wrap() {
        let a = axis("python", &["3.11", "3.10", "3.12"], Expand::Zip);
        let b = axis("backend", &["sqlite", "postgres"], Expand::Zip);
        let ids: Vec<String> = points(&[&a, &b], Versions::All)
            .iter()
            .map(|p| job_id("c", "t", p))
            .collect();
        assert_eq!(
            ids,
            [
                "c/t[python=3.11,backend=sqlite]",
                "c/t[python=3.10,backend=postgres]",
                "c/t[python=3.12,backend=sqlite]"
            ]
        );
    }

    #[test]
    fn default_and_latest_pick_one_point() {
        let a = axis("python", &["3.11", "3.10", "3.12"], Expand::Cross);
        assert_eq!(
            points(&[&a], Versions::Default),
            vec![vec![("python".into(), "3.11".into())]]
        );
        assert_eq!(
            points(&[&a], Versions::Latest),
            vec![vec![("python".into(), "3.12".into())]]
        );
        assert_eq!(
            points(&[], Versions::All),
            vec![Vec::<(String, String)>::new()]
        );
    }
}
