//! Elementwise fusion against the CPU backend, on seeded random op graphs: elementwise
//! chains and trees with broadcasting and views, reductions, softmax, matmul and an
//! optimizer step between them. Each graph runs on the CPU, on the GPU with fusion on
//! and with fusion off (outputs poisoned), and every output it asks for (its last value
//! and a few intermediates, so that values shared between kernels are checked) must
//! agree. Graphs of smooth ops also compare gradients.
//!
//! A failure names the graph's seed; `KILN_FUSION_SEED=<seed>` replays that one graph,
//! `KILN_FUSION_BASE=<seed>` the run of graphs from it.

mod common;

use common::{assert_near, gpu, SplitMix};
use kiln::backend::{ConvAlgorithm, GpuDevice, MatmulVariant};
use kiln::{
    BinaryOp, DType, Device, OptimizerStep, ParamUpdate, ReduceOp, Rng, SgdSpec, Tensor, UnaryOp,
};
use std::sync::{Mutex, MutexGuard};

/// The device's switches (fusion, the matmul variant and its groups, the convolution
/// algorithm) are shared, and the tests in this file flip them: one test at a time.
static SWITCH: Mutex<()> = Mutex::new(());

/// The device's switches held by one test, fusion on whatever `KILN_FUSION` the run was
/// given (these tests count what it fuses); all set back as they were when the test
/// ends, a failed one included, so that a test that panics midway leaves no switch
/// flipped under the next.
struct Switches {
    device: GpuDevice,
    variant: MatmulVariant,
    groups: bool,
    conv: ConvAlgorithm,
    // Dropped after `drop` below, in this order: fusion set back, then the lock let go.
    _fusion: common::FusionSetTo,
    _turn: MutexGuard<'static, ()>,
}

fn switches(device: &Device) -> Switches {
    let turn = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let gpu = device.as_gpu().unwrap().clone();
    Switches {
        variant: gpu.matmul_variant(),
        groups: gpu.matmul_groups(),
        conv: gpu.conv_algorithm(),
        device: gpu,
        _fusion: common::FusionSetTo::new(device, true),
        _turn: turn,
    }
}

impl Drop for Switches {
    fn drop(&mut self) {
        let device = &self.device;
        // The variant was the device's own, so it takes it back.
        device.set_matmul_variant(self.variant).unwrap();
        device.set_matmul_groups(self.groups);
        device.set_conv_algorithm(self.conv);
    }
}

/// One op of a graph; operands are earlier values by index (inputs come first).
#[derive(Clone, Debug)]
enum Node {
    Unary(UnaryOp, usize),
    Binary(BinaryOp, usize, usize),
    /// `where(lhs > rhs, t, f)`, the condition from inputs only (see `generate`).
    Where(usize, usize, usize, usize),
    MaskedFill(usize, usize, f64),
    /// Through f16 and back.
    F16RoundTrip(usize),
    /// A non-contiguous view of a compacted transposed copy: the same values.
    Transposed(usize),
    /// Flattened and reshaped back: a compact view of another shape.
    Reshaped(usize),
    /// Padded before (with -0.5) and after in dim `-1` or `-2`, then cut back to its
    /// shape: shifted by one along that dim, the padding value coming in.
    Shifted(usize, isize),
    /// Broadcast to the full shape and made compact.
    Expanded(usize),
    /// Over the last dim, keeping it.
    Reduce(ReduceOp, usize),
    /// Over the first dim, keeping it (the column kernel).
    ReduceFirst(ReduceOp, usize),
    /// Over the last dim, with no weight or bias.
    LayerNorm(usize),
    Softmax(usize),
    /// By a `[c, c]` weight (an input).
    Matmul(usize, usize),
    /// The new parameter of an SGD-with-momentum step of (param, grad, momentum).
    Sgd(usize, usize, usize),
}

struct Graph {
    seed: u64,
    /// The full shape; every value's shape broadcasts to it.
    shape: Vec<usize>,
    inputs: Vec<Input>,
    nodes: Vec<Node>,
    /// Values the graph returns (the last one and some intermediates).
    outputs: Vec<usize>,
    /// Every value's shape, as the generator expects it.
    shapes: Vec<Vec<usize>>,
    /// Only smooth ops: gradients are compared too.
    smooth: bool,
    has_f16: bool,
}

#[derive(Clone, Debug)]
struct Input {
    shape: Vec<usize>,
    /// Transposed or sliced out of a larger tensor.
    view: usize,
}

const UNARY_SMOOTH: &[UnaryOp] = &[
    UnaryOp::Neg,
    UnaryOp::Exp,
    UnaryOp::Log,
    UnaryOp::Sqrt,
    UnaryOp::Rsqrt,
    UnaryOp::Sin,
    UnaryOp::Cos,
    UnaryOp::Tanh,
    UnaryOp::Sigmoid,
    UnaryOp::GeluTanh,
    UnaryOp::GeluErf,
    UnaryOp::Silu,
    UnaryOp::AddScalar(1.5),
    UnaryOp::MulScalar(-0.75),
    UnaryOp::PowScalar(2.0),
    UnaryOp::Recip,
    UnaryOp::Square,
    UnaryOp::Erf,
];
const UNARY_KINKED: &[UnaryOp] = &[
    UnaryOp::Abs,
    UnaryOp::Relu,
    UnaryOp::LeakyRelu(0.1),
    UnaryOp::Clamp(-0.5, 0.75),
];
const BINARY_SMOOTH: &[BinaryOp] = &[
    BinaryOp::Add,
    BinaryOp::Sub,
    BinaryOp::Mul,
    BinaryOp::Div,
    BinaryOp::Pow,
    BinaryOp::Atan2,
];
const BINARY_KINKED: &[BinaryOp] = &[BinaryOp::Maximum, BinaryOp::Minimum];

/// The shape a value of `full` takes in one of several broadcast forms.
fn broadcast_form(full: &[usize], form: usize) -> Vec<usize> {
    let (a, b, c) = (full[0], full[1], full[2]);
    match form {
        0..=2 => full.to_vec(),
        3 => vec![1, b, c],
        4 => vec![b, c],
        5 => vec![c],
        6 => vec![a, b, 1],
        _ => vec![a, 1, c],
    }
}

fn broadcast(x: &[usize], y: &[usize]) -> Vec<usize> {
    let r = x.len().max(y.len());
    let at = |s: &[usize], i: usize| {
        let pad = r - s.len();
        if i < pad {
            1
        } else {
            s[i - pad]
        }
    };
    (0..r).map(|i| at(x, i).max(at(y, i))).collect()
}

fn generate(seed: u64, f16: bool) -> Graph {
    let mut g = SplitMix(seed);
    // Small odd shapes, and a quarter of the time shapes with at least 64 rows of a
    // multiple of 4, which software adapters reduce with their one-row-per-invocation
    // kernels (vec4 loads).
    let shape = match g.below(4) {
        0 => vec![3 + g.below(2), 24 + g.below(17), 4 * (1 + g.below(4))],
        _ => vec![1 + g.below(4), 1 + g.below(7), 1 + g.below(9)],
    };
    let smooth = g.below(3) == 0;
    // Input 0 is a [c, c] weight for matmul, which no other op reads (its shape is
    // not of the family); the last input has the full shape, for conditions and
    // optimizer states.
    let n_inputs = 2 + g.below(4);
    let mut inputs = vec![Input {
        shape: vec![shape[2], shape[2]],
        view: 0,
    }];
    for _ in 0..n_inputs {
        inputs.push(Input {
            shape: broadcast_form(&shape, g.below(8)),
            view: g.below(3),
        });
    }
    inputs.push(Input {
        shape: shape.clone(),
        view: g.below(3),
    });
    let weight = 0;
    let full_input = inputs.len() - 1;
    let mut shapes: Vec<Vec<usize>> = inputs.iter().map(|i| i.shape.clone()).collect();
    let mut nodes = Vec::new();
    let mut has_f16 = false;
    let n_nodes = 2 + g.below(39);
    for _ in 0..n_nodes {
        let values = shapes.len();
        // Recent values more often, so that chains form.
        let recent = |g: &mut SplitMix| {
            if g.below(3) > 0 {
                values - 1 - g.below((values - 1).min(4))
            } else {
                1 + g.below(values - 1)
            }
        };
        let x = recent(&mut g);
        let y = recent(&mut g);
        let xy = broadcast(&shapes[x], &shapes[y]);
        let choice = g.below(if smooth { 8 } else { 14 });
        let (node, out_shape) = match choice {
            0..=2 => {
                let op = g.pick(UNARY_SMOOTH);
                (Node::Unary(op, x), shapes[x].clone())
            }
            3 | 4 => (Node::Binary(g.pick(BINARY_SMOOTH), x, y), xy),
            5 if g.below(2) == 0 => (Node::Reshaped(x), shapes[x].clone()),
            5 => {
                let dim = -1 - (g.below(2) as isize).min(shapes[x].len() as isize - 1);
                (Node::Shifted(x, dim), shapes[x].clone())
            }
            6 => (Node::Transposed(x), shapes[x].clone()),
            7 => (Node::Expanded(x), shape.clone()),
            8 => (Node::Unary(g.pick(UNARY_KINKED), x), shapes[x].clone()),
            9 => (Node::Binary(g.pick(BINARY_KINKED), x, y), xy),
            // Conditions compare inputs, whose values are the same bits on both
            // devices, so no rounding difference can flip one.
            10 => {
                let (a, b) = (1 + g.below(n_inputs), full_input);
                (Node::Where(a, b, x, y), broadcast(&shape, &xy))
            }
            11 => {
                let m = 1 + g.below(n_inputs);
                let out = broadcast(&shapes[x], &shapes[m]);
                (Node::MaskedFill(x, m, -0.25), out)
            }
            12 => {
                let op = g.pick(&[ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max]);
                let mut s = shapes[x].clone();
                *s.last_mut().unwrap() = 1;
                (Node::Reduce(op, x), s)
            }
            _ => match g.below(7) {
                0 => (Node::Softmax(x), shapes[x].clone()),
                4 => (Node::LayerNorm(x), shapes[x].clone()),
                5 | 6 => {
                    let op = g.pick(&[ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max]);
                    let mut s = shapes[x].clone();
                    s[0] = 1;
                    (Node::ReduceFirst(op, x), s)
                }
                1 if f16 => {
                    has_f16 = true;
                    (Node::F16RoundTrip(x), shapes[x].clone())
                }
                2 => {
                    let mut s = shapes[x].clone();
                    *s.last_mut().unwrap() = shape[2];
                    (Node::Matmul(x, weight), s)
                }
                _ => (Node::Sgd(x, y, full_input), shape.clone()),
            },
        };
        nodes.push(node);
        shapes.push(out_shape);
    }
    let last = shapes.len() - 1;
    let mut outputs = vec![last];
    for _ in 0..g.below(3) {
        outputs.push(inputs.len() + g.below(nodes.len()));
    }
    Graph {
        seed,
        shape,
        inputs,
        nodes,
        outputs,
        shapes,
        smooth,
        has_f16,
    }
}

/// Keeps a value's magnitude bounded where an op could blow it up, and its argument in
/// the op's domain: the guards are fused ops too.
fn positive(x: &Tensor) -> kiln::Result<Tensor> {
    x.square()?.add_scalar(0.5)
}

fn bounded(x: &Tensor) -> kiln::Result<Tensor> {
    x.tanh()?.mul_scalar(3.0)
}

fn eval(graph: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
    let mut v: Vec<Tensor> = inputs.to_vec();
    for node in &graph.nodes {
        let out = eval_node(graph, node, &v).map_err(|e| format!("{node:?}: {e}"))?;
        let i = v.len();
        assert_eq!(out.dims(), &graph.shapes[i][..], "value {i}: {node:?}");
        v.push(out);
    }
    Ok(graph.outputs.iter().map(|&i| v[i].clone()).collect())
}

