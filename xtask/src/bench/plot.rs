//! The SVG bar chart of the report: for each throughput metric, one bar per proxied
//! configuration with its ratio to direct, and a line at 1.0 (direct).
use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use super::configs::Config;

/// One metric's bars: `None` where the configuration has no figure.
pub struct Group {
    pub label: String,
    pub bars: Vec<(Config, Option<f64>)>,
}

fn color(config: Config) -> RGBColor {
    match config {
        Config::Direct => RGBColor(0, 0, 0),
        Config::SockmeshDisable => RGBColor(120, 170, 230),
        Config::SockmeshMtls => RGBColor(25, 90, 180),
        Config::HaproxyMtls => RGBColor(230, 130, 40),
        Config::HaproxyPlain => RGBColor(160, 160, 160),
    }
}

pub fn draw(path: &Path, groups: &[Group]) -> Result<()> {
    let fail = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    let root = SVGBackend::new(path, (1000, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let top = groups
        .iter()
        .flat_map(|g| g.bars.iter().filter_map(|(_, r)| *r))
        .fold(1.0_f64, f64::max)
        * 1.15;
    let n = groups.len().max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Ratio to direct, same round (median over rounds; higher is better)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..n as f64, 0.0..top)
        .map_err(|e| fail(&e))?;
    let labels: Vec<String> = groups.iter().map(|g| g.label.clone()).collect();
    // Labels sit at the group centres (k + 0.5); with 2n+1 requested labels plotters puts its
    // key points every 0.5, and every other one is left blank.
    let centre = move |x: &f64| {
        let k = (x - 0.5).round();
        if (x - 0.5 - k).abs() < 1e-6 && k >= 0.0 {
            labels.get(k as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(2 * n + 1)
        .x_label_formatter(&centre)
        .y_desc("ratio to direct")
        .draw()
        .map_err(|e| fail(&e))?;
    let configs: Vec<Config> = groups
        .first()
        .map(|g| g.bars.iter().map(|(c, _)| *c).collect())
        .unwrap_or_default();
    let width = 0.8 / configs.len().max(1) as f64;
    for (i, &config) in configs.iter().enumerate() {
        let bars: Vec<(f64, f64)> = groups
            .iter()
            .enumerate()
            .filter_map(|(k, g)| Some((k as f64 + 0.1 + i as f64 * width, g.bars.get(i)?.1?)))
            .collect();
        let fill = color(config);
        chart
            .draw_series(
                bars.iter().map(|&(x, r)| {
                    Rectangle::new([(x, 0.0), (x + width * 0.92, r)], fill.filled())
                }),
            )
            .map_err(|e| fail(&e))?
            .label(config.title())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], fill.filled()));
        chart
            .draw_series(bars.iter().map(|&(x, r)| {
                Text::new(
                    format!("{r:.2}"),
                    (x, r + top * 0.01),
                    ("sans-serif", 11).into_font(),
                )
            }))
            .map_err(|e| fail(&e))?;
    }
    chart
        .draw_series(LineSeries::new(
            [(0.0, 1.0), (n as f64, 1.0)],
            BLACK.stroke_width(1),
        ))
        .map_err(|e| fail(&e))?
        .label("direct = 1.0")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 12, y)], BLACK));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_labelled_bars() {
        let path = std::env::temp_dir().join(format!("bench-plot-{}.svg", std::process::id()));
        let groups = vec![
            Group {
                label: "iperf3, 1 stream".to_owned(),
                bars: vec![
                    (Config::SockmeshMtls, Some(0.62)),
                    (Config::HaproxyMtls, Some(0.47)),
                ],
            },
            Group {
                label: "keep-alive c16".to_owned(),
                bars: vec![
                    (Config::SockmeshMtls, None),
                    (Config::HaproxyMtls, Some(0.34)),
                ],
            },
        ];
        draw(&path, &groups).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        for text in [
            "iperf3, 1 stream",
            "keep-alive c16",
            "0.62",
            "0.34",
            "HAProxy mTLS pair",
        ] {
            assert!(svg.contains(text), "{text} missing from the plot");
        }
    }
}
