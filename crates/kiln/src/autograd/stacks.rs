//! Gradients a backward pass has put side by side, found again by a product that would
//! stack the same pieces. An LSTM adds its input projection's slice `x_t` to the
//! recurrent product `h W^T` each step, so each step's gradient of the gates is both the
//! gradient of that slice and the right operand of the recurrent weight's gradient
//! (`product.rs`). The slices' gradients are put together first (`[batch, steps,
//! gates]`); kept here, the weight's stacked product reads them where it would copy
//! them all again: one `cat` of the gates' gradients a pass, not two.

use super::product::Product;
use crate::storage::Storage;
use crate::Tensor;
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

    fn same(&self, other: &Key) -> bool {
        Weak::ptr_eq(&self.storage, &other.storage)
            && self.offset == other.offset
            && self.dims == other.dims
    }
}

/// A whole gradient `[k, pieces, n]`, compact, whose index `i` along its middle dim is
/// exactly `pieces[i]`.
struct Kept {
    pieces: Vec<Key>,
    whole: Tensor,
}

/// What one backward pass keeps: the right operands of the products waiting to be
/// stacked, and the wholes put together from such operands.
#[derive(Default)]
pub(crate) struct Stacks {
    wanted: Vec<Key>,
    kept: Vec<Kept>,
}

impl Stacks {
    /// Notes a product's right operand, which a whole may hold, where the product
    /// waits to be stacked (`Pending::add` multiplies the others at once).
    pub(crate) fn want(&mut self, product: &Product) {
        if product.small() {
            self.wanted.push(Key::of(product.rows_gradient()));
        }
    }

    /// Keeps `whole`, put together from `pieces` along `dim`, where it is `[k,
    /// pieces, n]` and compact (as a product's stacked operand is) and most pieces are
    /// right operands of products so far: otherwise no product would read it, and
    /// holding it would only hold memory. (Not all: a recurrent layer's first step can
    /// come after its input, and its product with it.)
    pub(crate) fn keep(&mut self, pieces: &[&Tensor], dim: usize, whole: &Tensor) {
        let fits = whole.rank() == 3 && dim == 1 && whole.layout().is_compact();
        if !fits || whole.dims()[1] != pieces.len() {
            return;
        }
        let pieces: Vec<Key> = pieces.iter().map(|p| Key::of(p)).collect();
        let wanted = (pieces.iter())
            .filter(|p| self.wanted.iter().any(|w| w.same(p)))
            .count();
        if 2 * wanted > pieces.len() {
            let whole = whole.clone();
            self.kept.push(Kept { pieces, whole });
        }
    }

    /// A kept whole that is `rows` (the right operands of products, `[k, n]` each)
    /// side by side, the last first, as `product::stacked` puts them; it is let go of
    /// here.
    pub(crate) fn take(&mut self, rows: &[&Tensor]) -> Option<Tensor> {
        let keys: Vec<Key> = rows.iter().rev().map(|r| Key::of(r)).collect();
        let at = self.kept.iter().position(|kept| {
            kept.pieces.len() == keys.len() && kept.pieces.iter().zip(&keys).all(|(p, k)| p.same(k))
        })?;
        Some(self.kept.swap_remove(at).whole)
    }
}
