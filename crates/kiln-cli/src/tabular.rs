//! `kiln train mlp --csv`: a multilayer perceptron on any CSV, with what a tabular
//! workflow needs done for it: the target read by name, a seeded (stratified, for
//! classes) split, standard scaling fitted on the training rows, early stopping on a
//! validation part, the test metrics; and the checkpoint that `kiln predict` and
//! `kiln explain --csv` read back, which carries the scaler, the feature names and the
//! classes with the weights.

use clap::{Args, ValueEnum};
use kiln::{Device, Error, Result, Rng, Tensor};
use kiln_nn::data::{
    read_columns, read_table, stratified_split, train_test_split, Classes, Column, CsvOptions,
    DataLoader, Dataset, Missing, Scaler, StandardScaler, Table, TensorDataset,
};
use kiln_nn::layers::{Activation, Linear, Sequential};
use kiln_nn::metrics::{
    mean_absolute_error, mean_squared_error, r2_score, roc_auc, ConfusionMatrix,
};
use kiln_nn::optim::Adam;
use kiln_nn::train::{
    classification_step, fit, load_checkpoint, regression_step, restore, EarlyStopping, FitConfig,
};
use kiln_nn::{Module, ModuleExt};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Task {
    /// Predict a class: cross-entropy, accuracy and per-class scores.
    Classify,
    /// Predict a number: mean squared error, R^2.
    Regress,
}

/// How a CSV is laid out; `kiln train --csv`, `kiln predict` and `kiln explain --csv`
/// share these flags.
#[derive(Args, Clone, Debug)]
pub struct CsvFormat {
    /// Lines to skip at the top of the file (a metadata line, say).
    #[arg(long, default_value_t = 0)]
    pub skip_lines: usize,
    /// The file has no header row: columns are named `column 0`, `column 1`, ...
    #[arg(long)]
    pub no_header: bool,
    #[arg(long, default_value_t = ',')]
    pub delimiter: char,
    /// Missing feature values (empty, NA, NaN, ?): an error, or replaced by the
    /// training mean of their column (after scaling: 0).
    #[arg(long, value_enum, default_value_t = MissingValues::Error)]
    pub missing: MissingValues,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MissingValues {
    Error,
    Mean,
}

impl CsvFormat {
    pub fn options(&self, target: Option<Column>) -> Result<CsvOptions> {
        let delimiter = u8::try_from(self.delimiter).map_err(|_| Error::InvalidArgument {
            op: "csv",
            reason: format!(
                "--delimiter {:?} is not a single-byte character",
                self.delimiter
            ),
        })?;
        Ok(CsvOptions {
            skip_lines: self.skip_lines,
            header: !self.no_header,
            delimiter,
            target,
            missing: match self.missing {
                MissingValues::Error => Missing::Error,
                MissingValues::Mean => Missing::Nan,
            },
        })
    }
}

/// `kiln train mlp --csv`'s own flags.
#[derive(Args, Clone, Debug)]
pub struct CsvTrainArgs {
    /// With --csv: the column to predict, by header name or position (0 first, -1 last).
    #[arg(long, default_value = "-1")]
    pub target: String,
    #[arg(long, value_enum, default_value_t = Task::Classify)]
    pub task: Task,
    /// With --csv: the hidden layers' widths (scikit-learn's MLP default is one of 100).
    #[arg(long, value_delimiter = ',', default_value = "100")]
    pub hidden: Vec<usize>,
    /// With --csv: the share of rows held out for the test metrics (the validation part
    /// for early stopping is a further 10% of the rest).
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// With --csv: test on this file (same columns) instead of a part of --csv, e.g. to
    /// compare with another tool on the same split.
    #[arg(long)]
    pub test_csv: Option<PathBuf>,
    #[command(flatten)]
    pub format: CsvFormat,
}

/// What a tabular checkpoint says besides its weights: enough to rebuild the model and
/// read new rows the way the training rows were read.
#[derive(Clone, Debug, PartialEq)]
pub struct TabularSpec {
    pub task: Task,
    pub features: Vec<String>,
    pub target: String,
    /// The class names, in id order (classification).
    pub classes: Option<Classes>,
    pub hidden: Vec<usize>,
}

/// The checkpoint's tensors for the feature and target scalers.
const SCALER: &str = "scaler.";
const TARGET_SCALER: &str = "target_scaler.";
/// `model` in a tabular checkpoint's metadata.
const MODEL_NAME: &str = "mlp-csv";

impl TabularSpec {
    fn outputs(&self) -> usize {
        self.classes.as_ref().map_or(1, Classes::len)
    }

