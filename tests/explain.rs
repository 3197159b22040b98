//! Attribution methods (`kiln_nn::explain`) against what can be worked out by hand, on
//! the CPU and the GPU: Integrated Gradients' completeness and its exact value for a
//! linear model, Grad-CAM on a hand-computed case, perturbations of a linear model,
//! SmoothGrad without noise, and the sanity-check helpers.

mod common;

use common::gpu;
use kiln::{DType, Device, Result, Tensor};
use kiln_nn::explain::{self, Occlusion, SmoothGrad};

fn devices() -> Vec<Device> {
    let mut out = vec![Device::cpu()];
    out.extend(gpu());
    out
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec().unwrap()
}

fn assert_close(label: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{label}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{label}: element {i}: got {g}, want {w}"
        );
    }
}

/// A two-layer tanh network, 6 features to 3 classes, with fixed random weights.
fn network(device: &Device, rng: &mut kiln::Rng) -> impl Fn(&Tensor) -> Result<Tensor> {
    let w1 = Tensor::randn([6, 5], DType::F32, &Device::cpu(), rng).unwrap();
    let w2 = Tensor::randn([5, 3], DType::F32, &Device::cpu(), rng).unwrap();
    let (w1, w2) = (w1.to_device(device).unwrap(), w2.to_device(device).unwrap());
    move |x: &Tensor| x.matmul(&w1)?.tanh()?.matmul(&w2)
}

/// Integrated Gradients' attributions sum to f(x) - f(baseline), to within the error
/// of 64 midpoint steps, on both devices; the GPU's attributions match the CPU's.
#[test]
fn integrated_gradients_are_complete_on_both_devices() {
    let mut rng = common::rng();
    let x = Tensor::randn([4, 6], DType::F32, &Device::cpu(), &mut rng).unwrap();
    let baseline = Tensor::randn([4, 6], DType::F32, &Device::cpu(), &mut rng).unwrap();
    let seed = rng.next_seed();
    let classes = [0, 2, 1, 2];
    let mut results = Vec::new();
    for device in devices() {
        let f = network(&device, &mut kiln::Rng::new(seed));
        let (x, b) = (
            x.to_device(&device).unwrap(),
            baseline.to_device(&device).unwrap(),
        );
        let ig = explain::integrated_gradients(&f, &x, &classes, Some(&b), 64).unwrap();
        for (e, c) in ig.completeness_error.iter().zip(&ig.score_change) {
            assert!(
                e.abs() <= 2e-3 * (1.0 + c.abs()),
                "{device:?}: completeness error {e} for a change of {c}"
            );
        }
        results.push(values(&ig.attribution));
    }
    if results.len() == 2 {
        assert_close("gpu against cpu", &results[1], &results[0], 1e-4);
    }
}

/// For a linear model every method has a closed form: the gradient is the class's
/// weights, IG (from any baseline) `(x - b) w`, occlusion of one pixel `x w`, and
/// ablating feature j `(x_j - b_j) w_j`.
#[test]
fn a_linear_model_gives_the_closed_forms() {
    let mut rng = common::rng();
    let cpu = Device::cpu();
    let w = Tensor::randn([2, 4], DType::F32, &cpu, &mut rng).unwrap();
    let x = Tensor::randn([3, 1, 2, 2], DType::F32, &cpu, &mut rng).unwrap();
    let base = Tensor::randn([3, 1, 2, 2], DType::F32, &cpu, &mut rng).unwrap();
    let classes = [1, 0, 1];
    let (wv, xv, bv) = (values(&w), values(&x), values(&base));
    let weight = |i: usize, j: usize| wv[classes[i] * 4 + j];
    let want_grad: Vec<f64> = (0..12).map(|k| weight(k / 4, k % 4)).collect();
    let want_ig: Vec<f64> = (0..12)
        .map(|k| (xv[k] - bv[k]) * weight(k / 4, k % 4))
        .collect();
    let want_occlusion: Vec<f64> = (0..12).map(|k| xv[k] * weight(k / 4, k % 4)).collect();
    for device in devices() {
        let wd = w.to_device(&device).unwrap();
        let f = |x: &Tensor| x.reshape([x.dims()[0], 4])?.matmul(&wd.t()?);
        let (xd, bd) = (
            x.to_device(&device).unwrap(),
            base.to_device(&device).unwrap(),
        );
        let label = |m: &str| format!("{m} on {device:?}");
        let grad = explain::gradient(&f, &xd, &classes).unwrap();
        assert_close(&label("gradient"), &values(&grad), &want_grad, 1e-6);
        let ig = explain::integrated_gradients(&f, &xd, &classes, Some(&bd), 3).unwrap();
        assert_close(
            &label("integrated gradients"),
            &values(&ig.attribution),
            &want_ig,
            1e-5,
        );
        let one_pixel = Occlusion {
            size: 1,
            stride: 1,
            fill: 0.0,
        };
        let occluded = explain::occlusion(&f, &xd, &classes, one_pixel).unwrap();
        assert_close(
            &label("occlusion"),
            &values(&occluded),
            &want_occlusion,
            1e-5,
        );
        let rows = xd.reshape([3, 4]).unwrap();
        let g = |x: &Tensor| x.matmul(&wd.t()?);
        let ablated = explain::feature_ablation(&g, &rows, &classes, &[0.5; 4]).unwrap();
        let want: Vec<f64> = (0..12)
            .map(|k| (xv[k] - 0.5) * weight(k / 4, k % 4))
            .collect();
        assert_close(&label("feature ablation"), &values(&ablated), &want, 1e-5);
    }
}

