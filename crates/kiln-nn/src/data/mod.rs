//! Datasets and loading: an in-memory `TensorDataset`, a seeded `DataLoader`, readers
//! for IDX (MNIST's format), CSV and plain text, and the data bundled with kiln.

mod augment;
mod bundled;
mod csv;
mod dataset;
mod idx;
mod loader;
mod text;

pub use self::csv::read_csv;
pub use augment::random_translate;
pub use bundled::{mnist10k, tinyshakespeare};
pub use dataset::{Dataset, TensorDataset};
pub use idx::{load_mnist_dir, parse_idx, read_idx, Idx, Mnist};
pub use loader::{DataLoader, Transform};
pub use text::CharVocab;
