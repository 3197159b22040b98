//! `kiln explain`: why the trained CNN predicted what it did, by several attribution
//! methods side by side (a PNG), and with `--check` the sanity checks that say whether
//! the maps mean anything: deletion curves against a random order, model
//! randomisation, and Integrated Gradients' completeness.

use crate::models;
use crate::saliency::{image_at, selection, trained_cnn};
use crate::train::{char_lm, Model, LM_CONTEXT};
use clap::{Args, ValueEnum};
use kiln::{DType, Device, Result, Rng, Tensor};
use kiln_nn::data::{load_mnist_dir, mnist10k};
use kiln_nn::explain::{self, Occlusion, Overlay, SmoothGrad};
use kiln_nn::layers::Sequential;
use kiln_nn::{Module, ModuleExt};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Method {
    Gradient,
    GradientXInput,
    Smoothgrad,
    Ig,
    Gradcam,
    /// Occlusion of 4x4 patches for images; for tabular rows, feature ablation (each
    /// feature set to its training mean).
    Occlusion,
}

#[derive(Args)]
pub struct ExplainArgs {
    /// Methods to draw side by side (all by default).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub method: Vec<Method>,
    /// The checkpoint `kiln train` wrote: runs/cnn/model.safetensors by default, or
    /// runs/<model>/model.safetensors with --lm.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// IDX folder to take test images from (the bundled digits by default).
    #[arg(long)]
    data: Option<PathBuf>,
    /// The first test image (or --csv row) to explain, and how many (6 images; every
    /// row from --index).
    #[arg(long, default_value_t = 0)]
    pub index: usize,
    #[arg(long)]
    pub count: Option<usize>,
    /// Integrated Gradients' steps along the path from a black image.
    #[arg(long, default_value_t = 32)]
    pub steps: usize,
    /// SmoothGrad's noisy copies per image, and their noise (a fraction of the range).
    #[arg(long, default_value_t = 25)]
    pub samples: usize,
    #[arg(long, default_value_t = 0.15)]
    pub noise: f64,
    /// Run the sanity checks over this many test images instead of drawing.
    #[arg(long)]
    check: Option<usize>,
    /// With --check: a second trained CNN, whose maps show how far two trained models'
    /// maps agree, against the re-initialised model's.
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Explain a character language model's next-character prediction instead (the
    /// checkpoint `kiln train lstm|gru|transformer` wrote, runs/<model>/model.safetensors
    /// unless --checkpoint says otherwise), for the context starting at --index in the
    /// validation text.
    #[arg(long, value_enum)]
    lm: Option<Model>,
    /// Explain a tabular model `kiln train mlp --csv` trained (runs/mlp/model.safetensors
    /// unless --checkpoint says otherwise) over this CSV's rows: mean |attribution| per
    /// feature, as explain_features_<method>.png (Integrated Gradients by default).
    #[arg(long)]
    csv: Option<PathBuf>,
    #[command(flatten)]
    format: crate::tabular::CsvFormat,
    #[arg(long, default_value = "auto")]
    device: String,
    /// Where explain.png (or explain_text.html and .png) goes.
    #[arg(long, default_value = "runs/cnn")]
    pub out: PathBuf,
}

/// Grad-CAM splits the CNN after its second convolution's ReLU: `[N, 32, 8, 8]` maps.
const FEATURE_LAYERS: usize = 5;

pub fn run(args: ExplainArgs) -> Result<()> {
    let device = Device::parse(&args.device)?;
    if let Some(csv) = &args.csv {
        return crate::explain_csv::run(&args, csv, &args.format, &device);
    }
    if let Some(lm) = args.lm {
        return explain_lm(&args, lm, &device);
    }
    let checkpoint = args.checkpoint.clone();
    let model = trained_cnn(
        &checkpoint.unwrap_or("runs/cnn/model.safetensors".into()),
        &device,
    )?;
    let data = match &args.data {
        Some(dir) => load_mnist_dir(dir)?,
        None => mnist10k()?,
    };
    if let Some(count) = args.check {
        return check(&args, &model, &data.test_images, count, &device);
    }
    let methods = match args.method.is_empty() {
        true => vec![
            Method::Gradient,
            Method::GradientXInput,
            Method::Smoothgrad,
            Method::Ig,
            Method::Gradcam,
            Method::Occlusion,
        ],
        false => args.method.clone(),
    };
    let labels = data.test_labels.to_vec::<i32>()?;
    let mut rows = Vec::new();
    for i in selection(
        args.index,
        args.count.unwrap_or(6),
        data.test_images.dims()[0],
    )? {
        let image = image_at(&data.test_images, i, &device)?;
        let (class, prob) = prediction(&model, &image)?;
        let mut maps = Vec::new();
        for &m in &methods {
            maps.push(attribution(&args, &model, &image, class, m)?);
        }
        println!(
            "image {i}: label {}, predicted {class} with probability {prob:.3}",
            labels[i]
        );
        let label = format!(
            "digit {i} (label {})\npredicted {class}\np = {prob:.3}",
            labels[i]
        );
        rows.push((label, image.to_dtype(DType::F32)?.to_vec::<f32>()?, maps));
    }
    let names: Vec<&str> = methods.iter().map(|m| name(*m)).collect();
    let tiles: Vec<(String, Vec<Overlay>)> = rows
        .iter()
        .map(|(label, image, maps)| {
            let tiles = maps
                .iter()
                .map(|a| Overlay {
                    image,
                    attribution: a,
                })
                .collect();
            (label.clone(), tiles)
        })
        .collect();
    crate::out_dir::create("explain", &args.out)?;
    let path = args.out.join("explain.png");
    explain::save_overlays(&tiles, &names, (28, 28), 5, &path)?;
    println!(
        "wrote {} (red: raises the predicted class's logit, blue: lowers it)",
        path.display()
    );
    Ok(())
}

