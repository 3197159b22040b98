//! A character sequence shaded by each character's attribution (to a language model's
//! next-character prediction), for reading: as HTML, as a PNG, and as plain text.

use super::picture::blend;
use crate::drawing::{file_error, register_font};
use kiln::{Error, Result};
use plotters::prelude::*;
use std::path::Path;

/// Characters per line of the PNG and the plain text.
const LINE: usize = 64;

/// How a character is shown: a newline as a visible mark.
fn shown(c: char) -> char {
    match c {
        '\n' => '↵',
        '\t' => '→',
        c => c,
    }
}

/// Each attribution over the largest magnitude, in [-1, 1].
fn relative(attribution: &[f32]) -> Vec<f32> {
    let max = attribution.iter().fold(0.0f32, |m, a| m.max(a.abs()));
    attribution
        .iter()
        .map(|a| if max > 0.0 { a / max } else { 0.0 })
        .collect()
}

fn check(op: &'static str, chars: &[char], attribution: &[f32]) -> Result<()> {
    if chars.len() != attribution.len() || chars.is_empty() {
        return Err(Error::InvalidArgument {
            op,
            reason: format!(
                "one attribution per character, and some characters: {} and {}",
                chars.len(),
                attribution.len()
            ),
        });
    }
    Ok(())
}

/// An HTML page: `title`, then the characters on backgrounds of red (raised the
/// prediction) or blue (lowered it), each with its value on hover.
pub fn text_attribution_html(chars: &[char], attribution: &[f32], title: &str) -> Result<String> {
    check("text_attribution_html", chars, attribution)?;
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut html = format!(
        "<!doctype html>\n<meta charset=\"utf-8\">\n<title>{0}</title>\n<p>{0}</p>\n<pre style=\"font-size: 16px; line-height: 1.5\">",
        escape(title)
    );
    for ((&c, a), rel) in chars.iter().zip(attribution).zip(relative(attribution)) {
        let RGBColor(r, g, b) = blend(1.0, rel);
        let text = match c {
            '\n' => "↵\n".to_string(),
            c => escape(&c.to_string()),
        };
        html.push_str(&format!(
            "<span style=\"background: rgb({r}, {g}, {b})\" title=\"{a:+.4}\">{text}</span>"
        ));
    }
    html.push_str("</pre>\n");
    Ok(html)
}

/// Plain text: each line of up to 64 characters, and under each character a mark for
/// its attribution, `+` to `#` as it rises towards the largest, `-` to `=` as it
/// lowers, blank near zero.
pub fn text_attribution_plain(chars: &[char], attribution: &[f32]) -> Result<String> {
    check("text_attribution_plain", chars, attribution)?;
    let rel = relative(attribution);
    let mark = |r: f32| match (r >= 0.0, (r.abs() * 4.0).round() as usize) {
        (_, 0) => ' ',
        (true, 1) => '.',
        (true, 2) => '+',
        (true, _) => '#',
        (false, 1) => ',',
        (false, 2) => '-',
        (false, _) => '=',
    };
    let mut out = String::new();
    for (line, marks) in chars.chunks(LINE).zip(rel.chunks(LINE)) {
        out.extend(line.iter().map(|&c| shown(c)));
        out.push('\n');
        out.extend(marks.iter().map(|&r| mark(r)));
        out.push('\n');
    }
    Ok(out)
}

/// A PNG of the characters in cells shaded as in the HTML, `title` above them.
pub fn save_text_attribution_png(
    chars: &[char],
    attribution: &[f32],
    title: &str,
    path: impl AsRef<Path>,
) -> Result<()> {
    check("save_text_attribution_png", chars, attribution)?;
    let path = path.as_ref();
    let err = |e: String| file_error("save_text_attribution_png", path, e);
    register_font();
    let (cell_w, cell_h, margin) = (14i32, 24i32, 10i32);
    let lines = chars.len().div_ceil(LINE) as i32;
    let width = 2 * margin + LINE as i32 * cell_w;
    let height = 2 * margin + 28 + lines * cell_h;
    let root = BitMapBackend::new(path, (width as u32, height as u32)).into_drawing_area();
    let draw_err = |e: DrawingAreaErrorKind<_>| err(e.to_string());
    root.fill(&WHITE).map_err(draw_err)?;
    let font = ("sans-serif", 16).into_font().color(&BLACK);
    root.draw(&Text::new(
        title.to_string(),
        (margin, margin),
        font.clone(),
    ))
    .map_err(draw_err)?;
    for (i, (&c, rel)) in chars.iter().zip(relative(attribution)).enumerate() {
        let (x, y) = (
            margin + (i % LINE) as i32 * cell_w,
            margin + 28 + (i / LINE) as i32 * cell_h,
        );
        let cell = Rectangle::new([(x, y), (x + cell_w, y + cell_h)], blend(1.0, rel).filled());
        root.draw(&cell).map_err(draw_err)?;
        root.draw(&Text::new(
            shown(c).to_string(),
            (x + 2, y + 3),
            font.clone(),
        ))
        .map_err(draw_err)?;
    }
    root.present().map_err(|e| err(e.to_string()))
}
