//! `Device::profile`: exact launch counts and bound bytes for known work, GPU time
//! where the adapter has timestamps, and errors where a profile cannot run.

mod common;

use common::*;
use kiln::backend::MatmulVariant;
use kiln::{DType, Device, Error, Tensor};
use std::sync::Mutex;

/// A profile counts everything its device runs: the tests here take turns.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn assert_is_e_squared(c: &Tensor) {
    let want = (2.0f32).exp();
    let got = c.to_vec::<f32>().unwrap();
    assert!(got.iter().all(|&v| (v - want).abs() < 1e-5));
}

/// Two 1000-element f32 inputs whose sum's exp is e^2 everywhere.
fn two_constants(gpu: &Device) -> (Tensor, Tensor) {
    let a = Tensor::full([1000], 0.5, DType::F32, gpu).unwrap();
    let b = Tensor::full([1000], 1.5, DType::F32, gpu).unwrap();
    (a, b)
}

#[test]
fn a_profile_counts_each_launch_and_the_bytes_it_binds() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(gpu) = gpu() else { return };
    // The constants pending until the add reads them, as with fusion on (the default,
    // which `KILN_FUSION=0` turns off for a whole run); then each op its own kernel
    // (fusion is counted in the next test).
    let fusion = FusionSetTo::new(&gpu, true);
    let (a, b) = two_constants(&gpu);
    gpu.as_gpu().unwrap().set_fusion(false);
    let live_before = gpu.as_gpu().unwrap().pool_stats().live_bytes;
    let profiled = gpu.profile(|| a.add(&b)?.exp());
    drop(fusion);
    let (c, profile) = profiled.unwrap();
    assert_is_e_squared(&c);
    // At most four buffers of 4096 bytes were live at once: both inputs, the sum, and
    // exp's output while the sum was read.
    assert_eq!(profile.peak_live_bytes - live_before, 4 * 4096);
    // The test device poisons every output first: one fill per kernel output.
    let kernel = |name: &str| {
        profile
            .kernels
            .iter()
            .find(|k| k.name.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {:#?}", profile.kernels))
    };
    // 1000 f32 = 4000 bytes, which the pool rounds up to 4096.
    let add = kernel("elementwise/binary.wgsl:main_vec4");
    assert_eq!(
        (add.launches, add.bytes_read, add.bytes_written),
        (1, 8192, 4096)
    );
    let exp = kernel("elementwise/unary.wgsl:main_vec4");
    assert_eq!(
        (exp.launches, exp.bytes_read, exp.bytes_written),
        (1, 4096, 4096)
    );
    let fill = kernel("elementwise/fill.wgsl:main");
    assert_eq!(
        (fill.launches, fill.bytes_read, fill.bytes_written),
        (2, 0, 8192)
    );
    assert_eq!(profile.dispatches(), 4);
    assert_eq!(profile.bytes(), 8192 + 4096 + 4096 + 4096 + 8192);
    let timed = gpu.as_gpu().unwrap().has_timestamps();
    assert_eq!(profile.gpu_time().is_some(), timed);
    // Nothing recorded after the profile ended is counted in it, and a new profile
    // starts from zero.
    let (_, again) = gpu.profile(|| a.neg()).unwrap();
    assert_eq!(again.dispatches(), 2);
}

/// A profile counts the batches submitted and the bind groups made. The same work
/// again, from the same buffers live and free, binds what it bound before and makes
/// no bind groups; after `trim_pool` its buffers are new, and it makes them again. On
/// a device of its own, so that nothing else changes its pool.
#[test]
fn repeated_work_finds_the_bind_groups_it_made() {
    let Some(_) = gpu() else { return };
    let device = kiln::backend::GpuDevice::new().unwrap();
    device.set_poison_outputs(true);
    device.set_fusion(false);
    let gpu = Device::Gpu(device.clone());
    let (a, b) = two_constants(&gpu);
    let mut made = Vec::new();
    for run in 0..3 {
        if run == 2 {
            device.trim_pool().unwrap();
        }
        let (c, profile) = gpu.profile(|| a.add(&b)?.exp()).unwrap();
        assert_is_e_squared(&c);
        // Two kernels and the fills that poison their outputs, one batch.
        assert_eq!(profile.dispatches(), 4, "{:#?}", profile.kernels);
        assert_eq!(profile.submissions, 1);
        made.push(profile.bind_groups);
    }
    assert_eq!(made, [4, 0, 4]);
}

/// With fusion on, the same two ops are one generated kernel, which reads both
/// inputs and writes one output; the pending sum is never allocated. A fused kernel's
/// reads count the bytes from each view's first element to its last (4000 of each
/// 4096-byte buffer here; two rows of a 40 KB tensor below), not the buffers it binds.
#[test]
fn a_profile_counts_a_fused_kernel_once() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(gpu) = gpu() else { return };
    let _fusion = FusionSetTo::new(&gpu, true);
    let (a, b) = two_constants(&gpu);
    let (c, profile) = gpu.profile(|| a.add(&b)?.exp()).unwrap();
    let fused = profile
        .kernels
        .iter()
        .find(|k| k.name == "fused add,exp [F32]")
        .unwrap_or_else(|| panic!("no fused kernel in {:#?}", profile.kernels));
    assert_eq!(
        (fused.launches, fused.bytes_read, fused.bytes_written),
        (1, 8000, 4096)
    );
    // And one fill: the poisoned output.
    assert_eq!(profile.dispatches(), 2, "{:#?}", profile.kernels);
    assert_eq!(profile.bytes(), 8000 + 4096 + 4096);
    assert_is_e_squared(&c);
    // Rows 3 and 4 of 10 (a time step of a sequence): 800 bytes read, and the rows
    // of two views that overlap counted once (rows 3 to 5: 1200 bytes).
    let rows = Tensor::full([10, 100], 1.0, DType::F32, &gpu).unwrap();
    rows.to_vec::<f32>().unwrap();
    let slice = |start| rows.narrow(0, start, 2);
    for (views, read) in [(vec![3], 800), (vec![3, 4], 1200)] {
        let (_, profile) = gpu
            .profile(|| {
                let mut sum = slice(views[0])?.exp()?;
                for &v in &views[1..] {
                    sum = sum.add(&slice(v)?)?;
                }
                Ok(sum)
            })
            .unwrap();
        let fused: u64 = (profile.kernels.iter())
            .filter(|k| k.name.starts_with("fused"))
            .map(|k| k.bytes_read)
            .sum();
        assert_eq!(fused, read, "{views:?}: {:#?}", profile.kernels);
    }
    // Columns 40 and 41 of the ten rows (a time step of a `[batch, time]` sequence):
    // ten pairs 400 bytes apart count their 80 bytes, not the 3,608 from first to last.
    let (_, profile) = gpu.profile(|| rows.narrow(1, 40, 2)?.exp()).unwrap();
    let fused = (profile.kernels.iter())
        .find(|k| k.name.starts_with("fused"))
        .unwrap_or_else(|| panic!("no fused kernel in {:#?}", profile.kernels));
    assert_eq!(fused.bytes_read, 80, "{:#?}", profile.kernels);
}

