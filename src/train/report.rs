//! The accuracy curves as CSV and as an SVG plot, written atomically.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use crate::{Error, Result};

use super::sim::RunResult;

/// Header of the curves CSV.
pub const CSV_HEADER: &str = "step,rule,attack,test_accuracy,train_loss";

/// Formats the curves of `results` as CSV, one row per evaluation.
pub fn curves_csv(results: &[RunResult]) -> String {
    let mut out = format!("{CSV_HEADER}\n");
    for result in results {
        for point in &result.curve {
            let _ = writeln!(
                out,
                "{},{},{},{:.4},{:.6}",
                point.step, result.rule, result.attack, point.test_accuracy, point.train_loss
            );
        }
    }
    out
}

/// Writes `contents` to `path` through a temporary file in the same folder
/// and a rename, so that a failure leaves no partial file at `path`.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let io_error = |cause| Error::Io {
        path: path.to_path_buf(),
        cause,
    };
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = std::fs::File::create(&temp)
        .and_then(|mut file| {
            file.write_all(contents)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.map_err(io_error)
}

/// Line colours, one per rule in order of first appearance.
const PALETTE: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#7f7f7f", "#bcbd22",
];

const PANEL_WIDTH: f64 = 380.0;
const PANEL_HEIGHT: f64 = 280.0;
/// Space inside a panel for the title (top), tick labels and axis labels.
const MARGIN_LEFT: f64 = 60.0;
const MARGIN_RIGHT: f64 = 15.0;
const MARGIN_TOP: f64 = 30.0;
const MARGIN_BOTTOM: f64 = 45.0;
const MAX_COLUMNS: usize = 3;
const HEADER_HEIGHT: f64 = 60.0;

/// Items in order of first appearance, without repeats.
fn distinct<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// Picks a step between axis ticks of 1, 2 or 5 × 10^k that gives at most
/// about five intervals over `0..=max`.
fn tick_step(max: f64) -> f64 {
    let raw = (max / 5.0).max(1.0);
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&step| step >= raw)
        .unwrap_or(10.0 * magnitude)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Draws the test-accuracy curves as an SVG figure: one panel per attack,
/// one line per rule, a shared legend and `title` on top.
pub fn curves_svg(results: &[RunResult], title: &str) -> String {
    let attacks = distinct(results.iter().map(|r| r.attack.as_str()));
    let rules = distinct(results.iter().map(|r| r.rule.as_str()));
    let max_step = results
        .iter()
        .flat_map(|r| r.curve.iter().map(|p| p.step))
        .max()
        .unwrap_or(1)
        .max(1) as f64;

    let columns = attacks.len().clamp(1, MAX_COLUMNS);
    let rows = attacks.len().div_ceil(columns).max(1);
    let width = columns as f64 * PANEL_WIDTH;
    let height = HEADER_HEIGHT + rows as f64 * PANEL_HEIGHT;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="15">{}</text>"#,
        width / 2.0,
        escape(title)
    );

    // Legend: one coloured stroke and name per rule, in one row.
    let mut x = 20.0;
    for (i, rule) in rules.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let _ = writeln!(
            svg,
            r#"<line x1="{x}" y1="42" x2="{}" y2="42" stroke="{colour}" stroke-width="2.5"/><text x="{}" y="46">{}</text>"#,
            x + 24.0,
            x + 30.0,
            escape(rule)
        );
        x += 40.0 + 7.5 * rule.chars().count() as f64;
    }

    for (index, attack) in attacks.iter().enumerate() {
        let left = (index % columns) as f64 * PANEL_WIDTH;
        let top = HEADER_HEIGHT + (index / columns) as f64 * PANEL_HEIGHT;
        let plot_left = left + MARGIN_LEFT;
        let plot_top = top + MARGIN_TOP;
        let plot_width = PANEL_WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
        let plot_height = PANEL_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
        let to_x = |step: f64| plot_left + plot_width * step / max_step;
        let to_y = |accuracy: f64| plot_top + plot_height * (1.0 - accuracy.clamp(0.0, 1.0));

        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle" font-size="13">attack: {}</text>"#,
            plot_left + plot_width / 2.0,
            top + 18.0,
            escape(attack)
        );

        // Horizontal grid and accuracy ticks every 0.2.
        for tick in 0..=5 {
            let accuracy = tick as f64 / 5.0;
            let y = to_y(accuracy);
            let _ = writeln!(
                svg,
                r##"<line x1="{plot_left}" y1="{y}" x2="{}" y2="{y}" stroke="#dddddd"/><text x="{}" y="{}" text-anchor="end">{accuracy:.1}</text>"##,
                plot_left + plot_width,
                plot_left - 6.0,
                y + 4.0
            );
        }
        // Step ticks.
        let step = tick_step(max_step);
        let mut tick = 0.0;
        while tick <= max_step + 1e-9 {
            let x = to_x(tick);
            let bottom = plot_top + plot_height;
            let _ = writeln!(
                svg,
                r#"<line x1="{x}" y1="{bottom}" x2="{x}" y2="{}" stroke="black"/><text x="{x}" y="{}" text-anchor="middle">{tick}</text>"#,
                bottom + 5.0,
                bottom + 18.0
            );
            tick += step;
        }
        // Axes and their labels.
        let _ = writeln!(
            svg,
            r#"<rect x="{plot_left}" y="{plot_top}" width="{plot_width}" height="{plot_height}" fill="none" stroke="black"/>"#
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">step</text>"#,
            plot_left + plot_width / 2.0,
            top + PANEL_HEIGHT - 8.0
        );
        let label_y = plot_top + plot_height / 2.0;
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{label_y}" text-anchor="middle" transform="rotate(-90 {} {label_y})">test accuracy</text>"#,
            left + 16.0,
            left + 16.0
        );

        for result in results.iter().filter(|r| r.attack == *attack) {
            let colour_index = rules.iter().position(|r| *r == result.rule).unwrap_or(0);
            let points: Vec<String> = result
                .curve
                .iter()
                .map(|p| format!("{:.1},{:.1}", to_x(p.step as f64), to_y(p.test_accuracy)))
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"#,
                points.join(" "),
                PALETTE[colour_index % PALETTE.len()]
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_steps_are_round() {
        assert_eq!(tick_step(300.0), 100.0);
        assert_eq!(tick_step(1000.0), 200.0);
        assert_eq!(tick_step(7.0), 2.0);
        assert_eq!(tick_step(1.0), 1.0);
    }

    #[test]
    fn atomic_write_replaces_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("a.csv");
        write_atomic(&path, b"one").expect("first write");
        write_atomic(&path, b"two").expect("second write");
        assert_eq!(std::fs::read_to_string(&path).expect("read back"), "two");
        let entries = std::fs::read_dir(dir.path()).expect("list").count();
        assert_eq!(entries, 1, "a temporary file was left behind");
    }

    #[test]
    fn atomic_write_to_missing_folder_fails() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("missing").join("a.csv");
        assert!(write_atomic(&path, b"one").is_err());
        assert!(!path.exists());
    }
}
