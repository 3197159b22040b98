//! Sequence models: the LSTM, GRU and a GPT-style transformer learn on a slice of
//! tinyshakespeare, attention respects its masks, and recurrent state carries over.

mod common;

use common::{assert_close, gpu, on, F32};
use kiln::{DType, Device, Rng, Tensor};
use kiln_nn::data::{next_token_windows, tinyshakespeare, CharVocab, DataLoader, TensorDataset};
use kiln_nn::layers::{
    CellState, Embedding, Linear, MultiheadAttention, Rnn, RnnCell, RnnKind,
    TransformerEncoderLayer,
};
use kiln_nn::module_helpers::prefixed;
use kiln_nn::optim::Adam;
use kiln_nn::train::{evaluate, fit, next_token_step, FitConfig};
use kiln_nn::{Module, ModuleExt};

/// Embedding -> body -> linear head over characters.
struct Lm {
    embedding: Embedding,
    body: Box<dyn Module>,
    head: Linear,
}

impl Module for Lm {
    fn forward(&self, ids: &Tensor) -> kiln::Result<Tensor> {
        self.head
            .forward(&self.body.forward(&self.embedding.forward(ids)?)?)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = prefixed("embedding", self.embedding.named_parameters());
        p.extend(prefixed("body", self.body.named_parameters()));
        p.extend(prefixed("head", self.head.named_parameters()));
        p
    }
}

/// The first 20,000 characters as windows of 32.
fn slice() -> (TensorDataset, usize) {
    let text = &tinyshakespeare()[..20_000];
    let vocab = CharVocab::from_text(tinyshakespeare());
    let ids = vocab.encode(text).unwrap();
    let data = next_token_windows(&ids, 32).unwrap();
    (data, vocab.len())
}

fn learns(name: &str, body: impl Module + 'static, embed: usize, out: usize) {
    let cpu = Device::cpu();
    let (data, vocab) = slice();
    let mut rng = Rng::new(3);
    let model = Lm {
        embedding: Embedding::new(vocab, embed, &cpu, &mut rng).unwrap(),
        body: Box::new(body),
        head: Linear::new(out, vocab, &cpu, &mut rng).unwrap(),
    };
    let loader = DataLoader::new(&data, 32, &cpu).unwrap().shuffled(0);
    let (before, _) = evaluate(&model, &loader, &next_token_step).unwrap();
    let mut opt = Adam::new(model.named_parameters(), 3e-3);
    let config = FitConfig {
        epochs: 3,
        early_stopping: None,
        verbose: false,
        max_seconds: None,
        divergence_factor: None,
        check_inputs: false,
        checkpoint_dir: None,
        resume: None,
        data_parallel: None,
        callbacks: Vec::new(),
        clip_grad_norm: None,
    };
    fit(
        &model,
        &mut opt,
        None,
        &loader,
        None,
        &next_token_step,
        &config,
    )
    .unwrap();
    let (after, _) = evaluate(&model, &loader, &next_token_step).unwrap();
    // From uniform guessing (ln 65 = 4.17 nats) to below 3 nats: letter frequencies and more.
    assert!(
        before > 3.9 && after < 3.0,
        "{name}: loss {before} -> {after}"
    );
}

#[test]
fn lstm_learns_characters() {
    let cpu = Device::cpu();
    learns(
        "lstm",
        Rnn::lstm(16, 64, 1, &cpu, &mut Rng::new(1))
            .unwrap()
            .batch_first(true),
        16,
        64,
    );
}

#[test]
fn gru_learns_characters() {
    let cpu = Device::cpu();
    learns(
        "gru",
        Rnn::gru(16, 64, 2, &cpu, &mut Rng::new(1))
            .unwrap()
            .batch_first(true),
        16,
        64,
    );
}

#[test]
fn gpt_block_learns_characters() {
    let cpu = Device::cpu();
    learns(
        "transformer",
        TransformerEncoderLayer::gpt_block(32, 4, 0.0, &cpu, &mut Rng::new(1)).unwrap(),
        32,
        32,
    );
}

