//! Fused attention (`Tensor::attention`): the CPU's against the matmul and softmax it
//! fuses (PyTorch's definition), and the GPU kernels against the CPU, forward and
//! backward, on shapes that cross the kernels' blocks of rows and tiles, strided and
//! broadcast inputs, causal or not. Small cases also run through `gradcheck` and the
//! GPU gradient comparison of `tests/gradients.rs`.

mod common;

use common::*;
use kiln::backend::{AttentionSplit, GpuDevice, MatmulVariant};
use kiln::{DType, Device, Error, Tensor};

/// A GPU device of its own, whose fused kernels spread rows as `split` says (a device of
/// its own, so that no other test's setting changes under it), outputs poisoned.
fn gpu_split(split: AttentionSplit) -> Option<Device> {
    gpu()?;
    let gpu = GpuDevice::new().unwrap();
    gpu.set_poison_outputs(true);
    gpu.set_attention_split(split);
    Some(Device::Gpu(gpu))
}

/// Each way the kernels spread rows: whole, split into lanes, and as tuned.
fn split_devices() -> Vec<(AttentionSplit, Device)> {
    AttentionSplit::ALL
        .into_iter()
        .filter_map(|split| Some((split, gpu_split(split)?)))
        .collect()
}

/// `softmax(scale q k^T) v`, the hidden scores at minus infinity, from the ops the
/// fused kernel replaces.
fn composed(q: &Tensor, k: &Tensor, v: &Tensor, causal: bool, scale: f64) -> kiln::Result<Tensor> {
    let mut scores = q.matmul(&k.transpose(-1, -2)?)?.mul_scalar(scale)?;
    if causal {
        let (l, s) = (q.dims()[q.rank() - 2], k.dims()[k.rank() - 2]);
        let later = Tensor::ones([l, s], DType::F32, &q.device())?.triu(1)?;
        scores = scores.masked_fill(&later, f64::NEG_INFINITY)?;
    }
    scores.softmax(-1)?.matmul(v)
}

/// The gradients of `sum(attention(q, k, v) * r)` for q, k and v, end to end in one
/// tensor; `fused` picks the kernel or the composed ops.
fn gradients(t: &[Tensor], causal: bool, scale: f64, fused: bool) -> kiln::Result<Tensor> {
    let vars: Vec<Tensor> = t[..3]
        .iter()
        .map(|x| x.detach().into_var())
        .collect::<kiln::Result<_>>()?;
    let out = match fused {
        true => vars[0].attention(&vars[1], &vars[2], causal, scale)?,
        false => composed(&vars[0], &vars[1], &vars[2], causal, scale)?,
    };
    let grads = out.mul(&t[3])?.sum_all()?.backward()?;
    let flat: Vec<Tensor> = vars
        .iter()
        .map(|x| grads.get(x).expect("a gradient").flatten_all())
        .collect::<kiln::Result<_>>()?;
    Tensor::cat(&flat, 0)
}

/// (batch, queries, keys, head features, value features): more queries than a
/// workgroup's 64 and keys past several 16-key tiles, neither a multiple; heads of
/// the most features the GPU kernels keep (64) and of one; more keys than queries;
/// three batch dims (made compact for the kernels' two). Split, their rows take two,
/// four and eight lanes.
const SHAPES: &[(&[usize], usize, usize, usize, usize)] = &[
    (&[2, 3], 5, 7, 6, 5),
    (&[3], 70, 37, 8, 8),
    (&[2], 130, 130, 64, 64),
    (&[1], 17, 3, 1, 1),
    (&[4], 9, 45, 13, 33),
    (&[2, 2, 2], 6, 11, 4, 3),
    (&[], 66, 20, 32, 16),
];

fn inputs(batch: &[usize], l: usize, s: usize, e: usize, ev: usize) -> [Tensor; 4] {
    let mut rng = rng();
    let with = |rows: usize, features: usize| -> Vec<usize> {
        batch.iter().copied().chain([rows, features]).collect()
    };
    // Values up to 2 in q and k: scores up to a few units, softmaxes far from uniform.
    [
        uniform(&with(l, e), -2.0, 2.0, &mut rng),
        uniform(&with(s, e), -2.0, 2.0, &mut rng),
        rand(&with(s, ev), &mut rng),
        rand(&with(l, ev), &mut rng),
    ]
}

