//! Tabular data: CSV reading with options, class names, seeded and stratified splits,
//! scalers, and metrics against scikit-learn's values.

use kiln::{Device, Tensor};
use kiln_nn::data::{
    read_table, stratified_split, train_test_split, Classes, Column, CsvOptions, Dataset,
    MinMaxScaler, Missing, Scaler, StandardScaler, Subset, TensorDataset,
};
use kiln_nn::metrics::{
    accuracy, mean_absolute_error, mean_squared_error, r2_score, roc_auc, ConfusionMatrix,
};
use std::path::PathBuf;

fn write(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-tabular-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn f32s(v: &[f32]) -> Tensor {
    Tensor::from_vec(v.to_vec(), [v.len()], &Device::cpu()).unwrap()
}

fn i32s(v: &[i32]) -> Tensor {
    Tensor::from_vec(v.to_vec(), [v.len()], &Device::cpu()).unwrap()
}

#[test]
fn a_metadata_line_is_skipped_and_the_target_is_picked_by_name_or_position() {
    // scikit-learn's bundled files open with a line of another width.
    let path = write(
        "iris.csv",
        "150,4,setosa,versicolor\nsepal,petal,species\n5.1, 3.5,setosa\n7.0,3.2,versicolor\n",
    );
    for target in [
        Column::Name("species".into()),
        Column::Index(2),
        Column::Index(-1),
    ] {
        let options = CsvOptions {
            skip_lines: 1,
            target: Some(target.clone()),
            ..CsvOptions::default()
        };
        let table = read_table(&path, &options).unwrap();
        assert_eq!(table.feature_names, ["sepal", "petal"], "{target:?}");
        assert_eq!(table.features.dims(), [2, 2]);
        assert_eq!(
            table.features.to_vec::<f32>().unwrap(),
            [5.1, 3.5, 7.0, 3.2]
        );
        let (name, fields) = table.target.clone().unwrap();
        assert_eq!(
            (name.as_str(), fields),
            ("species", vec!["setosa".to_string(), "versicolor".into()])
        );
    }
    // Without skipping, the metadata line's width differs from the rows: an error.
    assert!(read_table(&path, &CsvOptions::default()).is_err());
    // A column that is not there, named or by position.
    for bad in [
        Column::Name("label".into()),
        Column::Index(3),
        Column::Index(-4),
    ] {
        let options = CsvOptions {
            skip_lines: 1,
            target: Some(bad.clone()),
            ..CsvOptions::default()
        };
        let e = read_table(&path, &options).unwrap_err().to_string();
        assert!(e.contains("iris.csv"), "{bad:?}: {e}");
    }
    // A name needs a header.
    let no_header = CsvOptions {
        header: false,
        target: Some(Column::Name("x".into())),
        ..CsvOptions::default()
    };
    assert!(read_table(write("nh.csv", "1,2\n"), &no_header).is_err());
}

#[test]
fn delimiters_missing_values_and_errors_naming_the_line() {
    let path = write("semi.csv", "a;b;y\n1;;0\n2;NA;1\n3;4;1\n");
    let strict = CsvOptions {
        delimiter: b';',
        target: Some(Column::Name("y".into())),
        ..CsvOptions::default()
    };
    let e = read_table(&path, &strict).unwrap_err().to_string();
    assert!(e.contains("line 2") && e.contains("\"b\""), "{e}");
    let lenient = CsvOptions {
        missing: Missing::Nan,
        ..strict
    };
    let table = read_table(&path, &lenient).unwrap();
    let v = table.features.to_vec::<f32>().unwrap();
    assert!(v[1].is_nan() && v[3].is_nan());
    assert_eq!((v[0], v[2], v[4], v[5]), (1.0, 2.0, 3.0, 4.0));
    let ragged = write("ragged.csv", "a,b\n1,2\n3\n");
    assert!(read_table(&ragged, &CsvOptions::default()).is_err());
    let text = write("text.csv", "a,b\n1,2\n3,x\n");
    let e = read_table(&text, &CsvOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 3") && e.contains("\"x\""), "{e}");
    // The line count includes skipped lines.
    let skipped = CsvOptions {
        skip_lines: 2,
        ..CsvOptions::default()
    };
    let e = read_table(write("skip.csv", "#\n#\na\n1\ninf\n"), &skipped)
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 5"), "{e}");
    let too_few = CsvOptions {
        skip_lines: 9,
        ..CsvOptions::default()
    };
    assert!(read_table(write("short.csv", "a\n1\n"), &too_few).is_err());
}