pub fn name(m: Method) -> &'static str {
    match m {
        Method::Gradient => "gradient",
        Method::GradientXInput => "gradient x input",
        Method::Smoothgrad => "SmoothGrad",
        Method::Ig => "Integrated Grad.",
        Method::Gradcam => "Grad-CAM",
        Method::Occlusion => "occlusion 4x4",
    }
}

/// The predicted class of one image and its probability.
fn prediction(model: &Sequential, image: &Tensor) -> Result<(usize, f64)> {
    let probs = kiln::no_grad(|| model.forward(image)?.softmax(-1))?.to_f64_vec()?;
    let class = most_likely(&probs);
    Ok((class, probs[class]))
}

/// The class of the largest probability (the first of equals).
fn most_likely(probs: &[f64]) -> usize {
    (0..probs.len()).fold(0, |best, c| if probs[c] > probs[best] { c } else { best })
}

/// One image's attribution by `method` for `class`, as 28x28 values.
fn attribution(
    args: &ExplainArgs,
    model: &Sequential,
    image: &Tensor,
    class: usize,
    method: Method,
) -> Result<Vec<f32>> {
    let f = |x: &Tensor| model.forward(x);
    let classes = [class];
    let map = match method {
        Method::Gradient => explain::gradient(&f, image, &classes)?,
        Method::GradientXInput => explain::gradient_x_input(&f, image, &classes)?,
        Method::Smoothgrad => explain::smoothgrad(&f, image, &classes, smoothgrad(args))?,
        Method::Ig => {
            let ig = explain::integrated_gradients(&f, image, &classes, None, args.steps)?;
            println!(
                "  Integrated Gradients: attributions sum to {:+.4} against a score change of {:+.4}",
                ig.score_change[0] + ig.completeness_error[0],
                ig.score_change[0]
            );
            ig.attribution
        }
        Method::Gradcam => {
            let features = |x: &Tensor| model.forward_range(x, 0..FEATURE_LAYERS);
            let head = |x: &Tensor| model.forward_range(x, FEATURE_LAYERS..model.len());
            explain::grad_cam(&features, &head, image, &classes)?
        }
        Method::Occlusion => explain::occlusion(&f, image, &classes, Occlusion::default())?,
    };
    map.to_dtype(DType::F32)?.to_vec::<f32>()
}

fn smoothgrad(args: &ExplainArgs) -> SmoothGrad {
    SmoothGrad {
        samples: args.samples,
        noise: args.noise,
        seed: 0,
    }
}

/// Deletion-curve steps: the fraction of pixels removed goes up by 1/20 each time.
const DELETION_STEPS: usize = 20;
/// Images per batch of IG or SmoothGrad during the checks.
const CHUNK: usize = 8;

