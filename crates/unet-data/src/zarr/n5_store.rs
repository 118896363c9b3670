//! N5 datasets in and out, for [`super::Volume`] and [`super::BlockStore`] (with the `n5`
//! crate's block codec; the file I/O is ours, so writes are atomic and errors name the file).
//!
//! N5 lists dimensions fastest first, `[x, y, z]` (or `[x, y, z, c]`), the reverse of
//! numpy's and Zarr's order: everything here speaks Zarr's order (`[c,] z, y, x`) and reverses
//! at the N5 boundary, so a block's voxels, stored x fastest, are C order in Zarr's.

use std::fs;
use std::io::Cursor;
use std::ops::Range;
use std::path::{Path, PathBuf};

use n5::{DataBlock, DatasetAttributes, DefaultBlock, DefaultBlockReader, DefaultBlockWriter};
use serde_json::{json, Value};

use super::{read_json, zarr_error, OutputType};
use crate::{write_atomically, Error, Result};

/// An N5 metadata file's name.
const ATTRIBUTES: &str = "attributes.json";

/// Whether `path` is N5 rather than Zarr: its first component ending in `.n5` or `.zarr` ends in
/// `.n5`; without either, the directory holds an `attributes.json` and no Zarr metadata.
pub(super) fn is_n5(path: &Path) -> bool {
    let named = path.components().find_map(|c| {
        let name = c.as_os_str().to_str()?.to_ascii_lowercase();
        if name.ends_with(".n5") {
            Some(true)
        } else if name.ends_with(".zarr") {
            Some(false)
        } else {
            None
        }
    });
    named.unwrap_or_else(|| {
        path.join(ATTRIBUTES).is_file()
            && ![".zarray", ".zgroup", "zarr.json"]
                .iter()
                .any(|f| path.join(f).is_file())
    })
}

/// One N5 dataset: where its blocks are and how they are cut and encoded.
pub(super) struct Dataset {
    /// The dataset's directory (its blocks are `DIR/gx/gy/gz[/gc]`).
    dir: PathBuf,
    attributes: DatasetAttributes,
    /// Dimensions in Zarr's order (N5's reversed).
    shape: Vec<u64>,
    /// The block size in Zarr's order.
    block: Vec<u64>,
}

/// What the attributes of a dataset and its group say about the volume.
pub(super) struct Opened {
    /// The dataset.
    pub dataset: Dataset,
    /// Axis names in Zarr's order: the `axes` attribute reversed, else `z, y, x` (3-D) or
    /// `c, z, y, x` (4-D, channels last in N5's order).
    pub names: Vec<String>,
    /// The voxel size along each axis in Zarr's order, when the metadata gives one.
    pub scale: Option<Vec<f64>>,
    /// The OME name of the spatial unit (`nanometer`, ...), when known.
    pub unit: Option<&'static str>,
}

/// N5's short unit names and OME-Zarr's (UDUNITS-2) names of the same units.
const UNITS: [(&str, &str); 6] = [
    ("nm", "nanometer"),
    ("um", "micrometer"),
    ("µm", "micrometer"),
    ("μm", "micrometer"),
    ("mm", "millimeter"),
    ("pm", "picometer"),
];

/// The OME name of an N5 unit (`nm` or `nanometer` alike), if it is one of the lengths above.
fn ome_unit(unit: &str) -> Option<&'static str> {
    UNITS
        .iter()
        .find(|(short, long)| unit == *short || unit == *long)
        .map(|&(_, long)| long)
}

/// The N5 short name of an OME unit (`micrometer` becomes `um`); others as they are.
pub(super) fn n5_unit(unit: &str) -> String {
    UNITS
        .iter()
        .find(|(_, long)| unit == *long)
        .map_or(unit, |&(short, _)| short)
        .to_string()
}

/// The attributes of `dir` (`{}` when it has no attributes.json, as N5 allows).
fn attributes_of(dir: &Path) -> Result<Value> {
    let file = dir.join(ATTRIBUTES);
    if file.is_file() {
        read_json(&file)
    } else {
        Ok(json!({}))
    }
}

fn numbers(value: &Value) -> Option<Vec<f64>> {
    value.as_array()?.iter().map(Value::as_f64).collect()
}

/// The voxel size (N5 order) and its unit in `attrs`: `pixelResolution` (`{"unit",
/// "dimensions"}`, n5-viewer's and N5 Spark's) or `resolution` (Paintera's and BigDataViewer's
/// export; with neuroglancer's `units`).
fn resolution(attrs: &Value) -> Option<(Vec<f64>, Option<String>)> {
    let pixel = &attrs["pixelResolution"];
    if let Some(dims) = numbers(&pixel["dimensions"]) {
        return Some((dims, pixel["unit"].as_str().map(String::from)));
    }
    let dims = numbers(&attrs["resolution"])?;
    let unit = attrs["units"][0].as_str().map(String::from);
    Some((dims, unit))
}

