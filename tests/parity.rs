//! GPU kernels against the CPU reference: every op, fresh random inputs, odd shapes
//! (1, primes, sizes off every tile), a case over a million elements, transposed,
//! sliced and broadcast views, and f16 where the adapter supports it. Outputs are
//! poisoned with NaN before each kernel runs (see `common::gpu`).

mod common;

use common::*;
use kiln::{
    BinaryOp, Conv2dOptions, DType, Device, Error, ReduceOp, RunningStats, Tensor, UnaryOp,
};

/// Shapes that stress bounds checks: 1, primes, off-tile sizes.
const ODD_SHAPES: &[&[usize]] = &[&[1], &[7], &[13, 17], &[3, 1, 257], &[2, 3, 5, 7]];

/// Inputs cut to quarters (`on_grid`) so that comparisons and argmax see exact ties.
const QUARTERS: f64 = 4.0;

fn f16_ok() -> bool {
    gpu().is_some_and(|d| d.as_gpu().unwrap().supports(DType::F16))
}

/// A named one-input op and the input range it is tested on.
type UnaryCase = (
    String,
    (f64, f64),
    Box<dyn Fn(&Tensor) -> kiln::Result<Tensor>>,
);

#[test]
fn unary_ops_match_cpu() {
    type Op = fn(&Tensor) -> kiln::Result<Tensor>;
    // Every op of the table, then the methods composed from them.
    let mut ops: Vec<UnaryCase> = UnaryOp::EXAMPLES
        .iter()
        .map(|&op| -> UnaryCase {
            let name = format!("{op:?}");
            (name, unary_domain(op), Box::new(move |t| t.unary(op)))
        })
        .collect();
    let composed: &[(&str, Op, (f64, f64))] = &[
        ("sub_scalar", |t| t.sub_scalar(0.25), (-4.0, 4.0)),
        ("div_scalar", |t| t.div_scalar(3.0), (-4.0, 4.0)),
        ("pow_scalar 2.5", |t| t.pow_scalar(2.5), (0.1, 4.0)),
    ];
    for &(name, f, domain) in composed {
        ops.push((name.to_string(), domain, Box::new(f)));
    }
    let mut rng = rng();
    for (name, (lo, hi), f) in &ops {
        for shape in ODD_SHAPES {
            let x = uniform(shape, *lo, *hi, &mut rng);
            parity(&format!("{name} {shape:?}"), &[x], F32_MATH, |t| f(&t[0]));
        }
        let x = uniform(&[9, 14], *lo, *hi, &mut rng)
            .transpose(0, 1)
            .unwrap();
        parity(&format!("{name} transposed"), &[x], F32_MATH, |t| f(&t[0]));
        let x = uniform(&[12, 40], *lo, *hi, &mut rng)
            .narrow(1, 3, 29)
            .unwrap();
        parity(&format!("{name} sliced"), &[x], F32_MATH, |t| f(&t[0]));
    }
}

#[test]
fn binary_ops_broadcast_match_cpu() {
    let pairs: &[(&[usize], &[usize])] = &[
        (&[1], &[1]),
        (&[13, 17], &[13, 17]),
        (&[13, 17], &[17]),
        (&[3, 1, 5], &[4, 1]),
        (&[7, 1], &[1, 11]),
    ];
    let mut rng = rng();
    for &op in BinaryOp::EXAMPLES {
        let ([(a_lo, a_hi), (b_lo, b_hi)], tol) = binary_domain(op);
        let f = |t: &[Tensor]| t[0].binary(&t[1], op);
        for &(a, b) in pairs {
            // Round to a grid of quarters so that comparisons see ties.
            let x = on_grid(&uniform(a, a_lo, a_hi, &mut rng), QUARTERS);
            let y = on_grid(&uniform(b, b_lo, b_hi, &mut rng), QUARTERS);
            parity(&format!("{op:?} {a:?} {b:?}"), &[x, y], tol, f);
        }
        let x = uniform(&[10, 6], a_lo, a_hi, &mut rng).t().unwrap();
        let y = uniform(&[6, 12], b_lo, b_hi, &mut rng)
            .narrow(1, 1, 10)
            .unwrap();
        parity(&format!("{op:?} strided"), &[x, y], tol, f);
    }
}

#[test]
fn integer_binary_ops_match_cpu() {
    let device = Device::cpu();
    let a = Tensor::from_vec(
        (0..60).map(|i| (i * 37 % 23) - 11).collect::<Vec<i32>>(),
        [6, 10],
        &device,
    )
    .unwrap();
    // Includes zeros: division by zero gives the dividend on both devices.
    let b = Tensor::from_vec(
        (0..10).map(|i| (i % 5) - 2).collect::<Vec<i32>>(),
        [10],
        &device,
    )
    .unwrap();
    let integer_ops = BinaryOp::EXAMPLES
        .iter()
        .filter(|op| op.info().dtypes.contains(DType::I32));
    // And at i32's edges: its least over -1 gives itself (WGSL's rule, and the
    // CPU's wrapping division), as a division by zero gives the dividend.
    let edges = |v: Vec<i32>| Tensor::from_vec(v, [6], &device).unwrap();
    let least = edges(vec![i32::MIN, i32::MIN, i32::MAX, -7, 7, i32::MIN]);
    let by = edges(vec![-1, 0, -1, 2, -2, 1]);
    for &op in integer_ops {
        for (pair, what) in [([&a, &b], ""), ([&least, &by], " at i32's edges")] {
            parity(
                &format!("i32 {op:?}{what}"),
                &[pair[0].clone(), pair[1].clone()],
                EXACT,
                |t| t[0].binary(&t[1], op),
            );
        }
    }
}

#[test]
fn integer_tensors_take_whole_number_scalars() {
    // Class ids shifted to start at 0, or scaled, stay i32 as in PyTorch.
    let labels = Tensor::from_vec(vec![1i32, 5, -3, 2], [4], &Device::cpu()).unwrap();
    parity(
        "i32 add_scalar",
        std::slice::from_ref(&labels),
        EXACT,
        |t| t[0].add_scalar(-1.0),
    );
    parity(
        "i32 mul_scalar",
        std::slice::from_ref(&labels),
        EXACT,
        |t| t[0].mul_scalar(3.0),
    );
    let shifted = labels.sub_scalar(1.0).unwrap();
    assert_eq!(shifted.dtype(), DType::I32);
    assert_eq!(shifted.to_vec::<i32>().unwrap(), [0, 4, -4, 1]);
    assert!(matches!(
        labels.add_scalar(0.5).unwrap_err(),
        kiln::Error::UnsupportedDType { .. }
    ));
}

#[test]
fn large_elementwise_and_reductions_match_cpu() {
    let mut rng = rng();
    // Over a million elements: spills the 1-D dispatch into a second grid dimension
    // on adapters with small limits and exercises long row loops.
    let x = rand(&[1031, 1024], &mut rng);
    let y = rand(&[1024], &mut rng);
    parity("add 1031x1024", &[x.clone(), y], F32, |t| t[0].add(&t[1]));
    parity("gelu 1031x1024", std::slice::from_ref(&x), F32_MATH, |t| {
        t[0].gelu()
    });
    parity("sum last 1031x1024", std::slice::from_ref(&x), F32, |t| {
        t[0].sum(&[-1], false)
    });
    parity("sum first 1031x1024", std::slice::from_ref(&x), F32, |t| {
        t[0].sum(&[0], false)
    });
    parity("softmax 1031x1024", std::slice::from_ref(&x), F32, |t| {
        t[0].softmax(-1)
    });
    parity("max all 1031x1024", std::slice::from_ref(&x), F32, |t| {
        t[0].max_all()
    });
    parity("contiguous of transpose 1031x1024", &[x], F32, |t| {
        t[0].t()?.contiguous()
    });
}

#[test]
fn reductions_match_cpu() {
    let mut rng = rng();
    let dims_list: &[&[isize]] = &[&[0], &[-1], &[1], &[0, 2], &[0, 1, 2]];
    for &op in ReduceOp::EXAMPLES {
        let ((lo, hi), tol) = reduce_domain(op);
        // A grid of quarters produces ties: the first index must win on both devices.
        let input = |shape: &[usize], rng: &mut kiln::Rng| match op.returns_index() {
            true => on_grid(&uniform(shape, lo, hi, rng), QUARTERS),
            false => uniform(shape, lo, hi, rng),
        };
        // The index reductions take one dim.
        let dims_list: Vec<&[isize]> = match op.returns_index() {
            true => vec![&[0], &[1], &[-1]],
            false => dims_list.to_vec(),
        };
        // Many vec4-aligned rows: the one-invocation-per-row variant on software adapters.
        let x = input(&[3, 50, 12], &mut rng);
        parity(&format!("{op:?} rows"), &[x], tol, |t| {
            t[0].reduce(op, &[-1], false)
        });
        // The workgroup kernel (rows not vec4-aligned): rows longer than four loads per
        // invocation with a ragged tail, and short rows that share a workgroup, its last
        // one part-filled.
        for shape in [[4, 2600], [70, 130]] {
            let x = input(&shape, &mut rng);
            parity(&format!("{op:?} rows {shape:?}"), &[x], tol, |t| {
                t[0].reduce(op, &[-1], false)
            });
        }
        for dims in dims_list {
            for keepdim in [false, true] {
                let x = input(&[5, 259, 3], &mut rng);
                let label = format!("{op:?} {dims:?} keepdim={keepdim}");
                parity(&label, &[x], tol, |t| t[0].reduce(op, dims, keepdim));
            }
        }
        let x = input(&[11, 37], &mut rng).t().unwrap();
        parity(&format!("{op:?} transposed"), &[x], tol, |t| {
            t[0].reduce(op, &[1], false)
        });
    }
    // Composed from the table's reductions.
    type Op = fn(&Tensor, &[isize], bool) -> kiln::Result<Tensor>;
    let composed: &[(&str, Op)] = &[("var", Tensor::var), ("std", Tensor::std)];
    for &(name, f) in composed {
        for &dims in dims_list {
            let x = rand(&[5, 259, 3], &mut rng);
            parity(&format!("{name} {dims:?}"), &[x], F32, |t| {
                f(&t[0], dims, false)
            });
        }
    }
    let x = rand(&[1], &mut rng);
    parity("sum of one", &[x], F32, |t| t[0].sum_all());
}

/// i32 sums and products past i32's range saturate at its bounds on both devices (as
/// `to_dtype` converts), over rows and columns.
#[test]
fn i32_reductions_past_the_range_saturate() {
    let Some(device) = gpu() else { return };
    let cpu = Device::cpu();
    // Sums and products past the upper bound, past the lower, a product past the lower
    // with a sum inside, and a row inside both as a control.
    let rows: Vec<i32> = [
        [1 << 30, 1 << 30, 1, 1, 1, 3],
        [-(1 << 30), -(1 << 30), -(1 << 30), 1, 1, 1],
        [1000, 1000, -1000, 7, 2, 1],
        [2, -3, 5, 1, 1, 4],
    ]
    .concat();
    let x = Tensor::from_vec(rows, [4, 6], &cpu).unwrap();
    for op in [ReduceOp::Sum, ReduceOp::Prod] {
        for (label, x, dim) in [
            ("rows", x.clone(), 1isize),
            ("columns", x.t().unwrap().contiguous().unwrap(), 0),
        ] {
            let want = x
                .reduce(op, &[dim], false)
                .unwrap()
                .to_vec::<i32>()
                .unwrap();
            let got = on(&device, &x).reduce(op, &[dim], false).unwrap();
            assert_eq!(got.to_vec::<i32>().unwrap(), want, "{op:?} over {label}");
        }
    }
    let sums = x.sum(&[1], false).unwrap().to_vec::<i32>().unwrap();
    assert_eq!(sums, [i32::MAX, i32::MIN, 1010, 10]);
    let products = x.prod(&[1], false).unwrap().to_vec::<i32>().unwrap();
    assert_eq!(products, [i32::MAX, i32::MIN, i32::MIN, -120]);
}

/// i32 reductions are exact on the GPU as on the CPU, past f32's 2^24 (where the float
/// kernels' sums round): every op over rows and columns, long enough for partial
/// results (past 4,096 elements), of values up to 2^30, and products that pass i32's
/// range and come back through a zero.
#[test]
fn i32_reductions_are_exact() {
    let Some(device) = gpu() else { return };
    let cpu = Device::cpu();
    let mut rng = rng();
    // 4,099 values near 10,001: a sum of 41 million, odd.
    let near: Vec<i32> = (0..4099).map(|i| 10_001 + i % 7).collect();
    let near = Tensor::from_vec(near, [1, 4099], &cpu).unwrap();
    assert_eq!(
        near.sum(&[1], false).unwrap().to_vec::<i32>().unwrap(),
        [41_006_390]
    );
    let large = |shape: &[usize], rng: &mut kiln::Rng| {
        uniform(shape, -(1 << 30) as f64, (1 << 30) as f64, rng)
            .to_dtype(DType::F64)
            .unwrap()
            .to_dtype(DType::I32)
            .unwrap()
    };
    // Few distinct values: ties for the index reductions.
    let few = |shape: &[usize], rng: &mut kiln::Rng| {
        uniform(shape, -3.0, 3.0, rng)
            .to_dtype(DType::I32)
            .unwrap()
            .mul_scalar((1 << 28) as f64)
            .unwrap()
    };
    // Products: small factors, some rows with a zero after they pass the range.
    let mut factors: Vec<i32> = (0..6 * 40).map(|i| [3, -2, 7, 5, -1, 2][i % 6]).collect();
    factors[40 + 35] = 0;
    let factors = Tensor::from_vec(factors, [6, 40], &cpu).unwrap();
    for &op in ReduceOp::EXAMPLES {
        let cases = [
            ("near", near.clone(), 1isize),
            ("rows", large(&[3, 9000], &mut rng), 1),
            ("columns", large(&[3, 5000, 7], &mut rng), 1),
            ("ties", few(&[4, 5000], &mut rng), 1),
            ("factors", factors.clone(), 1),
            (
                "factors by columns",
                factors.t().unwrap().contiguous().unwrap(),
                0,
            ),
        ];
        for (label, x, dim) in cases {
            let want = x.reduce(op, &[dim], false).unwrap();
            let got = on(&device, &x).reduce(op, &[dim], false).unwrap();
            assert_eq!(
                got.to_vec::<i32>().unwrap(),
                want.to_vec::<i32>().unwrap(),
                "{op:?} over {label}"
            );
        }
    }
}

#[test]
fn softmax_matches_cpu() {
    let mut rng = rng();
    for (shape, dim) in [
        (&[1usize, 1][..], -1isize),
        (&[7, 13], 0),
        (&[7, 13], 1),
        (&[3, 5, 300], 1),
        (&[2, 3, 1000], -1),
        // Longer than four loads per invocation, with a ragged tail; short rows that
        // share a workgroup, its last one part-filled.
        (&[3, 2600], -1),
        (&[70, 130], -1),
        (&[5, 9, 64], -1),
        // Many vec4-aligned rows: the one-invocation-per-row variant on software adapters.
        (&[2, 70, 36], -1),
        (&[96, 8], 0),
    ] {
        let x = rand(shape, &mut rng).mul_scalar(20.0).unwrap(); // large logits test stability
        parity(
            &format!("softmax {shape:?} dim {dim}"),
            std::slice::from_ref(&x),
            F32,
            |t| t[0].softmax(dim),
        );
        parity(
            &format!("log_softmax {shape:?} dim {dim}"),
            std::slice::from_ref(&x),
            F32,
            |t| t[0].log_softmax(dim),
        );
        let r = rand(shape, &mut rng);
        for log in [false, true] {
            parity(
                &format!("softmax gradient {shape:?} dim {dim} log {log}"),
                &[x.clone(), r.clone()],
                F32,
                |t| softmax_gradient(t, dim, log),
            );
        }
    }
    let x = transposed(&[9, 31], &mut rng);
    parity("softmax transposed", std::slice::from_ref(&x), F32, |t| {
        t[0].softmax(-1)
    });
    let r = transposed(&[9, 31], &mut rng);
    parity("softmax gradient transposed", &[x, r], F32, |t| {
        softmax_gradient(t, -1, false)
    });
    let empty = rand(&[0, 5], &mut rng);
    parity(
        "softmax gradient empty",
        &[empty.clone(), empty],
        F32,
        |t| softmax_gradient(t, -1, false),
    );
}

