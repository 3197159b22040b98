//! The benchmark suite: each kernel family at fixed, documented shapes, with the work
//! one run does (flops, or bytes read plus written once).

use crate::measure::Clock;
use crate::{input, HostReadKind};
use kiln::{Conv2dOptions, Device, Result, Tensor};

/// What a case's work counts, and so how its rate is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Floating-point operations (a multiply-add is two): GFLOP/s.
    Flops,
    /// Bytes read plus bytes written, each once: GB/s.
    Bytes,
    /// Bytes moved between the host and the device, once: GB/s, with no roofline (the
    /// bus and host memory bound them, not the device's copy bandwidth).
    TransferBytes,
    /// Operations in a chain: microseconds per op.
    Ops,
}

/// Runs the case once on inputs made by its setup; returns the output to wait on.
pub type Run = Box<dyn Fn() -> Result<Tensor>>;

/// Makes a case's inputs on a device and returns its runner.
type Setup = Box<dyn Fn(&Device) -> Result<Run>>;

pub struct Case {
    pub family: &'static str,
    pub name: String,
    pub unit: Unit,
    pub work: f64,
    /// The peer harness's name for the same work (`../shared/peers/burn-wgpu`).
    pub peer_key: Option<String>,
    /// Dispatch-overhead cases time the host, so they name their clock.
    pub clock: Option<Clock>,
    setup: Setup,
}

impl Case {
    fn new(
        family: &'static str,
        name: String,
        unit: Unit,
        work: f64,
        setup: impl Fn(&Device) -> Result<Run> + 'static,
    ) -> Self {
        Case {
            family,
            name,
            unit,
            work,
            peer_key: None,
            clock: None,
            setup: Box::new(setup),
        }
    }

    fn peer(mut self, key: String) -> Self {
        self.peer_key = Some(key);
        self
    }

    /// Makes the inputs on `device` and returns the runner (inputs live inside it).
    pub fn setup(&self, device: &Device) -> Result<Run> {
        (self.setup)(device)
    }
}

const F32: f64 = 4.0;

/// How much of the suite runs, and at what sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// One or two cases per family at small sizes: a smoke test, not figures to quote.
    Quick,
    /// Every case at the sizes docs/BENCHMARKS.md quotes.
    Standard,
    /// The standard cases plus sizes that fill a data-centre GPU (matmul 4096, row ops
    /// over 16384x4096), with larger roofline probes.
    Large,
}

fn matmul(batch: usize, m: usize, k: usize, n: usize) -> Case {
    let name = match batch {
        1 => format!("{m}x{k}x{n}"),
        _ => format!("{batch}x[{m}x{k}x{n}]"),
    };
    let case = Case::new(
        "matmul",
        name,
        Unit::Flops,
        2.0 * (batch * m * k * n) as f64,
        move |d| {
            let (a, b) = (input(&[batch, m, k], d, 1)?, input(&[batch, k, n], d, 2)?);
            Ok(Box::new(move || a.matmul(&b)))
        },
    );
    if batch == 1 && m == k && k == n {
        case.peer(format!("matmul n={n}"))
    } else {
        case
    }
}

fn conv2d(label: &str, x: [usize; 4], out: usize, kernel: usize, groups: usize) -> Case {
    let [n, c, h, w] = x;
    let pad = kernel / 2;
    let flops = 2.0 * (n * out * h * w * (c / groups) * kernel * kernel) as f64;
    Case::new(
        "conv2d",
        format!("{label} {n}x{c}x{h}x{w} -> {out}"),
        Unit::Flops,
        flops,
        move |d| {
            let x = input(&[n, c, h, w], d, 3)?;
            let weight = input(&[out, c / groups, kernel, kernel], d, 4)?;
            let options = Conv2dOptions {
                padding: (pad, pad),
                groups,
                ..Default::default()
            };
            Ok(Box::new(move || x.conv2d(&weight, None, options)))
        },
    )
}

