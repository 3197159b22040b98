//! `kiln saliency`: which pixels drove a trained CNN's prediction. The gradient of the
//! predicted class's logit with respect to the input image, drawn beside the digit.

use crate::models;
use clap::Args;
use kiln::{DType, Device, Result, Rng, Tensor};
use kiln_nn::data::{load_mnist_dir, mnist10k};
use kiln_nn::layers::Sequential;
use kiln_nn::train::{load_checkpoint, restore, save_image_grid, Palette};
use kiln_nn::{Module, ModuleExt};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct SaliencyArgs {
    /// A CNN checkpoint written by `kiln train` (cnn).
    #[arg(long, default_value = "runs/cnn/model.safetensors")]
    checkpoint: PathBuf,
    /// IDX folder to take test images from (the bundled digits by default).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Which test images to explain (first index; `--count` images from there).
    #[arg(long, default_value_t = 0)]
    index: usize,
    #[arg(long, default_value_t = 8)]
    count: usize,
    #[arg(long, default_value = "auto")]
    device: String,
    /// Where saliency.png goes.
    #[arg(long, default_value = "runs/cnn")]
    out: PathBuf,
}

pub fn run(args: SaliencyArgs) -> Result<()> {
    let device = Device::parse(&args.device)?;
    let model = trained_cnn(&args.checkpoint, &device)?;
    let data = match &args.data {
        Some(dir) => load_mnist_dir(dir)?,
        None => mnist10k()?,
    };
    let mut tiles = Vec::new();
    for i in selection(args.index, args.count, data.test_images.dims()[0])? {
        let image = image_at(&data.test_images, i, &device)?.into_var()?;
        let logits = model.forward(&image)?;
        let probs = kiln::no_grad(|| logits.softmax(-1))?.to_vec::<f32>()?;
        let predicted = kiln::no_grad(|| logits.argmax(-1, false))?.to_vec::<i32>()?[0] as usize;
        let grads = logits.narrow(1, predicted, 1)?.sum_all()?.backward()?;
        let saliency = grads
            .get(&image)
            .expect("the image requires a gradient")
            .abs()?
            .to_dtype(DType::F32)?;
        let label = data.test_labels.to_vec::<i32>()?[i];
        println!(
            "image {i}: label {label}, predicted {predicted} with probability {:.3}",
            probs[predicted]
        );
        tiles.push((image.detach().to_vec::<f32>()?, Palette::Grey));
        tiles.push((Tensor::to_vec::<f32>(&saliency)?, Palette::Heat));
    }
    crate::out_dir::create("saliency", &args.out)?;
    let path = args.out.join("saliency.png");
    save_image_grid(&tiles, 28, 28, 4, 6, &path)?;
    println!(
        "wrote {} (each digit, then |d logit / d pixel| for its predicted class)",
        path.display()
    );
    Ok(())
}

/// The CNN `kiln train` saved at `checkpoint`, on `device`, in evaluation mode.
pub(crate) fn trained_cnn(checkpoint: &Path, device: &Device) -> Result<Sequential> {
    if !checkpoint.exists() {
        let reason =
            "no checkpoint there: run `kiln train` first (or pass --checkpoint)".to_string();
        return Err(kiln::Error::Io {
            op: "saliency",
            path: checkpoint.display().to_string(),
            reason,
        });
    }
    let model = models::cnn(device, &mut Rng::new(0), models::CNN_DROPOUT)?;
    restore(&load_checkpoint(checkpoint)?, &model.state_dict())?;
    model.eval();
    Ok(model)
}

/// Image `i` of `images` (`[N, C, H, W]`) as a batch of one on `device`.
pub(crate) fn image_at(images: &Tensor, i: usize, device: &Device) -> Result<Tensor> {
    images.narrow(0, i, 1)?.contiguous()?.to_device(device)
}

/// The images `--index` and `--count` pick out of `images`: an error when they pick
/// none (an empty picture would look like a result).
pub(crate) fn selection(
    index: usize,
    count: usize,
    images: usize,
) -> Result<std::ops::Range<usize>> {
    if index >= images || count == 0 {
        let last = images.saturating_sub(1);
        let reason = format!(
            "--index {index} and --count {count} select no image: the test set has {images} (indices 0 to {last})"
        );
        return Err(kiln::Error::InvalidArgument {
            op: "saliency",
            reason,
        });
    }
    Ok(index..index + count.min(images - index))
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_index_past_the_end_or_no_count_is_an_error() {
        assert_eq!(super::selection(3, 8, 10).unwrap(), 3..10);
        assert!(super::selection(10, 1, 10).is_err());
        assert!(super::selection(0, 0, 10).is_err());
        assert!(super::selection(0, 1, 0).is_err());
    }
}