    /// Linear + ReLU per hidden width, then a linear layer to the logits (or the value).
    pub fn build(&self, device: &Device, rng: &mut Rng) -> Result<Sequential> {
        let mut model = Sequential::new();
        let mut width = self.features.len();
        for &h in &self.hidden {
            model = model
                .append(Linear::new(width, h, device, rng)?)
                .append(Activation::ReLU);
            width = h;
        }
        Ok(model.append(Linear::new(width, self.outputs(), device, rng)?))
    }

    fn to_metadata(&self) -> HashMap<String, String> {
        let json = |v: &[String]| serde_json::Value::from(v.to_vec()).to_string();
        let mut m = HashMap::from([
            ("model".to_string(), MODEL_NAME.to_string()),
            (
                "task".to_string(),
                format!("{:?}", self.task).to_lowercase(),
            ),
            ("features".to_string(), json(&self.features)),
            ("target".to_string(), self.target.clone()),
            (
                "hidden".to_string(),
                serde_json::Value::from(self.hidden.clone()).to_string(),
            ),
        ]);
        if let Some(c) = &self.classes {
            m.insert("classes".to_string(), json(c.names()));
        }
        m
    }

    fn from_metadata(m: &HashMap<String, String>, path: &Path) -> Result<TabularSpec> {
        let bad = |reason: String| Error::Io {
            op: "load tabular model",
            path: path.display().to_string(),
            reason,
        };
        if m.get("model").map(String::as_str) != Some(MODEL_NAME) {
            return Err(bad(format!(
                "not a checkpoint of `kiln train mlp --csv` (its model is {:?})",
                m.get("model")
            )));
        }
        let field = |k: &str| {
            m.get(k)
                .ok_or_else(|| bad(format!("its metadata has no {k:?}")))
        };
        let parse = |k: &str| -> Result<serde_json::Value> {
            serde_json::from_str(field(k)?).map_err(|e| bad(format!("{k}: {e}")))
        };
        let task = match field("task")?.as_str() {
            "classify" => Task::Classify,
            "regress" => Task::Regress,
            t => return Err(bad(format!("unknown task {t:?}"))),
        };
        let strings = |v: serde_json::Value, k: &str| -> Result<Vec<String>> {
            serde_json::from_value(v).map_err(|e| bad(format!("{k}: {e}")))
        };
        let features = strings(parse("features")?, "features")?;
        let hidden: Vec<usize> =
            serde_json::from_value(parse("hidden")?).map_err(|e| bad(format!("hidden: {e}")))?;
        let classes = match task {
            Task::Classify => Some(Classes::from_names(strings(parse("classes")?, "classes")?)?),
            Task::Regress => None,
        };
        Ok(TabularSpec {
            task,
            features,
            target: field("target")?.clone(),
            classes,
            hidden,
        })
    }
}

/// A trained tabular model with what it needs to read raw rows.
pub struct TabularModel {
    pub spec: TabularSpec,
    pub model: Sequential,
    pub scaler: StandardScaler,
    pub target_scaler: Option<StandardScaler>,
}

impl TabularModel {
    /// The checkpoint `kiln train mlp --csv` wrote, on `device`, in evaluation mode.
    pub fn load(path: &Path, device: &Device) -> Result<TabularModel> {
        let checkpoint = load_checkpoint(path)?;
        let spec = TabularSpec::from_metadata(&checkpoint.metadata, path)?;
        let model = spec.build(device, &mut Rng::new(0))?;
        let scaler = StandardScaler::load(&checkpoint.tensors, SCALER)?;
        let target_scaler = match spec.task {
            Task::Regress => Some(StandardScaler::load(&checkpoint.tensors, TARGET_SCALER)?),
            Task::Classify => None,
        };
        // The scalers' tensors are read above; the model takes the rest, strictly.
        let mut targets = model.state_dict();
        for (name, t) in scaler_state(&scaler, target_scaler.as_ref())? {
            targets.push((name, t));
        }
        restore(&checkpoint, &targets)?;
        model.eval();
        Ok(TabularModel {
            spec,
            model,
            scaler,
            target_scaler,
        })
    }

