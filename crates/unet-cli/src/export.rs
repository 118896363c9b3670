//! `unet export`: a checkpoint as a BioImage Model Zoo package (ONNX weights, rdf.yaml, test
//! tensors, a cover; our checkpoint attached) for Fiji, napari, ilastik and deepImageJ, or as a
//! bare ONNX file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::Device;
use clap::{Args, ValueEnum};
use unet_export::onnx_model;
use unet_export::package::{package, PackageOptions, Sample};

use crate::builtin::{checkpoint_bytes, open_model};
use crate::predict::check_output;

/// What `unet export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// A BioImage Model Zoo package (`.bioimageio.zip`, format 0.5).
    Bioimageio,
    /// The bare ONNX graph (opset 17, softmax inside, symbolic batch and sizes).
    Onnx,
}

/// Flags of `unet export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The checkpoint (or a package) [default: the built-in default model].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// The file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// What to write.
    #[arg(long, value_enum, default_value = "bioimageio")]
    pub format: ExportFormat,
    /// An 8-bit grey image (TIFF: its first page, or PNG) the package's test tensors and cover
    /// are cut from [default: section 0 of the ISBI training stack, when the data is found].
    #[arg(long)]
    pub sample: Option<PathBuf>,
    /// The model's name in the package.
    #[arg(long, default_value_t = PackageOptions::default().name)]
    pub name: String,
    /// An author of the model (repeat for more) [default: the unet-rs developers].
    #[arg(long)]
    pub author: Vec<String>,
    /// The model's license (an SPDX identifier).
    #[arg(long, default_value_t = PackageOptions::default().license)]
    pub license: String,
    /// Replace --out if it exists.
    #[arg(long)]
    pub overwrite: bool,
}

/// The sample image: `--sample`, else ISBI training section 0.
fn sample(path: Option<&Path>) -> Result<Sample> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => unet_data::locate_data_dir(None)
            .context(
                "the package's test tensors and cover need a sample image: pass --sample \
                 IMAGE.tif (or set UNET_DATA to the ISBI 2012 data)",
            )?
            .join(unet_data::TRAIN_VOLUME),
    };
    let is_png = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    let (height, width, pixels) = if is_png {
        unet_data::read_png_grey(&path)?
    } else {
        let stack = unet_data::read_u8_stack(&path)
            .with_context(|| format!("reading the sample image {}", path.display()))?;
        (stack.height(), stack.width(), stack.page(0).to_vec())
    };
    Ok(Sample {
        height,
        width,
        pixels,
    })
}

/// Runs `unet export`.
pub fn run(args: &ExportArgs) -> Result<()> {
    check_output(&args.out, args.overwrite)?;
    let (model, meta, name) = open_model(args.model.as_deref(), &Device::Cpu)?;
    let bytes = match args.format {
        ExportFormat::Onnx => onnx_model(&model).with_context(|| format!("exporting {name}"))?,
        ExportFormat::Bioimageio => {
            let (checkpoint, _) = checkpoint_bytes(args.model.as_deref())?;
            let opts = PackageOptions {
                name: args.name.clone(),
                authors: match args.author.is_empty() {
                    true => PackageOptions::default().authors,
                    false => args.author.clone(),
                },
                license: args.license.clone(),
                ..PackageOptions::default()
            };
            package(
                &model,
                &meta,
                &checkpoint,
                &sample(args.sample.as_deref())?,
                &opts,
            )
            .with_context(|| format!("packaging {name}"))?
        }
    };
    unet_data::write_atomically(&args.out, &bytes)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "wrote {} ({} bytes) from {name}",
        args.out.display(),
        bytes.len()
    );
    Ok(())
}
