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

#[test]
fn a_gradient_clipping_norm_is_positive_and_not_for_the_gan() {
    let out = std::env::temp_dir().join(format!("kiln-clip-args-{}", std::process::id()));
    let out = out.to_str().expect("a UTF-8 temporary path");
    // `kiln train` and `kiln profile` (which writes nothing), on the CPU.
    let run = |command: &str, model: &str, flag: &str| {
        let mut args = vec![command, model, "--device", "cpu", flag];
        if command == "train" {
            args.extend(["--out", out]);
        }
        failure(&kiln(&args))
    };
    for command in ["train", "profile"] {
        for v in ["0", "-1", "NaN", "inf"] {
            let err = run(command, "mlp", &format!("--clip-grad-norm={v}"));
            let want = "--clip-grad-norm must be a positive, finite number";
            assert!(err.contains(want), "{command} {v}: {err}");
        }
        let err = run(command, "gan", "--clip-grad-norm=1");
        let want = "--clip-grad-norm is not available for the GAN";
        assert!(err.contains(want), "{command}: {err}");
    }
    assert!(
        !std::path::Path::new(out).exists(),
        "nothing is written for a refused run"
    );
}