#[test]
fn causal_attention_never_looks_ahead() {
    let cpu = Device::cpu();
    let mut rng = Rng::new(4);
    let block = TransformerEncoderLayer::gpt_block(16, 2, 0.0, &cpu, &mut rng).unwrap();
    let x = Tensor::randn([2, 7, 16], DType::F32, &cpu, &mut rng).unwrap();
    // Change only the last three positions: outputs before them must not move.
    let changed = Tensor::cat(
        &[
            x.narrow(1, 0, 4).unwrap(),
            Tensor::randn([2, 3, 16], DType::F32, &cpu, &mut rng).unwrap(),
        ],
        1,
    )
    .unwrap();
    let (a, b) = (block.forward(&x).unwrap(), block.forward(&changed).unwrap());
    let prefix = |t: &Tensor| t.narrow(1, 0, 4).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(prefix(&a), prefix(&b));
    assert_ne!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
}

#[test]
fn padded_keys_are_ignored() {
    let cpu = Device::cpu();
    let mut rng = Rng::new(5);
    let attn = MultiheadAttention::new(8, 2, &cpu, &mut rng)
        .unwrap()
        .batch_first(true);
    let x = Tensor::randn([1, 5, 8], DType::F32, &cpu, &mut rng).unwrap();
    let pad = Tensor::from_vec(vec![0i32, 0, 0, 1, 1], [1, 5], &cpu).unwrap();
    let changed = Tensor::cat(
        &[
            x.narrow(1, 0, 3).unwrap(),
            Tensor::randn([1, 2, 8], DType::F32, &cpu, &mut rng).unwrap(),
        ],
        1,
    )
    .unwrap();
    let first = |t: &Tensor| {
        attn.attend(t, false, Some(&pad))
            .unwrap()
            .narrow(1, 0, 3)
            .unwrap()
            .to_vec::<f32>()
            .unwrap()
    };
    let (a, b) = (first(&x), first(&changed));
    assert!(
        a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-6),
        "padded keys changed the output"
    );
    let names: Vec<String> = attn
        .named_parameters()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        names,
        [
            "in_proj_weight",
            "in_proj_bias",
            "out_proj.weight",
            "out_proj.bias"
        ]
    );
}

#[test]
fn recurrent_state_carries_over() {
    let cpu = Device::cpu();
    let mut rng = Rng::new(6);
    for kind in [RnnKind::Tanh, RnnKind::Lstm, RnnKind::Gru] {
        let rnn = Rnn::new(kind, 3, 5, 2, &cpu, &mut rng)
            .unwrap()
            .batch_first(true);
        let x = Tensor::randn([2, 6, 3], DType::F32, &cpu, &mut rng).unwrap();
        // Running the whole sequence equals running its halves with the state handed on.
        let (whole, _) = rnn.forward_with_state(&x, None).unwrap();
        let (first, state) = rnn
            .forward_with_state(&x.narrow(1, 0, 3).unwrap(), None)
            .unwrap();
        let (second, _) = rnn
            .forward_with_state(&x.narrow(1, 3, 3).unwrap(), Some(&state))
            .unwrap();
        let joined = Tensor::cat(&[first, second], 1)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        let whole = whole.to_vec::<f32>().unwrap();
        assert!(
            joined.iter().zip(&whole).all(|(a, b)| (a - b).abs() < 1e-6),
            "{kind:?}"
        );
        assert_eq!(state.h.len(), 2);
        assert_eq!(state.c.is_some(), kind == RnnKind::Lstm);
        assert_eq!(rnn.named_parameters()[0].0, "weight_ih_l0");
        // gates * hidden * (inputs + hidden + two biases), for an input layer and a stacked one.
        let gates = match kind {
            RnnKind::Tanh => 1,
            RnnKind::Lstm => 4,
            RnnKind::Gru => 3,
        };
        assert_eq!(
            rnn.num_parameters(),
            gates * 5 * (3 + 5 + 2) + gates * 5 * (5 + 5 + 2),
            "{kind:?}"
        );
    }
}