/// Opens the dataset at `path` (`VOL.n5/DATASET`), or the full resolution of a multiscale group
/// (`s0`, n5-viewer's and N5 Spark's; or BigDataViewer's `setup0/timepoint0/s0`).
pub(super) fn open(path: &Path) -> Result<Opened> {
    if !path.is_dir() {
        let why = if path.exists() {
            "not an N5 container (a file; N5 is a directory with attributes.json)"
        } else {
            "no such file or directory"
        };
        return Err(zarr_error(path, why));
    }
    let mut dir = path.to_path_buf();
    let mut attrs = attributes_of(&dir)?;
    if attrs.get("dimensions").is_none() {
        let Some(inner) = ["s0", "setup0/timepoint0/s0"]
            .iter()
            .map(|p| dir.join(p))
            .find(|d| d.join(ATTRIBUTES).is_file())
        else {
            return Err(zarr_error(
                path,
                "neither an N5 dataset (no \"dimensions\" in an attributes.json) nor a \
                 multiscale group with a dataset s0 (or setup0/timepoint0/s0); name the dataset, \
                 VOL.n5/DATASET",
            ));
        };
        dir = inner;
        attrs = attributes_of(&dir)?;
    }
    let dataset = Dataset::open(&dir, &attrs)?;
    let ndim = dataset.shape.len();
    let names: Vec<String> = match attrs["axes"].as_array() {
        Some(axes) => axes
            .iter()
            .rev()
            .map(|a| a.as_str().unwrap_or("?").to_string())
            .collect(),
        None if ndim == 3 => ["z", "y", "x"].map(String::from).to_vec(),
        None if ndim == 4 => ["c", "z", "y", "x"].map(String::from).to_vec(),
        None => {
            return Err(zarr_error(
                &dir,
                format!(
                    "a {ndim}-D N5 dataset; unet reads 3-D ([x, y, z]) and 4-D ([x, y, z, c]) \
                     datasets, or others whose \"axes\" attribute names them"
                ),
            ))
        }
    };
    // The dataset's own resolution, else its group's (a multiscale group's is level 0's),
    // times its downsampling factors: n5-viewer's rule.
    let group = match dir.parent() {
        Some(parent) => attributes_of(parent).unwrap_or_else(|_| json!({})),
        None => json!({}),
    };
    let found = resolution(&attrs).or_else(|| resolution(&group));
    let factors = numbers(&attrs["downsamplingFactors"]);
    let (scale, unit) = match found {
        Some((mut dims, unit)) => {
            if let Some(f) = factors.filter(|f| f.len() >= dims.len()) {
                dims.iter_mut().zip(f).for_each(|(d, f)| *d *= f);
            }
            // One value per dimension, or x, y, z of a dataset with a channel axis.
            let spatial = dims.len() == 3 && ndim == 4;
            let fits = (dims.len() == ndim || spatial) && dims.iter().all(|d| *d > 0.0);
            let mut scale: Vec<f64> = dims.into_iter().rev().collect();
            if spatial {
                scale.insert(0, 1.0);
            }
            (fits.then_some(scale), unit.as_deref().and_then(ome_unit))
        }
        None => (None, None),
    };
    Ok(Opened {
        dataset,
        names,
        scale,
        unit,
    })
}

