//! Data compiled into kiln, so that the default run and the tests need no files.

use super::idx::{parse_idx, Mnist};
use kiln::Result;

/// The 10,000-digit MNIST subset: 8,000 training and 2,000 test images.
pub fn mnist10k() -> Result<Mnist> {
    let parse = |bytes: &[u8], name: &str| parse_idx(bytes, &format!("bundled mnist10k/{name}"));
    let train = (
        parse(
            include_bytes!("../../data/mnist10k/train-images-idx3-ubyte.gz"),
            "train-images",
        )?,
        parse(
            include_bytes!("../../data/mnist10k/train-labels-idx1-ubyte.gz"),
            "train-labels",
        )?,
    );
    let test = (
        parse(
            include_bytes!("../../data/mnist10k/t10k-images-idx3-ubyte.gz"),
            "t10k-images",
        )?,
        parse(
            include_bytes!("../../data/mnist10k/t10k-labels-idx1-ubyte.gz"),
            "t10k-labels",
        )?,
    );
    Mnist::from_idx(train, test, "bundled mnist10k")
}

/// The tinyshakespeare corpus (1,115,394 characters).
pub fn tinyshakespeare() -> &'static str {
    include_str!("../../data/tinyshakespeare/input.txt")
}