    /// `table`'s features, in the order the model was trained on (found by name), scaled,
    /// missing values set to the training mean, on `device`.
    pub fn inputs(&self, table: &Table, device: &Device) -> Result<Tensor> {
        let missing: Vec<&String> = self
            .spec
            .features
            .iter()
            .filter(|f| !table.feature_names.contains(f))
            .collect();
        if !missing.is_empty() {
            return Err(Error::InvalidArgument {
                op: "predict",
                reason: format!(
                    "the file lacks the model's feature columns {missing:?} (it has {:?})",
                    table.feature_names
                ),
            });
        }
        let ids: Vec<i32> = self
            .spec
            .features
            .iter()
            .filter_map(|f| table.feature_names.iter().position(|n| n == f))
            .map(|i| i as i32)
            .collect();
        let ids = Tensor::from_vec(ids, [self.spec.features.len()], &Device::cpu())?;
        scaled(&self.scaler, &table.features.index_select(1, &ids)?, device)
    }

    /// The model's outputs for scaled rows `x`: class probabilities `[N, classes]`, or
    /// predicted values `[N]` in the target's units.
    pub fn predict(&self, x: &Tensor) -> Result<Tensor> {
        kiln::no_grad(|| {
            let out = self.model.forward(x)?;
            match &self.target_scaler {
                Some(s) => s.inverse_transform(&out)?.reshape([x.dims()[0]]),
                None => out.softmax(-1),
            }
        })
    }
}

/// Placeholders named as the scalers' checkpoint tensors, so that `restore` can be
/// strict about everything else.
fn scaler_state(
    scaler: &StandardScaler,
    target: Option<&StandardScaler>,
) -> Result<Vec<(String, Tensor)>> {
    let mut state = scaler.state(SCALER)?;
    if let Some(t) = target {
        state.extend(t.state(TARGET_SCALER)?);
    }
    Ok(state)
}

/// `x` scaled, with missing values (NaN) at the training mean, which scaling maps to 0.
fn scaled(scaler: &StandardScaler, x: &Tensor, device: &Device) -> Result<Tensor> {
    let x = scaler.transform(x)?;
    let values: Vec<f32> = x
        .to_vec::<f32>()?
        .into_iter()
        .map(|v| if v.is_nan() { 0.0 } else { v })
        .collect();
    Tensor::from_vec(values, x.dims().to_vec(), device)
}

/// What `train` needs from `kiln train`'s common flags.
pub struct Run<'a> {
    pub csv: &'a Path,
    pub args: &'a CsvTrainArgs,
    pub device: &'a Device,
    pub epochs: Option<usize>,
    pub batch_size: Option<usize>,
    pub lr: Option<f64>,
    pub seed: u64,
    pub out: &'a Path,
    pub minutes: Option<f64>,
}