/// A cat counts the bytes of its pieces' views and of the part of its output each
/// launch writes: an LSTM stacks its time steps' outputs, three launches of 25 pieces
/// each, which counted the whole output three times and each piece's whole buffer.
#[test]
fn a_cat_counts_what_it_copies() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(gpu) = gpu() else { return };
    let _fusion = FusionSetTo::new(&gpu, false);
    // 60 steps of [4, 8] [h | c] pairs, each h a view of half its buffer.
    let steps: Vec<Tensor> = (0..60)
        .map(|t| Tensor::full([4, 16], t as f64, DType::F32, &gpu)?.narrow(1, 0, 8))
        .collect::<kiln::Result<_>>()
        .unwrap();
    steps.last().unwrap().to_vec::<f32>().unwrap();
    let (stacked, profile) = gpu.profile(|| Tensor::stack(&steps, 1)).unwrap();
    let cat = (profile.kernels.iter())
        .find(|k| k.name.starts_with("elementwise/cat.wgsl"))
        .unwrap_or_else(|| panic!("no cat in {:#?}", profile.kernels));
    let bytes = 60 * 4 * 8 * 4;
    assert_eq!(
        (cat.bytes_read, cat.bytes_written),
        (bytes, bytes),
        "{cat:#?}"
    );
    let values = stacked.to_vec::<f32>().unwrap();
    let expected: Vec<f32> = (0..4)
        .flat_map(|_| (0..60).flat_map(|t| [t as f32; 8]))
        .collect();
    assert_eq!(values, expected);
}

