//! Shared test helpers: the GPU under test, fresh random inputs, named tolerances and
//! the CPU-vs-GPU comparison every parity test uses.
#![allow(dead_code)]

use kiln::{BinaryOp, DType, Device, ReduceOp, Rng, Tensor, UnaryOp};
use std::sync::atomic::{AtomicU64, Ordering};

/// Accepted difference: `|got - want| <= atol + rtol * |want|`.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub atol: f64,
    pub rtol: f64,
}

/// f32 results: a few ulps of reordering in reductions and matmul.
pub const F32: Tol = Tol {
    atol: 1e-5,
    rtol: 1e-4,
};
/// f32 results of transcendental functions (GPU exp/log/sin are not correctly rounded).
pub const F32_MATH: Tol = Tol {
    atol: 1e-5,
    rtol: 5e-4,
};
/// f32 results of sums of tens of thousands to millions of terms (the long loops run on
/// hardware adapters only): their rounding error grows with the count, in any order.
pub const F32_LONG_SUMS: Tol = Tol {
    atol: 1e-4,
    rtol: 1e-4,
};
/// f16 results: both sides compute in f32 and round once, so a rounding flip of one
/// f16 ulp (2^-11 relative) is the expected gap; allow a few.
pub const F16: Tol = Tol {
    atol: 2e-3,
    rtol: 4e-3,
};
/// f64 results (CPU only): a few ulps of reordering.
pub const F64: Tol = Tol {
    atol: 1e-12,
    rtol: 1e-10,
};
/// Indices and integer results agree exactly.
pub const EXACT: Tol = Tol {
    atol: 0.0,
    rtol: 0.0,
};

pub fn tol_for(dtype: DType) -> Tol {
    match dtype {
        DType::F32 => F32,
        DType::F16 => F16,
        DType::I32 => EXACT,
        DType::F64 => F64,
    }
}

/// The GPU under test, with output poisoning on. Without an adapter this fails
/// loudly, unless the user opted out with KILN_SKIP_GPU_TESTS=1.
pub fn gpu() -> Option<Device> {
    match Device::gpu() {
        Ok(device) => {
            let gpu = device.as_gpu().expect("a gpu device");
            gpu.set_poison_outputs(true);
            if let Ok(expected) = std::env::var("KILN_EXPECT_ADAPTER") {
                let name = &gpu.summary().name;
                assert!(name.to_lowercase().contains(&expected.to_lowercase()), "GPU tests run on {name}, expected {expected}");
            }
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| eprintln!("GPU tests run on: {:?}", device));
            Some(device)
        }
        Err(e) if std::env::var("KILN_SKIP_GPU_TESTS").as_deref() == Ok("1") => {
            eprintln!("KILN_SKIP_GPU_TESTS=1: skipping a GPU test ({e})");
            None
        }
        Err(e) => panic!("GPU tests need an adapter and none opened: {e}\nSet KILN_SKIP_GPU_TESTS=1 to skip them explicitly."),
    }
}