fn eval_node(graph: &Graph, node: &Node, v: &[Tensor]) -> kiln::Result<Tensor> {
    Ok(match *node {
        Node::Unary(op, x) => {
            let a = match op {
                UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt | UnaryOp::Recip => positive(&v[x])?,
                UnaryOp::PowScalar(_) => positive(&bounded(&v[x])?)?,
                // A periodic function turns the rounding of a large argument into an
                // absolute error of the same size (cos(4160) differs by 2e-3 between
                // devices whose arguments differ by one ulp).
                UnaryOp::Exp | UnaryOp::Square | UnaryOp::Sin | UnaryOp::Cos => bounded(&v[x])?,
                _ => v[x].clone(),
            };
            a.unary(op)?
        }
        Node::Binary(op, x, y) => {
            let (a, b) = match op {
                BinaryOp::Div | BinaryOp::Atan2 => (v[x].clone(), positive(&v[y])?),
                BinaryOp::Pow => (positive(&v[x])?, v[y].tanh()?),
                BinaryOp::Mul => (bounded(&v[x])?, v[y].clone()),
                _ => (v[x].clone(), v[y].clone()),
            };
            a.binary(&b, op)?
        }
        Node::Where(a, b, x, y) => v[a].gt(&v[b])?.where_cond(&v[x], &v[y])?,
        Node::MaskedFill(x, m, value) => {
            let mask = v[m].gt(&v[m].mul_scalar(0.0)?)?;
            v[x].masked_fill(&mask, value)?
        }
        Node::F16RoundTrip(x) => v[x].to_dtype(DType::F16)?.to_dtype(DType::F32)?,
        Node::Transposed(x) => {
            let t = &v[x];
            match t.rank() {
                r if r >= 2 => t.transpose(-1, -2)?.contiguous()?.transpose(-1, -2)?,
                _ => t.clone(),
            }
        }
        Node::Reshaped(x) => {
            let t = &v[x];
            t.reshape([t.elem_count()])?.reshape(t.dims().to_vec())?
        }
        Node::Shifted(x, dim) => {
            let t = &v[x];
            let pads = match dim {
                -1 => vec![(1, 2)],
                _ => vec![(0, 0), (1, 2)],
            };
            let len = t.dims()[(t.rank() as isize + dim) as usize];
            t.pad(&pads, -0.5)?.narrow(dim, 0, len)?
        }
        Node::Expanded(x) => v[x].expand(graph.shape.clone())?.contiguous()?,
        Node::Reduce(op, x) => v[x].reduce(op, &[-1], true)?,
        Node::ReduceFirst(op, x) => v[x].reduce(op, &[0], true)?,
        Node::LayerNorm(x) => {
            // A ramp along the row keeps its variance off zero: a row of one value
            // (an expanded input) normalises the rounding of its mean by
            // 1/sqrt(eps), 1e-3 apart between two correct devices (seed
            // 1796233714398620545).
            let last = *v[x].dims().last().unwrap();
            let ramp = Tensor::arange(0.0, 1.0, 1.0 / last as f64, DType::F32, &v[x].device())?;
            let ramp = ramp.narrow(0, 0, last)?;
            v[x].add(&ramp)?.layer_norm(&[last], None, None, 1e-5)?
        }
        Node::Softmax(x) => v[x].softmax(-1)?,
        Node::Matmul(x, w) => {
            let c = graph.shape[2];
            let t = &v[x];
            let mut dims = t.dims().to_vec();
            *dims.last_mut().unwrap() = c;
            // Both operands compact copies, which a matmul computes in its loads; the
            // weight's seen through a transposed view.
            let lhs = t.expand(dims)?.contiguous()?;
            bounded(&lhs.matmul(&v[w].t()?.contiguous()?.t()?)?)?
        }
        Node::Sgd(p, gr, m) => {
            let full = graph.shape.clone();
            let param = v[p].expand(full.clone())?.contiguous()?;
            let grad = v[gr].expand(full)?.contiguous()?;
            let step = OptimizerStep::SgdMomentum(SgdSpec {
                lr: 0.1,
                momentum: 0.9,
                weight_decay: 0.01,
                nesterov: false,
            });
            param.optimizer_update(&grad, &[&v[m]], &step)?.0
        }
    })
}

/// The graph's inputs on the CPU: fresh values, some of them strided views.
fn make_inputs(graph: &Graph) -> Vec<Tensor> {
    let mut rng = Rng::new(graph.seed);
    graph
        .inputs
        .iter()
        .map(|input| {
            let base = Tensor::rand(input.shape.clone(), DType::F32, &Device::cpu(), &mut rng)
                .unwrap()
                .mul_scalar(2.0)
                .unwrap()
                .add_scalar(-1.0)
                .unwrap();
            let shape = &input.shape;
            match input.view {
                1 if shape.len() >= 2 => {
                    let r = shape.len();
                    let mut swapped = shape.clone();
                    swapped.swap(r - 1, r - 2);
                    let t = Tensor::rand(swapped, DType::F32, &Device::cpu(), &mut rng);
                    t.unwrap()
                        .add_scalar(-0.5)
                        .unwrap()
                        .transpose(-1, -2)
                        .unwrap()
                }
                2 => {
                    let mut big = shape.clone();
                    big[0] += 2;
                    let t = Tensor::rand(big, DType::F32, &Device::cpu(), &mut rng);
                    t.unwrap()
                        .add_scalar(-0.5)
                        .unwrap()
                        .narrow(0, 1, shape[0])
                        .unwrap()
                }
                _ => base,
            }
        })
        .collect()
}

/// How far a result may be from the CPU's: f32 rounding through up to 40 ops, some of
/// them transcendental (not correctly rounded on GPUs); through an f16 round trip, one
/// f16 rounding flip (2^-11) carried through the ops after it.
fn tolerance(graph: &Graph) -> (f64, f64) {
    if graph.has_f16 {
        (1e-2, 1e-2)
    } else {
        (2e-4, 1e-3)
    }
}

fn on_gpu(device: &Device, inputs: &[Tensor]) -> Vec<Tensor> {
    inputs
        .iter()
        .map(|t| common::on_strided(device, t))
        .collect()
}

fn check_graph(device: &Device, graph: &Graph) {
    let gpu_device = device.as_gpu().unwrap();
    // The matmul kernels that take prologues, and the adapter's own choice.
    let default = gpu_device.matmul_variant();
    let variant = match graph.seed % 5 {
        0 => MatmulVariant::Tiled,
        1 => MatmulVariant::SmallTiled,
        2 => MatmulVariant::SplitK,
        3 => MatmulVariant::Blocked,
        _ => default,
    };
    gpu_device.set_matmul_variant(variant).unwrap();
    // Small pending products several to a launch in every other graph (the graphs'
    // gradients leave their weights' pending).
    let groups = gpu_device.matmul_groups();
    gpu_device.set_matmul_groups(graph.seed.is_multiple_of(2));
    check_graph_with(device, graph);
    gpu_device.set_matmul_variant(default).unwrap();
    gpu_device.set_matmul_groups(groups);
}

fn check_graph_with(device: &Device, graph: &Graph) {
    let gpu_device = device.as_gpu().unwrap();
    let label = format!(
        "graph seed {} ({} nodes, matmul {:?}, groups {})",
        graph.seed,
        graph.nodes.len(),
        gpu_device.matmul_variant(),
        gpu_device.matmul_groups()
    );
    let inputs = make_inputs(graph);
    let want = eval(graph, &inputs).unwrap_or_else(|e| panic!("{label}: cpu: {e}"));
    let (atol, rtol) = tolerance(graph);
    for fusion in [true, false] {
        gpu_device.set_fusion(fusion);
        let moved = on_gpu(device, &inputs);
        let got = eval(graph, &moved).unwrap_or_else(|e| panic!("{label}: gpu: {e}"));
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            let what = format!("{label}, fusion {fusion}, output {k}: {:?}", graph.nodes);
            assert_near(&what, g, w, atol, rtol);
        }
    }
    gpu_device.set_fusion(true);
    if graph.smooth {
        check_gradients(device, graph, &inputs, &label);
    }
}

/// Gradients of `sum(out * r)` for every input, fused GPU against the CPU.
fn check_gradients(device: &Device, graph: &Graph, inputs: &[Tensor], label: &str) {
    let grads = |inputs: &[Tensor]| -> Vec<Option<Vec<f64>>> {
        let vars: Vec<Tensor> = inputs
            .iter()
            .map(|t| {
                let v = t.detach();
                v.set_requires_grad(true).unwrap();
                v
            })
            .collect();
        let out = eval(graph, &vars).unwrap().remove(0);
        let mut rng = Rng::new(graph.seed ^ 0x5eed);
        let r = Tensor::rand(out.dims().to_vec(), DType::F32, &Device::cpu(), &mut rng)
            .unwrap()
            .to_device(&out.device())
            .unwrap();
        let loss = out.mul(&r).unwrap().sum_all().unwrap();
        let g = loss.backward().unwrap();
        vars.iter()
            .map(|v| g.get(v).map(|t| t.to_f64_vec().unwrap()))
            .collect()
    };
    let want = grads(inputs);
    let got = grads(&on_gpu(device, inputs));
    let (atol, rtol) = tolerance(graph);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        match (g, w) {
            (Some(g), Some(w)) => {
                let shape = [w.len()];
                let g = Tensor::from_vec(g.clone(), shape, &Device::cpu()).unwrap();
                let w = Tensor::from_vec(w.clone(), shape, &Device::cpu()).unwrap();
                let what = format!("{label}: gradient of input {i}: {:?}", graph.nodes);
                assert_near(&what, &g, &w, atol * 10.0, rtol * 10.0);
            }
            (None, None) => {}
            _ => panic!("{label}: input {i} has a gradient on one device only"),
        }
    }
}

