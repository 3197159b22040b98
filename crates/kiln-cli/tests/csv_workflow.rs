//! `kiln train mlp --csv`, `kiln predict` and `kiln explain --csv` as a user runs them,
//! through the binary, on small files written here.

mod common;

use common::{failure, kiln, stdout};
use std::path::{Path, PathBuf};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-csv-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The number after `prefix` on the line that starts with it.
fn figure(text: &str, prefix: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in\n{text}"));
    line[prefix.len()..].trim().parse().unwrap()
}

/// Three classes named by words in two noisy features and a useless third, sorted by
/// class as many files are, behind a metadata line of another width.
fn classes_csv(path: &Path) {
    let mut text = String::from("300,3,meta\nx,noise,y,species\n");
    let mut state = 7u64;
    let mut noise = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f64 / (1u64 << 31) as f64) - 0.5
    };
    for (name, cx, cy) in [("ash", 0.0, 0.0), ("birch", 3.0, 0.0), ("cedar", 0.0, 3.0)] {
        for _ in 0..100 {
            let (x, n, y) = (cx + noise(), 10.0 * noise(), cy + noise());
            text += &format!("{x:.4},{n:.4},{y:.4},{name}\n");
        }
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_classifier_trains_on_a_csv_then_predicts_and_explains_new_rows() {
    let d = dir("classify");
    let csv = d.join("trees.csv");
    classes_csv(&csv);
    let out = d.join("runs");
    let csv_s = csv.to_str().unwrap();
    let out_s = out.to_str().unwrap();
    for device in ["cpu", "gpu"] {
        let text = stdout(&kiln(&[
            "train",
            "mlp",
            "--csv",
            csv_s,
            "--skip-lines",
            "1",
            "--target",
            "species",
            "--epochs",
            "60",
            "--lr",
            "1e-2",
            "--device",
            device,
            "--out",
            out_s,
        ]));
        // 60 stratified test rows of a file sorted by class: each class is there.
        for name in ["ash", "birch", "cedar"] {
            assert!(
                text.lines().any(|l| l.trim_start().starts_with(name)),
                "{text}"
            );
        }
        let accuracy = figure(&text, "test accuracy:");
        assert!(accuracy >= 0.95, "{device}: {accuracy}\n{text}");
    }
    let model = out.join("mlp/model.safetensors");
    assert!(model.exists());

    // New rows with the columns in another order and an extra one; the target there.
    let rows = d.join("new.csv");
    std::fs::write(
        &rows,
        "species,y,id,x,noise\ncedar,3.1,1,0.2,4\nbirch,0.1,2,2.9,-3\nash,-0.2,3,0.1,0\n",
    )
    .unwrap();
    let predictions = d.join("predictions.csv");
    let text = stdout(&kiln(&[
        "predict",
        "--checkpoint",
        model.to_str().unwrap(),
        "--csv",
        rows.to_str().unwrap(),
        "--out",
        predictions.to_str().unwrap(),
        "--device",
        "cpu",
    ]));
    assert_eq!(figure(&text, "test accuracy:"), 1.0, "{text}");
    let written = std::fs::read_to_string(&predictions).unwrap();
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(lines[0], "species,p_ash,p_birch,p_cedar");
    assert_eq!(lines.len(), 4);
    for (line, want) in lines[1..].iter().zip(["cedar", "birch", "ash"]) {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields[0], want, "{written}");
        let total: f64 = fields[1..].iter().map(|p| p.parse::<f64>().unwrap()).sum();
        assert!((total - 1.0).abs() < 1e-4, "{line}");
    }

    // The useless column ranks last by every method.
    let text = stdout(&kiln(&[
        "explain",
        "--csv",
        csv_s,
        "--skip-lines",
        "1",
        "--checkpoint",
        model.to_str().unwrap(),
        "--method",
        "ig,occlusion,gradient",
        "--device",
        "cpu",
        "--out",
        d.to_str().unwrap(),
    ]));
    for file in ["ig", "ablation", "gradient"] {
        assert!(
            d.join(format!("explain_features_{file}.png")).exists(),
            "{file}"
        );
    }
    let ranked: Vec<&str> = text
        .lines()
        .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [name, value] if value.parse::<f64>().is_ok() => Some(name),
            _ => None,
        })
        .collect();
    assert_eq!(ranked.len(), 9, "{text}");
    for method in ranked.chunks(3) {
        assert_eq!(method[2], "noise", "{text}");
    }

    // A file without a feature the model needs.
    let lacking = d.join("lacking.csv");
    std::fs::write(&lacking, "x,y\n1,2\n").unwrap();
    let e = failure(&kiln(&[
        "predict",
        "--checkpoint",
        model.to_str().unwrap(),
        "--csv",
        lacking.to_str().unwrap(),
        "--out",
        d.join("p.csv").to_str().unwrap(),
        "--device",
        "cpu",
    ]));
    assert!(e.contains("noise"), "{e}");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn a_regressor_reaches_a_high_r2_on_a_linear_target() {
    let d = dir("regress");
    let csv = d.join("linear.csv");
    let mut text = String::from("a;b;target\n");
    for i in 0..400 {
        let (a, b) = ((i % 20) as f64 / 4.0, (i * 7 % 13) as f64);
        text += &format!("{a};{b};{}\n", 100.0 + 20.0 * a - 3.0 * b);
    }
    std::fs::write(&csv, text).unwrap();
    let out = d.join("runs");
    let text = stdout(&kiln(&[
        "train",
        "mlp",
        "--csv",
        csv.to_str().unwrap(),
        "--delimiter",
        ";",
        "--task",
        "regress",
        "--epochs",
        "150",
        "--lr",
        "1e-2",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ]));
    let r2 = figure(&text, "test R^2:");
    assert!(r2 > 0.98, "{r2}\n{text}");
    // Predictions come back in the target's units.
    let rows = d.join("rows.csv");
    std::fs::write(&rows, "a;b\n2;5\n").unwrap();
    let predictions = d.join("p.csv");
    stdout(&kiln(&[
        "predict",
        "--checkpoint",
        out.join("mlp/model.safetensors").to_str().unwrap(),
        "--csv",
        rows.to_str().unwrap(),
        "--delimiter",
        ";",
        "--out",
        predictions.to_str().unwrap(),
        "--device",
        "cpu",
    ]));
    let written = std::fs::read_to_string(&predictions).unwrap();
    let value: f64 = written.lines().nth(1).unwrap().parse().unwrap();
    assert!((value - 125.0).abs() < 5.0, "{written}");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn mistakes_are_refused_with_a_message_that_says_what_to_do() {
    let d = dir("mistakes");
    let csv = d.join("values.csv");
    let rows: String = (0..50).map(|i| format!("{i},{}.5\n", i * 3)).collect();
    std::fs::write(&csv, format!("x,price\n{rows}")).unwrap();
    let csv_s = csv.to_str().unwrap();
    let out_s = d.to_str().unwrap();
    // Every price is its own class: it is a quantity to regress.
    let e = failure(&kiln(&[
        "train", "mlp", "--csv", csv_s, "--target", "price", "--out", out_s, "--device", "cpu",
    ]));
    assert!(e.contains("regress"), "{e}");
    let e = failure(&kiln(&[
        "train", "mlp", "--csv", csv_s, "--target", "cost", "--out", out_s, "--device", "cpu",
    ]));
    assert!(e.contains("\"cost\"") && e.contains("price"), "{e}");
    let e = failure(&kiln(&["train", "cnn", "--csv", csv_s, "--out", out_s]));
    assert!(e.contains("mlp"), "{e}");
    let e = failure(&kiln(&[
        "train", "mlp", "--csv", csv_s, "--hidden", "0", "--task", "regress", "--out", out_s,
        "--device", "cpu",
    ]));
    assert!(e.contains("--hidden"), "{e}");
    std::fs::remove_dir_all(&d).ok();
}