/// The sanity checks over the first `count` test images.
fn check(
    args: &ExplainArgs,
    model: &Sequential,
    images: &Tensor,
    count: usize,
    device: &Device,
) -> Result<()> {
    let range = selection(0, count, images.dims()[0])?;
    let n = range.len();
    let random_model = models::cnn(device, &mut Rng::new(12345), models::CNN_DROPOUT)?;
    random_model.eval();
    let reference = match &args.reference {
        Some(path) => Some(trained_cnn(path, device)?),
        None => None,
    };
    let mut rho_reference = Vec::new();
    let (mut wins_ig, mut wins_sg) = (0, 0);
    let (mut areas_ig, mut areas_sg, mut areas_random) = (Vec::new(), Vec::new(), Vec::new());
    let (mut rho_ig, mut rho_ig_all, mut rho_grad) = (Vec::new(), Vec::new(), Vec::new());
    let mut worst_completeness = 0.0f64;
    let f = |x: &Tensor| model.forward(x);
    let g = |x: &Tensor| random_model.forward(x);
    for start in range.clone().step_by(CHUNK) {
        let len = CHUNK.min(range.end - start);
        let batch = images
            .narrow(0, start, len)?
            .contiguous()?
            .to_device(device)?;
        let probs = kiln::no_grad(|| model.forward(&batch)?.argmax(-1, false))?.to_vec::<i32>()?;
        let classes: Vec<usize> = probs.iter().map(|&c| c as usize).collect();
        let ig = explain::integrated_gradients(&f, &batch, &classes, None, args.steps)?;
        for (e, c) in ig.completeness_error.iter().zip(&ig.score_change) {
            worst_completeness = worst_completeness.max(e.abs() / c.abs().max(1e-6));
        }
        // SmoothGrad ranks pixels by its gradient times the pixel, the first-order
        // change of the score when the pixel is removed.
        let sg = explain::smoothgrad(&f, &batch, &classes, smoothgrad(args))?.mul(&batch)?;
        let ig_random = explain::integrated_gradients(&g, &batch, &classes, None, args.steps)?;
        let grad = explain::gradient(&f, &batch, &classes)?.abs()?;
        let grad_random = explain::gradient(&g, &batch, &classes)?.abs()?;
        let ig_reference = match &reference {
            Some(r) => {
                let h = |x: &Tensor| r.forward(x);
                let ig = explain::integrated_gradients(&h, &batch, &classes, None, args.steps)?;
                Some(ig.attribution.to_dtype(DType::F32)?.to_vec::<f32>()?)
            }
            None => None,
        };
        let per = 28 * 28;
        let values = |t: &Tensor| -> Result<Vec<f32>> { t.to_dtype(DType::F32)?.to_vec::<f32>() };
        let (ig_v, sg_v, igr_v) = (
            values(&ig.attribution)?,
            values(&sg)?,
            values(&ig_random.attribution)?,
        );
        let (grad_v, gradr_v) = (values(&grad)?, values(&grad_random)?);
        let pixels = values(&batch)?;
        let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
        for (k, &class) in classes.iter().enumerate() {
            let at = k * per..(k + 1) * per;
            let image = batch.narrow(0, k, 1)?;
            let curve = |order: &[usize]| -> Result<f64> {
                let c = explain::deletion_curve(&f, &image, class, order, DELETION_STEPS, 0.0)?;
                Ok(explain::mean_area(&c))
            };
            let a_ig = curve(&explain::by_attribution(&ig_v[at.clone()]))?;
            let a_sg = curve(&explain::by_attribution(&sg_v[at.clone()]))?;
            let a_random = curve(&explain::random_order(per, (start + k) as u64)?)?;
            wins_ig += usize::from(a_ig < a_random);
            wins_sg += usize::from(a_sg < a_random);
            areas_ig.push(a_ig);
            areas_sg.push(a_sg);
            areas_random.push(a_random);
            // Over the digit's own pixels: elsewhere x - 0 = 0 makes both maps zero,
            // and the shared zeros alone would correlate them.
            let ink: Vec<usize> = at.clone().filter(|&p| pixels[p] > 0.0).collect();
            let on_ink = |v: &[f32]| ink.iter().map(|&p| v[p].abs()).collect::<Vec<_>>();
            rho_ig.push(explain::spearman(&on_ink(&ig_v), &on_ink(&igr_v))?);
            if let Some(other) = &ig_reference {
                rho_reference.push(explain::spearman(&on_ink(&ig_v), &on_ink(other))?);
            }
            rho_ig_all.push(explain::spearman(
                &abs(&ig_v[at.clone()]),
                &abs(&igr_v[at.clone()]),
            )?);
            rho_grad.push(explain::spearman(&grad_v[at.clone()], &gradr_v[at])?);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let pct = |w: usize| 100.0 * w as f64 / n as f64;
    println!("sanity checks over test images 0..{n} (predicted class, {DELETION_STEPS}-step deletion to black)");
    println!(
        "deletion curve, mean area under the class probability (lower is better): Integrated Gradients {:.4}, SmoothGrad x input {:.4}, random order {:.4}",
        mean(&areas_ig),
        mean(&areas_sg),
        mean(&areas_random)
    );
    println!(
        "  below random order: Integrated Gradients on {wins_ig}/{n} images ({:.1}%), SmoothGrad x input on {wins_sg}/{n} ({:.1}%)",
        pct(wins_ig),
        pct(wins_sg)
    );
    println!(
        "model randomisation, Spearman correlation of |attribution| between the trained model and the same architecture re-initialised (1: unchanged):"
    );
    println!(
        "  Integrated Gradients mean {:.3} over the digit's pixels ({:.3} over all, where the shared zeros of x - 0 dominate); gradient mean {:.3}",
        mean(&rho_ig),
        mean(&rho_ig_all),
        mean(&rho_grad)
    );
    if !rho_reference.is_empty() {
        let separated = rho_ig
            .iter()
            .zip(&rho_reference)
            .filter(|(random, trained)| random < trained)
            .count();
        println!(
            "  against a second trained model: Integrated Gradients mean {:.3} over the digit's pixels; the re-initialised model agrees less on {separated}/{n} images",
            mean(&rho_reference)
        );
    }
    println!(
        "Integrated Gradients completeness ({} steps): worst |sum - (f(x) - f(0))| / |f(x) - f(0)| = {worst_completeness:.4}",
        args.steps
    );
    Ok(())
}

/// Integrated Gradients of a character model's next-character prediction over the
/// embeddings of its context (from zero vectors), summed per character: which
/// characters the prediction rests on, as HTML, a PNG and plain text.
fn explain_lm(args: &ExplainArgs, lm: Model, device: &Device) -> Result<()> {
    use kiln_nn::data::{tinyshakespeare, CharVocab};
    use kiln_nn::train::{load_checkpoint, restore};
    let name = match lm {
        Model::Lstm => "lstm",
        Model::Gru => "gru",
        Model::Transformer => "transformer",
        _ => {
            return Err(kiln::Error::InvalidArgument {
                op: "explain",
                reason: "--lm takes lstm, gru or transformer".into(),
            })
        }
    };
    let checkpoint = (args.checkpoint.clone())
        .unwrap_or_else(|| PathBuf::from(format!("runs/{name}/model.safetensors")));
    if !checkpoint.exists() {
        return Err(kiln::Error::Io {
            op: "explain",
            path: checkpoint.display().to_string(),
            reason: format!(
                "no checkpoint there: run `kiln train {name}` first (or pass --checkpoint)"
            ),
        });
    }
    let text = tinyshakespeare();
    let vocab = CharVocab::from_text(text);
    let ids = vocab.encode(text)?;
    let (model, _) = char_lm(lm, vocab.len(), device, &mut Rng::new(0))?;
    restore(&load_checkpoint(&checkpoint)?, &model.state_dict())?;
    model.set_training(false);
    let start = ids.len() * 9 / 10 + args.index;
    if start + LM_CONTEXT >= ids.len() {
        return Err(kiln::Error::InvalidArgument {
            op: "explain",
            reason: format!("--index {} is past the validation text", args.index),
        });
    }
    let window = &ids[start..start + LM_CONTEXT];
    let next = ids[start + LM_CONTEXT] as usize;
    let input = Tensor::from_vec(window.to_vec(), [1, LM_CONTEXT], device)?;
    let embedded = kiln::no_grad(|| model.embedding.forward(&input))?;
    // The logits of the last position: what comes after the context.
    let f = |x: &Tensor| -> Result<Tensor> {
        let logits = model.logits_of_embedded(x, None)?.0;
        let (b, t, v) = (logits.dims()[0], logits.dims()[1], logits.dims()[2]);
        logits.narrow(1, t - 1, 1)?.reshape([b, v])
    };
    let probs = kiln::no_grad(|| f(&embedded)?.softmax(-1))?.to_f64_vec()?;
    let predicted = most_likely(&probs);
    let ig = explain::integrated_gradients(&f, &embedded, &[predicted], None, args.steps)?;
    let per_char = ig
        .attribution
        .sum(&[2], false)?
        .to_dtype(DType::F32)?
        .to_vec::<f32>()?;
    let chars: Vec<char> = vocab.decode(window).chars().collect();
    let show = |c: usize| format!("{:?}", vocab.decode(&[c as i32]));
    let title = format!(
        "{name}: predicts {} with probability {:.3} (the text has {}); Integrated Gradients, completeness error {:+.4}",
        show(predicted),
        probs[predicted],
        show(next),
        ig.completeness_error[0]
    );
    println!("{title}");
    print!("{}", explain::text_attribution_plain(&chars, &per_char)?);
    crate::out_dir::create("explain", &args.out)?;
    let html = args.out.join("explain_text.html");
    let page = explain::text_attribution_html(&chars, &per_char, &title)?;
    std::fs::write(&html, page).map_err(|e| kiln::Error::Io {
        op: "explain",
        path: html.display().to_string(),
        reason: e.to_string(),
    })?;
    let png = args.out.join("explain_text.png");
    explain::save_text_attribution_png(&chars, &per_char, &title, &png)?;
    println!("wrote {} and {}", html.display(), png.display());
    Ok(())
}