#[test]
fn random_graphs_match_cpu_fused_and_unfused() {
    let Some(device) = gpu() else { return };
    let _switches = switches(&device);
    let f16 = device.as_gpu().unwrap().supports(DType::F16);
    if let Some(seed) = std::env::var("KILN_FUSION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        check_graph(&device, &generate(seed, f16));
        return;
    }
    let graphs: u64 = std::env::var("KILN_FUSION_GRAPHS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let base = common::seed_from("KILN_FUSION_BASE");
    eprintln!(
        "random graphs from seed {base} (KILN_FUSION_BASE=<seed> replays the run); \
         KILN_FUSION_SEED=<seed> replays one"
    );
    for i in 0..graphs {
        let seed = base.wrapping_add(i);
        // The last line shown where a graph panics (an error unwrapped) names it.
        eprintln!("graph {seed}");
        check_graph(&device, &generate(seed, f16));
    }
}

/// Every kernel the fusion generated in this process (standalone, and reductions,
/// softmax, layer norm, matmul and the recurrent cells with fused prologues, matmul
/// with epilogues) is valid WGSL to naga, and
/// its params struct is the Rust mirror's size.
#[test]
fn generated_kernels_validate_with_naga() {
    let Some(device) = gpu() else { return };
    let _switches = switches(&device);
    // A graph with every unary and binary op, a where, casts and a view.
    let mut rng = common::rng();
    let x = Tensor::rand([3, 5], DType::F32, &Device::cpu(), &mut rng).unwrap();
    let y = Tensor::rand([5], DType::F32, &Device::cpu(), &mut rng).unwrap();
    let (x, y) = (x.to_device(&device).unwrap(), y.to_device(&device).unwrap());
    let mut acc = x.clone();
    for &op in UnaryOp::EXAMPLES {
        acc = acc.add(&x.unary(op).unwrap()).unwrap();
    }
    for &op in BinaryOp::EXAMPLES {
        acc = acc.add(&x.binary(&y, op).unwrap()).unwrap();
    }
    acc = x
        .gt(&y)
        .unwrap()
        .where_cond(&acc, &x.t().unwrap().t().unwrap())
        .unwrap();
    // Prologues: each reading kernel over a pending input.
    let pending = || x.mul(&y).unwrap().exp().unwrap();
    let sum = pending().sum(&[-1], true).unwrap();
    let columns = pending().sum(&[0], true).unwrap();
    let soft = pending().softmax(-1).unwrap();
    let norm = pending().layer_norm(&[5], None, None, 1e-5).unwrap();
    for t in [sum, columns, soft, norm] {
        acc = acc.add(&t).unwrap();
    }
    // Reductions with epilogues: a row sum's output dropped (the kernel writes the
    // epilogue's elements alone), a column sum's held (it writes both).
    let rows = pending().sum(&[-1], false).unwrap().exp().unwrap();
    rows.to_f64_vec().unwrap();
    let held = pending().sum(&[0], false).unwrap();
    held.sqrt().unwrap().to_f64_vec().unwrap();
    // Softmax and layer norm with epilogues, in the workgroup kernels ([3, 5]) and
    // the vec4 ones for software adapters ([70, 12]): held, then dropped.
    let tall = Tensor::rand([70, 12], DType::F32, &Device::cpu(), &mut rng).unwrap();
    for t in [x.clone(), tall.to_device(&device).unwrap()] {
        let k = t.dims()[1];
        let soft = t.softmax(-1).unwrap().mul_scalar(2.0).unwrap();
        let norm = t.layer_norm(&[k], None, None, 1e-5).unwrap().exp().unwrap();
        soft.add(&norm).unwrap().to_f64_vec().unwrap();
        let soft = t.softmax(-1).unwrap().mul_scalar(2.0).unwrap();
        soft.to_f64_vec().unwrap();
        let norm = t.layer_norm(&[k], None, None, 1e-5).unwrap().exp().unwrap();
        norm.to_f64_vec().unwrap();
    }
    // The recurrent cells, every input pending (hidden size 5).
    let mut wide = |n: usize| {
        let t = Tensor::rand([3, n], DType::F32, &Device::cpu(), &mut rng).unwrap();
        t.to_device(&device).unwrap().exp().unwrap()
    };
    let lstm = wide(20).lstm_cell(&pending()).unwrap();
    let (gates, hidden) = (wide(15), wide(15));
    let gru = gates.gru_cell(&hidden, &pending()).unwrap();
    acc = acc.add(&lstm.narrow(1, 0, 5).unwrap()).unwrap();
    acc = acc.add(&gru).unwrap();
    // Matmul with both operands pending copies, one through a transposed view, in
    // each kernel that takes prologues.
    let gpu_device = device.as_gpu().unwrap();
    for variant in [
        MatmulVariant::Tiled,
        MatmulVariant::SmallTiled,
        MatmulVariant::Blocked,
    ] {
        gpu_device.set_matmul_variant(variant).unwrap();
        let lhs = x.t().unwrap().contiguous().unwrap();
        let rhs = x.t().unwrap().contiguous().unwrap().t().unwrap();
        lhs.matmul(&rhs).unwrap().to_f64_vec().unwrap();
        // Epilogues: the matmul's output dropped, then held.
        let w = x.t().unwrap().contiguous().unwrap();
        let epilogue = |m: &Tensor| m.add(&x.sum(&[1], true)?)?.exp();
        epilogue(&x.matmul(&w).unwrap())
            .unwrap()
            .to_f64_vec()
            .unwrap();
        let held = x.matmul(&w).unwrap();
        epilogue(&held).unwrap().to_f64_vec().unwrap();
    }
    if device.as_gpu().unwrap().supports(DType::F16) {
        acc = acc.to_dtype(DType::F16).unwrap().exp().unwrap();
    }
    acc.to_f64_vec().unwrap();
    let sources = device.as_gpu().unwrap().fused_kernel_sources();
    assert!(!sources.is_empty(), "no fused kernel was built");
    for part in ["prologue", "epilogue"] {
        assert!(
            sources
                .iter()
                .any(|s| s.contains(&format!("replaced by a fused {part}"))),
            "no {part} was built"
        );
    }
    let params = std::mem::size_of::<kiln::backend::FusedParams>();
    for source in sources {
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("does not parse:\n{}\n{source}", e.emit_to_string(&source)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("does not validate: {e:?}\n{source}"));
        let size = module
            .types
            .iter()
            .find(|(_, t)| t.name.as_deref() == Some("FusedParams"))
            .map(|(_, t)| t.inner.size(module.to_ctx()) as usize);
        // The device's other generated builds (a cat's pieces, an LSTM step in its
        // product, which other tests here may have built) have params of their own,
        // checked by their unit tests.
        let other = ["Built for", "LSTM build's finish"]
            .iter()
            .any(|mark| source.contains(mark));
        if !other {
            assert_eq!(size, Some(params), "Params of\n{source}");
        }
    }
}

/// Fusing launches fewer kernels than running each op, and never more.
#[test]
fn a_chain_of_elementwise_ops_is_one_kernel() {
    let Some(device) = gpu() else { return };
    let _switches = switches(&device);
    let mut rng = common::rng();
    let x = Tensor::rand([7, 9], DType::F32, &Device::cpu(), &mut rng).unwrap();
    let b = Tensor::rand([9], DType::F32, &Device::cpu(), &mut rng).unwrap();
    let (x, b) = (x.to_device(&device).unwrap(), b.to_device(&device).unwrap());
    let chain = || -> kiln::Result<Vec<f64>> {
        let y = x
            .add(&b)?
            .gelu()?
            .mul_scalar(0.5)?
            .sub(&x.t()?.t()?)?
            .exp()?;
        y.to_f64_vec()
    };
    let gpu_device = device.as_gpu().unwrap();
    // Both ways, whatever the run's `KILN_FUSION`.
    let (fused, on) = device.profile(chain).unwrap();
    gpu_device.set_fusion(false);
    let (plain, off) = device.profile(chain).unwrap();
    // Outputs are poisoned (a fill per output), so count the other kernels.
    let launches = |p: &kiln::Profile| -> u64 {
        let kernels = p.kernels.iter().filter(|k| !k.name.contains("fill.wgsl"));
        kernels.map(|k| k.launches).sum()
    };
    assert_eq!(launches(&on), 1, "{:?}", on.kernels);
    assert_eq!(launches(&off), 5, "{:?}", off.kernels);
    let want = chain_on_cpu(&x, &b);
    for (got, label) in [(fused, "fused"), (plain, "plain")] {
        let got = Tensor::from_vec(got, [63], &Device::cpu()).unwrap();
        assert_near(label, &got, &want, 1e-5, 5e-4);
    }
}

/// A pending expression read through a broadcast (a per-channel scale across an
/// image, a bias grid across a batch) is computed inside its consumer's kernel, its own
/// inputs, pending ones too, read through the same broadcast; where an input's layout
/// cannot take that walk (a transposed view read flattened) the expression runs first,
/// as before. Kernels counted, values against the CPU, fused and not.
#[test]
fn expressions_read_through_a_broadcast_run_inside_their_consumer() {
    let Some(device) = gpu() else { return };
    let _switches = switches(&device);
    let mut rng = common::rng();
    let cpu = Device::cpu();
    let mut draw =
        |dims: &[usize]| Tensor::rand(dims.to_vec(), DType::F32, &cpu, &mut rng).unwrap();
    let (x, s, t, w, m, x2, rows) = (
        draw(&[2, 3, 4, 5]),
        draw(&[3]),
        draw(&[3]),
        draw(&[1, 4]),
        draw(&[4, 3]),
        draw(&[2, 12]),
        draw(&[2, 12]),
    );
    // Each case: its graph, and the kernels it takes fused.
    type Case = (&'static str, u64, fn(&[Tensor]) -> kiln::Result<Tensor>);
    let cases: [Case; 4] = [
        // Two reads that walk alike from different offsets share the walk's index.
        ("two rows of one tensor across a batch", 1, |v| {
            let (first, second) = (v[6].narrow(0, 0, 1)?, v[6].narrow(0, 1, 1)?);
            v[5].add(&first)?.mul(&second)
        }),
        ("a per-channel product", 1, |v| {
            let scale = v[1].mul(&v[2])?.exp()?.reshape([1, 3, 1, 1])?;
            v[0].mul(&scale)
        }),
        ("a broadcast grid of a broadcast product", 1, |v| {
            let product = v[1].mul(&v[2])?.reshape([3, 1])?;
            let grid = product.add(&v[3])?.tanh()?.reshape([1, 3, 4, 1])?;
            v[0].sub(&grid)
        }),
        ("a transposed view read flattened", 2, |v| {
            let z = v[4].t()?.mul_scalar(2.0)?.sigmoid()?;
            v[5].add(&z.reshape([1, 12])?)
        }),
    ];
    let inputs = [x, s, t, w, m, x2, rows];
    let on_gpu: Vec<Tensor> = inputs
        .iter()
        .map(|v| v.to_device(&device).unwrap())
        .collect();
    let gpu_device = device.as_gpu().unwrap();
    for (label, kernels, graph) in cases {
        let want = graph(&inputs).unwrap();
        for fusion in [true, false] {
            gpu_device.set_fusion(fusion);
            let (got, profile) = device.profile(|| graph(&on_gpu)?.to_device(&cpu)).unwrap();
            let launches: u64 = (profile.kernels.iter())
                .filter(|k| !k.name.contains("fill.wgsl"))
                .map(|k| k.launches)
                .sum();
            if fusion {
                assert_eq!(launches, kernels, "{label}: {:#?}", profile.kernels);
            }
            assert_near(
                &format!("{label}, fusion {fusion}"),
                &got,
                &want,
                1e-6,
                1e-5,
            );
        }
    }
}

/// Eight pending terms of the same two inputs, summed: a quick count of each term's
/// reads (16) is over a kernel's bounds, but the kernel reads two buffers, so the sum
/// is one kernel. (A first count, once per use, ran the partial sum as a kernel of its
/// own once it passed seven.)
#[test]
fn inputs_that_pending_terms_share_are_read_once() {
    let Some(device) = gpu() else { return };
    let _switches = switches(&device);
    let mut rng = common::rng();
    let cpu = Device::cpu();
    let x = Tensor::rand([5, 7], DType::F32, &cpu, &mut rng).unwrap();
    let y = Tensor::rand([5, 7], DType::F32, &cpu, &mut rng).unwrap();
    let sum = |x: &Tensor, y: &Tensor| -> kiln::Result<Tensor> {
        let terms = [
            x.exp()?,
            x.sin()?,
            y.cos()?,
            x.tanh()?,
            x.mul(y)?,
            x.add(y)?,
            y.sub(x)?,
            y.sigmoid()?,
        ];
        let mut total = terms[0].clone();
        for t in &terms[1..] {
            total = total.add(t)?;
        }
        Ok(total)
    };
    let want = sum(&x, &y).unwrap();
    let (gx, gy) = (x.to_device(&device).unwrap(), y.to_device(&device).unwrap());
    let (got, profile) = device.profile(|| sum(&gx, &gy)?.to_device(&cpu)).unwrap();
    let kernels: Vec<_> = (profile.kernels.iter())
        .filter(|k| !k.name.contains("fill.wgsl"))
        .collect();
    assert_eq!(kernels.len(), 1, "{kernels:#?}");
    // Two reads of 35 f32 each.
    assert_eq!(
        (kernels[0].launches, kernels[0].bytes_read),
        (1, 2 * 140),
        "{kernels:#?}"
    );
    assert_near("eight terms", &got, &want, 1e-6, 1e-5);
}

fn chain_on_cpu(x: &Tensor, b: &Tensor) -> Tensor {
    let (x, b) = (
        x.to_device(&Device::cpu()).unwrap(),
        b.to_device(&Device::cpu()).unwrap(),
    );
    let y = x.add(&b).unwrap().gelu().unwrap().mul_scalar(0.5).unwrap();
    y.sub(&x).unwrap().exp().unwrap().reshape([63]).unwrap()
}

/// An LSTM and a GRU step whose inputs are all pending: gate pre-activations that are
/// a broadcast sum, states that are strided halves of wider tensors (compact copies),
/// upstream gradients that are pending products. The cells compute them in their
/// loads (one kernel each way, counted); outputs and every gradient match the CPU
/// backend, fused and unfused.
#[test]
fn recurrent_cells_take_pending_inputs_and_match_cpu() {
    let Some(device) = gpu() else { return };
    let _switches = switches(&device);
    let mut rng = common::rng();
    let (batch, hidden) = (5, 7);
    let mut rand = |dims: &[usize]| {
        Tensor::rand(dims.to_vec(), DType::F32, &Device::cpu(), &mut rng)
            .unwrap()
            .mul_scalar(2.0)
            .unwrap()
            .add_scalar(-1.0)
            .unwrap()
    };
    let inputs = [
        rand(&[batch, 4 * hidden]),
        rand(&[4 * hidden]),
        rand(&[batch, 2 * hidden]),
        rand(&[batch, 3 * hidden]),
        rand(&[batch, 3 * hidden]),
        rand(&[batch, 2 * hidden]),
        rand(&[batch, 2 * hidden]),
        rand(&[batch, hidden]),
    ];
    // The cells' outputs, then the gradient of each input.
    let run = |inputs: &[Tensor]| -> Vec<Tensor> {
        let vars: Vec<Tensor> = inputs
            .iter()
            .map(|t| t.detach().into_var().unwrap())
            .collect();
        let [xz, bias, cell, x, hp, h, w_lstm, w_gru] = &vars[..] else {
            unreachable!()
        };
        let z = xz.add(bias).unwrap();
        let c = cell.narrow(1, hidden, hidden).unwrap();
        let lstm = z.lstm_cell(&c).unwrap();
        let x = x.mul_scalar(1.5).unwrap();
        let hp = hp.tanh().unwrap();
        let h = h.narrow(1, 1, hidden).unwrap();
        let gru = x.gru_cell(&hp, &h).unwrap();
        let loss = lstm.mul(w_lstm).unwrap().sum_all().unwrap();
        let loss = loss
            .add(&gru.mul(w_gru).unwrap().sum_all().unwrap())
            .unwrap();
        let grads = loss.backward().unwrap();
        let mut out = vec![lstm, gru];
        out.extend(vars.iter().map(|v| grads.get(v).unwrap().clone()));
        out
    };
    let want = run(&inputs);
    let gpu_device = device.as_gpu().unwrap();
    for fusion in [true, false] {
        gpu_device.set_fusion(fusion);
        let moved = on_gpu(&device, &inputs);
        let (got, profile) = device
            .profile(|| {
                let got = run(&moved);
                device.synchronize()?;
                Ok(got)
            })
            .unwrap();
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_near(&format!("fusion {fusion}, value {k}"), g, w, 2e-5, 1e-4);
        }
        let cells = |name: &str| -> Vec<String> {
            let kernels = profile.kernels.iter().filter(|k| k.name.contains(name));
            kernels.map(|k| k.name.clone()).collect()
        };
        for name in [
            "lstm_cell.wgsl",
            "lstm_cell_backward",
            "gru_cell.wgsl",
            "gru_cell_backward",
        ] {
            let found = cells(name);
            assert_eq!(found.len(), 1, "fusion {fusion}: {name}: {found:?}");
            assert_eq!(found[0].contains("fused"), fusion, "{}", found[0]);
        }
    }
    gpu_device.set_fusion(true);
}

/// A matmul whose output a bias add and an activation read computes them in its
/// stores (one kernel, on each kernel with a store section), writing its own output
/// too, and matches the CPU whether that output is held or dropped.
#[test]
fn a_matmul_takes_its_bias_and_activation_as_an_epilogue() {
    let Some(device) = gpu() else { return };
    let _switches = switches(&device);
    let mut rng = common::rng();
    let x = Tensor::rand([37, 29], DType::F32, &Device::cpu(), &mut rng).unwrap();
    let w = Tensor::rand([29, 70], DType::F32, &Device::cpu(), &mut rng).unwrap();
    let b = Tensor::rand([70], DType::F32, &Device::cpu(), &mut rng).unwrap();
    let layer = |x: &Tensor, w: &Tensor, b: &Tensor| -> kiln::Result<Tensor> {
        x.matmul(w)?.add(b)?.add_scalar(-0.75)?.gelu()
    };
    let want = layer(&x, &w, &b).unwrap();
    let gpu_device = device.as_gpu().unwrap();
    let (xg, wg, bg) = (
        common::on_strided(&device, &x),
        common::on_strided(&device, &w),
        common::on_strided(&device, &b),
    );
    for variant in [
        MatmulVariant::Tiled,
        MatmulVariant::SmallTiled,
        MatmulVariant::Blocked,
    ] {
        gpu_device.set_matmul_variant(variant).unwrap();
        let (got, profile) = device
            .profile(|| layer(&xg, &wg, &bg)?.to_f64_vec())
            .unwrap();
        let got = Tensor::from_vec(got, [37, 70], &Device::cpu()).unwrap();
        assert_near(&format!("{variant:?}"), &got, &want, 1e-5, 1e-4);
        one_kernel_with_the_epilogue(&profile, &format!("{variant:?}"));
        // The matmul's output held as well (as autograd holds it): the kernel writes
        // both.
        let (got, profile) = device
            .profile(|| {
                let y = xg.matmul(&wg)?;
                let z = y.add(&bg)?.add_scalar(-0.75)?.gelu()?.to_f64_vec()?;
                Ok((y.to_f64_vec()?, z))
            })
            .unwrap();
        let plain = x.matmul(&w).unwrap();
        let y = Tensor::from_vec(got.0, [37, 70], &Device::cpu()).unwrap();
        let z = Tensor::from_vec(got.1, [37, 70], &Device::cpu()).unwrap();
        assert_near(&format!("{variant:?}: held"), &y, &plain, 1e-5, 1e-4);
        assert_near(&format!("{variant:?}: after"), &z, &want, 1e-5, 1e-4);
        one_kernel_with_the_epilogue(&profile, &format!("{variant:?}: held"));
    }
}

/// `layer` of `inputs` (moved to the GPU with their layouts) with the matmul variant
/// `variant`, profiled; the result back on the CPU, and the variant restored.
fn profile_layer(
    device: &Device,
    variant: MatmulVariant,
    layer: impl Fn(&Tensor, &Tensor, &Tensor) -> kiln::Result<Tensor>,
    inputs: [&Tensor; 3],
) -> (Tensor, kiln::Profile) {
    let gpu_device = device.as_gpu().unwrap();
    let default = gpu_device.matmul_variant();
    gpu_device.set_matmul_variant(variant).unwrap();
    let [x, w, b] = inputs.map(|t| common::on_strided(device, t));
    let (got, profile) = device
        .profile(|| layer(&x, &w, &b)?.to_device(&Device::cpu()))
        .unwrap();
    gpu_device.set_matmul_variant(default).unwrap();
    (got, profile)
}

/// A matmul whose operands are both pending copies, with a bias and activation after
/// it, takes a bind group for each prologue and the epilogue besides its own: four,
/// where the adapter allows a kernel four (`GpuDevice::kernel_groups`). Mesa's
/// lavapipe before 23.3 crashes on a fourth uniform buffer in this kernel (its uniform
/// inlining writes past its table), so there the copy of one operand runs first.
#[test]
fn a_matmul_with_two_prologues_and_an_epilogue_stays_within_its_bind_groups() {
    let Some(device) = gpu() else { return };
    let _switches = switches(&device);
    let mut rng = common::rng();
    let x = Tensor::rand([29, 37], DType::F32, &Device::cpu(), &mut rng).unwrap();
    let w = Tensor::rand([70, 29], DType::F32, &Device::cpu(), &mut rng).unwrap();
    let b = Tensor::rand([70], DType::F32, &Device::cpu(), &mut rng).unwrap();
    let layer = |x: &Tensor, w: &Tensor, b: &Tensor| -> kiln::Result<Tensor> {
        let lhs = x.t()?.contiguous()?;
        let rhs = w.t()?.contiguous()?;
        // A power's exponent decides branches, which lavapipe inlines; as the second
        // scalar op's, its offset in the epilogue's params is one that crashed 22.3.
        lhs.matmul(&rhs)?
            .add(b)?
            .add_scalar(0.25)?
            .pow_scalar(1.5)?
            .gelu()
    };
    let want = layer(&x, &w, &b).unwrap();
    let (got, profile) = profile_layer(&device, MatmulVariant::Tiled, layer, [&x, &w, &b]);
    assert_near("two prologues and an epilogue", &got, &want, 1e-5, 1e-4);
    let names = kernel_names(&profile);
    let matmul: Vec<&&str> = names
        .iter()
        .filter(|n| n.starts_with("matmul/matmul.wgsl"))
        .collect();
    assert_eq!(matmul.len(), 1, "{names:?}");
    let prologues = matmul[0].matches("+ fused").count();
    let epilogue = "=> fused add,add_scalar,pow_scalar,gelu";
    assert!(matmul[0].contains(epilogue), "{names:?}");
    let groups = device.as_gpu().unwrap().kernel_groups();
    // The kernel's own group, the epilogue's, and a prologue for each operand the
    // groups left allow; the other operand's copy runs alone, before it.
    assert_eq!(prologues, (groups - 2).min(2), "{groups} groups: {names:?}");
    assert_eq!(names.len(), 1 + 2 - prologues, "{groups} groups: {names:?}");
}

/// Split-k (k = 1030 in two chunks) with operands that are pending copies and a bias
/// add and activation after it: the chunks' kernel computes the copies in its loads and
/// the sum of the chunks takes the epilogue, two kernels in all, values as on the CPU.
#[test]
fn split_k_takes_its_operands_copies_and_its_epilogue() {
    let Some(device) = gpu() else { return };
    let _switches = switches(&device);
    let mut rng = common::rng();
    let x = Tensor::rand([1030, 37], DType::F32, &Device::cpu(), &mut rng).unwrap();
    let w = Tensor::rand([70, 1030], DType::F32, &Device::cpu(), &mut rng).unwrap();
    let b = Tensor::rand([70], DType::F32, &Device::cpu(), &mut rng).unwrap();
    let layer = |x: &Tensor, w: &Tensor, b: &Tensor| -> kiln::Result<Tensor> {
        let lhs = x.t()?.contiguous()?;
        let rhs = w.t()?.contiguous()?;
        lhs.matmul(&rhs)?.add(b)?.add_scalar(-0.75)?.gelu()
    };
    let want = layer(&x, &w, &b).unwrap();
    let (got, profile) = profile_layer(&device, MatmulVariant::SplitK, layer, [&x, &w, &b]);
    assert_near("split-k", &got, &want, 1e-5, 1e-4);
    let names = kernel_names(&profile);
    assert_eq!(names.len(), 2, "{names:?}");
    let has = |kernel: &str, part: &str| {
        names
            .iter()
            .any(|n| n.starts_with(kernel) && n.contains(part))
    };
    assert!(has("matmul/matmul.wgsl", "+ fused to_dtype"), "{names:?}");
    assert!(
        has("reduce/reduce_columns.wgsl", "=> fused add,add_scalar,gelu"),
        "{names:?}"
    );
}

/// The implicit convolution runs a layer in one kernel: the copy that compacts a
/// permuted input in its loads, the bias and activation in its stores; values as on
/// the CPU.
#[test]
fn implicit_conv_takes_its_input_copy_and_its_epilogue() {
    use kiln::Conv2dOptions;
    let Some(device) = gpu() else { return };
    let _switches = switches(&device);
    let mut rng = common::rng();
    let cpu = Device::cpu();
    let x = Tensor::rand([2, 6, 13, 11], DType::F32, &cpu, &mut rng).unwrap();
    let x = x.permute(&[0, 1, 3, 2]).unwrap();
    let w = Tensor::rand([40, 6, 3, 3], DType::F32, &cpu, &mut rng).unwrap();
    let b = Tensor::rand([40], DType::F32, &cpu, &mut rng).unwrap();
    let options = Conv2dOptions {
        padding: (1, 1),
        ..Default::default()
    };
    let layer = |x: &Tensor, w: &Tensor, b: &Tensor| x.conv2d(w, Some(b), options)?.relu();
    let want = layer(&x, &w, &b).unwrap();
    let (xg, wg, bg) = (
        common::on_strided(&device, &x),
        common::on_strided(&device, &w),
        common::on_strided(&device, &b),
    );
    let (got, profile) = profile_implicit(&device, || layer(&xg, &wg, &bg)?.to_f64_vec());
    let got = Tensor::from_vec(got, [2, 40, 11, 13], &cpu).unwrap();
    assert_near("implicit conv", &got, &want, 1e-5, 1e-4);
    one_implicit_conv_with_a_copy_and_relu(&profile);
}

/// A strided transposed convolution by phases is one kernel: DCGAN's 4x4 taps at stride
/// 2 with padding 1 take 2x2 a phase, straight from the kernel (no pad of the weights;
/// their view compacted in the product's loads), and the product stores the phases
/// interleaved, its grid's first row and column dropped, with the bias and activation
/// in its stores (no copy to interleave, none to cut). Values as on the CPU, over odd
/// sizes and an output padding.
#[test]
fn transposed_conv_by_phases_stores_its_output_interleaved() {
    use kiln::Conv2dOptions;
    let Some(device) = gpu() else { return };
    let _switches = switches(&device);
    let mut rng = common::rng();
    let cpu = Device::cpu();
    let x = Tensor::rand([2, 16, 7, 5], DType::F32, &cpu, &mut rng).unwrap();
    let w = Tensor::rand([16, 24, 4, 4], DType::F32, &cpu, &mut rng).unwrap();
    let b = Tensor::rand([24], DType::F32, &cpu, &mut rng).unwrap();
    let options = Conv2dOptions {
        stride: (2, 2),
        padding: (1, 1),
        ..Default::default()
    };
    let layer = |x: &Tensor, w: &Tensor, b: &Tensor| {
        x.conv_transpose2d(w, Some(b), options, (1, 0))?.relu()
    };
    let want = layer(&x, &w, &b).unwrap();
    assert_eq!(want.dims(), [2, 24, 15, 10]);
    let (xg, wg, bg) = (
        x.to_device(&device).unwrap(),
        w.to_device(&device).unwrap(),
        b.to_device(&device).unwrap(),
    );
    let (got, profile) = profile_implicit(&device, || layer(&xg, &wg, &bg)?.to_f64_vec());
    let got = Tensor::from_vec(got, [2, 24, 15, 10], &cpu).unwrap();
    assert_near("transposed conv by phases", &got, &want, 1e-5, 1e-4);
    one_implicit_conv_with_a_copy_and_relu(&profile);
}

/// The profile's one kernel (outputs are poisoned: not counting the fills) is the
/// tiled implicit convolution with a copy in its loads and the bias and ReLU in its
/// stores.
fn one_implicit_conv_with_a_copy_and_relu(profile: &kiln::Profile) {
    let names = kernel_names(profile);
    assert_eq!(names.len(), 1, "{names:?}");
    let name = names[0];
    assert!(
        name.starts_with("matmul/matmul.wgsl:main (Conv2dImplicit)"),
        "{names:?}"
    );
    assert!(name.contains("+ fused to_dtype"), "{names:?}");
    assert!(name.contains("=> fused add,relu"), "{names:?}");
}

/// With the columns read in place, a convolution's forward pass and its input
/// gradient (a stride-1 transposed convolution, run as a convolution) unfold and fold
/// nothing: no im2col, no col2im, and the gradient's permuted filters are copied
/// inside its product's loads. Gradients as on the CPU.
#[test]
fn implicit_conv_training_step_writes_no_columns() {
    use kiln::Conv2dOptions;
    let Some(device) = gpu() else { return };
    let _switches = switches(&device);
    let mut rng = common::rng();
    let cpu = Device::cpu();
    let x = Tensor::rand([2, 6, 12, 11], DType::F32, &cpu, &mut rng).unwrap();
    let w = Tensor::rand([40, 6, 5, 5], DType::F32, &cpu, &mut rng).unwrap();
    let step = |x: &Tensor, w: &Tensor| -> kiln::Result<(Tensor, Tensor)> {
        let (x, w) = (x.detach().into_var()?, w.detach().into_var()?);
        let y = x.conv2d(&w, None, Conv2dOptions::default())?;
        let grads = y.square()?.sum_all()?.backward()?;
        Ok((
            grads.get(&x).unwrap().clone(),
            grads.get(&w).unwrap().clone(),
        ))
    };
    let (want_x, want_w) = step(&x, &w).unwrap();
    let (xg, wg) = (x.to_device(&device).unwrap(), w.to_device(&device).unwrap());
    let (got, profile) = profile_implicit(&device, || {
        let (gx, gw) = step(&xg, &wg)?;
        Ok((gx.to_device(&cpu)?, gw.to_device(&cpu)?))
    });
    assert_near("input gradient", &got.0, &want_x, 1e-5, 1e-4);
    assert_near("weight gradient", &got.1, &want_w, 1e-5, 1e-4);
    let names = kernel_names(&profile);
    let folds = names
        .iter()
        .filter(|n| n.contains("im2col") || n.contains("col2im"));
    assert_eq!(folds.count(), 0, "{names:?}");
    let products: Vec<_> = names
        .iter()
        .filter(|n| n.starts_with("matmul/matmul.wgsl:main (Conv2dImplicit"))
        .collect();
    assert_eq!(products.len(), 2, "forward and input gradient: {names:?}");
    assert!(
        products.iter().any(|n| n.contains("+ fused to_dtype")),
        "the gradient's filters copied in its loads: {names:?}"
    );
}

/// `f`'s value and profile on `device` with its convolutions' columns read in place.
fn profile_implicit<T>(device: &Device, f: impl FnOnce() -> kiln::Result<T>) -> (T, kiln::Profile) {
    let gpu = device.as_gpu().unwrap();
    let default = gpu.conv_algorithm();
    gpu.set_conv_algorithm(ConvAlgorithm::Implicit);
    let profiled = device.profile(f);
    gpu.set_conv_algorithm(default);
    profiled.unwrap()
}

/// The profile's one kernel (outputs are poisoned: not counting the fills) is a matmul
/// with the layer's epilogue.
fn one_kernel_with_the_epilogue(profile: &kiln::Profile, label: &str) {
    one_kernel_with(profile, label, "=> fused add,add_scalar,gelu");
}

/// The profile's kernels, not counting the fills (outputs are poisoned).
fn kernel_names(profile: &kiln::Profile) -> Vec<&str> {
    profile
        .kernels
        .iter()
        .filter(|k| !k.name.contains("fill.wgsl"))
        .map(|k| k.name.as_str())
        .collect()
}

/// The profile's one kernel, not counting the fills, has `part` in its name.
fn one_kernel_with(profile: &kiln::Profile, label: &str, part: &str) {
    let names = kernel_names(profile);
    assert_eq!(names.len(), 1, "{label}: {names:?}");
    assert!(names[0].contains(part), "{label}: {names:?}");
}

/// Max pooling's backward takes the mask of the activation before the pool as its
/// epilogue (a CNN's ReLU, then the pool): one kernel where there were two, and the
/// pool's gradient never written; values as on the CPU, outputs poisoned, on an odd
/// image with overlapping, padded windows.
#[test]
fn max_pool_backward_takes_the_activation_before_it_as_an_epilogue() {
    let Some(device) = gpu() else { return };
    let _switches = switches(&device);
    let gpu_device = device.as_gpu().unwrap().clone();
    let mut rng = common::rng();
    let (x, b, r) = (
        common::rand(&[2, 3, 13, 11], &mut rng),
        common::rand(&[3, 1, 1], &mut rng),
        common::rand(&[2, 3, 7, 6], &mut rng),
    );
    // The input's gradient through a bias, a ReLU and a pool of 3x3 windows, stride 2,
    // padding 1.
    let grad = |x: &Tensor, b: &Tensor, r: &Tensor| -> kiln::Result<Tensor> {
        let x = x.detach().into_var()?;
        let pooled = x.add(b)?.relu()?.max_pool2d((3, 3), (2, 2), (1, 1))?;
        let grads = pooled.mul(r)?.sum_all()?.backward()?;
        Ok(grads.get(&x).expect("a gradient").clone())
    };
    let want = grad(&x, &b, &r).unwrap();
    let (xg, bg, rg) = (
        common::on_strided(&device, &x),
        common::on_strided(&device, &b),
        common::on_strided(&device, &r),
    );
    let xv = xg.detach().into_var().unwrap();
    let pooled = xv
        .add(&bg)
        .and_then(|t| t.relu())
        .and_then(|t| t.max_pool2d((3, 3), (2, 2), (1, 1)))
        .unwrap();
    let loss = pooled.mul(&rg).unwrap().sum_all().unwrap();
    gpu_device.synchronize().unwrap();
    let (got, profile) = device
        .profile(|| {
            let grads = loss.backward()?;
            grads.get(&xv).expect("a gradient").to_f64_vec()
        })
        .unwrap();
    let got = Tensor::from_vec(got, [2, 3, 13, 11], &Device::cpu()).unwrap();
    assert_near("the input's gradient", &got, &want, 1e-6, 1e-5);
    let names = kernel_names(&profile);
    let pool: Vec<&&str> = names
        .iter()
        .filter(|n| n.contains("max_pool2d_backward"))
        .collect();
    assert_eq!(pool.len(), 1, "{names:?}");
    assert!(pool[0].contains("=> fused"), "{names:?}");
    // The one kernel of its own: the pooled output's gradient (`r` times the seed),
    // which the pool reads.
    let alone: Vec<&&str> = names.iter().filter(|n| n.starts_with("fused ")).collect();
    assert_eq!(alone, [&"fused full,mul [F32]"], "{names:?}");
}

/// Row and column reductions take the elementwise ops after them as an epilogue (as
/// layer norm's backward takes `rsqrt(var + eps)`): one kernel, the reduction's output
/// written too where it is held, values as on the CPU.
#[test]
fn reductions_take_the_ops_after_them_as_an_epilogue() {
    let Some(device) = gpu() else { return };
    let _switches = switches(&device);
    let mut rng = common::rng();
    // 70 rows of 12: the one-row-per-invocation kernel on software adapters; 5 of 13
    // the workgroup kernel; [300, 7] over its first dim the column kernel with lanes.
    for (shape, dim) in [([70usize, 12usize], -1isize), ([5, 13], -1), ([300, 7], 0)] {
        let x = Tensor::rand(shape, DType::F32, &Device::cpu(), &mut rng).unwrap();
        let after = |x: &Tensor| -> kiln::Result<Tensor> {
            x.mean(&[dim], false)?.add_scalar(1e-5)?.rsqrt()
        };
        let want = after(&x).unwrap();
        let xg = common::on_strided(&device, &x);
        let label = format!("{shape:?} over {dim}");
        let (got, profile) = device.profile(|| after(&xg)?.to_f64_vec()).unwrap();
        let got = Tensor::from_vec(got, want.dims().to_vec(), &Device::cpu()).unwrap();
        assert_near(&label, &got, &want, 1e-5, 1e-4);
        one_kernel_with(&profile, &label, "=> fused add_scalar,rsqrt");
        let (got, profile) = device
            .profile(|| {
                let m = xg.mean(&[dim], false)?;
                let r = m.add_scalar(1e-5)?.rsqrt()?.to_f64_vec()?;
                Ok((m.to_f64_vec()?, r))
            })
            .unwrap();
        let mean = x.mean(&[dim], false).unwrap();
        let m = Tensor::from_vec(got.0, mean.dims().to_vec(), &Device::cpu()).unwrap();
        let r = Tensor::from_vec(got.1, want.dims().to_vec(), &Device::cpu()).unwrap();
        assert_near(&format!("{label}: held"), &m, &mean, 1e-6, 1e-5);
        assert_near(&format!("{label}: after"), &r, &want, 1e-5, 1e-4);
        one_kernel_with(
            &profile,
            &format!("{label}: held"),
            "=> fused add_scalar,rsqrt",
        );
    }
}

/// An epilogue skips the launch's own output where nothing else can read it (a
/// backward pass's products and sums): the kernel writes the epilogue's elements alone,
/// half the bytes of the form that keeps both, with the CPU's values either way. On
/// each kind of kernel that takes epilogues, in both of the row kernels' builds, and
/// through a cast to i32 (the output binding takes the epilogue's dtype). A launch
/// output something else still holds (a view of it, or an intermediate the epilogue
/// computes inline) is written, and reads back right afterwards.
#[test]
fn an_epilogue_skips_the_output_nothing_else_reads() {
    let Some(device) = gpu() else { return };
    let _switches = switches(&device);
    let mut rng = common::rng();
    let cpu = Device::cpu();
    // Whole numbers, so that products, sums and the cast are exact on both devices.
    let whole = |shape: [usize; 2], rng: &mut Rng| {
        let t = Tensor::randn(shape, DType::F32, &cpu, rng).unwrap();
        let v: Vec<f32> = t.to_vec::<f32>().unwrap();
        let v: Vec<f32> = v.iter().map(|x| (3.0 * x).floor()).collect();
        Tensor::from_vec(v, shape, &cpu).unwrap()
    };
    let w = whole([29, 70], &mut rng);
    type Host = fn(&Tensor, &Tensor) -> kiln::Result<Tensor>;
    let hosts: [(&str, [usize; 2], Host); 6] = [
        ("matmul", [37, 29], |x, w| x.matmul(w)),
        ("row sum", [37, 29], |x, _| x.sum(&[-1], true)),
        ("column sum", [300, 7], |x, _| x.sum(&[0], true)),
        ("softmax, rows of 12", [70, 12], |x, _| {
            x.mul_scalar(0.25)?.softmax(-1)
        }),
        ("softmax, rows of 13", [5, 13], |x, _| {
            x.mul_scalar(0.25)?.softmax(-1)
        }),
        ("layer norm, rows of 12", [70, 12], |x, _| {
            x.layer_norm(&[12], None, None, 1e-5)
        }),
    ];
    let gpu_device = device.as_gpu().unwrap();
    for variant in [MatmulVariant::Tiled, MatmulVariant::Blocked] {
        gpu_device.set_matmul_variant(variant).unwrap();
        for (name, shape, host) in hosts {
            let label = format!("{name} ({variant:?})");
            let x = whole(shape, &mut rng);
            let (xg, wg) = (
                common::on_strided(&device, &x),
                common::on_strided(&device, &w),
            );
            let after = |y: &Tensor| y.mul_scalar(0.01)?.add_scalar(0.5)?.tanh();
            let own = host(&x, &w).unwrap();
            let want = after(&own).unwrap();
            let (dropped, alone) = device
                .profile(|| {
                    let z = after(&host(&xg, &wg)?)?;
                    z.to_f64_vec()
                })
                .unwrap();
            let dropped = Tensor::from_vec(dropped, want.dims().to_vec(), &cpu).unwrap();
            assert_near(&label, &dropped, &want, 1e-5, 1e-5);
            // The epilogue's kernel, alone but for the fills of a missing weight.
            let epilogue = "=> fused mul_scalar,add_scalar,tanh";
            let names = kernel_names(&alone);
            let mut others = names.iter().filter(|n| !n.contains(epilogue));
            assert!(
                others.all(|n| n.starts_with("fused full")),
                "{label}: {names:?}"
            );
            assert!(
                names.iter().any(|n| n.contains(epilogue)),
                "{label}: {names:?}"
            );
            let ((kept, after_kept), both) = device
                .profile(|| {
                    let y = host(&xg, &wg)?;
                    let z = after(&y)?.to_f64_vec()?;
                    Ok((y.to_f64_vec()?, z))
                })
                .unwrap();
            let kept = Tensor::from_vec(kept, own.dims().to_vec(), &cpu).unwrap();
            let after_kept = Tensor::from_vec(after_kept, want.dims().to_vec(), &cpu).unwrap();
            assert_near(&format!("{label}: held"), &kept, &own, 1e-5, 1e-5);
            assert_near(&format!("{label}: after"), &after_kept, &want, 1e-5, 1e-5);
            let written = |p: &kiln::Profile| -> u64 {
                let kernels = p.kernels.iter().filter(|k| k.name.contains(epilogue));
                kernels.map(|k| k.bytes_written).sum()
            };
            assert_eq!(
                2 * written(&alone),
                written(&both),
                "{label}: bytes written"
            );
        }
    }

    // Cast to i32: the kernel's output binding holds the epilogue's i32 values.
    let x = whole([37, 29], &mut rng);
    let want = x.matmul(&w).unwrap().to_dtype(DType::I32).unwrap();
    let (xg, wg) = (
        common::on_strided(&device, &x),
        common::on_strided(&device, &w),
    );
    let got = xg.matmul(&wg).unwrap().to_dtype(DType::I32).unwrap();
    assert_eq!(got.to_vec::<i32>().unwrap(), want.to_vec::<i32>().unwrap());

    // Held elsewhere: a view of the output, or the inlined bias add.
    let b = whole([1, 70], &mut rng);
    let bg = b.to_device(&device).unwrap();
    let y = xg.matmul(&wg).unwrap();
    let view = y.reshape([70, 37]).unwrap();
    let z = y.add(&bg).unwrap().exp().unwrap();
    drop(y);
    z.to_f64_vec().unwrap();
    let plain = x.matmul(&w).unwrap();
    let want_view = plain.reshape([70, 37]).unwrap();
    let view = Tensor::from_vec(view.to_f64_vec().unwrap(), [70, 37], &cpu).unwrap();
    assert_near("a view held", &view, &want_view, 1e-5, 1e-5);
    let biased = xg.matmul(&wg).unwrap().add(&bg).unwrap();
    let z = biased.mul_scalar(0.5).unwrap();
    z.to_f64_vec().unwrap();
    let want_biased = plain.add(&b).unwrap();
    let biased = Tensor::from_vec(biased.to_f64_vec().unwrap(), [37, 70], &cpu).unwrap();
    assert_near("an inlined add held", &biased, &want_biased, 1e-5, 1e-5);
}

/// Two residual sums in a row, as a transformer's blocks make them: `x1 = x + x W1 + b1`
/// and `x2 = x1 + x1 W2 + b2`. Each runs as its matmul's epilogue, the second after the
/// first (its matmul reads `x1`), with no kernel of their own, whichever of the two is
/// asked for first; values as on the CPU.
#[test]
fn chained_residual_sums_run_as_their_matmuls_epilogues() {
    let Some(device) = gpu() else { return };
    let _switches = switches(&device);
    let mut rng = common::rng();
    let cpu = Device::cpu();
    let t = |shape: &[usize], rng: &mut Rng| {
        Tensor::rand(shape.to_vec(), DType::F32, &cpu, rng)
            .unwrap()
            .add_scalar(-0.5)
            .unwrap()
    };
    let (x, w1, b1, w2, b2) = (
        t(&[37, 29], &mut rng),
        t(&[29, 29], &mut rng),
        t(&[29], &mut rng),
        t(&[29, 29], &mut rng),
        t(&[29], &mut rng),
    );
    let blocks = |ts: &[Tensor]| -> kiln::Result<(Tensor, Tensor)> {
        let x1 = ts[0].add(&ts[0].matmul(&ts[1])?.add(&ts[2])?)?;
        let x2 = x1.add(&x1.matmul(&ts[3])?.add(&ts[4])?)?;
        Ok((x1, x2))
    };
    let inputs = [x, w1, b1, w2, b2];
    let (want1, want2) = blocks(&inputs).unwrap();
    let gpu_device = device.as_gpu().unwrap();
    gpu_device.set_matmul_variant(MatmulVariant::Tiled).unwrap();
    let moved: Vec<Tensor> = inputs
        .iter()
        .map(|t| common::on_strided(&device, t))
        .collect();
    for first_x1 in [false, true] {
        let label = format!("x1 read first: {first_x1}");
        let ((got1, got2), profile) = device
            .profile(|| {
                let (x1, x2) = blocks(&moved)?;
                match first_x1 {
                    true => {
                        let v1 = x1.to_f64_vec()?;
                        Ok((v1, x2.to_f64_vec()?))
                    }
                    false => {
                        let v2 = x2.to_f64_vec()?;
                        Ok((x1.to_f64_vec()?, v2))
                    }
                }
            })
            .unwrap();
        let got1 = Tensor::from_vec(got1, [37, 29], &cpu).unwrap();
        let got2 = Tensor::from_vec(got2, [37, 29], &cpu).unwrap();
        assert_near(&format!("{label}: x1"), &got1, &want1, 1e-5, 1e-4);
        assert_near(&format!("{label}: x2"), &got2, &want2, 1e-5, 1e-4);
        let names = kernel_names(&profile);
        let launches = |part: &str| -> u64 {
            let kernels = profile
                .kernels
                .iter()
                .filter(|k| !k.name.contains("fill.wgsl"));
            kernels
                .filter(|k| k.name.contains(part))
                .map(|k| k.launches)
                .sum()
        };
        assert_eq!(launches("=> fused add,add [F32]"), 2, "{label}: {names:?}");
        assert_eq!(launches(""), 2, "{label}: {names:?}");
    }
}

/// Layer norm's backward is deferred with its weight's products as a side output: the
/// residual gradient it is added to (`x + layer_norm(x)`) runs as its epilogue, which
/// leaves out dx itself (nothing else holds it, though the products' storage follows
/// the launch); the products come out right whether they are read after the launch
/// ran with its epilogue or first, which runs it alone. Rows of 12 (the one-row-per-
/// invocation kernel on software adapters) and of 13 (the workgroup kernel).
#[test]
fn layer_norm_backward_takes_the_residual_add_and_keeps_its_products() {
    let Some(device) = gpu() else { return };
    let _switches = switches(&device);
    let mut rng = common::rng();
    let cpu = Device::cpu();
    for k in [12usize, 13] {
        let x = Tensor::randn([6, 5, k], DType::F32, &cpu, &mut rng).unwrap();
        let w = Tensor::randn([k], DType::F32, &cpu, &mut rng).unwrap();
        let b = Tensor::randn([k], DType::F32, &cpu, &mut rng).unwrap();
        let r = Tensor::randn([6, 5, k], DType::F32, &cpu, &mut rng).unwrap();
        // Gradients of x, the weight and the bias; `products_first` reads the weight's
        // (a column sum of the products) before the input's.
        let grads = |device: &Device, products_first: bool| -> kiln::Result<[Vec<f64>; 3]> {
            let vars: Vec<Tensor> = [&x, &w, &b]
                .iter()
                .map(|t| common::on_strided(device, t).detach().into_var())
                .collect::<kiln::Result<_>>()?;
            let (x, w, b) = (&vars[0], &vars[1], &vars[2]);
            let z = x.add(&x.layer_norm(&[k], Some(w), Some(b), 1e-5)?)?;
            let g = z.backward_from(&r.to_device(device)?)?;
            let read = |t: &Tensor| g.get(t).unwrap().to_f64_vec();
            Ok(match products_first {
                true => {
                    let dw = read(w)?;
                    [read(x)?, dw, read(b)?]
                }
                false => [read(x)?, read(w)?, read(b)?],
            })
        };
        let want = grads(&cpu, false).unwrap();
        let mut written = Vec::new();
        for products_first in [false, true] {
            let label = format!("rows of {k}, products first {products_first}");
            let (got, profile) = device.profile(|| grads(&device, products_first)).unwrap();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let g = Tensor::from_vec(g.clone(), [g.len()], &cpu).unwrap();
                let w = Tensor::from_vec(w.clone(), [w.len()], &cpu).unwrap();
                assert_near(&format!("{label}: gradient {i}"), &g, &w, 1e-5, 1e-4);
            }
            let backward: Vec<_> = profile
                .kernels
                .iter()
                .filter(|k| k.name.contains("layer_norm_backward"))
                .collect();
            let names: Vec<_> = backward.iter().map(|k| k.name.as_str()).collect();
            assert_eq!(backward.len(), 1, "{label}: {names:?}");
            let adds = profile
                .kernels
                .iter()
                .filter(|k| k.name.starts_with("fused add"));
            match products_first {
                // Run alone, the add a kernel of its own.
                true => assert!(!names[0].contains("=>"), "{label}: {names:?}"),
                false => {
                    assert!(
                        names[0].ends_with("=> fused add [F32]"),
                        "{label}: {names:?}"
                    );
                    assert_eq!(adds.count(), 0, "{label}: {:?}", profile.kernels);
                }
            }
            written.push(backward[0].bytes_written);
        }
        // With the epilogue, the products and the sum; alone, dx and the products:
        // buffers of one size, two each (dx kept too would make three).
        assert_eq!(written[0], written[1], "rows of {k}: bytes written");
    }
}

