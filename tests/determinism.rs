//! The same seed gives bitwise-identical random tensors on the CPU and the GPU.

mod common;

use kiln::{DType, Device, Rng, Tensor};

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