/// Elementwise ops, copies and constants of no elements launch nothing, with fusion on
/// or off: before, each ran a kernel over an empty range, after a fill that poisoned
/// its empty output.
#[test]
fn empty_tensors_launch_nothing() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(_) = gpu() else { return };
    for fusion in [true, false] {
        let own = kiln::backend::GpuDevice::new().unwrap();
        own.set_poison_outputs(true);
        own.set_fusion(fusion);
        let device = Device::Gpu(own);
        let (ys, profile) = device
            .profile(|| {
                let x = Tensor::zeros([0, 3], DType::F32, &device)?;
                let ids = Tensor::zeros([4, 0], DType::I32, &device)?;
                Ok([
                    x.add_scalar(1.0)?.mul(&x)?.exp()?,
                    x.transpose(0, 1)?.contiguous()?,
                    ids.add(&ids)?.to_dtype(DType::F32)?,
                ])
            })
            .unwrap();
        assert_eq!(
            profile.dispatches(),
            0,
            "fusion {fusion}: {:#?}",
            profile.kernels
        );
        let dims: Vec<&[usize]> = ys.iter().map(|y| y.dims()).collect();
        assert_eq!(dims, [&[0, 3][..], &[3, 0], &[4, 0]]);
    }
}

/// Index checks on ids uploaded from the host use the bounds kept at upload: no
/// readback, so a training step that gathers (embeddings, labels) does not stall.
#[test]
fn index_checks_on_uploaded_ids_read_nothing_back() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(gpu) = gpu() else { return };
    let table = Tensor::full([5, 3], 1.0, DType::F32, &gpu).unwrap();
    let ids = Tensor::from_vec(vec![4i32, 0, 2, 2], [4], &gpu).unwrap();
    let (_, profile) = gpu
        .profile(|| {
            // The gather's index is a kernel's copy of the uploaded ids: bounds carry over.
            let rows = ids.unsqueeze(1)?.broadcast_to([4, 3])?.contiguous()?;
            table.embedding(&ids)?.add(&table.gather(0, &rows)?)
        })
        .unwrap();
    assert_eq!(profile.readbacks, 0, "{profile:#?}");
}

#[test]
fn profiles_refuse_the_cpu_and_nesting() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let e = Device::cpu().profile(|| Ok(())).unwrap_err();
    assert!(matches!(e, Error::Unsupported { op: "profile", .. }), "{e}");
    let Some(gpu) = gpu() else { return };
    let nested = gpu.profile(|| gpu.profile(|| Ok(())).map(|_| ()));
    let e = nested.unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument { op: "profile", .. }),
        "{e}"
    );
    // The failed inner call left no profile running.
    assert!(gpu.profile(|| Ok(())).is_ok());
}