/// Trains, tests and saves the model; prints the test metrics.
pub fn train(run: Run<'_>) -> Result<()> {
    let args = run.args;
    let options = args.format.options(Some(Column::parse(&args.target)))?;
    let table = read_table(run.csv, &options)?;
    let (target_name, fields) = table.target_column("train")?;
    let classes = match args.task {
        Task::Classify => Some(Classes::fit(fields)?),
        Task::Regress => None,
    };
    let targets = targets_of(&table, classes.as_ref())?;
    let spec = TabularSpec {
        task: args.task,
        features: table.feature_names.clone(),
        target: target_name.to_string(),
        classes,
        hidden: args.hidden.clone(),
    };
    if spec.hidden.contains(&0) {
        return Err(Error::InvalidArgument {
            op: "train",
            reason: format!("--hidden {:?}: every layer needs a width", spec.hidden),
        });
    }
    let all = TensorDataset::new(table.features.clone(), targets)?;
    let split = |data: &TensorDataset, fraction: f64, seed: u64| match args.task {
        Task::Classify => stratified_split(data, fraction, seed),
        Task::Regress => train_test_split(data, fraction, seed),
    };
    let (rest, test) = match &args.test_csv {
        None => split(&all, args.test_fraction, run.seed)?,
        Some(path) => {
            let named = Some(Column::Name(target_name.to_string()));
            let options = match options.header {
                true => args.format.options(named)?,
                false => options.clone(),
            };
            let table = read_table(path, &options)?;
            if table.feature_names != spec.features {
                return Err(Error::InvalidArgument {
                    op: "train",
                    reason: format!(
                        "--test-csv has the feature columns {:?}, --csv {:?}",
                        table.feature_names, spec.features
                    ),
                });
            }
            let targets = targets_of(&table, spec.classes.as_ref())?;
            (
                all.clone(),
                TensorDataset::new(table.features.clone(), targets)?,
            )
        }
    };
    let (train, val) = split(&rest, 0.1, run.seed.wrapping_add(1))?;
    let scaler = StandardScaler::fit(&train.inputs)?;
    let target_scaler = match args.task {
        Task::Regress => Some(StandardScaler::fit(
            &train.targets.reshape([train.len(), 1])?,
        )?),
        Task::Classify => None,
    };
    let cpu = Device::cpu();
    let prepare = |part: &TensorDataset| -> Result<TensorDataset> {
        let targets = match &target_scaler {
            Some(s) => {
                let n = part.len();
                s.transform(&part.targets.reshape([n, 1])?)?.reshape([n])?
            }
            None => part.targets.clone(),
        };
        TensorDataset::new(scaled(&scaler, &part.inputs, &cpu)?, targets)
    };
    let (train_set, val_set) = (prepare(&train)?, prepare(&val)?);

    let mut rng = Rng::new(run.seed);
    let model = spec.build(run.device, &mut rng)?;
    let epochs = run.epochs.unwrap_or(200);
    let batch_size = run.batch_size.unwrap_or(200.min(train.len()));
    let lr = run.lr.unwrap_or(1e-3);
    println!(
        "training mlp {:?} ({} parameters) to {} {:?} from {} features of {}: {} train / {} validation / {} test rows, device {}, at most {epochs} epochs, batch {batch_size}, lr {lr}",
        spec.hidden,
        model.num_parameters(),
        match args.task {
            Task::Classify => format!("classify ({} classes)", spec.outputs()),
            Task::Regress => "regress".to_string(),
        },
        spec.target,
        spec.features.len(),
        run.csv.display(),
        train.len(),
        val.len(),
        test.len(),
        run.device,
    );
    let train_loader = DataLoader::new(&train_set, batch_size, run.device)?.shuffled(run.seed);
    let val_loader = DataLoader::new(&val_set, 1024, run.device)?;
    let mut optimizer = Adam::new(model.named_parameters(), lr);
    let config = FitConfig {
        epochs,
        early_stopping: Some(EarlyStopping {
            patience: 10,
            min_delta: 1e-4,
            restore_best: true,
        }),
        verbose: true,
        max_seconds: run.minutes.map(|m| m * 60.0),
        divergence_factor: Some(crate::train::DIVERGENCE_FACTOR),
        ..FitConfig::default()
    };
    let step = match args.task {
        Task::Classify => classification_step,
        Task::Regress => regression_step,
    };
    let history = fit(
        &model,
        &mut optimizer,
        None,
        &train_loader,
        Some(&val_loader),
        &step,
        &config,
    )?;
    model.eval();
    let trained = TabularModel {
        spec,
        model,
        scaler,
        target_scaler,
    };
    let x_test = scaled(&trained.scaler, &test.inputs, run.device)?;
    println!(
        "best epoch {} of {}; test metrics on {} held-out rows:",
        history.best_epoch,
        history.epochs.len(),
        test.len()
    );
    report(&trained, &trained.predict(&x_test)?, &test.targets)?;

    let mut state = trained.model.state_dict();
    state.extend(scaler_state(
        &trained.scaler,
        trained.target_scaler.as_ref(),
    )?);
    let steps = history.epochs.iter().map(|e| e.steps).sum();
    let path = run.out.join("model.safetensors");
    crate::train::save_trained(&path, &state, &trained.spec.to_metadata(), steps)?;
    println!(
        "wrote {} (weights, scaler, feature names{})",
        path.display(),
        if trained.spec.classes.is_some() {
            ", classes"
        } else {
            ""
        }
    );
    Ok(())
}

