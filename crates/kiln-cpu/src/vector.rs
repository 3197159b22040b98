//! Loops compiled for the CPU's widest vector unit. kiln is built for the baseline of
//! its target (SSE2 on x86-64), where a vectorised f64 loop does two elements at a time;
//! the same loop compiled for AVX-512 does eight. A loop written with `widest_loop!`
//! is compiled three times (AVX-512, AVX2, baseline), and each call runs the copy for
//! the best unit the running CPU reports.
//!
//! Results do not depend on the copy: Rust never fuses a multiply and an add on its own,
//! nor reorders a sum, so every copy does the same IEEE operations in the same order
//! (an explicit `mul_add` rounds once in every copy, in hardware or in the C library).

use std::mem::MaybeUninit;

/// `fn name<T, ..>(args) where [bounds] { body }`, with the body compiled once per vector
/// unit (the brackets keep the bounds apart from the body for the macro). The
/// body is its own `#[inline(always)]` function, so each copy holds the whole loop; a
/// closure it calls per element is small and inlined with it.
macro_rules! widest_loop {
    ($(#[$doc:meta])* $vis:vis fn $name:ident<$($g:ident),*>($($arg:ident: $ty:ty),* $(,)?) $(where [$($bounds:tt)*])? $body:block) => {
        $(#[$doc])*
        $vis fn $name<$($g),*>($($arg: $ty),*) $(where $($bounds)*)? {
            #[inline(always)]
            fn body<$($g),*>($($arg: $ty),*) $(where $($bounds)*)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")]
                unsafe fn avx512<$($g),*>($($arg: $ty),*) $(where $($bounds)*)? {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2<$($g),*>($($arg: $ty),*) $(where $($bounds)*)? {
                    body($($arg),*)
                }
                use std::arch::is_x86_feature_detected as has;
                if has!("avx512f") && has!("avx512dq") && has!("avx512vl") && has!("avx512bw") {
                    // SAFETY: the CPU has every feature the copy was compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if has!("avx2") && has!("fma") {
                    // SAFETY: as above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

/// Partial results a row fold keeps. With one running sum, each add waits for the one
/// before it, and a layer norm row or a bias gradient was bound by those waits;
/// independent lanes overlap.
const LANES: usize = 8;

/// `combine` over `term(0), ..., term(k - 1)`, with term `i` folded into lane `i % LANES`
/// (each lane starting from `init`) and the lanes combined in order: a fixed order,
/// whatever the thread count.
#[inline(always)]
pub fn lane_fold(
    k: usize,
    init: f64,
    term: impl Fn(usize) -> f64,
    combine: impl Fn(f64, f64) -> f64,
) -> f64 {
    let mut lanes = [init; LANES];
    let whole = k - k % LANES;
    // A fixed-length inner loop, unrolled, keeps the lanes in registers.
    for first in (0..whole).step_by(LANES) {
        for (lane, acc) in lanes.iter_mut().enumerate() {
            *acc = combine(*acc, term(first + lane));
        }
    }
    for (acc, i) in lanes.iter_mut().zip(whole..k) {
        *acc = combine(*acc, term(i));
    }
    lanes.into_iter().fold(init, combine)
}

/// `term(0) + ... + term(k - 1)` in `lane_fold`'s order.
#[inline(always)]
pub fn lane_sum(k: usize, term: impl Fn(usize) -> f64) -> f64 {
    lane_fold(k, 0.0, term, |a, b| a + b)
}

widest_loop! {
    /// `out[i] = f(v[i])` for each `i` of `out` (`v` at least as long).
    pub fn map_into<T, U>(out: &mut [MaybeUninit<U>], v: &[T], f: &impl Fn(T) -> U)
    where [T: Copy] {
        for (o, &x) in out.iter_mut().zip(v) {
            o.write(f(x));
        }
    }
}

widest_loop! {
    /// `out[i] = f(a[i], b[i])` for each `i` of `out` (`a` and `b` at least as long).
    pub fn zip_into<T, U>(
        out: &mut [MaybeUninit<U>],
        a: &[T],
        b: &[T],
        f: &impl Fn(T, T) -> U,
    ) where [T: Copy] {
        for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
            o.write(f(x, y));
        }
    }
}