/// A matrix in a product a step (a recurrent weight) gets its gradient from one
/// product over every step's rows, stacked by `cat`s, not from a product a step and
/// their sum: the backward pass runs one product a step for the hidden state's
/// gradient, and one more. (With the tiled kernel, one launch a product; lavapipe's
/// default launches one per block of the left operand.)
#[test]
fn a_recurrent_weight_gets_its_gradient_from_one_product() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(gpu) = gpu() else { return };
    let device = gpu.as_gpu().unwrap();
    let variant = device.matmul_variant();
    device.set_matmul_variant(MatmulVariant::Tiled).unwrap();
    let mut rng = rng();
    let steps: usize = 12;
    let w = on(&gpu, &rand(&[64, 64], &mut rng)).into_var().unwrap();
    let mut h = on(&gpu, &rand(&[4, 64], &mut rng)).into_var().unwrap();
    for _ in 0..steps {
        h = h.matmul(&w).unwrap().tanh().unwrap();
    }
    let loss = h.sum(&[0, 1], false).unwrap();
    let profiled = gpu.profile(|| loss.backward());
    device.set_matmul_variant(variant).unwrap();
    let (grads, profile) = profiled.unwrap();
    let count = |prefix: &str| launches(&profile, prefix);
    assert_eq!(count("matmul/"), steps as u64 + 1, "{:#?}", profile.kernels);
    // Twelve pieces each of `h` and of the steps' gradients, as many to a launch as
    // the adapter binds beside the output, up to CAT_PIECES.
    let cats = 2 * steps.div_ceil(cat_pieces_per_launch(device)) as u64;
    assert_eq!(
        count("elementwise/cat.wgsl"),
        cats,
        "{:#?}",
        profile.kernels
    );
    assert!(grads.get(&w).is_some());
}

/// A recurrent layer's steps' gradients go to two consumers that each stack them: an
/// LSTM adds its input projection's step to the recurrent product (the input's slices
/// and the weight's product), a GRU adds its hidden bias to it (the bias's row sums
/// and the weight's product). The second reads what the first put together: a `cat`
/// for the steps' gradients and one for the states, not a third of the same gradients
/// again. The gradients are the CPU's.
#[test]
fn a_recurrent_layers_steps_gradients_are_stacked_once() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(gpu) = gpu() else { return };
    let device = gpu.as_gpu().unwrap();
    let mut rng = rng();
    let steps: usize = 12;
    let inputs = [
        rand(&[4, steps, 64], &mut rng),
        rand(&[4, 64], &mut rng),
        // As a layer of 64 units starts (PyTorch's bound, 1/8): the steps' gradients
        // neither vanish nor grow.
        rand(&[64, 64], &mut rng).mul_scalar(0.125).unwrap(),
        rand(&[64], &mut rng).mul_scalar(0.125).unwrap(),
    ];
    for with_input in [true, false] {
        // The loss on `on_device`, and what it depends on: with the input's steps
        // (the LSTM's way) or with the bias (the GRU's).
        let forward = |on_device: &Device| {
            let vars = inputs
                .each_ref()
                .map(|t| on(on_device, t).detach().into_var().unwrap());
            let [x, h0, w, b] = &vars;
            let mut h = h0.clone();
            for s in 0..steps {
                let product = h.matmul(w).unwrap();
                let z = match with_input {
                    true => x.narrow(1, s, 1).unwrap().squeeze(1).unwrap().add(&product),
                    false => product.add(b),
                };
                h = z.unwrap().tanh().unwrap();
            }
            let wanted = match with_input {
                true => [x.clone(), w.clone()],
                false => [w.clone(), b.clone()],
            };
            (h.sum(&[0, 1], false).unwrap(), wanted)
        };
        let (loss, cpu) = forward(&Device::cpu());
        let want = loss.backward().unwrap();
        let (loss, on_gpu) = forward(&gpu);
        let variant = device.matmul_variant();
        device.set_matmul_variant(MatmulVariant::Tiled).unwrap();
        let profiled = gpu.profile(|| loss.backward());
        device.set_matmul_variant(variant).unwrap();
        let (got, profile) = profiled.unwrap();
        for (i, (c, g)) in cpu.iter().zip(&on_gpu).enumerate() {
            let got = got.get(g).unwrap().to_device(&Device::cpu()).unwrap();
            let name = format!("with the input {with_input}: gradient {i}");
            assert_close(&name, &got, want.get(c).unwrap(), F32);
        }
        let cats = 2 * steps.div_ceil(cat_pieces_per_launch(device)) as u64;
        assert_eq!(
            launches(&profile, "elementwise/cat.wgsl"),
            cats,
            "with the input {with_input}: {:#?}",
            profile.kernels
        );
    }
}

