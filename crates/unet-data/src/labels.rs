//! Class-index labels: [`ClassLabels`], read from 8- or 16-bit TIFFs holding 0..K-1 (and an
//! optional ignore value), with the ISBI convention's binary stacks read as classes 0 and 1.

use std::path::Path;

use crate::{AnyStack, Error, Result, Stack};

/// How to read class labels: the number of classes K (`--classes`) and a value left out of the
/// loss and the scores (`--ignore-label`). The default infers K from the data and ignores
/// nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct LabelOptions {
    /// K, at least 2; `None`: 2 for a binary stack, else the largest value (not the ignore
    /// value) plus one.
    pub classes: Option<usize>,
    /// A value that is no class: pixels holding it count for nothing.
    pub ignore: Option<u16>,
}

impl LabelOptions {
    /// Whether these are the default options (K from the data, nothing ignored).
    pub fn is_default(&self) -> bool {
        *self == LabelOptions::default()
    }
}

/// The value that marks an ignored pixel in an 8-bit training label stack of class indices
/// ([`LabelClasses::Indexed`]); so at most 255 classes train.
pub const IGNORED: u8 = 255;

/// How the values of an 8-bit training label stack read.
///
/// With the `serde` feature: `"binary"`, or `{"indexed": {"classes": 3, "ignore": true}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum LabelClasses {
    /// The ISBI convention: 0 = membrane or background (class 0), 255 = cell (class 1).
    #[default]
    Binary,
    /// Class indices `0..classes`; with `ignore`, [`IGNORED`] marks pixels that count for
    /// nothing.
    Indexed {
        /// K.
        classes: usize,
        /// Whether [`IGNORED`] marks ignored pixels.
        ignore: bool,
    },
}

impl LabelClasses {
    /// K, the number of classes.
    pub fn n_classes(self) -> usize {
        match self {
            LabelClasses::Binary => 2,
            LabelClasses::Indexed { classes, .. } => classes,
        }
    }

    /// Whether some pixels may be ignored.
    pub fn ignores(self) -> bool {
        matches!(self, LabelClasses::Indexed { ignore: true, .. })
    }

    /// The class of a stored label value, `None` for an ignored pixel.
    pub fn class_of(self, value: u8) -> Option<u8> {
        match self {
            LabelClasses::Binary => Some(u8::from(value > 0)),
            LabelClasses::Indexed { ignore: true, .. } if value == IGNORED => None,
            LabelClasses::Indexed { .. } => Some(value),
        }
    }
}

/// A checked stack of class indices: every pixel is a class `0..K` or the ignore value.
///
/// A file whose values (the ignore value aside) all lie in {0, 255} or in {0, 1} follows the
/// ISBI convention when no K other than 2 is asked for: K = 2, and 255 reads as class 1 (cell),
/// 0 as class 0 (membrane or background).
#[derive(Debug, Clone, PartialEq)]
pub struct ClassLabels {
    labels: Stack<u16>,
    classes: usize,
    ignore: Option<u16>,
    binary: Option<u16>,
}

