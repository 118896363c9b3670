//! numpy arrays in and out: any numeric dtype and any strides in (read in C order, converted per
//! value), C-contiguous arrays of our own out. Bad inputs become Python exceptions that name the
//! argument and what is wrong with it.

use numpy::ndarray::{ArrayViewD, IxDyn};
use numpy::{
    Element, IntoPyArray, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

/// A numeric element type numpy arrays come in, with the conversions the API needs.
pub trait Num: Element + Copy {
    /// The value as a double (exact for every type but 64-bit integers beyond 2^53).
    fn to_f64(self) -> f64;
    /// The value as a grey value in [0, 1] units: 8- and 16-bit unsigned images divided by
    /// their largest value, as `unet predict` reads TIFF pages; everything else as it is.
    fn to_grey(self) -> f32;
    /// The value as it is, in single precision.
    fn to_f32(self) -> f32;
    /// The value as a class id, when it is an integer in `0..=255`.
    fn to_label(self) -> Option<u8> {
        label_value(self.to_f64())
    }
}

macro_rules! num_as_is {
    ($($t:ty),*) => {$(
        impl Num for $t {
            fn to_f64(self) -> f64 { self as f64 }
            fn to_grey(self) -> f32 { self as f32 }
            fn to_f32(self) -> f32 { self as f32 }
        }
    )*};
}
num_as_is!(u32, u64, i8, i16, i32, i64, f32, f64);

impl Num for u8 {
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn to_label(self) -> Option<u8> {
        Some(self)
    }
    fn to_grey(self) -> f32 {
        f32::from(self) / 255.0
    }
    fn to_f32(self) -> f32 {
        f32::from(self)
    }
}

impl Num for u16 {
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn to_grey(self) -> f32 {
        f32::from(self) / 65535.0
    }
    fn to_f32(self) -> f32 {
        f32::from(self)
    }
}

impl Num for bool {
    fn to_f64(self) -> f64 {
        f64::from(u8::from(self))
    }
    fn to_label(self) -> Option<u8> {
        Some(u8::from(self))
    }
    fn to_grey(self) -> f32 {
        f32::from(u8::from(self))
    }
    fn to_f32(self) -> f32 {
        f32::from(u8::from(self))
    }
}

/// What to do with the values of an array, whatever its element type.
pub trait Visitor {
    /// The result.
    type Out;
    /// Called once with the array's values (C order when iterated).
    fn visit<T: Num>(self, view: ArrayViewD<'_, T>) -> Self::Out;
}

/// `obj` as a numpy array (`numpy.asarray` for lists and other sequences), or a TypeError
/// naming `what`.
pub fn as_array<'py>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Bound<'py, PyUntypedArray>> {
    if let Ok(array) = obj.cast::<PyUntypedArray>() {
        return Ok(array.clone());
    }
    let converted = obj
        .py()
        .import("numpy")?
        .call_method1("asarray", (obj,))
        .map_err(|e| {
            PyTypeError::new_err(format!(
                "{what} must be a numeric numpy array (or convertible to one): {e}"
            ))
        })?;
    Ok(converted.cast_into::<PyUntypedArray>()?)
}

/// Calls `visitor` with the values of `array` in their own type; dtypes without a Rust type of
/// their own (float16, long double, byte-swapped) are read through float64; non-numeric ones
/// (complex, object, strings, dates) are a TypeError naming `what`.
pub fn visit<V: Visitor>(
    array: &Bound<'_, PyUntypedArray>,
    what: &str,
    visitor: V,
) -> PyResult<V::Out> {
    macro_rules! try_types {
        ($($t:ty),*) => {$(
            if let Ok(typed) = array.cast::<PyArrayDyn<$t>>() {
                let read = typed.try_readonly().map_err(|e| {
                    PyValueError::new_err(format!("{what}: cannot read the array: {e}"))
                })?;
                return Ok(visitor.visit(read.as_array()));
            }
        )*};
    }
    try_types!(u8, f32, bool, u16, i64, i32, f64, u32, u64, i8, i16);
    let dtype = array.dtype();
    let kind = dtype.kind();
    if matches!(kind, b'b' | b'i' | b'u' | b'f') {
        let as_f64 = array.call_method1("astype", ("float64",))?;
        let typed = as_f64.cast::<PyArrayDyn<f64>>()?;
        let read = typed
            .try_readonly()
            .map_err(|e| PyValueError::new_err(format!("{what}: cannot read the array: {e}")))?;
        return Ok(visitor.visit(read.as_array()));
    }
    Err(PyTypeError::new_err(format!(
        "{what} must hold numbers (bool, integer or float), not dtype {}",
        dtype.str()?
    )))
}

/// Checks that `shape` has one of the `allowed` numbers of dimensions and no empty axis.
pub fn check_shape(shape: &[usize], allowed: &[usize], what: &str, meaning: &str) -> PyResult<()> {
    if !allowed.contains(&shape.len()) {
        return Err(PyValueError::new_err(format!(
            "{what} must be {meaning}; got {} dimension(s) with shape {shape:?}",
            shape.len()
        )));
    }
    if shape.contains(&0) {
        return Err(PyValueError::new_err(format!(
            "{what} is empty (shape {shape:?})"
        )));
    }
    Ok(())
}

/// Values as `f32`, unchanged (weights, probabilities).
pub struct AsF32;

impl Visitor for AsF32 {
    type Out = Vec<f32>;
    fn visit<T: Num>(self, view: ArrayViewD<'_, T>) -> Vec<f32> {
        match view.as_slice() {
            Some(slice) => slice.iter().map(|v| v.to_f32()).collect(),
            None => view.iter().map(|v| v.to_f32()).collect(),
        }
    }
}

/// Values as grey values in [0, 1] units ([`Num::to_grey`]: images).
pub struct AsGrey;

impl Visitor for AsGrey {
    type Out = Vec<f32>;
    fn visit<T: Num>(self, view: ArrayViewD<'_, T>) -> Vec<f32> {
        match view.as_slice() {
            Some(slice) => slice.iter().map(|v| v.to_grey()).collect(),
            None => view.iter().map(|v| v.to_grey()).collect(),
        }
    }
}

/// Values as class ids in `0..=255` (labels); the error names the first other value.
pub struct AsLabel;

impl Visitor for AsLabel {
    type Out = Result<Vec<u8>, LabelError>;
    fn visit<T: Num>(self, view: ArrayViewD<'_, T>) -> Self::Out {
        let error = |index: usize, v: T| LabelError {
            index,
            value: v.to_f64(),
        };
        // The contiguous case in one pass without per-value error bookkeeping: labels are read
        // for every augmented sample, so this is on the hot path of a DataLoader.
        if let Some(slice) = view.as_slice() {
            let out: Vec<u8> = slice.iter().map(|v| v.to_label().unwrap_or(0)).collect();
            if let Some(i) = slice.iter().position(|v| v.to_label().is_none()) {
                return Err(error(i, slice[i]));
            }
            return Ok(out);
        }
        view.iter()
            .enumerate()
            .map(|(index, &v)| v.to_label().ok_or_else(|| error(index, v)))
            .collect()
    }
}

/// A label that is not an integer in `0..=255`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabelError {
    /// Flat index (C order).
    pub index: usize,
    /// The value.
    pub value: f64,
}

/// `value` as a class id, when it is an integer in `0..=255`.
pub fn label_value(value: f64) -> Option<u8> {
    (value.fract() == 0.0 && (0.0..=255.0).contains(&value)).then_some(value as u8)
}

/// Reads `obj` as labels: class ids, any numeric dtype, each an integer in 0..=255.
pub fn read_labels(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<(Vec<u8>, Vec<usize>)> {
    let array = as_array(obj, what)?;
    let shape = array.shape().to_vec();
    let labels = visit(&array, what, AsLabel)?.map_err(|e| {
        PyValueError::new_err(format!(
            "{what} must hold integer class ids in 0..=255 (0 = membrane, 255 or 1 = cell); \
             found {} at {:?}",
            e.value,
            unravel(e.index, &shape)
        ))
    })?;
    Ok((labels, shape))
}

/// Reads `obj` as `f32` values ([`AsF32`]) with its shape.
pub fn read_f32(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<(Vec<f32>, Vec<usize>)> {
    let array = as_array(obj, what)?;
    let shape = array.shape().to_vec();
    Ok((visit(&array, what, AsF32)?, shape))
}

/// Reads `obj` as grey values in [0, 1] units ([`AsGrey`]) with its shape.
pub fn read_grey(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<(Vec<f32>, Vec<usize>)> {
    let array = as_array(obj, what)?;
    let shape = array.shape().to_vec();
    Ok((visit(&array, what, AsGrey)?, shape))
}

/// Checks that binary labels hold 0 and at most one other value (the cell label, 255 or 1), as
/// the weight map and the scores read them; the error names the values found.
pub fn check_binary(labels: &[u8], what: &str) -> PyResult<()> {
    match binary_problem(labels) {
        None => Ok(()),
        Some(values) => Err(PyValueError::new_err(format!(
            "{what} must be binary: 0 for membrane and one value (255 or 1) for cell; found the \
             values {values}"
        ))),
    }
}

/// The values found, listed, when `labels` hold more than one value besides 0.
fn binary_problem(labels: &[u8]) -> Option<String> {
    let mut seen = [false; 256];
    for &l in labels {
        seen[usize::from(l)] = true;
    }
    let values: Vec<usize> = (0..256).filter(|&v| seen[v]).collect();
    if values.iter().filter(|&&v| v != 0).count() <= 1 {
        return None;
    }
    let shown: Vec<String> = values.iter().take(8).map(|v| v.to_string()).collect();
    Some(format!(
        "{}{}",
        shown.join(", "),
        if values.len() > 8 { ", ..." } else { "" }
    ))
}

/// The index of flat position `index` in an array of `shape` (C order), for messages.
pub fn unravel(mut index: usize, shape: &[usize]) -> Vec<usize> {
    let mut out = vec![0; shape.len()];
    for (axis, &n) in shape.iter().enumerate().rev() {
        if n > 0 {
            out[axis] = index % n;
            index /= n;
        }
    }
    out
}

/// A new C-contiguous array of `shape` holding `values`.
pub fn to_array<'py, T: Element>(
    py: Python<'py>,
    values: Vec<T>,
    shape: &[usize],
) -> PyResult<Bound<'py, PyArrayDyn<T>>> {
    let array = numpy::ndarray::Array::from_shape_vec(IxDyn(shape), values)
        .map_err(|e| PyValueError::new_err(format!("internal shape error: {e}")))?;
    Ok(array.into_pyarray(py))
}

#[cfg(test)]
mod tests {
    use super::*;
    use numpy::ndarray::{Array2, ShapeBuilder};

    #[test]
    fn grey_scales_8_and_16_bit_only() {
        assert_eq!(255u8.to_grey(), 1.0);
        assert_eq!(65535u16.to_grey(), 1.0);
        assert_eq!(0.25f64.to_grey(), 0.25);
        assert_eq!(3i32.to_grey(), 3.0);
        assert_eq!(true.to_grey(), 1.0);
    }

    #[test]
    fn strided_views_are_read_in_c_order() {
        // A Fortran-ordered 2 x 3 array: its memory order differs from its logical order.
        let a = Array2::from_shape_vec((2, 3).f(), vec![1u8, 4, 2, 5, 3, 6]).unwrap();
        let v = AsF32.visit(a.view().into_dyn());
        assert_eq!(v, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let t = a.t();
        assert_eq!(AsGrey.visit(t.into_dyn()).len(), 6);
    }

    #[test]
    fn labels_must_be_integers_in_a_byte() {
        assert_eq!(label_value(255.0), Some(255));
        assert_eq!(label_value(1.0), Some(1));
        assert_eq!(label_value(0.5), None);
        assert_eq!(label_value(256.0), None);
        assert_eq!(label_value(-1.0), None);
        assert_eq!(label_value(f64::NAN), None);
        let a = Array2::from_shape_vec((2, 2), vec![0i64, 255, 300, 0]).unwrap();
        assert_eq!(
            AsLabel.visit(a.view().into_dyn()),
            Err(LabelError {
                index: 2,
                value: 300.0
            })
        );
    }

    #[test]
    fn binary_labels_hold_zero_and_one_other_value() {
        assert_eq!(binary_problem(&[0, 255, 255]), None);
        assert_eq!(binary_problem(&[0, 1]), None);
        assert_eq!(binary_problem(&[7, 7]), None);
        assert_eq!(binary_problem(&[0, 1, 2]), Some("0, 1, 2".to_string()));
        let many: Vec<u8> = (0..20).collect();
        assert_eq!(
            binary_problem(&many),
            Some("0, 1, 2, 3, 4, 5, 6, 7, ...".to_string())
        );
    }

    #[test]
    fn unravel_names_the_pixel() {
        assert_eq!(unravel(5, &[2, 3]), vec![1, 2]);
        assert_eq!(unravel(7, &[2, 2, 2]), vec![1, 1, 1]);
    }
}