/// A bias added once a step gets its gradient from one reduction over the steps' rows
/// side by side (one `cat` per so many steps), not from a reduction a step and the sums
/// of their results; the gradient is the CPU's.
#[test]
fn a_bias_added_every_step_gets_its_gradient_from_one_reduction() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(gpu) = gpu() else { return };
    let mut rng = rng();
    let steps: usize = 12;
    let (b, h0) = (rand(&[64], &mut rng), rand(&[4, 64], &mut rng));
    // The loss on `device`, and the bias it depends on.
    let forward = |device: &Device| {
        let b = on(device, &b).detach().into_var().unwrap();
        let mut h = on(device, &h0);
        for _ in 0..steps {
            h = h.add(&b).unwrap().tanh().unwrap();
        }
        (h.sum(&[0, 1], false).unwrap(), b)
    };
    let (loss, bias) = forward(&Device::cpu());
    let want = loss.backward().unwrap().get(&bias).unwrap().clone();
    let (loss, bias) = forward(&gpu);
    let (grads, profile) = gpu.profile(|| loss.backward()).unwrap();
    let got = grads.get(&bias).unwrap().to_device(&Device::cpu()).unwrap();
    assert_close("the bias's gradient", &got, &want, F32);
    let count = |prefix: &str| launches(&profile, prefix);
    assert_eq!(count("reduce/"), 1, "{:#?}", profile.kernels);
    let cats = steps.div_ceil(cat_pieces_per_launch(gpu.as_gpu().unwrap())) as u64;
    assert_eq!(
        count("elementwise/cat.wgsl"),
        cats,
        "{:#?}",
        profile.kernels
    );
}

/// Comparing with zero takes no tensor of zeros: LeakyReLU's gradient and a masked
/// triangle run as one fused kernel each, with no clear written before, to the CPU's
/// values (a first version cleared a buffer of the input's size for each: seven a GAN
/// step).
#[test]
fn comparisons_with_zero_write_no_zeros() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(gpu) = gpu() else { return };
    let _fusion = FusionSetTo::new(&gpu, true);
    let mut rng = rng();
    let (x, r) = (rand(&[37, 29], &mut rng), rand(&[37, 29], &mut rng));
    // x's gradient through LeakyReLU, and x's lower triangle.
    let run = |x: &Tensor, r: &Tensor| {
        let x = x.detach().into_var().unwrap();
        let y = x.leaky_relu(0.2).unwrap().mul(r).unwrap();
        let grad = y
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
            .get(&x)
            .unwrap()
            .clone();
        (grad, x.detach().tril(-2).unwrap())
    };
    let want = run(&x, &r);
    let (x, r) = (on(&gpu, &x), on(&gpu, &r));
    gpu.as_gpu().unwrap().synchronize().unwrap();
    let (got, profile) = gpu
        .profile(|| {
            let got = run(&x, &r);
            gpu.as_gpu().unwrap().synchronize()?;
            Ok(got)
        })
        .unwrap();
    assert_eq!(profile.transfers, 0, "{:#?}", profile.kernels);
    assert_eq!(launches(&profile, "fused"), 2, "{:#?}", profile.kernels);
    let cpu = |t: &Tensor| t.to_device(&Device::cpu()).unwrap();
    assert_close("LeakyReLU's gradient", &cpu(&got.0), &want.0, F32);
    assert_close("the triangle", &cpu(&got.1), &want.1, F32);
}