#[test]
fn cpu_attention_is_the_composed_softmax() {
    for &(batch, l, s, e, ev) in SHAPES {
        let t = inputs(batch, l, s, e, ev);
        for causal in [false, true] {
            let scale = 1.0 / (e as f64).sqrt();
            let label = format!("{batch:?} {l}x{s} e {e} ev {ev} causal {causal}");
            let fused = t[0].attention(&t[1], &t[2], causal, scale).unwrap();
            let want = composed(&t[0], &t[1], &t[2], causal, scale).unwrap();
            assert_close(&format!("attention {label}"), &fused, &want, F32_MATH);
            let fused = gradients(&t, causal, scale, true).unwrap();
            let want = gradients(&t, causal, scale, false).unwrap();
            assert_close(&format!("gradients {label}"), &fused, &want, F32_MATH);
        }
    }
}

#[test]
fn gpu_attention_matches_cpu() {
    for (split, device) in split_devices() {
        for &(batch, l, s, e, ev) in SHAPES {
            let t = inputs(batch, l, s, e, ev);
            for causal in [false, true] {
                let scale = 1.0 / (e as f64).sqrt();
                let label = format!("{batch:?} {l}x{s} e {e} ev {ev} causal {causal} {split:?}");
                parity_on(
                    &device,
                    &format!("attention {label}"),
                    &t[..3],
                    F32_MATH,
                    |t| t[0].attention(&t[1], &t[2], causal, scale),
                );
                parity_on(&device, &format!("gradients {label}"), &t, F32_MATH, |t| {
                    gradients(t, causal, scale, true)
                });
            }
        }
        // f16: attended in f32 and rounded once, forward and backward.
        let half = inputs(&[2], 9, 12, 8, 5).map(|t| t.to_dtype(DType::F16).unwrap());
        for causal in [false, true] {
            let label = format!("f16 causal {causal} {split:?}");
            parity_on(
                &device,
                &format!("attention {label}"),
                &half[..3],
                F16,
                |t| t[0].attention(&t[1], &t[2], causal, 0.5),
            );
            parity_on(&device, &format!("gradients {label}"), &half, F16, |t| {
                gradients(t, causal, 0.5, true)
            });
        }
    }
}

/// Part `i` (q, k, v) of a projection `[b, l, 3 * h * d]` as heads `[b, h, l, d]`: a
/// view, as a transformer splits them.
fn head_split(t: &Tensor, [b, l, h, d]: [usize; 4], i: usize) -> kiln::Result<Tensor> {
    t.reshape([b, l, 3, h, d])?
        .narrow(2, i, 1)?
        .squeeze(2)?
        .permute(&[0, 2, 1, 3])
}

/// Inputs read through their strides where the kernels read them: a transformer's
/// queries, keys and values are head-split views of one projection (`[b, l, 3, h, d]`
/// permuted to `[b, h, l, d]`), and keys and values may be broadcast over the heads.
#[test]
fn gpu_attention_reads_views_in_place() {
    let mut rng = rng();
    let (b, l, h, d) = (2, 19, 3, 8);
    let qkv = rand(&[b, l, 3 * h * d], &mut rng);
    let r = rand(&[b, h, l, d], &mut rng);
    let split = |t: &Tensor, i: usize| head_split(t, [b, l, h, d], i);
    // Keys and values shared by the heads (stride 0), a sliced query.
    let q = sliced(&[4, 12, 5], &mut rng);
    let (k, v) = (rand(&[9, 5], &mut rng), transposed(&[9, 7], &mut rng));
    let shared = [q, k, v, rand(&[4, 12, 7], &mut rng)];
    for (way, device) in split_devices() {
        for causal in [false, true] {
            parity_on(
                &device,
                &format!("attention of head-split views, causal {causal}, {way:?}"),
                &[qkv.clone(), r.clone()],
                F32_MATH,
                |t| {
                    let (q, k, v) = (split(&t[0], 0)?, split(&t[0], 1)?, split(&t[0], 2)?);
                    assert!(!q.is_contiguous());
                    gradients(&[q, k, v, t[1].clone()], causal, 0.35, true)
                },
            );
        }
        parity_on(
            &device,
            &format!("attention of broadcast keys, {way:?}"),
            &shared,
            F32_MATH,
            |t| gradients(t, true, 0.4, true),
        );
    }
}

