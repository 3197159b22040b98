//! Layers, one family per file.

mod activation;
mod attention;
mod conv;
mod dropout;
mod embedding;
mod linear;
mod norm;
mod pool;
mod rnn;
mod rnn_cell;
mod sequential;

pub use activation::{Activation, Flatten, Unflatten};
pub use attention::{AttentionOptions, MultiheadAttention, TransformerEncoderLayer};
pub use conv::{Conv1d, Conv2d, ConvTranspose2d};
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use linear::Linear;
pub use norm::{BatchNorm, LayerNorm};
pub use pool::{AdaptiveAvgPool2d, AvgPool2d, MaxPool2d};
pub use rnn::{Rnn, RnnKind, RnnState};
pub use rnn_cell::{CellState, RnnCell};
pub use sequential::Sequential;
