//! `kiln predict`: a tabular checkpoint's predictions for the rows of a CSV, written as
//! a CSV beside it; with the metrics when the file has the target column.

use crate::tabular::{default_checkpoint, read_rows, report, CsvFormat, TabularModel};
use clap::Args;
use kiln::{Device, Error, Result};
use std::path::PathBuf;

#[derive(Args)]
pub struct PredictArgs {
    /// The checkpoint `kiln train mlp --csv` wrote.
    #[arg(long, default_value_os_t = default_checkpoint())]
    checkpoint: PathBuf,
    /// Rows to predict, with the training file's feature columns (found by name; others
    /// are ignored). When the target column is there too, the metrics are printed.
    #[arg(long)]
    csv: PathBuf,
    /// Where the predictions go: one row per input row, the prediction and, for a
    /// classifier, each class's probability.
    #[arg(long, default_value = "predictions.csv")]
    out: PathBuf,
    #[command(flatten)]
    format: CsvFormat,
    #[arg(long, default_value = "auto")]
    device: String,
}

pub fn run(args: PredictArgs) -> Result<()> {
    let device = Device::parse(&args.device)?;
    let model = TabularModel::load(&args.checkpoint, &device)?;
    let (x, y) = read_rows(&model, &args.csv, &args.format, &device)?;
    let predicted = model.predict(&x)?;
    let rows = x.dims()[0];
    let values = predicted.to_f64_vec()?;
    let io = |e: String| Error::Io {
        op: "predict",
        path: args.out.display().to_string(),
        reason: e,
    };
    // Written to a temporary file and renamed: an interrupted run leaves no
    // half-written predictions under the final name.
    let partial = args.out.with_extension("csv.partial");
    let mut out = csv::Writer::from_path(&partial).map_err(|e| io(e.to_string()))?;
    let mut write = |record: Vec<String>| out.write_record(&record).map_err(|e| io(e.to_string()));
    match &model.spec.classes {
        Some(classes) => {
            let k = classes.len();
            let probs = classes.names().iter().map(|c| format!("p_{c}"));
            write(
                std::iter::once(model.spec.target.clone())
                    .chain(probs)
                    .collect(),
            )?;
            for row in values.chunks(k) {
                let best = (0..k).fold(0, |b, c| if row[c] > row[b] { c } else { b });
                let name = classes.name(best).unwrap_or_default().to_string();
                let probs = row.iter().map(|p| format!("{p:.6}"));
                write(std::iter::once(name).chain(probs).collect())?;
            }
        }
        None => {
            write(vec![model.spec.target.clone()])?;
            for v in &values {
                write(vec![(*v as f32).to_string()])?;
            }
        }
    }
    out.flush().map_err(|e| io(e.to_string()))?;
    drop(out);
    std::fs::rename(&partial, &args.out).map_err(|e| io(e.to_string()))?;
    println!("wrote {rows} predictions to {}", args.out.display());
    if let Some(y) = y {
        println!("against the file's {:?} column:", model.spec.target);
        report(&model, &predicted, &y)?;
    }
    Ok(())
}