impl ClassLabels {
    /// Checks a grey stack of label values read from `path` (named in errors) under `options`,
    /// mapping the binary convention's {0, 255} to {0, 1}.
    ///
    /// Fails when K < 2 is asked for, when a value (not the ignore value) is K or more (naming
    /// the page, counting from 0, the pixel and the value), when the stack has several samples
    /// per pixel, and when the ignore value 1 meets {0, 255} labels (255 would read as it).
    pub fn from_stack(
        labels: Stack<u16>,
        options: &LabelOptions,
        path: &Path,
    ) -> Result<ClassLabels> {
        let option_error = |detail: String| Error::LabelOptions {
            path: path.to_path_buf(),
            detail,
        };
        if let Some(k) = options.classes.filter(|&k| k < 2) {
            return Err(option_error(format!(
                "{k} classes asked for, at least 2 are needed"
            )));
        }
        if labels.samples() != 1 {
            return Err(Error::WrongPixelType {
                path: path.to_path_buf(),
                expected: "grey (one sample per pixel) label",
                found: "multi-sample",
            });
        }
        let ignore = options.ignore;
        let values = || {
            labels
                .as_slice()
                .iter()
                .copied()
                .filter(|&v| Some(v) != ignore)
        };
        let max = values().max();
        let (mut has_one, mut has_255, mut other) = (false, false, false);
        for v in values() {
            match v {
                0 => {}
                1 => has_one = true,
                255 => has_255 = true,
                _ => other = true,
            }
        }
        if matches!(options.classes, None | Some(2)) && !other && !(has_one && has_255) {
            let mut labels = labels;
            let binary = if has_255 {
                if ignore == Some(1) {
                    return Err(option_error(
                        "the ignore value 1 is the class that 255 reads as in {0, 255} labels; \
                         choose another ignore value"
                            .into(),
                    ));
                }
                for v in labels.as_mut_slice() {
                    if *v == 255 && ignore != Some(255) {
                        *v = 1;
                    }
                }
                255
            } else {
                1
            };
            return Ok(ClassLabels {
                labels,
                classes: 2,
                ignore,
                binary: Some(binary),
            });
        }
        let classes = options
            .classes
            .unwrap_or_else(|| max.map_or(2, |m| usize::from(m) + 1));
        let page_len = labels.page_len();
        let found = labels
            .as_slice()
            .iter()
            .position(|&v| Some(v) != ignore && usize::from(v) >= classes);
        if let Some(i) = found {
            let (page, at) = (i / page_len, i % page_len);
            return Err(Error::ClassOutOfRange {
                path: path.to_path_buf(),
                page,
                row: at / labels.width(),
                column: at % labels.width(),
                value: labels.as_slice()[i],
                classes,
                ignore,
            });
        }
        Ok(ClassLabels {
            labels,
            classes,
            ignore,
            binary: None,
        })
    }

    /// The class of each pixel (or the ignore value), page after page.
    pub fn labels(&self) -> &Stack<u16> {
        &self.labels
    }

    /// The stack, owned.
    pub fn into_labels(self) -> Stack<u16> {
        self.labels
    }

    /// K: classes are `0..K`.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The value left out of the loss and the scores, if any.
    pub fn ignore(&self) -> Option<u16> {
        self.ignore
    }

    /// `Some(255)` or `Some(1)` when the file followed the binary ISBI convention with that
    /// value for class 1, `None` for class indices.
    pub fn binary(&self) -> Option<u16> {
        self.binary
    }

    /// The 8-bit stack training takes, and how it reads: the ISBI convention's {0, 255} when the
    /// file was binary and nothing is ignored ([`LabelClasses::Binary`], the same stack
    /// [`crate::read_labels`] gives), else class indices with [`IGNORED`] on ignored pixels.
    ///
    /// Fails above 255 classes, naming `path`.
    pub fn to_training(&self, path: &Path) -> Result<(Stack<u8>, LabelClasses)> {
        if self.binary.is_some() && self.ignore.is_none() {
            return Ok((
                self.labels.map(|v| if v == 0 { 0 } else { 255 }),
                LabelClasses::Binary,
            ));
        }
        if self.classes > usize::from(IGNORED) {
            return Err(Error::LabelOptions {
                path: path.to_path_buf(),
                detail: format!(
                    "{} classes; training takes at most {} (8-bit labels with {IGNORED} for \
                     ignored pixels)",
                    self.classes, IGNORED
                ),
            });
        }
        let ignore = self.ignore;
        let stack = self
            .labels
            .map(|v| if Some(v) == ignore { IGNORED } else { v as u8 });
        Ok((
            stack,
            LabelClasses::Indexed {
                classes: self.classes,
                ignore: ignore.is_some(),
            },
        ))
    }

    /// Pixels of each class (K counts) over the given pages; ignored pixels count for nothing.
    ///
    /// Fails on a page out of range.
    pub fn class_counts(&self, pages: &[usize]) -> Result<Vec<u64>> {
        if let Some(&bad) = pages.iter().find(|&&p| p >= self.labels.pages()) {
            return Err(Error::Shape(format!(
                "page {bad} asked for, the stack has {} pages",
                self.labels.pages()
            )));
        }
        let mut counts = vec![0u64; self.classes];
        for &p in pages {
            for &v in self.labels.page(p) {
                if Some(v) != self.ignore {
                    counts[usize::from(v)] += 1;
                }
            }
        }
        Ok(counts)
    }

