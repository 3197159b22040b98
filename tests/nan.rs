//! NaN propagates as in PyTorch, on every device and through every kernel variant:
//! NaN in, NaN out for relu, clamp, maximum/minimum and max/min; argmax and argmin
//! pick the first NaN. (Rust's `f64::max` and WGSL's `max` drop a NaN instead.)

mod common;

use common::*;
use kiln::{BinaryOp, DType, Device, Tensor, UnaryOp};

const NAN: f32 = f32::NAN;

fn devices() -> Vec<Device> {
    let mut list = vec![Device::cpu()];
    list.extend(gpu());
    list
}

fn t(values: &[f32], shape: &[usize], device: &Device) -> Tensor {
    Tensor::from_vec(values.to_vec(), shape.to_vec(), device).unwrap()
}

/// Equal element for element, NaN equal to NaN.
fn same(label: &str, got: &Tensor, want: &[f32]) {
    let got = got.to_vec::<f32>().unwrap();
    let equal = got.len() == want.len()
        && got
            .iter()
            .zip(want)
            .all(|(a, b)| a == b || (a.is_nan() && b.is_nan()));
    assert!(equal, "{label}: got {got:?}, want {want:?}");
}

#[test]
fn elementwise_ops_pass_nan_through() {
    for d in devices() {
        // Eight contiguous elements take the vec4 kernels, a slice of them the strided.
        let x = t(&[1.0, NAN, -2.0, 3.0, NAN, 0.5, -0.5, 4.0], &[8], &d);
        let y = t(&[0.0, 0.0, NAN, 5.0, NAN, 0.25, 1.0, -4.0], &[8], &d);
        for (label, x, y) in [
            ("vec4", x.clone(), y.clone()),
            (
                "strided",
                x.narrow(0, 1, 7).unwrap(),
                y.narrow(0, 1, 7).unwrap(),
            ),
        ] {
            let skip = if label == "vec4" { 0 } else { 1 };
            let want = |v: &[f32]| v[skip..].to_vec();
            same(
                &format!("relu {label} on {d}"),
                &x.relu().unwrap(),
                &want(&[1.0, NAN, 0.0, 3.0, NAN, 0.5, 0.0, 4.0]),
            );
            same(
                &format!("clamp {label} on {d}"),
                &x.clamp(-1.0, 1.0).unwrap(),
                &want(&[1.0, NAN, -1.0, 1.0, NAN, 0.5, -0.5, 1.0]),
            );
            same(
                &format!("maximum {label} on {d}"),
                &x.maximum(&y).unwrap(),
                &want(&[1.0, NAN, NAN, 5.0, NAN, 0.5, 1.0, 4.0]),
            );
            same(
                &format!("minimum {label} on {d}"),
                &x.minimum(&y).unwrap(),
                &want(&[0.0, NAN, NAN, 3.0, NAN, 0.25, -0.5, -4.0]),
            );
        }
    }
}

#[test]
fn reductions_return_nan_and_argmax_picks_the_first_nan() {
    for d in devices() {
        let x = t(&[1.0, NAN, 3.0, NAN, 4.0, 5.0, 6.0, 2.0], &[2, 4], &d);
        same(
            &format!("max on {d}"),
            &x.max(&[1], false).unwrap(),
            &[NAN, 6.0],
        );
        same(
            &format!("min on {d}"),
            &x.min(&[1], false).unwrap(),
            &[NAN, 2.0],
        );
        same(&format!("max_all on {d}"), &x.max_all().unwrap(), &[NAN]);
        // Over the first dim: the column kernel.
        same(
            &format!("max over rows on {d}"),
            &x.max(&[0], false).unwrap(),
            &[4.0, NAN, 6.0, NAN],
        );
        let argmax = x.argmax(1, false).unwrap().to_vec::<i32>().unwrap();
        let argmin = x.argmin(1, false).unwrap().to_vec::<i32>().unwrap();
        assert_eq!((argmax, argmin), (vec![1, 2], vec![1, 3]), "on {d}");
        // A NaN late in a long row, past the first workgroup pass.
        let mut long = vec![0.0f32; 1000];
        long[700] = NAN;
        long[900] = NAN;
        let long = t(&long, &[1, 1000], &d);
        assert_eq!(
            long.argmax(1, false).unwrap().to_vec::<i32>().unwrap(),
            vec![700]
        );
        assert_eq!(
            long.argmin(1, false).unwrap().to_vec::<i32>().unwrap(),
            vec![700]
        );
    }
}