/// Column reductions left pending together (a backward pass's bias gradients) run
/// several to a launch when the first is needed: each gives the bits it gives alone
/// and the CPU's values, whatever its op, shape and lanes; a NaN in a column comes
/// through max; one whose input is still pending (a strided view's copy) runs alone.
#[test]
fn pending_column_reductions_run_together() {
    let Some(device) = gpu() else { return };
    let _switches = switches(&device);
    let mut rng = common::rng();
    let cpu = Device::cpu();
    // [outer, k, inner] reduced over k: long columns (lanes per output), few long
    // rows, a middle dim, a single row.
    let shapes: [(&[usize], isize); 6] = [
        (&[300, 7], 0),
        (&[5, 33, 9], 1),
        (&[1000, 3], 0),
        (&[17, 129], 0),
        (&[2, 1, 40], 1),
        (&[4099, 12], 0),
    ];
    let ops = [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max, ReduceOp::Min];
    let mut inputs = Vec::new();
    for i in 0..21 {
        let (shape, dim) = shapes[i % shapes.len()];
        // Whole numbers: the sums are exact on both devices, however they group.
        let normal = Tensor::randn(shape, DType::F32, &cpu, &mut rng).unwrap();
        let whole: Vec<f32> = normal
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|v| (3.0 * v).floor())
            .collect();
        let mut x = Tensor::from_vec(whole, shape.to_vec(), &cpu).unwrap();
        if i == 2 {
            let mut v = x.to_f64_vec().unwrap();
            v[5] = f64::NAN;
            x = Tensor::from_vec(v, shape.to_vec(), &cpu)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap();
        }
        inputs.push((x, dim, ops[i % ops.len()]));
    }
    let reduce = |x: &Tensor, dim: isize, op: ReduceOp| x.reduce(op, &[dim], false).unwrap();
    let moved: Vec<Tensor> = inputs
        .iter()
        .map(|(x, ..)| x.to_device(&device).unwrap())
        .collect();
    let strided_cpu = common::transposed(&[9, 70], &mut rng);
    let strided = common::on_strided(&device, &strided_cpu);
    // One at a time: each read before the next is recorded.
    let alone: Vec<Vec<f64>> = inputs
        .iter()
        .zip(&moved)
        .map(|((_, dim, op), x)| reduce(x, *dim, *op).to_f64_vec().unwrap())
        .collect();
    let (together, profile) = device
        .profile(|| {
            let pending: Vec<Tensor> = inputs
                .iter()
                .zip(&moved)
                .map(|((_, dim, op), x)| reduce(x, *dim, *op))
                .chain([reduce(&strided, 0, ReduceOp::Sum)])
                .collect();
            pending
                .iter()
                .map(Tensor::to_f64_vec)
                .collect::<kiln::Result<Vec<_>>>()
        })
        .unwrap();
    for (i, ((x, dim, op), got)) in inputs.iter().zip(&together).enumerate() {
        let label = format!("{op:?} of {:?} over {dim}", x.dims());
        assert_eq!(got.len(), alone[i].len(), "{label}");
        for (a, b) in got.iter().zip(&alone[i]) {
            assert!(
                a.to_bits() == b.to_bits() || a.is_nan() && b.is_nan(),
                "{label}: {a} alone {b}"
            );
        }
        let want = reduce(x, *dim, *op);
        let got = Tensor::from_vec(got.clone(), want.dims().to_vec(), &cpu).unwrap();
        assert_near(&label, &got, &want, 1e-5, 1e-4);
    }
    assert!(together[2].iter().any(|v| v.is_nan()), "max lost its NaN");
    let want = reduce(&strided_cpu, 0, ReduceOp::Sum);
    let got = Tensor::from_vec(together[21].clone(), want.dims().to_vec(), &cpu).unwrap();
    assert_near("sum of a strided view", &got, &want, 1e-5, 1e-4);
    // 21 with computed inputs, as many to a launch as the device binds (two buffers
    // each), and the strided view's alone.
    let gpu = device.as_gpu().unwrap();
    let limit = gpu.summary().max_storage_buffers_per_shader_stage as usize;
    let per_launch = (limit / 2).min(kiln::backend::MAX_COLUMN_GROUP);
    let launches: u64 = profile
        .kernels
        .iter()
        .filter(|k| k.name.starts_with("reduce/reduce_columns.wgsl"))
        .map(|k| k.launches)
        .sum();
    assert_eq!(
        launches,
        21usize.div_ceil(per_launch) as u64 + 1,
        "{:#?}",
        profile.kernels
    );
}

