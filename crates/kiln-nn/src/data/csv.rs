//! Numeric CSV through the `csv` crate: every field a number, an optional header row,
//! one sample per row.

use kiln::{Device, Error, Result, Tensor};
use std::path::Path;

/// Reads a CSV of numbers into an f32 tensor `[rows, columns]`. Ragged rows,
/// non-numeric fields and `nan` or `inf` are errors naming the line; so is a file with
/// no data rows.
pub fn read_csv(path: impl AsRef<Path>, has_header: bool) -> Result<Tensor> {
    let origin = path.as_ref().display().to_string();
    let bad = |reason: String| Error::Io {
        op: "read_csv",
        path: origin.clone(),
        reason,
    };
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(has_header)
        .trim(::csv::Trim::All)
        .from_path(path.as_ref())
        .map_err(|e| bad(e.to_string()))?;
    let (mut values, mut rows, mut columns) = (Vec::new(), 0, 0);
    for record in reader.records() {
        let record = record.map_err(|e| bad(e.to_string()))?;
        let line = record.position().map_or(0, |p| p.line());
        columns = record.len();
        for field in record.iter() {
            let value = field
                .parse::<f32>()
                .map_err(|_| bad(format!("line {line}: {field:?} is not a number")))?;
            // "nan" and "inf" parse as floats; as data they are a mistake to report.
            if !value.is_finite() {
                return Err(bad(format!(
                    "line {line}: {field:?} is not a finite number"
                )));
            }
            values.push(value);
        }
        rows += 1;
    }
    if rows == 0 {
        return Err(bad("no data rows".to_string()));
    }
    Tensor::from_vec(values, [rows, columns], &Device::cpu())
}