#[test]
fn every_reduction_kernel_variant_propagates_nan_like_the_cpu() {
    // 64 rows of 8: the one-invocation-per-row kernels on software adapters; [4, 16, 3]
    // over its middle dim: the column kernel. Each holds a NaN in one row and one column.
    let mut rows = vec![0.25f32; 64 * 8];
    rows[5 * 8 + 3] = NAN;
    let rows = t(&rows, &[64, 8], &Device::cpu());
    let mut middle: Vec<f32> = (0..4 * 16 * 3).map(|i| (i % 7) as f32).collect();
    middle[(2 * 16 + 7) * 3 + 1] = NAN;
    let middle = t(&middle, &[4, 16, 3], &Device::cpu());
    // [2, 300, 3] over its middle dim: the column kernel with several lanes per output,
    // with the NaN in a late lane's segment.
    let mut long: Vec<f32> = (0..2 * 300 * 3).map(|i| (i % 11) as f32).collect();
    long[(300 + 250) * 3 + 2] = NAN;
    let long = t(&long, &[2, 300, 3], &Device::cpu());
    for (label, x, dims) in [
        ("rows", rows, [-1isize]),
        ("middle", middle, [1]),
        ("middle in segments", long, [1]),
    ] {
        parity(
            &format!("max {label}"),
            std::slice::from_ref(&x),
            EXACT,
            |t| t[0].max(&dims, false),
        );
        parity(
            &format!("min {label}"),
            std::slice::from_ref(&x),
            EXACT,
            |t| t[0].min(&dims, false),
        );
        let out = x.max(&dims, false).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(out.iter().filter(|v| v.is_nan()).count(), 1, "{label}");
    }
}

/// Values at the edges of f32: NaN, the infinities, both zeros, and finite values
/// either side of the points where ops change branch (0, 1, whole numbers).
const SPECIAL: [f32; 14] = [
    NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    -0.5,
    2.0,
    -2.0,
    3.0,
    -2.5,
    100.0,
];
/// Past f16's range and i32's, for the conversions (not for sin and cos, which GPUs
/// reduce to their period only roughly that far out).
const BEYOND: [f32; 4] = [70000.0, -3e9, 2147483520.0, -2147483904.0];

/// Every elementwise op of the op table at the edges of f32, alone and on every pair
/// of them, gives on the GPU what the CPU gives (C's `pow` and `atan2`, IEEE
/// comparisons, as PyTorch), and so do `where` with each as its condition and the
/// conversions (to i32: towards zero, saturating, NaN to 0): fused and not, contiguous
/// (the vec4 kernels) and transposed (the strided ones), f32 and f16 (on an adapter
/// without f16, as GL's, its refusal).
#[test]
fn elementwise_ops_meet_the_edges_of_f32_as_the_cpu_does() {
    let Some(gpu) = gpu() else { return };
    let n = SPECIAL.len();
    // rows[i][j] = SPECIAL[i]; its transpose holds SPECIAL[j] there.
    let values: Vec<f32> = (0..n * n).map(|i| SPECIAL[i / n]).collect();
    let rows = t(&values, &[n, n], &Device::cpu());
    let device = gpu.as_gpu().unwrap();
    let default = device.fusion();
    // An adapter without f16 (GL) refuses it at the call, fused or not.
    let f16 = device.supports(DType::F16);
    let dtypes: Vec<DType> = [DType::F32, DType::F16, DType::I32]
        .into_iter()
        .filter(|&d| f16 || d != DType::F16)
        .collect();
    for fusion in [true, false] {
        device.set_fusion(fusion);
        if !f16 {
            let refused = rows.to_device(&gpu).unwrap().to_dtype(DType::F16);
            assert!(
                matches!(refused, Err(kiln::Error::UnsupportedDType { .. })),
                "fusion {fusion}: {refused:?}"
            );
        }
        for dtype in dtypes.iter().copied().filter(|d| d.is_float()) {
            let tol = match dtype {
                DType::F32 => F32_MATH,
                _ => tol_for(dtype),
            };
            let rows = rows.to_dtype(dtype).unwrap();
            let columns = rows.t().unwrap();
            let label = |what: String| format!("{what} on {dtype:?}, fusion {fusion}");
            for x in [&rows, &columns] {
                let layout = if x.is_contiguous() {
                    "contiguous"
                } else {
                    "transposed"
                };
                for &op in UnaryOp::EXAMPLES {
                    parity_on(
                        &gpu,
                        &label(format!("{op:?} {layout}")),
                        std::slice::from_ref(x),
                        tol,
                        |t| t[0].unary(op),
                    );
                }
                parity_on(
                    &gpu,
                    &label(format!("where {layout}")),
                    std::slice::from_ref(x),
                    tol,
                    |t| t[0].where_cond(&t[0].ones_like()?, &t[0].zeros_like()?),
                );
            }
            let beyond = t(&BEYOND, &[BEYOND.len()], &Device::cpu());
            let all = Tensor::cat(
                &[rows.flatten_all().unwrap(), beyond.to_dtype(dtype).unwrap()],
                0,
            )
            .unwrap();
            // Whole (the vec4 kernels) and from an offset.
            for x in [all.clone(), all.narrow(0, 1, all.elem_count() - 1).unwrap()] {
                for to in dtypes.iter().copied() {
                    parity_on(
                        &gpu,
                        &label(format!("to {to:?} from {}", x.layout().offset())),
                        std::slice::from_ref(&x),
                        tol_for(to),
                        |t| t[0].to_dtype(to),
                    );
                }
            }
            for (rhs, layout) in [(&columns, "transposed"), (&rows, "contiguous")] {
                let (lhs, rhs) = (rows.clone(), rhs.clone());
                for &op in BinaryOp::EXAMPLES {
                    parity_on(
                        &gpu,
                        &label(format!("{op:?} by a {layout} rhs")),
                        &[lhs.clone(), rhs.clone()],
                        tol,
                        |t| t[0].binary(&t[1], op),
                    );
                }
            }
        }
    }
    device.set_fusion(default);
}
