//! PyTorch interop: state dicts PyTorch wrote with safetensors load by name into the
//! matching kiln-nn modules and give PyTorch's outputs, on both devices; the functional
//! ops with PyTorch's options (attention masks, cross-entropy's weight, ignore_index
//! and reductions, dilated max pooling) match it; NumPy's .npy/.npz files round-trip.
//! The fixtures are written once by tests/fixtures/pytorch/make_fixtures.py.

mod common;

use common::{assert_close, gpu, on, Tol, EXACT, F32, F32_MATH};
use kiln::{Conv2dOptions, DType, Device, Rng, Tensor};
use kiln_nn::data::{read_npy, read_npz, write_npy, write_npz};
use kiln_nn::functional::{scaled_dot_product_attention, AttentionMask};
use kiln_nn::layers::{
    AttentionOptions, BatchNorm, CellState, Conv2d, ConvTranspose2d, Embedding, LayerNorm, Linear,
    MaxPool2d, MultiheadAttention, Rnn, RnnCell, RnnKind, TransformerEncoderLayer,
};
use kiln_nn::loss::{cross_entropy_with, CrossEntropyOptions, Reduction};
use kiln_nn::train::{load_pytorch, restore, Checkpoint};
use kiln_nn::{Module, ModuleExt};
use std::collections::HashMap;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../tests/fixtures/pytorch/{name}"))
}

/// One fixture: PyTorch's state dict, inputs and outputs.
struct Case {
    state: Checkpoint,
    inputs: HashMap<String, Tensor>,
    outputs: HashMap<String, Tensor>,
}

impl Case {
    fn load(name: &str) -> Case {
        let file = load_pytorch(fixture(&format!("{name}.safetensors"))).unwrap();
        let part = |prefix: &str| -> HashMap<String, Tensor> {
            file.tensors
                .iter()
                .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
                .collect()
        };
        Case {
            state: Checkpoint {
                tensors: part("state."),
                metadata: HashMap::new(),
            },
            inputs: part("in."),
            outputs: part("out."),
        }
    }

    /// Loads the state into `module`, strictly: every name PyTorch wrote, no other.
    fn restore(&self, module: &dyn Module) {
        restore(&self.state, &module.state_dict()).unwrap();
        module.eval();
    }

    fn input(&self, name: &str, device: &Device) -> Tensor {
        on(device, &self.inputs[name])
    }

    fn check(&self, label: &str, output: &str, got: &Tensor, tol: Tol) {
        assert_close(
            label,
            &got.to_device(&Device::cpu()).unwrap(),
            &self.outputs[output],
            tol,
        );
    }
}

fn devices() -> Vec<Device> {
    let mut d = vec![Device::cpu()];
    d.extend(gpu());
    d
}

fn rng() -> Rng {
    Rng::new(99)
}

#[test]
fn linear_convolutions_and_norms_load_pytorch_state_dicts() {
    for device in &devices() {
        let c = Case::load("linear");
        let m = Linear::new(5, 3, device, &mut rng()).unwrap();
        c.restore(&m);
        c.check(
            "linear",
            "y",
            &m.forward(&c.input("x", device)).unwrap(),
            F32,
        );

        let c = Case::load("conv2d");
        let options = Conv2dOptions {
            stride: (2, 2),
            padding: (1, 1),
            dilation: (1, 2),
            groups: 1,
        };
        let m = Conv2d::new(3, 4, (3, 2), options, device, &mut rng()).unwrap();
        c.restore(&m);
        c.check(
            "conv2d",
            "y",
            &m.forward(&c.input("x", device)).unwrap(),
            F32,
        );

        let c = Case::load("conv_transpose2d");
        let options = Conv2dOptions {
            stride: (2, 2),
            padding: (1, 1),
            ..Conv2dOptions::default()
        };
        let m = ConvTranspose2d::new(4, 2, (3, 3), options, device, &mut rng())
            .unwrap()
            .output_padding((1, 1));
        c.restore(&m);
        let y = m.forward(&c.input("x", device)).unwrap();
        c.check("conv_transpose2d", "y", &y, F32);

        let c = Case::load("batchnorm2d");
        let m = BatchNorm::new(3, device).unwrap();
        c.restore(&m);
        let x = c.input("x", device);
        c.check("batchnorm eval", "eval", &m.forward(&x).unwrap(), F32);
        m.set_training(true);
        c.check("batchnorm train", "train", &m.forward(&x).unwrap(), F32);
        c.check("running mean", "running_mean_after", &m.running_mean, F32);
        c.check("running var", "running_var_after", &m.running_var, F32);

        let c = Case::load("layernorm");
        let m = LayerNorm::new(&[6], device).unwrap();
        c.restore(&m);
        c.check(
            "layernorm",
            "y",
            &m.forward(&c.input("x", device)).unwrap(),
            F32,
        );

        let c = Case::load("embedding");
        let m = Embedding::new(10, 4, device, &mut rng()).unwrap();
        c.restore(&m);
        c.check(
            "embedding",
            "y",
            &m.forward(&c.input("ids", device)).unwrap(),
            EXACT,
        );
    }
}