#[test]
fn cells_stepped_by_hand_give_the_sequence_layer_and_time_comes_first_by_default() {
    let cpu = Device::cpu();
    let mut rng = Rng::new(11);
    let mut devices = vec![cpu.clone()];
    devices.extend(gpu());
    for kind in [RnnKind::Tanh, RnnKind::Lstm, RnnKind::Gru] {
        // PyTorch's default layout: [time, batch, features].
        let x_cpu = Tensor::randn([5, 2, 3], DType::F32, &cpu, &mut rng).unwrap();
        for device in &devices {
            let rnn = Rnn::new(kind, 3, 4, 1, device, &mut Rng::new(1)).unwrap();
            let cell = RnnCell::new(kind, 3, 4, device, &mut Rng::new(2)).unwrap();
            let weights = rnn.named_parameters();
            for (name, p) in cell.named_parameters() {
                let (_, w) = weights
                    .iter()
                    .find(|(n, _)| *n == format!("{name}_l0"))
                    .expect("the cell's weights are the layer's, without the suffix");
                p.set_data(w).unwrap();
            }
            let x = on(device, &x_cpu).detach().into_var().unwrap();
            let (whole, state) = rnn.forward_with_state(&x, None).unwrap();
            assert_eq!(whole.dims(), [5, 2, 4]);
            let mut s: Option<CellState> = None;
            let mut steps = Vec::new();
            for t in 0..5 {
                let xt = x.narrow(0, t, 1).unwrap().squeeze(0).unwrap();
                let next = cell.step(&xt, s.as_ref()).unwrap();
                steps.push(next.h.clone());
                s = Some(next);
            }
            let stepped = Tensor::stack(&steps, 0).unwrap();
            let label = format!("{kind:?} on {device}");
            assert_close(&label, &stepped, &whole, F32);
            let s = s.unwrap();
            assert_close(&label, &s.h, &state.h[0], F32);
            assert_eq!(s.c.is_some(), kind == RnnKind::Lstm);
            if let (Some(c), Some(cs)) = (&s.c, &state.c) {
                assert_close(&label, c, &cs[0], F32);
            }
            // And the same gradients: the layer adds the tanh and LSTM cells' hidden
            // bias to the input projections once, the cell adds it at every step.
            let r = on(
                device,
                &Tensor::randn([5, 2, 4], DType::F32, &cpu, &mut rng).unwrap(),
            );
            let gradients = |y: &Tensor| y.mul(&r)?.sum_all()?.backward();
            let (of_layer, of_cells) = (gradients(&whole).unwrap(), gradients(&stepped).unwrap());
            let grad = |g: &kiln::Gradients, t: &Tensor| g.get(t).expect("a gradient").clone();
            assert_close(&label, &grad(&of_cells, &x), &grad(&of_layer, &x), F32);
            for (name, p) in cell.named_parameters() {
                let (_, w) = weights
                    .iter()
                    .find(|(n, _)| *n == format!("{name}_l0"))
                    .unwrap();
                let what = format!("{label}: gradient of {name}");
                assert_close(&what, &grad(&of_cells, &p), &grad(&of_layer, w), F32);
            }
            // The same sequence batch-first gives the same numbers, transposed.
            let rnn_bf = Rnn::new(kind, 3, 4, 1, device, &mut Rng::new(1))
                .unwrap()
                .batch_first(true);
            let out_bf = rnn_bf.forward(&x.transpose(0, 1).unwrap()).unwrap();
            assert_close(&label, &out_bf.transpose(0, 1).unwrap(), &whole, F32);
        }
    }
    let cell = RnnCell::lstm(3, 4, &cpu, &mut rng).unwrap();
    let names: Vec<String> = cell
        .named_parameters()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]);
    assert!(cell
        .forward(&Tensor::zeros([2, 5, 3], DType::F32, &cpu).unwrap())
        .is_err());
}

