//! A training sample: image planes, a label plane and an optional weight plane of one size.

use crate::error::{Error, Result};

/// One training sample: `channels` image planes (f32, planar, row-major), a label plane (u8 class
/// ids, e.g. 0/255) and an optional per-pixel loss weight plane (f32), all `width` x `height`.
///
/// Geometric transforms move all planes together; intensity transforms touch the image only.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    width: usize,
    height: usize,
    channels: usize,
    image: Vec<f32>,
    label: Vec<u8>,
    weight: Option<Vec<f32>>,
}

impl Sample {
    /// A sample from its planes; errors when a plane's length does not match the size.
    pub fn new(
        width: usize,
        height: usize,
        channels: usize,
        image: Vec<f32>,
        label: Vec<u8>,
        weight: Option<Vec<f32>>,
    ) -> Result<Self> {
        if width == 0 || height == 0 || channels == 0 {
            return Err(Error::EmptyImage {
                width,
                height,
                channels,
            });
        }
        let pixels = width * height;
        check_plane_len("image", pixels * channels, image.len())?;
        check_plane_len("label", pixels, label.len())?;
        if let Some(w) = &weight {
            check_plane_len("weight", pixels, w.len())?;
        }
        Ok(Self {
            width,
            height,
            channels,
            image,
            label,
            weight,
        })
    }

    /// A one-channel sample (the ISBI case).
    pub fn grey(
        width: usize,
        height: usize,
        image: Vec<f32>,
        label: Vec<u8>,
        weight: Option<Vec<f32>>,
    ) -> Result<Self> {
        Self::new(width, height, 1, image, label, weight)
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Number of image channels.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// All image planes, planar: channel `c` is `image()[c * w * h..(c + 1) * w * h]`.
    pub fn image(&self) -> &[f32] {
        &self.image
    }

    /// Image channel `c` (panics if `c >= channels()`, like slice indexing).
    pub fn image_plane(&self, c: usize) -> &[f32] {
        let n = self.width * self.height;
        &self.image[c * n..(c + 1) * n]
    }

    /// The label plane.
    pub fn label(&self) -> &[u8] {
        &self.label
    }

    /// The weight plane, if any.
    pub fn weight(&self) -> Option<&[f32]> {
        self.weight.as_deref()
    }

    /// Mutable image planes (their size is fixed).
    pub fn image_mut(&mut self) -> &mut [f32] {
        &mut self.image
    }

    /// The planes: (image, label, weight).
    pub fn into_parts(self) -> (Vec<f32>, Vec<u8>, Option<Vec<f32>>) {
        (self.image, self.label, self.weight)
    }
}

pub(crate) fn check_plane_len(plane: &'static str, expected: usize, actual: usize) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::PlaneSize {
            plane,
            expected,
            actual,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mismatched_planes_are_errors() {
        assert!(Sample::grey(2, 2, vec![0.0; 4], vec![0; 4], None).is_ok());
        assert!(matches!(
            Sample::grey(2, 2, vec![0.0; 3], vec![0; 4], None),
            Err(Error::PlaneSize { plane: "image", .. })
        ));
        assert!(matches!(
            Sample::grey(2, 2, vec![0.0; 4], vec![0; 5], None),
            Err(Error::PlaneSize { plane: "label", .. })
        ));
        assert!(matches!(
            Sample::grey(2, 2, vec![0.0; 4], vec![0; 4], Some(vec![1.0; 2])),
            Err(Error::PlaneSize {
                plane: "weight",
                ..
            })
        ));
        assert!(matches!(
            Sample::new(0, 2, 1, vec![], vec![], None),
            Err(Error::EmptyImage { .. })
        ));
        let s = Sample::new(2, 1, 2, vec![1.0, 2.0, 3.0, 4.0], vec![0, 255], None).unwrap();
        assert_eq!(s.image_plane(1), &[3.0, 4.0]);
    }
}