/// Prints the metrics of `predicted` (as `TabularModel::predict` gives them) against
/// `targets` (class ids, or values in the target's units).
pub fn report(model: &TabularModel, predicted: &Tensor, targets: &Tensor) -> Result<()> {
    match &model.spec.classes {
        Some(classes) => {
            let ids = predicted.argmax(-1, false)?;
            let m = ConfusionMatrix::new(&ids, targets, classes.len())?;
            print!("{}", m.report(classes.names()));
            if classes.len() == 2 {
                let positive = predicted.narrow(1, 1, 1)?.reshape([targets.elem_count()])?;
                println!(
                    "ROC AUC ({:?} positive): {:.4}",
                    classes.names()[1],
                    roc_auc(&positive, targets)?
                );
            }
            println!("test accuracy: {:.4}", m.accuracy());
        }
        None => {
            println!("test MSE: {:.4}", mean_squared_error(predicted, targets)?);
            println!("test MAE: {:.4}", mean_absolute_error(predicted, targets)?);
            println!("test R^2: {:.4}", r2_score(predicted, targets)?);
        }
    }
    Ok(())
}

/// Where `kiln predict` and `kiln explain --csv` find the model by default.
pub fn default_checkpoint() -> PathBuf {
    PathBuf::from("runs/mlp/model.safetensors")
}

/// `table`'s target column as class ids of `classes`, or as numbers to regress when
/// there are none.
fn targets_of(table: &Table, classes: Option<&Classes>) -> Result<Tensor> {
    match classes {
        Some(classes) => classes.encode(table.target_column("targets")?.1),
        None => table.numeric_target(),
    }
}

/// The rows of `csv` as `model` reads them: its features scaled on `device`, and the
/// target column (as class ids or values) when the file has it under the training name.
pub fn read_rows(
    model: &TabularModel,
    csv: &Path,
    format: &CsvFormat,
    device: &Device,
) -> Result<(Tensor, Option<Tensor>)> {
    let headers = read_columns(csv, &format.options(None)?)?;
    let target = headers
        .contains(&model.spec.target)
        .then(|| Column::Name(model.spec.target.clone()));
    let table = read_table(csv, &format.options(target)?)?;
    let x = model.inputs(&table, device)?;
    let y = match table.target {
        Some(_) => Some(targets_of(&table, model.spec.classes.as_ref())?),
        None => None,
    };
    Ok((x, y))
}