/// Grad-CAM by hand: maps A = [[0, 1], [2, 3]] and [[1, 1], [0, 0]], a head whose
/// class-0 score is sum(A_0) - 2 sum(A_1), so the channel weights are the gradients'
/// means, 1 and -2: relu(A_0 - 2 A_1) = [[0, 0], [2, 3]], then resized from 2x2 to 4x4
/// as PyTorch's bilinear `interpolate` does.
#[test]
fn grad_cam_matches_a_hand_computed_case() {
    let maps = vec![0.0f32, 1.0, 2.0, 3.0, 1.0, 1.0, 0.0, 0.0];
    let head_weights = vec![1.0f32, 1.0, 1.0, 1.0, -2.0, -2.0, -2.0, -2.0];
    let want = [
        0.0, 0.0, 0.0, 0.0, //
        0.5, 0.5625, 0.6875, 0.75, //
        1.5, 1.6875, 2.0625, 2.25, //
        2.0, 2.25, 2.75, 3.0,
    ];
    for device in devices() {
        let a = Tensor::from_vec(maps.clone(), [1, 2, 2, 2], &device).unwrap();
        let w = Tensor::from_vec(head_weights.clone(), [8, 1], &device).unwrap();
        let image = Tensor::zeros([1, 1, 4, 4], DType::F32, &device).unwrap();
        let features = |_: &Tensor| Ok(a.clone());
        let head = |m: &Tensor| m.reshape([1, 8])?.matmul(&w);
        let cam = explain::grad_cam(&features, &head, &image, &[0]).unwrap();
        assert_eq!(cam.dims(), [1, 4, 4]);
        assert_close(
            &format!("grad-cam on {device:?}"),
            &values(&cam),
            &want,
            1e-6,
        );
        // Feature maps with no pixels are refused, not resized.
        let none = Tensor::zeros([1, 2, 0, 2], DType::F32, &device).unwrap();
        let empty = |_: &Tensor| Ok(none.clone());
        let total = |m: &Tensor| m.sum(&[1, 2, 3], false)?.reshape([1, 1]);
        let refused = explain::grad_cam(&empty, &total, &image, &[0]).unwrap_err();
        assert!(refused.to_string().contains("h, w > 0"), "{refused}");
    }
}

/// SmoothGrad without noise is the gradient; with noise it is the mean of the noisy
/// gradients (for a linear model, the gradient again).
#[test]
fn smoothgrad_without_noise_is_the_gradient() {
    let mut rng = common::rng();
    let x = Tensor::randn([2, 6], DType::F32, &Device::cpu(), &mut rng).unwrap();
    let seed = rng.next_seed();
    for device in devices() {
        let f = network(&device, &mut kiln::Rng::new(seed));
        let xd = x.to_device(&device).unwrap();
        let plain = explain::gradient(&f, &xd, &[1, 2]).unwrap();
        let quiet = SmoothGrad {
            samples: 3,
            noise: 0.0,
            seed: 1,
        };
        let smooth = explain::smoothgrad(&f, &xd, &[1, 2], quiet).unwrap();
        assert_close(
            &format!("{device:?}"),
            &values(&smooth),
            &values(&plain),
            1e-6,
        );
        let noisy = SmoothGrad {
            noise: 0.3,
            ..quiet
        };
        let smooth = explain::smoothgrad(&f, &xd, &[1, 2], noisy).unwrap();
        assert_ne!(
            values(&smooth),
            values(&plain),
            "{device:?}: the noise changed nothing"
        );
    }
}