/// The gradient of `sum(softmax(x) * r)` (or of log_softmax) along `dim`, for `t = [x,
/// r]`.
fn softmax_gradient(t: &[Tensor], dim: isize, log: bool) -> kiln::Result<Tensor> {
    let x = t[0].detach().into_var()?;
    let y = match log {
        true => x.log_softmax(dim)?,
        false => x.softmax(dim)?,
    };
    let grads = y.mul(&t[1])?.sum_all()?.backward()?;
    Ok(grads.get(&x).expect("a gradient").clone())
}

/// The row kernels with each row's lanes combined through workgroup memory and, where
/// the adapter has subgroups, with shuffles: both against the CPU, and the two against
/// each other bit for bit (they pair lanes in the same order). The row lengths give
/// every count of lanes from 1 to 256, so each path of `row_total` runs (within one
/// subgroup, one exchange between subgroups, and the tree for rows of more subgroups
/// than a subgroup has lanes). No length is a multiple of 4, so software adapters run
/// these kernels too; some rows hold a NaN, one input is a sliced view. Cross-entropy
/// and its gradient combine their rows the same way. f16 too, where the adapter has it.
#[test]
fn row_kernels_match_cpu_both_ways() {
    use kiln::backend::{GpuDevice, RowReduction};
    let Some(default) = gpu() else { return };
    let mut devices = Vec::new();
    for rows in [RowReduction::Workgroup, RowReduction::Subgroup] {
        let gpu = GpuDevice::new().unwrap();
        gpu.set_poison_outputs(true);
        match gpu.set_row_reduction(rows) {
            Ok(()) => devices.push((rows, Device::Gpu(gpu))),
            // An adapter with subgroups must pass the probe, unless the user turned
            // them off.
            Err(e) => {
                let off = std::env::var("KILN_SUBGROUPS").as_deref() == Ok("0");
                let has = default.as_gpu().unwrap().summary().subgroups;
                assert!(off || !has, "the adapter has subgroups, but: {e}");
                eprintln!("row kernels with subgroups do not run here: {e}");
            }
        }
    }
    let mut rng = rng();
    type RowOp = Box<dyn Fn(&[Tensor]) -> kiln::Result<Tensor>>;
    for k in [3usize, 9, 30, 61, 125, 250, 257, 515, 1029, 4099] {
        let mut cases: Vec<(String, Vec<Tensor>, Tol, RowOp)> = Vec::new();
        let with_nan = |x: Tensor| {
            let mut v: Vec<f32> = x.to_f64_vec().unwrap().iter().map(|&a| a as f32).collect();
            v[2 * k + k / 2] = f32::NAN;
            Tensor::from_vec(v, [67, k], &Device::cpu()).unwrap()
        };
        for &op in ReduceOp::EXAMPLES {
            let ((lo, hi), tol) = reduce_domain(op);
            let mut x = uniform(&[67, k], lo, hi, &mut rng);
            if op.returns_index() {
                x = on_grid(&x, QUARTERS);
            }
            let f: RowOp = Box::new(move |t| t[0].reduce(op, &[-1], false));
            cases.push((format!("{op:?}"), vec![x.clone()], tol, f));
            let f: RowOp = Box::new(move |t| t[0].reduce(op, &[-1], false));
            cases.push((format!("{op:?} with a NaN"), vec![with_nan(x)], tol, f));
        }
        let logits = rand(&[67, k], &mut rng).mul_scalar(20.0).unwrap();
        let f: RowOp = Box::new(|t| t[0].softmax(-1));
        cases.push(("softmax".into(), vec![logits.clone()], F32, f));
        let f: RowOp = Box::new(|t| t[0].log_softmax(-1));
        cases.push(("log_softmax".into(), vec![logits], F32, f));
        let f: RowOp = Box::new(|t| t[0].softmax(-1));
        cases.push((
            "softmax sliced".into(),
            vec![sliced(&[5, k], &mut rng)],
            F32,
            f,
        ));
        let soft_grads = vec![
            rand(&[67, k], &mut rng).mul_scalar(20.0).unwrap(),
            rand(&[67, k], &mut rng),
        ];
        for log in [false, true] {
            let f: RowOp = Box::new(move |t| softmax_gradient(t, -1, log));
            let name = format!("softmax gradient, log {log}");
            cases.push((name.clone(), soft_grads.clone(), F32, f));
            let f: RowOp = Box::new(move |t| softmax_gradient(t, -1, log));
            let nan = vec![soft_grads[0].clone(), with_nan(soft_grads[1].clone())];
            cases.push((format!("{name}, a NaN in the gradient"), nan, F32, f));
        }
        let targets: Vec<i32> = (0..67).map(|r| ((r * 7919) % k) as i32).collect();
        let targets = Tensor::from_vec(targets, [67], &Device::cpu()).unwrap();
        let loss = vec![rand(&[67, k], &mut rng).mul_scalar(10.0).unwrap(), targets];
        let f: RowOp = Box::new(|t| t[0].cross_entropy_per_row(&t[1], 0.1));
        cases.push(("cross_entropy".into(), loss.clone(), F32, f));
        let f: RowOp = Box::new(|t| {
            let x = t[0].detach().into_var()?;
            let grads = x.cross_entropy_per_row(&t[1], 0.1)?.sum_all()?.backward()?;
            Ok(grads.get(&x).expect("a gradient").clone())
        });
        cases.push(("cross_entropy gradient".into(), loss, F32, f));
        let norm = vec![
            rand(&[67, k], &mut rng),
            rand(&[k], &mut rng),
            rand(&[k], &mut rng),
        ];
        let f: RowOp = Box::new(move |t| t[0].layer_norm(&[k], Some(&t[1]), Some(&t[2]), 1e-5));
        cases.push(("layer_norm".into(), norm.clone(), F32, f));
        let mut norm_grads = norm;
        norm_grads.push(rand(&[67, k], &mut rng));
        let f: RowOp = Box::new(move |t| layer_norm_gradients(t, k));
        cases.push(("layer_norm gradients".into(), norm_grads, F32, f));
        // Batch norm's 67 channels of k elements each, one per sample, `c` apart.
        let channels = vec![
            rand(&[k, 67], &mut rng),
            rand(&[67], &mut rng),
            rand(&[67], &mut rng),
            rand(&[k, 67], &mut rng),
            rand(&[67], &mut rng),
            rand(&[67], &mut rng),
        ];
        let f: RowOp = Box::new(batch_norm_results);
        cases.push(("batch_norm".into(), channels, F32, f));
        if f16_ok() {
            // f16 storage, f32 arithmetic: the f16 builds of each path.
            let half = |t: Tensor| t.to_dtype(DType::F16).unwrap();
            let x = half(rand(&[67, k], &mut rng));
            let f: RowOp = Box::new(|t| t[0].sum(&[-1], false));
            cases.push(("f16 sum".into(), vec![x.clone()], F16, f));
            let f: RowOp = Box::new(|t| t[0].softmax(-1));
            cases.push(("f16 softmax".into(), vec![x.clone()], F16, f));
            let (w, b) = (half(rand(&[k], &mut rng)), half(rand(&[k], &mut rng)));
            let f: RowOp = Box::new(move |t| t[0].layer_norm(&[k], Some(&t[1]), Some(&t[2]), 1e-5));
            cases.push(("f16 layer_norm".into(), vec![x.clone(), w, b], F16, f));
            let r = half(rand(&[67, k], &mut rng));
            let f: RowOp = Box::new(|t| softmax_gradient(t, -1, false));
            cases.push(("f16 softmax gradient".into(), vec![x, r], F16, f));
        }
        for (name, inputs, tol, f) in &cases {
            let mut results = Vec::new();
            for (rows, device) in &devices {
                let label = format!("{name} 67x{k}, {rows:?}");
                parity_on(device, &label, inputs, *tol, f);
                let moved: Vec<Tensor> = inputs.iter().map(|t| on_strided(device, t)).collect();
                let bits: Vec<u64> = f(&moved)
                    .unwrap()
                    .to_f64_vec()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect();
                results.push((label, bits));
            }
            if let [(a, first), (b, second)] = &results[..] {
                assert!(first == second, "{a} and {b} differ in their bits");
            }
        }
    }
}

#[test]
fn matmul_matches_cpu() {
    let mut rng = rng();
    for &(m, k, n) in &[
        (1, 1, 1),
        (7, 13, 5),
        (64, 64, 64),
        (65, 17, 129),
        (3, 300, 2),
    ] {
        let (a, b) = (rand(&[m, k], &mut rng), rand(&[k, n], &mut rng));
        parity(&format!("matmul {m}x{k}x{n}"), &[a, b], F32, |t| {
            t[0].matmul(&t[1])
        });
    }
    // Transposed operands are read through strides.
    let (a, b) = (
        transposed(&[33, 47], &mut rng),
        transposed(&[47, 19], &mut rng),
    );
    parity("matmul transposed", &[a, b], F32, |t| t[0].matmul(&t[1]));
    let (a, b) = (sliced(&[20, 30], &mut rng), sliced(&[30, 9], &mut rng));
    parity("matmul sliced", &[a, b], F32, |t| t[0].matmul(&t[1]));
    // Batched with broadcast batch dims.
    let (a, b) = (rand(&[2, 1, 9, 11], &mut rng), rand(&[3, 11, 6], &mut rng));
    parity("matmul broadcast batch", &[a, b], F32, |t| {
        t[0].matmul(&t[1])
    });
    let (a, b) = (
        rand(&[4, 3, 2, 5, 7], &mut rng),
        rand(&[4, 1, 2, 7, 3], &mut rng),
    );
    parity("matmul three batch dims", &[a, b], F32, |t| {
        t[0].matmul(&t[1])
    });
    // Vectors.
    let (a, b) = (rand(&[13], &mut rng), rand(&[13, 4], &mut rng));
    parity("vector @ matrix", &[a, b], F32, |t| t[0].matmul(&t[1]));
    let (a, b) = (rand(&[5, 13], &mut rng), rand(&[13], &mut rng));
    parity("matrix @ vector", &[a, b], F32, |t| t[0].matmul(&t[1]));
    let (a, b) = (rand(&[13], &mut rng), rand(&[13], &mut rng));
    parity("vector @ vector", &[a, b], F32, |t| t[0].matmul(&t[1]));
    // Over a million outputs.
    let (a, b) = (rand(&[1031, 48], &mut rng), rand(&[48, 1029], &mut rng));
    parity("matmul large", &[a, b], F32, |t| t[0].matmul(&t[1]));
}

/// Contiguous, vec4-aligned operands take the vec4 entry points: lengths with a partial
/// last group of 16, views starting at an aligned and at an unaligned offset.
#[test]
fn vec4_elementwise_paths_match_cpu() {
    let mut rng = rng();
    for n in [4usize, 20, 1028, 4096 + 12] {
        let (x, y) = (rand(&[n], &mut rng), rand(&[n], &mut rng));
        parity(
            &format!("exp {n}"),
            std::slice::from_ref(&x),
            F32_MATH,
            |t| t[0].exp(),
        );
        parity(&format!("mul {n}"), &[x, y], F32, |t| t[0].mul(&t[1]));
    }
    let base = rand(&[1030], &mut rng);
    for start in [4usize, 2] {
        let (x, y) = (
            base.narrow(0, start, 1024).unwrap(),
            base.narrow(0, 0, 1024).unwrap(),
        );
        parity(
            &format!("sqrt of |x| from {start}"),
            std::slice::from_ref(&x),
            F32_MATH,
            |t| t[0].abs()?.sqrt(),
        );
        parity(&format!("sub from {start}"), &[x, y], F32, |t| {
            t[0].sub(&t[1])
        });
    }
}

/// Small integers (-3..=2) on the CPU: every product and partial sum of a matmul over
/// them is exact in f32, so kernels that order their sums differently must still match
/// the CPU exactly.
fn small_ints(shape: &[usize], rng: &mut kiln::Rng) -> Tensor {
    let values: Vec<f32> = rand(shape, rng)
        .to_vec::<f32>()
        .unwrap()
        .iter()
        .map(|v| (v * 3.0).floor())
        .collect();
    Tensor::from_vec(values, shape.to_vec(), &Device::cpu()).unwrap()
}

/// Each matmul kernel variant, on its own device whatever the adapter would pick, over
/// shapes that reach its edge cases: several lhs blocks along m and k (32 rows, 512 of
/// k), k and n not multiples of 4, rhs read in place or packed, strided and batched,
/// k split into 2, 4 and 7 chunks (on transposed and sliced operands too).
#[test]
fn matmul_variants_match_cpu() {
    use kiln::backend::{GpuDevice, MatmulVariant};
    if gpu().is_none() {
        return;
    }
    let mut rng = rng();
    let mut ints = |shape: &[usize]| small_ints(shape, &mut rng);
    let cases: Vec<(&str, Vec<Tensor>)> = vec![
        (
            "3 k blocks, rhs in place",
            vec![ints(&[70, 1100]), ints(&[1100, 36])],
        ),
        (
            "3 k blocks, k % 4 != 0",
            vec![ints(&[45, 1030]), ints(&[1030, 13])],
        ),
        ("one row", vec![ints(&[1, 7]), ints(&[7, 4])]),
        // Split-k cuts this k into 7 equal chunks (2310 = 7 x 330).
        ("long k", vec![ints(&[33, 2310]), ints(&[2310, 17])]),
        (
            "transposed",
            vec![ints(&[600, 33]).t().unwrap(), ints(&[20, 600]).t().unwrap()],
        ),
        (
            "sliced",
            vec![
                ints(&[42, 519])
                    .narrow(0, 1, 40)
                    .unwrap()
                    .narrow(1, 2, 516)
                    .unwrap(),
                ints(&[518, 11])
                    .narrow(0, 2, 516)
                    .unwrap()
                    .narrow(1, 3, 8)
                    .unwrap(),
            ],
        ),
        (
            "batched in place",
            vec![ints(&[3, 40, 516]), ints(&[3, 516, 8])],
        ),
        (
            "broadcast batch",
            vec![ints(&[2, 1, 9, 12]), ints(&[3, 12, 8])],
        ),
        // Blocked's vec4 kernel: whole 128x128 tiles, k a multiple of 8, unit column
        // strides; then the same shapes off by one in each way, which take blocked.wgsl.
        ("aligned", vec![ints(&[256, 264]), ints(&[264, 128])]),
        (
            "aligned batched, offset rhs",
            vec![
                ints(&[2, 128, 16]),
                ints(&[2, 20, 128]).narrow(1, 4, 16).unwrap(),
            ],
        ),
        (
            "aligned but lhs transposed",
            vec![ints(&[264, 128]).t().unwrap(), ints(&[264, 128])],
        ),
        (
            "aligned but k % 8 != 0",
            vec![ints(&[128, 12]), ints(&[12, 128])],
        ),
        (
            "over one tile each way",
            vec![ints(&[130, 20]), ints(&[20, 131])],
        ),
        (
            "both transposed, several tiles",
            vec![ints(&[40, 260]).t().unwrap(), ints(&[300, 40]).t().unwrap()],
        ),
    ];
    for variant in MatmulVariant::ALL {
        let gpu = GpuDevice::new().unwrap();
        gpu.set_poison_outputs(true);
        if let Err(e) = gpu.set_matmul_variant(variant) {
            eprintln!("{variant:?} does not run on this adapter: {e}");
            continue;
        }
        let device = Device::Gpu(gpu);
        for (label, inputs) in &cases {
            let label = format!("matmul {variant:?} {label}");
            parity_on(&device, &label, inputs, EXACT, |t| t[0].matmul(&t[1]));
        }
        if f16_ok() {
            // f16 storage, f32 accumulation: the aligned (vec4) and checked kernels.
            for (label, inputs) in cases.iter().filter(|(l, _)| l.starts_with("aligned")) {
                let half: Vec<Tensor> = inputs
                    .iter()
                    .map(|t| t.to_dtype(DType::F16).unwrap())
                    .collect();
                let label = format!("f16 matmul {variant:?} {label}");
                parity_on(&device, &label, &half, F16, |t| t[0].matmul(&t[1]));
            }
        }
    }
}

