//! IDX files (MNIST's format), gzipped or not. A file is a magic number (two zero
//! bytes, a type code, the number of dims), big-endian u32 dims, then the data. Bad
//! files (wrong magic, truncated, absurd sizes) are errors, and no buffer larger than
//! the data actually present is ever allocated from what a header claims.

use flate2::read::GzDecoder;
use kiln::{Device, Error, Result, Tensor};
use std::io::Read;
use std::path::Path;

/// The largest payload kiln will read from one IDX file (1 GiB).
const MAX_PAYLOAD: usize = 1 << 30;

/// An unsigned-byte IDX array.
#[derive(Clone, Debug, PartialEq)]
pub struct Idx {
    /// The array's dims, as the file's header gives them.
    pub dims: Vec<usize>,
    /// The values, row-major, as stored (unsigned bytes).
    pub data: Vec<u8>,
}

fn bad(origin: &str, reason: impl Into<String>) -> Error {
    Error::Io {
        op: "read_idx",
        path: origin.to_string(),
        reason: reason.into(),
    }
}

/// Reads an IDX file from disk.
pub fn read_idx(path: impl AsRef<Path>) -> Result<Idx> {
    let path = path.as_ref();
    let origin = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| bad(&origin, e.to_string()))?;
    parse_idx(&bytes, &origin)
}

/// Parses IDX bytes (gzip is detected by its magic); `origin` names them in errors.
pub fn parse_idx(bytes: &[u8], origin: &str) -> Result<Idx> {
    let mut reader: Box<dyn Read + '_> = if bytes.starts_with(&[0x1f, 0x8b]) {
        Box::new(GzDecoder::new(bytes))
    } else {
        Box::new(bytes)
    };
    let mut magic = [0u8; 4];
    reader
        .read_exact(&mut magic)
        .map_err(|_| bad(origin, "shorter than the 4-byte magic number"))?;
    if magic[0] != 0 || magic[1] != 0 {
        return Err(bad(
            origin,
            format!("bad magic number {magic:02x?}: not an IDX file"),
        ));
    }
    if magic[2] != 0x08 {
        return Err(bad(
            origin,
            format!(
                "element type 0x{:02x} is not supported (only unsigned bytes, 0x08)",
                magic[2]
            ),
        ));
    }
    let rank = magic[3] as usize;
    if rank == 0 || rank > 4 {
        return Err(bad(origin, format!("{rank} dims: expected 1 to 4")));
    }
    let mut dims = Vec::with_capacity(rank);
    for _ in 0..rank {
        let mut d = [0u8; 4];
        reader
            .read_exact(&mut d)
            .map_err(|_| bad(origin, "truncated in the header"))?;
        dims.push(u32::from_be_bytes(d) as usize);
    }
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_PAYLOAD);
    let Some(expected) = expected else {
        return Err(bad(
            origin,
            format!("declared dims {dims:?} exceed the {MAX_PAYLOAD}-byte limit"),
        ));
    };
    // Read at most one byte past the claim; the buffer grows only with real data.
    let mut data = Vec::new();
    reader
        .take(expected as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|e| bad(origin, format!("unreadable data: {e}")))?;
    if data.len() < expected {
        return Err(bad(
            origin,
            format!(
                "truncated: dims {dims:?} need {expected} bytes, found {}",
                data.len()
            ),
        ));
    }
    if data.len() > expected {
        return Err(bad(
            origin,
            format!("{expected} bytes declared but more data follows"),
        ));
    }
    Ok(Idx { dims, data })
}

/// MNIST-style data: images `[n, 1, h, w]` scaled to [0, 1] and i32 labels `[n]`.
pub struct Mnist {
    /// Training images, f32 `[n, 1, 28, 28]` in [0, 1].
    pub train_images: Tensor,
    /// Training labels, i32 `[n]`.
    pub train_labels: Tensor,
    /// Test images, f32 `[n, 1, 28, 28]` in [0, 1].
    pub test_images: Tensor,
    /// Test labels, i32 `[n]`.
    pub test_labels: Tensor,
}

impl Mnist {
    pub(crate) fn from_idx(train: (Idx, Idx), test: (Idx, Idx), origin: &str) -> Result<Self> {
        let (train_images, train_labels) = images_and_labels(train, origin)?;
        let (test_images, test_labels) = images_and_labels(test, origin)?;
        Ok(Mnist {
            train_images,
            train_labels,
            test_images,
            test_labels,
        })
    }
}

fn images_and_labels((images, labels): (Idx, Idx), origin: &str) -> Result<(Tensor, Tensor)> {
    if images.dims.len() != 3 || labels.dims.len() != 1 || images.dims[0] != labels.dims[0] {
        let reason = format!(
            "images {:?} and labels {:?} do not pair up",
            images.dims, labels.dims
        );
        return Err(Error::Io {
            op: "load_mnist",
            path: origin.to_string(),
            reason,
        });
    }
    let (n, h, w) = (images.dims[0], images.dims[1], images.dims[2]);
    let pixels: Vec<f32> = images.data.iter().map(|&p| p as f32 / 255.0).collect();
    let cpu = Device::cpu();
    let x = Tensor::from_vec(pixels, [n, 1, h, w], &cpu)?;
    let y = Tensor::from_vec(
        labels.data.iter().map(|&l| l as i32).collect::<Vec<_>>(),
        [n],
        &cpu,
    )?;
    Ok((x, y))
}

/// Loads `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`
/// and `t10k-labels-idx1-ubyte` (each optionally `.gz`) from `dir`: MNIST,
/// Fashion-MNIST or any dataset in that layout.
pub fn load_mnist_dir(dir: impl AsRef<Path>) -> Result<Mnist> {
    let dir = dir.as_ref();
    let read = |stem: &str| -> Result<Idx> {
        let plain = dir.join(stem);
        let gz = dir.join(format!("{stem}.gz"));
        if gz.exists() {
            read_idx(gz)
        } else {
            read_idx(plain)
        }
    };
    let train = (
        read("train-images-idx3-ubyte")?,
        read("train-labels-idx1-ubyte")?,
    );
    let test = (
        read("t10k-images-idx3-ubyte")?,
        read("t10k-labels-idx1-ubyte")?,
    );
    Mnist::from_idx(train, test, &dir.display().to_string())
}