/// The sanity-check helpers: rank correlation, deletion order and curve, area.
#[test]
fn sanity_check_helpers() {
    let a = [0.1f32, 0.5, 0.3, 0.9];
    assert!((explain::spearman(&a, &a).unwrap() - 1.0).abs() < 1e-12);
    let reversed: Vec<f32> = a.iter().map(|v| -v).collect();
    assert!((explain::spearman(&a, &reversed).unwrap() + 1.0).abs() < 1e-12);
    assert!(explain::spearman(&a, &a[..3]).is_err());
    assert_eq!(explain::by_attribution(&a), vec![3, 1, 2, 0]);
    assert_eq!(explain::mean_area(&[1.0, 0.0]), 0.5);
    assert_eq!(explain::mean_area(&[1.0, 1.0, 0.0]), 0.75);
    let mut order = explain::random_order(50, 3).unwrap();
    order.sort();
    assert_eq!(order, (0..50).collect::<Vec<_>>());
    // A model whose class-0 logit is the sum of the input: removing the largest
    // elements first lowers its probability faster than removing the smallest first.
    let cpu = Device::cpu();
    let x = Tensor::from_vec(vec![3.0f32, 0.0, 1.0, 2.0], [1, 4], &cpu).unwrap();
    let f = |x: &Tensor| Tensor::cat(&[x.sum(&[1], true)?, x.zeros_like()?.sum(&[1], true)?], 1);
    let down = explain::deletion_curve(&f, &x, 0, &[0, 3, 2, 1], 4, 0.0).unwrap();
    let up = explain::deletion_curve(&f, &x, 0, &[1, 2, 3, 0], 4, 0.0).unwrap();
    assert_eq!(down.len(), 5);
    assert!(explain::mean_area(&down) < explain::mean_area(&up));
    assert!(explain::deletion_curve(&f, &x, 0, &[0, 0, 1, 2], 4, 0.0).is_err());
}

/// A text shaded by attribution: every character in the HTML (escaped, a newline
/// shown), its value on hover; plain text marks the strongest characters; lengths
/// that disagree are refused.
#[test]
fn text_attributions_render_every_character() {
    let chars: Vec<char> = "a<b\nc".chars().collect();
    let attribution = [0.0f32, -1.0, 2.0, 0.1, 1.0];
    let html = explain::text_attribution_html(&chars, &attribution, "t & t").unwrap();
    assert_eq!(html.matches("<span").count(), chars.len());
    assert!(html.contains("&lt;") && html.contains("t &amp; t") && html.contains("↵"));
    assert!(html.contains("title=\"+2.0000\""));
    let plain = explain::text_attribution_plain(&chars, &attribution).unwrap();
    let lines: Vec<&str> = plain.lines().collect();
    assert_eq!(lines, ["a<b↵c", " -# +"]);
    assert!(explain::text_attribution_plain(&chars, &attribution[..4]).is_err());
    let path = std::env::temp_dir().join(format!("kiln-text-{}.png", std::process::id()));
    explain::save_text_attribution_png(&chars, &attribution, "t", &path).unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() > 0);
    std::fs::remove_file(&path).unwrap();
}

/// A small classifier initialised from `seed` and trained for `steps` full-batch Adam
/// steps on `x` and `labels`.
fn trained(seed: u64, steps: usize, x: &Tensor, labels: &Tensor) -> kiln_nn::layers::Sequential {
    use kiln_nn::layers::{Activation, Linear, Sequential};
    use kiln_nn::optim::{Adam, Optimizer};
    use kiln_nn::Module;
    let cpu = Device::cpu();
    let mut rng = kiln::Rng::new(seed);
    let model = Sequential::new()
        .append(Linear::new(10, 16, &cpu, &mut rng).unwrap())
        .append(Activation::ReLU)
        .append(Linear::new(16, 2, &cpu, &mut rng).unwrap());
    let mut opt = Adam::new(model.named_parameters(), 0.02);
    for _ in 0..steps {
        let loss = model.forward(x).unwrap().cross_entropy(labels).unwrap();
        opt.step(&loss.backward().unwrap()).unwrap();
    }
    model
}

