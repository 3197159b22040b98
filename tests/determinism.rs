//! The same seed gives bitwise-identical random tensors on the CPU and the GPU, and the
//! CPU backend gives bitwise-identical results on any number of threads.

mod common;

use kiln::{Conv2dOptions, DType, Device, Rng, Tensor};

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

#[test]
fn rand_randn_bernoulli_dropout_agree_bitwise() {
    let Some(gpu) = common::gpu() else { return };
    let cpu = Device::cpu();
    for seed in [0u64, 42, u64::MAX - 3] {
        let draw = |device: &Device| {
            let mut rng = Rng::new(seed);
            let u = Tensor::rand([1000, 1003], DType::F32, device, &mut rng).unwrap();
            let n = Tensor::randn([333, 7], DType::F32, device, &mut rng).unwrap();
            let b = Tensor::bernoulli([4099], 0.3, DType::F32, device, &mut rng).unwrap();
            let x = Tensor::ones([64, 65], DType::F32, device).unwrap();
            let d = x.dropout(0.25, true, &mut rng).unwrap();
            [u, n, b, d]
        };
        let (on_cpu, on_gpu) = (draw(&cpu), draw(&gpu));
        for (name, (c, g)) in ["rand", "randn", "bernoulli", "dropout"]
            .iter()
            .zip(on_cpu.iter().zip(&on_gpu))
        {
            assert!(
                bits(c) == bits(g),
                "{name} with seed {seed} differs between cpu and gpu"
            );
        }
        // The draws are not degenerate.
        let u = on_cpu[0].to_vec::<f32>().unwrap();
        let mean = u.iter().map(|&v| v as f64).sum::<f64>() / u.len() as f64;
        assert!(
            (mean - 0.5).abs() < 0.01 && u.iter().all(|&v| (0.0..1.0).contains(&v)),
            "uniform mean {mean}"
        );
        let kept = on_cpu[2]
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .filter(|&&v| v == 1.0)
            .count() as f64
            / 4099.0;
        assert!((kept - 0.3).abs() < 0.03, "bernoulli rate {kept}");
    }
}

#[test]
fn consecutive_draws_differ_and_seeds_replay() {
    let cpu = Device::cpu();
    let mut rng = Rng::new(7);
    let a = Tensor::rand([100], DType::F32, &cpu, &mut rng)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    let b = Tensor::rand([100], DType::F32, &cpu, &mut rng)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    assert_ne!(a, b);
    let again = Tensor::rand([100], DType::F32, &cpu, &mut Rng::new(7))
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(a, again);
}

/// A convolutional network's loss and gradients, and a few large elementwise and
/// matmul results, row-wise ops, reductions, cross-entropy, layer norm's backward pass,
/// broadcast, transposed and selected operands and an Adam step, on 1, 2, 3 and 8
/// threads: every bit the same. The sizes are above
/// every threshold at which the CPU backend splits work between threads (conv and
/// matmul products of millions of multiply-adds, pooling and elementwise maps over
/// 100K+ elements).
#[test]
fn cpu_results_do_not_depend_on_the_thread_count() {
    let cpu = Device::cpu();
    let mut rng = Rng::new(11);
    let x = Tensor::randn([16, 3, 28, 28], DType::F32, &cpu, &mut rng).unwrap();
    let w1 = Tensor::randn([16, 3, 5, 5], DType::F32, &cpu, &mut rng)
        .unwrap()
        .into_var()
        .unwrap();
    let w2 = Tensor::randn([32, 16, 5, 5], DType::F32, &cpu, &mut rng)
        .unwrap()
        .into_var()
        .unwrap();
    let w3 = Tensor::randn([512, 300], DType::F32, &cpu, &mut rng)
        .unwrap()
        .into_var()
        .unwrap();
    let a = Tensor::randn([700, 500], DType::F32, &cpu, &mut rng).unwrap();
    let b = Tensor::randn([500, 300], DType::F32, &cpu, &mut rng).unwrap();
    let run = || {
        let options = Conv2dOptions::default();
        let h = x.conv2d(&w1, None, options).unwrap().relu().unwrap();
        let h = h.max_pool2d((2, 2), (2, 2), (0, 0)).unwrap();
        let h = h.conv2d(&w2, None, options).unwrap().tanh().unwrap();
        let h = h
            .max_pool2d((2, 2), (2, 2), (0, 0))
            .unwrap()
            .reshape([16, 512])
            .unwrap();
        let loss = h.matmul(&w3).unwrap().square().unwrap().mean_all().unwrap();
        let grads = loss.backward().unwrap();
        let product = a
            .matmul(&b)
            .unwrap()
            .exp()
            .unwrap()
            .add(&a.matmul(&b).unwrap())
            .unwrap();
        let rows = [
            a.softmax(-1).unwrap(),
            a.log_softmax(-1).unwrap(),
            a.layer_norm(&[500], None, None, 1e-5).unwrap(),
            a.sum(&[0], false).unwrap(),
            a.max(&[1], false).unwrap(),
        ];
        let adam = kiln::OptimizerStep::Adam(kiln::AdamSpec {
            one_minus_beta1: 0.1,
            one_minus_beta2: 0.001,
            eps: 1e-8,
            step_size: 1e-3,
            inv_correction2: 10.0,
            coupled_decay: 0.0,
            decay_factor: 1.0,
        });
        let (p, states) = a
            .optimizer_update(&a.sin().unwrap(), &[&a, &a.abs().unwrap()], &adam)
            .unwrap();
        // Row-wise cross-entropy and its gradient, a broadcast operand, a transposed
        // copy and a select, each long enough to be split.
        let logits = a.matmul(&b).unwrap().into_var().unwrap();
        let targets: Vec<i32> = (0..700).map(|i| i * 37 % 300).collect();
        let targets = Tensor::from_vec(targets, [700], &cpu).unwrap();
        let ce = logits.cross_entropy_smoothed(&targets, 0.1).unwrap();
        let ce_grad = ce.backward().unwrap();
        // Layer norm's backward row kernel, and the sums over rows of its weight's and
        // bias's gradients.
        let xv = a.detach().into_var().unwrap();
        let (lw, lb) = (
            a.sum(&[0], false).unwrap().detach().into_var().unwrap(),
            a.max(&[0], false).unwrap().detach().into_var().unwrap(),
        );
        let ln = xv
            .layer_norm(&[500], Some(&lw), Some(&lb), 1e-5)
            .unwrap()
            .mul(&a)
            .unwrap()
            .mean_all()
            .unwrap();
        let ln_grads = ln.backward().unwrap();
        let more = [
            ce,
            ce_grad.get(&logits).unwrap().clone(),
            ln_grads.get(&xv).unwrap().clone(),
            ln_grads.get(&lw).unwrap().clone(),
            ln_grads.get(&lb).unwrap().clone(),
            a.add(&a.sum(&[0], false).unwrap()).unwrap(),
            a.mul(&a.sum(&[1], true).unwrap()).unwrap(),
            a.transpose(0, 1).unwrap().contiguous().unwrap(),
            a.gt_scalar(0.0)
                .unwrap()
                .where_cond(&a, &a.sin().unwrap())
                .unwrap(),
        ];
        let mut out = vec![bits(&loss), bits(&product), bits(&p)];
        out.extend(more.iter().map(bits));
        out.extend(states.iter().chain(&rows).map(bits));
        out.extend([&w1, &w2, &w3].map(|w| bits(grads.get(w).unwrap())));
        out
    };
    let on = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(run)
    };
    let one = on(1);
    for threads in [2, 3, 8] {
        assert!(on(threads) == one, "{threads} threads differ from one");
    }
}
