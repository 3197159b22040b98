//! Attributions drawn for a person: each input in grey with its attribution overlaid
//! in colour (red where it raises the class's score, blue where it lowers it, stronger
//! the larger it is), one row per input and one column per method, a label per row and
//! a colour bar.

use crate::drawing::{file_error, register_font};
use kiln::Result;
use plotters::prelude::*;
use std::path::Path;

/// One tile: a greyscale image (values in [0, 1]) and an attribution of the same size.
pub struct Overlay<'a> {
    /// The greyscale input, row-major.
    pub image: &'a [f32],
    /// Its attribution, the same size.
    pub attribution: &'a [f32],
}

const LABEL_WIDTH: i32 = 170;
const HEADER: i32 = 24;
const GAP: i32 = 6;
const BAR: i32 = 46;

/// Draws `rows` (a label, such as the prediction and its probability, and one tile
/// per method named in `methods`) of `h x w` images, each pixel `scale` pixels wide,
/// into a PNG at `path`. Each tile's colours are scaled to its largest |attribution|.
pub fn save_overlays(
    rows: &[(String, Vec<Overlay<'_>>)],
    methods: &[&str],
    (h, w): (usize, usize),
    scale: usize,
    path: impl AsRef<Path>,
) -> Result<()> {
    let path = path.as_ref();
    let err = |e: String| file_error("save_overlays", path, e);
    let tiles_fit = rows.iter().all(|(_, tiles)| {
        tiles.len() == methods.len()
            && tiles
                .iter()
                .all(|t| t.image.len() == h * w && t.attribution.len() == h * w)
    });
    if rows.is_empty() || !tiles_fit || scale == 0 {
        return Err(err(format!(
            "every row needs {} tiles of {h}x{w} values, and there must be a row",
            methods.len()
        )));
    }
    register_font();
    let tile = ((w * scale) as i32, (h * scale) as i32);
    let width = LABEL_WIDTH + methods.len() as i32 * (tile.0 + GAP) + GAP;
    let height = HEADER + rows.len() as i32 * (tile.1 + GAP) + BAR;
    let root = BitMapBackend::new(path, (width as u32, height as u32)).into_drawing_area();
    let text = |size: u32| ("sans-serif", size).into_font().color(&WHITE);
    let draw_err = |e: DrawingAreaErrorKind<_>| err(e.to_string());
    root.fill(&RGBColor(30, 30, 30)).map_err(draw_err)?;
    for (m, name) in methods.iter().enumerate() {
        let x = LABEL_WIDTH + m as i32 * (tile.0 + GAP);
        root.draw(&Text::new(name.to_string(), (x, 4), text(15)))
            .map_err(draw_err)?;
    }
    for (r, (label, tiles)) in rows.iter().enumerate() {
        let y0 = HEADER + r as i32 * (tile.1 + GAP);
        for (k, line) in label.lines().enumerate() {
            root.draw(&Text::new(
                line.to_string(),
                (6, y0 + 4 + 18 * k as i32),
                text(14),
            ))
            .map_err(draw_err)?;
        }
        for (m, t) in tiles.iter().enumerate() {
            let x0 = LABEL_WIDTH + m as i32 * (tile.0 + GAP);
            let max = t.attribution.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            for p in 0..h * w {
                let (x, y) = (x0 + ((p % w) * scale) as i32, y0 + ((p / w) * scale) as i32);
                let rel = if max > 0.0 {
                    t.attribution[p] / max
                } else {
                    0.0
                };
                let rect = Rectangle::new(
                    [(x, y), (x + scale as i32, y + scale as i32)],
                    blend(t.image[p], rel).filled(),
                );
                root.draw(&rect).map_err(draw_err)?;
            }
        }
    }
    // The colour bar: -1 (blue) through the grey of a mid-grey pixel to +1 (red).
    let (bx, by, bw) = (
        LABEL_WIDTH,
        height - BAR + 8,
        (width - LABEL_WIDTH - GAP).min(400),
    );
    for i in 0..bw {
        let rel = 2.0 * i as f32 / (bw - 1).max(1) as f32 - 1.0;
        let line = Rectangle::new(
            [(bx + i, by), (bx + i + 1, by + 12)],
            blend(0.5, rel).filled(),
        );
        root.draw(&line).map_err(draw_err)?;
    }
    let ticks = [
        ("-max", 0),
        ("0", bw / 2),
        ("+max |attribution| of the tile", bw - 30),
    ];
    for (label, at) in ticks {
        root.draw(&Text::new(label, (bx + at, by + 16), text(13)))
            .map_err(draw_err)?;
    }
    root.present().map_err(|e| err(e.to_string()))
}

/// A grey pixel `v` (in [0, 1]) with `rel` (in [-1, 1]) overlaid: red for positive,
/// blue for negative, opaque at the tile's largest magnitude.
pub(crate) fn blend(v: f32, rel: f32) -> RGBColor {
    let grey = v.clamp(0.0, 1.0) * 255.0;
    let alpha = rel.abs().clamp(0.0, 1.0);
    let colour = match rel >= 0.0 {
        true => (255.0, 40.0, 20.0),
        false => (30.0, 90.0, 255.0),
    };
    let mix = |c: f32| (grey * (1.0 - alpha) + c * alpha).round() as u8;
    RGBColor(mix(colour.0), mix(colour.1), mix(colour.2))
}
