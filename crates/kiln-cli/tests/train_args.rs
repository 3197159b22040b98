//! `kiln train`'s argument checks, through the binary: a bad value is refused before any
//! data is read or anything is written.

mod common;

use common::{failure, kiln};

#[test]
fn dropout_is_a_probability_below_one_for_the_image_models() {
    let out = std::env::temp_dir().join(format!("kiln-train-args-{}", std::process::id()));
    let out = out.to_str().expect("a UTF-8 temporary path");
    for p in ["1", "1.5", "-0.1", "NaN"] {
        let flag = format!("--dropout={p}");
        let err = failure(&kiln(&[
            "train", "cnn", "--device", "cpu", &flag, "--out", out,
        ]));
        assert!(err.contains("--dropout must be in [0, 1)"), "{p}: {err}");
    }
    let err = failure(&kiln(&[
        "train",
        "transformer",
        "--dropout",
        "0.1",
        "--out",
        out,
    ]));
    assert!(err.contains("--dropout is for the cnn and mlp"), "{err}");
    assert!(
        !std::path::Path::new(out).exists(),
        "nothing is written for a refused run"
    );
}