#[test]
fn attention_masks_point_the_documented_way_and_causal_is_top_left() {
    use kiln_nn::functional::{scaled_dot_product_attention, AttentionMask};
    let cpu = Device::cpu();
    let mut rng = Rng::new(12);
    let mut devices = vec![cpu.clone()];
    devices.extend(gpu());
    let (q0, k0, v0) = (
        Tensor::randn([2, 3, 4], DType::F32, &cpu, &mut rng).unwrap(),
        Tensor::randn([2, 5, 4], DType::F32, &cpu, &mut rng).unwrap(),
        Tensor::randn([2, 5, 6], DType::F32, &cpu, &mut rng).unwrap(),
    );
    // Query i may see keys 0..=i (top-left causal for 3 queries over 5 keys), and key
    // 4 never: the same pairs three ways.
    let allow: Vec<f32> = (0..15).map(|p| ((p % 5) <= p / 5) as u8 as f32).collect();
    let allow = Tensor::from_vec(allow, [3, 5], &cpu).unwrap();
    let block = allow.eq_scalar(0.0).unwrap();
    let add = block.mul_scalar(-1e9).unwrap();
    // The plain formula, with the allowed pairs' softmax written out.
    let scores = q0
        .matmul(&k0.t().unwrap())
        .unwrap()
        .mul_scalar(0.5)
        .unwrap();
    let weights = scores.exp().unwrap().mul(&allow).unwrap();
    let weights = weights.div(&weights.sum(&[-1], true).unwrap()).unwrap();
    let want = weights.matmul(&v0).unwrap();
    for device in &devices {
        let (q, k, v) = (on(device, &q0), on(device, &k0), on(device, &v0));
        let (allow, block, add) = (on(device, &allow), on(device, &block), on(device, &add));
        for (label, mask, causal) in [
            ("allow", Some(AttentionMask::Allow(&allow)), false),
            ("block", Some(AttentionMask::Block(&block)), false),
            ("add", Some(AttentionMask::Add(&add)), false),
            ("causal", None, true),
        ] {
            let got = scaled_dot_product_attention(&q, &k, &v, mask, causal, None).unwrap();
            assert_eq!(got.dims(), [2, 3, 6]);
            assert_close(&format!("{label} on {device}"), &got, &want, F32);
        }
    }
    let bad = Tensor::zeros([2, 5, 3], DType::F32, &cpu).unwrap();
    assert!(scaled_dot_product_attention(&q0, &bad, &v0, None, false, None).is_err());
}

/// On a GPU set to tune attention (the default), the first attention of a shape class
/// times the fused kernels against the composed products (with the backward when a
/// gradient will be taken) and keeps the faster per class: the result and gradients
/// match the CPU whichever wins, and the decision is reused without timing again. Heads
/// the fused kernels do not take (65 features) can only be composed.
#[test]
fn autotuned_attention_matches_cpu_and_keeps_its_decisions() {
    use kiln::backend::{AttentionSplit, AttentionWay, GpuDevice};
    use kiln_nn::functional::scaled_dot_product_attention;
    if gpu().is_none() {
        return;
    }
    let gpu = GpuDevice::new().unwrap();
    gpu.use_autotune_cache(None);
    gpu.set_attention_way(AttentionWay::Autotune);
    gpu.set_attention_split(AttentionSplit::Autotune);
    let device = Device::Gpu(gpu.clone());
    let cpu = Device::cpu();
    let mut rng = Rng::new(21);
    for features in [8, 65] {
        let dims = [[2, 3, 19, features], [2, 3, 23, features], [2, 3, 23, 5]];
        let inputs = dims.map(|d| Tensor::randn(d, DType::F32, &cpu, &mut rng).unwrap());
        let g = Tensor::randn([2, 3, 19, 5], DType::F32, &cpu, &mut rng).unwrap();
        for backward in [false, true] {
            let run = |device: &Device| {
                let [q, k, v] = inputs.each_ref().map(|t| match backward {
                    true => on(device, t).into_var().unwrap(),
                    false => on(device, t),
                });
                let out = scaled_dot_product_attention(&q, &k, &v, None, true, None).unwrap();
                let mut got = vec![out.clone()];
                if backward {
                    let grads = out.backward_from(&on(device, &g)).unwrap();
                    got.extend([&q, &k, &v].map(|t| grads.get(t).unwrap().clone()));
                }
                got
            };
            let label = format!("{features} features, backward {backward}");
            for (got, want) in run(&device).iter().zip(&run(&cpu)) {
                assert_close(&label, &got.to_device(&cpu).unwrap(), want, F32);
            }
            let pass = if backward { "backward" } else { "forward" };
            let decisions = gpu.autotune_decisions();
            let (class, way) = decisions
                .iter()
                .find(|(c, _)| c.contains(&format!(" d{features} ")) && c.ends_with(pass))
                .unwrap_or_else(|| panic!("{label}: no decision in {decisions:?}"));
            assert!(class.starts_with("attention f32 h8 q32 k32 "), "{class}");
            if features == 65 {
                assert_eq!(way, "composed", "{class}");
            }
            // The fused kernels, timed, were tuned whole or split for the class; heads
            // they refuse never reach them.
            let split = decisions.get(&format!("split {class}"));
            match features {
                65 => assert_eq!(split, None),
                _ => assert!(
                    split.is_some_and(|s| AttentionSplit::from_name(s).is_some()),
                    "split {class}: {split:?}"
                ),
            }
            let again = |_| -> kiln::Result<()> { panic!("{class} tuned again") };
            let kept = gpu.attention_way_for(class, again).unwrap();
            assert_eq!(kept.name(), way);
        }
    }
    assert_eq!(gpu.autotune_decisions().len(), 6);
}