/// An optimizer step's gradients that are pending sums of computed values (a layer
/// seen twice in a step) run several to a launch, one bind group each, as many as
/// kiln's four params slots allow: odd lengths, a strided and a broadcast read, f16
/// beside f32. Each gives the bits it gives alone, outputs poisoned, and the step is
/// the CPU's. One that reads another's expression and one too long to join run alone.
#[test]
fn gradient_sums_run_together() {
    let Some(device) = gpu() else { return };
    let _switches = switches(&device);
    let gpu_device = device.as_gpu().unwrap().clone();
    let mut rng = common::rng();
    let cpu = Device::cpu();
    let f16 = gpu_device.supports(DType::F16);
    // Each gradient's two terms: compact pairs of odd lengths, a transposed view, a
    // bias broadcast over rows, an f16 pair, and one past the most that join.
    let mut terms: Vec<(Tensor, Tensor)> = [1usize, 7, 64, 1000, 33, 257]
        .iter()
        .map(|&n| (common::rand(&[n], &mut rng), common::rand(&[n], &mut rng)))
        .collect();
    terms.push((
        common::rand(&[9, 70], &mut rng),
        common::transposed(&[9, 70], &mut rng),
    ));
    terms.push((
        common::rand(&[3, 40], &mut rng),
        common::rand(&[40], &mut rng),
    ));
    if f16 {
        // First, so that it shares a launch with f32 sums.
        let half = |t: Tensor| t.to_dtype(DType::F16).unwrap();
        let pair = (common::rand(&[45], &mut rng), common::rand(&[45], &mut rng));
        terms.insert(0, (half(pair.0), half(pair.1)));
    }
    let joining = terms.len();
    let long = (1 << 20) + 3;
    terms.push((
        common::rand(&[long], &mut rng),
        common::rand(&[long], &mut rng),
    ));
    // Each gradient the sum of its terms; and then one more, twice the first
    // (reading its expression).
    let grads_of = |terms: &[(Tensor, Tensor)]| -> Vec<Tensor> {
        let mut g: Vec<Tensor> = terms.iter().map(|(a, b)| a.add(b).unwrap()).collect();
        g.push(g[0].mul_scalar(2.0).unwrap());
        g
    };
    let params_of = |grads: &[Tensor], device: &Device| -> Vec<Tensor> {
        let mut rng = Rng::new(11);
        grads
            .iter()
            .map(|g| {
                let p = Tensor::randn(g.dims().to_vec(), DType::F32, &cpu, &mut rng);
                p.unwrap()
                    .to_dtype(g.dtype())
                    .unwrap()
                    .to_device(device)
                    .unwrap()
            })
            .collect()
    };
    let step = OptimizerStep::SgdMomentum(SgdSpec {
        lr: 0.25,
        momentum: 0.0,
        weight_decay: 0.0,
        nesterov: false,
    });
    let sgd = |params: &[Tensor], grads: &[Tensor]| {
        let updates: Vec<ParamUpdate<'_, Tensor>> = params
            .iter()
            .zip(grads)
            .map(|(param, grad)| ParamUpdate {
                param,
                grad,
                states: Vec::new(),
                grad_scale: 1.0,
            })
            .collect();
        Tensor::optimizer_update_in_place(&updates, &step).unwrap()
    };
    let cpu_grads = grads_of(&terms);
    let cpu_params = params_of(&cpu_grads, &cpu);
    sgd(&cpu_params, &cpu_grads);
    let moved: Vec<(Tensor, Tensor)> = terms
        .iter()
        .map(|(a, b)| {
            (
                common::on_strided(&device, a),
                common::on_strided(&device, b),
            )
        })
        .collect();
    // Each alone: read before the next is recorded.
    let alone: Vec<Vec<f64>> = grads_of(&moved)
        .iter()
        .map(|g| g.to_f64_vec().unwrap())
        .collect();
    let params = params_of(&cpu_grads, &device);
    // A profile runs what is pending first: the sums are recorded inside it.
    let (grads, profile) = device
        .profile(|| {
            let grads = grads_of(&moved);
            sgd(&params, &grads);
            Ok(grads)
        })
        .unwrap();
    for (i, (g, a)) in grads.iter().zip(&alone).enumerate() {
        let got = g.to_f64_vec().unwrap();
        let same = got.iter().zip(a).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(
            same,
            "gradient {i} ({:?}) differs from its value alone",
            g.dims()
        );
    }
    for (i, (p, want)) in params.iter().zip(&cpu_params).enumerate() {
        let got = p.to_device(&cpu).unwrap();
        let tol = match p.dtype() {
            DType::F16 => 2e-3,
            _ => 1e-6,
        };
        assert_near(&format!("parameter {i}"), &got, want, tol, tol);
    }
    // The joining sums as many to a launch as a kernel takes bind groups (the rest
    // in one more launch); the long one and the one reading another's expression alone.
    let launches = |f: &dyn Fn(&str) -> bool| -> u64 {
        let of = profile.kernels.iter().filter(|k| f(&k.name));
        of.map(|k| k.launches).sum()
    };
    let per = gpu_device.kernel_groups();
    let full = format!("fused x{per} expressions");
    let grouped = launches(&|n| n.starts_with(&full));
    let fused = launches(&|n| n.starts_with("fused "));
    assert_eq!(grouped, (joining / per) as u64, "{:#?}", profile.kernels);
    assert_eq!(
        fused,
        joining.div_ceil(per) as u64 + 2,
        "{:#?}",
        profile.kernels
    );
}