/// A mean cross-entropy's backward computes the loss's gradient (a constant, the
/// mean's `1 / rows`) in its loads: one kernel, where the constant took one of its
/// own every training step; the logits' gradient the CPU's, also for a sum's and for
/// a gradient that is a buffer (per-row weights).
#[test]
fn cross_entropy_backward_computes_the_losss_gradient_in_its_loads() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(gpu) = gpu() else { return };
    let _fusion = FusionSetTo::new(&gpu, true);
    let mut rng = rng();
    let logits = rand(&[37, 11], &mut rng);
    let targets: Vec<i32> = (0..37).map(|i| i * 7 % 11).collect();
    let targets = Tensor::from_vec(targets, [37], &Device::cpu()).unwrap();
    let weights = rand(&[37], &mut rng);
    // The logits' gradient of the mean loss, the summed loss, and a weighted sum.
    let grads = |x: &Tensor, t: &Tensor, w: &Tensor| -> Vec<Tensor> {
        let losses = [
            x.cross_entropy(t),
            x.cross_entropy_per_row(t, 0.0).and_then(|l| l.sum_all()),
            x.cross_entropy_per_row(t, 0.1)
                .and_then(|l| l.mul(w))
                .and_then(|l| l.sum_all()),
        ];
        losses
            .into_iter()
            .map(|l| l.unwrap().backward().unwrap().get(x).unwrap().clone())
            .collect()
    };
    let x = logits.detach().into_var().unwrap();
    let want = grads(&x, &targets, &weights);
    let xg = on(&gpu, &logits).detach().into_var().unwrap();
    let (tg, wg) = (on(&gpu, &targets), on(&gpu, &weights));
    let loss = xg.cross_entropy(&tg).unwrap();
    gpu.as_gpu().unwrap().synchronize().unwrap();
    let (grad, profile) = gpu
        .profile(|| {
            let g = loss.backward()?.get(&xg).unwrap().clone();
            gpu.as_gpu().unwrap().synchronize()?;
            Ok(g)
        })
        .unwrap();
    // Not counting the fill that poisons the output.
    let kernels: Vec<&str> = (profile.kernels.iter())
        .map(|k| k.name.as_str())
        .filter(|k| !k.contains("fill.wgsl"))
        .collect();
    assert_eq!(kernels.len(), 1, "{kernels:?}");
    assert!(
        kernels[0].contains("cross_entropy_backward") && kernels[0].contains("+ fused"),
        "{kernels:?}"
    );
    let cpu = |t: &Tensor| t.to_device(&Device::cpu()).unwrap();
    assert_close("the mean's gradient", &cpu(&grad), &want[0], F32);
    for (i, got) in grads(&xg, &tg, &wg).iter().enumerate().skip(1) {
        assert_close(&format!("gradient {i}"), &cpu(got), &want[i], F32);
    }
}

/// Launches of the kernels whose names start with `prefix`.
fn launches(profile: &kiln::Profile, prefix: &str) -> u64 {
    let kernels = profile
        .kernels
        .iter()
        .filter(|k| k.name.starts_with(prefix));
    kernels.map(|k| k.launches).sum()
}

/// Pieces one `cat` launch takes on `gpu`: as many as it binds beside the output, up
/// to `CAT_PIECES`.
fn cat_pieces_per_launch(gpu: &kiln::backend::GpuDevice) -> usize {
    let limit = gpu.summary().max_storage_buffers_per_shader_stage as usize;
    (limit - 1).min(kiln::backend::shader_constants::CAT_PIECES as usize)
}

/// The autotuner times what a candidate leaves deferred for fusion: what a timed run
/// returns is held until its clock stops, so the kernels it deferred run in the window.
/// A first version dropped it, and the composed attention's last kernels were not
/// timed: lavapipe's tuner chose composed attention for the char transformer.
#[test]
fn autotuning_runs_what_a_candidate_defers() {
    use kiln::backend::{AttentionWay, GpuDevice};
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if gpu().is_none() {
        return;
    }
    let tuner = GpuDevice::new().unwrap();
    tuner.set_fusion(true);
    tuner.use_autotune_cache(None);
    tuner.set_attention_way(AttentionWay::Autotune);
    let device = Device::Gpu(tuner.clone());
    let (a, b) = two_constants(&device);
    let runs = std::cell::Cell::new(0);
    let (_, profile) = device
        .profile(|| {
            tuner.attention_way_for("attention test class", |_| {
                runs.set(runs.get() + 1);
                // One fused kernel, deferred until its output is read.
                a.add(&b)?.exp()
            })
        })
        .unwrap();
    let fused: u64 = profile
        .kernels
        .iter()
        .filter(|k| k.name.starts_with("fused add,exp"))
        .map(|k| k.launches)
        .sum();
    assert!(runs.get() >= 2, "each candidate runs");
    assert_eq!(fused, runs.get(), "{:#?}", profile.kernels);
}