#[test]
fn recurrent_layers_and_cells_give_pytorchs_outputs() {
    for device in &devices() {
        let c = Case::load("lstm");
        let m = Rnn::lstm(3, 4, 2, device, &mut rng()).unwrap();
        c.restore(&m);
        let (y, state) = m.forward_with_state(&c.input("x", device), None).unwrap();
        c.check("lstm", "y", &y, F32_MATH);
        c.check(
            "lstm h",
            "h",
            &Tensor::stack(&state.h, 0).unwrap(),
            F32_MATH,
        );
        c.check(
            "lstm c",
            "c",
            &Tensor::stack(&state.c.unwrap(), 0).unwrap(),
            F32_MATH,
        );

        let c = Case::load("gru");
        let m = Rnn::gru(3, 4, 1, device, &mut rng())
            .unwrap()
            .batch_first(true);
        c.restore(&m);
        let (y, state) = m.forward_with_state(&c.input("x", device), None).unwrap();
        c.check("gru", "y", &y, F32_MATH);
        c.check("gru h", "h", &Tensor::stack(&state.h, 0).unwrap(), F32_MATH);

        let c = Case::load("lstm_cell");
        let m = RnnCell::lstm(3, 4, device, &mut rng()).unwrap();
        c.restore(&m);
        let start = CellState {
            h: c.input("h", device),
            c: Some(c.input("c", device)),
        };
        let next = m.step(&c.input("x", device), Some(&start)).unwrap();
        c.check("lstm cell h", "h", &next.h, F32_MATH);
        c.check("lstm cell c", "c", &next.c.unwrap(), F32_MATH);

        let c = Case::load("gru_cell");
        let m = RnnCell::new(RnnKind::Gru, 3, 4, device, &mut rng()).unwrap();
        c.restore(&m);
        let start = CellState {
            h: c.input("h", device),
            c: None,
        };
        let next = m.step(&c.input("x", device), Some(&start)).unwrap();
        c.check("gru cell", "h", &next.h, F32_MATH);
    }
}

#[test]
fn attention_and_the_encoder_layer_give_pytorchs_outputs() {
    for device in &devices() {
        // PyTorch's boolean attn_mask of MultiheadAttention: true = not allowed.
        let c = Case::load("mha_self");
        let m = MultiheadAttention::new(8, 2, device, &mut rng()).unwrap();
        c.restore(&m);
        let (x, mask) = (c.input("x", device), c.input("attn_mask", device));
        let options = AttentionOptions {
            attn_mask: Some(AttentionMask::Block(&mask)),
            ..AttentionOptions::default()
        };
        c.check(
            "mha self",
            "y",
            &m.attention(&x, &x, &x, &options).unwrap(),
            F32_MATH,
        );
        // The same mask as kiln's causal flag.
        c.check(
            "mha causal",
            "y",
            &m.attend(&x, true, None).unwrap(),
            F32_MATH,
        );

        let c = Case::load("mha_cross");
        let m = MultiheadAttention::new(8, 2, device, &mut rng())
            .unwrap()
            .batch_first(true);
        c.restore(&m);
        let (q, memory) = (c.input("q", device), c.input("memory", device));
        let (pad, add) = (
            c.input("key_padding_mask", device),
            c.input("attn_mask", device),
        );
        let options = AttentionOptions {
            key_padding_mask: Some(&pad),
            attn_mask: Some(AttentionMask::Add(&add)),
            is_causal: false,
        };
        let y = m.attention(&q, &memory, &memory, &options).unwrap();
        c.check("mha cross", "y", &y, F32_MATH);

        let c = Case::load("transformer_encoder_layer");
        let m = TransformerEncoderLayer::new(8, 2, 16, 0.0, device, &mut rng()).unwrap();
        c.restore(&m);
        let (x, pad) = (c.input("x", device), c.input("key_padding_mask", device));
        let y = m.forward_masked(&x, Some(&pad)).unwrap();
        c.check("encoder layer", "y", &y, F32_MATH);

        let c = Case::load("sdpa");
        let (q, k, v) = (
            c.input("q", device),
            c.input("k", device),
            c.input("v", device),
        );
        let allow = c.input("allow", device);
        let sdpa = |mask, causal, scale| {
            scaled_dot_product_attention(&q, &k, &v, mask, causal, scale).unwrap()
        };
        c.check(
            "sdpa masked",
            "masked",
            &sdpa(Some(AttentionMask::Allow(&allow)), false, None),
            F32_MATH,
        );
        c.check("sdpa causal", "causal", &sdpa(None, true, None), F32_MATH);
        c.check(
            "sdpa scaled",
            "scaled",
            &sdpa(None, false, Some(0.3)),
            F32_MATH,
        );
    }
}