/// Softmax, log-softmax and layer norm take the elementwise ops after them as an
/// epilogue (attention's dropout, a residual after a norm): one kernel, their own
/// output written too where it is held, values as on the CPU.
#[test]
fn row_normalisations_take_the_ops_after_them_as_an_epilogue() {
    let Some(device) = gpu() else { return };
    let _switches = switches(&device);
    let mut rng = common::rng();
    type Norm = fn(&Tensor, &Tensor, &Tensor) -> kiln::Result<Tensor>;
    let norms: [(&str, Norm); 3] = [
        ("softmax", |x, _, _| x.softmax(-1)),
        ("log_softmax", |x, _, _| x.log_softmax(-1)),
        ("layer_norm", |x, w, b| {
            let k = x.dims()[1];
            x.layer_norm(&[k], Some(w), Some(b), 1e-5)
        }),
    ];
    // 70 rows of 12: the one-row-per-invocation kernels (vec4 stores) on software
    // adapters; 5 of 13 the workgroup kernels.
    for shape in [[70usize, 12usize], [5, 13]] {
        let cpu = Device::cpu();
        let x = Tensor::randn(shape, DType::F32, &cpu, &mut rng).unwrap();
        let r = Tensor::randn(shape, DType::F32, &cpu, &mut rng).unwrap();
        let w = Tensor::randn([shape[1]], DType::F32, &cpu, &mut rng).unwrap();
        let b = Tensor::randn([shape[1]], DType::F32, &cpu, &mut rng).unwrap();
        let (xg, rg) = (
            common::on_strided(&device, &x),
            r.to_device(&device).unwrap(),
        );
        let (wg, bg) = (w.to_device(&device).unwrap(), b.to_device(&device).unwrap());
        for (name, norm) in norms {
            let after = |y: &Tensor, r: &Tensor| y.mul_scalar(0.5)?.add(r);
            let y = norm(&x, &w, &b).unwrap();
            let want = after(&y, &r).unwrap();
            let label = format!("{name} {shape:?}");
            let (got, profile) = device
                .profile(|| {
                    let y = norm(&xg, &wg, &bg)?;
                    let after = after(&y, &rg)?.to_f64_vec()?;
                    Ok((after, y.to_f64_vec()?))
                })
                .unwrap();
            let held = Tensor::from_vec(got.1, shape.to_vec(), &cpu).unwrap();
            let got = Tensor::from_vec(got.0, shape.to_vec(), &cpu).unwrap();
            assert_near(&format!("{label}: held"), &held, &y, 1e-5, 1e-4);
            assert_near(&label, &got, &want, 1e-5, 1e-4);
            one_kernel_with(&profile, &label, "=> fused mul_scalar,add");
        }
    }
}

