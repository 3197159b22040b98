//! CSV through the `csv` crate: numeric feature columns and, optionally, one target
//! column (numbers or class names), one sample per row.

use kiln::{Device, Error, Result, Tensor};
use std::io::BufRead;
use std::path::Path;

/// A column picked by its header name, or by position: 0 is the first, -1 the last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Column {
    /// The column whose header is this name.
    Name(String),
    /// The column at this position: 0 is the first, -1 the last.
    Index(isize),
}

impl Column {
    /// A position when `text` is an integer, else a name: the reading of a command-line
    /// `--target`.
    pub fn parse(text: &str) -> Column {
        match text.parse::<isize>() {
            Ok(i) => Column::Index(i),
            Err(_) => Column::Name(text.to_string()),
        }
    }
}

/// What to do with a missing feature value: an empty field or one of `MISSING_MARKERS`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Missing {
    /// Refuse the file, naming the line and column (the default).
    #[default]
    Error,
    /// Read it as NaN, for the caller to impute or drop.
    Nan,
}

/// The spellings of a missing value, as pandas and the UCI repository write them.
pub const MISSING_MARKERS: [&str; 7] = ["", "NA", "N/A", "NaN", "nan", "null", "?"];

/// How `read_table` reads a file.
#[derive(Clone, Debug)]
pub struct CsvOptions {
    /// Lines to skip before the header or the first row (e.g. scikit-learn's bundled
    /// files open with a metadata line of another width).
    pub skip_lines: usize,
    /// The first row (after the skipped lines) names the columns.
    pub header: bool,
    /// The field separator (`b','`, `b';'`, `b'\t'`, ...).
    pub delimiter: u8,
    /// The column to return as `Table::target` instead of as a feature.
    pub target: Option<Column>,
    /// What a missing feature value becomes.
    pub missing: Missing,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            skip_lines: 0,
            header: true,
            delimiter: b',',
            target: None,
            missing: Missing::Error,
        }
    }
}

/// A CSV's rows: the feature columns as numbers, the target column as it was written.
#[derive(Clone, Debug)]
pub struct Table {
    /// f32 `[rows, features]`, on the CPU.
    pub features: Tensor,
    /// The features' header names, or `column 0`, `column 1`, ... without a header.
    pub feature_names: Vec<String>,
    /// The target column's name and its fields (trimmed), one per row.
    pub target: Option<(String, Vec<String>)>,
}

/// Reads a CSV of numbers into an f32 tensor `[rows, columns]`. Ragged rows,
/// non-numeric fields, missing values and infinities are errors naming the line; so is
/// a file with no data rows. `read_table` reads a target column and takes options.
pub fn read_csv(path: impl AsRef<Path>, has_header: bool) -> Result<Tensor> {
    let options = CsvOptions {
        header: has_header,
        ..CsvOptions::default()
    };
    Ok(read_table(path, &options)?.features)
}

/// Reads a CSV as `options` say. Every column but the target must hold numbers (or a
/// missing value, see `Missing`); the target's fields are kept as text, for
/// `Classes::encode` or `Table::numeric_target`. Ragged rows, non-numeric features,
/// infinities, a target column that is not there and a file with no data rows are
/// errors naming the file and the line.
pub fn read_table(path: impl AsRef<Path>, options: &CsvOptions) -> Result<Table> {
    let origin = path.as_ref().display().to_string();
    let bad = |reason: String| Error::Io {
        op: "read_table",
        path: origin.clone(),
        reason,
    };
    let mut reader = open(path.as_ref(), options).map_err(bad)?;
    // Line numbers as a person counts them in the file, skipped lines included.
    let line_of = |record: &::csv::StringRecord| {
        record.position().map_or(0, |p| p.line()) + options.skip_lines as u64
    };
    let headers: Option<Vec<String>> = match options.header {
        true => Some(
            reader
                .headers()
                .map_err(|e| bad(e.to_string()))?
                .iter()
                .map(str::to_string)
                .collect(),
        ),
        false => None,
    };
    let mut records = reader.records();
    let first = match records.next() {
        Some(r) => r.map_err(|e| bad(e.to_string()))?,
        None => return Err(bad("no data rows".to_string())),
    };
    let width = first.len();
    let names: Vec<String> = match &headers {
        Some(h) => h.clone(),
        None => (0..width).map(|j| format!("column {j}")).collect(),
    };
    let target = match &options.target {
        Some(column) => Some(resolve(column, &names, headers.is_some()).map_err(bad)?),
        None => None,
    };
    let mut values = Vec::new();
    let mut target_fields = Vec::new();
    let mut rows = 0;
    for record in std::iter::once(Ok(first)).chain(records) {
        let record = record.map_err(|e| bad(e.to_string()))?;
        let line = line_of(&record);
        for (j, field) in record.iter().enumerate() {
            if Some(j) == target {
                target_fields.push(field.to_string());
                continue;
            }
            values.push(
                feature_value(field, options.missing).map_err(|reason| {
                    bad(format!("line {line}, column {:?}: {reason}", names[j]))
                })?,
            );
        }
        rows += 1;
    }
    let feature_names: Vec<String> = names
        .iter()
        .enumerate()
        .filter(|&(j, _)| Some(j) != target)
        .map(|(_, n)| n.clone())
        .collect();
    let features = Tensor::from_vec(values, [rows, feature_names.len()], &Device::cpu())?;
    Ok(Table {
        features,
        feature_names,
        target: target.map(|j| (names[j].clone(), target_fields)),
    })
}