impl Dataset {
    /// The dataset at `dir` with attributes `attrs`, checked: a shape, a block size, a data type
    /// and a compression this module reads.
    pub(super) fn open(dir: &Path, attrs: &Value) -> Result<Self> {
        let file = dir.join(ATTRIBUTES);
        let mut attrs = attrs.clone();
        // N5 before 1.0 wrote `"compressionType": "gzip"`, not a compression object.
        if attrs.get("compression").is_none() {
            let old = attrs["compressionType"]
                .as_str()
                .unwrap_or("raw")
                .to_string();
            attrs["compression"] = json!({ "type": old });
        }
        let compression = attrs["compression"]["type"].as_str().unwrap_or("?");
        if !["raw", "gzip"].contains(&compression) {
            return Err(zarr_error(
                &file,
                format!(
                    "blocks compressed with {compression:?}; unet reads raw and gzip N5 blocks \
                     (re-save the dataset with one of those, e.g. with Fiji's N5 export)"
                ),
            ));
        }
        if attrs["compression"]["useZlib"] == json!(true) {
            return Err(zarr_error(
                &file,
                "gzip blocks with useZlib: true (zlib streams); unet reads gzip streams",
            ));
        }
        let data_type = attrs["dataType"].as_str().unwrap_or("?");
        if !["uint8", "uint16", "float32", "float64"].contains(&data_type) {
            return Err(zarr_error(
                &file,
                format!(
                    "voxels of dataType {data_type:?}; unet reads uint8, uint16, float32 and \
                     float64 volumes"
                ),
            ));
        }
        let attributes: DatasetAttributes = serde_json::from_value(attrs.clone())
            .map_err(|e| zarr_error(&file, format!("not N5 dataset attributes: {e}")))?;
        let dims = attributes.get_dimensions();
        let blocks = attributes.get_block_size();
        if dims.len() != blocks.len() || dims.is_empty() {
            return Err(zarr_error(
                &file,
                format!("dimensions {dims:?} and blockSize {blocks:?} differ in length"),
            ));
        }
        if dims.contains(&0) || blocks.contains(&0) {
            return Err(zarr_error(
                &file,
                format!("an empty volume or block: dimensions {dims:?}, blockSize {blocks:?}"),
            ));
        }
        // N5's blocks count their voxels in 32 bits (Java's arrays in 31).
        let voxels = blocks
            .iter()
            .try_fold(1u64, |n, &b| n.checked_mul(u64::from(b)));
        if voxels.is_none_or(|n| n > i32::MAX as u64) {
            return Err(zarr_error(
                &file,
                format!("blockSize {blocks:?}: more than 2^31 voxels a block"),
            ));
        }
        Ok(Dataset {
            dir: dir.to_path_buf(),
            shape: dims.iter().rev().copied().collect(),
            block: blocks.iter().rev().map(|&b| u64::from(b)).collect(),
            attributes,
        })
    }

    /// The dataset's dimensions in Zarr's order.
    pub(super) fn shape(&self) -> &[u64] {
        &self.shape
    }

    /// The block size in Zarr's order.
    pub(super) fn block(&self) -> &[u64] {
        &self.block
    }

    /// The voxels' data type (one of those `Dataset::open` accepts).
    pub(super) fn data_type(&self) -> n5::DataType {
        *self.attributes.get_data_type()
    }

    /// The file of the block at grid position `grid` (Zarr's order).
    fn block_path(&self, grid: &[u64]) -> PathBuf {
        let mut path = self.dir.clone();
        for g in grid.iter().rev() {
            path.push(g.to_string());
        }
        path
    }