/// Products over more terms than a software adapter's loops run in one invocation
/// (65,535 iterations, past which llvmpipe silently skips the rest; the tiled and
/// blocked kernels walk k in one loop and came out short): every matmul variant and
/// both ways of running a convolution match the CPU exactly (small integers). On a
/// software adapter an f16 product that long is refused, not summed short.
#[test]
fn products_over_long_k_match_cpu() {
    use kiln::backend::{ConvAlgorithm, GpuDevice, MatmulVariant};
    let Some(default) = gpu() else { return };
    let mut rng = rng();
    let (a, b) = (
        small_ints(&[3, 70_001], &mut rng),
        small_ints(&[70_001, 5], &mut rng),
    );
    for variant in MatmulVariant::ALL {
        let gpu = GpuDevice::new().unwrap();
        gpu.set_poison_outputs(true);
        if gpu.set_matmul_variant(variant).is_err() {
            continue;
        }
        let label = format!("matmul {variant:?} over 70,001 terms");
        let inputs = [a.clone(), b.clone()];
        parity_on(&Device::Gpu(gpu), &label, &inputs, EXACT, |t| {
            t[0].matmul(&t[1])
        });
    }
    // 4,097 channels of 4x4 taps: 65,552 terms an output.
    let x = small_ints(&[1, 4097, 5, 6], &mut rng);
    let w = small_ints(&[2, 4097, 4, 4], &mut rng);
    for algorithm in ConvAlgorithm::ALL {
        let gpu = GpuDevice::new().unwrap();
        gpu.set_poison_outputs(true);
        gpu.set_conv_algorithm(algorithm);
        let label = format!("conv2d {algorithm:?} over 65,552 terms");
        let inputs = [x.clone(), w.clone()];
        parity_on(&Device::Gpu(gpu), &label, &inputs, EXACT, |t| {
            t[0].conv2d(&t[1], None, Conv2dOptions::default())
        });
    }
    let software = default.as_gpu().unwrap().summary().is_software();
    if software && f16_ok() {
        let half = |t: &Tensor| t.to_dtype(DType::F16).unwrap().to_device(&default).unwrap();
        let e = half(&a)
            .matmul(&half(&b))
            .and_then(|c| c.to_vec::<f32>())
            .unwrap_err();
        assert!(
            matches!(e, kiln::Error::Unsupported { op: "matmul", .. }),
            "{e}"
        );
    }
}