#[test]
fn class_names_sort_numerically_when_they_are_numbers_and_encode_to_i32() {
    let labels: Vec<String> = ["10", "9", "2", "9"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let classes = Classes::fit(&labels).unwrap();
    assert_eq!(classes.names(), ["2", "9", "10"]);
    let ids = classes.encode(&labels).unwrap();
    assert_eq!(ids.dtype(), kiln::DType::I32);
    assert_eq!(ids.to_vec::<i32>().unwrap(), [2, 1, 0, 1]);
    let words: Vec<String> = ["no", "yes", "no"].iter().map(|s| s.to_string()).collect();
    let classes = Classes::fit(&words).unwrap();
    assert_eq!(classes.names(), ["no", "yes"]);
    assert!(classes.encode(&["maybe".to_string()]).is_err());
    assert!(Classes::fit(&["a".to_string(), "".to_string()]).is_err());
    assert!(Classes::from_names(vec!["a".into(), "a".into()]).is_err());
}

/// 30 samples sorted by class (12 of class 0, 12 of 1, 6 of 2): input i is i.
fn sorted_by_class() -> TensorDataset {
    let labels: Vec<i32> = (0..30)
        .map(|i| {
            if i < 12 {
                0
            } else if i < 24 {
                1
            } else {
                2
            }
        })
        .collect();
    let x: Vec<f32> = (0..30).map(|i| i as f32).collect();
    TensorDataset::new(
        Tensor::from_vec(x, [30, 1], &Device::cpu()).unwrap(),
        i32s(&labels),
    )
    .unwrap()
}

fn ids(part: &TensorDataset) -> Vec<usize> {
    part.inputs
        .to_vec::<f32>()
        .unwrap()
        .iter()
        .map(|&v| v as usize)
        .collect()
}

#[test]
fn splits_are_seeded_disjoint_and_stratified_splits_keep_each_class_share() {
    let data = sorted_by_class();
    let (train, test) = train_test_split(&data, 0.2, 7).unwrap();
    assert_eq!((train.len(), test.len()), (24, 6));
    let mut all = [ids(&train), ids(&test)].concat();
    all.sort();
    assert_eq!(all, (0..30).collect::<Vec<_>>());
    let (_, again) = train_test_split(&data, 0.2, 7).unwrap();
    assert_eq!(
        ids(&again),
        ids(&test),
        "the same seed gives the same split"
    );
    let (_, other) = train_test_split(&data, 0.2, 8).unwrap();
    assert_ne!(ids(&other), ids(&test));
    // Unlike `split`, the test part is not the file's last (class-2) rows.
    assert!(ids(&test).iter().any(|&i| i < 24));

    for seed in 0..5 {
        let (train, test) = stratified_split(&data, 0.25, seed).unwrap();
        assert_eq!(test.len(), 8); // ceil(0.25 * 30)
        let count = |part: &TensorDataset, c: i32| {
            part.targets
                .to_vec::<i32>()
                .unwrap()
                .iter()
                .filter(|&&l| l == c)
                .count()
        };
        // Exact shares 3, 3 and 1.5: the remainder goes to class 2.
        assert_eq!(
            [count(&test, 0), count(&test, 1), count(&test, 2)],
            [3, 3, 2]
        );
        assert_eq!(
            [count(&train, 0), count(&train, 1), count(&train, 2)],
            [9, 9, 4]
        );
        let mut all = [ids(&train), ids(&test)].concat();
        all.sort();
        assert_eq!(all, (0..30).collect::<Vec<_>>());
        // Inputs still belong to their labels.
        for (x, y) in ids(&test).iter().zip(test.targets.to_vec::<i32>().unwrap()) {
            assert_eq!(
                y,
                if *x < 12 {
                    0
                } else if *x < 24 {
                    1
                } else {
                    2
                }
            );
        }
    }
    for bad in [0.0, 1.0, -0.1, f64::NAN] {
        assert!(train_test_split(&data, bad, 0).is_err(), "{bad}");
    }
    // A class of one sample (a quantity to regress, most likely) cannot be stratified.
    let single = TensorDataset::new(
        Tensor::from_vec(vec![0.0f32; 4], [4, 1], &Device::cpu()).unwrap(),
        i32s(&[0, 0, 1, 2]),
    )
    .unwrap();
    let e = stratified_split(&single, 0.5, 0).unwrap_err().to_string();
    assert!(e.contains("single sample"), "{e}");
    let floats =
        TensorDataset::new(data.inputs.clone(), data.inputs.reshape([30]).unwrap()).unwrap();
    assert!(stratified_split(&floats, 0.2, 0).is_err());
}

#[test]
fn a_subset_reads_through_to_its_dataset_and_refuses_indices_past_the_end() {
    let data = sorted_by_class();
    let subset = Subset::new(&data, vec![29, 3, 3]).unwrap();
    assert_eq!(subset.len(), 3);
    let (x, y) = subset.get_batch(&[0, 2]).unwrap();
    assert_eq!(x.to_vec::<f32>().unwrap(), [29.0, 3.0]);
    assert_eq!(y.to_vec::<i32>().unwrap(), [2, 0]);
    assert!(subset.get_batch(&[3]).is_err());
    assert!(Subset::new(&data, vec![30]).is_err());
    assert!(data.select(&[30]).is_err());
}

#[test]
fn scalers_match_their_formulas_ignore_missing_values_and_round_trip() {
    let cpu = Device::cpu();
    // Columns: [1, 2, 3, NaN] (mean 2, population std sqrt(2/3)), constant 5, [0, 10, 20, 30].
    let x = Tensor::from_vec(
        vec![
            1.0f32,
            5.0,
            0.0,
            2.0,
            5.0,
            10.0,
            3.0,
            5.0,
            20.0,
            f32::NAN,
            5.0,
            30.0,
        ],
        [4, 3],
        &cpu,
    )
    .unwrap();
    let standard = StandardScaler::fit(&x).unwrap();
    assert_eq!(standard.mean, [2.0, 5.0, 15.0]);
    let std0 = (2.0f64 / 3.0).sqrt();
    let std2 = 125.0f64.sqrt();
    assert!((standard.inv_std[0] as f64 - 1.0 / std0).abs() < 1e-6);
    assert_eq!(
        standard.inv_std[1], 1.0,
        "a constant column is only centred"
    );
    assert!((standard.inv_std[2] as f64 - 1.0 / std2).abs() < 1e-7);
    let scaled = standard.transform(&x).unwrap().to_vec::<f32>().unwrap();
    assert!((scaled[0] as f64 - (-1.0 / std0)).abs() < 1e-6);
    assert_eq!(scaled[1], 0.0);
    assert!(scaled[9].is_nan(), "NaN stays NaN");
    let minmax = MinMaxScaler::fit(&x).unwrap();
    assert_eq!(
        (minmax.min.clone(), minmax.inv_range.clone()),
        (vec![1.0, 5.0, 0.0], vec![0.5, 1.0, 1.0 / 30.0])
    );
    let scaled = minmax.transform(&x).unwrap();
    let back = minmax
        .inverse_transform(&scaled)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    for (a, b) in back.iter().zip(x.to_vec::<f32>().unwrap()) {
        assert!(a.is_nan() && b.is_nan() || (a - b).abs() < 1e-5, "{a} {b}");
    }
    let saved: std::collections::HashMap<_, _> =
        standard.state("scaler.").unwrap().into_iter().collect();
    assert_eq!(StandardScaler::load(&saved, "scaler.").unwrap(), standard);
    assert!(StandardScaler::load(&saved, "other.").is_err());
    assert!(standard
        .transform(&Tensor::zeros([2, 2], kiln::DType::F32, &cpu).unwrap())
        .is_err());
    let empty_column = Tensor::from_vec(vec![f32::NAN, 1.0], [1, 2], &cpu).unwrap();
    assert!(StandardScaler::fit(&empty_column).is_err());
}

#[test]
fn classification_metrics_match_scikit_learn() {
    // The values in the comments are scikit-learn 1.9's for the same arrays.
    let truth = i32s(&[0, 1, 2, 2, 1, 0, 2, 1, 1, 0]);
    let predicted = i32s(&[0, 2, 2, 2, 1, 0, 1, 1, 0, 0]);
    assert!((accuracy(&predicted, &truth).unwrap() - 0.7).abs() < 1e-12);
    let m = ConfusionMatrix::new(&predicted, &truth, 3).unwrap();
    // confusion_matrix: [[3, 0, 0], [1, 2, 1], [0, 1, 2]]
    let counts: Vec<usize> = (0..3)
        .flat_map(|t| (0..3).map(move |p| (t, p)))
        .map(|(t, p)| m.count(t, p))
        .collect();
    assert_eq!(counts, [3, 0, 0, 1, 2, 1, 0, 1, 2]);
    // precision_recall_fscore_support
    let expect = [
        (0.75, 1.0, 0.857142857142857, 3),
        (0.666666666666667, 0.5, 0.571428571428571, 4),
        (0.666666666666667, 0.666666666666667, 0.666666666666667, 3),
    ];
    for (c, (p, r, f, s)) in expect.into_iter().enumerate() {
        assert!((m.precision(c) - p).abs() < 1e-12, "class {c}");
        assert!((m.recall(c) - r).abs() < 1e-12);
        assert!((m.f1(c) - f).abs() < 1e-12);
        assert_eq!(m.support(c), s);
    }
    // f1_score(average="macro")
    assert!((m.macro_f1() - 0.6984126984126983).abs() < 1e-12);
    let report = m.report(&["a".into(), "b".into(), "c".into()]);
    assert!(
        report.contains("macro avg") && report.contains("0.6984"),
        "{report}"
    );
    assert!(ConfusionMatrix::new(&i32s(&[3]), &i32s(&[0]), 3).is_err());
    assert!(accuracy(&i32s(&[0, 1]), &i32s(&[0])).is_err());

    // roc_auc_score, with a three-way tie at 0.4 across both classes.
    let scores = f32s(&[0.1, 0.4, 0.35, 0.8, 0.4, 0.9, 0.4, 0.2]);
    let truth = i32s(&[0, 0, 1, 1, 0, 1, 1, 0]);
    assert!((roc_auc(&scores, &truth).unwrap() - 0.8125).abs() < 1e-12);
    assert!(roc_auc(&scores, &i32s(&[1; 8])).is_err());
    assert!(roc_auc(&scores, &i32s(&[0, 2, 1, 1, 0, 1, 1, 0])).is_err());
}

#[test]
fn regression_metrics_match_scikit_learn() {
    let truth = f32s(&[3.0, -0.5, 2.0, 7.0, 4.2]);
    let predicted = f32s(&[2.5, 0.0, 2.0, 8.0, 3.9]);
    // r2_score, mean_squared_error, mean_absolute_error (f32 inputs: 1e-6).
    assert!((r2_score(&predicted, &truth).unwrap() - 0.9480256276150627).abs() < 1e-6);
    let mse = (0.25 + 0.25 + 0.0 + 1.0 + 0.09) / 5.0;
    assert!((mean_squared_error(&predicted, &truth).unwrap() - mse).abs() < 1e-6);
    assert!((mean_absolute_error(&predicted, &truth).unwrap() - 0.46).abs() < 1e-6);
    let constant = f32s(&[1.0, 1.0]);
    assert_eq!(r2_score(&constant, &constant).unwrap(), 1.0);
    assert_eq!(r2_score(&f32s(&[1.0, 2.0]), &constant).unwrap(), 0.0);
}