/// A convolution's training pass: forward, then the input's and the weight's gradients
/// from a given output gradient (what a layer costs a training step but the first
/// layer's, whose input wants no gradient), counted as three times the forward's work.
/// The run returns the two gradients' sums added, which reads them (a gradient dropped
/// unread would never be computed): 0.3% of the bytes the convolution reads and writes.
fn conv2d_with_backward(x: [usize; 4], out: usize, kernel: usize) -> Case {
    let [n, c, h, w] = x;
    let pad = kernel / 2;
    let flops = 3.0 * 2.0 * (n * out * h * w * c * kernel * kernel) as f64;
    Case::new(
        "conv2d",
        format!("{kernel}x{kernel} fwd+bwd {n}x{c}x{h}x{w} -> {out}"),
        Unit::Flops,
        flops,
        move |d| {
            let x = input(&[n, c, h, w], d, 3)?;
            let weight = input(&[out, c, kernel, kernel], d, 4)?;
            let g = input(&[n, out, h, w], d, 8)?;
            let options = Conv2dOptions {
                padding: (pad, pad),
                ..Default::default()
            };
            Ok(Box::new(move || {
                let (xv, wv) = (x.detach().into_var()?, weight.detach().into_var()?);
                let grads = xv.conv2d(&wv, None, options)?.backward_from(&g)?;
                let sum = |t: &Tensor| grads.get(t).expect("a gradient").sum_all();
                sum(&xv)?.add(&sum(&wv)?)
            }))
        },
    )
}

/// A transposed convolution doubling the side, DCGAN's generator layer (4x4 taps at
/// stride 2): `[n, c, h, w] -> [n, out, 2h, 2w]`. The work counts each input element by
/// each tap once, what the unfolded way multiplies; by phases the product multiplies
/// 9 taps per phase where 4 count.
fn conv_transpose2d(x: [usize; 4], out: usize) -> Case {
    let [n, c, h, w] = x;
    let flops = 2.0 * (n * c * h * w * out * 16) as f64;
    Case::new(
        "conv2d",
        format!("transposed 4x4 s2 {n}x{c}x{h}x{w} -> {out}"),
        Unit::Flops,
        flops,
        move |d| {
            let x = input(&[n, c, h, w], d, 3)?;
            let weight = input(&[c, out, 4, 4], d, 4)?;
            let options = Conv2dOptions {
                stride: (2, 2),
                padding: (1, 1),
                ..Default::default()
            };
            Ok(Box::new(move || {
                x.conv_transpose2d(&weight, None, options, (0, 0))
            }))
        },
    )
}

/// Causal self-attention over `[batch, heads, tokens, features]`: the fused kernel, or
/// the products, mask and softmax it replaces; with `backward`, the gradients of q, k
/// and v too, from a given output gradient. The work counts the products whole (the
/// causal half is not subtracted), as the composed way runs them: two forward and
/// four backward, the same for both ways (the fused backward recomputes the scores).
fn attention([b, h, l, d]: [usize; 4], fused: bool, backward: bool) -> Case {
    let way = if fused { "fused" } else { "composed" };
    let pass = if backward { " fwd+bwd" } else { "" };
    let products = if backward { 6.0 } else { 2.0 };
    Case::new(
        "attention",
        format!("{way} causal{pass} {b}x{h}x{l}x{d}"),
        Unit::Flops,
        products * 2.0 * (b * h * l * l * d) as f64,
        move |dev| {
            let [q, k, v, g] = [11, 12, 13, 14].map(|seed| input(&[b, h, l, d], dev, seed));
            let (q, k, v, g) = (q?, k?, v?, g?);
            let scale = 1.0 / (d as f64).sqrt();
            let later = Tensor::ones([l, l], kiln::DType::F32, dev)?.triu(1)?;
            let forward = move |q: &Tensor, k: &Tensor, v: &Tensor| match fused {
                true => q.attention(k, v, true, scale),
                false => q
                    .matmul(&k.transpose(-1, -2)?)?
                    .mul_scalar(scale)?
                    .masked_fill(&later, f64::NEG_INFINITY)?
                    .softmax(-1)?
                    .matmul(v),
            };
            Ok(Box::new(move || match backward {
                false => forward(&q, &k, &v),
                true => {
                    let [q, k, v] = [&q, &k, &v].map(|t| t.detach().into_var());
                    let (q, k, v) = (q?, k?, v?);
                    let grads = forward(&q, &k, &v)?.backward_from(&g)?;
                    // All three in one output (one small copy, both ways): a gradient
                    // dropped unread would leave its deferred kernels unrun.
                    let flat =
                        [&q, &k, &v].map(|t| grads.get(t).expect("a gradient").flatten_all());
                    Tensor::cat(&flat.into_iter().collect::<Result<Vec<_>>>()?, 0)
                }
            }))
        },
    )
}

