//! Greyscale images and heat maps as PNG grids (for samples and saliency maps).

use crate::drawing::file_error;
use kiln::Result;
use plotters::prelude::*;
use std::path::Path;

/// How a tile's values become pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Palette {
    /// 0 black, 1 white (values clamped to [0, 1]).
    Grey,
    /// Scaled to the tile's own maximum, black through red to yellow.
    Heat,
}

fn colour(v: f32, palette: Palette, max: f32) -> RGBColor {
    match palette {
        Palette::Grey => {
            let g = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
            RGBColor(g, g, g)
        }
        Palette::Heat => {
            let t = if max > 0.0 {
                (v / max).clamp(0.0, 1.0)
            } else {
                0.0
            };
            RGBColor(
                ((t * 2.0).min(1.0) * 255.0) as u8,
                ((t * 2.0 - 1.0).max(0.0) * 255.0) as u8,
                0,
            )
        }
    }
}

/// Writes `tiles` (each `h * w` values, row-major) as a grid with `columns` tiles per
/// row, each pixel drawn as a `scale x scale` square, separated by a 2-pixel gap.
pub fn save_image_grid(
    tiles: &[(Vec<f32>, Palette)],
    h: usize,
    w: usize,
    columns: usize,
    scale: usize,
    path: impl AsRef<Path>,
) -> Result<()> {
    let path = path.as_ref();
    let err = |e: String| file_error("save_image_grid", path, e);
    if tiles.iter().any(|(t, _)| t.len() != h * w) || columns == 0 || scale == 0 {
        return Err(err(format!("every tile must hold {h}x{w} values")));
    }
    let rows = tiles.len().div_ceil(columns);
    let (tw, th) = (w * scale + 2, h * scale + 2);
    let size = ((columns * tw) as u32, (rows.max(1) * th) as u32);
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&RGBColor(40, 40, 40))
        .map_err(|e| err(e.to_string()))?;
    for (i, (tile, palette)) in tiles.iter().enumerate() {
        let (x0, y0) = ((i % columns) * tw + 1, (i / columns) * th + 1);
        let max = tile.iter().copied().fold(0.0f32, f32::max);
        for (p, &v) in tile.iter().enumerate() {
            let (x, y) = (x0 + (p % w) * scale, y0 + (p / w) * scale);
            let rect = Rectangle::new(
                [
                    (x as i32, y as i32),
                    ((x + scale) as i32, (y + scale) as i32),
                ],
                colour(v, *palette, max).filled(),
            );
            root.draw(&rect).map_err(|e| err(e.to_string()))?;
        }
    }
    root.present().map_err(|e| err(e.to_string()))
}
