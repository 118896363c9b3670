//! NumPy's `.npy` format (version 1.0) for little-endian f32 arrays: what the BioImage Model
//! Zoo's test tensors are.

use crate::{Error, Result};

const MAGIC: &[u8] = b"\x93NUMPY";

/// The `.npy` bytes of a C-order f32 array of `shape`.
///
/// ```
/// let bytes = unet_export::npy::to_npy(&[2, 3], &[0.0; 6]);
/// assert_eq!(bytes.len() % 64, 24 % 64); // a 64-byte aligned header, then 6 * 4 bytes
/// let (shape, values) = unet_export::npy::from_npy(&bytes, "a.npy").unwrap();
/// assert_eq!((shape, values), (vec![2, 3], vec![0.0; 6]));
/// ```
pub fn to_npy(shape: &[usize], values: &[f32]) -> Vec<u8> {
    debug_assert_eq!(shape.iter().product::<usize>(), values.len());
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    // A one-element tuple needs its trailing comma in Python's syntax.
    let tuple = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple}, }}");
    // Magic (6) + version (2) + length (2) + header, padded with spaces to a multiple of 64
    // and ended by a newline, as numpy writes it.
    let unpadded = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + header.len() + 4 * values.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Reads what [`to_npy`] writes (little-endian f32, C order, version 1.0): the shape and the
/// values; anything else is an error naming `name`.
pub fn from_npy(bytes: &[u8], name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let fail = |reason: &str| Error::Package {
        path: name.into(),
        reason: format!("not an f32 .npy array of ours: {reason}"),
    };
    if bytes.len() < 10 || &bytes[..6] != MAGIC || bytes[6] != 1 {
        return Err(fail("no .npy version 1 header"));
    }
    let len = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
    let header = bytes
        .get(10..10 + len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| fail("a truncated header"))?;
    if !header.contains("'descr': '<f4'") || !header.contains("'fortran_order': False") {
        return Err(fail("not little-endian f32 in C order"));
    }
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| fail("no shape"))?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| fail("a bad shape")))
        .collect::<Result<Vec<_>>>()?;
    let data = &bytes[10 + len..];
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| fail("a shape too large"))?;
    if count.checked_mul(4) != Some(data.len()) {
        return Err(fail("the data does not fill the shape"));
    }
    let values = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((shape, values))
}