/// The autotuner on a product big enough to tune: it times every candidate, the
/// result is the winner's and matches the CPU exactly, the decision lands in the cache
/// file, and a second device on the same file starts from it without tuning.
#[test]
fn autotuned_matmul_matches_cpu_and_persists() {
    use kiln::backend::{read_autotune_cache, GpuDevice, MatmulVariant};
    if gpu().is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("kiln-autotune-test-{}", std::process::id()));
    let cache = dir.join("autotune.json");
    let _ = std::fs::remove_file(&cache);
    let mut rng = rng();
    let mut ints = |shape: &[usize]| small_ints(shape, &mut rng);
    // 2 * 256 * 520 * 600 flops: over the tuning threshold; n not a multiple of 128.
    let inputs = [ints(&[256, 520]), ints(&[520, 600])];
    let tuned = || {
        let gpu = GpuDevice::new().unwrap();
        gpu.set_poison_outputs(true);
        gpu.use_autotune_cache(Some(cache.clone()));
        gpu.set_matmul_variant(MatmulVariant::Autotune).unwrap();
        gpu
    };
    let first = tuned();
    assert!(first.autotune_decisions().is_empty());
    let device = Device::Gpu(first.clone());
    parity_on(&device, "autotuned matmul", &inputs, EXACT, |t| {
        t[0].matmul(&t[1])
    });
    let decisions = first.autotune_decisions();
    assert_eq!(decisions.len(), 1, "one shape class tuned: {decisions:?}");
    let (class, winner) = decisions.into_iter().next().unwrap();
    assert!(class.contains("m256 n1024 k1024"), "{class}");
    assert!(MatmulVariant::from_name(&winner).is_some(), "{winner}");
    let on_disk = read_autotune_cache(&cache).unwrap();
    let saved: Vec<&String> = on_disk.values().filter_map(|c| c.get(&class)).collect();
    assert_eq!(saved, [&winner], "{on_disk:?}");

    let second = tuned();
    assert_eq!(second.autotune_decisions().get(&class), Some(&winner));
    parity_on(
        &Device::Gpu(second),
        "matmul from the cached decision",
        &inputs,
        EXACT,
        |t| t[0].matmul(&t[1]),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The autotuner on a convolution big enough to tune: it times both algorithms (the
/// unfolded one tuning its matmul on the way), keeps the winner under the convolution's
/// class, and the result matches the CPU; a second device on the same cache file runs
/// from the decision.
#[test]
fn autotuned_conv_matches_cpu_and_persists() {
    use kiln::backend::{read_autotune_cache, ConvAlgorithm, GpuDevice};
    if gpu().is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("kiln-conv-autotune-{}", std::process::id()));
    let cache = dir.join("autotune.json");
    let _ = std::fs::remove_file(&cache);
    let mut rng = rng();
    // 2 * 4 * 64 * (32 * 32) * (32 * 9) flops: over the tuning threshold. Small
    // integers, whose sums are exact in any order: with real values an output that
    // cancels to near zero missed F32's tolerance (seed 1796347373154748965).
    let inputs = [
        small_ints(&[4, 32, 34, 34], &mut rng),
        small_ints(&[64, 32, 3, 3], &mut rng),
    ];
    let conv = |t: &[Tensor]| t[0].conv2d(&t[1], None, Conv2dOptions::default());
    let tuned = || {
        let gpu = GpuDevice::new().unwrap();
        gpu.set_poison_outputs(true);
        gpu.use_autotune_cache(Some(cache.clone()));
        gpu.set_conv_algorithm(ConvAlgorithm::Autotune);
        gpu
    };
    let first = tuned();
    parity_on(
        &Device::Gpu(first.clone()),
        "autotuned conv2d",
        &inputs,
        EXACT,
        conv,
    );
    let decisions = first.autotune_decisions();
    let convs: Vec<_> = decisions
        .iter()
        .filter(|(c, _)| c.starts_with("conv "))
        .collect();
    assert_eq!(convs.len(), 1, "one convolution class tuned: {decisions:?}");
    let (class, winner) = convs[0];
    assert_eq!(class, "conv f32 m64 n1024 k512 b4");
    let timed = [ConvAlgorithm::Unfold, ConvAlgorithm::Implicit];
    let chosen = ConvAlgorithm::from_name(winner);
    assert!(chosen.is_some_and(|a| timed.contains(&a)), "{winner}");
    let on_disk = read_autotune_cache(&cache).unwrap();
    let saved: Vec<&String> = on_disk.values().filter_map(|c| c.get(class)).collect();
    assert_eq!(saved, [winner], "{on_disk:?}");

    let second = tuned();
    assert_eq!(second.autotune_decisions().get(class), Some(winner));
    parity_on(
        &Device::Gpu(second.clone()),
        "conv2d from the cached decision",
        &inputs,
        EXACT,
        conv,
    );
    // A strided transposed convolution: unfolded against by phases, under a class of
    // its own. 2 * 4 * (64 * 4 phases) * (17 * 17, the grid shifted) * (64 * 2 * 2)
    // flops.
    let inputs = [
        rand(&[4, 64, 16, 16], &mut rng),
        rand(&[64, 64, 4, 4], &mut rng),
    ];
    let options = Conv2dOptions {
        stride: (2, 2),
        padding: (1, 1),
        ..Default::default()
    };
    parity_on(
        &Device::Gpu(second.clone()),
        "autotuned conv_transpose2d by phases",
        &inputs,
        F32,
        |t| t[0].conv_transpose2d(&t[1], None, options, (0, 0)),
    );
    let decisions = second.autotune_decisions();
    let phases: Vec<_> = decisions
        .iter()
        .filter(|(c, _)| c.starts_with("conv-transpose phases "))
        .collect();
    assert_eq!(phases.len(), 1, "one class tuned: {decisions:?}");
    let (class, winner) = phases[0];
    assert_eq!(class, "conv-transpose phases f32 m256 n512 k256 b4");
    assert!(ConvAlgorithm::from_name(winner).is_some_and(|a| timed.contains(&a)));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Each fused optimizer step against the CPU's, for the parameter and every state:
/// Adam with L2 decay, AdamW, SGD with momentum (plain and Nesterov, with decay) and
/// RMSprop; a parameter that is a slice and a gradient that is a transposed view; f32
/// and f16.
#[test]
fn optimizer_updates_match_cpu() {
    use kiln::{AdamSpec, OptimizerStep, RmsPropSpec, SgdSpec};
    let mut rng = rng();
    let adam = AdamSpec {
        one_minus_beta1: 0.1,
        one_minus_beta2: 0.001,
        eps: 1e-8,
        step_size: 1e-3 / (1.0 - 0.9f32.powi(3)),
        inv_correction2: 1.0 / (1.0 - 0.999f32.powi(3)),
        coupled_decay: 0.01,
        decay_factor: 1.0,
    };
    let adamw = AdamSpec {
        coupled_decay: 0.0,
        decay_factor: 1.0 - 1e-3 * 0.01,
        ..adam
    };
    let sgd = SgdSpec {
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 0.01,
        nesterov: false,
    };
    let steps = [
        OptimizerStep::Adam(adam),
        OptimizerStep::Adam(adamw),
        OptimizerStep::SgdMomentum(sgd),
        OptimizerStep::SgdMomentum(SgdSpec {
            nesterov: true,
            ..sgd
        }),
        OptimizerStep::RmsProp(RmsPropSpec {
            lr: 0.01,
            one_minus_alpha: 0.01,
            eps: 1e-8,
            weight_decay: 0.01,
        }),
    ];
    let shape = [37, 19];
    let p = sliced(&shape, &mut rng);
    let g = transposed(&shape, &mut rng);
    let first = rand(&shape, &mut rng).mul_scalar(0.1).unwrap();
    // Second moments and squared averages are never negative.
    let second = rand(&shape, &mut rng)
        .square()
        .unwrap()
        .mul_scalar(0.01)
        .unwrap();
    let inputs = [p, g, first, second];
    let half: Vec<Tensor> = inputs
        .iter()
        .map(|t| t.to_dtype(DType::F16).unwrap())
        .collect();
    let mut sets = vec![("f32", inputs.to_vec(), F32)];
    if f16_ok() {
        sets.push(("f16", half, F16));
    }
    for (dtype, inputs, tol) in sets {
        for step in steps {
            // Adam's states are (m, v); the others' one state is the last input.
            let states: Vec<usize> = match step.states() {
                2 => vec![2, 3],
                _ => vec![3],
            };
            for output in 0..=states.len() {
                let label = format!("{step:?} {dtype} output {output}");
                parity(&label, &inputs, tol, |t| {
                    let states: Vec<&Tensor> = states.iter().map(|&i| &t[i]).collect();
                    let (p, states) = t[0].optimizer_update(&t[1], &states, &step)?;
                    Ok(std::iter::once(p).chain(states).nth(output).unwrap())
                });
            }
        }
    }
}

/// One LSTM step written as tensor ops (PyTorch's gate order i, f, g, o): the reference
/// the fused `lstm_cell` is checked against, output and gradients.
fn lstm_reference(z: &Tensor, c: &Tensor) -> kiln::Result<Tensor> {
    let hidden = c.dims()[1];
    let gate = |k: usize| z.narrow(1, k * hidden, hidden);
    let (i, f) = (gate(0)?.sigmoid()?, gate(1)?.sigmoid()?);
    let (g, o) = (gate(2)?.tanh()?, gate(3)?.sigmoid()?);
    let c1 = f.mul(c)?.add(&i.mul(&g)?)?;
    Tensor::cat(&[o.mul(&c1.tanh()?)?, c1], 1)
}

/// The fused LSTM step against the plain formula on each device (the GPU's outputs
/// poisoned): `[h | c']` and the gradients of the gates and the cell state, for each
/// way a model reads the output: whole, under a weighted sum (so that dh and dc'
/// differ); its halves narrowed as a recurrent layer reads them, both or one (the rule
/// gets the gradients of `h` and `c'` apart, zeros for the one with none); both ways
/// at once and a slice across the halves (the parts put together first). Where the
/// halves come apart, the output's own gradient (`kiln::grad`) is put together too.
#[test]
fn lstm_cell_matches_the_plain_formula() {
    type Loss = fn(&Tensor, &Tensor) -> kiln::Result<Tensor>;
    let hidden = 7;
    let uses: [(&str, Loss); 6] = [
        ("whole", |out, w| out.mul(w)?.sum_all()),
        ("h and c'", |out, w| {
            let h = out.narrow(1, 0, 7)?.mul(&w.narrow(1, 0, 7)?)?.sum_all()?;
            h.add(&out.narrow(1, 7, 7)?.mul(&w.narrow(1, 7, 7)?)?.sum_all()?)
        }),
        ("h", |out, w| {
            out.narrow(1, 0, 7)?.mul(&w.narrow(1, 0, 7)?)?.sum_all()
        }),
        ("c'", |out, w| {
            out.narrow(1, 7, 7)?.mul(&w.narrow(1, 7, 7)?)?.sum_all()
        }),
        ("h and the whole", |out, w| {
            let h = out.narrow(1, 0, 7)?.mul(&w.narrow(1, 3, 7)?)?.sum_all()?;
            h.add(&out.mul(w)?.sum_all()?)
        }),
        ("across the halves", |out, w| {
            out.narrow(1, 3, 8)?.mul(&w.narrow(1, 0, 8)?)?.sum_all()
        }),
    ];
    let mut rng = rng();
    let z = uniform(&[5, 4 * hidden], -3.0, 3.0, &mut rng);
    let c = rand(&[5, hidden], &mut rng);
    let weights = rand(&[5, 2 * hidden], &mut rng);
    let mut devices = vec![Device::cpu()];
    devices.extend(gpu());
    for device in devices {
        let (z, c, w) = (on(&device, &z), on(&device, &c), on(&device, &weights));
        for (name, loss) in uses {
            let run = |f: &dyn Fn(&Tensor, &Tensor) -> kiln::Result<Tensor>| {
                let (z, c) = (
                    z.detach().into_var().unwrap(),
                    c.detach().into_var().unwrap(),
                );
                let out = f(&z, &c).unwrap();
                let l = loss(&out, &w).unwrap();
                let grads = kiln::grad(&[l], &[z, c, out.clone()], None).unwrap();
                let grads: Vec<Tensor> = grads.into_iter().map(Option::unwrap).collect();
                (out, grads)
            };
            let fused = run(&|z, c| z.lstm_cell(c));
            let plain = run(&lstm_reference);
            let label = format!("lstm_cell on {device:?}, {name}");
            assert_close(&format!("{label}: [h | c']"), &fused.0, &plain.0, F32_MATH);
            for (what, (a, b)) in ["d gates", "d cell", "d [h | c']"]
                .iter()
                .zip(fused.1.iter().zip(&plain.1))
            {
                assert_close(&format!("{label}: {what}"), a, b, F32_MATH);
            }
        }
    }
}

/// Cells with no rows or no units run forward and back on each device, their outputs
/// and gradients as empty as their inputs.
#[test]
fn recurrent_cells_take_empty_batches_and_no_units() {
    let mut devices = vec![Device::cpu()];
    devices.extend(gpu());
    for device in devices {
        for (batch, hidden) in [(0, 3), (2, 0), (0, 0)] {
            let var = |dims: [usize; 2]| {
                Tensor::zeros(dims, DType::F32, &device)
                    .unwrap()
                    .into_var()
                    .unwrap()
            };
            let label = format!("{device:?}, batch {batch}, hidden {hidden}");
            let (z, c) = (var([batch, 4 * hidden]), var([batch, hidden]));
            let hc = z.lstm_cell(&c).unwrap();
            assert_eq!(hc.dims(), [batch, 2 * hidden], "{label}");
            let h = hc.narrow(1, 0, hidden).unwrap();
            let c1 = hc.narrow(1, hidden, hidden).unwrap();
            let loss = h.sum_all().unwrap().add(&c1.sum_all().unwrap()).unwrap();
            let grads = loss.backward().unwrap();
            assert_eq!(
                grads.get(&z).unwrap().dims(),
                [batch, 4 * hidden],
                "{label}"
            );
            assert_eq!(grads.get(&c).unwrap().dims(), [batch, hidden], "{label}");
            let (x, hp, h0) = (
                var([batch, 3 * hidden]),
                var([batch, 3 * hidden]),
                var([batch, hidden]),
            );
            let h1 = x.gru_cell(&hp, &h0).unwrap();
            assert_eq!(h1.dims(), [batch, hidden], "{label}");
            let grads = h1.sum_all().unwrap().backward().unwrap();
            for (t, dims) in [(&x, [batch, 3 * hidden]), (&hp, [batch, 3 * hidden])] {
                assert_eq!(grads.get(t).unwrap().dims(), dims, "{label}");
            }
            assert_eq!(grads.get(&h0).unwrap().dims(), [batch, hidden], "{label}");
        }
    }
}

/// One GRU step written as tensor ops (PyTorch's gate order r, z, n): the reference the
/// fused `gru_cell` is checked against.
fn gru_reference(x: &Tensor, hp: &Tensor, h: &Tensor) -> kiln::Result<Tensor> {
    let hidden = h.dims()[1];
    let gate = |t: &Tensor, k: usize| t.narrow(1, k * hidden, hidden);
    let r = gate(x, 0)?.add(&gate(hp, 0)?)?.sigmoid()?;
    let z = gate(x, 1)?.add(&gate(hp, 1)?)?.sigmoid()?;
    let n = gate(x, 2)?.add(&r.mul(&gate(hp, 2)?)?)?.tanh()?;
    n.add(&z.mul(&h.sub(&n)?)?)
}

/// The fused GRU step against the plain formula on each device (the GPU's outputs
/// poisoned): `h'` and the gradients of both projections and the state.
#[test]
fn gru_cell_matches_the_plain_formula() {
    let mut rng = rng();
    let x = uniform(&[5, 3 * 7], -3.0, 3.0, &mut rng);
    let hp = uniform(&[5, 3 * 7], -3.0, 3.0, &mut rng);
    let h = rand(&[5, 7], &mut rng);
    let weights = rand(&[5, 7], &mut rng);
    let mut devices = vec![Device::cpu()];
    devices.extend(gpu());
    for device in devices {
        let inputs = [&x, &hp, &h].map(|t| on(&device, t));
        let w = on(&device, &weights);
        let run = |f: &dyn Fn(&[Tensor]) -> kiln::Result<Tensor>| {
            let vars: Vec<Tensor> = inputs
                .iter()
                .map(|t| t.detach().into_var().unwrap())
                .collect();
            let out = f(&vars).unwrap();
            let grads = out.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
            let d: Vec<Tensor> = vars.iter().map(|v| grads.get(v).unwrap().clone()).collect();
            (out, d)
        };
        let fused = run(&|t| t[0].gru_cell(&t[1], &t[2]));
        let plain = run(&|t| gru_reference(&t[0], &t[1], &t[2]));
        let label = format!("gru_cell on {device:?}");
        assert_close(&format!("{label}: h'"), &fused.0, &plain.0, F32_MATH);
        for (name, (a, b)) in ["d x", "d hp", "d h"]
            .iter()
            .zip(fused.1.iter().zip(&plain.1))
        {
            assert_close(&format!("{label}: {name}"), a, b, F32_MATH);
        }
    }
}

#[test]
fn f16_matmul_and_elementwise_match_cpu() {
    if !f16_ok() {
        if gpu().is_some() {
            panic!("the adapter lacks SHADER_F16, so f16 parity cannot be checked here");
        }
        return;
    }
    let mut rng = rng();
    let half = |t: Tensor| t.to_dtype(DType::F16).unwrap();
    let (a, b) = (
        half(rand(&[37, 70], &mut rng)),
        half(rand(&[70, 23], &mut rng)),
    );
    parity("f16 matmul", &[a, b], F16, |t| t[0].matmul(&t[1]));
    let (a, b) = (
        half(transposed(&[16, 33], &mut rng)),
        half(rand(&[2, 33, 5], &mut rng)),
    );
    parity("f16 batched transposed matmul", &[a, b], F16, |t| {
        t[0].matmul(&t[1])
    });
    let (x, y) = (half(rand(&[13, 17], &mut rng)), half(rand(&[17], &mut rng)));
    parity("f16 add", &[x.clone(), y.clone()], F16, |t| t[0].add(&t[1]));
    parity("f16 mul", &[x.clone(), y], F16, |t| t[0].mul(&t[1]));
    parity("f16 gelu", std::slice::from_ref(&x), F16, |t| t[0].gelu());
    parity("f16 exp", std::slice::from_ref(&x), F16, |t| t[0].exp());
    parity("f16 tanh", std::slice::from_ref(&x), F16, |t| t[0].tanh());
    parity("f16 softmax", std::slice::from_ref(&x), F16, |t| {
        t[0].softmax(-1)
    });
    parity("f16 sum", std::slice::from_ref(&x), F16, |t| {
        t[0].sum(&[1], false)
    });
    parity("f16 to f32", &[x], F32, |t| t[0].to_dtype(DType::F32));
    let x = half(sliced(&[1031, 1024], &mut rng));
    parity("f16 relu large sliced", &[x], F16, |t| t[0].relu());
}

#[test]
fn dtype_conversions_match_cpu() {
    let mut rng = rng();
    let x = rand(&[7, 9], &mut rng).mul_scalar(100.0).unwrap();
    parity("f32 to i32", std::slice::from_ref(&x), EXACT, |t| {
        t[0].to_dtype(DType::I32)
    });
    parity("f32 to f16", std::slice::from_ref(&x), F16, |t| {
        t[0].to_dtype(DType::F16)
    });
    parity(
        "f32 to i32 to f32 transposed",
        &[x.t().unwrap()],
        EXACT,
        |t| t[0].to_dtype(DType::I32)?.to_dtype(DType::F32),
    );
}

#[test]
fn views_and_copies_match_cpu() {
    let mut rng = rng();
    let x = rand(&[4, 6, 5], &mut rng);
    parity("permute", std::slice::from_ref(&x), EXACT, |t| {
        t[0].permute(&[2, 0, 1])?.contiguous()
    });
    parity(
        "reshape of transpose",
        std::slice::from_ref(&x),
        EXACT,
        |t| t[0].transpose(0, 2)?.reshape([30, 4]),
    );
    parity("narrow", std::slice::from_ref(&x), EXACT, |t| {
        t[0].narrow(1, 2, 3)?.contiguous()
    });
    parity("broadcast", &[x.narrow(0, 0, 1).unwrap()], EXACT, |t| {
        t[0].broadcast_to([3, 4, 6, 5])?.contiguous()
    });
    parity("squeeze/unsqueeze", std::slice::from_ref(&x), EXACT, |t| {
        t[0].unsqueeze(1)?.narrow(0, 1, 1)?.squeeze(0)?.contiguous()
    });
    parity("view -1", &[x], EXACT, |t| t[0].view(&[-1, 10]));
}

#[test]
fn creation_matches_cpu() {
    let Some(device) = gpu() else { return };
    let cpu = Device::cpu();
    for dtype in [DType::F32, DType::I32] {
        for (label, make) in [
            (
                "zeros",
                &(|d: &Device| Tensor::zeros([3, 7], dtype, d))
                    as &dyn Fn(&Device) -> kiln::Result<Tensor>,
            ),
            ("ones", &|d: &Device| Tensor::ones([5], dtype, d)),
            ("full", &|d: &Device| {
                Tensor::full([2, 3, 3], -7.0, dtype, d)
            }),
            ("arange", &|d: &Device| {
                Tensor::arange(-3.0, 11.0, 2.0, dtype, d)
            }),
            ("eye", &|d: &Device| Tensor::eye(6, dtype, d)),
        ] {
            assert_close(
                &format!("{label} {dtype}"),
                &make(&device).unwrap(),
                &make(&cpu).unwrap(),
                EXACT,
            );
        }
    }
}

#[test]
fn where_and_masked_fill_match_cpu() {
    let mut rng = rng();
    let mask = rand(&[6, 1], &mut rng).gt_scalar(0.0).unwrap();
    let (a, b) = (rand(&[6, 9], &mut rng), transposed(&[1, 9], &mut rng));
    parity("where", &[mask.clone(), a.clone(), b], F32, |t| {
        t[0].where_cond(&t[1], &t[2])
    });
    parity("masked_fill", &[a, mask], F32, |t| {
        t[0].masked_fill(&t[1], -1e9)
    });
    let imask = Tensor::from_vec(vec![1i32, 0, 0, 1, 1], [5], &Device::cpu()).unwrap();
    let ints = Tensor::arange(0.0, 5.0, 1.0, DType::I32, &Device::cpu()).unwrap();
    parity(
        "where i32",
        &[imask, ints.clone(), ints.mul(&ints).unwrap()],
        EXACT,
        |t| t[0].where_cond(&t[1], &t[2]),
    );
}

/// Convolutions of every kind the op takes: padded, strided, dilated, grouped,
/// depthwise, 1x1. The second set runs through the matmul on both algorithms (grouped
/// thickly enough not to be summed directly): filter counts on both sides of the small
/// tile's 32 and one wide enough for the blocked build, column counts off every tile,
/// k over several slices and not a multiple of one, padding wider than the kernel's
/// reach.
fn conv_cases() -> Vec<(&'static [usize], &'static [usize], Conv2dOptions)> {
    let padded = |p: usize| Conv2dOptions {
        padding: (p, p),
        ..Default::default()
    };
    vec![
        (&[1, 1, 5, 5], &[1, 1, 3, 3], Conv2dOptions::default()),
        (&[2, 3, 13, 11], &[5, 3, 3, 3], padded(1)),
        (
            &[2, 4, 17, 9],
            &[6, 2, 3, 2],
            Conv2dOptions {
                stride: (2, 1),
                padding: (1, 0),
                dilation: (1, 2),
                groups: 2,
            },
        ),
        (
            &[1, 6, 10, 10],
            &[6, 1, 3, 3],
            Conv2dOptions {
                groups: 6,
                ..padded(1)
            },
        ), // depthwise
        (
            &[2, 6, 11, 8],
            &[12, 1, 3, 3],
            Conv2dOptions {
                stride: (2, 1),
                padding: (2, 1),
                dilation: (2, 1),
                groups: 6,
            },
        ), // depthwise, two outputs per channel, strided and dilated
        (&[3, 8, 7, 7], &[16, 8, 1, 1], Conv2dOptions::default()), // 1x1
        (
            &[1, 2, 9, 9],
            &[3, 2, 5, 5],
            Conv2dOptions {
                stride: (3, 3),
                padding: (2, 2),
                ..Default::default()
            },
        ),
        // 70 filters: two 64-row tiles; 19x21 outputs: 399 columns, seven 64-column
        // tiles; k = 7 x 9 = 63.
        (&[2, 7, 19, 21], &[70, 7, 3, 3], padded(1)),
        // 33 filters (just over the small tile), k = 5 x 25 = 125, padding 3 of a 5x5.
        (&[1, 5, 12, 13], &[33, 5, 5, 5], padded(3)),
        // 32 and 2 filters per group on the small tile; k = 6 x 4 = 24 per group.
        (
            &[3, 12, 9, 10],
            &[64, 6, 2, 2],
            Conv2dOptions {
                stride: (2, 3),
                dilation: (3, 2),
                groups: 2,
                ..padded(2)
            },
        ),
        (
            &[2, 10, 6, 5],
            &[4, 5, 3, 1],
            Conv2dOptions {
                groups: 2,
                ..padded(1)
            },
        ),
        // 130 filters and 2.1M outputs: the blocked build; k = 36, five 8-deep slices.
        (&[4, 4, 64, 64], &[130, 4, 3, 3], padded(1)),
    ]
}

/// Every convolution case on the default device, then through the matmul each way
/// (`ConvAlgorithm`), with and without bias, and on a permuted input (compacted first:
/// with fusion on, in the implicit kernel's loads).
#[test]
fn conv2d_matches_cpu() {
    let devices = conv_devices();
    let mut rng = rng();
    for (xs, ws, o) in conv_cases() {
        let (x, w, b) = (
            rand(xs, &mut rng),
            rand(ws, &mut rng),
            rand(&[ws[0]], &mut rng),
        );
        for (name, device) in &devices {
            parity_on(
                device,
                &format!("{name} conv2d {xs:?} {ws:?} {o:?}"),
                &[x.clone(), w.clone(), b.clone()],
                F32,
                |t| t[0].conv2d(&t[1], Some(&t[2]), o),
            );
            parity_on(
                device,
                &format!("{name} conv2d no bias {xs:?}"),
                &[x.clone(), w.clone()],
                F32,
                |t| t[0].conv2d(&t[1], None, o),
            );
        }
    }
    let x = rand(&[2, 3, 12, 10], &mut rng)
        .permute(&[0, 1, 3, 2])
        .unwrap();
    let w = rand(&[4, 3, 3, 3], &mut rng);
    for (name, device) in &devices {
        parity_on(
            device,
            &format!("{name} conv2d permuted input"),
            &[x.clone(), w.clone()],
            F32,
            |t| t[0].conv2d(&t[1], None, Conv2dOptions::default()),
        );
    }
    if f16_ok() {
        // f16 storage, f32 accumulation.
        let (x, w) = (
            rand(&[2, 7, 19, 21], &mut rng),
            rand(&[70, 7, 3, 3], &mut rng),
        );
        let half = [
            x.to_dtype(DType::F16).unwrap(),
            w.to_dtype(DType::F16).unwrap(),
        ];
        for (name, device) in &devices {
            parity_on(device, &format!("{name} f16 conv2d"), &half, F16, |t| {
                t[0].conv2d(
                    &t[1],
                    None,
                    Conv2dOptions {
                        padding: (1, 1),
                        ..Default::default()
                    },
                )
            });
        }
    }
}

/// A transposed convolution in f16 rounds once, as every f16 product does: its output
/// is the f32 one rounded to f16, within one f16 rounding, on the CPU and the GPU, at
/// stride 1 and by phases, on outputs of near-cancelling sums. (Its composed way rounded
/// each tap's sum over channels to f16 before the fold added them: 4% off there.)
#[test]
fn f16_conv_transpose2d_rounds_once() {
    let mut devices = vec![Device::cpu()];
    devices.extend(gpu().filter(|_| f16_ok()));
    let mut rng = common::rng();
    // On a grid of 1/64 (exact in f16), so that each output's sum of products is exact
    // in f32 in any order: drawn freely, a sum cancelling to 1e-5 kept f32 rounding
    // errors of its terms near 9 (1e-6), far past one f16 rounding of the result, and
    // the CPU's order and the GPU's rounded to different f16s (seed 5123198295728075056,
    // subgroups of 4).
    let x = on_grid(&uniform(&[2, 4, 7, 6], -3.0, 3.0, &mut rng), 64.0);
    let w = on_grid(&uniform(&[4, 3, 3, 3], -3.0, 3.0, &mut rng), 64.0);
    let half = |t: &Tensor| t.to_dtype(DType::F16).unwrap();
    let stride_one = Conv2dOptions {
        padding: (1, 2),
        dilation: (1, 2),
        ..Default::default()
    };
    let by_phases = Conv2dOptions {
        stride: (2, 2),
        padding: (1, 1),
        ..Default::default()
    };
    for o in [stride_one, by_phases] {
        // The exact sums of the f16 values, in f32, rounded once.
        let wide = |t: &Tensor| half(t).to_dtype(DType::F32).unwrap();
        let want = half(
            &wide(&x)
                .conv_transpose2d(&wide(&w), None, o, (0, 0))
                .unwrap(),
        );
        for device in &devices {
            let (x, w) = (on(device, &half(&x)), on(device, &half(&w)));
            let got = x.conv_transpose2d(&w, None, o, (0, 0)).unwrap();
            // One f16 rounding: 2^-11 of the value, either way of a rounding boundary.
            assert_within(&format!("{o:?} on {device}"), &got, &want, |b| {
                b.abs() * 2f64.powi(-10) + 6e-8
            });
        }
    }
}

/// A transposed convolution's options: stride and padding (y, x), groups.
fn strided(sh: usize, sw: usize, ph: usize, pw: usize, groups: usize) -> Conv2dOptions {
    Conv2dOptions {
        stride: (sh, sw),
        padding: (ph, pw),
        groups,
        ..Default::default()
    }
}

/// A transposed convolution for the parity tests: input shape, weight shape, options,
/// output padding.
type TransposeCase = (
    &'static [usize],
    &'static [usize],
    Conv2dOptions,
    (usize, usize),
);

/// Transposed convolutions of every kind, on every path a device takes them.
fn conv_transpose_cases() -> Vec<TransposeCase> {
    let padded = |p: usize| Conv2dOptions {
        padding: (p, p),
        ..Default::default()
    };
    vec![
        (
            &[1, 1, 3, 3],
            &[1, 1, 3, 3],
            Conv2dOptions::default(),
            (0, 0),
        ),
        (
            &[2, 4, 5, 7],
            &[4, 3, 3, 3],
            Conv2dOptions {
                stride: (2, 2),
                padding: (1, 1),
                ..Default::default()
            },
            (1, 0),
        ),
        (
            &[1, 4, 6, 6],
            &[4, 2, 4, 4],
            Conv2dOptions {
                stride: (2, 2),
                padding: (1, 1),
                groups: 2,
                ..Default::default()
            },
            (0, 0),
        ),
        (
            &[1, 2, 5, 4],
            &[2, 3, 2, 3],
            Conv2dOptions {
                dilation: (2, 1),
                ..Default::default()
            },
            (0, 0),
        ),
        // Stride 1, run as a convolution where the device reads columns in place: 40
        // outputs (a 64-row tile), 11x13 outputs over several column tiles, padding;
        // dilation with output padding; two groups of 35 outputs; padding past the
        // kernel's reach.
        (&[2, 6, 9, 11], &[6, 40, 3, 3], padded(1), (0, 0)),
        (
            &[1, 4, 7, 6],
            &[4, 3, 3, 2],
            Conv2dOptions {
                dilation: (2, 1),
                padding: (1, 0),
                ..Default::default()
            },
            (1, 0),
        ),
        (
            &[2, 8, 5, 5],
            &[8, 35, 3, 3],
            Conv2dOptions {
                groups: 2,
                ..padded(2)
            },
            (0, 0),
        ),
        (&[1, 3, 12, 10], &[3, 5, 2, 2], padded(1), (0, 0)),
        // 130 outputs, 1.06M elements: the blocked build.
        (&[2, 3, 64, 64], &[3, 130, 3, 3], padded(1), (0, 0)),
        // Strided, run by phases where the device reads columns in place: DCGAN's 4x4
        // taps at stride 2 (phases that interleave exactly); a stride above the kernel
        // (phases with no taps) with output padding (phases a row short, cut); strides
        // and padding differing by dim over three groups; 130 outputs by four phases
        // on the blocked build.
        (
            &[3, 16, 7, 7],
            &[16, 8, 4, 4],
            strided(2, 2, 1, 1, 1),
            (0, 0),
        ),
        (&[2, 5, 4, 6], &[5, 3, 2, 5], strided(3, 2, 0, 2, 1), (2, 1)),
        (&[1, 6, 5, 3], &[6, 2, 3, 4], strided(2, 3, 1, 0, 3), (1, 2)),
        (
            &[2, 3, 32, 32],
            &[3, 130, 4, 4],
            strided(2, 2, 1, 1, 1),
            (0, 0),
        ),
        // Phases with all their taps, the filters a view of the kernel unpadded: 2x2 at
        // stride 2 (each output a single tap); 4x4 at stride 2 without padding.
        (&[2, 6, 5, 4], &[6, 4, 2, 2], strided(2, 2, 0, 0, 1), (0, 0)),
        (&[1, 4, 3, 5], &[4, 3, 4, 4], strided(2, 2, 0, 0, 1), (1, 1)),
    ]
}

#[test]
fn conv1d_and_conv_transpose2d_match_cpu() {
    let mut rng = rng();
    let (x, w, b) = (
        rand(&[2, 4, 29], &mut rng),
        rand(&[6, 2, 5], &mut rng),
        rand(&[6], &mut rng),
    );
    parity("conv1d", &[x, w, b], F32, |t| {
        t[0].conv1d(&t[1], Some(&t[2]), 2, 1, 2, 2)
    });
    let devices = conv_devices();
    for (xs, ws, o, op) in conv_transpose_cases() {
        let (x, w) = (rand(xs, &mut rng), rand(ws, &mut rng));
        let b = rand(&[ws[1] * o.groups], &mut rng);
        for (name, device) in &devices {
            parity_on(
                device,
                &format!("{name} conv_transpose2d {xs:?} {ws:?} {o:?} {op:?}"),
                &[x.clone(), w.clone(), b.clone()],
                F32,
                |t| t[0].conv_transpose2d(&t[1], Some(&t[2]), o, op),
            );
        }
    }
    // By phases from views: the input and the weight permuted (compacted first, the
    // weight's copy then padded for the phases' missing taps).
    let x = rand(&[2, 4, 6, 5], &mut rng)
        .permute(&[0, 1, 3, 2])
        .unwrap();
    let w = rand(&[3, 4, 3, 3], &mut rng)
        .permute(&[1, 0, 2, 3])
        .unwrap();
    for (name, device) in &devices {
        parity_on(
            device,
            &format!("{name} conv_transpose2d by phases, permuted operands"),
            &[x.clone(), w.clone()],
            F32,
            |t| t[0].conv_transpose2d(&t[1], None, strided(2, 2, 1, 0, 1), (1, 0)),
        );
    }
    if f16_ok() {
        // f16 storage, f32 accumulation: DCGAN's taps by phases, the grid shifted, the
        // bias in the product's stores.
        let half = [
            rand(&[2, 8, 5, 6], &mut rng),
            rand(&[8, 6, 4, 4], &mut rng),
            rand(&[6], &mut rng),
        ]
        .map(|t| t.to_dtype(DType::F16).unwrap());
        for (name, device) in &devices {
            parity_on(
                device,
                &format!("{name} f16 conv_transpose2d by phases"),
                &half,
                F16,
                |t| t[0].conv_transpose2d(&t[1], Some(&t[2]), strided(2, 2, 1, 1, 1), (0, 0)),
            );
        }
    }
    // A convolution's input gradient is a transposed convolution of the output's: at
    // stride 1, and at stride 2 (by phases), over a size the stride leaves a row of.
    // (input shape, weight shape, output weights' shape, options)
    type GradCase<'a> = (&'a [usize], &'a [usize], &'a [usize], Conv2dOptions);
    let input_grads: [GradCase; 2] = [
        (
            &[2, 6, 12, 11],
            &[40, 6, 5, 5],
            &[2, 40, 8, 7],
            Conv2dOptions::default(),
        ),
        (
            &[2, 6, 13, 12],
            &[40, 6, 4, 4],
            &[2, 40, 6, 6],
            strided(2, 2, 1, 1, 1),
        ),
    ];
    for (xs, ws, ys, o) in input_grads {
        let (x, w, weights) = (rand(xs, &mut rng), rand(ws, &mut rng), rand(ys, &mut rng));
        input_gradients_match(&format!("conv2d input gradient {o:?}"), [x, w, weights], o);
    }
}

/// The gradient of `sum(conv2d(x, w) * r)` with respect to `x` ([x, w, r]) on each device
/// of `conv_devices` against the CPU's. Each element sums up to 1,000 products (40
/// channels by 25 taps in the cases here), which the implicit build adds in one running
/// sum: compared normwise, as the products are in tests/fusion.rs (elementwise, an
/// element that cancels to 0.0096 failed by 1.2e-5, ordinary f32 rounding for such a
/// sum: its exact value was 1.0e-5 away).
fn input_gradients_match(label: &str, operands: [Tensor; 3], o: Conv2dOptions) {
    let input_grad = |t: &[Tensor]| -> kiln::Result<Tensor> {
        let x = t[0].detach().into_var()?;
        let loss = x.conv2d(&t[1], None, o)?.mul(&t[2])?.sum_all()?;
        let grads = loss.backward()?;
        Ok(grads.get(&x).expect("a gradient for x").clone())
    };
    let want = input_grad(&operands).unwrap();
    for (name, device) in &conv_devices() {
        let moved = operands.clone().map(|t| on_strided(device, &t));
        let got = input_grad(&moved).unwrap();
        assert!(got.device().is_gpu());
        assert_near(&format!("{name} {label}"), &got, &want, F32.atol, F32.rtol);
    }
}

/// `t` with `values` put at flat positions (of its contiguous order).
fn with_values(t: &Tensor, values: &[(usize, f32)]) -> Tensor {
    let mut v = t.to_vec::<f32>().unwrap();
    for &(at, value) in values {
        v[at] = value;
    }
    Tensor::from_vec(v, t.dims().to_vec(), &Device::cpu()).unwrap()
}

/// NaN and the infinities in a transposed convolution reach the outputs they reach on
/// the CPU, whose fold adds only the products of the kernel's taps and the input: not
/// the image's padding, nor the zeros of the phases' missing taps, which the implicit
/// product multiplies (an infinite weight by the padding's zero, a zero tap by a NaN
/// input: NaN in outputs the CPU leaves finite). Each operand takes a NaN, an infinity
/// or both signs of one, and the input is infinite everywhere (every element the
/// kernel stores is summed again), in every case of `conv_transpose_cases` on each
/// device of `conv_devices`. Then a convolution's input gradient with an infinite
/// weight.
#[test]
fn transposed_convolutions_keep_nan_where_the_cpu_does() {
    let mut rng = rng();
    let (nan, inf) = (f32::NAN, f32::INFINITY);
    let devices = conv_devices();
    for (xs, ws, o, op) in conv_transpose_cases() {
        let (x, w) = (rand(xs, &mut rng), rand(ws, &mut rng));
        // A corner and a middle of the input; the weights' first tap and an inner one.
        let count = |shape: &[usize]| shape.iter().product::<usize>();
        let (corner, middle, inner) = (0, count(xs) / 2 + 1, count(ws) / 2 + 1);
        let operands = [
            (
                "NaN in the input",
                with_values(&x, &[(corner, nan), (middle, nan)]),
                w.clone(),
            ),
            (
                "infinities in the input",
                with_values(&x, &[(corner, inf), (middle, -inf)]),
                w.clone(),
            ),
            (
                "an infinite weight",
                x.clone(),
                with_values(&w, &[(0, inf)]),
            ),
            (
                "NaN and infinite weights",
                x.clone(),
                with_values(&w, &[(0, -inf), (inner, nan)]),
            ),
            // Every output a tap reaches is infinite, so every element a kernel stores
            // is stored again: each store's place in the kernel's replay.
            (
                "an infinite input and positive weights",
                x.abs().unwrap().add_scalar(f64::INFINITY).unwrap(),
                w.abs().unwrap().add_scalar(0.1).unwrap(),
            ),
        ];
        for (what, x, w) in operands {
            for (name, device) in &devices {
                parity_on(
                    device,
                    &format!("{name} conv_transpose2d {xs:?} {ws:?} {o:?} {op:?}, {what}"),
                    &[x.clone(), w.clone()],
                    F32,
                    |t| t[0].conv_transpose2d(&t[1], None, o, op),
                );
            }
        }
    }
    // A convolution's input gradient, at stride 1 and by phases: an infinite weight
    // reaches the input positions its tap read, not the padding's.
    for (xs, ws, o) in [
        ([2, 6, 12, 11], [40, 6, 5, 5], strided(1, 1, 2, 2, 1)),
        ([2, 6, 13, 12], [40, 6, 4, 4], strided(2, 2, 1, 1, 1)),
    ] {
        let x = rand(&xs, &mut rng);
        let w = with_values(&rand(&ws, &mut rng), &[(7, inf)]);
        let dims = x.conv2d(&w, None, o).unwrap().dims().to_vec();
        let r = rand(&dims, &mut rng);
        let label = format!("conv2d input gradient {o:?}, an infinite weight");
        input_gradients_match(&label, [x, w, r], o);
    }
}

/// A convolution's weight gradient on each device of `conv_devices`, exactly (small
/// integers, whose sums are exact in any order): by the direct kernel (`Unfold`) and by
/// the tiled matmul reading the gradient and the image's columns in place (`Implicit`,
/// which the profile must show ran, and the direct kernel not; products too thin run the
/// direct kernel on every device). Cases: filters on the tiled build's 32 and 64 tiles
/// and on the blocked build, over several row and column tiles; k cut into chunks whose last is short and whose bounds
/// fall inside an image; groups with stride, dilation and uneven padding, wide enough
/// for the product and too thin (and depthwise); 1x1 taps; one image; a transposed
/// convolution's (its input and gradient exchanged); the input and the upstream
/// gradient as views; NaN in the input and in the upstream gradient; f16.
#[test]
fn conv_weight_gradients_match_cpu() {
    let devices = conv_devices();
    let mut rng = rng();
    let options = |stride, padding, dilation, groups| Conv2dOptions {
        stride,
        padding,
        dilation,
        groups,
    };
    let plain = |p: usize| options((1, 1), (p, p), (1, 1), 1);
    let weight_grad = |o: Conv2dOptions| {
        move |t: &[Tensor]| -> kiln::Result<Tensor> {
            let w = t[1].detach().into_var()?;
            let loss = t[0].conv2d(&w, None, o)?.mul(&t[2])?.sum_all()?;
            Ok(loss.backward()?.get(&w).expect("a gradient for w").clone())
        }
    };
    // The kernels that compute a weight gradient: the product's three builds, the
    // direct kernel.
    const SMALL: &str = "(ConvWeightGradImplicitSmallTiled)";
    const TILED: &str = "(ConvWeightGradImplicit)";
    const BLOCKED: &str = "(ConvWeightGradImplicitBlocked)";
    const DIRECT: &str = "conv/weight_grad.wgsl";
    // Each case on each device; on the devices of one algorithm (this test's own,
    // profiled) the kernel that ran: the direct one on `Unfold`, `implicit` on
    // `Implicit`.
    let check = |label: &str,
                 inputs: &[Tensor],
                 tol,
                 implicit: &str,
                 f: &dyn Fn(&[Tensor]) -> kiln::Result<Tensor>| {
        for (name, device) in &devices {
            let label = format!("{name} {label}");
            let run = || {
                parity_on(device, &label, inputs, tol, f);
                Ok(())
            };
            let wanted = match name.as_str() {
                "Implicit" => implicit,
                "Unfold" => DIRECT,
                _ => {
                    run().unwrap();
                    continue;
                }
            };
            let ((), profile) = device.profile(run).unwrap();
            let names: Vec<&str> = profile.kernels.iter().map(|k| k.name.as_str()).collect();
            let ran = |part: &str| names.iter().any(|n| n.contains(part));
            let others = [SMALL, TILED, BLOCKED, DIRECT]
                .into_iter()
                .filter(|&k| k != wanted);
            assert!(ran(wanted), "{label}: {names:?}");
            assert!(!others.into_iter().any(ran), "{label}: {names:?}");
        }
    };
    // (input, weight, options, kernel on `Implicit`): 5 x 23 x 21 positions in 9 chunks
    // of 269 terms (the last 263), chunks starting mid-image; products too thin for a
    // quarter of their tiles (7 filters of 45 columns, 3 of 12, depthwise); the blocked
    // build over two row and two column tiles, and in 4 chunks.
    let grouped = |groups| options((2, 1), (1, 2), (2, 1), groups);
    let cases: [(&[usize], &[usize], Conv2dOptions, &str); 11] = [
        (&[3, 5, 11, 9], &[7, 5, 3, 3], plain(1), DIRECT),
        (&[5, 3, 23, 21], &[40, 3, 3, 3], plain(1), TILED),
        (&[2, 8, 13, 12], &[40, 4, 3, 3], grouped(2), SMALL),
        (&[2, 6, 13, 12], &[9, 2, 3, 2], grouped(3), DIRECT),
        (
            &[2, 6, 9, 9],
            &[6, 1, 3, 3],
            options((1, 1), (1, 1), (1, 1), 6),
            DIRECT,
        ),
        (&[2, 8, 9, 10], &[70, 8, 3, 3], plain(0), TILED),
        (&[4, 16, 7, 7], &[24, 16, 1, 1], plain(0), SMALL),
        (&[1, 2, 40, 40], &[16, 2, 5, 5], plain(2), SMALL),
        (
            &[3, 4, 30, 30],
            &[100, 2, 4, 4],
            options((2, 2), (1, 1), (1, 1), 2),
            TILED,
        ),
        (&[2, 16, 9, 10], &[130, 16, 3, 3], plain(0), BLOCKED),
        (&[3, 16, 20, 20], &[128, 16, 3, 3], plain(1), BLOCKED),
    ];
    for (xs, ws, o, implicit) in cases {
        let x = small_ints(xs, &mut rng);
        let w = small_ints(ws, &mut rng);
        let r = small_ints(x.conv2d(&w, None, o).unwrap().dims(), &mut rng);
        let label = format!("conv2d weight gradient {xs:?} {ws:?} {o:?}");
        check(&label, &[x, w, r], EXACT, implicit, &weight_grad(o));
    }
    // Views: the input permuted, the upstream gradient transposed in storage.
    let o = options((1, 2), (1, 0), (1, 1), 1);
    let x = small_ints(&[2, 3, 10, 13], &mut rng)
        .permute(&[0, 1, 3, 2])
        .unwrap();
    let w = small_ints(&[20, 3, 3, 3], &mut rng);
    let dims = x.conv2d(&w, None, o).unwrap().dims().to_vec();
    let r = small_ints(&[dims[0], dims[1], dims[3], dims[2]], &mut rng)
        .transpose(2, 3)
        .unwrap();
    let label = "conv2d weight gradient of views";
    check(label, &[x, w, r], EXACT, SMALL, &weight_grad(o));
    // NaN in the input: the weights whose taps reach it, as on the CPU. NaN in the
    // upstream gradient at a corner, whose taps reach the padding: there too (the
    // direct kernel skipped the padding's taps, and with them 15 of 27 NaNs). On the
    // product and, thin, on the direct kernel.
    let with_nan = |shape: &[usize], at: usize, rng: &mut kiln::Rng| {
        let mut values = small_ints(shape, rng).to_vec::<f32>().unwrap();
        values[at] = f32::NAN;
        Tensor::from_vec(values, shape.to_vec(), &Device::cpu()).unwrap()
    };
    for (filters, implicit) in [(16, SMALL), (4, DIRECT)] {
        let x = small_ints(&[2, 3, 9, 8], &mut rng);
        let w = small_ints(&[filters, 3, 3, 3], &mut rng);
        let r = small_ints(&[2, filters, 9, 8], &mut rng);
        let nan_x = with_nan(&[2, 3, 9, 8], 3 * 72 + 40, &mut rng);
        let nan_r = with_nan(&[2, filters, 9, 8], 0, &mut rng);
        let inputs = [[nan_x, w.clone(), r], [x, w, nan_r]];
        for (inputs, place) in inputs.iter().zip(["input", "upstream gradient"]) {
            let label =
                format!("conv2d weight gradient of {filters} filters with NaN in the {place}");
            check(&label, inputs, EXACT, implicit, &weight_grad(plain(1)));
        }
    }
    // f16 storage, f32 sums rounded once (the product's 3 chunks of 340 terms, or the
    // direct kernel's 60 segments of a row, each rounded to f16 before their sum,
    // missed F16's tolerance).
    if f16_ok() {
        let half =
            |shape: &[usize], rng: &mut kiln::Rng| rand(shape, rng).to_dtype(DType::F16).unwrap();
        for (filters, implicit) in [(16, SMALL), (6, DIRECT)] {
            let x = half(&[4, 3, 17, 19], &mut rng);
            let w = half(&[filters, 3, 3, 3], &mut rng);
            let r = half(&[4, filters, 15, 17], &mut rng);
            let label = format!("f16 conv2d weight gradient of {filters} filters");
            check(&label, &[x, w, r], F16, implicit, &weight_grad(plain(0)));
        }
    }
    // A transposed convolution's weight gradient: the convolution's with the input and
    // the gradient exchanged (24 rows of 80 columns).
    let to = options((2, 2), (1, 1), (1, 1), 1);
    let x = small_ints(&[3, 24, 7, 9], &mut rng);
    let w = small_ints(&[24, 5, 4, 4], &mut rng);
    let r = small_ints(
        x.conv_transpose2d(&w, None, to, (1, 0)).unwrap().dims(),
        &mut rng,
    );
    let transposed = |t: &[Tensor]| -> kiln::Result<Tensor> {
        let w = t[1].detach().into_var()?;
        let y = t[0].conv_transpose2d(&w, None, to, (1, 0))?;
        let loss = y.mul(&t[2])?.sum_all()?;
        Ok(loss.backward()?.get(&w).expect("a gradient for w").clone())
    };
    check(
        "conv_transpose2d weight gradient",
        &[x, w, r],
        EXACT,
        SMALL,
        &transposed,
    );
}

/// The default GPU device, then one for each way of running a convolution through the
/// matmul (`ConvAlgorithm`), all poisoning their outputs.
fn conv_devices() -> Vec<(String, Device)> {
    use kiln::backend::{ConvAlgorithm, GpuDevice};
    let Some(default) = gpu() else {
        return Vec::new();
    };
    let mut devices = vec![("default".to_string(), default)];
    for algorithm in ConvAlgorithm::ALL {
        let gpu = GpuDevice::new().unwrap();
        gpu.set_poison_outputs(true);
        gpu.set_conv_algorithm(algorithm);
        devices.push((format!("{algorithm:?}"), Device::Gpu(gpu)));
    }
    devices
}

#[test]
fn pooling_matches_cpu() {
    let mut rng = rng();
    let x = rand(&[2, 3, 13, 11], &mut rng);
    for (k, s, p, d) in [
        ((2, 2), (2, 2), (0, 0), (1, 1)),
        ((3, 3), (2, 1), (1, 1), (1, 1)),
        ((3, 2), (1, 2), (1, 0), (2, 1)),
    ] {
        parity(
            &format!("max_pool2d {k:?} {s:?} {p:?} {d:?}"),
            std::slice::from_ref(&x),
            F32,
            |t| Ok(t[0].max_pool2d_with_indices(k, s, p, d)?.0),
        );
        parity(
            &format!("max_pool2d indices {k:?}"),
            std::slice::from_ref(&x),
            EXACT,
            |t| Ok(t[0].max_pool2d_with_indices(k, s, p, d)?.1),
        );
        for include in [true, false] {
            if d == (1, 1) {
                parity(
                    &format!("avg_pool2d {k:?} {p:?} include_pad={include}"),
                    std::slice::from_ref(&x),
                    F32,
                    |t| t[0].avg_pool2d(k, s, p, include),
                );
            }
        }
    }
    for out in [(1, 1), (4, 3), (13, 11), (5, 7)] {
        parity(
            &format!("adaptive_avg_pool2d {out:?}"),
            std::slice::from_ref(&x),
            F32,
            |t| t[0].adaptive_avg_pool2d(out),
        );
    }
    parity(
        "global_avg_pool2d",
        &[transposed(&[2, 3, 9, 8], &mut rng)],
        F32,
        |t| t[0].global_avg_pool2d(),
    );
    // Windows over the whole map are each map's mean, a row reduction: here and over
    // maps of 67,600 elements, past a software adapter's loops for one invocation.
    for x in [x.clone(), small_ints(&[2, 3, 260, 260], &mut rng)] {
        let (h, w) = (x.dims()[2], x.dims()[3]);
        parity(
            &format!("adaptive_avg_pool2d (1, 1) of {h}x{w}"),
            std::slice::from_ref(&x),
            F32,
            |t| t[0].adaptive_avg_pool2d((1, 1)),
        );
        parity(
            &format!("avg_pool2d ({h}, {w}) of {h}x{w}"),
            std::slice::from_ref(&x),
            F32,
            |t| t[0].avg_pool2d((h, w), (1, 1), (0, 0), true),
        );
        let r = rand(&[2, 3, 1, 1], &mut rng);
        parity(
            &format!("adaptive_avg_pool2d (1, 1) gradient of {h}x{w}"),
            &[x, r],
            F32,
            |t| {
                let x = t[0].detach().into_var()?;
                let y = x.adaptive_avg_pool2d((1, 1))?.mul(&t[1])?;
                Ok(y.sum_all()?
                    .backward()?
                    .get(&x)
                    .expect("a gradient")
                    .clone())
            },
        );
    }
}

/// Reductions whose loops would run past a software adapter's limit on loop
/// iterations (65,535 an invocation, past which llvmpipe silently skips the rest): a
/// column over 2.2 million rows, rows of 300,000 (past the serial kernel's range), and
/// the column sum of a fused broadcast sum over 524,289 rows, whose strided read
/// looped once per element.
#[test]
fn reductions_over_long_dims_match_cpu() {
    // Small integers: the sums are exact, so any row left out shows (random values of
    // both signs sum near zero, where the rounding of 300,000 terms is all one sees).
    let mut rng = rng();
    let tall = small_ints(&[2_200_001, 3], &mut rng);
    for (op, tol) in [
        (ReduceOp::Sum, EXACT),
        (ReduceOp::Mean, F32),
        (ReduceOp::Max, EXACT),
    ] {
        let label = format!("{op:?} over 2.2M rows");
        parity(&label, std::slice::from_ref(&tall), tol, |t| {
            t[0].reduce(op, &[0], false)
        });
    }
    let wide = small_ints(&[64, 300_000], &mut rng);
    parity("sums of rows of 300,000", &[wide], EXACT, |t| {
        t[0].sum(&[1], false)
    });
    let (x, b) = (
        small_ints(&[524_289, 4], &mut rng),
        small_ints(&[4], &mut rng),
    );
    parity("column sums of a broadcast sum", &[x, b], EXACT, |t| {
        t[0].add(&t[1])?.sum(&[0], false)
    });
    // Few long rows are cut into parts, each its own workgroup's, then the parts
    // reduced: a ragged last part, a mean divided once by the whole length, a NaN
    // carried through both passes, and f16 summed in f32.
    let few = small_ints(&[3, 1_000_003], &mut rng);
    for (op, tol) in [
        (ReduceOp::Sum, EXACT),
        (ReduceOp::Mean, F32),
        (ReduceOp::Max, EXACT),
        (ReduceOp::Min, EXACT),
    ] {
        parity(
            &format!("{op:?} of 3 rows of 1M"),
            std::slice::from_ref(&few),
            tol,
            |t| t[0].reduce(op, &[1], false),
        );
    }
    // Argmax and argmin too: small integers tie often, and the first in the row must
    // win across parts as within one; in `ties` each row's extremes come twice, past
    // its first part.
    let k = 1_000_003;
    let mut ties = vec![0.0f32; 3 * k];
    for r in 0..3 {
        for (at, v) in [
            (600_000 + r, 7.0),
            (800_000, 7.0),
            (650_000, -7.0),
            (999_999, -7.0),
        ] {
            ties[r * k + at] = v;
        }
    }
    let ties = Tensor::from_vec(ties, [3, k], &Device::cpu()).unwrap();
    for op in [ReduceOp::ArgMax, ReduceOp::ArgMin] {
        for x in [&few, &ties] {
            parity(
                &format!("{op:?} of 3 rows of 1M"),
                std::slice::from_ref(x),
                EXACT,
                |t| t[0].reduce(op, &[1], false),
            );
        }
    }
    let mut with_nan: Vec<f32> = few
        .to_f64_vec()
        .unwrap()
        .iter()
        .map(|&v| v as f32)
        .collect();
    with_nan[1_000_003 + 777_777] = f32::NAN;
    with_nan[1_000_003 + 900_000] = f32::NAN;
    let with_nan = Tensor::from_vec(with_nan, [3, 1_000_003], &Device::cpu()).unwrap();
    parity(
        "max of long rows with a NaN",
        std::slice::from_ref(&with_nan),
        EXACT,
        |t| t[0].max(&[1], false),
    );
    // The first NaN is the best, in whichever part it falls.
    parity("argmax of long rows with NaNs", &[with_nan], EXACT, |t| {
        t[0].argmax(1, false)
    });
    if f16_ok() {
        let half = few.to_dtype(DType::F16).unwrap();
        parity("f16 sums of long rows", &[half], F16, |t| {
            t[0].sum(&[1], false)
        });
    }
    let Some(device) = gpu() else { return };
    // A sum of 70M ones, read through a fused fill: in one workgroup each invocation
    // looped 68,360 times, past the software adapter's limit. Without fusion the ones
    // are a buffer, which the adapter's binding limit may hold to fewer.
    let gpu = device.as_gpu().unwrap();
    let bindable = gpu.summary().max_storage_buffer_binding_size as usize / 4;
    let n = match gpu.fusion() {
        true => 70_000_000,
        false => bindable.min(70_000_000),
    };
    let ones = Tensor::ones([n], DType::F32, &device).unwrap();
    let total = ones.sum_all().unwrap().to_f64_vec().unwrap();
    assert_eq!(total, [n as f64], "a sum of {n} ones");
}

/// Kernels whose invocations would loop past a software adapter's limit are refused
/// there with a clear error, where they returned results cut short; a hardware GPU
/// runs them, against the CPU: a softmax over a row of 12M, max pooling over windows
/// of 190x190, adaptive pooling over windows of 201x201, a grouped convolution of
/// 130x130 taps.
#[test]
fn loops_past_a_software_adapters_limit_are_refused_there() {
    let Some(device) = gpu() else { return };
    let software = device.as_gpu().unwrap().summary().is_software();
    let mut rng = rng();
    type Case = (
        &'static str,
        Vec<Tensor>,
        Box<dyn Fn(&[Tensor]) -> kiln::Result<Tensor>>,
    );
    let grouped = Conv2dOptions {
        groups: 2,
        ..Default::default()
    };
    let cases: Vec<Case> = vec![
        (
            "softmax",
            vec![rand(&[1, 12_000_000], &mut rng)],
            Box::new(|t| t[0].softmax(-1)),
        ),
        (
            "max_pool2d",
            vec![rand(&[1, 2, 200, 200], &mut rng)],
            Box::new(|t| t[0].max_pool2d((190, 190), (5, 5), (0, 0))),
        ),
        (
            "avg_pool2d",
            vec![rand(&[1, 2, 400, 400], &mut rng)],
            Box::new(|t| t[0].adaptive_avg_pool2d((2, 2))),
        ),
        (
            "conv2d",
            vec![
                rand(&[1, 4, 135, 135], &mut rng),
                rand(&[4, 2, 130, 130], &mut rng),
            ],
            Box::new(move |t| t[0].conv2d(&t[1], None, grouped)),
        ),
    ];
    for (op, inputs, f) in cases {
        if !software {
            parity_on(&device, op, &inputs, F32_LONG_SUMS, &f);
            continue;
        }
        let moved: Vec<Tensor> = inputs
            .iter()
            .map(|x| x.to_device(&device).unwrap())
            .collect();
        match f(&moved).and_then(|y| y.to_f64_vec()) {
            Err(Error::Unsupported { op: got, reason }) => {
                assert_eq!(got, op);
                assert!(reason.contains("software adapter"), "{reason}");
            }
            // Not the values: millions of them.
            Ok(v) => panic!(
                "{op} ran past the loops of a software adapter ({} values)",
                v.len()
            ),
            Err(e) => panic!("{op} past the loops of a software adapter: {e}"),
        }
    }
}

#[test]
fn cat_stack_pad_triangles_match_cpu() {
    let mut rng = rng();
    let (a, b, c) = (
        rand(&[3, 4], &mut rng),
        transposed(&[3, 7], &mut rng),
        sliced(&[3, 1], &mut rng),
    );
    parity("cat dim 1", &[a.clone(), b, c], F32, |t| Tensor::cat(t, 1));
    let (x, y) = (rand(&[2, 5], &mut rng), rand(&[4, 5], &mut rng));
    parity("cat dim 0", &[x, y], F32, |t| Tensor::cat(t, 0));
    let (p, q) = (rand(&[3, 4], &mut rng), a);
    parity("stack", &[p, q], F32, |t| Tensor::stack(t, 1));
    // More pieces than one launch takes (up to 25, as the device allows), empty ones
    // among them, compact, transposed and sliced, along the first, a middle and the
    // last dim; i32 and f16 too.
    let lengths: Vec<usize> = (0..61).map(|i| (i * i + 3 * i) % 7).collect();
    let pieces: Vec<Tensor> = lengths
        .iter()
        .enumerate()
        .map(|(i, &n)| match i % 3 {
            0 => rand(&[3, n, 5], &mut rng),
            1 => transposed(&[3, 5, n], &mut rng).transpose(1, 2).unwrap(),
            _ => sliced(&[3, n, 5], &mut rng),
        })
        .collect();
    parity("cat of 61 pieces, dim 1", &pieces, EXACT, |t| {
        Tensor::cat(t, 1)
    });
    let moved: Vec<Tensor> = pieces.iter().map(|t| t.transpose(0, 1).unwrap()).collect();
    parity("cat of 61 pieces, dim 0", &moved, EXACT, |t| {
        Tensor::cat(t, 0)
    });
    let rows: Vec<Tensor> = (0..27).map(|_| transposed(&[4, 3], &mut rng)).collect();
    parity("stack of 27, last dim", &rows, EXACT, |t| {
        Tensor::stack(t, 2)
    });
    let ints: Vec<Tensor> = (1..31usize)
        .map(|n| {
            let values: Vec<i32> = (0..n as i32).map(|v| v * 7 - 20).collect();
            Tensor::from_vec(values, [n], &Device::cpu()).unwrap()
        })
        .collect();
    parity("cat of 30 i32 pieces", &ints, EXACT, |t| Tensor::cat(t, 0));
    let empty = [rand(&[0, 3], &mut rng), rand(&[0, 2], &mut rng)];
    parity("cat of empty rows", &empty, EXACT, |t| Tensor::cat(t, 1));
    if f16_ok() {
        let halves: Vec<Tensor> = (0..27)
            .map(|i| {
                rand(&[2, 1 + i % 3, 3], &mut rng)
                    .to_dtype(DType::F16)
                    .unwrap()
            })
            .collect();
        parity("cat of 27 f16 pieces", &halves, EXACT, |t| {
            Tensor::cat(t, 1)
        });
    }
    let x = transposed(&[2, 3, 5], &mut rng);
    parity("pad", std::slice::from_ref(&x), F32, |t| {
        t[0].pad(&[(1, 2), (0, 3)], -0.5)
    });
    let m = rand(&[2, 5, 7], &mut rng);
    for diag in [-2i64, 0, 3] {
        parity(
            &format!("tril {diag}"),
            std::slice::from_ref(&m),
            F32,
            |t| t[0].tril(diag),
        );
        parity(
            &format!("triu {diag}"),
            std::slice::from_ref(&m),
            F32,
            |t| t[0].triu(diag),
        );
    }
    // Both backends build the mask alike: against PyTorch's documented triangles.
    let mut devices = vec![Device::cpu()];
    devices.extend(gpu());
    for device in &devices {
        let ones = Tensor::ones([3, 4], DType::F32, device).unwrap();
        let cases: [(&str, kiln::Result<Tensor>, [f32; 12]); 4] = [
            (
                "tril(0)",
                ones.tril(0),
                [1., 0., 0., 0., 1., 1., 0., 0., 1., 1., 1., 0.],
            ),
            (
                "tril(-1)",
                ones.tril(-1),
                [0., 0., 0., 0., 1., 0., 0., 0., 1., 1., 0., 0.],
            ),
            (
                "triu(1)",
                ones.triu(1),
                [0., 1., 1., 1., 0., 0., 1., 1., 0., 0., 0., 1.],
            ),
            (
                "triu(2)",
                ones.triu(2),
                [0., 0., 1., 1., 0., 0., 0., 1., 0., 0., 0., 0.],
            ),
        ];
        for (name, got, want) in cases {
            assert_eq!(
                got.unwrap().to_vec::<f32>().unwrap(),
                want,
                "{name} on {device}"
            );
        }
    }
}

#[test]
fn indexing_matches_cpu() {
    let mut rng = rng();
    let cpu = Device::cpu();
    let x = rand(&[7, 5, 3], &mut rng);
    let idx = Tensor::from_vec(vec![6i32, 0, 3, 3, 1], [5], &cpu).unwrap();
    parity(
        "index_select dim 0",
        &[x.clone(), idx.clone()],
        EXACT,
        |t| t[0].index_select(0, &t[1]),
    );
    parity(
        "index_select dim 1 transposed",
        &[x.transpose(0, 1).unwrap(), idx.narrow(0, 1, 4).unwrap()],
        EXACT,
        |t| t[0].index_select(1, &t[1]),
    );
    let g = Tensor::from_vec(
        (0..7 * 4 * 3).map(|i: i32| i * 7 % 5).collect::<Vec<_>>(),
        [7, 4, 3],
        &cpu,
    )
    .unwrap();
    parity("gather dim 1", &[x.clone(), g.clone()], EXACT, |t| {
        t[0].gather(1, &t[1])
    });
    let src = rand(&[7, 4, 3], &mut rng);
    parity("scatter_add dim 1", &[x.clone(), g, src], F32, |t| {
        t[0].scatter_add(1, &t[1], &t[2])
    });
    // More sources than one launch's loops take on a software adapter (an embedding's
    // gradient over 70,001 tokens): several launches, each adding its run in order.
    let many = 70_001;
    let g = Tensor::from_vec(
        (0..many as i32 * 3).map(|i| i * 7 % 5).collect::<Vec<_>>(),
        [many, 3],
        &cpu,
    )
    .unwrap();
    let (x, src) = (
        small_ints(&[5, 3], &mut rng),
        small_ints(&[many, 3], &mut rng),
    );
    parity("scatter_add of 70,001 sources", &[x, g, src], EXACT, |t| {
        t[0].scatter_add(0, &t[1], &t[2])
    });
    let weight = rand(&[11, 6], &mut rng);
    let ids = Tensor::from_vec(vec![0i32, 10, 4, 4, 7, 1], [2, 3], &cpu).unwrap();
    parity("embedding", &[weight, ids.clone()], EXACT, |t| {
        t[0].embedding(&t[1])
    });
    parity("one_hot", &[ids], EXACT, |t| t[0].one_hot(11));
}

#[test]
fn cross_entropy_matches_cpu() {
    let mut rng = rng();
    let cpu = Device::cpu();
    for (rows, classes) in [(1usize, 1usize), (7, 10), (33, 300), (3, 1000)] {
        let logits = rand(&[rows, classes], &mut rng).mul_scalar(10.0).unwrap();
        let targets = Tensor::from_vec(
            (0..rows)
                .map(|r| ((r * 7919) % classes) as i32)
                .collect::<Vec<_>>(),
            [rows],
            &cpu,
        )
        .unwrap();
        let inputs = [logits, targets];
        parity(
            &format!("cross_entropy {rows}x{classes}"),
            &inputs,
            F32,
            |t| t[0].cross_entropy_per_row(&t[1], 0.0),
        );
        parity(
            &format!("cross_entropy smoothed {rows}x{classes}"),
            &inputs,
            F32,
            |t| t[0].cross_entropy_per_row(&t[1], 0.1),
        );
    }
}

#[test]
fn layer_norm_matches_cpu() {
    let mut rng = rng();
    let (x, w, b) = (
        rand(&[4, 7, 33], &mut rng),
        rand(&[33], &mut rng),
        rand(&[33], &mut rng),
    );
    parity("layer_norm affine", &[x.clone(), w, b], F32, |t| {
        t[0].layer_norm(&[33], Some(&t[1]), Some(&t[2]), 1e-5)
    });
    // Many vec4-aligned rows: the one-invocation-per-row variant on software adapters.
    let (x4, w4, b4) = (
        rand(&[3, 40, 64], &mut rng),
        rand(&[64], &mut rng),
        rand(&[64], &mut rng),
    );
    parity(
        "layer_norm rows",
        &[x4.clone(), w4.clone(), b4.clone()],
        F32,
        |t| t[0].layer_norm(&[64], Some(&t[1]), Some(&t[2]), 1e-5),
    );
    let r4 = rand(&[3, 40, 64], &mut rng);
    parity("layer_norm rows gradients", &[x4, w4, b4, r4], F32, |t| {
        layer_norm_gradients(t, 64)
    });
    // Without a weight: no products, and h is the gradient itself.
    let r = rand(&[4, 7, 33], &mut rng);
    parity("layer_norm plain gradient", &[x.clone(), r], F32, |t| {
        let x = t[0].detach().into_var()?;
        let y = x.layer_norm(&[33], None, None, 1e-5)?.mul(&t[1])?;
        Ok(y.sum_all()?
            .backward()?
            .get(&x)
            .expect("a gradient")
            .clone())
    });
    parity("layer_norm two dims", std::slice::from_ref(&x), F32, |t| {
        t[0].layer_norm(&[7, 33], None, None, 1e-5)
    });
    parity(
        "layer_norm transposed",
        &[x.transpose(1, 2).unwrap()],
        F32,
        |t| t[0].layer_norm(&[7], None, None, 1e-5),
    );
    // Longer than four loads per invocation, with a ragged tail; short rows that share
    // a workgroup, its last one part-filled.
    for (rows, k) in [(5, 2600), (70, 130)] {
        let (x, w, b) = (
            rand(&[rows, k], &mut rng),
            rand(&[k], &mut rng),
            rand(&[k], &mut rng),
        );
        parity(&format!("layer_norm {rows}x{k}"), &[x, w, b], F32, |t| {
            t[0].layer_norm(&[k], Some(&t[1]), Some(&t[2]), 1e-5)
        });
    }
    // Rows far from zero for their spread (a large rstd, up to 300 here), forward and
    // backward at the plain f32 tolerance: each row's statistics are taken from its first
    // element, so one rounding of the mean does not move all its deviations. Taken from
    // the mean itself, the first case's gradients were off by 2e-4 and the others' by
    // more. Rows of 3 and 999 run the workgroup kernels; rows of 1000 the serial ones on
    // software adapters.
    for (k, offset, spread) in [
        (3, -0.8, 0.01),
        (999, 100.0, 1.0),
        (1000, 100.0, 1.0),
        (1000, 3.0, 1e-3),
    ] {
        let x = rand(&[40, k], &mut rng)
            .mul_scalar(spread)
            .unwrap()
            .add_scalar(offset)
            .unwrap();
        let (w, b, r) = (
            rand(&[k], &mut rng),
            rand(&[k], &mut rng),
            rand(&[40, k], &mut rng),
        );
        let label = format!("layer_norm of rows at {offset} spread {spread}, 40x{k}");
        parity(&label, &[x.clone(), w.clone(), b.clone()], F32, |t| {
            t[0].layer_norm(&[k], Some(&t[1]), Some(&t[2]), 1e-5)
        });
        parity(&format!("{label}, gradients"), &[x, w, b, r], F32, |t| {
            layer_norm_gradients(t, k)
        });
    }
}

/// The gradients of `sum(layer_norm(x, w, b) * r)` over rows of `k`, for `t = [x, w,
/// b, r]`: the input's, the weight's and the bias's, flattened one after the other.
fn layer_norm_gradients(t: &[Tensor], k: usize) -> kiln::Result<Tensor> {
    let vars: Vec<Tensor> = t[..3]
        .iter()
        .map(|v| v.detach().into_var())
        .collect::<kiln::Result<_>>()?;
    let y = vars[0].layer_norm(&[k], Some(&vars[1]), Some(&vars[2]), 1e-5)?;
    let grads = y.mul(&t[3])?.sum_all()?.backward()?;
    let flat = vars
        .iter()
        .map(|v| grads.get(v).expect("a gradient").view(&[-1]))
        .collect::<kiln::Result<Vec<_>>>()?;
    Tensor::cat(&flat, 0)
}

/// Everything `batch_norm` in training mode gives for `t = [x, w, b, r, m, v]` (`r`
/// shaped as `x`), flat end to end: the output, the batch's means and variances, the
/// running statistics from `m` and `v` after it (on a GPU written over in its
/// statistics' kernel), and the gradients of `sum(output * r)` for `x`, `w` and `b`.
fn batch_norm_results(t: &[Tensor]) -> kiln::Result<Tensor> {
    let vars: Vec<Tensor> = t[..3]
        .iter()
        .map(|v| v.detach().into_var())
        .collect::<kiln::Result<_>>()?;
    // Copies of their own, which nothing else holds.
    let (mean, var) = (t[4].mul_scalar(1.0)?, t[5].mul_scalar(1.0)?);
    let running = RunningStats {
        mean: &mean,
        var: &var,
        momentum: 0.3,
    };
    let out = vars[0].batch_norm_running(Some(&vars[1]), Some(&vars[2]), 1e-5, running)?;
    let grads = out.output.mul(&t[3])?.sum_all()?.backward()?;
    let mut flat = vec![out.output.view(&[-1])?, out.mean, out.var, mean, var];
    for v in &vars {
        flat.push(grads.get(v).expect("a gradient").view(&[-1])?);
    }
    Tensor::cat(&flat, 0)
}

/// Batch norm's channel kernels (statistics forward, the two sums backward) against the
/// CPU's f64 reference: `[n, c]` (one element of a channel per sample, read `c`
/// apart), `[n, c, l]` and `[n, c, h, w]`, channels longer than four loads per lane with
/// a ragged tail, more channels than a workgroup holds, a transposed input, channels
/// long enough to be cut into parts, channels far from zero for their spread, and a NaN
/// and an infinity in one channel each.
#[test]
fn batch_norm_matches_cpu() {
    let mut rng = rng();
    let inputs = |x: Tensor, rng: &mut kiln::Rng| {
        let c = x.dims()[1];
        let r = rand(x.dims(), rng);
        let (w, b) = (rand(&[c], rng), rand(&[c], rng));
        vec![x, w, b, r, rand(&[c], rng), rand(&[c], rng)]
    };
    for shape in [
        &[5, 3][..],
        &[2, 7, 33],
        &[3, 5, 9, 11],
        &[4, 2, 1500],
        &[2, 300, 3],
        &[64, 1],
    ] {
        let x = rand(shape, &mut rng);
        let label = format!("batch_norm {shape:?}");
        parity(&label, &inputs(x, &mut rng), F32, batch_norm_results);
    }
    let x = rand(&[3, 11, 6], &mut rng).transpose(1, 2).unwrap();
    let t = inputs(x, &mut rng);
    parity("batch_norm transposed", &t, F32, batch_norm_results);
    // Channels of 140,000 elements, cut into parts that a second launch puts together,
    // one of them far from zero for its spread, their means at f32s.
    let x = rand(&[2, 3, 70_000], &mut rng);
    let far = rand(&[2, 1, 70_000], &mut rng)
        .mul_scalar(0.01)
        .unwrap()
        .add_scalar(100.0)
        .unwrap();
    let x = channel_means_on_f32(&Tensor::cat(&[x, far], 1).unwrap());
    let t = inputs(x, &mut rng);
    parity(
        "batch_norm of channels in parts",
        &t,
        F32,
        batch_norm_results,
    );
    // Channels far from zero for their spread (rstd up to 1000), at the plain tolerance,
    // each with its mean at an f32 (`channel_means_on_f32`).
    for (offset, spread) in [(100.0, 1.0), (-3.0, 1e-3)] {
        let x = rand(&[8, 4, 50], &mut rng)
            .mul_scalar(spread)
            .unwrap()
            .add_scalar(offset)
            .unwrap();
        let x = channel_means_on_f32(&x);
        let label = format!("batch_norm of channels at {offset} spread {spread}");
        parity(&label, &inputs(x, &mut rng), F32, batch_norm_results);
    }
    // NaN and infinity spread through their own channels only, as in PyTorch (an
    // infinite mean, NaN variance).
    let mut v: Vec<f32> = rand(&[4, 3, 5], &mut rng).to_vec::<f32>().unwrap();
    v[5 + 2] = f32::NAN;
    v[2 * 5 + 1] = f32::INFINITY;
    let x = Tensor::from_vec(v, [4, 3, 5], &Device::cpu()).unwrap();
    let stats = |t: &[Tensor]| {
        let out = t[0].batch_norm(None, None, 1e-5)?;
        Tensor::cat(&[out.output.view(&[-1])?, out.mean, out.var], 0)
    };
    parity(
        "batch_norm with a NaN and an infinity",
        std::slice::from_ref(&x),
        F32,
        stats,
    );
    let out = x.batch_norm(None, None, 1e-5).unwrap();
    let [mean, var] = [&out.mean, &out.var].map(|t| t.to_vec::<f32>().unwrap());
    assert!(mean[0].is_finite() && mean[1].is_nan() && mean[2] == f32::INFINITY);
    assert!(var[0].is_finite() && var[1].is_nan() && var[2].is_nan());
    if f16_ok() {
        let half = |t: &Tensor| t.to_dtype(DType::F16).unwrap();
        let t: Vec<Tensor> = inputs(rand(&[3, 5, 9, 11], &mut rng), &mut rng)
            .iter()
            .map(half)
            .collect();
        parity("f16 batch_norm", &t, F16, batch_norm_results);
    }
}

/// `x` (compact `[outer, c, inner]` f32 on the CPU) with each channel's last value moved
/// so that the channel's mean is an f32, to within that value's rounding. A mean near
/// the midpoint of two f32s may round either way on either backend (1 channel in 280 at
/// 100, spread 1, on lavapipe), and an ulp of 100 in the mean moves every output of the
/// channel by up to 1.3e-5 there, past the plain tolerance.
fn channel_means_on_f32(x: &Tensor) -> Tensor {
    let &[outer, c, inner] = x.dims() else {
        panic!("expected [outer, c, inner], got {:?}", x.dims())
    };
    let mut v = x.to_vec::<f32>().unwrap();
    let n = (outer * inner) as f64;
    for ch in 0..c {
        let at = |o: usize, j: usize| (o * c + ch) * inner + j;
        let places = (0..outer).flat_map(|o| (0..inner).map(move |j| at(o, j)));
        let mean = places.map(|i| f64::from(v[i])).sum::<f64>() / n;
        let last = at(outer - 1, inner - 1);
        v[last] = (f64::from(v[last]) + n * (f64::from(mean as f32) - mean)) as f32;
    }
    Tensor::from_vec(v, x.dims(), &Device::cpu()).unwrap()
}

/// Many parameters stepped together (`optimizer_update_all`, on a GPU several to a
/// launch) against each stepped alone on the CPU, every output of every parameter:
/// odd sizes, an empty parameter, a slice and a transposed gradient, more parameters
/// than one launch takes, each optimizer, f32 and f16. The GPU launches fewer kernels
/// than there are parameters.
#[test]
fn optimizer_updates_of_many_parameters_match_cpu() {
    use kiln::OptimizerStep;
    if gpu().is_none() {
        return;
    }
    let mut rng = rng();
    let [adam, sgd, rmsprop, plain_sgd, average] = every_optimizer_step();
    let shapes = MANY_PARAMETERS;
    let inputs = many_parameters(true, &mut rng);
    let step_all = |t: &[Tensor], step: &OptimizerStep| -> kiln::Result<Tensor> {
        let outs = Tensor::optimizer_update_all(&updates_of(t, step), step)?;
        let outs = outs
            .iter()
            .flat_map(|(p, states)| std::iter::once(p).chain(states));
        flat_cat(outs)
    };
    for (dtype, inputs, tol) in f32_and_f16(&inputs) {
        for step in [adam, sgd, rmsprop, plain_sgd, average] {
            let label = format!(
                "{} ({} states) of {} parameters, {dtype}",
                step.name(),
                step.states(),
                shapes.len()
            );
            parity(&label, &inputs, tol, |t| step_all(t, &step));
        }
    }
    let device = own_gpu();
    let moved: Vec<Tensor> = inputs
        .iter()
        .map(|t| t.to_device(&device).unwrap())
        .collect();
    let (_, profile) = device
        .profile(|| step_all(&moved, &adam)?.to_f64_vec())
        .unwrap();
    assert_optimizer_launches_share(&profile, shapes.len() - 1);
}

/// Parameters and states stepped in place (`optimizer_update_in_place`) against the
/// same step on the CPU, each optimizer, f32 and f16, the shapes of
/// `optimizer_updates_of_many_parameters_match_cpu` (more parameters than one launch
/// takes on a software adapter), a transposed gradient. Parameter 1's data and
/// parameter 2's last state are shared with detached tensors: those are stepped into
/// new storage (parameter 2 only where the step keeps states) and the holders keep the
/// old values; every other update is written over, on both devices, several to a
/// launch on the GPU, which takes no buffer for them. An expression still to run that
/// reads a parameter runs first, with its old values, and the parameter is written over.
#[test]
fn optimizer_updates_in_place_match_cpu() {
    use kiln::OptimizerStep;
    if gpu().is_none() {
        return;
    }
    let mut rng = rng();
    let shapes = MANY_PARAMETERS;
    let inputs = many_parameters(false, &mut rng);
    let shared = [1, 2];
    // Copies of the parameters and states, which the step writes over, then what it
    // wrote and what the detached tensors hold.
    let step_in_place = |t: &[Tensor], step: &OptimizerStep| -> kiln::Result<Tensor> {
        let own = |x: &Tensor| x.mul_scalar(1.0);
        let mut copies = Vec::new();
        for c in t.chunks(4) {
            copies.extend([own(&c[0])?, c[1].clone(), own(&c[2])?, own(&c[3])?]);
        }
        let held = [copies[4].detach(), copies[11].detach()];
        let before = flat_cat(held.iter())?.to_f64_vec()?;
        let updates = updates_of(&copies, step);
        let in_place = Tensor::optimizer_update_in_place(&updates, step)?;
        // Without states, parameter 2 has nothing shared.
        let shared = match step.states() {
            0 => &shared[..1],
            _ => &shared[..],
        };
        let want: Vec<bool> = (0..shapes.len()).map(|i| !shared.contains(&i)).collect();
        assert_eq!(in_place, want, "{}: which were written over", step.name());
        assert_eq!(
            flat_cat(held.iter())?.to_f64_vec()?,
            before,
            "held values changed"
        );
        let stepped = updates
            .iter()
            .flat_map(|u| std::iter::once(u.param).chain(u.states.iter().copied()));
        flat_cat(stepped.chain(&held))
    };
    for (dtype, inputs, tol) in f32_and_f16(&inputs) {
        for step in every_optimizer_step() {
            let label = format!(
                "{} ({} states) in place, {dtype}",
                step.name(),
                step.states()
            );
            parity(&label, &inputs, tol, |t| step_in_place(t, &step));
        }
    }
    // Written over on the GPU: no buffer taken, several parameters to a launch.
    let device = own_gpu();
    let gpu = device.as_gpu().expect("a gpu device");
    let uploaded: Vec<Tensor> = inputs
        .iter()
        .map(|t| {
            let values = t.to_vec::<f32>().unwrap();
            Tensor::from_vec(values, t.dims(), &device).unwrap()
        })
        .collect();
    let [adam, ..] = every_optimizer_step();
    let updates = updates_of(&uploaded, &adam);
    device.synchronize().unwrap();
    let live = gpu.pool_stats().live_bytes;
    let (in_place, profile) = device
        .profile(|| Tensor::optimizer_update_in_place(&updates, &adam))
        .unwrap();
    assert!(in_place.iter().all(|&w| w), "{in_place:?}");
    assert_eq!(
        gpu.pool_stats().live_bytes,
        live,
        "bytes held after the step"
    );
    assert_optimizer_launches_share(&profile, shapes.len() - 1);
    // Work not yet run (with fusion on, an elementwise op waits for its reader) that
    // reads a parameter sees the values from before the step.
    let p = &uploaded[0];
    let old = p.to_vec::<f32>().unwrap();
    let doubled = p.mul_scalar(2.0).unwrap();
    let first = updates_of(&uploaded[..4], &adam);
    let in_place = Tensor::optimizer_update_in_place(&first, &adam).unwrap();
    assert_eq!(in_place, [true], "a parameter a pending expression reads");
    let want: Vec<f32> = old.iter().map(|v| 2.0 * v).collect();
    assert_eq!(
        doubled.to_vec::<f32>().unwrap(),
        want,
        "a pending read of the parameter"
    );
    assert_ne!(
        p.to_vec::<f32>().unwrap(),
        old,
        "the parameter was not stepped"
    );
}

/// Gradients scaled by a pending product step every optimizer in place as on the CPU,
/// with the updates' own scales too: the first three parameters' by a constant
/// (`mul_scalar`), the next three's by one value on the device, the last three's by
/// another, on the left of the product (as `clip_grad_norm` leaves them: its coefficient
/// is computed on the device). On a GPU with fusion on (where the scaling waits as an
/// expression) the optimizer's launches read the gradients unscaled, so no other kernel
/// runs, and gradients scaled by different values on the device launch apart.
#[test]
fn optimizer_steps_of_scaled_gradients_match_cpu() {
    use kiln::OptimizerStep;
    if gpu().is_none() {
        return;
    }
    let mut rng = rng();
    let inputs = many_parameters(false, &mut rng);
    // The gradients of the parameters in `t` (value, gradient, two states each) scaled.
    let scaled = |t: &[Tensor]| -> kiln::Result<Vec<Tensor>> {
        let (device, dtype) = (t[0].device(), t[0].dtype());
        let value = |v: f32| Tensor::from_vec(vec![v], [], &device)?.to_dtype(dtype);
        let (first, second) = (value(0.3)?, value(0.7)?);
        let mut out = t.to_vec();
        for (j, c) in out.chunks_mut(4).enumerate() {
            c[1] = match j / 3 {
                0 => c[1].mul_scalar(0.3)?,
                1 => c[1].mul(&first)?,
                _ => second.mul(&c[1])?,
            };
        }
        Ok(out)
    };
    // Copies of the parameters and states, stepped with scaled gradients.
    let step_scaled = |t: &[Tensor], step: &OptimizerStep| -> kiln::Result<Tensor> {
        let mut copies = Vec::new();
        for c in t.chunks(4) {
            let own = |x: &Tensor| x.mul_scalar(1.0);
            copies.extend([own(&c[0])?, c[1].clone(), own(&c[2])?, own(&c[3])?]);
        }
        let copies = scaled(&copies)?;
        let updates = updates_of(&copies, step);
        Tensor::optimizer_update_in_place(&updates, step)?;
        let stepped = updates
            .iter()
            .flat_map(|u| std::iter::once(u.param).chain(u.states.iter().copied()));
        flat_cat(stepped)
    };
    for (dtype, inputs, tol) in f32_and_f16(&inputs) {
        for step in every_optimizer_step() {
            let label = format!("{} of scaled gradients, {dtype}", step.name());
            parity(&label, &inputs, tol, |t| step_scaled(t, &step));
        }
    }
    let device = own_gpu();
    device.as_gpu().unwrap().set_fusion(true);
    let copies: Vec<Tensor> = inputs
        .iter()
        .map(|t| Tensor::from_vec(t.to_vec::<f32>().unwrap(), t.dims(), &device).unwrap())
        .collect();
    let [adam, ..] = every_optimizer_step();
    // Scaled inside the profile, which runs what was pending before it; the values on
    // the device are uploaded, not computed.
    let (in_place, profile) = device
        .profile(|| {
            let scaled = scaled(&copies)?;
            Tensor::optimizer_update_in_place(&updates_of(&scaled, &adam), &adam)
        })
        .unwrap();
    assert!(in_place.iter().all(|&w| w), "{in_place:?}");
    let others: Vec<_> = profile
        .kernels
        .iter()
        .filter(|k| !k.name.contains("optim/"))
        .collect();
    assert!(others.is_empty(), "{others:?}");
    assert_optimizer_launches_share(&profile, MANY_PARAMETERS.len() - 1);
    // Three scalings, each a launch of its own where the adapter binds three
    // parameters, their states and one value on the device (Adam in place: 13 buffers).
    let launches: u64 = profile.kernels.iter().map(|k| k.launches).sum();
    let bound = device
        .as_gpu()
        .unwrap()
        .summary()
        .max_storage_buffers_per_shader_stage;
    match bound >= 13 {
        true => assert_eq!(launches, 3, "{:?}", profile.kernels),
        false => assert!(launches > 3, "{:?}", profile.kernels),
    }
}

/// A GPU device of its own, outputs poisoned, for what a test profiles or counts the
/// bytes of: other tests' work on the default device would show in them.
fn own_gpu() -> Device {
    let gpu = kiln::backend::GpuDevice::new().unwrap();
    gpu.set_poison_outputs(true);
    Device::Gpu(gpu)
}

/// Parameter shapes stepped together: odd sizes, an empty parameter, more than one
/// launch takes on an adapter that binds few buffers.
const MANY_PARAMETERS: &[&[usize]] = &[
    &[5, 3],
    &[1],
    &[0, 4],
    &[37, 19],
    &[300],
    &[7],
    &[2, 2],
    &[129],
    &[64],
];

/// Adam, SGD with momentum, RMSprop and SGD without momentum (which keeps no state),
/// each with weight decay, and a moving average (no state either).
fn every_optimizer_step() -> [kiln::OptimizerStep; 5] {
    use kiln::{AdamSpec, MovingAverageSpec, OptimizerStep, RmsPropSpec, SgdSpec};
    let adam = OptimizerStep::Adam(AdamSpec {
        one_minus_beta1: 0.1,
        one_minus_beta2: 0.001,
        eps: 1e-8,
        step_size: 1e-3 / (1.0 - 0.9f32.powi(2)),
        inv_correction2: 1.0 / (1.0 - 0.999f32.powi(2)),
        coupled_decay: 0.01,
        decay_factor: 1.0,
    });
    let sgd = OptimizerStep::SgdMomentum(SgdSpec {
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 0.01,
        nesterov: true,
    });
    let rmsprop = OptimizerStep::RmsProp(RmsPropSpec {
        lr: 0.01,
        one_minus_alpha: 0.01,
        eps: 1e-8,
        weight_decay: 0.01,
    });
    let plain_sgd = OptimizerStep::SgdMomentum(SgdSpec {
        lr: 0.05,
        momentum: 0.0,
        weight_decay: 0.01,
        nesterov: false,
    });
    let average = OptimizerStep::MovingAverage(MovingAverageSpec {
        decay: 0.9,
        one_minus_decay: 0.1,
    });
    [adam, sgd, rmsprop, plain_sgd, average]
}

/// `[param, grad, m, v]` of each of `MANY_PARAMETERS`, one after another: parameter 3
/// a slice of a larger tensor where `sliced`, its gradient transposed; `v` never
/// negative, as second moments and squared averages are, and at least 1e-4: a `v`
/// that underflows f16 (below about 6e-8) leaves Adam's and RMSprop's step
/// `m / sqrt(v)` hanging on the gradient's last bits, which the CPU rounds to f16
/// after scaling and a fused GPU does not, so two right answers differ by percents.
fn many_parameters(sliced_param: bool, rng: &mut kiln::Rng) -> Vec<Tensor> {
    let mut inputs = Vec::new();
    for (i, &shape) in MANY_PARAMETERS.iter().enumerate() {
        let p = match i {
            3 if sliced_param => sliced(shape, rng),
            _ => rand(shape, rng),
        };
        let g = match i {
            3 => transposed(shape, rng),
            _ => rand(shape, rng),
        };
        let m = rand(shape, rng).mul_scalar(0.1).unwrap();
        let v = rand(shape, rng).square().unwrap().mul_scalar(0.01).unwrap();
        let v = v.add_scalar(1e-4).unwrap();
        inputs.extend([p, g, m, v]);
    }
    inputs
}

/// The updates of `many_parameters`' tensors (or copies of them) for `step`, whose
/// states are both of `m, v`, the last, or none; every third gradient taken as it is,
/// the others scaled (`grad_scale`) apart.
fn updates_of<'a>(
    t: &'a [Tensor],
    step: &kiln::OptimizerStep,
) -> Vec<kiln::ParamUpdate<'a, Tensor>> {
    t.chunks(4)
        .enumerate()
        .map(|(i, c)| kiln::ParamUpdate {
            param: &c[0],
            grad: &c[1],
            states: c[4 - step.states()..].iter().collect(),
            grad_scale: [1.0, 0.5, 1.25][i % 3],
        })
        .collect()
}