/// An embedding's gradient: a `[vocab, features]` table looked up at `ids` token ids
/// (every vocab-th id repeated, ids spread over the table), the table's gradient from
/// a given output gradient. Its bytes: the output gradient and the ids read, the
/// table's gradient written.
fn embedding_backward([vocab, features, ids]: [usize; 3]) -> Case {
    Case::new(
        "embedding",
        format!("backward {vocab}x{features}, {ids} ids"),
        Unit::Bytes,
        (F32 * (ids * features + vocab * features) as f64) + 4.0 * ids as f64,
        move |d| {
            let table = input(&[vocab, features], d, 15)?;
            let grad = input(&[ids, features], d, 16)?;
            let picks: Vec<i32> = (0..ids).map(|i| ((i * 7919) % vocab) as i32).collect();
            let picks = Tensor::from_vec(picks, [ids], d)?;
            Ok(Box::new(move || {
                let table = table.detach().into_var()?;
                let grads = table.embedding(&picks)?.backward_from(&grad)?;
                Ok(grads.get(&table).expect("a gradient").clone())
            }))
        },
    )
}

/// A row-wise op over `[rows, cols]` moving `bytes_per_elem` per element.
fn rows(
    family: &'static str,
    label: &str,
    [r, c]: [usize; 2],
    bytes_per_elem: f64,
    op: fn(&Tensor) -> Result<Tensor>,
) -> Case {
    Case::new(
        family,
        format!("{label} {r}x{c}"),
        Unit::Bytes,
        bytes_per_elem * (r * c) as f64,
        move |d| {
            let x = input(&[r, c], d, 5)?;
            Ok(Box::new(move || op(&x)))
        },
    )
}

/// A row-wise op over `[rows, cols]` and its backward from a given output gradient,
/// timed together: 2 elements moved forward, 3 backward (input, output gradient, input
/// gradient).
fn rows_with_backward(
    family: &'static str,
    label: &str,
    [r, c]: [usize; 2],
    op: fn(&Tensor) -> Result<Tensor>,
) -> Case {
    Case::new(
        family,
        format!("{label} fwd+bwd {r}x{c}"),
        Unit::Bytes,
        5.0 * F32 * (r * c) as f64,
        move |d| {
            let (x, g) = (input(&[r, c], d, 5)?, input(&[r, c], d, 8)?);
            Ok(Box::new(move || {
                let v = x.detach().into_var()?;
                let grads = op(&v)?.backward_from(&g)?;
                Ok(grads.get(&v).expect("the input's gradient").clone())
            }))
        },
    )
}

fn elementwise(
    label: &str,
    n: usize,
    bytes_per_elem: f64,
    op: fn(&Tensor, &Tensor) -> Result<Tensor>,
) -> Case {
    Case::new(
        "elementwise",
        format!("{label} {n}"),
        Unit::Bytes,
        bytes_per_elem * n as f64,
        move |d| {
            let (a, b) = (input(&[n], d, 6)?, input(&[n], d, 7)?);
            Ok(Box::new(move || op(&a, &b)))
        },
    )
}