#[test]
fn cross_attention_reads_only_the_keys_its_masks_leave() {
    use kiln_nn::functional::AttentionMask;
    use kiln_nn::layers::AttentionOptions;
    let cpu = Device::cpu();
    let mut rng = Rng::new(13);
    let attn = MultiheadAttention::new(8, 2, &cpu, &mut rng).unwrap();
    // Time first: 3 queries and 6 memory positions, batch of 2.
    let query = Tensor::randn([3, 2, 8], DType::F32, &cpu, &mut rng).unwrap();
    let memory = Tensor::randn([6, 2, 8], DType::F32, &cpu, &mut rng).unwrap();
    // Position 5 is padding in both sequences; the mask hides position 4 from everyone.
    let pad = Tensor::from_vec(vec![0i32, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1], [2, 6], &cpu).unwrap();
    let mut hide = vec![0.0f32; 18];
    (0..3).for_each(|i| hide[i * 6 + 4] = 1.0);
    let hide = Tensor::from_vec(hide, [3, 6], &cpu).unwrap();
    let options = AttentionOptions {
        key_padding_mask: Some(&pad),
        attn_mask: Some(AttentionMask::Block(&hide)),
        is_causal: false,
    };
    let out = attn.attention(&query, &memory, &memory, &options).unwrap();
    assert_eq!(out.dims(), [3, 2, 8]);
    let changed = Tensor::cat(
        &[
            memory.narrow(0, 0, 4).unwrap(),
            Tensor::randn([2, 2, 8], DType::F32, &cpu, &mut rng).unwrap(),
        ],
        0,
    )
    .unwrap();
    let again = attn
        .attention(&query, &changed, &changed, &options)
        .unwrap();
    assert_close("hidden keys changed", &again, &out, F32);
    let unmasked = attn
        .attention(&query, &changed, &changed, &AttentionOptions::default())
        .unwrap();
    assert!(
        unmasked
            .sub(&out)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_vec::<f32>()
            .unwrap()[0]
            > 1e-3,
        "without the masks those keys matter"
    );
    // Batch first gives the same numbers; a mask of the wrong shape is an error.
    let bf = MultiheadAttention::new(8, 2, &cpu, &mut Rng::new(13))
        .unwrap()
        .batch_first(true);
    let t = |x: &Tensor| x.transpose(0, 1).unwrap();
    let out_bf = bf
        .attention(&t(&query), &t(&memory), &t(&memory), &options)
        .unwrap();
    assert_close("batch first", &t(&out_bf), &out, F32);
    let wrong = AttentionOptions {
        attn_mask: Some(AttentionMask::Block(&pad)),
        ..AttentionOptions::default()
    };
    assert!(attn.attention(&query, &memory, &memory, &wrong).is_err());
}

#[test]
fn next_token_windows_pair_each_window_with_the_ids_one_on() {
    let ids: Vec<i32> = (0..11).collect();
    let data = next_token_windows(&ids, 3).unwrap();
    // (11 - 1) / 3 = 3 whole windows; id 9 and 10 are left over as inputs.
    assert_eq!(
        data.inputs.to_vec::<i32>().unwrap(),
        [0, 1, 2, 3, 4, 5, 6, 7, 8]
    );
    assert_eq!(
        data.targets.to_vec::<i32>().unwrap(),
        [1, 2, 3, 4, 5, 6, 7, 8, 9]
    );
    assert_eq!(data.inputs.dims(), [3, 3]);
    assert!(next_token_windows(&ids[..3], 3).is_err());
    assert!(next_token_windows(&ids, 0).is_err());
}
