//! Elementwise ops over any strides: the formulas every GPU kernel is checked against.

use crate::special::{erf, erf_near, exp, tanh};
use crate::{strided, CpuStorage};
use kiln_core::{BackendStorage, BinaryOp, DType, Error, HostBuffer, Layout, Result, UnaryOp};

/// The larger of two values; NaN if either is NaN, as PyTorch's `maximum` and `max`
/// (Rust's `f64::max` returns the other operand).
#[inline(always)]
pub fn max_nan(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// The smaller of two values; NaN if either is NaN (see `max_nan`).
#[inline(always)]
pub fn min_nan(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// The reference value of a unary op. `shaders/elementwise/unary.wgsl` mirrors it.
#[inline(always)]
pub fn unary_f64(op: UnaryOp, x: f64) -> f64 {
    unary_with(op, x, erf)
}

/// `unary_f64` with the error function given: `erf`, or `erf_near` for a first pass
/// over a block (`unary_f32`).
#[inline(always)]
fn unary_with(op: UnaryOp, x: f64, erf: impl Fn(f64) -> f64) -> f64 {
    use std::f64::consts::{FRAC_1_SQRT_2, FRAC_2_SQRT_PI, PI};
    match op {
        UnaryOp::Neg => -x,
        UnaryOp::Abs => x.abs(),
        UnaryOp::Exp => exp(x),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Rsqrt => 1.0 / x.sqrt(),
        UnaryOp::Sin => x.sin(),
        UnaryOp::Cos => x.cos(),
        UnaryOp::Tanh => tanh(x),
        UnaryOp::Sigmoid => 1.0 / (1.0 + exp(-x)),
        UnaryOp::Relu => max_nan(x, 0.0),
        UnaryOp::LeakyRelu(a) => {
            if x >= 0.0 {
                x
            } else {
                a as f64 * x
            }
        }
        UnaryOp::GeluTanh => 0.5 * x * (1.0 + tanh((2.0 / PI).sqrt() * (x + 0.044715 * x * x * x))),
        UnaryOp::GeluErf => 0.5 * x * (1.0 + erf(x * FRAC_1_SQRT_2)),
        UnaryOp::GeluErfDerivative => {
            let cdf = 0.5 * (1.0 + erf(x * FRAC_1_SQRT_2));
            cdf + x * exp(-0.5 * x * x) * (0.5 * FRAC_2_SQRT_PI * FRAC_1_SQRT_2)
        }
        UnaryOp::Silu => x / (1.0 + exp(-x)),
        UnaryOp::Clamp(min, max) => min_nan(max_nan(x, min as f64), max as f64),
        UnaryOp::AddScalar(s) => x + s as f64,
        UnaryOp::MulScalar(s) => x * s as f64,
        UnaryOp::PowScalar(p) => x.powf(p as f64),
        UnaryOp::Recip => 1.0 / x,
        UnaryOp::Square => x * x,
        UnaryOp::Erf => erf(x),
    }
}

/// The reference value of a binary op on floats; comparisons give 1 or 0.
#[inline(always)]
pub fn binary_f64(op: BinaryOp, a: f64, b: f64) -> f64 {
    let flag = |c: bool| if c { 1.0 } else { 0.0 };
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        BinaryOp::Pow => a.powf(b),
        BinaryOp::Atan2 => a.atan2(b),
        BinaryOp::Maximum => max_nan(a, b),
        BinaryOp::Minimum => min_nan(a, b),
        BinaryOp::Eq => flag(a == b),
        BinaryOp::Ne => flag(a != b),
        BinaryOp::Lt => flag(a < b),
        BinaryOp::Le => flag(a <= b),
        BinaryOp::Gt => flag(a > b),
        BinaryOp::Ge => flag(a >= b),
    }
}

/// Integer ops wrap on overflow and give `a` for a division by zero, as WGSL does.
fn binary_i32(op: BinaryOp, a: i32, b: i32) -> Result<i32> {
    let flag = |c: bool| c as i32;
    Ok(match op {
        BinaryOp::Add => a.wrapping_add(b),
        BinaryOp::Sub => a.wrapping_sub(b),
        BinaryOp::Mul => a.wrapping_mul(b),
        BinaryOp::Div => {
            if b == 0 {
                a
            } else {
                a.wrapping_div(b)
            }
        }
        BinaryOp::Maximum => a.max(b),
        BinaryOp::Minimum => a.min(b),
        BinaryOp::Eq => flag(a == b),
        BinaryOp::Ne => flag(a != b),
        BinaryOp::Lt => flag(a < b),
        BinaryOp::Le => flag(a <= b),
        BinaryOp::Gt => flag(a > b),
        BinaryOp::Ge => flag(a >= b),
        // The tensor API refuses i32 pow (the op table's dtypes) before it gets here.
        BinaryOp::Pow | BinaryOp::Atan2 => {
            return Err(Error::UnsupportedDType {
                op: op.name(),
                dtype: DType::I32,
                reason: op.info().dtypes.refusal(),
            })
        }
    })
}

/// `unary_f64` over f32 elements, rounded once. The op is matched outside the loop: each
/// arm has its own loop with the op a constant (its scalar parameters, if any, passed
/// in), compiled for the CPU's widest vector unit, so `exp` and `erf` vectorise while
/// the formula stays in one place. A closure per op would not do: the compiler leaves a
/// large one (`erf` inlined) as a call per element. The arms come from the op table.
///
/// A vector computes both of `erf`'s pieces for every element. Most arguments lie in
/// the near piece, so each block of `BLOCK` elements is computed with `erf_near` first,
/// and again with `erf` if any result is NaN (an argument past the near piece, or a NaN
/// the op gives anyway): the same bits, with GELU's `erf` at a third of the work. An op
/// that never calls `erf` runs a plain loop instead: given the blocks, the compiler
/// vectorised across them, with a gather and a scatter per vector, and ReLU ran at a
/// third of the speed of a multiply.
pub(crate) fn unary_f32(op: UnaryOp, v: &[f32]) -> Vec<f32> {
    use crate::threads::{build, CHUNK_ELEMENTS};
    use std::mem::MaybeUninit;
    /// One AVX-512 vector of f32: short, so that few blocks meet a far argument.
    const BLOCK: usize = 16;
    macro_rules! by_op {
        ($($(#[$doc:meta])* $V:ident $(($($p:ident = $ex:expr),*))? => $($rest:ident),*;)*) => {
            match op {
                $(UnaryOp::$V $(($($p),*))? => {
                    widest_loop! {
                        fn run<>(out: &mut [MaybeUninit<f32>], v: &[f32], two_pass: bool $($(, $p: f32)*)?) {
                            let op = UnaryOp::$V $(($($p),*))?;
                            let v = &v[..out.len()];
                            if !two_pass {
                                for i in 0..out.len() {
                                    out[i].write(unary_f64(op, v[i] as f64) as f32);
                                }
                                return;
                            }
                            let mut blocks = out.chunks_exact_mut(BLOCK);
                            let mut from = v.chunks_exact(BLOCK);
                            // Plain loops only: a closure or an iterator adaptor left as a
                            // call is compiled without the vector unit (and `mul_add`
                            // becomes a C library call).
                            for (o, v) in (&mut blocks).zip(&mut from) {
                                let mut y = [0.0f64; BLOCK];
                                let mut again = false;
                                for i in 0..BLOCK {
                                    y[i] = unary_with(op, v[i] as f64, erf_near);
                                    again |= y[i].is_nan();
                                }
                                if again {
                                    for i in 0..BLOCK {
                                        y[i] = unary_f64(op, v[i] as f64);
                                    }
                                }
                                for i in 0..BLOCK {
                                    o[i].write(y[i] as f32);
                                }
                            }
                            for (o, &x) in blocks.into_remainder().iter_mut().zip(from.remainder()) {
                                o.write(unary_f64(op, x as f64) as f32);
                            }
                        }
                    }
                    let two_pass = reads_erf(op);
                    // SAFETY: a chunk starting at `start` is no longer than `v[start..]`,
                    // so `run` writes each of its elements.
                    unsafe {
                        build(v.len(), CHUNK_ELEMENTS, |start, part| {
                            run(part, &v[start..], two_pass $($(, $p)*)?)
                        })
                    }
                })*
            }
        };
    }
    kiln_core::for_each_unary_op!(by_op)
}

/// Whether `op`'s formula calls the error function, asked of the formula itself: with
/// an `erf` that answers NaN, only such an op gives NaN where it otherwise does not.
fn reads_erf(op: UnaryOp) -> bool {
    unary_with(op, 0.5, |_| f64::NAN).is_nan() && !unary_f64(op, 0.5).is_nan()
}

/// `binary_f64` over two equally shaped f32 views, rounded once; the op is matched
/// outside the loop as in `unary_f32`.
fn binary_f32(op: BinaryOp, a: &[f32], la: &Layout, b: &[f32], lb: &Layout) -> Vec<f32> {
    macro_rules! by_op {
        ($($(#[$doc:meta])* $V:ident => $($rest:ident),*;)*) => {
            match op {
                $(BinaryOp::$V => zip_views(a, la, b, lb, |x, y| {
                    binary_f64(BinaryOp::$V, x as f64, y as f64) as f32
                }),)*
            }
        };
    }
    kiln_core::for_each_binary_op!(by_op)
}

/// `f` over two equally shaped views, into a compact output. Contiguous operands are
/// zipped whole; others are walked a run at a time and read in place, so that a
/// broadcast operand (a bias row, a per-row statistic) is not first copied out to the
/// full shape: that copy took as long as the op.
fn zip_views<T: Copy + Sync, U: Send>(
    a: &[T],
    la: &Layout,
    b: &[T],
    lb: &Layout,
    f: impl Fn(T, T) -> U + Sync,
) -> Vec<U> {
    use crate::vector::{map_into, zip_into};
    let n = la.elem_count();
    if la.is_contiguous() && lb.is_contiguous() {
        let (a, b) = (&a[la.offset()..][..n], &b[lb.offset()..][..n]);
        return crate::threads::zip(a, b, f);
    }
    let fill = |first: usize, part: &mut [std::mem::MaybeUninit<U>]| {
        let mut at = 0;
        strided::for_each_run_of([la, lb], first, part.len(), |[i, j], len, [si, sj]| {
            let out = &mut part[at..][..len];
            at += len;
            match (si, sj) {
                (1, 1) => zip_into(out, &a[i..][..len], &b[j..][..len], &f),
                (1, 0) => map_into(out, &a[i..][..len], &|x| f(x, b[j])),
                (0, 1) => map_into(out, &b[j..][..len], &|y| f(a[i], y)),
                _ => {
                    for (k, o) in out.iter_mut().enumerate() {
                        o.write(f(a[i + k * si], b[j + k * sj]));
                    }
                }
            }
        });
    };
    // SAFETY: the runs of a chunk cover its `part.len()` elements exactly, and each run
    // writes `len` of them.
    unsafe { crate::threads::build(n, crate::threads::CHUNK_ELEMENTS, fill) }
}

pub fn binary(
    lhs: &CpuStorage,
    ll: &Layout,
    rhs: &CpuStorage,
    rl: &Layout,
    op: BinaryOp,
) -> Result<CpuStorage> {
    match (&lhs.0, &rhs.0) {
        (HostBuffer::I32(a), HostBuffer::I32(b)) => {
            let (a, b) = (strided::gather(a, ll), strided::gather(b, rl));
            let out = a
                .iter()
                .zip(&b)
                .map(|(&x, &y)| binary_i32(op, x, y))
                .collect::<Result<Vec<_>>>()?;
            Ok(CpuStorage(HostBuffer::I32(out)))
        }
        (HostBuffer::F32(a), HostBuffer::F32(b)) => {
            Ok(CpuStorage(HostBuffer::F32(binary_f32(op, a, ll, b, rl))))
        }
        _ => {
            let (a, b) = (lhs.floats(ll), rhs.floats(rl));
            let out = a
                .iter()
                .zip(&b)
                .map(|(&x, &y)| binary_f64(op, x, y))
                .collect();
            Ok(CpuStorage::from_floats(lhs.dtype(), out))
        }
    }
}

pub fn where_cond(
    cond: &CpuStorage,
    cl: &Layout,
    t: &CpuStorage,
    tl: &Layout,
    f: &CpuStorage,
    fl: &Layout,
) -> Result<CpuStorage> {
    if let (HostBuffer::F32(c), HostBuffer::F32(t), HostBuffer::F32(f)) = (&cond.0, &t.0, &f.0) {
        return Ok(CpuStorage(HostBuffer::F32(select_views(
            c, cl, t, tl, f, fl,
        ))));
    }
    let c: Vec<bool> = match &cond.0 {
        HostBuffer::F32(v) => strided::gather_map(v, cl, |x| x != 0.0),
        _ => cond.floats(cl).iter().map(|&x| x != 0.0).collect(),
    };
    let (t, f) = (t.to_host(tl)?, f.to_host(fl)?);
    Ok(CpuStorage(match (t, f) {
        (HostBuffer::F32(t), HostBuffer::F32(f)) => HostBuffer::F32(pick(&c, t, f)),
        (HostBuffer::F16(t), HostBuffer::F16(f)) => HostBuffer::F16(pick(&c, t, f)),
        (HostBuffer::I32(t), HostBuffer::I32(f)) => HostBuffer::I32(pick(&c, t, f)),
        (HostBuffer::F64(t), HostBuffer::F64(f)) => HostBuffer::F64(pick(&c, t, f)),
        (t, f) => {
            return Err(Error::DTypeMismatch {
                op: "where",
                lhs: t.dtype(),
                rhs: f.dtype(),
            })
        }
    }))
}

/// `t` where `cond` is nonzero, else `f`, for three equally shaped f32 views read in
/// place a run at a time: an attention mask and its fill value are broadcast, and
/// copying them out to the full shape first took longer than the select.
fn select_views(
    c: &[f32],
    cl: &Layout,
    t: &[f32],
    tl: &Layout,
    f: &[f32],
    fl: &Layout,
) -> Vec<f32> {
    let fill = |first: usize, part: &mut [std::mem::MaybeUninit<f32>]| {
        let mut at = 0;
        let views = [cl, tl, fl];
        strided::for_each_run_of(views, first, part.len(), |[i, j, k], len, strides| {
            let out = &mut part[at..][..len];
            at += len;
            select_run(out, (&c[i..], &t[j..], &f[k..]), strides);
        });
    };
    // SAFETY: the runs of a chunk cover its `part.len()` elements exactly, and each run
    // writes `len` of them.
    unsafe { crate::threads::build(cl.elem_count(), crate::threads::CHUNK_ELEMENTS, fill) }
}

widest_loop! {
    /// One run of `select_views`: element `i` of each operand at `i` times its stride.
    fn select_run<>(
        out: &mut [std::mem::MaybeUninit<f32>],
        operands: (&[f32], &[f32], &[f32]),
        strides: [usize; 3],
    ) {
        let ((c, t, f), [cs, ts, fs]) = (operands, strides);
        let n = out.len();
        // The common patterns get loops of their own, which vectorise: a stride of 0 is
        // a value the run repeats.
        match (cs, ts, fs) {
            (1, 1, 1) => {
                let (c, t, f) = (&c[..n], &t[..n], &f[..n]);
                for (i, o) in out.iter_mut().enumerate() {
                    o.write(if c[i] != 0.0 { t[i] } else { f[i] });
                }
            }
            (1, 0, 1) => {
                let (c, t, f) = (&c[..n], t[0], &f[..n]);
                for (i, o) in out.iter_mut().enumerate() {
                    o.write(if c[i] != 0.0 { t } else { f[i] });
                }
            }
            (1, 1, 0) => {
                let (c, t, f) = (&c[..n], &t[..n], f[0]);
                for (i, o) in out.iter_mut().enumerate() {
                    o.write(if c[i] != 0.0 { t[i] } else { f });
                }
            }
            _ => {
                for (i, o) in out.iter_mut().enumerate() {
                    o.write(if c[i * cs] != 0.0 { t[i * ts] } else { f[i * fs] });
                }
            }
        }
    }
}

/// `t` where `cond`, else `f` (all equally long), in parallel chunks for long inputs.
fn pick<T: Copy + Send + Sync>(cond: &[bool], t: Vec<T>, f: Vec<T>) -> Vec<T> {
    use crate::threads::{build, CHUNK_ELEMENTS};
    let fill = |start: usize, part: &mut [std::mem::MaybeUninit<T>]| {
        let (c, t, f) = (&cond[start..], &t[start..], &f[start..]);
        for (i, o) in part.iter_mut().enumerate() {
            o.write(if c[i] { t[i] } else { f[i] });
        }
    };
    // SAFETY: each chunk's loop writes every element of it.
    unsafe { build(cond.len(), CHUNK_ELEMENTS, fill) }
}

/// Dtype conversion. Float to i32 truncates towards zero and saturates; NaN becomes 0.
pub fn cast(src: &HostBuffer, dtype: DType) -> HostBuffer {
    match (src, dtype) {
        (HostBuffer::I32(v), DType::I32) => HostBuffer::I32(v.clone()),
        _ => HostBuffer::from_f64(dtype, src.to_f64_vec()),
    }
}

pub fn copy_into(src: &CpuStorage, sl: &Layout, dst: &mut CpuStorage, dl: &Layout) -> Result<()> {
    fn copy<T: Copy + Send + Sync>(s: &[T], sl: &Layout, d: &mut [T], dl: &Layout) {
        strided::scatter(&strided::gather(s, sl), d, dl);
    }
    match (&src.0, &mut dst.0) {
        (HostBuffer::F32(s), HostBuffer::F32(d)) => copy(s, sl, d, dl),
        (HostBuffer::F16(s), HostBuffer::F16(d)) => copy(s, sl, d, dl),
        (HostBuffer::I32(s), HostBuffer::I32(d)) => copy(s, sl, d, dl),
        (HostBuffer::F64(s), HostBuffer::F64(d)) => copy(s, sl, d, dl),
        (s, d) => {
            return Err(Error::DTypeMismatch {
                op: "copy",
                lhs: s.dtype(),
                rhs: d.dtype(),
            })
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two-pass loop gives `unary_f64`'s bits for every element: blocks wholly in
    /// `erf`'s near piece, blocks with one far argument, NaN, infinities, the seams at
    /// 2 and 2*sqrt(2) (GELU's `erf` argument is x / sqrt(2)), and a short last block.
    #[test]
    fn the_near_pass_keeps_the_plain_formulas_bits() {
        let mut draw = crate::test_draws::uniform_draws(5);
        let seam = 2.0 * std::f32::consts::SQRT_2;
        // Half in [-1, 1] (whole blocks in the near piece), half in [-4, 4].
        let mut v: Vec<f32> = (0..40_000)
            .map(|i| draw() * if i < 20_000 { 2.0 } else { 8.0 })
            .collect();
        for (i, x) in [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            2.0,
            -2.0,
            2.0f32.next_down(),
            seam,
            -seam,
            seam.next_down(),
            seam.next_up(),
            7.0,
            -9.0,
        ]
        .into_iter()
        .enumerate()
        {
            v[i * 997] = x;
        }
        v.truncate(39_999);
        let far = v.iter().filter(|x| x.abs() >= 2.0).count();
        assert!(far > 1000 && far < 20_000, "{far} far arguments");
        for op in [
            UnaryOp::Erf,
            UnaryOp::GeluErf,
            UnaryOp::GeluErfDerivative,
            UnaryOp::Exp,
            UnaryOp::Log,
            UnaryOp::LeakyRelu(0.1),
            UnaryOp::Relu,
        ] {
            // The first three take the two passes, the others the plain loop.
            let erf_ops = [UnaryOp::Erf, UnaryOp::GeluErf, UnaryOp::GeluErfDerivative];
            assert_eq!(reads_erf(op), erf_ops.contains(&op), "{op:?}");
            let got = unary_f32(op, &v);
            for (i, (&x, &y)) in v.iter().zip(&got).enumerate() {
                let want = unary_f64(op, x as f64) as f32;
                assert!(
                    y.to_bits() == want.to_bits(),
                    "{op:?}({x:e}) at {i}: {y:e}, not {want:e}"
                );
            }
        }
    }

    /// Binary ops on views read in place give the bits of the same op on the views
    /// copied out first: a broadcast row and column, a transposed operand, both
    /// broadcast, and a view long enough to be split between threads.
    #[test]
    fn views_read_in_place_match_the_copied_views() {
        let v: Vec<f32> = (0..70 * 601).map(|i| (i as f32 * 0.37).sin()).collect();
        let broadcast = |from: &[usize], to: &[usize]| {
            Layout::contiguous(from.to_vec())
                .broadcast_to("test", &to.to_vec().into())
                .expect("broadcast")
        };
        let pairs = [
            (
                Layout::contiguous([70, 601]),
                broadcast(&[1, 601], &[70, 601]),
            ),
            (
                broadcast(&[70, 1], &[70, 601]),
                Layout::contiguous([70, 601]),
            ),
            (
                Layout::contiguous([601, 70]).transpose(0, 1),
                Layout::contiguous([70, 601]),
            ),
            (broadcast(&[1, 1], &[5, 7]), broadcast(&[5, 1], &[5, 7])),
        ];
        for (la, lb) in pairs {
            for op in [BinaryOp::Sub, BinaryOp::Div, BinaryOp::Maximum] {
                let got = binary_f32(op, &v, &la, &v, &lb);
                let (a, b) = (strided::gather(&v, &la), strided::gather(&v, &lb));
                let want = binary_f32(
                    op,
                    &a,
                    &Layout::contiguous([a.len()]),
                    &b,
                    &Layout::contiguous([b.len()]),
                );
                assert!(
                    got.iter()
                        .zip(&want)
                        .all(|(x, y)| x.to_bits() == y.to_bits())
                        && got.len() == want.len(),
                    "{op:?} on {la:?} and {lb:?}"
                );
            }
        }
    }

    /// `where` on views read in place picks what it picks on the copied views: a
    /// broadcast mask and fill value (attention's), a transposed condition, a broadcast
    /// `f`, all compact (each run pattern `select_run` has a loop for, and the general
    /// one), a NaN condition (nonzero: it picks `t`), and views long enough to be split.
    #[test]
    fn select_reads_views_in_place() {
        let v: Vec<f32> = (0..70 * 601).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut mask: Vec<f32> = v.iter().map(|&x| (x > 0.2) as u8 as f32).collect();
        mask[3] = f32::NAN;
        let broadcast = |from: &[usize], to: &[usize]| {
            Layout::contiguous(from.to_vec())
                .broadcast_to("test", &to.to_vec().into())
                .expect("broadcast")
        };
        let full = Layout::contiguous([70, 601]);
        let triples = [
            (
                broadcast(&[1, 601], &[70, 601]),
                broadcast(&[1, 1], &[70, 601]),
                full.clone(),
            ),
            (
                Layout::contiguous([601, 70]).transpose(0, 1),
                full.clone(),
                full.clone(),
            ),
            (full.clone(), full.clone(), broadcast(&[70, 1], &[70, 601])),
            (full.clone(), full.clone(), full.clone()),
        ];
        for (cl, tl, fl) in triples {
            let got = select_views(&mask, &cl, &v, &tl, &v, &fl);
            let c: Vec<bool> = strided::gather(&mask, &cl)
                .iter()
                .map(|&x| x != 0.0)
                .collect();
            let want = pick(&c, strided::gather(&v, &tl), strided::gather(&v, &fl));
            assert!(
                got.len() == want.len()
                    && got
                        .iter()
                        .zip(&want)
                        .all(|(x, y)| x.to_bits() == y.to_bits()),
                "{cl:?} {tl:?} {fl:?}"
            );
        }
    }
}