/// The output of heads split from one projection (`[b, l, 3, h, d]` viewed as `[b, h,
/// l, d]`) lies rows outermost, as the projection does: joining the heads back
/// (`transpose(1, 2)`) gives a compact tensor, no copy. On each device its values and
/// gradients are the composed softmax's, and compact queries keep a compact output.
#[test]
fn split_heads_give_their_output_rows_outermost() {
    let mut rng = rng();
    let (b, l, h, d) = (2, 11, 3, 5);
    let qkv = rand(&[b, l, 3 * h * d], &mut rng);
    let r = rand(&[b, h, l, d], &mut rng);
    let split = |t: &Tensor, i: usize| head_split(t, [b, l, h, d], i);
    let mut devices = vec![Device::cpu()];
    devices.extend(gpu());
    for device in devices {
        let qkv = on(&device, &qkv);
        let r = on(&device, &r);
        let (q, k, v) = (
            split(&qkv, 0).unwrap(),
            split(&qkv, 1).unwrap(),
            split(&qkv, 2).unwrap(),
        );
        let out = q.attention(&k, &v, true, 0.4).unwrap();
        assert!(out.transpose(1, 2).unwrap().is_contiguous(), "{device:?}");
        let want = composed(&q, &k, &v, true, 0.4).unwrap();
        let cpu = |t: &Tensor| t.to_device(&Device::cpu()).unwrap();
        assert_close(
            &format!("output on {device:?}"),
            &cpu(&out),
            &cpu(&want),
            F32_MATH,
        );
        let t = [q, k, v, r];
        let fused = gradients(&t, true, 0.4, true).unwrap();
        let want = gradients(&t, true, 0.4, false).unwrap();
        assert_close(
            &format!("gradients on {device:?}"),
            &cpu(&fused),
            &cpu(&want),
            F32_MATH,
        );
        let compact = rand(&[b, h, l, d], &mut rng);
        let compact = on(&device, &compact);
        let out = compact.attention(&compact, &compact, false, 0.4).unwrap();
        assert!(out.is_contiguous(), "{device:?}");
    }
}

/// Heads split from one projection, as `MultiheadAttention` splits them (`[q | k | v]`
/// along the features) or each head's three side by side: the kernels write the
/// gradients of q, k and v where the heads lie in the projection, whose gradient is
/// then their one storage. No kernel of its own assembles it (three padded slices and
/// their sum did), and it matches the CPU's, the GPU's outputs poisoned.
#[test]
fn heads_split_from_one_projection_take_their_gradient_in_place() {
    if gpu().is_none() {
        return;
    }
    // A device of its own, so that tests running beside this one add no kernels to
    // its profile; the hardware GPUs' small-product matmul, which reads its operands in
    // place (a software adapter's packs them first, a copy of its own).
    let g = GpuDevice::new().unwrap();
    g.set_poison_outputs(true);
    g.set_matmul_variant(MatmulVariant::Tiled).unwrap();
    let gpu = Device::Gpu(g);
    let mut rng = rng();
    let (b, l, h, d) = (2, 19, 3, 8);
    let e = h * d;
    let inputs = [
        rand(&[b, l, e], &mut rng),
        uniform(&[3 * e, e], -0.5, 0.5, &mut rng),
        rand(&[b, h, l, d], &mut rng),
    ];
    for per_head in [false, true] {
        let loss = |t: &[Tensor]| -> kiln::Result<Tensor> {
            let qkv = t[0].matmul(&t[1].t()?)?;
            let by_head = qkv.reshape([b, l, h, 3 * d])?;
            let head = |i: usize| -> kiln::Result<Tensor> {
                let split = match per_head {
                    false => qkv.narrow(2, i * e, e)?.reshape([b, l, h, d])?,
                    true => by_head.narrow(3, i * d, d)?,
                };
                split.permute(&[0, 2, 1, 3])
            };
            let out = head(0)?.attention(&head(1)?, &head(2)?, true, 0.35)?;
            out.mul(&t[2])?.sum_all()
        };
        let vars = |device: &Device| -> Vec<Tensor> {
            let mut t: Vec<Tensor> = inputs.iter().map(|x| on(device, x)).collect();
            for x in &mut t[..2] {
                *x = x.detach().into_var().unwrap();
            }
            t
        };
        let cpu_vars = vars(&Device::cpu());
        let want = loss(&cpu_vars).unwrap().backward().unwrap();
        let gpu_vars = vars(&gpu);
        let out = loss(&gpu_vars).unwrap();
        gpu.synchronize().unwrap();
        let (got, profile) = gpu
            .profile(|| {
                let grads = out.backward()?;
                let got: Vec<Tensor> = gpu_vars[..2]
                    .iter()
                    .map(|x| grads.get(x).expect("a gradient").to_device(&Device::cpu()))
                    .collect::<kiln::Result<_>>()?;
                Ok(got)
            })
            .unwrap();
        for (i, name) in ["x", "w"].into_iter().enumerate() {
            let want = want.get(&cpu_vars[i]).expect("a gradient");
            assert_close(
                &format!("{name}, per head {per_head}"),
                &got[i],
                want,
                F32_MATH,
            );
        }
        // Only the attention's kernels write as much as the projection's gradient.
        let projection_bytes = (b * l * 3 * e * 4) as u64;
        let writers: Vec<&str> = profile
            .kernels
            .iter()
            .filter(|k| k.bytes_written / k.launches >= projection_bytes)
            .map(|k| k.name.as_str())
            .collect();
        assert!(
            !writers.is_empty() && writers.iter().all(|k| k.contains("attention_backward")),
            "per head {per_head}: kernels that wrote the projection's gradient: {writers:?}"
        );
    }
}