/// The column names `read_table` gives the file's columns (the target's included):
/// the header's, or `column 0`, `column 1`, ... without one.
pub fn read_columns(path: impl AsRef<Path>, options: &CsvOptions) -> Result<Vec<String>> {
    let bad = |reason: String| Error::Io {
        op: "read_columns",
        path: path.as_ref().display().to_string(),
        reason,
    };
    let mut reader = open(path.as_ref(), options).map_err(bad)?;
    let record = match options.header {
        true => reader.headers().map_err(|e| bad(e.to_string()))?.clone(),
        false => match reader.records().next() {
            Some(r) => r.map_err(|e| bad(e.to_string()))?,
            None => return Err(bad("no data rows".to_string())),
        },
    };
    Ok(match options.header {
        true => record.iter().map(str::to_string).collect(),
        false => (0..record.len()).map(|j| format!("column {j}")).collect(),
    })
}

/// A CSV reader for `path` past the lines `options` skips.
fn open(
    path: &Path,
    options: &CsvOptions,
) -> std::result::Result<::csv::Reader<std::io::BufReader<std::fs::File>>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut input = std::io::BufReader::new(file);
    let mut skipped = String::new();
    for _ in 0..options.skip_lines {
        skipped.clear();
        if input.read_line(&mut skipped).map_err(|e| e.to_string())? == 0 {
            return Err(format!(
                "the file has fewer than the {} lines to skip",
                options.skip_lines
            ));
        }
    }
    Ok(::csv::ReaderBuilder::new()
        .has_headers(options.header)
        .delimiter(options.delimiter)
        .trim(::csv::Trim::All)
        .from_reader(input))
}

/// The index of `column` among `names`.
fn resolve(
    column: &Column,
    names: &[String],
    has_header: bool,
) -> std::result::Result<usize, String> {
    match column {
        Column::Name(name) if !has_header => Err(format!(
            "the target column {name:?} is named, but the file is read without a header"
        )),
        Column::Name(name) => names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| format!("no column is named {name:?}; the columns are {names:?}")),
        &Column::Index(i) => {
            let width = names.len() as isize;
            let j = if i < 0 { width + i } else { i };
            match (0..width).contains(&j) {
                true => Ok(j as usize),
                false => Err(format!("column {i} is outside the file's {width} columns")),
            }
        }
    }
}

/// One feature field as a number: missing values as `missing` says; infinities, which
/// parse as floats, are a mistake in data.
fn feature_value(field: &str, missing: Missing) -> std::result::Result<f32, String> {
    if MISSING_MARKERS.contains(&field) {
        return match missing {
            Missing::Nan => Ok(f32::NAN),
            Missing::Error => Err(format!(
                "{field:?} is a missing value (read it as NaN with Missing::Nan)"
            )),
        };
    }
    match field.parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(format!("{field:?} is not a finite number")),
        Err(_) => Err(format!("{field:?} is not a number")),
    }
}

impl Table {
    /// The target column as numbers, f32 `[rows]`: a regression target. Missing or
    /// non-numeric fields are errors naming the row.
    pub fn numeric_target(&self) -> Result<Tensor> {
        let (name, fields) = self.target_column("numeric_target")?;
        let values = fields
            .iter()
            .enumerate()
            .map(|(i, f)| match f.parse::<f32>() {
                Ok(v) if v.is_finite() => Ok(v),
                _ => Err(Error::InvalidArgument {
                    op: "numeric_target",
                    reason: format!("row {i} of target {name:?} is {f:?}, not a finite number"),
                }),
            })
            .collect::<Result<Vec<f32>>>()?;
        Tensor::from_vec(values, [fields.len()], &Device::cpu())
    }

    /// The target column's name and fields, or an error saying none was read.
    pub fn target_column(&self, op: &'static str) -> Result<(&str, &[String])> {
        match &self.target {
            Some((name, fields)) => Ok((name, fields)),
            None => Err(Error::InvalidArgument {
                op,
                reason: "the table was read without a target column (CsvOptions::target)".into(),
            }),
        }
    }
}
