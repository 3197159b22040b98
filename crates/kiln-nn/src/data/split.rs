//! Seeded train/test splits, as scikit-learn's `train_test_split`: shuffled, or
//! stratified so that every class keeps its share in both parts; and the shuffle that
//! they and `DataLoader` share.

use super::{Dataset, TensorDataset};
use kiln::{DType, Error, Result};
use kiln_core::philox::random_word;

/// Shuffles `order` in place: a Fisher–Yates shuffle driven by Philox words, the same
/// for the same `(seed, stream)` on every machine.
pub fn shuffle(order: &mut [usize], seed: u64, stream: u64) {
    for i in (1..order.len()).rev() {
        let j = random_word(seed, stream, i as u64) as usize % (i + 1);
        order.swap(i, j);
    }
}

/// Splits `data` into (train, test) with `ceil(test_fraction * len)` test samples
/// taken in an order shuffled from `seed`: scikit-learn's `train_test_split` with
/// `shuffle=True`. `TensorDataset::split` instead takes the last samples as they lie.
pub fn train_test_split(
    data: &TensorDataset,
    test_fraction: f64,
    seed: u64,
) -> Result<(TensorDataset, TensorDataset)> {
    let n_test = test_count(data.len(), test_fraction)?;
    let mut order: Vec<usize> = (0..data.len()).collect();
    shuffle(&mut order, seed, 0);
    let (test, train) = order.split_at(n_test);
    Ok((data.select(train)?, data.select(test)?))
}

/// `train_test_split` keeping each class's share in both parts, as scikit-learn's
/// `stratify=y`: the targets must be i32 class ids `[len]`. Each class gives its
/// share of the `ceil(test_fraction * len)` test samples (largest remainders round),
/// drawn at random from `seed`; both parts come out shuffled. A class with a single
/// sample, or fewer test or train samples than classes, is an error.
pub fn stratified_split(
    data: &TensorDataset,
    test_fraction: f64,
    seed: u64,
) -> Result<(TensorDataset, TensorDataset)> {
    let op = "stratified_split";
    let n = data.len();
    let n_test = test_count(n, test_fraction)?;
    if data.targets.dtype() != DType::I32 || data.targets.rank() != 1 {
        return Err(Error::InvalidArgument {
            op,
            reason: format!(
                "the targets must be i32 class ids [N], not {:?} {:?}",
                data.targets.dtype(),
                data.targets.dims()
            ),
        });
    }
    let labels = data.targets.to_vec::<i32>()?;
    let mut by_class: std::collections::BTreeMap<i32, Vec<usize>> = Default::default();
    for (i, &c) in labels.iter().enumerate() {
        by_class.entry(c).or_default().push(i);
    }
    if let Some((c, _)) = by_class.iter().find(|(_, rows)| rows.len() < 2) {
        return Err(Error::InvalidArgument {
            op,
            reason: format!(
                "class {c} has a single sample; a stratified split needs two of each (is the target a quantity to regress rather than a class?)"
            ),
        });
    }
    let classes = by_class.len();
    if n_test < classes || n - n_test < classes {
        return Err(Error::InvalidArgument {
            op,
            reason: format!(
                "{n_test} test and {} train samples cannot each hold all {classes} classes",
                n - n_test
            ),
        });
    }
    // Each class's exact share, floored, then the samples left over to the largest
    // remainders (the lower class first on a tie).
    let shares: Vec<(usize, f64)> = by_class
        .values()
        .map(|rows| {
            let exact = rows.len() as f64 * n_test as f64 / n as f64;
            (exact.floor() as usize, exact - exact.floor())
        })
        .collect();
    let mut counts: Vec<usize> = shares.iter().map(|s| s.0).collect();
    let mut by_remainder: Vec<usize> = (0..classes).collect();
    by_remainder.sort_by(|&a, &b| shares[b].1.total_cmp(&shares[a].1).then(a.cmp(&b)));
    let left = n_test - counts.iter().sum::<usize>();
    for &k in by_remainder.iter().take(left) {
        counts[k] += 1;
    }
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (k, rows) in by_class.into_values().enumerate() {
        let mut rows = rows;
        shuffle(&mut rows, seed, k as u64 + 1);
        test.extend_from_slice(&rows[..counts[k]]);
        train.extend_from_slice(&rows[counts[k]..]);
    }
    // Class-sorted parts would make a batch-wise evaluation of the first rows look
    // like a one-class set: mix them.
    shuffle(&mut train, seed, 0);
    shuffle(&mut test, seed, u64::MAX);
    Ok((data.select(&train)?, data.select(&test)?))
}

/// The number of test samples for `test_fraction` of `n`, refusing a fraction that
/// leaves either part empty.
fn test_count(n: usize, test_fraction: f64) -> Result<usize> {
    let n_test = (test_fraction * n as f64).ceil();
    if !(test_fraction > 0.0 && test_fraction < 1.0) || n_test < 1.0 || n_test >= n as f64 {
        return Err(Error::InvalidArgument {
            op: "train_test_split",
            reason: format!(
                "a test fraction of {test_fraction} of {n} samples leaves a part empty; it must be in (0, 1)"
            ),
        });
    }
    Ok(n_test as usize)
}
