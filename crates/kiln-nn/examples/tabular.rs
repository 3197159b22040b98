//! A tabular classifier from a CSV, end to end: read the file with its target column,
//! split off a stratified validation part, scale the features, train an MLP with early
//! stopping, and print the test metrics. No split, scaling, shuffling, label encoding
//! or metric is written by hand.
//!
//!     cargo run --release -p kiln-nn --example tabular [-- train.csv test.csv target]
//!
//! Without arguments it uses scikit-learn's digits data set, split once into
//! examples/data/digits_{train,test}.csv (make_tabular.py there prints scikit-learn's
//! MLP accuracy on the same split).

use kiln::{Device, Result, Rng};
use kiln_nn::data::{
    read_table, stratified_split, Classes, Column, CsvOptions, DataLoader, Scaler, StandardScaler,
    TensorDataset,
};
use kiln_nn::layers::{Activation, Linear, Sequential};
use kiln_nn::metrics::ConfusionMatrix;
use kiln_nn::optim::Adam;
use kiln_nn::train::{classification_step, fit, EarlyStopping, FitConfig};
use kiln_nn::{Module, ModuleExt};

fn main() -> Result<()> {
    let here = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (train_csv, test_csv, target) = match args.as_slice() {
        [train, test, target] => (train.clone(), test.clone(), target.clone()),
        _ => (
            format!("{here}/digits_train.csv"),
            format!("{here}/digits_test.csv"),
            "digit".to_string(),
        ),
    };
    // Short runs (CI) set KILN_EXAMPLE_EPOCHS.
    let epochs = std::env::var("KILN_EXAMPLE_EPOCHS")
        .ok()
        .and_then(|e| e.parse().ok())
        .unwrap_or(200);

    // The target column by name; its values (here digits, or any class names) become
    // class ids 0..K.
    let options = CsvOptions {
        target: Some(Column::Name(target)),
        ..CsvOptions::default()
    };
    let train_table = read_table(&train_csv, &options)?;
    let test_table = read_table(&test_csv, &options)?;
    let (_, train_labels) = train_table.target_column("example")?;
    let classes = Classes::fit(train_labels)?;
    let data = TensorDataset::new(train_table.features.clone(), classes.encode(train_labels)?)?;
    let (_, test_labels) = test_table.target_column("example")?;
    let test_targets = classes.encode(test_labels)?;

    // 10% of the training rows, with each class's share, decide when to stop.
    let (train, val) = stratified_split(&data, 0.1, 0)?;
    let scaler = StandardScaler::fit(&train.inputs)?;
    let train = TensorDataset::new(scaler.transform(&train.inputs)?, train.targets)?;
    let val = TensorDataset::new(scaler.transform(&val.inputs)?, val.targets)?;

    let device = Device::best()?;
    let mut rng = Rng::new(0);
    let features = train_table.feature_names.len();
    let model = Sequential::new()
        .append(Linear::new(features, 100, &device, &mut rng)?)
        .append(Activation::ReLU)
        .append(Linear::new(100, classes.len(), &device, &mut rng)?);
    let mut optimizer = Adam::new(model.named_parameters(), 1e-3);
    let train_loader = DataLoader::new(&train, 200, &device)?.shuffled(0);
    let val_loader = DataLoader::new(&val, 1024, &device)?;
    let config = FitConfig {
        epochs,
        early_stopping: Some(EarlyStopping {
            patience: 10,
            min_delta: 1e-4,
            restore_best: true,
        }),
        verbose: false,
        ..FitConfig::default()
    };
    let history = fit(
        &model,
        &mut optimizer,
        None,
        &train_loader,
        Some(&val_loader),
        &classification_step,
        &config,
    )?;

    model.eval();
    let x_test = scaler.transform(&test_table.features)?.to_device(&device)?;
    let predicted = kiln::no_grad(|| model.forward(&x_test)?.argmax(-1, false))?;
    let matrix = ConfusionMatrix::new(&predicted, &test_targets, classes.len())?;
    println!(
        "{} epochs (best {}), device {device}",
        history.epochs.len(),
        history.best_epoch
    );
    print!("{}", matrix.report(classes.names()));
    println!("test accuracy: {:.4}", matrix.accuracy());
    Ok(())
}
