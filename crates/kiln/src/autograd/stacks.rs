//! Gradients a backward pass has put side by side, found again by the next consumer
//! that would put the same pieces side by side. A recurrent layer's step adds the
//! recurrent product `h W^T` to its input projection's slice (an LSTM), or its hidden
//! bias to the product (a GRU), so each step's gradient goes to two consumers that each
//! stack the steps' gradients: the slice's (`pending.rs`), the weight's product
//! (`product.rs`) and the bias's row sum (`row_sum.rs`). Kept here, the second reads
//! what the first put together: one `cat` of the steps' gradients a pass, not two.

use crate::storage::Storage;
use crate::Tensor;
use kiln_core::Result;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Weak};

/// A column of a whole (`[k, len, n]`) as a view names it: its storage, offset, dims
/// and strides, a stride along a dim of one left out (it steps nowhere). Two views with
/// the same key read the same elements as the same shape (a narrowed step `[b, 1, n]`
/// of a gradient, and that step's gradient `[b, n]` unsqueezed). The storage is held
/// weakly: its address cannot be reused while a key names it.
struct Key {
    storage: Weak<Storage>,
    offset: usize,
    dims: Vec<(usize, usize)>,
}

impl Key {
    fn of(column: &Tensor) -> Key {
        let layout = column.layout();
        let dims = (layout.dims().iter().zip(layout.strides()))
            .map(|(&d, &s)| (d, if d == 1 { 0 } else { s }))
            .collect();
        Key {
            storage: Arc::downgrade(&column.storage()),
            offset: layout.offset(),
            dims,
        }
    }
}

/// `piece` as a column of a whole: `[k, n]` as `[k, 1, n]`; `[k, len, n]` as it is.
fn column(piece: &Tensor) -> Result<Tensor> {
    match piece.rank() {
        2 => piece.unsqueeze(1),
        _ => Ok(piece.clone()),
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        Weak::ptr_eq(&self.storage, &other.storage)
            && self.offset == other.offset
            && self.dims == other.dims
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.storage.as_ptr().hash(state);
        self.offset.hash(state);
        self.dims.hash(state);
    }
}

/// A whole `[k, steps, n]`: its columns, `cat` side by side.
struct Kept {
    columns: Vec<Key>,
    whole: Tensor,
}

/// What one backward pass keeps: how many consumers will stack each piece, and the
/// wholes put together from pieces that another consumer will stack too (a whole no
/// consumer reads again, its pieces stacked in another order, is held to the pass's
/// end).
#[derive(Default)]
pub(crate) struct Stacks {
    consumers: HashMap<Key, usize>,
    kept: Vec<Kept>,
}

impl Stacks {
    /// Notes one more consumer that may put `piece` (`[k, n]` or `[k, len, n]`) side
    /// by side with others.
    pub(crate) fn want(&mut self, piece: &Tensor) -> Result<()> {
        *self.consumers.entry(Key::of(&column(piece)?)).or_default() += 1;
        Ok(())
    }

    /// `pieces` (`[k, n]` or `[k, len, n]` each) side by side in that order, `[k,
    /// steps, n]`: a whole kept from an earlier consumer of the same pieces in the same
    /// order (then let go of: each is read once), else a new `cat`, kept when most of
    /// its pieces have another consumer. (Not all: a recurrent layer's first step can
    /// come after its input, and its product with it.)
    pub(crate) fn side_by_side(&mut self, pieces: &[&Tensor]) -> Result<Tensor> {
        let columns = pieces
            .iter()
            .map(|p| column(p))
            .collect::<Result<Vec<_>>>()?;
        let keys: Vec<Key> = columns.iter().map(Key::of).collect();
        if let Some(at) = self.kept.iter().position(|kept| kept.columns == keys) {
            return Ok(self.kept.swap_remove(at).whole);
        }
        let whole = Tensor::cat(&columns, 1)?;
        let shared = (keys.iter())
            .filter(|k| self.consumers.get(k).is_some_and(|&n| n > 1))
            .count();
        if 2 * shared > keys.len() {
            let whole = whole.clone();
            self.kept.push(Kept {
                columns: keys,
                whole,
            });
        }
        Ok(whole)
    }

    /// A consumer's `pieces` (`[k, n]` each, in the order they arrived) stacked as
    /// rows, `[k * pieces, n]`: side by side, the last first. A recurrent layer's
    /// pieces arrive last step first, so this is its steps' order, the order its
    /// slices' gradients lie in: products (`product.rs`) and row sums (`row_sum.rs`)
    /// both stack so, and so find each other's wholes and the slices'.
    pub(crate) fn rows_last_first(&mut self, pieces: &[&Tensor]) -> Result<Tensor> {
        let order: Vec<&Tensor> = pieces.iter().rev().copied().collect();
        let whole = self.side_by_side(&order)?;
        whole.view(&[-1, whole.dims()[2] as isize])
    }
}
