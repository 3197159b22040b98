//! Datasets and loading: an in-memory `TensorDataset` and a `Subset`, a seeded
//! `DataLoader`, readers for IDX (MNIST's format), CSV and plain text, the data bundled
//! with kiln; NumPy's .npy and .npz; for tabular data, class names (`Classes`), seeded and stratified splits
//! and feature scalers.

mod augment;
mod bundled;
mod classes;
mod csv;
mod dataset;
mod idx;
mod loader;
mod npy;
mod scale;
mod split;
mod text;

pub use self::csv::{
    read_columns, read_csv, read_table, Column, CsvOptions, Missing, Table, MISSING_MARKERS,
};
pub use augment::random_translate;
pub use bundled::{mnist10k, tinyshakespeare};
pub use classes::Classes;
pub use dataset::{Dataset, Subset, TensorDataset};
pub use idx::{load_mnist_dir, parse_idx, read_idx, Idx, Mnist};
pub use loader::{DataLoader, Transform};
pub use npy::{read_npy, read_npz, write_npy, write_npz};
pub use scale::{MinMaxScaler, Scaler, StandardScaler};
pub use split::{shuffle, stratified_split, train_test_split};
pub use text::{next_token_windows, CharVocab};