/// A NaN in a query, or in a key a query sees, makes that query's output NaN, as in the
/// composed softmax; a NaN in a value it sees, that feature of it; a key or value a
/// causal query does not see is not read.
#[test]
fn nan_reaches_the_queries_that_see_it() {
    let cpu = Device::cpu();
    let gpus = split_devices().into_iter().map(|(_, device)| device);
    let devices: Vec<Device> = std::iter::once(cpu).chain(gpus).collect();
    let mut rng = rng();
    let (l, s, e) = (5, 5, 4);
    let base = [
        rand(&[l, e], &mut rng),
        rand(&[s, e], &mut rng),
        rand(&[s, e], &mut rng),
    ];
    for (which, row) in [(0, 2), (1, 3), (2, 3)] {
        let mut values = base[which].to_vec::<f32>().unwrap();
        values[row * e + 1] = f32::NAN;
        let mut t = base.clone();
        t[which] = Tensor::from_vec(values, [base[which].dims()[0], e], &Device::cpu()).unwrap();
        for device in &devices {
            let [q, k, v] = t.each_ref().map(|x| x.to_device(device).unwrap());
            let out = q
                .attention(&k, &v, true, 0.5)
                .unwrap()
                .to_vec::<f32>()
                .unwrap();
            for i in 0..l {
                // A query's row is NaN when the NaN is in it, or in a key or value it sees.
                let sees = match which {
                    0 => i == row,
                    _ => i >= row,
                };
                let nan = out[i * e..(i + 1) * e]
                    .iter()
                    .filter(|x| x.is_nan())
                    .count();
                let want = match (sees, which) {
                    (false, _) => 0,
                    (true, 2) => 1,
                    (true, _) => e,
                };
                assert_eq!(
                    nan, want,
                    "{device:?}: NaN in input {which} row {row}, query {i}"
                );
            }
        }
    }
}

/// A key whose score is -inf (an infinite key against a query of the other sign) weighs
/// nothing, as in the composed softmax, however many such keys come first: the running
/// maximum starts at -inf and must not turn the sum into NaN. A score of +inf makes the
/// query's output NaN on every device, as the composed softmax does. Rows whole and
/// split into lanes, keys across several tiles.
#[test]
fn keys_scored_minus_infinity_weigh_nothing() {
    let cpu = Device::cpu();
    let gpus = split_devices().into_iter().map(|(_, device)| device);
    let devices: Vec<Device> = std::iter::once(cpu.clone()).chain(gpus).collect();
    let mut rng = rng();
    let (l, s, e) = (3, 300, 2);
    // Queries 0 and 1 positive in feature 0, query 2 negative.
    let q = Tensor::from_vec(vec![1.0f32, 0.5, 2.0, -0.25, -1.0, 0.75], [l, e], &cpu).unwrap();
    // The first 200 keys -inf in feature 0, the rest finite.
    let mut keys = uniform(&[s, e], -1.0, 1.0, &mut rng)
        .to_vec::<f32>()
        .unwrap();
    for key in keys.chunks_mut(e).take(200) {
        key[0] = f32::NEG_INFINITY;
    }
    let k = Tensor::from_vec(keys, [s, e], &cpu).unwrap();
    let v = rand(&[s, e], &mut rng);
    for causal in [false, true] {
        let want = composed(&q, &k, &v, causal, 0.5).unwrap();
        for device in &devices {
            let [q, k, v] = [&q, &k, &v].map(|x| x.to_device(device).unwrap());
            let got = q.attention(&k, &v, causal, 0.5).unwrap();
            let label = format!("{device:?}, causal {causal}");
            assert_close(&label, &got.to_device(&cpu).unwrap(), &want, F32_MATH);
            let out = got.to_vec::<f32>().unwrap();
            // Causal, the queries see only their own key (all -inf for q > 0): NaN, as
            // a softmax over nothing but -inf is.
            assert_eq!(
                out.iter().map(|x| x.is_finite()).collect::<Vec<_>>(),
                [!causal, !causal, !causal, !causal, false, false],
                "{label}: {out:?}"
            );
        }
    }
}

