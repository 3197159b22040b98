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

/// A tensor's elements as a view names them: its storage, offset, and the dims other
/// than ones with their strides. Two views with the same key read the same elements in
/// the same order, whatever their ones (`[b, 1, n]` and `[b, n]`). The storage is held
/// weakly: its address cannot be reused while a key names it.
struct Key {
    storage: Weak<Storage>,
    offset: usize,
    dims: Vec<(usize, usize)>,
}

impl Key {
    fn of(t: &Tensor) -> Key {
        let layout = t.layout();
        let dims = (layout.dims().iter().zip(layout.strides()))
            .filter(|(&d, _)| d != 1)
            .map(|(&d, &s)| (d, s))
            .collect();
        Key {
            storage: Arc::downgrade(&t.storage()),
            offset: layout.offset(),
            dims,
        }
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

/// A whole `[k, pieces, n]`, compact, whose index `i` along its middle dim is exactly
/// `pieces[i]`.
struct Kept {
    pieces: Vec<Key>,
    whole: Tensor,
}

/// What one backward pass keeps: how many consumers will stack each piece, and the
/// wholes put together from pieces that another consumer will stack too.
#[derive(Default)]
pub(crate) struct Stacks {
    consumers: HashMap<Key, usize>,
    kept: Vec<Kept>,
}

impl Stacks {
    /// Notes one more consumer that may put `piece` side by side with others.
    pub(crate) fn want(&mut self, piece: &Tensor) {
        *self.consumers.entry(Key::of(piece)).or_default() += 1;
    }

    /// `pieces` (`[k, n]` or `[k, 1, n]` each, alike) side by side in that order,
    /// `[k, pieces, n]`: a whole kept from an earlier consumer of the same pieces in
    /// the same order (then let go of: each is read once), else a new `cat`, kept when
    /// most of its pieces have another consumer. (Not all: a recurrent layer's first
    /// step can come after its input, and its product with it.)
    pub(crate) fn side_by_side(&mut self, pieces: &[&Tensor]) -> Result<Tensor> {
        let keys: Vec<Key> = pieces.iter().map(|p| Key::of(p)).collect();
        if let Some(at) = self.kept.iter().position(|kept| kept.pieces == keys) {
            return Ok(self.kept.swap_remove(at).whole);
        }
        let column = |p: &&Tensor| match p.rank() {
            2 => p.unsqueeze(1),
            _ => Ok((*p).clone()),
        };
        let columns = pieces.iter().map(column).collect::<Result<Vec<_>>>()?;
        let whole = Tensor::cat(&columns, 1)?;
        let shared = (keys.iter())
            .filter(|k| self.consumers.get(k).is_some_and(|&n| n > 1))
            .count();
        if 2 * shared > keys.len() {
            let whole = whole.clone();
            self.kept.push(Kept {
                pieces: keys,
                whole,
            });
        }
        Ok(whole)
    }
}
