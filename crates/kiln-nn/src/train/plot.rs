//! Training curves as a PNG: loss (and accuracy, when there is one) per epoch, for the
//! training and validation sets.

use super::History;
use crate::drawing::{file_error, register_font};
use kiln::{Error, Result};
use plotters::prelude::*;
use std::path::Path;

fn plot_error(path: &Path, e: impl ToString) -> Error {
    file_error("plot_history", path, e)
}

/// Draws `history` into a 900x400 PNG at `path`.
pub fn plot_history(history: &History, title: &str, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    register_font();
    let root = BitMapBackend::new(path, (900, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_error(path, e))?;
    let has_accuracy = history
        .epochs
        .iter()
        .any(|m| m.train_accuracy.is_some() || m.val_accuracy.is_some());
    let panels = if has_accuracy {
        root.split_evenly((1, 2))
    } else {
        vec![root.clone()]
    };
    let epochs = history.epochs.len().max(1) as f64;
    type Series<'a> = (&'a str, Vec<(f64, f64)>, RGBColor);
    let draw = |area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
                caption: &str,
                series: Vec<Series>|
     -> Result<()> {
        let all: Vec<f64> = series
            .iter()
            .flat_map(|s| s.1.iter().map(|p| p.1))
            .collect();
        if all.is_empty() {
            return Ok(());
        }
        let (lo, hi) = all
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let pad = ((hi - lo) * 0.05).max(1e-6);
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{title}: {caption}"), ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(1.0..epochs.max(2.0), (lo - pad)..(hi + pad))
            .map_err(|e| plot_error(path, e))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .draw()
            .map_err(|e| plot_error(path, e))?;
        for (name, points, color) in series {
            if points.is_empty() {
                continue;
            }
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(|e| plot_error(path, e))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| plot_error(path, e))
    };
    let points = |f: &dyn Fn(&super::EpochMetrics) -> Option<f64>| -> Vec<(f64, f64)> {
        history
            .epochs
            .iter()
            .filter_map(|m| f(m).map(|v| (m.epoch as f64, v)))
            .collect()
    };
    draw(
        &panels[0],
        "loss",
        vec![
            ("train", points(&|m| Some(m.train_loss)), BLUE),
            ("validation", points(&|m| m.val_loss), RED),
        ],
    )?;
    if has_accuracy {
        draw(
            &panels[1],
            "accuracy",
            vec![
                ("train", points(&|m| m.train_accuracy), BLUE),
                ("validation", points(&|m| m.val_accuracy), RED),
            ],
        )?;
    }
    root.present().map_err(|e| plot_error(path, e))
}