#[test]
fn bad_inputs_are_errors() {
    let cpu = Device::cpu();
    let t = |dims: &[usize]| Tensor::zeros(dims.to_vec(), DType::F32, &cpu).unwrap();
    let cases = [
        ("features differ", t(&[3, 4]), t(&[5, 3]), t(&[5, 2])),
        ("keys and values differ", t(&[3, 4]), t(&[5, 4]), t(&[6, 2])),
        (
            "batches differ",
            t(&[2, 3, 4]),
            t(&[3, 5, 4]),
            t(&[3, 5, 2]),
        ),
        ("a vector", t(&[4]), t(&[5, 4]), t(&[5, 2])),
    ];
    for (what, q, k, v) in cases {
        assert!(q.attention(&k, &v, false, 1.0).is_err(), "{what}");
    }
    let ints = Tensor::zeros([3, 4], DType::I32, &cpu).unwrap();
    assert!(matches!(
        ints.attention(&ints, &ints, false, 1.0),
        Err(Error::UnsupportedDType { .. })
    ));
    // No keys: zeros, as the composed product over none.
    let out = t(&[3, 4])
        .attention(&t(&[0, 4]), &t(&[0, 2]), false, 1.0)
        .unwrap();
    assert_eq!(out.dims(), [3, 2]);
    assert!(out.to_vec::<f32>().unwrap().iter().all(|&x| x == 0.0));
    if let Some(gpu) = gpu() {
        // Past the features the kernels keep in registers: refused, not cut short.
        let wide = Tensor::zeros([3, 65], DType::F32, &gpu).unwrap();
        assert!(matches!(
            wide.attention(&wide, &wide, false, 1.0),
            Err(Error::Unsupported { .. })
        ));
    }
}

/// Set to compose (`KILN_ATTENTION=composed`), the op is refused, so the layers
/// compose attention: the two ways can be timed against each other. Fused or tuned, it
/// runs.
#[test]
fn fused_attention_can_be_turned_off() {
    use kiln::backend::AttentionWay;
    if gpu().is_none() {
        return;
    }
    let gpu = kiln::backend::GpuDevice::new().unwrap();
    let device = Device::Gpu(gpu.clone());
    let x = Tensor::ones([4, 3], DType::F32, &device)
        .unwrap()
        .into_var()
        .unwrap();
    let y = x.attention(&x, &x, true, 1.0).unwrap();
    gpu.set_attention_way(AttentionWay::Composed);
    assert!(matches!(
        x.attention(&x, &x, true, 1.0),
        Err(Error::Unsupported { .. })
    ));
    // A forward that ran fused still has its backward.
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&x).is_some());
    for way in [AttentionWay::Fused, AttentionWay::Autotune] {
        gpu.set_attention_way(way);
        assert!(x.attention(&x, &x, true, 1.0).is_ok());
    }
}

/// A software adapter stops an invocation's loops after 65,535 iterations without an
/// error: attention over more keys than the kernels can loop through there is refused
/// (70,000 keys came out wrong on lavapipe with the refusal off), and computed on a
/// hardware GPU.
#[test]
fn keys_past_a_software_adapters_loops_are_refused_there() {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng();
    let t = [
        rand(&[2, 3, 8], &mut rng),
        rand(&[2, 70_000, 8], &mut rng),
        rand(&[2, 70_000, 8], &mut rng),
    ];
    let software = gpu.as_gpu().unwrap().summary().is_software();
    let [q, k, v] = t.each_ref().map(|x| x.to_device(&gpu).unwrap());
    match q.attention(&k, &v, false, 0.3) {
        Err(Error::Unsupported { .. }) if software => {}
        Err(e) => panic!("70,000 keys: {e}"),
        Ok(_) if software => panic!("70,000 keys ran on a software adapter, past its loops"),
        Ok(_) => parity("attention over 70,000 keys", &t, F32_MATH, |t| {
            t[0].attention(&t[1], &t[2], false, 0.3)
        }),
    }
}