/// `inputs` in f32, and in f16 where the adapter has it, each with its tolerance.
fn f32_and_f16(inputs: &[Tensor]) -> Vec<(&'static str, Vec<Tensor>, Tol)> {
    let mut sets = vec![("f32", inputs.to_vec(), F32)];
    if f16_ok() {
        let half = inputs.iter().map(|t| t.to_dtype(DType::F16).unwrap());
        sets.push(("f16", half.collect(), F16));
    }
    sets
}

/// `tensors` flattened and put end to end.
fn flat_cat<'a>(tensors: impl Iterator<Item = &'a Tensor>) -> kiln::Result<Tensor> {
    let flat = tensors
        .map(|t| t.reshape([t.elem_count()]))
        .collect::<kiln::Result<Vec<_>>>()?;
    Tensor::cat(&flat, 0)
}

/// The optimizer's launches in `profile` number at least one, and fewer than the
/// `nonempty` parameters they stepped.
fn assert_optimizer_launches_share(profile: &kiln::Profile, nonempty: usize) {
    let launches: usize = profile
        .kernels
        .iter()
        .filter(|k| k.name.contains("optim/"))
        .map(|k| k.launches as usize)
        .sum();
    assert!(
        (1..nonempty).contains(&launches),
        "{launches} launches for {nonempty} parameters: {:?}",
        profile.kernels
    );
}

/// A parameter that is a compact prefix of a longer storage (`narrow(0, 0, ..)`) is
/// updated over its own elements only, on both backends.
#[test]
fn optimizer_update_of_a_prefix_view_matches_cpu() {
    use kiln::{OptimizerStep, SgdSpec};
    let mut rng = rng();
    let step = OptimizerStep::SgdMomentum(SgdSpec {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 0.0,
        nesterov: false,
    });
    let param = rand(&[5, 4], &mut rng).narrow(0, 0, 3).unwrap();
    let grad = rand(&[3, 4], &mut rng);
    let momentum = rand(&[3, 4], &mut rng);
    parity("sgd of a prefix view", &[param, grad, momentum], F32, |t| {
        Ok(t[0].optimizer_update(&t[1], &[&t[2]], &step)?.0)
    });
}
