//! A connector's duration trend as a sparkline: the seconds its steps ran in its latest runs,
//! drawn small beside its row of the grid, the values in its title.

use std::fmt::Write;

const WIDTH: f64 = 80.0;
const HEIGHT: f64 = 16.0;

/// An inline SVG of `points` (oldest first), or nothing for fewer than two: one run is no
/// trend.
pub fn sparkline_svg(points: &[f64]) -> String {
    if points.len() < 2 {
        return String::new();
    }
    let top = points.iter().copied().fold(0.0_f64, f64::max).max(0.001);
    let step = WIDTH / (points.len() - 1) as f64;
    let mut path = String::new();
    for (i, value) in points.iter().enumerate() {
        let x = i as f64 * step;
        // Padded by a pixel so the line is not cut at the edges.
        let y = 1.0 + (HEIGHT - 2.0) * (1.0 - value.max(0.0) / top);
        let _ = write!(path, "{}{x:.1},{y:.1}", if i == 0 { "" } else { " " });
    }
    let values: Vec<String> = points.iter().map(|p| format!("{p:.1}s")).collect();
    format!(
        "<svg class=\"trend\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\"><title>last {} runs: {}</title><polyline fill=\"none\" stroke=\"#0969da\" stroke-width=\"1.5\" points=\"{path}\"/></svg>",
        points.len(),
        values.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trend_needs_two_runs_and_its_points_span_the_box() {
        assert_eq!(sparkline_svg(&[]), "");
        assert_eq!(sparkline_svg(&[3.0]), "");
        let svg = sparkline_svg(&[2.0, 4.0, 1.0]);
        assert!(
            svg.contains("points=\"0.0,8.0 40.0,1.0 80.0,11.5\""),
            "{svg}"
        );
        assert!(
            svg.contains("<title>last 3 runs: 2.0s, 4.0s, 1.0s</title>"),
            "{svg}"
        );
    }
}
