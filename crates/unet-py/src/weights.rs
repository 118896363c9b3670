//! `unet_rs.weight_map`: the paper's loss weight map through `unet_weights`.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use unet_weights::{BorderTerm, ClassWeight, Connectivity, WeightMapParams};

use crate::convert::{check_binary, check_shape, read_labels, to_array};

/// The names `class_weight` takes, with their [`ClassWeight`]s.
/// `"balanced"` is the name `unet weights --class-weight` and the training configuration use.
pub const CLASS_WEIGHTS: [(&str, ClassWeight); 4] = [
    ("total_over_count", ClassWeight::Balanced),
    ("balanced", ClassWeight::Balanced),
    ("mean1", ClassWeight::Mean1),
    ("none", ClassWeight::None),
];

/// The names `border_term` takes, with their [`BorderTerm`]s.
pub const BORDER_TERMS: [(&str, BorderTerm); 2] = [
    ("background", BorderTerm::Background),
    ("all_pixels", BorderTerm::AllPixels),
];

/// The [`ClassWeight`] called `name`; the error lists the valid names.
pub fn parse_class_weight(name: &str) -> Result<ClassWeight, String> {
    parse_name(name, "class_weight", &CLASS_WEIGHTS)
}

/// The [`BorderTerm`] called `name`; the error lists the valid names.
pub fn parse_border_term(name: &str) -> Result<BorderTerm, String> {
    parse_name(name, "border_term", &BORDER_TERMS)
}

/// The [`Connectivity`] of `neighbours` (4 or 8).
pub fn parse_connectivity(neighbours: u32) -> Result<Connectivity, String> {
    match neighbours {
        4 => Ok(Connectivity::Four),
        8 => Ok(Connectivity::Eight),
        other => Err(format!("connectivity must be 4 or 8, not {other}")),
    }
}

/// The value called `name` in `table`, or a message naming the valid ones.
pub fn parse_name<T: Copy>(name: &str, what: &str, table: &[(&str, T)]) -> Result<T, String> {
    table
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, v)| v)
        .ok_or_else(|| {
            let valid: Vec<String> = table.iter().map(|(n, _)| format!("{n:?}")).collect();
            format!("unknown {what} {name:?}; valid: {}", valid.join(", "))
        })
}

/// The U-Net paper's loss weight map (Ronneberger et al. 2015, eq. 2), exact:
/// w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2)), with d1, d2 the distances to
/// the nearest and second-nearest cell (cells: connected components of label > 0).
///
/// Args:
///     labels: one section (H, W) or a stack (N, H, W); any numeric dtype, binary: 0 for
///         membrane and one other value (255 or 1, or True) for cell.
///     w0: height of the border term (>= 0; 0 switches it off).
///     sigma: width of the border term in pixels (> 0).
///     class_weight: "total_over_count" (w_c = pixels / pixels of the class, per section, as
///         the reference implementation; "balanced" is the same), "mean1" (that, divided by the number of classes
///         present, so w_c averages 1) or "none" (w_c = 1).
///     connectivity: 4 or 8, the neighbours that join cell pixels into one cell.
///     border_term: "background" (the gaps between cells only, as the paper) or "all_pixels".
///
/// Returns:
///     float32 array of the labels' shape, C-contiguous. Stacks are computed in parallel over
///     sections, without the GIL.
///
/// Raises:
///     ValueError: labels not 2-D or 3-D, empty, not binary; a parameter out of range or an
///         unknown name.
///     TypeError: labels that are not numbers.
#[pyfunction]
#[pyo3(signature = (labels, w0=10.0, sigma=5.0, class_weight="total_over_count", connectivity=4, border_term="background"))]
pub fn weight_map<'py>(
    py: Python<'py>,
    labels: &Bound<'py, PyAny>,
    w0: f32,
    sigma: f32,
    class_weight: &str,
    connectivity: u32,
    border_term: &str,
) -> PyResult<Bound<'py, numpy::PyArrayDyn<f32>>> {
    let params = WeightMapParams {
        w0,
        sigma,
        class_weight: parse_class_weight(class_weight).map_err(PyValueError::new_err)?,
        connectivity: parse_connectivity(connectivity).map_err(PyValueError::new_err)?,
        border_term: parse_border_term(border_term).map_err(PyValueError::new_err)?,
    };
    let valid = params
        .validate()
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let (labels, shape) = read_labels(labels, "labels")?;
    check_shape(
        &shape,
        &[2, 3],
        "labels",
        "one section (H, W) or a stack (N, H, W)",
    )?;
    check_binary(&labels, "labels")?;
    let (pages, height, width) = match shape[..] {
        [h, w] => (1, h, w),
        [n, h, w] => (n, h, w),
        _ => unreachable!("checked above"),
    };
    let weights = py
        .detach(move || valid.weight_maps(&labels, pages, height, width))
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    to_array(py, weights, &shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_weight_names_map_to_the_variants() {
        assert_eq!(
            parse_class_weight("total_over_count"),
            Ok(ClassWeight::Balanced)
        );
        assert_eq!(parse_class_weight("balanced"), Ok(ClassWeight::Balanced));
        assert_eq!(parse_class_weight("mean1"), Ok(ClassWeight::Mean1));
        assert_eq!(parse_class_weight("none"), Ok(ClassWeight::None));
        let err = parse_class_weight("balance").unwrap_err();
        assert_eq!(
            err,
            "unknown class_weight \"balance\"; valid: \"total_over_count\", \"balanced\", \"mean1\", \"none\""
        );
    }

    #[test]
    fn border_term_and_connectivity() {
        assert_eq!(parse_border_term("all_pixels"), Ok(BorderTerm::AllPixels));
        assert!(parse_border_term("cells")
            .unwrap_err()
            .contains("\"background\""));
        assert_eq!(parse_connectivity(8), Ok(Connectivity::Eight));
        assert!(parse_connectivity(6).is_err());
    }
}
