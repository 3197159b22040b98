//! `kiln explain --csv`: which features drove a tabular model's predictions, over the
//! rows of a CSV: mean |attribution| per feature, by name, as a bar chart and a table.
//! Attributions are taken in the model's input space (standardised features), where
//! zero is the training mean: Integrated Gradients and feature ablation start from it.

use crate::explain::{ExplainArgs, Method};
use crate::tabular::{default_checkpoint, read_rows, CsvFormat, TabularModel};
use kiln::{DType, Device, Error, Result, Tensor};
use kiln_nn::explain::{self, SmoothGrad};
use kiln_nn::Module;
use std::path::Path;

/// Rows attributed per batch (IG's steps and SmoothGrad's samples multiply it).
const ROWS_PER_BATCH: usize = 128;
/// Features listed on the terminal.
const SHOWN: usize = 10;

pub fn run(args: &ExplainArgs, csv: &Path, format: &CsvFormat, device: &Device) -> Result<()> {
    let checkpoint = args.checkpoint.clone().unwrap_or_else(default_checkpoint);
    let model = TabularModel::load(&checkpoint, device)?;
    let (x, _) = read_rows(&model, csv, format, device)?;
    let rows = x.dims()[0];
    let range = crate::saliency::selection(args.index, args.count.unwrap_or(rows), rows)?;
    let methods = match args.method.is_empty() {
        true => vec![Method::Ig],
        false => args.method.clone(),
    };
    if let Some(m) = methods.iter().find(|m| **m == Method::Gradcam) {
        return Err(Error::Unsupported {
            op: "explain",
            reason: format!("{m:?} needs a convolutional model; a tabular model has none"),
        });
    }
    crate::out_dir::create("explain", &args.out)?;
    for method in methods {
        let mut values = Vec::new();
        // IG's largest |sum of attributions - score change| and the mean |change|.
        let (mut worst_error, mut changes) = (0.0f64, Vec::new());
        for start in range.clone().step_by(ROWS_PER_BATCH) {
            let len = ROWS_PER_BATCH.min(range.end - start);
            let batch = x.narrow(0, start, len)?.contiguous()?;
            let (a, completeness) = attribution(args, &model, &batch, method)?;
            if let Some((errors, change)) = completeness {
                worst_error = errors.iter().fold(worst_error, |w, e| w.max(e.abs()));
                changes.extend(change.iter().map(|c| c.abs()));
            }
            values.extend(a.to_dtype(DType::F32)?.to_vec::<f32>()?);
        }
        let importance = explain::feature_importance(&model.spec.features, &values)?;
        let (file, label) = names(method);
        println!(
            "{label}: mean |attribution| per feature over rows {}..{} of {}, to the {}",
            range.start,
            range.end,
            csv.display(),
            match model.spec.classes {
                Some(_) => "predicted class's logit",
                None => "predicted value (standardised)",
            }
        );
        for (name, v) in importance.iter().take(SHOWN) {
            println!("  {name:>24}  {v:.4}");
        }
        if importance.len() > SHOWN {
            println!("  ... and {} more in the picture", importance.len() - SHOWN);
        }
        if method == Method::Ig {
            let mean_change = changes.iter().sum::<f64>() / changes.len().max(1) as f64;
            println!(
                "  completeness: each row's attributions sum to its score change from the mean row within {worst_error:.4} (the changes average {mean_change:.4})"
            );
        }
        let path = args.out.join(format!("explain_features_{file}.png"));
        let title = format!(
            "{label}: mean |attribution| per feature, {} rows",
            range.len()
        );
        explain::save_feature_bars(&importance, &title, &path)?;
        println!("  wrote {}", path.display());
    }
    Ok(())
}

/// The method's name in the file name, and for a person.
fn names(m: Method) -> (&'static str, &'static str) {
    match m {
        Method::Gradient => ("gradient", "gradient"),
        Method::GradientXInput => ("gradient_x_input", "gradient x input"),
        Method::Smoothgrad => ("smoothgrad", "SmoothGrad x input"),
        Method::Ig => ("ig", "Integrated Gradients"),
        Method::Gradcam => ("gradcam", "Grad-CAM"),
        Method::Occlusion => ("ablation", "feature ablation"),
    }
}

/// Integrated Gradients' completeness error and score change, per row.
type Completeness = (Vec<f64>, Vec<f64>);

/// The attributions `[n, F]` of a batch of scaled rows to each row's predicted class
/// (or the predicted value), and for IG each row's completeness error and score change.
fn attribution(
    args: &ExplainArgs,
    model: &TabularModel,
    x: &Tensor,
    method: Method,
) -> Result<(Tensor, Option<Completeness>)> {
    let f = |x: &Tensor| model.model.forward(x);
    let classes: Vec<usize> = match model.spec.classes {
        Some(_) => kiln::no_grad(|| f(x)?.argmax(-1, false))?
            .to_vec::<i32>()?
            .into_iter()
            .map(|c| c as usize)
            .collect(),
        None => vec![0; x.dims()[0]],
    };
    let smooth = SmoothGrad {
        samples: args.samples,
        noise: args.noise,
        seed: 0,
    };
    Ok(match method {
        Method::Gradient => (explain::gradient(&f, x, &classes)?, None),
        Method::GradientXInput => (explain::gradient_x_input(&f, x, &classes)?, None),
        Method::Smoothgrad => (explain::smoothgrad(&f, x, &classes, smooth)?.mul(x)?, None),
        Method::Ig => {
            let ig = explain::integrated_gradients(&f, x, &classes, None, args.steps)?;
            (
                ig.attribution,
                Some((ig.completeness_error, ig.score_change)),
            )
        }
        Method::Occlusion => {
            let mean = vec![0.0; x.dims()[1]];
            (explain::feature_ablation(&f, x, &classes, &mean)?, None)
        }
        Method::Gradcam => unreachable!("refused before any work"),
    })
}
