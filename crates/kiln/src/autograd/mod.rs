//! Reverse-mode automatic differentiation, define-by-run. Each differentiable op
//! records edges to its parents and the values its rule reads (only when a parent
//! tracks a gradient); `backward` walks the graph once in reverse topological order
//! applying one rule per op, written with ordinary tensor ops so it runs on the
//! device the forward ran on.

mod backward;
mod edge;
mod grad_mode;
mod gradcheck;
mod gradients;
mod op;
mod pending;
mod product;
mod row_sum;
mod stacks;

pub use backward::grad;
pub(crate) use backward::sum_to;
pub(crate) use edge::{Edge, Input};
pub use grad_mode::{is_grad_enabled, no_grad, NoGradGuard};
pub use gradcheck::{gradcheck, GradcheckOptions, GradcheckReport};
pub use gradients::{GradIssue, GradIssueKind, Gradients};
pub(crate) use op::{track, track_by_kind, Node, Op};
