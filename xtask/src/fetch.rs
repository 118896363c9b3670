//! `cargo xtask fetch-data`: the ISBI 2012 stacks from the public mirror, with a progress bar.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use unet_data::download::{fetch_stacks, FetchEvent, DEFAULT_MIRROR, ISBI_STACKS};

/// Flags of `cargo xtask fetch-data`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Where to put the stacks [default: data/isbi2012 in the checkout].
    #[arg(long)]
    pub dest: Option<PathBuf>,
    /// Base URL of the mirror (serving <dir>/<i>.png).
    #[arg(long, default_value = DEFAULT_MIRROR)]
    pub mirror: String,
}

/// Run `fetch-data`.
pub fn run(root: &Path, args: &FetchArgs) -> Result<()> {
    let dest = args
        .dest
        .clone()
        .unwrap_or_else(|| root.join(unet_data::DEFAULT_DATA_DIR));
    fetch_into(&dest, &args.mirror)
}

/// Fetch the three ISBI stacks into `dest`, showing progress.
pub fn fetch_into(dest: &Path, mirror: &str) -> Result<()> {
    let style = ProgressStyle::with_template("{msg:>18} [{bar:30}] {pos}/{len} pages")
        .expect("valid template")
        .progress_chars("=> ");
    let mut bar: Option<ProgressBar> = None;
    fetch_stacks(mirror, dest, &ISBI_STACKS, &mut |event| match event {
        FetchEvent::AlreadyPresent { file } => eprintln!("{file:>18} present, pixels verified"),
        FetchEvent::Start { file, pages } => {
            let b = ProgressBar::new(pages as u64).with_style(style.clone());
            b.set_message(file);
            bar = Some(b);
        }
        FetchEvent::Page { .. } => {
            if let Some(b) = &bar {
                b.inc(1)
            }
        }
        FetchEvent::Written { file } => {
            if let Some(b) = bar.take() {
                b.finish_with_message(format!("{file} ok"));
            }
        }
    })
    .with_context(|| format!("fetching the ISBI 2012 data into {}", dest.display()))?;
    eprintln!("ISBI 2012 data ready in {}", dest.display());
    Ok(())
}