/// A pad of a copy reads the copy's source where it lies: attention's heads,
/// permuted back and merged into one dim, padded into the fused projection's width
/// (as their gradients are), take one kernel, values as on the CPU. A pad that does
/// not split over the source's dims, and one of a middle dim, are right too.
#[test]
fn a_pad_of_a_copy_reads_its_source() {
    let Some(device) = gpu() else { return };
    let _switches = switches(&device);
    let mut rng = common::rng();
    let x = Tensor::randn([2, 3, 4, 5], DType::F32, &Device::cpu(), &mut rng).unwrap();
    let xg = x.to_device(&device).unwrap();
    device.synchronize().unwrap();
    // Pads from the last dim: (before, after) of the merged 15 wide dim, then of 4.
    let cases: [(&[(usize, usize)], bool); 4] = [
        (&[(15, 15)], true),
        (&[(0, 30)], true),
        (&[(7, 3)], false),
        (&[(0, 0), (2, 1)], true),
    ];
    for (pads, one_kernel) in cases {
        let heads = |x: &Tensor| -> kiln::Result<Tensor> {
            x.permute(&[0, 2, 1, 3])?
                .reshape([2, 4, 15])?
                .pad(pads, 0.5)
        };
        let want = heads(&x).unwrap();
        let label = format!("pads {pads:?}");
        let (got, profile) = device.profile(|| heads(&xg)?.to_f64_vec()).unwrap();
        let got = Tensor::from_vec(got, want.dims().to_vec(), &Device::cpu()).unwrap();
        assert_near(&label, &got, &want, 0.0, 0.0);
        // Not counting the fills that poison new buffers.
        let ran = || {
            profile
                .kernels
                .iter()
                .filter(|k| !k.name.contains("fill.wgsl"))
        };
        let kernels: Vec<&str> = ran().map(|k| k.name.as_str()).collect();
        let launches: u64 = ran().map(|k| k.launches).sum();
        match one_kernel {
            true => assert_eq!(launches, 1, "{label}: {kernels:?}"),
            false => assert_eq!(launches, 2, "{label}: {kernels:?}"),
        }
    }
}

/// Recording past the graph's bound runs the pending work without a sync point: the
/// live pending storages stay within the bound, and every value is right.
#[test]
fn a_graph_past_its_bound_runs_without_a_sync_point() {
    let Some(device) = gpu() else { return };
    let _switches = switches(&device);
    let gpu_device = device.as_gpu().unwrap();
    device.synchronize().unwrap();
    let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], [3], &device).unwrap();
    let n = kiln::backend::MAX_PENDING + 100;
    let held: Vec<Tensor> = (0..n).map(|i| x.add_scalar(i as f64).unwrap()).collect();
    let pending = gpu_device.pending_count();
    assert!(
        (1..=kiln::backend::MAX_PENDING).contains(&pending),
        "{pending} pending"
    );
    for (i, t) in held.iter().enumerate().step_by(97) {
        let i = i as f32;
        assert_eq!(t.to_vec::<f32>().unwrap(), [1.0 + i, 2.0 + i, 3.0 + i]);
    }
}

/// A recurrent layer's backward pass through time, one launch a step: the gradient of
/// each step's output but the last is a sum whose one term is the product that carries
/// the next step's gradient back through `w_hh`, and that product computes the cell's
/// gradients in its stores (`MatmulLstmCellBackward`, `MatmulGruCellBackward`) with the
/// sum's other terms: the output's own gradient (a strided view of the sequence's) and
/// a GRU's through the next step's cell. Every input's gradient matches the CPU,
/// whichever kernel the products were given to; on the tiled kernel the gradients are
/// bit for bit those of the steps run apart (fusion off), in f32 and f16. The last
/// step, whose gradient holds no product, runs the cell's kernel. Hidden sizes that
/// leave tiles partly empty (20, 33, 1), a batch past one tile of rows (70); every
/// other case reads the last state in the loss too (an LSTM's last `c'` then has a
/// gradient of its own).
#[test]
fn recurrent_backward_steps_run_in_their_products() {
    let Some(device) = gpu() else { return };
    let _switches = switches(&device);
    let gpu_device = device.as_gpu().unwrap();
    let mut rng = common::rng();
    let cases = [
        (MatmulVariant::Tiled, 5, 20, 4),
        (MatmulVariant::Tiled, 70, 33, 3),
        (MatmulVariant::SmallTiled, 3, 16, 3),
        (MatmulVariant::Blocked, 1, 1, 3),
        (MatmulVariant::Blocked, 6, 40, 2),
    ];
    for gru in [false, true] {
        let gates = if gru { 3 } else { 4 };
        let (fused, cell) = match gru {
            false => ("MatmulLstmCellBackward", "rnn/lstm_cell_backward.wgsl"),
            true => ("MatmulGruCellBackward", "rnn/gru_cell_backward.wgsl"),
        };
        for (i, (variant, batch, hidden, time)) in cases.into_iter().enumerate() {
            gpu_device.set_matmul_variant(variant).unwrap();
            let with_state = i % 2 == 1;
            let label = format!(
                "{fused}, {variant:?}, batch {batch}, hidden {hidden}, {time} steps, state read {with_state}"
            );
            let mut cpu = |shape: &[usize]| common::uniform(shape, -1.5, 1.5, &mut rng);
            // The input projections, h0, c0, w_hh, the GRU's hidden bias; the weights
            // of the outputs in the loss.
            let inputs = [
                cpu(&[batch, time, gates * hidden]),
                cpu(&[batch, hidden]),
                cpu(&[batch, hidden]),
                cpu(&[gates * hidden, hidden]),
                cpu(&[gates * hidden]),
            ];
            let r = cpu(&[batch, time, hidden]);
            // The layer's steps, as `kiln_nn::Rnn` takes them, and every input's
            // gradient (the LSTM takes no bias, the GRU no cell state).
            let layer = |vars: &[Tensor], r: &Tensor| -> kiln::Result<Vec<Tensor>> {
                let [seq, h0, c0, w, b] = vars else {
                    unreachable!()
                };
                let (mut h, mut c) = (h0.clone(), c0.clone());
                let mut outputs = Vec::new();
                for t in 0..time {
                    let x = seq.narrow(1, t, 1)?.squeeze(1)?;
                    let hp = h.matmul(&w.t()?)?;
                    if gru {
                        h = x.gru_cell(&hp.add(b)?, &h)?;
                    } else {
                        let hc = x.add(&hp)?.lstm_cell(&c)?;
                        (h, c) = (hc.narrow(1, 0, hidden)?, hc.narrow(1, hidden, hidden)?);
                    }
                    outputs.push(h.clone());
                }
                let mut loss = Tensor::stack(&outputs, 1)?.mul(r)?.sum_all()?;
                if with_state {
                    let last = if gru { &h } else { &c };
                    loss = loss.add(&last.mul(last)?.sum_all()?)?;
                }
                let grads = loss.backward()?;
                let used = if gru { [0, 1, 3, 4] } else { [0, 1, 2, 3] };
                Ok(used.map(|u| grads.get(&vars[u]).unwrap().clone()).to_vec())
            };
            let vars = |device: &Device, dtype: DType| -> Vec<Tensor> {
                let vars: Vec<Tensor> = (inputs.iter())
                    .map(|t| t.to_dtype(dtype).unwrap().to_device(device).unwrap())
                    .map(|t| t.detach())
                    .collect();
                vars.iter().for_each(|v| v.set_requires_grad(true).unwrap());
                vars
            };
            let on = |dtype: DType| r.to_dtype(dtype).unwrap().to_device(&device).unwrap();
            let want = layer(&vars(&Device::cpu(), DType::F32), &r).unwrap();
            gpu_device.set_fusion(true);
            let run = || layer(&vars(&device, DType::F32), &on(DType::F32));
            let (got, profile) = device.profile(run).unwrap();
            let names = ["seq grad", "h0 grad", "c0 or w grad", "w or b grad"];
            for ((g, w), name) in got.iter().zip(&want).zip(names) {
                assert_near(&format!("{label}: {name}"), g, w, 1e-5, 5e-4);
            }
            let launches = |name: &str| -> usize {
                let found = profile.kernels.iter().filter(|k| k.name.contains(name));
                found.map(|k| k.launches as usize).sum()
            };
            let kernels = &profile.kernels;
            assert_eq!(launches(fused), time - 1, "{label}: {kernels:#?}");
            assert_eq!(launches(cell), 1, "{label}: {kernels:#?}");
            if variant != MatmulVariant::Tiled {
                continue;
            }
            let mut dtypes = vec![DType::F32];
            match gpu_device.supports(DType::F16) {
                true => dtypes.push(DType::F16),
                false => eprintln!("{label}: the adapter has no f16; compared in f32 only"),
            }
            for dtype in dtypes {
                let bits = |fusion: bool| -> Vec<Vec<f64>> {
                    gpu_device.set_fusion(fusion);
                    let grads = layer(&vars(&device, dtype), &on(dtype)).unwrap();
                    grads.iter().map(|g| g.to_f64_vec().unwrap()).collect()
                };
                let (one_launch, apart) = (bits(true), bits(false));
                for ((a, b), name) in one_launch.iter().zip(&apart).zip(names) {
                    let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(
                        same,
                        "{label}, {dtype:?}: {name}: {a:?}\nsteps apart: {b:?}"
                    );
                }
            }
            gpu_device.set_fusion(true);
        }
    }
}