    /// Each class's fraction of the pixels that are not ignored, over the given pages (all
    /// zero when every pixel is ignored).
    pub fn class_fractions(&self, pages: &[usize]) -> Result<Vec<f64>> {
        let counts = self.class_counts(pages)?;
        let total = counts.iter().sum::<u64>().max(1) as f64;
        Ok(counts.iter().map(|&n| n as f64 / total).collect())
    }
}

/// Read class-index labels from an 8- or 16-bit grey TIFF under `options` (see
/// [`ClassLabels::from_stack`] for the rules). Errors name the file, and the page and value
/// where one is involved.
pub fn read_class_labels(path: impl AsRef<Path>, options: &LabelOptions) -> Result<ClassLabels> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_class_labels(&bytes, path, options)
}

/// [`read_class_labels`] of TIFF bytes; `path` is only used in error messages.
pub fn decode_class_labels(
    bytes: &[u8],
    path: &Path,
    options: &LabelOptions,
) -> Result<ClassLabels> {
    let stack = match crate::decode_stack(bytes, path)? {
        AnyStack::U8(s) => s.map(u16::from),
        AnyStack::U16(s) => s,
        other => {
            return Err(Error::WrongPixelType {
                path: path.to_path_buf(),
                expected: "8-bit or 16-bit label",
                found: other.pixel_type(),
            })
        }
    };
    ClassLabels::from_stack(stack, options, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(values: &[u16], classes: Option<usize>, ignore: Option<u16>) -> Result<ClassLabels> {
        let stack = Stack::new(2, 1, values.len() / 2, values.to_vec()).unwrap();
        ClassLabels::from_stack(stack, &LabelOptions { classes, ignore }, Path::new("l.tif"))
    }

    #[test]
    fn binary_conventions_read_as_two_classes() {
        let l = read(&[0, 255, 255, 0], None, None).unwrap();
        assert_eq!((l.classes(), l.binary()), (2, Some(255)));
        assert_eq!(l.labels().as_slice(), &[0, 1, 1, 0]);
        let l = read(&[0, 1, 1, 1], Some(2), None).unwrap();
        assert_eq!((l.classes(), l.binary()), (2, Some(1)));
        assert_eq!(l.class_counts(&[0, 1]).unwrap(), vec![1, 3]);
        // All background: still two classes.
        assert_eq!(read(&[0, 0], None, None).unwrap().classes(), 2);
        // The ignore value stays as it is.
        let l = read(&[0, 255, 7, 0], None, Some(7)).unwrap();
        assert_eq!(l.labels().as_slice(), &[0, 1, 7, 0]);
        assert_eq!(
            l.class_fractions(&[0, 1]).unwrap(),
            vec![2.0 / 3.0, 1.0 / 3.0]
        );
        assert!(read(&[0, 255, 1, 0], None, Some(1)).is_err());
    }

    #[test]
    fn class_indices_infer_or_check_k() {
        let l = read(&[0, 1, 2, 4], None, None).unwrap();
        assert_eq!((l.classes(), l.binary()), (5, None));
        assert_eq!(l.class_counts(&[1]).unwrap(), vec![0, 0, 1, 0, 1]);
        // {0, 255} with K = 256 asked for: class indices.
        let l = read(&[0, 255, 0, 0], Some(256), None).unwrap();
        assert_eq!(l.labels().as_slice(), &[0, 255, 0, 0]);
        // A value of K or more names the page, pixel and value.
        let e = read(&[0, 1, 2, 3], Some(3), None).unwrap_err();
        assert!(
            matches!(
                e,
                Error::ClassOutOfRange {
                    page: 1,
                    row: 0,
                    column: 1,
                    value: 3,
                    ..
                }
            ),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.starts_with("l.tif page 1 (counting from 0), row 0, column 1: value 3"),
            "{msg}"
        );
        // The ignore value is neither counted nor checked, nor does it raise K.
        let l = read(&[0, 1, 2, 65535], None, Some(65535)).unwrap();
        assert_eq!(l.classes(), 3);
        assert_eq!(l.class_counts(&[0, 1]).unwrap(), vec![1, 1, 1]);
        assert!(read(&[0, 1, 2, 3], Some(1), None).is_err());
        assert!(l.class_counts(&[2]).is_err());
    }
}