/// Every case at `scale`.
pub fn suite(scale: Scale) -> Vec<Case> {
    let quick = scale == Scale::Quick;
    let mut cases = Vec::new();
    let squares: &[usize] = match scale {
        Scale::Quick => &[256, 1024],
        Scale::Standard => &[256, 512, 1024, 2048],
        Scale::Large => &[256, 512, 1024, 2048, 4096],
    };
    for &n in squares {
        cases.push(matmul(1, n, n, n));
    }
    // A transformer's MLP projection, and attention scores and values (12 heads, 128 tokens).
    cases.push(matmul(1, 64, 768, 3072));
    cases.push(matmul(12, 128, 64, 128));
    if !quick {
        cases.push(matmul(12, 128, 128, 64));
    }

    // The char transformer's heads (32 sequences, 4 heads, 64 tokens of 32 features), and
    // GPT-2 small's over 512 tokens.
    let heads: &[[usize; 4]] = match scale {
        Scale::Quick => &[[32, 4, 64, 32]],
        _ => &[[32, 4, 64, 32], [4, 12, 512, 64]],
    };
    for &shape in heads {
        for backward in [false, true] {
            cases.push(attention(shape, true, backward));
            cases.push(attention(shape, false, backward));
        }
    }

    // A character vocabulary, and a BPE one of 32k (LLaMA's) over 8 sequences of 1024
    // tokens.
    let embeddings: &[[usize; 3]] = match scale {
        Scale::Quick => &[[65, 128, 2048]],
        Scale::Standard => &[[65, 128, 2048], [32000, 768, 8192]],
        Scale::Large => &[[65, 128, 2048], [32000, 768, 8192]],
    };
    for &shape in embeddings {
        cases.push(embedding_backward(shape));
    }

    cases.push(conv2d("3x3", [16, 64, 32, 32], 64, 3, 1).peer("conv2d 16x64x32x32 k3".into()));
    cases.push(
        conv2d_with_backward([16, 64, 32, 32], 64, 3).peer("conv2d_fwd_bwd 16x64x32x32 k3".into()),
    );
    cases.push(conv2d("1x1", [16, 64, 32, 32], 128, 1, 1));
    cases.push(conv2d("depthwise 3x3", [16, 64, 32, 32], 64, 3, 64));
    cases.push(conv_transpose2d([16, 128, 16, 16], 64));

    // Rows of 128 are a transformer's: attention over 128 keys, a layer norm of width 128.
    let shapes: &[[usize; 2]] = match scale {
        Scale::Quick => &[[4096, 1024]],
        Scale::Standard => &[[4096, 1024], [1024, 4096], [65536, 128]],
        Scale::Large => &[[4096, 1024], [1024, 4096], [16384, 4096], [65536, 128]],
    };
    for &[r, c] in shapes {
        let key = format!("{r}x{c}");
        cases.push(
            rows("softmax", "softmax", [r, c], 2.0 * F32, |x| x.softmax(-1))
                .peer(format!("softmax {key}")),
        );
        cases.push(rows_with_backward("softmax", "softmax", [r, c], |x| {
            x.softmax(-1)
        }));
        cases.push(
            rows("reduce", "sum last", [r, c], F32, |x| x.sum(&[-1], false))
                .peer(format!("sum_dim {key}")),
        );
        let norm = |x: &Tensor| {
            let last = x.dims()[x.dims().len() - 1];
            x.layer_norm(&[last], None, None, 1e-5)
        };
        if r >= c {
            cases.push(
                rows("norm", "layer_norm", [r, c], 2.0 * F32, norm)
                    .peer(format!("layer_norm {key}")),
            );
            cases.push(rows_with_backward("norm", "layer_norm", [r, c], norm));
        }
    }
    // Batch norm in training mode over a convolution's output: the statistics (each
    // channel read twice) and the normalisation, counted as one read and one write.
    let shape = match scale {
        Scale::Quick => [8, 64, 28, 28],
        _ => [32, 64, 56, 56],
    };
    let n: usize = shape.iter().product();
    let label = format!("batch_norm {}", shape.map(|d| d.to_string()).join("x"));
    cases.push(Case::new(
        "norm",
        label,
        Unit::Bytes,
        2.0 * F32 * n as f64,
        move |d| {
            let x = input(&shape, d, 5)?;
            Ok(Box::new(move || Ok(x.batch_norm(None, None, 1e-5)?.output)))
        },
    ));
    let [r, c] = [4096, 1024];
    cases.push(rows("reduce", "mean last", [r, c], F32, |x| {
        x.mean(&[-1], false)
    }));
    cases.push(rows("reduce", "max last", [r, c], F32, |x| {
        x.max(&[-1], false)
    }));
    cases.push(rows("reduce", "sum first", [r, c], F32, |x| {
        x.sum(&[0], false)
    }));
    // A whole tensor's sum: its one row is cut into parts, a workgroup each.
    cases.push(rows("reduce", "sum all", [r, c], F32, |x| x.sum_all()));
    if scale == Scale::Large {
        cases.push(rows("reduce", "sum all", [16384, 4096], F32, |x| {
            x.sum_all()
        }));
    }
    if !quick {
        cases.push(rows("reduce", "mean first", [r, c], F32, |x| {
            x.mean(&[0], false)
        }));
        cases.push(rows("reduce", "max first", [r, c], F32, |x| {
            x.max(&[0], false)
        }));
    }

    let n = match scale {
        Scale::Quick => 1 << 22,
        Scale::Standard => 1 << 24,
        Scale::Large => 1 << 26,
    };
    cases.push(elementwise("add", n, 3.0 * F32, |a, b| a.add(b)));
    cases.push(elementwise("gelu", n, 2.0 * F32, |a, _| a.gelu()));

    // Host <-> device copies, timed on the host clock: what `to_vec` (a readback) and
    // `from_slice` (an upload) move per second.
    let mib = if scale == Scale::Large { 256 } else { 64 };
    let n = (mib << 20) / 4;
    // A readback by `to_vec`, and the same read left in the mapped staging buffer
    // (`read_host`: `to_vec` less its copy out).
    let reads = [
        ("readback", HostReadKind::Copied),
        ("read_host", HostReadKind::Mapped),
    ];
    for (name, read) in reads {
        let mut case = Case::new(
            "transfer",
            format!("{name} {mib} MiB"),
            Unit::TransferBytes,
            (n * 4) as f64,
            move |d| {
                let x = input(&[n], d, 9)?;
                Ok(Box::new(move || {
                    read.read(&x)?;
                    Ok(x.clone())
                }))
            },
        );
        case.clock = Some(Clock::WallClock);
        cases.push(case);
    }
    let mut upload = Case::new(
        "transfer",
        format!("upload {mib} MiB"),
        Unit::TransferBytes,
        (n * 4) as f64,
        move |d| {
            let host = input(&[n], &Device::cpu(), 10)?.to_vec::<f32>()?;
            let d = d.clone();
            Ok(Box::new(move || Tensor::from_slice(&host, [n], &d)))
        },
    );
    upload.clock = Some(Clock::WallClock);
    cases.push(upload);

    // A chain of tiny ops: the whole time per op (wall), and the host's share of it,
    // recording and submitting (the launch cost).
    let chain = 1000;
    for (name, clock) in [
        ("chain", Clock::WallClock),
        ("record", Clock::HostRecording),
    ] {
        let mut overhead = Case::new(
            "dispatch",
            format!("{name} of {chain} tiny ops"),
            Unit::Ops,
            chain as f64,
            move |d| {
                let x = input(&[64], d, 8)?;
                Ok(Box::new(move || {
                    let mut y = x.clone();
                    for _ in 0..chain {
                        y = y.add_scalar(1.0)?;
                    }
                    Ok(y)
                }))
            },
        );
        overhead.clock = Some(clock);
        cases.push(overhead);
    }
    cases
}