#[test]
fn cross_entropy_options_and_dilated_max_pooling_match_pytorch() {
    for device in &devices() {
        let c = Case::load("cross_entropy");
        let logits = c.input("logits", device).detach().into_var().unwrap();
        let (target, weight) = (c.input("target", device), c.input("weight", device));
        for (name, reduction) in [
            ("none", Reduction::None),
            ("mean", Reduction::Mean),
            ("sum", Reduction::Sum),
        ] {
            let options = CrossEntropyOptions {
                weight: Some(weight.clone()),
                reduction,
                label_smoothing: 0.1,
                ..CrossEntropyOptions::default()
            };
            let loss = cross_entropy_with(&logits, &target, &options).unwrap();
            let loss = match reduction {
                Reduction::None => loss,
                _ => loss.reshape([] as [usize; 0]).unwrap(),
            };
            c.check(&format!("cross entropy {name}"), name, &loss, F32_MATH);
            if reduction == Reduction::Mean {
                let grads = loss.backward().unwrap();
                c.check(
                    "cross entropy gradient",
                    "grad_mean",
                    grads.get(&logits).unwrap(),
                    F32_MATH,
                );
            }
        }
        let plain =
            cross_entropy_with(&logits.detach(), &target, &CrossEntropyOptions::default()).unwrap();
        c.check(
            "cross entropy defaults",
            "plain",
            &plain.reshape([] as [usize; 0]).unwrap(),
            F32_MATH,
        );

        let c = Case::load("max_pool2d");
        let pool = MaxPool2d::new(3).stride(2).padding(1).dilation(2);
        c.check(
            "max_pool2d dilated, NaN propagates",
            "y",
            &pool.forward(&c.input("x", device)).unwrap(),
            EXACT,
        );
    }
}

#[test]
fn numpy_files_load_and_round_trip() {
    for name in ["arrays.npz", "arrays_compressed.npz"] {
        let arrays: HashMap<String, Tensor> =
            read_npz(fixture(name)).unwrap().into_iter().collect();
        let f32s = &arrays["f32"];
        assert_eq!((f32s.dtype(), f32s.dims()), (DType::F32, &[3usize, 4][..]));
        assert_eq!(f32s.to_vec::<f32>().unwrap()[5], 5.0 / 7.0);
        // Fortran order comes back row-major: element [1, 2, 3] is 1*12 + 2*4 + 3.
        let fortran = &arrays["fortran"];
        assert_eq!(fortran.dims(), [2, 3, 4]);
        assert_eq!(
            fortran.to_vec::<f64>().unwrap(),
            (0..24).map(f64::from).collect::<Vec<_>>()
        );
        assert_eq!(arrays["i64"].to_vec::<i32>().unwrap(), [-5, 0, i32::MAX]);
        assert_eq!(arrays["flags"].to_vec::<i32>().unwrap(), [1, 0, 1]);
        assert_eq!(
            arrays["f16"]
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec::<f32>()
                .unwrap(),
            [0.5, -2.0, 65504.0]
        );
    }
    let e = read_npy(fixture("too_wide.npy")).unwrap_err().to_string();
    assert!(e.contains("1099511627776"), "{e}");

    let dir = std::env::temp_dir().join(format!("kiln-npy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cpu = Device::cpu();
    let tensors = vec![
        (
            "a".to_string(),
            Tensor::from_vec(vec![1.5f32, -2.0, 3.25, 0.0, 7.0, 8.0], [2, 3], &cpu).unwrap(),
        ),
        (
            "ids".to_string(),
            Tensor::from_vec(vec![3i32, -1], [2], &cpu).unwrap(),
        ),
        (
            "wide".to_string(),
            Tensor::from_vec(vec![0.1f64], [1, 1, 1], &cpu).unwrap(),
        ),
    ];
    write_npz(dir.join("out.npz"), &tensors).unwrap();
    let back = read_npz(dir.join("out.npz")).unwrap();
    for ((n, t), (m, u)) in tensors.iter().zip(&back) {
        assert_eq!(n, m);
        assert_eq!((t.dtype(), t.dims()), (u.dtype(), u.dims()));
        assert_eq!(t.to_f64_vec().unwrap(), u.to_f64_vec().unwrap());
    }
    write_npy(dir.join("a.npy"), &tensors[0].1).unwrap();
    assert_eq!(
        read_npy(dir.join("a.npy"))
            .unwrap()
            .to_vec::<f32>()
            .unwrap(),
        tensors[0].1.to_vec::<f32>().unwrap()
    );
    assert!(read_npy(dir.join("missing.npy")).is_err());
    std::fs::write(dir.join("junk.npy"), b"not numpy").unwrap();
    assert!(read_npy(dir.join("junk.npy")).is_err());
    std::fs::remove_dir_all(&dir).ok();
}
