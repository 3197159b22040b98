//! A tabular model's attributions summarised for a person: mean |attribution| per
//! feature, by name, as horizontal bars, largest first.

use crate::drawing::{file_error, register_font};
use kiln::{Error, Result};
use plotters::prelude::*;
use std::path::Path;

/// The features by decreasing mean |attribution| over the rows of `attribution`
/// (`[N, F]` values, row by row): (name, mean), for `F` names.
pub fn feature_importance(names: &[String], attribution: &[f32]) -> Result<Vec<(String, f64)>> {
    let f = names.len();
    if f == 0 || attribution.is_empty() || !attribution.len().is_multiple_of(f) {
        return Err(Error::InvalidArgument {
            op: "feature_importance",
            reason: format!(
                "{} attributions for {f} features: rows of one value per feature",
                attribution.len()
            ),
        });
    }
    let rows = attribution.len() / f;
    let mut out: Vec<(String, f64)> = names
        .iter()
        .enumerate()
        .map(|(j, name)| {
            let sum: f64 = attribution
                .iter()
                .skip(j)
                .step_by(f)
                .map(|a| a.abs() as f64)
                .sum();
            (name.clone(), sum / rows as f64)
        })
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(out)
}

/// Draws `importance` (as `feature_importance` returns it) as horizontal bars with
/// their names and values, under `title`, into a PNG at `path`.
pub fn save_feature_bars(
    importance: &[(String, f64)],
    title: &str,
    path: impl AsRef<Path>,
) -> Result<()> {
    let path = path.as_ref();
    let err = |e: String| file_error("save_feature_bars", path, e);
    if importance.is_empty() {
        return Err(err("no features to draw".into()));
    }
    register_font();
    let (label_w, bar_w, row_h, top) = (180i32, 420i32, 22i32, 36i32);
    let width = label_w + bar_w + 90;
    let height = top + importance.len() as i32 * row_h + 10;
    let root = BitMapBackend::new(path, (width as u32, height as u32)).into_drawing_area();
    let draw_err = |e: DrawingAreaErrorKind<_>| err(e.to_string());
    root.fill(&WHITE).map_err(draw_err)?;
    let font = ("sans-serif", 15).into_font().color(&BLACK);
    root.draw(&Text::new(title.to_string(), (10, 8), font.clone()))
        .map_err(draw_err)?;
    let max = importance.iter().fold(0.0f64, |m, (_, v)| m.max(*v));
    for (i, (name, value)) in importance.iter().enumerate() {
        let y = top + i as i32 * row_h;
        let len = if max > 0.0 {
            (value / max * bar_w as f64) as i32
        } else {
            0
        };
        root.draw(&Text::new(name.clone(), (10, y + 3), font.clone()))
            .map_err(draw_err)?;
        let bar = Rectangle::new(
            [(label_w, y + 3), (label_w + len, y + row_h - 3)],
            RGBColor(220, 60, 40).filled(),
        );
        root.draw(&bar).map_err(draw_err)?;
        root.draw(&Text::new(
            format!("{value:.4}"),
            (label_w + len + 6, y + 3),
            font.clone(),
        ))
        .map_err(draw_err)?;
    }
    root.present().map_err(|e| err(e.to_string()))
}
