//! The chart under `--out`: `chart.svg` and `chart.png`, drawn with
//! plotters from the per-second series in `results.json`, so a chart can
//! be redrawn from a saved results file (`--chart-from`).
//!
//! Three panels, one x axis (seconds of the run):
//! 1. offered against achieved rate: requests meant to be sent that second,
//!    requests actually sent, answers completed (by intended second);
//! 2. the outcome mix: answers per second by status class, stacked;
//! 3. latency percentiles over time (p50, p99, p99.9, from the intended send
//!    time), on a log scale.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;

/// Pixels of the whole chart.
pub const SIZE: (u32, u32) = (1200, 1050);

/// Status classes of the outcome panel, stacked in this order (bottom up),
/// with their colours.
pub const OUTCOMES: [(&str, RGBColor); 7] = [
    ("2xx", RGBColor(46, 139, 87)),
    ("409", RGBColor(70, 130, 180)),
    ("429", RGBColor(255, 165, 0)),
    ("503", RGBColor(218, 112, 214)),
    ("other 4xx", RGBColor(160, 160, 160)),
    ("5xx", RGBColor(178, 34, 34)),
    ("no answer", RGBColor(0, 0, 0)),
];

/// The class of an answer's status as `results.json` names it.
pub fn outcome_class(status: &str) -> &'static str {
    match status {
        "no_answer" => "no answer",
        "409" => "409",
        "429" => "429",
        "503" => "503",
        s if s.starts_with('2') => "2xx",
        s if s.starts_with('5') => "5xx",
        _ => "other 4xx",
    }
}

/// One second of the series, as the chart needs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Point {
    pub offered: f64,
    pub sent: f64,
    pub completed: f64,
    /// Answers per class of [`OUTCOMES`], same order.
    pub outcomes: [f64; OUTCOMES.len()],
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

/// The per-second series of a results document.
pub fn series(results: &Value) -> anyhow::Result<Vec<Point>> {
    let seconds = results["seconds"]
        .as_array()
        .ok_or_else(|| anyhow!("results have no \"seconds\" series"))?;
    let num = |v: &Value, key: &str| v[key].as_f64().unwrap_or(0.0);
    Ok(seconds
        .iter()
        .map(|s| {
            let mut outcomes = [0.0; OUTCOMES.len()];
            for (status, n) in s["statuses"].as_object().into_iter().flatten() {
                let class = outcome_class(status);
                let i = OUTCOMES.iter().position(|(c, _)| *c == class).unwrap_or(0);
                outcomes[i] += n.as_f64().unwrap_or(0.0);
            }
            Point {
                offered: num(s, "offered"),
                sent: num(s, "sent"),
                completed: num(s, "completed"),
                outcomes,
                p50_ms: num(s, "p50_ms"),
                p99_ms: num(s, "p99_ms"),
                p999_ms: num(s, "p999_ms"),
            }
        })
        .collect())
}

/// Draws `chart.svg` and `chart.png` into `dir`; returns their paths.
pub fn write(results: &Value, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let points = series(results)?;
    let title = format!(
        "{} against {}",
        results["scenario"].as_str().unwrap_or("?"),
        results["target"].as_str().unwrap_or("?")
    );
    let svg = dir.join("chart.svg");
    draw(
        SVGBackend::new(&svg, SIZE).into_drawing_area(),
        &title,
        &points,
    )
    .with_context(|| format!("drawing {}", svg.display()))?;
    let png = dir.join("chart.png");
    draw(
        BitMapBackend::new(&png, SIZE).into_drawing_area(),
        &title,
        &points,
    )
    .with_context(|| format!("drawing {}", png.display()))?;
    Ok(vec![svg, png])
}

/// A line of a panel: its legend, colour, width and value per second.
struct Line(&'static str, RGBColor, u32, fn(&Point) -> f64);

fn draw<DB>(root: DrawingArea<DB, Shift>, title: &str, points: &[Point]) -> anyhow::Result<()>
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 24))?;
    let panels = root.split_evenly((3, 1));
    // At least one second wide, so an empty run still draws axes.
    let x_end = points.len().max(1) as f64;

    // 1. Offered against achieved.
    let rate_max = points
        .iter()
        .map(|p| p.offered.max(p.sent).max(p.completed))
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&panels[0])
        .caption("offered vs achieved (requests/s)", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_end, 0.0..rate_max)?;
    chart
        .configure_mesh()
        .x_desc("second")
        .y_desc("requests/s")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    // Offered is drawn first and wide, so achieved lines on top of it
    // (a target keeping up) leave it visible around them.
    let lines = [
        Line("offered (scheduled)", RGBColor(135, 170, 255), 6, |p| {
            p.offered
        }),
        Line("sent", RGBColor(255, 140, 0), 2, |p| p.sent),
        Line("completed", RGBColor(34, 139, 34), 2, |p| p.completed),
    ];
    for Line(name, colour, width, value) in lines {
        chart
            .draw_series(LineSeries::new(
                points.iter().enumerate().map(|(t, p)| (t as f64, value(p))),
                colour.stroke_width(width),
            ))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    legend(&mut chart)?;

    // 2. The outcome mix, stacked: each class drawn as the area up to the
    // running total, largest total first so every band stays visible.
    let totals: Vec<[f64; OUTCOMES.len()]> = points
        .iter()
        .map(|p| {
            let mut run = 0.0;
            let mut acc = [0.0; OUTCOMES.len()];
            for (i, n) in p.outcomes.iter().enumerate() {
                run += n;
                acc[i] = run;
            }
            acc
        })
        .collect();
    let mix_max = totals
        .iter()
        .map(|t| t[OUTCOMES.len() - 1])
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&panels[1])
        .caption("outcome mix (answers/s by status)", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_end, 0.0..mix_max)?;
    chart
        .configure_mesh()
        .x_desc("second (intended)")
        .y_desc("answers/s")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    for (i, (name, colour)) in OUTCOMES.iter().enumerate().rev() {
        if points.iter().all(|p| p.outcomes[i] == 0.0) {
            continue;
        }
        let colour = *colour;
        chart
            .draw_series(AreaSeries::new(
                totals.iter().enumerate().map(|(t, acc)| (t as f64, acc[i])),
                0.0,
                colour.mix(0.7),
            ))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], colour.filled()));
    }
    legend(&mut chart)?;

    // 3. Latency percentiles, log scale (a second with no answers has none).
    let lat_max = points
        .iter()
        .map(|p| p.p999_ms.max(p.p99_ms))
        .fold(1.0, f64::max)
        * 2.0;
    let lat_min = points
        .iter()
        .map(|p| p.p50_ms)
        .filter(|&v| v > 0.0)
        .fold(lat_max, f64::min)
        .min(0.1)
        / 2.0;
    let mut chart = ChartBuilder::on(&panels[2])
        .caption(
            "latency from the intended send time (ms, log)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_end, (lat_min..lat_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("second (intended)")
        .y_desc("ms")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v}"))
        .draw()?;
    let lines = [
        Line("p50", RGBColor(34, 139, 34), 2, |p| p.p50_ms),
        Line("p99", RGBColor(255, 140, 0), 2, |p| p.p99_ms),
        Line("p99.9", RED, 2, |p| p.p999_ms),
    ];
    for Line(name, colour, width, value) in lines {
        chart
            .draw_series(LineSeries::new(
                points
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.completed > 0.0)
                    .map(|(t, p)| (t as f64, value(p).max(lat_min))),
                colour.stroke_width(width),
            ))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    legend(&mut chart)?;
    root.present()?;
    Ok(())
}

fn legend<'a, DB, X, Y>(chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
