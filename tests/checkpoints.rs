//! Saving and restoring never lose a good model: a save that fails leaves the previous
//! file as it was, duplicate names are refused, a restore checks every name, shape and
//! dtype before it changes anything, and optimizers refuse another kind's state.

use kiln::{DType, Device, Error, Tensor};
use kiln_nn::optim::{Adam, Optimizer, Sgd};
use kiln_nn::train::{
    load_checkpoint, restore, restore_non_strict, save_checkpoint, RestoreReport,
};
use std::collections::HashMap;

fn t(values: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(values.to_vec(), shape.to_vec(), &Device::cpu()).unwrap()
}

fn named(pairs: &[(&str, Tensor)]) -> Vec<(String, Tensor)> {
    pairs
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_vec::<f32>().unwrap()
}

#[test]
fn duplicate_names_are_an_error_and_the_old_file_survives() {
    let dir = std::env::temp_dir().join(format!("kiln-ckpt-dup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    let good = named(&[("w", t(&[1.0, 2.0], &[2]))]);
    save_checkpoint(&path, &good, &HashMap::new()).unwrap();
    let twice = named(&[("w", t(&[3.0], &[1])), ("w", t(&[4.0], &[1]))]);
    let e = save_checkpoint(&path, &twice, &HashMap::new()).unwrap_err();
    assert!(e.to_string().contains("two tensors are named w"), "{e}");
    // A save into a folder that does not exist fails too, leaving nothing behind.
    let nowhere = dir.join("missing").join("model.safetensors");
    assert!(save_checkpoint(&nowhere, &good, &HashMap::new()).is_err());
    let kept = load_checkpoint(&path).unwrap();
    assert_eq!(values(&kept.tensors["w"]), vec![1.0, 2.0]);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers,
        vec![std::ffi::OsString::from("model.safetensors")]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn restore_checks_everything_before_changing_anything() {
    let dir = std::env::temp_dir().join(format!("kiln-ckpt-restore-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    let saved = named(&[
        ("a", t(&[1.0, 2.0], &[2])),
        ("b", t(&[3.0, 4.0, 5.0, 6.0], &[2, 2])),
        ("extra", t(&[7.0], &[1])),
        ("optimizer.sgd.momentum.a", t(&[0.5, 0.5], &[2])),
    ]);
    save_checkpoint(&path, &saved, &HashMap::new()).unwrap();
    let checkpoint = load_checkpoint(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    // "a" first, so that a restore going in order would overwrite it before failing.
    let (a, b, c) = (t(&[0.0, 0.0], &[2]), t(&[0.0; 4], &[4]), t(&[0.0], &[1]));
    let targets = named(&[("a", a.clone()), ("b", b.clone()), ("c", c.clone())]);
    let e = restore(&checkpoint, &targets).unwrap_err();
    match &e {
        Error::StateMismatch {
            missing,
            unexpected,
            mismatched,
            ..
        } => {
            assert_eq!(missing, &vec!["c".to_string()]);
            assert_eq!(unexpected, &vec!["extra".to_string()]);
            assert_eq!(mismatched.len(), 1);
            assert!(
                mismatched[0].starts_with("b ([2, 2] f32 saved, [4] f32 expected)"),
                "{e}"
            );
        }
        other => panic!("expected StateMismatch, got {other}"),
    }
    assert_eq!(
        values(&a),
        vec![0.0, 0.0],
        "nothing changes when anything is wrong"
    );

    // Non-strict: what matches loads, the rest is reported; a shape mismatch still refuses.
    assert!(restore_non_strict(&checkpoint, &targets).is_err());
    let fitting = named(&[("a", a.clone()), ("c", c.clone())]);
    let report = restore_non_strict(&checkpoint, &fitting).unwrap();
    let want = RestoreReport {
        missing: vec!["c".into()],
        unexpected: vec!["b".into(), "extra".into()],
    };
    assert_eq!(report, want);
    assert_eq!(values(&a), vec![1.0, 2.0]);
    let twice = named(&[("a", a.clone()), ("a", a.clone())]);
    assert!(restore_non_strict(&checkpoint, &twice).is_err());
}

#[test]
fn optimizers_refuse_state_of_another_kind_or_shape() {
    let p = t(&[1.0, 2.0], &[2]).into_var().unwrap();
    let params = vec![("p".to_string(), p.clone())];
    let mut adam = Adam::new(params.clone(), 0.1);
    adam.step(&p.square().unwrap().sum_all().unwrap().backward().unwrap())
        .unwrap();
    let adam_state: HashMap<String, Tensor> = adam.state().into_iter().collect();
    let mut sgd = Sgd::new(params.clone(), 0.1).with_momentum(0.9, false);
    let e = sgd.load_state(&adam_state).unwrap_err();
    assert!(
        matches!(e, Error::StateMismatch { ref unexpected, .. } if unexpected.contains(&"adam.m.p".to_string())),
        "{e}"
    );
    // The same kind with a buffer of another shape.
    let wrong = HashMap::from([("sgd.momentum.p".to_string(), t(&[1.0, 2.0, 3.0], &[3]))]);
    assert!(matches!(
        sgd.load_state(&wrong).unwrap_err(),
        Error::StateMismatch { .. }
    ));
    let also_wrong = HashMap::from([(
        "adam.m.p".to_string(),
        t(&[1.0], &[1]).to_dtype(DType::F64).unwrap(),
    )]);
    assert!(adam.load_state(&also_wrong).is_err());
    // Its own state loads.
    let mut again = Adam::new(params, 0.1);
    again.load_state(&adam_state).unwrap();
}