/// An LSTM step whose gates are `x_t + h @ w_hh^T`, and a GRU step whose hidden
/// projection is `h @ w_hh^T + b_hh`, run as one launch each: the product with the cell
/// computed in its stores (`MatmulLstmCell`, `MatmulGruCell`), whichever of the tiled
/// and blocked kernels the product was given to. The sums, the cells' outputs and
/// every input's gradient match the CPU. Hidden sizes that leave a workgroup's units
/// partly empty (20, 33) and batches past one tile of rows (70); the input projection a
/// time step of a sequence and the states halves of the last step's output, as the
/// recurrent layers read them, every other case through transposed storage. Where the
/// product is held elsewhere the step takes two launches, and the product's own output
/// is kept.
#[test]
fn recurrent_steps_run_in_their_products() {
    let Some(device) = gpu() else { return };
    let _switches = switches(&device);
    let gpu_device = device.as_gpu().unwrap();
    let mut rng = common::rng();
    let cases = [
        (MatmulVariant::Tiled, 5, 20),
        (MatmulVariant::Tiled, 70, 33),
        (MatmulVariant::SmallTiled, 3, 16),
        (MatmulVariant::Blocked, 1, 1),
        (MatmulVariant::Tiled, 32, 64),
    ];
    for gru in [false, true] {
        let (gates, outputs) = if gru { (3, 1) } else { (4, 2) };
        let (fused, cell) = match gru {
            false => ("MatmulLstmCell", "rnn/lstm_cell.wgsl"),
            true => ("MatmulGruCell", "rnn/gru_cell.wgsl"),
        };
        for (i, (variant, batch, hidden)) in cases.into_iter().enumerate() {
            gpu_device.set_matmul_variant(variant).unwrap();
            let transposed = i % 2 == 1;
            let label = format!(
                "{fused}, {variant:?}, batch {batch}, hidden {hidden}, transposed {transposed}"
            );
            let mut cpu = |shape: &[usize]| common::uniform(shape, -2.0, 2.0, &mut rng);
            // The sequence's input projections, the last step's output, w_hh, b_hh.
            let (seq, prev) = match transposed {
                false => (&[batch, 3, gates * hidden], [batch, outputs * hidden]),
                true => (&[3, gates * hidden, batch], [outputs * hidden, batch]),
            };
            let inputs = [
                cpu(seq),
                cpu(&prev),
                cpu(&[gates * hidden, hidden]),
                cpu(&[gates * hidden]),
            ];
            let r = cpu(&[batch, outputs * hidden]);
            // The step, and the gradients of sum(out * r); the sum comes back too.
            let step = |vars: &[Tensor], r: &Tensor| -> kiln::Result<Vec<Tensor>> {
                let [seq, prev, w, b] = vars else {
                    unreachable!()
                };
                let (x, prev) = match transposed {
                    false => (seq.narrow(1, 1, 1)?.squeeze(1)?, prev.clone()),
                    true => (seq.narrow(0, 1, 1)?.squeeze(0)?.t()?, prev.t()?),
                };
                let h = prev.narrow(1, 0, hidden)?;
                let (sum, out) = if gru {
                    let hp = h.matmul(&w.t()?)?.add(b)?;
                    let out = x.gru_cell(&hp, &h)?;
                    (hp, out)
                } else {
                    let z = x.add(&h.matmul(&w.t()?)?)?;
                    let out = z.lstm_cell(&prev.narrow(1, hidden, hidden)?)?;
                    (z, out)
                };
                let grads = out.mul(r)?.sum_all()?.backward()?;
                let mut all = vec![sum, out];
                // The LSTM's sum takes no bias.
                let used = if gru { 4 } else { 3 };
                all.extend(vars[..used].iter().map(|v| grads.get(v).unwrap().clone()));
                Ok(all)
            };
            let vars = |device: &Device| -> Vec<Tensor> {
                let vars: Vec<Tensor> = (inputs.iter())
                    .map(|t| t.to_device(device).unwrap().detach())
                    .collect();
                vars.iter().for_each(|v| v.set_requires_grad(true).unwrap());
                vars
            };
            let want = step(&vars(&Device::cpu()), &r).unwrap();
            let on_gpu = vars(&device);
            let r_gpu = r.to_device(&device).unwrap();
            let (got, profile) = device.profile(|| step(&on_gpu, &r_gpu)).unwrap();
            let names = ["sum", "output", "seq grad", "prev grad", "w grad", "b grad"];
            assert_eq!(got.len(), want.len(), "{label}");
            for ((g, w), name) in got.iter().zip(&want).zip(names) {
                assert_near(&format!("{label}: {name}"), g, w, 1e-5, 5e-4);
            }
            let steps: Vec<_> = (profile.kernels.iter())
                .filter(|k| k.name.contains(fused))
                .map(|k| (k.launches, k.bytes_read))
                .collect();
            // It reads the last output (h, and the LSTM's c), w_hh, the step's input
            // projection and the GRU's bias, each element once.
            let bias = if gru { gates * hidden } else { 0 };
            let elements =
                batch * outputs * hidden + gates * hidden * hidden + batch * gates * hidden + bias;
            let read = 4 * elements as u64;
            assert_eq!(steps, [(1, read)], "{label}: {:#?}", profile.kernels);
            let cells = (profile.kernels.iter()).filter(|k| k.name.starts_with(cell));
            assert_eq!(cells.count(), 0, "{label}: {:#?}", profile.kernels);
        }
    }
    // The product held: it is written, and the step takes the cell kernel.
    gpu_device.set_matmul_variant(MatmulVariant::Tiled).unwrap();
    let on = |t: Tensor| t.to_device(&device).unwrap();
    let (x, h, c, w) = (
        on(common::uniform(&[4, 12], -1.0, 1.0, &mut rng)),
        on(common::uniform(&[4, 3], -1.0, 1.0, &mut rng)),
        on(common::uniform(&[4, 3], -1.0, 1.0, &mut rng)),
        on(common::uniform(&[3, 12], -1.0, 1.0, &mut rng)),
    );
    let ((product, hc), profile) = device
        .profile(|| {
            let product = h.matmul(&w)?;
            let hc = x.add(&product)?.lstm_cell(&c)?;
            hc.to_f64_vec()?;
            Ok((product, hc))
        })
        .unwrap();
    let fused = profile
        .kernels
        .iter()
        .any(|k| k.name.contains("MatmulLstmCell"));
    assert!(!fused, "{:#?}", profile.kernels);
    let to_cpu = |t: &Tensor| t.to_device(&Device::cpu()).unwrap();
    let want_product = to_cpu(&h).matmul(&to_cpu(&w)).unwrap();
    assert_near("held product", &product, &want_product, 1e-5, 1e-4);
    let want_z = to_cpu(&x).add(&want_product).unwrap();
    let want_hc = want_z.lstm_cell(&to_cpu(&c)).unwrap();
    assert_near("held product's step", &hc, &want_hc, 1e-5, 5e-4);
}

/// Small products left pending (a backward pass's weight gradients, which wait for the
/// optimizer) run several to a launch where groups are on: on each kernel that defers
/// (tiled, small-tiled, blocked), products of odd shapes, through transposed and
/// sliced views and batches (one broadcast), in f32 and f16, give the bits each gives
/// run alone and the CPU's values; as many run to a launch as the device binds (three
/// buffers each); a product whose workgroups fill a card runs alone, and so does one
/// that an expression being run takes as its epilogue.
#[test]
fn small_pending_products_run_together() {
    let Some(device) = gpu() else { return };
    let _switches = switches(&device);
    let gpu_device = device.as_gpu().unwrap();
    let mut rng = common::rng();
    let cpu = Device::cpu();
    let plain = |shape: &[usize], rng: &mut Rng| common::rand(shape, rng);
    // (lhs, rhs) on the CPU, twelve small products.
    let mut cases: Vec<(Tensor, Tensor)> = Vec::new();
    for round in 0..2 {
        let n = 5 + 4 * round;
        cases.push((plain(&[37, 70], &mut rng), plain(&[70, n], &mut rng)));
        // A weight gradient's shape: the output's gradient transposed.
        cases.push((
            common::transposed(&[33, 130], &mut rng),
            plain(&[130, 65], &mut rng),
        ));
        cases.push((
            plain(&[1, 9], &mut rng),
            common::transposed(&[9, 65], &mut rng),
        ));
        cases.push((
            common::sliced(&[20, 17], &mut rng),
            common::sliced(&[17, 129], &mut rng),
        ));
        cases.push((plain(&[3, 2, 7, 11], &mut rng), plain(&[11, 6], &mut rng)));
        cases.push((plain(&[4, 5, 8], &mut rng), plain(&[4, 8, 3], &mut rng)));
    }
    let limit = gpu_device.summary().max_storage_buffers_per_shader_stage as usize;
    let per_launch = (limit / 3).min(kiln::backend::MAX_MATMUL_GROUP);
    assert!(
        per_launch < cases.len(),
        "the cases fit one launch of {per_launch}"
    );
    let mut dtypes = vec![DType::F32];
    if gpu_device.supports(DType::F16) {
        dtypes.push(DType::F16);
    }
    // Exactly as many workgroups as fill a card (one tile per batch): too many to join.
    let batches = kiln::backend::MATMUL_GROUP_WORKGROUPS;
    let big = (
        plain(&[batches, 1, 2], &mut rng),
        plain(&[batches, 2, 1], &mut rng),
    );
    for variant in [
        MatmulVariant::Tiled,
        MatmulVariant::SmallTiled,
        MatmulVariant::Blocked,
    ] {
        gpu_device.set_matmul_variant(variant).unwrap();
        for &dtype in &dtypes {
            let label = format!("{variant:?} {dtype:?}");
            // The operands on the device, computed (an f16 cast runs now), and the
            // CPU's product of the values the device holds.
            let on_device = |t: &Tensor| {
                let moved = common::on_strided(&device, t).to_dtype(dtype).unwrap();
                moved.to_f64_vec().unwrap();
                moved
            };
            let all: Vec<&(Tensor, Tensor)> = cases.iter().chain([&big]).collect();
            let moved: Vec<(Tensor, Tensor)> = all
                .iter()
                .map(|(l, r)| (on_device(l), on_device(r)))
                .collect();
            let want: Vec<Tensor> = moved
                .iter()
                .map(|(l, r)| {
                    let l = l.to_device(&cpu).unwrap().to_dtype(DType::F32).unwrap();
                    let r = r.to_device(&cpu).unwrap().to_dtype(DType::F32).unwrap();
                    l.matmul(&r).unwrap()
                })
                .collect();
            gpu_device.set_matmul_groups(false);
            let alone: Vec<Vec<f64>> = moved
                .iter()
                .map(|(l, r)| l.matmul(r).unwrap().to_f64_vec().unwrap())
                .collect();
            gpu_device.set_matmul_groups(true);
            let (together, profile) = device
                .profile(|| {
                    let pending: Vec<Tensor> =
                        moved.iter().map(|(l, r)| l.matmul(r).unwrap()).collect();
                    pending
                        .iter()
                        .map(Tensor::to_f64_vec)
                        .collect::<kiln::Result<Vec<_>>>()
                })
                .unwrap();
            let (atol, rtol) = match dtype {
                DType::F16 => (1e-2, 1e-2),
                _ => (1e-5, 1e-4),
            };
            for (i, (got, w)) in together.iter().zip(&want).enumerate() {
                let label = format!("{label}, product {i} of {:?}", w.dims());
                assert_eq!(got.len(), alone[i].len(), "{label}");
                for (a, b) in got.iter().zip(&alone[i]) {
                    assert_eq!(a.to_bits(), b.to_bits(), "{label}: {a} alone {b}");
                }
                let got = Tensor::from_vec(got.clone(), w.dims().to_vec(), &cpu).unwrap();
                assert_near(&label, &got, w, atol, rtol);
            }
            let launches = |part: &str| -> u64 {
                let named = profile.kernels.iter().filter(|k| k.name.contains(part));
                named.map(|k| k.launches).sum()
            };
            let groups = cases.len().div_ceil(per_launch) as u64;
            assert_eq!(
                launches("products"),
                groups,
                "{label}: {:#?}",
                profile.kernels
            );
            assert_eq!(
                launches("matmul"),
                groups + 1,
                "{label}: {:#?}",
                profile.kernels
            );
        }
        // Two pending products summed: the sum takes one as its epilogue, and running
        // the other (its read) leaves that one to it.
        let (l, r) = (&cases[0].0, &cases[0].1);
        let r2 = r.mul_scalar(2.0).unwrap();
        let want = l.matmul(r).unwrap().mul_scalar(3.0).unwrap();
        let moved = on_gpu(&device, &[l.clone(), r.clone(), r2]);
        let (got, profile) = device
            .profile(|| {
                let a = moved[0].matmul(&moved[1])?;
                let b = moved[0].matmul(&moved[2])?;
                a.add(&b)?.to_f64_vec()
            })
            .unwrap();
        let got = Tensor::from_vec(got, want.dims().to_vec(), &cpu).unwrap();
        assert_near(&format!("{variant:?}: sum of two"), &got, &want, 1e-5, 1e-4);
        let names = kernel_names(&profile);
        assert!(
            names.iter().any(|n| n.contains("=> fused add"))
                && !names.iter().any(|n| n.contains("products")),
            "{variant:?}: {names:?}"
        );
    }
}
