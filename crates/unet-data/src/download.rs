//! Fetching the ISBI 2012 stacks from a public mirror, verified by pixel checksums.
//!
//! The mirror serves each section as an 8-bit PNG at `<mirror>/<dir>/<i>.png`; the pages are
//! stacked into the TIFF files the rest of the project reads. Each stack is checked against the
//! SHA-256 of its decoded pixels (see [`pixel_sha256`]), so a re-encoded copy of the same pixels is
//! accepted and anything else is rejected.

use std::io::Read;
use std::path::Path;

use crate::isbi::{TEST_VOLUME, TRAIN_LABELS, TRAIN_VOLUME};
use crate::{decode_png_grey, pixel_sha256, read_u8_stack, write_stack, Error, Result, Stack};

/// The public mirror: the PNG sections of the repository zhixuhao/unet, pinned to the last commit
/// that changed them.
pub const DEFAULT_MIRROR: &str = "https://raw.githubusercontent.com/zhixuhao/unet/909ae9b5fefd8a55900e24a771b073b1d4ef70ff/data/membrane";

/// One stack to fetch: where its pages are on the mirror, and what its pixels must hash to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteStack {
    /// The local file name (e.g. `train-volume.tif`).
    pub file: &'static str,
    /// The mirror directory holding `0.png`, `1.png`, ...
    pub remote_dir: &'static str,
    /// Number of pages.
    pub pages: usize,
    /// SHA-256 (hex) of the decoded pixel bytes, page after page.
    pub pixel_sha256: &'static str,
}

/// The three ISBI 2012 stacks.
pub const ISBI_STACKS: [RemoteStack; 3] = [
    RemoteStack {
        file: TRAIN_VOLUME,
        remote_dir: "train/image",
        pages: 30,
        pixel_sha256: "200da3d452d726e6c9ca1ce04b869d4edb727320d23b516d01cce707dc8c4760",
    },
    RemoteStack {
        file: TRAIN_LABELS,
        remote_dir: "train/label",
        pages: 30,
        pixel_sha256: "a7cb64000a1a7e542682927e19c91339f58f9f178e0bcce4e207371116f0ca36",
    },
    RemoteStack {
        file: TEST_VOLUME,
        remote_dir: "test",
        pages: 30,
        pixel_sha256: "1b58fa7ec1d0ff9d39a855622db3ff66a97863036339b0d04be51b2f5a99b0e9",
    },
];

/// What [`fetch_stacks`] reports as it goes, for a progress bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchEvent {
    /// The file is already there with the right pixels; nothing is downloaded.
    AlreadyPresent {
        /// Local file name.
        file: &'static str,
    },
    /// Downloading a stack of `pages` pages begins.
    Start {
        /// Local file name.
        file: &'static str,
        /// Pages to fetch.
        pages: usize,
    },
    /// One page arrived (`page` counts from 0) with `bytes` bytes.
    Page {
        /// Local file name.
        file: &'static str,
        /// The page.
        page: usize,
        /// Its size on the wire.
        bytes: usize,
    },
    /// The stack was verified and written.
    Written {
        /// Local file name.
        file: &'static str,
    },
}

/// Check that `path` holds the expected pixels; `Ok(false)` when the file does not exist.
pub fn verify_stack(path: &Path, expected_sha256: &str) -> Result<bool> {
    if !path.exists() {
        return Ok(false);
    }
    let found = pixel_sha256(&read_u8_stack(path)?);
    if found == expected_sha256 {
        Ok(true)
    } else {
        Err(Error::Checksum {
            path: path.to_path_buf(),
            expected: expected_sha256.to_string(),
            found,
        })
    }
}

/// Fetch `stacks` from `mirror` into `dest` (created if missing).
///
/// A file already present with the right pixels is kept; one present with other pixels is an
/// error and is never overwritten (move it away first). Each downloaded stack is verified before
/// it is written, atomically, so a failed or interrupted fetch leaves no partial file.
pub fn fetch_stacks(
    mirror: &str,
    dest: &Path,
    stacks: &[RemoteStack],
    on_event: &mut dyn FnMut(FetchEvent),
) -> Result<()> {
    std::fs::create_dir_all(dest).map_err(|e| Error::io(dest, e))?;
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(std::time::Duration::from_secs(120)))
            .build(),
    );
    for stack in stacks {
        let path = dest.join(stack.file);
        if verify_stack(&path, stack.pixel_sha256)? {
            on_event(FetchEvent::AlreadyPresent { file: stack.file });
            continue;
        }
        on_event(FetchEvent::Start {
            file: stack.file,
            pages: stack.pages,
        });
        let mut pages = Vec::with_capacity(stack.pages);
        let mut size: Option<(usize, usize)> = None;
        for i in 0..stack.pages {
            let url = format!(
                "{}/{}/{i}.png",
                mirror.trim_end_matches('/'),
                stack.remote_dir
            );
            let bytes = get(&agent, &url)?;
            let (h, w, px) = decode_png_grey(&bytes, &url)?;
            match size {
                None => size = Some((h, w)),
                Some(s) if s != (h, w) => {
                    return Err(Error::Png {
                        source_name: url,
                        detail: format!("{h}x{w}, but page 0 was {}x{}", s.0, s.1),
                    })
                }
                Some(_) => {}
            }
            on_event(FetchEvent::Page {
                file: stack.file,
                page: i,
                bytes: bytes.len(),
            });
            pages.push(px);
        }
        let (h, w) = size.ok_or_else(|| Error::Shape(format!("{}: no page", stack.file)))?;
        let assembled = Stack::from_pages(h, w, 1, pages)?;
        let found = pixel_sha256(&assembled);
        if found != stack.pixel_sha256 {
            return Err(Error::Checksum {
                path: path.clone(),
                expected: stack.pixel_sha256.to_string(),
                found,
            });
        }
        write_stack(&path, &assembled)?;
        on_event(FetchEvent::Written { file: stack.file });
    }
    Ok(())
}

fn get(agent: &ureq::Agent, url: &str) -> Result<Vec<u8>> {
    let fail = |detail: String| Error::Download {
        url: url.to_string(),
        detail,
    };
    let mut response = agent.get(url).call().map_err(|e| fail(e.to_string()))?;
    let mut bytes = Vec::new();
    response
        .body_mut()
        .as_reader()
        .take(64 << 20)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(e.to_string()))?;
    Ok(bytes)
}