/// The sanity checks on a model whose answer is known: a classifier trained on rows
/// whose class is sign(x0 + x1 - x2) (seven more features are noise). Deleting
/// features in Integrated Gradients' order drops the class's probability faster than
/// a random order, and its maps agree less with a re-initialised model's than with
/// those of the same classifier trained from another start.
#[test]
fn sanity_checks_separate_a_trained_model() {
    use kiln_nn::Module;
    let cpu = Device::cpu();
    let mut rng = kiln::Rng::new(7);
    let x = Tensor::randn([256, 10], DType::F32, &cpu, &mut rng).unwrap();
    let xv = x.to_vec::<f32>().unwrap();
    let labels: Vec<i32> = xv
        .chunks(10)
        .map(|r| i32::from(r[0] + r[1] - r[2] > 0.0))
        .collect();
    let labels = Tensor::from_vec(labels, [256], &cpu).unwrap();
    let (a, b) = (trained(1, 150, &x, &labels), trained(2, 150, &x, &labels));
    let random = trained(3, 0, &x, &labels);
    let rows = x.narrow(0, 0, 40).unwrap();
    let classes: Vec<usize> = labels.to_vec::<i32>().unwrap()[..40]
        .iter()
        .map(|&c| c as usize)
        .collect();
    let ig = |m: &kiln_nn::layers::Sequential| -> Vec<f32> {
        let f = |x: &Tensor| m.forward(x);
        let ig = explain::integrated_gradients(&f, &rows, &classes, None, 32).unwrap();
        ig.attribution.to_vec::<f32>().unwrap()
    };
    let (ig_a, ig_b, ig_random) = (ig(&a), ig(&b), ig(&random));
    let f = |x: &Tensor| a.forward(x);
    let (mut wins, mut rho_trained, mut rho_random) = (0, 0.0, 0.0);
    for (i, &class) in classes.iter().enumerate() {
        let at = i * 10..(i + 1) * 10;
        let row = rows.narrow(0, i, 1).unwrap();
        let area = |order: &[usize]| {
            explain::mean_area(&explain::deletion_curve(&f, &row, class, order, 10, 0.0).unwrap())
        };
        let by_ig = area(&explain::by_attribution(&ig_a[at.clone()]));
        let by_chance = area(&explain::random_order(10, i as u64).unwrap());
        wins += usize::from(by_ig < by_chance);
        let abs = |v: &[f32]| v.iter().map(|a| a.abs()).collect::<Vec<_>>();
        rho_trained +=
            explain::spearman(&abs(&ig_a[at.clone()]), &abs(&ig_b[at.clone()])).unwrap() / 40.0;
        rho_random +=
            explain::spearman(&abs(&ig_a[at.clone()]), &abs(&ig_random[at])).unwrap() / 40.0;
    }
    assert!(
        wins >= 32,
        "IG's deletion order beat a random one on {wins} of 40 rows"
    );
    assert!(
        rho_random + 0.2 < rho_trained,
        "rank correlation with a re-initialised model {rho_random:.3}, with another trained one {rho_trained:.3}"
    );
}

/// Feature importance: mean |attribution| per feature over the rows, largest first,
/// drawn as bars; rows of the wrong width are refused.
#[test]
fn feature_importance_ranks_by_mean_magnitude() {
    let names: Vec<String> = ["age", "dose", "weight"].map(String::from).to_vec();
    let attribution = [0.1f32, -2.0, 0.5, -0.3, 1.0, -0.5];
    let ranked = explain::feature_importance(&names, &attribution).unwrap();
    let want = [("dose", 1.5), ("weight", 0.5), ("age", 0.2)];
    for ((name, value), (want_name, want_value)) in ranked.iter().zip(want) {
        assert_eq!(name, want_name);
        assert!((value - want_value).abs() < 1e-6, "{name}: {value}");
    }
    assert!(explain::feature_importance(&names, &attribution[..5]).is_err());
    let path = std::env::temp_dir().join(format!("kiln-bars-{}.png", std::process::id()));
    explain::save_feature_bars(&ranked, "importance", &path).unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() > 0);
    std::fs::remove_file(&path).unwrap();
}