/// A backward pass through linear layers leaves each weight's gradient a small pending
/// product, which nothing reads until the optimizer. With groups on (the tiled kernel,
/// as hardware GPUs run it), each runs with the next product that must run, in one
/// launch: the gradients those of groups off bit for bit, and the CPU's.
#[test]
fn weight_gradients_run_with_the_products_beside_them() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(gpu) = gpu() else { return };
    // Groups take pending products, which fusion leaves pending.
    let _fusion = FusionSetTo::new(&gpu, true);
    let device = gpu.as_gpu().unwrap();
    let (variant, groups) = (device.matmul_variant(), device.matmul_groups());
    device.set_matmul_variant(MatmulVariant::Tiled).unwrap();
    let mut rng = rng();
    let values: Vec<Tensor> = [[19, 33], [33, 40], [40, 24], [24, 7]]
        .iter()
        .map(|shape| rand(shape, &mut rng))
        .collect();
    // The weights of a three-layer network on `device`, and its summed output.
    let network = |device: &Device| -> kiln::Result<(Vec<Tensor>, Tensor)> {
        let x = on(device, &values[0]);
        let w: Vec<Tensor> = (values[1..].iter())
            .map(|v| on(device, v).detach().into_var())
            .collect::<kiln::Result<_>>()?;
        let h = x.matmul(&w[0])?.relu()?.matmul(&w[1])?.tanh()?;
        let loss = h.matmul(&w[2])?.sum(&[0, 1], false)?;
        Ok((w, loss))
    };
    let gradients = |(w, loss): &(Vec<Tensor>, Tensor)| -> kiln::Result<Vec<Vec<f64>>> {
        let grads = loss.backward()?;
        let grad = |w: &Tensor| grads.get(w).expect("a gradient").to_f64_vec();
        w.iter().map(grad).collect()
    };
    let mut runs = Vec::new();
    for on in [false, true] {
        device.set_matmul_groups(on);
        let net = network(&gpu).unwrap();
        runs.push(gpu.profile(|| gradients(&net)));
    }
    device.set_matmul_variant(variant).unwrap();
    device.set_matmul_groups(groups);
    let [(alone, alone_profile), (together, profile)] =
        <[_; 2]>::try_from(runs.into_iter().collect::<kiln::Result<Vec<_>>>().unwrap()).unwrap();
    let cpu = network(&Device::cpu()).unwrap();
    let grads = cpu.1.backward().unwrap();
    let want: Vec<&Tensor> = cpu.0.iter().map(|w| grads.get(w).unwrap()).collect();
    for (i, ((a, t), w)) in alone.iter().zip(&together).zip(&want).enumerate() {
        for (x, y) in a.iter().zip(t) {
            assert_eq!(
                x.to_bits(),
                y.to_bits(),
                "weight {i}: {x} alone, {y} together"
            );
        }
        let got = Tensor::from_vec(t.clone(), w.dims().to_vec(), &Device::cpu()).unwrap();
        assert_near(&format!("weight {i}"), &got, w, 1e-5, 1e-4);
    }
    // Alone: the three weights' products and the two hidden layers' gradients, five
    // launches. Together: the last layer's weight with the second layer's input
    // gradient, the second's with the first's, and the first's alone.
    assert_eq!(
        launches(&alone_profile, "matmul/"),
        5,
        "{:#?}",
        alone_profile.kernels
    );
    assert_eq!(launches(&profile, "matmul/"), 3, "{:#?}", profile.kernels);
}