/// A small seeded generator (splitmix64) for what a randomized test builds (graphs,
/// calls, shapes); tensor values come from kiln's `Rng`.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A seed: the environment variable `var` where it is set, else the clock's
/// nanoseconds (a new one each run, which the caller prints to replay it).
pub fn seed_from(var: &str) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// A fresh generator per call: seeded from the clock unless KILN_TEST_SEED is set,
/// and printed so that a failure can be replayed.
pub fn rng() -> Rng {
    let base = seed_from("KILN_TEST_SEED");
    let seed = base.wrapping_add(
        COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    eprintln!("test seed {seed}");
    Rng::new(seed)
}

/// Uniform values in `[lo, hi)` on the CPU.
pub fn uniform(shape: &[usize], lo: f64, hi: f64, rng: &mut Rng) -> Tensor {
    Tensor::rand(shape.to_vec(), DType::F32, &Device::cpu(), rng)
        .unwrap()
        .mul_scalar(hi - lo)
        .unwrap()
        .add_scalar(lo)
        .unwrap()
}

/// Uniform in `[-1, 1)`.
pub fn rand(shape: &[usize], rng: &mut Rng) -> Tensor {
    uniform(shape, -1.0, 1.0, rng)
}

/// `t`'s values cut to multiples of `1 / steps` (toward zero): values on a coarse grid
/// make exact ties for comparisons and argmax, and sums that are exact in any order.
pub fn on_grid(t: &Tensor, steps: f64) -> Tensor {
    t.mul_scalar(steps)
        .and_then(|t| t.to_dtype(DType::I32))
        .and_then(|t| t.to_dtype(DType::F32))
        .and_then(|t| t.mul_scalar(1.0 / steps))
        .unwrap()
}

/// A tensor of `shape` that is a transposed view of its storage (not contiguous).
pub fn transposed(shape: &[usize], rng: &mut Rng) -> Tensor {
    let r = shape.len();
    let mut swapped = shape.to_vec();
    swapped.swap(r - 1, r - 2);
    let t = rand(&swapped, rng).transpose(-1, -2).unwrap();
    assert!(!t.is_contiguous() || shape[r - 1] == 1 || shape[r - 2] == 1);
    t
}

/// A tensor of `shape` cut out of a larger one (offset and gaps in its layout).
pub fn sliced(shape: &[usize], rng: &mut Rng) -> Tensor {
    let mut big = shape.to_vec();
    big[0] += 2;
    *big.last_mut().unwrap() += 3;
    let r = shape.len() as isize;
    rand(&big, rng)
        .narrow(0, 1, shape[0])
        .unwrap()
        .narrow(r - 1, 2, shape[shape.len() - 1])
        .unwrap()
}

/// Moves a tensor to `device`, compact there (`on_strided` keeps its layout).
pub fn on(device: &Device, t: &Tensor) -> Tensor {
    t.to_device(device).unwrap()
}

/// Compares two tensors elementwise; NaN only matches NaN.
pub fn assert_close(label: &str, got: &Tensor, want: &Tensor, tol: Tol) {
    assert_eq!(got.dtype(), want.dtype(), "{label}: dtypes differ");
    let label = format!("{label} (tolerance {tol:?})");
    assert_within(&label, got, want, |b| tol.atol + tol.rtol * b.abs());
}

/// Each finite element within `allowed(want)` of the wanted one; NaN only where NaN is
/// wanted, infinities exactly.
pub fn assert_within(label: &str, got: &Tensor, want: &Tensor, allowed: impl Fn(f64) -> f64) {
    assert_eq!(got.dims(), want.dims(), "{label}: shapes differ");
    let (g, w) = (got.to_f64_vec().unwrap(), want.to_f64_vec().unwrap());
    for (i, (&a, &b)) in g.iter().zip(&w).enumerate() {
        let ok = if b.is_nan() {
            a.is_nan()
        } else if b.is_infinite() {
            a == b
        } else {
            (a - b).abs() <= allowed(b)
        };
        assert!(
            ok,
            "{label}: element {i} of {:?}: got {a}, want {b}",
            got.dims()
        );
    }
}

/// Normwise closeness: each element within `atol * max(1, max |want|) + rtol * |want|`,
/// NaN only where NaN is expected. For long sums (products, convolutions), whose f32
/// rounding grows with the sum's running size, so that an element that cancels to near
/// zero keeps an absolute error of the order of the others'.
pub fn assert_near(label: &str, got: &Tensor, want: &Tensor, atol: f64, rtol: f64) {
    let scale = want
        .to_f64_vec()
        .unwrap()
        .iter()
        .filter(|x| x.is_finite())
        .fold(1.0f64, |m, x| m.max(x.abs()));
    assert_within(label, got, want, |b| atol * scale + rtol * b.abs());
}

/// Runs `f` on CPU inputs and on the same inputs moved to the GPU, and compares.
pub fn parity(
    label: &str,
    inputs: &[Tensor],
    tol: Tol,
    f: impl Fn(&[Tensor]) -> kiln::Result<Tensor>,
) {
    let Some(device) = gpu() else { return };
    parity_on(&device, label, inputs, tol, f)
}

/// `parity` on a given GPU device.
pub fn parity_on(
    device: &Device,
    label: &str,
    inputs: &[Tensor],
    tol: Tol,
    f: impl Fn(&[Tensor]) -> kiln::Result<Tensor>,
) {
    let want = f(inputs).unwrap_or_else(|e| panic!("{label}: cpu failed: {e}"));
    let moved: Vec<Tensor> = inputs.iter().map(|t| on_strided(device, t)).collect();
    let got = f(&moved).unwrap_or_else(|e| panic!("{label}: gpu failed: {e}"));
    assert!(got.device().is_gpu(), "{label}: result left the gpu");
    assert_close(label, &got, &want, tol);
}

/// Moves a tensor to the GPU with the same layout (strides, offset) it had on the CPU,
/// so kernels see the same non-contiguous views the CPU reference saw.
pub fn on_strided(device: &Device, t: &Tensor) -> Tensor {
    let layout = t.layout().clone();
    let span = layout.storage_span();
    if layout.is_compact() {
        return t.to_device(device).unwrap();
    }
    // Rebuild the backing storage: a compact buffer of `span` elements holding the
    // values at their storage positions, then view it through the same layout.
    let values = t.to_f64_vec().unwrap();
    let mut backing = vec![0.0f32; span];
    for (pos, v) in layout.offsets().zip(values) {
        backing[pos] = v as f32;
    }
    let base = Tensor::from_vec(backing, [span], device)
        .unwrap()
        .to_dtype(t.dtype())
        .unwrap();
    base.as_strided(layout.dims(), layout.strides(), layout.offset())
        .unwrap()
}

/// Where each op of the op table is tested: an input range on which it is defined and
/// smooth. The matches list every op (no wildcard), so an op added to the table does
/// not compile here until its range is chosen; the parity and gradient suites then run
/// it through every case they build from `UnaryOp::EXAMPLES` and its siblings.
pub fn unary_domain(op: UnaryOp) -> (f64, f64) {
    use UnaryOp::*;
    match op {
        Log | Sqrt | Rsqrt | Recip => (0.5, 2.0),
        // A whole exponent (the example's) is defined for negative bases too.
        PowScalar(_) => (-2.0, 2.0),
        // Out to where the density term fades and the derivative settles at 0 and 1.
        GeluErfDerivative => (-4.0, 4.0),
        Neg | Abs | Exp | Sin | Cos | Tanh | Sigmoid | Relu | LeakyRelu(_) | GeluTanh | GeluErf
        | Silu | Clamp(..) | AddScalar(_) | MulScalar(_) | Square | Erf => (-2.0, 2.0),
    }
}

/// The ranges of the left and right operands of each binary op, and the tolerance of
/// its parity case (transcendental functions are not correctly rounded on GPUs).
pub fn binary_domain(op: BinaryOp) -> ([(f64, f64); 2], Tol) {
    use BinaryOp::*;
    match op {
        Pow => ([(0.5, 2.0), (-1.0, 1.0)], F32_MATH),
        // Every quadrant, and (0, 0) on the parity grid.
        Atan2 => ([(-1.0, 1.0), (-1.0, 1.0)], F32_MATH),
        Div => ([(-1.0, 1.0), (0.5, 2.0)], F32),
        Add | Sub | Mul | Maximum | Minimum | Eq | Ne | Lt | Le | Gt | Ge => {
            ([(-1.0, 1.0), (-1.0, 1.0)], F32)
        }
    }
}

/// The input range of each reduction and the tolerance its parity case uses.
pub fn reduce_domain(op: ReduceOp) -> ((f64, f64), Tol) {
    use ReduceOp::*;
    match op {
        // Factors near 1 keep a long product finite and well conditioned.
        Prod => ((0.9, 1.1), F32),
        ArgMax | ArgMin => ((-1.0, 1.0), EXACT),
        Sum | Mean | Max | Min => ((-1.0, 1.0), F32),
    }
}

/// Fusion set on a GPU device while this lives, then back to what it was (a panic
/// included): for tests that count fused kernels whatever `KILN_FUSION` the run was
/// given.
pub struct FusionSetTo(kiln::backend::GpuDevice, bool);

impl FusionSetTo {
    pub fn new(gpu: &Device, on: bool) -> Self {
        let device = gpu.as_gpu().unwrap().clone();
        let was = device.fusion();
        device.set_fusion(on);
        FusionSetTo(device, was)
    }
}

impl Drop for FusionSetTo {
    fn drop(&mut self) {
        self.0.set_fusion(self.1);
    }
}