    /// The voxels of `ranges` (Zarr's order), C order, converted by `convert`. A missing block
    /// reads as zeros (N5's fill value).
    pub(super) fn read<T: n5::ReflectedType + Copy>(
        &self,
        ranges: &[Range<u64>],
        convert: impl Fn(T) -> f32,
    ) -> Result<Vec<f32>>
    where
        n5::VecDataBlock<T>: n5::ReadableDataBlock,
    {
        let lens: Vec<usize> = ranges.iter().map(|r| (r.end - r.start) as usize).collect();
        let mut out = vec![0f32; lens.iter().product()];
        let grid: Vec<Range<u64>> = ranges
            .iter()
            .zip(&self.block)
            .map(|(r, b)| r.start / b..r.end.div_ceil(*b))
            .collect();
        for position in odometer(&grid) {
            let path = self.block_path(&position);
            let bytes = match fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&path, e)),
            };
            let size = self.check_header(&path, &bytes)?;
            let n5_position: n5::GridCoord = position.iter().rev().copied().collect();
            let block = <DefaultBlock as DefaultBlockReader<T, _>>::read_block(
                Cursor::new(bytes),
                &self.attributes,
                n5_position,
            )
            .map_err(|e| zarr_error(&path, format!("not a readable N5 block: {e}")))?;
            let data = block.get_data();
            let origin: Vec<u64> = position
                .iter()
                .zip(&self.block)
                .map(|(g, b)| g * b)
                .collect();
            // The part of the block inside `ranges`, copied one run along the last axis at a
            // time.
            let overlap: Vec<Range<u64>> = (0..ranges.len())
                .map(|d| ranges[d].start.max(origin[d])..ranges[d].end.min(origin[d] + size[d]))
                .collect();
            if overlap.iter().any(|r| r.is_empty()) {
                continue;
            }
            let last = ranges.len() - 1;
            let rows: Vec<Range<u64>> = overlap[..last].to_vec();
            for row in odometer(&rows) {
                let (mut src, mut dst) = (0usize, 0usize);
                for d in 0..last {
                    src = src * size[d] as usize + (row[d] - origin[d]) as usize;
                    dst = dst * lens[d] + (row[d] - ranges[d].start) as usize;
                }
                let run = overlap[last].clone();
                src = src * size[last] as usize + (run.start - origin[last]) as usize;
                dst = dst * lens[last] + (run.start - ranges[last].start) as usize;
                let n = (run.end - run.start) as usize;
                for (o, &v) in out[dst..dst + n].iter_mut().zip(&data[src..src + n]) {
                    *o = convert(v);
                }
            }
        }
        Ok(out)
    }

    /// A block file's size (Zarr's order) from its header, checked against the dataset before
    /// anything is decoded: at most the block size, and the voxels it declares.
    fn check_header(&self, path: &Path, bytes: &[u8]) -> Result<Vec<u64>> {
        let bad = |why: String| zarr_error(path, format!("not an N5 block of this dataset: {why}"));
        let u16_at = |i: usize| {
            bytes
                .get(i..i + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
        };
        let u32_at = |i: usize| {
            bytes
                .get(i..i + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        let (Some(mode), Some(ndim)) = (u16_at(0), u16_at(2)) else {
            return Err(bad("shorter than its header".into()));
        };
        if mode > 1 {
            return Err(bad(format!("block mode {mode} (0 and 1 are N5's)")));
        }
        if usize::from(ndim) != self.shape.len() {
            return Err(bad(format!(
                "{ndim} dimensions, the dataset {}",
                self.shape.len()
            )));
        }
        let mut size = Vec::with_capacity(self.shape.len());
        for d in 0..usize::from(ndim) {
            let s = u32_at(4 + 4 * d).ok_or_else(|| bad("shorter than its header".into()))?;
            size.push(u64::from(s));
        }
        size.reverse();
        if size.iter().zip(&self.block).any(|(s, b)| s > b) {
            return Err(bad(format!(
                "size {size:?}, larger than the block size {:?}",
                self.block
            )));
        }
        if mode == 1 {
            let declared = u32_at(4 + 4 * usize::from(ndim))
                .ok_or_else(|| bad("shorter than its header".into()))?;
            // Varlength blocks hold as many elements as they say; a volume's need them all.
            if u64::from(declared) != size.iter().product::<u64>() {
                return Err(bad(format!(
                    "{declared} elements for a block of {size:?} voxels"
                )));
            }
        }
        Ok(size)
    }

    /// The attributes of a new dataset of `shape` cut into `block`s (Zarr's order in, N5's
    /// written): gzip blocks of `dtype`.
    pub(super) fn attributes_json(shape: &[u64], block: &[u64], dtype: OutputType) -> Value {
        let rev = |v: &[u64]| v.iter().rev().copied().collect::<Vec<u64>>();
        json!({
            "dimensions": rev(shape),
            "blockSize": rev(block),
            "dataType": dtype.name(),
            "compression": { "type": "gzip", "level": -1 },
        })
    }

    /// Writes `values` (C order over `ranges`, Zarr's order, each range whole blocks or ending
    /// at the dataset's edge) as whole blocks, each atomically and flushed to disk, so a block
    /// is either as it was or complete, and on disk before any done-marker that counts it.
    /// Edge blocks are cut to the dataset, as N5's own writers cut them.
    pub(super) fn write(
        &self,
        ranges: &[Range<u64>],
        values: &[f32],
        dtype: OutputType,
    ) -> Result<()> {
        let grid: Vec<Range<u64>> = ranges
            .iter()
            .zip(&self.block)
            .map(|(r, b)| r.start / b..r.end.div_ceil(*b))
            .collect();
        let lens: Vec<usize> = ranges.iter().map(|r| (r.end - r.start) as usize).collect();
        for position in odometer(&grid) {
            let extent: Vec<Range<u64>> = (0..ranges.len())
                .map(|d| {
                    let start = position[d] * self.block[d];
                    start..(start + self.block[d]).min(self.shape[d])
                })
                .collect();
            let last = ranges.len() - 1;
            let mut block =
                Vec::with_capacity(extent.iter().map(|r| (r.end - r.start) as usize).product());
            for row in odometer(&extent[..last]) {
                let mut src = 0usize;
                for d in 0..last {
                    src = src * lens[d] + (row[d] - ranges[d].start) as usize;
                }
                src = src * lens[last] + (extent[last].start - ranges[last].start) as usize;
                let n = (extent[last].end - extent[last].start) as usize;
                block.extend_from_slice(&values[src..src + n]);
            }
            let size: n5::BlockCoord = extent
                .iter()
                .rev()
                .map(|r| (r.end - r.start) as u32)
                .collect();
            let n5_position: n5::GridCoord = position.iter().rev().copied().collect();
            let path = self.block_path(&position);
            let mut bytes = Vec::new();
            let encoded = match dtype {
                OutputType::U8 | OutputType::Class => {
                    let data: Vec<u8> = block.iter().map(|&v| dtype.to_byte(v)).collect();
                    let b = n5::VecDataBlock::<u8>::new(size, n5_position, data);
                    <DefaultBlock as DefaultBlockWriter<u8, _, _>>::write_block(
                        &mut bytes,
                        &self.attributes,
                        &b,
                    )
                }
                _ => {
                    let b = n5::VecDataBlock::<f32>::new(size, n5_position, block);
                    <DefaultBlock as DefaultBlockWriter<f32, _, _>>::write_block(
                        &mut bytes,
                        &self.attributes,
                        &b,
                    )
                }
            };
            encoded.map_err(|e| zarr_error(&path, format!("encoding an N5 block: {e}")))?;
            write_atomically(&path, &bytes)?;
        }
        Ok(())
    }
}

/// Every index in the box `ranges` (row-major, the last axis fastest); one empty index for no
/// ranges.
fn odometer(ranges: &[Range<u64>]) -> impl Iterator<Item = Vec<u64>> + '_ {
    let total: u64 = ranges
        .iter()
        .map(|r| r.end.saturating_sub(r.start))
        .product();
    (0..total).map(move |mut i| {
        let mut index = vec![0; ranges.len()];
        for d in (0..ranges.len()).rev() {
            let n = ranges[d].end - ranges[d].start;
            index[d] = ranges[d].start + i % n;
            i /= n;
        }
        index
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use n5::prelude::*;
    use serde_json::json;
    use zarrs::array::Array;
    use zarrs::filesystem::FilesystemStore;

    use super::super::{
        BlockGrid, BlockStore, OutputSpec, OutputType, StoreFormat, Volume, ZarrVersion,
    };

    /// Voxels with some structure, one per index.
    fn grey(n: usize) -> Vec<u16> {
        (0..n)
            .map(|i| ((i * 37 + (i / 45) * 11) % 65536) as u16)
            .collect()
    }

    /// Writes `data` (C order over `shape`, Zarr's order) as the N5 dataset `path` in the
    /// container `root` with the `n5` crate: blocks of `block` (Zarr's order), the edge ones cut.
    fn write_n5<T: ReflectedType + Copy>(
        root: &std::path::Path,
        path: &str,
        shape: &[u64],
        block: &[u64],
        compression: CompressionType,
        data: &[T],
    ) where
        VecDataBlock<T>: n5::WriteableDataBlock,
    {
        let n5 = N5Filesystem::open_or_create(root).unwrap();
        let rev = |v: &[u64]| v.iter().rev().copied().collect::<Vec<u64>>();
        let attrs = DatasetAttributes::new(
            rev(shape).into(),
            block.iter().rev().map(|&b| b as u32).collect(),
            T::VARIANT,
            compression,
        );
        n5.create_dataset(path, &attrs).unwrap();
        let grid: Vec<std::ops::Range<u64>> = shape
            .iter()
            .zip(block)
            .map(|(s, b)| 0..s.div_ceil(*b))
            .collect();
        for position in super::odometer(&grid) {
            let extent: Vec<std::ops::Range<u64>> = (0..shape.len())
                .map(|d| position[d] * block[d]..((position[d] + 1) * block[d]).min(shape[d]))
                .collect();
            let values: Vec<T> = super::odometer(&extent)
                .map(|i| {
                    let flat = i.iter().zip(shape).fold(0, |acc, (i, s)| acc * s + i);
                    data[flat as usize]
                })
                .collect();
            let size = extent
                .iter()
                .rev()
                .map(|r| (r.end - r.start) as u32)
                .collect();
            let b = VecDataBlock::<T>::new(size, rev(&position).into(), values);
            n5.write_block(path, &attrs, &b).unwrap();
        }
    }

    /// The same voxels as an uncompressed Zarr v2 array, `0` of an OME-less store.
    fn write_zarr<T: zarrs::array::Element>(
        root: &std::path::Path,
        dtype: &str,
        shape: &[u64],
        data: &[T],
    ) {
        let meta = json!({
            "zarr_format": 2, "shape": shape, "chunks": [2, 16, 16], "dtype": dtype,
            "compressor": null, "fill_value": 0, "order": "C", "filters": null,
        });
        std::fs::create_dir_all(root).unwrap();
        std::fs::write(root.join(".zarray"), meta.to_string()).unwrap();
        let array = Array::open(Arc::new(FilesystemStore::new(root).unwrap()), "/").unwrap();
        array
            .store_array_subset_elements(&array.subset_all(), data)
            .unwrap();
    }

    fn read_all(volume: &Volume) -> Vec<f32> {
        let [d, h, w] = volume.shape();
        volume.read_unit(0..d, 0..h, 0..w).unwrap()
    }

    /// uint8, uint16 and float32 datasets, gzip and raw, in blocks that do not divide the volume,
    /// read as the same numbers as the Zarr array of the same voxels, whole and in parts.
    #[test]
    fn n5_datasets_read_as_the_equivalent_zarr_arrays() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let shape = [3u64, 37, 45];
        let block = [2u64, 13, 16];
        let n = shape.iter().product::<u64>() as usize;
        let wide = grey(n);
        let bytes: Vec<u8> = wide.iter().map(|&v| v as u8).collect();
        let floats: Vec<f32> = wide.iter().map(|&v| f32::from(v) / 70000.0).collect();
        let gzip = || CompressionType::new::<compression::gzip::GzipCompression>();
        let raw = || CompressionType::new::<compression::raw::RawCompression>();
        write_n5(&d.join("v.n5"), "u8", &shape, &block, gzip(), &bytes);
        write_n5(&d.join("v.n5"), "u16", &shape, &block, raw(), &wide);
        write_n5(&d.join("v.n5"), "f32", &shape, &block, gzip(), &floats);
        write_zarr(&d.join("u8.zarr"), "|u1", &shape, &bytes);
        write_zarr(&d.join("u16.zarr"), "<u2", &shape, &wide);
        write_zarr(&d.join("f32.zarr"), "<f4", &shape, &floats);
        for name in ["u8", "u16", "f32"] {
            let n5 = Volume::open(d.join("v.n5").join(name)).unwrap();
            let zarr = Volume::open(d.join(format!("{name}.zarr"))).unwrap();
            assert_eq!(n5.shape(), [3, 37, 45]);
            assert_eq!((n5.channels(), n5.chunk_shape().unwrap()), (1, [2, 13, 16]));
            assert_eq!(n5.voxel_type(), zarr.voxel_type());
            assert_eq!(read_all(&n5), read_all(&zarr), "{name}");
            let part = |v: &Volume| v.read_unit(1..3, 12..27, 15..33).unwrap();
            assert_eq!(part(&n5), part(&zarr), "{name}");
        }
        // A channel axis, last in N5's order: channels read as Zarr's (c, z, y, x) do.
        let two: Vec<u8> = bytes.iter().chain(bytes.iter().rev()).copied().collect();
        let four = [2, 3, 37, 45];
        write_n5(&d.join("v.n5"), "c", &four, &[1, 2, 13, 16], gzip(), &two);
        let n5 = Volume::open(d.join("v.n5/c")).unwrap();
        assert_eq!((n5.shape(), n5.channels()), ([3, 37, 45], 2));
        let got = n5.read_unit(1..2, 0..37, 0..45).unwrap();
        let plane = 37 * 45;
        let want: Vec<f32> = [&bytes[plane..2 * plane], &two[4 * plane..5 * plane]]
            .concat()
            .iter()
            .map(|&v| f32::from(v) / 255.0)
            .collect();
        assert_eq!(got, want);
    }

    /// The voxel size and unit come from pixelResolution or resolution (N5's x, y, z reversed),
    /// a level's times its downsampling factors; a multiscale group opens as its s0, and
    /// BigDataViewer's layout as setup0/timepoint0/s0.
    #[test]
    fn n5_resolution_becomes_the_voxel_size() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ms.n5");
        let data = vec![7u8; 2 * 5 * 6];
        let gzip = || CompressionType::new::<compression::gzip::GzipCompression>();
        write_n5(&root, "s0", &[2, 5, 6], &[1, 4, 4], gzip(), &data);
        write_n5(&root, "s1", &[2, 5, 6], &[1, 4, 4], gzip(), &data);
        let n5 = N5Filesystem::open(&root).unwrap();
        n5.set_attribute("", "multiScale".into(), true).unwrap();
        n5.set_attribute(
            "",
            "pixelResolution".into(),
            json!({ "unit": "nm", "dimensions": [4.0, 4.5, 40.0] }),
        )
        .unwrap();
        n5.set_attribute("s1", "downsamplingFactors".into(), json!([2, 2, 1]))
            .unwrap();
        let v = Volume::open(&root).unwrap();
        assert_eq!(v.spatial_scale(), Some([40.0, 4.5, 4.0]));
        assert_eq!(
            v.spatial_axes()[0],
            json!({ "name": "z", "type": "space", "unit": "nanometer" })
        );
        assert_eq!(read_all(&v), vec![7.0 / 255.0; 60]);
        let s1 = Volume::open(root.join("s1")).unwrap();
        assert_eq!(s1.spatial_scale(), Some([40.0, 9.0, 8.0]));

        // `resolution` on the dataset itself, in a directory without `.n5` in its name.
        let bdv = dir.path().join("export");
        write_n5(
            &bdv,
            "setup0/timepoint0/s0",
            &[2, 5, 6],
            &[2, 5, 6],
            gzip(),
            &data,
        );
        let n5 = N5Filesystem::open(&bdv).unwrap();
        n5.set_attribute(
            "setup0/timepoint0/s0",
            "resolution".into(),
            json!([1, 2, 3]),
        )
        .unwrap();
        let v = Volume::open(&bdv).unwrap();
        assert_eq!(
            (v.shape(), v.spatial_scale()),
            ([2, 5, 6], Some([3.0, 2.0, 1.0]))
        );
        assert_eq!(v.spatial_axes()[2], json!({ "name": "x", "type": "space" }));
    }

    /// Bad datasets are errors that name the file and what is wrong.
    #[test]
    fn bad_n5_datasets_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("bad.n5");
        let attrs = |extra: serde_json::Value| {
            let mut a = json!({
                "dimensions": [6, 5, 2], "blockSize": [4, 4, 1], "dataType": "uint8",
                "compression": { "type": "gzip" },
            });
            for (k, v) in extra.as_object().unwrap() {
                a[k] = v.clone();
            }
            a
        };
        let cases = [
            ("int", attrs(json!({ "dataType": "int16" })), "\"int16\""),
            (
                "blosc",
                attrs(json!({ "compression": { "type": "blosc" } })),
                "\"blosc\"",
            ),
            (
                "flat",
                attrs(json!({ "dimensions": [6, 5], "blockSize": [4, 4] })),
                "2-D",
            ),
            ("zero", attrs(json!({ "dimensions": [6, 0, 2] })), "empty"),
            (
                "short",
                attrs(json!({ "blockSize": [4, 4] })),
                "differ in length",
            ),
            (
                "nodims",
                json!({ "dataType": "uint8" }),
                "neither an N5 dataset",
            ),
            (
                "huge",
                attrs(json!({ "blockSize": [65536, 65536, 1] })),
                "2^31 voxels",
            ),
        ];
        for (name, value, why) in cases {
            let ds = root.join(name);
            std::fs::create_dir_all(&ds).unwrap();
            std::fs::write(ds.join("attributes.json"), value.to_string()).unwrap();
            let err = Volume::open(&ds).unwrap_err().to_string();
            assert!(err.contains(&ds.display().to_string()), "{err}");
            assert!(err.contains(why), "{name}: {err}");
        }
        let empty = root.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let err = Volume::open(&empty).unwrap_err().to_string();
        assert!(
            err.contains("bad.n5/empty") && err.contains("attributes.json"),
            "{err}"
        );
        let err = Volume::open(root.join("missing")).unwrap_err().to_string();
        assert!(
            err.contains("missing") && err.contains("no such file"),
            "{err}"
        );
        // A block whose header claims more than the block size is refused before decoding.
        let ds = root.join("good");
        std::fs::create_dir_all(ds.join("0/0")).unwrap();
        std::fs::write(ds.join("attributes.json"), attrs(json!({})).to_string()).unwrap();
        let mut block = vec![0u8, 0, 0, 3];
        for s in [4000u32, 4, 1] {
            block.extend(s.to_be_bytes());
        }
        std::fs::write(ds.join("0/0/0"), &block).unwrap();
        let v = Volume::open(&ds).unwrap();
        let err = v.read_unit(0..1, 0..5, 0..6).unwrap_err().to_string();
        assert!(
            err.contains("0/0/0") && err.contains("larger than the block size"),
            "{err}"
        );
        std::fs::write(ds.join("0/0/0"), [0u8, 0, 0]).unwrap();
        let err = v.read_unit(0..1, 0..5, 0..6).unwrap_err().to_string();
        assert!(err.contains("shorter than its header"), "{err}");
    }

    /// An N5 output holds whole gzip blocks that the `n5` crate reads, n5-viewer's multiscale
    /// attributes, and reads back through `Volume`; f16 is refused.
    #[test]
    fn n5_stores_write_blocks_the_n5_crate_reads() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("out.n5");
        let spec = OutputSpec {
            grid: BlockGrid {
                shape: [3, 37, 45],
                block: [2, 32, 40],
            },
            chunks: [2, 16, 20],
            dtype: OutputType::U8,
            channels: 1,
            format: StoreFormat::N5,
            axes: ["z", "y", "x"]
                .map(|n| json!({ "name": n, "type": "space", "unit": "micrometer" }))
                .to_vec(),
            scale: [0.04, 0.004, 0.0045],
            job: json!({ "model": "m" }),
            pyramid: 1,
        };
        let store = BlockStore::create_or_open(&root, &spec).unwrap();
        let p: Vec<f32> = (0..3 * 37 * 45).map(|i| (i % 101) as f32 / 100.0).collect();
        for id in 0..store.grid().len() {
            let [z, y, x] = store.grid().block(id);
            let mut values = Vec::new();
            for z in z {
                for y in y.clone() {
                    values.extend_from_slice(
                        &p[(z * 37 + y) * 45 + x.start..(z * 37 + y) * 45 + x.end],
                    );
                }
            }
            store.write_block(id, &values).unwrap();
            store.mark_done(id).unwrap();
        }
        assert_eq!(BlockStore::status(&root).unwrap().1, store.grid().len());
        let n5 = N5Filesystem::open(&root).unwrap();
        let attrs = n5.get_dataset_attributes("s0").unwrap();
        assert_eq!(attrs.get_dimensions(), &[45, 37, 3]);
        assert_eq!(attrs.get_block_size(), &[20, 16, 2]);
        // The edge block, cut to the volume.
        let edge = n5
            .read_block::<u8>("s0", &attrs, [2u64, 2, 1].into_iter().collect())
            .unwrap()
            .unwrap();
        assert_eq!(edge.get_size(), &[5, 5, 1]);
        assert_eq!(
            edge.get_data()[0],
            super::super::to_u8(p[(2 * 37 + 32) * 45 + 40])
        );
        let root_attrs = n5.list_attributes("").unwrap();
        assert_eq!(root_attrs["multiScale"], true);
        assert_eq!(root_attrs["pixelResolution"]["unit"], "um");
        assert_eq!(
            root_attrs["downsamplingFactors"],
            json!([[1.0, 1.0, 1.0], [2.0, 2.0, 1.0]])
        );
        let s1 = n5.list_attributes("s1").unwrap();
        assert_eq!(s1["dimensions"], json!([23, 19, 3]));
        // Read back: round(P x 255), the voxel size and unit kept.
        let v = Volume::open(&root).unwrap();
        let want: Vec<f32> = p
            .iter()
            .map(|&p| f32::from(super::super::to_u8(p)) / 255.0)
            .collect();
        assert_eq!(read_all(&v), want);
        assert_eq!(v.spatial_scale(), Some([0.04, 0.004, 0.0045]));
        assert_eq!(v.spatial_axes()[1]["unit"], "micrometer");
        // Reopened by a second worker of the same job; a Zarr job is refused there.
        BlockStore::create_or_open(&root, &spec).unwrap();
        let zarr = OutputSpec {
            format: StoreFormat::Zarr(ZarrVersion::V2),
            ..spec.clone()
        };
        let err = BlockStore::create_or_open(&root, &zarr)
            .unwrap_err()
            .to_string();
        assert!(err.contains("another job"), "{err}");
        // Two channels of f32 (class probabilities): a 4th N5 axis, one channel a block, read
        // back as channels.
        let two = OutputSpec {
            dtype: OutputType::F32,
            channels: 2,
            pyramid: 0,
            ..spec.clone()
        };
        let root = dir.path().join("two.n5");
        let store = BlockStore::create_or_open(&root, &two).unwrap();
        let q: Vec<f32> = p.iter().map(|v| 1.0 - v).collect();
        let voxels = 3 * 37 * 45;
        for id in 0..store.grid().len() {
            let [z, y, x] = store.grid().block(id);
            let mut values = Vec::new();
            for channel in [&p, &q] {
                for z in z.clone() {
                    for y in y.clone() {
                        let row = (z * 37 + y) * 45;
                        values.extend_from_slice(&channel[row + x.start..row + x.end]);
                    }
                }
            }
            store.write_block(id, &values).unwrap();
        }
        let n5 = N5Filesystem::open(&root).unwrap();
        let attrs = n5.get_dataset_attributes("s0").unwrap();
        assert_eq!(attrs.get_dimensions(), &[45, 37, 3, 2]);
        assert_eq!(attrs.get_block_size(), &[20, 16, 2, 1]);
        let v = Volume::open(&root).unwrap();
        assert_eq!((v.shape(), v.channels()), ([3, 37, 45], 2));
        let section = v.read_unit(2..3, 0..37, 0..45).unwrap();
        let plane = 37 * 45;
        assert_eq!(section[..plane], p[2 * plane..voxels]);
        assert_eq!(section[plane..], q[2 * plane..voxels]);
        let f16 = OutputSpec {
            dtype: OutputType::F16,
            ..spec
        };
        let err = BlockStore::create_or_open(dir.path().join("h.n5"), &f16)
            .unwrap_err()
            .to_string();
        assert!(err.contains("float16"), "{err}");
    }
}
