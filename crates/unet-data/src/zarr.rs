//! OME-Zarr and N5 volumes in and out, block by block (feature `zarr`, with the `zarrs` and
//! `n5` crates).
//!
//! **In.** [`Volume::open`] takes `VOL.zarr` or `VOL.zarr/ARRAY`: an array, or an OME-Zarr
//! group whose first multiscales dataset (the full resolution, path `0` as written by
//! ome-zarr-py) is used. OME-Zarr 0.4 (Zarr v2, `.zattrs` `multiscales`) and 0.5 (Zarr v3,
//! `zarr.json` `attributes.ome.multiscales`, sharded or not) are read, with any chunking and
//! the codecs real stores use (blosc, zstd, gzip, sharding). Axes are `(t,) (c,) z, y, x` in
//! that order, OME's rule, with `t` of size 1; a bare 3-D array without OME metadata is taken as
//! `z, y, x`. Voxels are `uint8`, `uint16` or `float32`, read as grey values in [0, 1] (8-bit /
//! 255, 16-bit / 65535, float as stored), the TIFF readers' rule.
//!
//! `VOL.n5/DATASET` (an N5 dataset; gzip or raw blocks) or `VOL.n5` (a multiscale group, its
//! `s0`, or BigDataViewer's `setup0/timepoint0/s0`) is read too: N5's `[x, y, z]` or
//! `[x, y, z, c]` (reversed, as N5 lists axes fastest first) is `(c,) z, y, x` here, and the
//! voxel size comes from `pixelResolution` or `resolution` (times `downsamplingFactors`).
//!
//! **Out.** [`BlockStore::create_or_open`] makes an OME-Zarr group with one array `0` of
//! shape `(z, y, x)`: OME-Zarr 0.4 on Zarr v2 (blosc-lz4 chunks, `/` separated keys) or 0.5 on
//! Zarr v3 with one shard per block; `uint8` or `float32`; the input's spatial axes and voxel
//! size in its `multiscales`. The array is cut into blocks of whole chunks ([`BlockGrid`]), so
//! workers that write different blocks never write the same file. With a pyramid
//! ([`OutputSpec::pyramid`]) arrays `1`, `2`, ... beside `0` hold the volume downsampled 2x, 4x,
//! ... in y and x; each block writes its own part of every level (whole chunks there too), so
//! workers still never share a file.
//!
//! An N5 output ([`StoreFormat::N5`]) is the same with datasets `s0`, `s1`, ... (gzip blocks,
//! the chunks; a channel axis last in N5's order, one channel a block) and n5-viewer's
//! multiscale attributes on the root; blocks are written atomically.
//!
//! **Resumable.** The store's metadata and `.unet/job.json` (the caller's description of the
//! job, e.g. the model's SHA-256 and options, with the geometry) are written first, atomically;
//! a later worker with another job is refused. A block's chunks are written, flushed to disk, and
//! only then its done-marker `.unet/blocks/<id>` (atomically): a worker killed mid-block leaves
//! no marker and the block is redone in full, its chunks overwritten without being read.

use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use zarrs::array::{Array, DataType};
use zarrs::array_subset::ArraySubset;
use zarrs::filesystem::FilesystemStore;

use crate::{write_atomically, Error, Result, UnitValue};

mod n5_store;

fn zarr_error(path: &Path, detail: impl std::fmt::Display) -> Error {
    Error::Zarr {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

/// Splits `VOL.zarr/ARRAY` into the store's root (the first component ending in `.zarr`, else
/// the whole path) and the node's path inside it (`""` for the root).
fn split_store_path(path: &Path) -> (PathBuf, String) {
    let mut root = PathBuf::new();
    let mut components = path.components();
    for component in components.by_ref() {
        root.push(component);
        let is_store = component
            .as_os_str()
            .to_str()
            .is_some_and(|s| s.to_ascii_lowercase().ends_with(".zarr"));
        if is_store {
            let inner: Vec<String> = components
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            return (root, inner.join("/"));
        }
    }
    (path.to_path_buf(), String::new())
}

/// What a directory of a Zarr hierarchy holds.
enum Node {
    Array,
    /// A group, with its attributes (`.zattrs` or `zarr.json`'s `attributes`).
    Group(Value),
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| zarr_error(path, format!("not valid JSON: {e}")))
}

/// The Zarr node at `dir`, by its metadata files.
fn node_at(dir: &Path) -> Result<Node> {
    if !dir.exists() {
        return Err(zarr_error(dir, "no such file or directory"));
    }
    if !dir.is_dir() {
        return Err(zarr_error(
            dir,
            "not a Zarr store (a file; a store is a directory holding .zarray, .zgroup or \
             zarr.json)",
        ));
    }
    if dir.join(".zarray").is_file() {
        return Ok(Node::Array);
    }
    if dir.join(".zgroup").is_file() {
        let attrs = dir.join(".zattrs");
        let attrs = if attrs.is_file() {
            read_json(&attrs)?
        } else {
            json!({})
        };
        return Ok(Node::Group(attrs));
    }
    let v3 = dir.join("zarr.json");
    if v3.is_file() {
        let meta = read_json(&v3)?;
        return match meta["node_type"].as_str() {
            Some("array") => Ok(Node::Array),
            Some("group") => Ok(Node::Group(meta["attributes"].clone())),
            other => Err(zarr_error(
                &v3,
                format!("node_type {other:?} is neither \"array\" nor \"group\""),
            )),
        };
    }
    Err(zarr_error(
        dir,
        "not a Zarr array or group (no .zarray, .zgroup or zarr.json in it)",
    ))
}

/// The first `multiscales` entry of a group's attributes: OME-Zarr 0.5 keeps it under `ome`,
/// 0.4 at the top.
fn multiscales(attrs: &Value) -> Option<&Value> {
    attrs["ome"]["multiscales"]
        .get(0)
        .or_else(|| attrs["multiscales"].get(0))
}

/// The product of the `scale` transforms in `transforms` (an OME `coordinateTransformations`).
fn scale_of(transforms: &Value, dims: usize) -> Option<Vec<f64>> {
    let mut scale: Option<Vec<f64>> = None;
    for t in transforms.as_array()? {
        if t["type"] == "scale" {
            let s: Vec<f64> = t["scale"]
                .as_array()?
                .iter()
                .filter_map(Value::as_f64)
                .collect();
            if s.len() != dims {
                return None;
            }
            scale = Some(match scale {
                Some(prev) => prev.iter().zip(&s).map(|(a, b)| a * b).collect(),
                None => s,
            });
        }
    }
    scale
}

/// What OME metadata says about one dataset: its axes and voxel size.
struct OmeInfo {
    /// Axis objects (`{"name": "z", "type": "space", "unit": ...}`); 0.3's bare names become
    /// `{"name": ...}`.
    axes: Vec<Value>,
    /// The dataset's scale (times the multiscale's own), if given.
    scale: Option<Vec<f64>>,
}

fn ome_info(ms: &Value, dataset: &Value) -> OmeInfo {
    let axes: Vec<Value> = ms["axes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|axis| match axis {
                    Value::String(name) => json!({ "name": name }),
                    other => other.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    let dims = axes.len();
    let own = scale_of(&dataset["coordinateTransformations"], dims);
    let outer = scale_of(&ms["coordinateTransformations"], dims);
    let scale = match (own, outer) {
        (Some(a), Some(b)) => Some(a.iter().zip(&b).map(|(x, y)| x * y).collect()),
        (a, b) => a.or(b),
    };
    OmeInfo { axes, scale }
}

/// Where each axis of the stored array is.
#[derive(Debug, Clone, Copy)]
struct AxisRoles {
    c: Option<usize>,
    z: usize,
    y: usize,
    x: usize,
}

/// Axis roles from OME axes, checked against the array's shape: `(t,) (c,) z, y, x`.
fn axis_roles(path: &Path, names: &[String], shape: &[u64]) -> Result<AxisRoles> {
    let bad = |why: &str| {
        zarr_error(
            path,
            format!(
                "axes {names:?} of an array of shape {shape:?}: {why}; a volume has axes \
                 (t,) (c,) z, y, x in that order (t of size 1)"
            ),
        )
    };
    if names.len() != shape.len() {
        return Err(bad("not one name per dimension"));
    }
    let mut order = Vec::new();
    for name in names {
        let rank = match name.to_ascii_lowercase().as_str() {
            "t" => 0,
            "c" => 1,
            "z" => 2,
            "y" => 3,
            "x" => 4,
            _ => return Err(bad(&format!("unknown axis {name:?}"))),
        };
        order.push(rank);
    }
    if order.windows(2).any(|w| w[0] >= w[1]) {
        return Err(bad("wrong order or a repeated axis"));
    }
    let find = |rank: usize| order.iter().position(|&r| r == rank);
    let (Some(z), Some(y), Some(x)) = (find(2), find(3), find(4)) else {
        return Err(bad("z, y and x are all needed"));
    };
    // A time axis of one point reads as no time axis: its index is always 0.
    if find(0).is_some_and(|t| shape[t] != 1) {
        return Err(bad("the time axis has more than one point"));
    }
    Ok(AxisRoles {
        c: find(1),
        z,
        y,
        x,
    })
}

/// Where a volume's voxels are stored.
enum Source {
    // Boxed: a zarrs array is several times the size of an N5 dataset.
    Zarr(Box<Array<FilesystemStore>>),
    N5(n5_store::Dataset),
}

impl Source {
    /// The stored array's shape, in Zarr's order.
    fn shape(&self) -> &[u64] {
        match self {
            Source::Zarr(array) => array.shape(),
            Source::N5(dataset) => dataset.shape(),
        }
    }

    /// The voxel type's name.
    fn voxel_type(&self) -> &'static str {
        match self {
            Source::Zarr(array) => match array.data_type() {
                DataType::UInt8 => "uint8",
                DataType::UInt16 => "uint16",
                DataType::Float16 => "float16",
                DataType::Float64 => "float64",
                _ => "float32",
            },
            Source::N5(dataset) => match dataset.data_type() {
                n5::DataType::UINT8 => "uint8",
                n5::DataType::UINT16 => "uint16",
                n5::DataType::FLOAT64 => "float64",
                _ => "float32",
            },
        }
    }
}

/// A volume to predict: one Zarr array or N5 dataset with its axes, read as grey values in
/// [0, 1].
pub struct Volume {
    /// The path as the user gave it, for messages.
    path: PathBuf,
    source: Source,
    roles: AxisRoles,
    /// The OME axis objects of z, y and x (names only when the store has no OME metadata).
    spatial_axes: Vec<Value>,
    /// The voxel size along z, y, x, when the metadata gives one.
    spatial_scale: Option<[f64; 3]>,
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume")
            .field("path", &self.path)
            .field("shape", &self.source.shape())
            .field("voxel_type", &self.source.voxel_type())
            .finish()
    }
}

impl Volume {
    /// Opens `VOL.zarr` (an OME-Zarr group: its first multiscales dataset) or
    /// `VOL.zarr/ARRAY` (an array, or a group inside the store); or `VOL.n5/DATASET` (an N5
    /// dataset) or `VOL.n5` (a multiscale group: its `s0`). Errors name the path.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if n5_store::is_n5(path) {
            return Self::open_n5(path);
        }
        let (root, mut node_path) = split_store_path(path);
        // `root.join("")` would add a trailing slash, which a file does not match.
        let inside = |node: &str| {
            if node.is_empty() {
                root.clone()
            } else {
                root.join(node)
            }
        };
        let mut dir = inside(&node_path);
        let mut ome = None;
        match node_at(&dir)? {
            Node::Group(attrs) => {
                let Some(ms) = multiscales(&attrs) else {
                    return Err(zarr_error(
                        path,
                        "a Zarr group without OME multiscales metadata; name the array inside \
                         it (VOL.zarr/ARRAY)",
                    ));
                };
                let dataset = &ms["datasets"][0];
                let Some(first) = dataset["path"].as_str() else {
                    return Err(zarr_error(
                        path,
                        "OME multiscales metadata without a first dataset path",
                    ));
                };
                ome = Some(ome_info(ms, dataset));
                node_path = if node_path.is_empty() {
                    first.to_string()
                } else {
                    format!("{node_path}/{first}")
                };
                dir = inside(&node_path);
                if !matches!(node_at(&dir)?, Node::Array) {
                    return Err(zarr_error(
                        &dir,
                        "the first multiscales dataset is not an array",
                    ));
                }
            }
            Node::Array => {
                // An array named inside an OME group takes that group's axes and voxel size.
                if let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) {
                    if let Ok(Node::Group(attrs)) = node_at(parent) {
                        if let Some(ms) = multiscales(&attrs) {
                            let name = name.to_string_lossy();
                            let datasets = ms["datasets"].as_array().cloned().unwrap_or_default();
                            if let Some(d) = datasets.iter().find(|d| d["path"] == *name) {
                                ome = Some(ome_info(ms, d));
                            }
                        }
                    }
                }
            }
        }
        let store = FilesystemStore::new(&root).map_err(|e| zarr_error(&root, e))?;
        let array = Array::open(Arc::new(store), &format!("/{node_path}"))
            .map_err(|e| zarr_error(&dir, e))?;
        let shape = array.shape().to_vec();
        let names: Vec<String> = match &ome {
            Some(info) => info
                .axes
                .iter()
                .map(|a| a["name"].as_str().unwrap_or("?").to_string())
                .collect(),
            None if shape.len() == 3 => ["z", "y", "x"].map(String::from).to_vec(),
            None => {
                return Err(zarr_error(
                    path,
                    format!(
                        "a {}-D array of shape {shape:?} without OME axes metadata; only a 3-D \
                         array is taken as z, y, x without it (a channel axis must be named)",
                        shape.len()
                    ),
                ))
            }
        };
        let roles = axis_roles(path, &names, &shape)?;
        match array.data_type() {
            DataType::UInt8
            | DataType::UInt16
            | DataType::Float16
            | DataType::Float32
            | DataType::Float64 => {}
            other => {
                return Err(zarr_error(
                    path,
                    format!(
                        "voxels of type {other:?}; unet reads uint8, uint16 and float16/32/64 \
                         volumes"
                    ),
                ))
            }
        }
        check_not_empty(path, roles, &shape)?;
        let spatial_axes = [roles.z, roles.y, roles.x]
            .iter()
            .map(|&d| match &ome {
                Some(info) => info.axes[d].clone(),
                None => json!({ "name": names[d], "type": "space" }),
            })
            .collect();
        let spatial_scale = ome
            .as_ref()
            .and_then(|i| i.scale.as_ref())
            .map(|s| [s[roles.z], s[roles.y], s[roles.x]]);
        Ok(Volume {
            path: path.to_path_buf(),
            source: Source::Zarr(Box::new(array)),
            roles,
            spatial_axes,
            spatial_scale,
        })
    }

    /// Opens an N5 dataset or multiscale group (`n5_store::open`'s rules): axes `[x, y, z]` or
    /// `[x, y, z, c]` in N5's order, `(c,) z, y, x` here.
    fn open_n5(path: &Path) -> Result<Self> {
        let opened = n5_store::open(path)?;
        let shape = opened.dataset.shape().to_vec();
        let roles = axis_roles(path, &opened.names, &shape)?;
        check_not_empty(path, roles, &shape)?;
        let spatial_axes = [roles.z, roles.y, roles.x]
            .iter()
            .map(|&d| {
                let mut axis = json!({ "name": opened.names[d], "type": "space" });
                if let Some(unit) = opened.unit {
                    axis["unit"] = json!(unit);
                }
                axis
            })
            .collect();
        let spatial_scale = opened
            .scale
            .as_ref()
            .map(|s| [s[roles.z], s[roles.y], s[roles.x]]);
        Ok(Volume {
            path: path.to_path_buf(),
            source: Source::N5(opened.dataset),
            roles,
            spatial_axes,
            spatial_scale,
        })
    }

    /// The volume's size in voxels: (z, y, x).
    pub fn shape(&self) -> [usize; 3] {
        let s = self.source.shape();
        [self.roles.z, self.roles.y, self.roles.x].map(|d| s[d] as usize)
    }

    /// Samples per voxel (the channel axis' length, else 1).
    pub fn channels(&self) -> usize {
        self.roles.c.map_or(1, |c| self.source.shape()[c] as usize)
    }

    /// The stored chunk shape along (z, y, x) (for a sharded array, the shard's; for N5, the
    /// block size).
    pub fn chunk_shape(&self) -> Result<[usize; 3]> {
        let chunk: Vec<u64> = match &self.source {
            Source::Zarr(array) => array
                .chunk_shape(&vec![0; array.dimensionality()])
                .map_err(|e| zarr_error(&self.path, e))?
                .iter()
                .map(|c| c.get())
                .collect(),
            Source::N5(dataset) => dataset.block().to_vec(),
        };
        Ok([self.roles.z, self.roles.y, self.roles.x].map(|d| chunk[d] as usize))
    }

    /// The voxel type's name: `uint8`, `uint16`, `float16` (Zarr only), `float32` or
    /// `float64`.
    pub fn voxel_type(&self) -> &'static str {
        self.source.voxel_type()
    }

    /// The OME axis objects of z, y and x, as the input names them (units included).
    pub fn spatial_axes(&self) -> &[Value] {
        &self.spatial_axes
    }

    /// The voxel size along (z, y, x), when the metadata gives one.
    pub fn spatial_scale(&self) -> Option<[f64; 3]> {
        self.spatial_scale
    }

    /// The path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The voxels of `z` x `y` x `x` as grey values in [0, 1]: per section, `channels()` planes
    /// of `y.len() * x.len()` (section-major, then channel), as `unet predict` feeds the net.
    pub fn read_unit(&self, z: Range<usize>, y: Range<usize>, x: Range<usize>) -> Result<Vec<f32>> {
        let shape = self.source.shape();
        let mut ranges: Vec<Range<u64>> = shape.iter().map(|&n| 0..n).collect();
        for (d, r) in [(self.roles.z, &z), (self.roles.y, &y), (self.roles.x, &x)] {
            ranges[d] = r.start as u64..r.end as u64;
        }
        let stored = match &self.source {
            Source::Zarr(array) => self.read_zarr(array, &ranges)?,
            // Scaled as the TIFF readers scale, as Zarr's are below.
            Source::N5(dataset) => match dataset.data_type() {
                n5::DataType::UINT8 => dataset.read(&ranges, u8::to_unit),
                n5::DataType::UINT16 => dataset.read(&ranges, u16::to_unit),
                n5::DataType::FLOAT64 => dataset.read(&ranges, f64::to_unit),
                _ => dataset.read(&ranges, f32::to_unit),
            }
            .map_err(|e| match e {
                Error::Zarr { path, detail } => zarr_error(
                    &path,
                    format!("reading z {z:?}, y {y:?}, x {x:?}: {detail}"),
                ),
                other => other,
            })?,
        };
        // OME order puts c before z: stored as [c][z][y][x]; the net wants [z][c][y][x].
        let channels = self.channels();
        if channels == 1 {
            return Ok(stored);
        }
        let (depth, plane) = (z.len(), y.len() * x.len());
        let mut out = Vec::with_capacity(stored.len());
        for s in 0..depth {
            for c in 0..channels {
                let from = (c * depth + s) * plane;
                out.extend_from_slice(&stored[from..from + plane]);
            }
        }
        Ok(out)
    }

    /// The voxels of `ranges` of a Zarr array, C order, as grey values in [0, 1].
    fn read_zarr(&self, array: &Array<FilesystemStore>, ranges: &[Range<u64>]) -> Result<Vec<f32>> {
        let subset = ArraySubset::new_with_ranges(ranges);
        let err = |e: zarrs::array::ArrayError| {
            let [z, y, x] = [self.roles.z, self.roles.y, self.roles.x].map(|d| ranges[d].clone());
            zarr_error(
                &self.path,
                format!("reading z {z:?}, y {y:?}, x {x:?}: {e}"),
            )
        };
        // Scaled as the TIFF readers scale ([`UnitValue`]): the same numbers.
        fn unit<T: zarrs::array::ElementOwned + UnitValue>(
            array: &Array<FilesystemStore>,
            subset: &ArraySubset,
        ) -> std::result::Result<Vec<f32>, zarrs::array::ArrayError> {
            let values = array.retrieve_array_subset_elements::<T>(subset)?;
            Ok(values.into_iter().map(UnitValue::to_unit).collect())
        }
        match array.data_type() {
            DataType::UInt8 => unit::<u8>(array, &subset),
            DataType::UInt16 => unit::<u16>(array, &subset),
            DataType::Float16 => unit::<half::f16>(array, &subset),
            DataType::Float64 => unit::<f64>(array, &subset),
            _ => unit::<f32>(array, &subset),
        }
        .map_err(err)
    }
}

/// Half-precision volumes hold grey values in [0, 1] units already, as float TIFF pages do.
impl UnitValue for half::f16 {
    const FULL_SCALE: f64 = 1.0;
    fn to_unit(self) -> f32 {
        f32::from(self)
    }
}

/// Refuses a volume with no voxels (or no channels).
fn check_not_empty(path: &Path, roles: AxisRoles, shape: &[u64]) -> Result<()> {
    if [roles.z, roles.y, roles.x].iter().any(|&d| shape[d] == 0)
        || roles.c.is_some_and(|c| shape[c] == 0)
    {
        return Err(zarr_error(
            path,
            format!("an empty volume, shape {shape:?}"),
        ));
    }
    Ok(())
}

/// The Zarr format of an output store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZarrVersion {
    /// Zarr v2 with OME-Zarr 0.4 metadata: what napari-ome-zarr, MoBIE and neuroglancer open.
    V2,
    /// Zarr v3 with OME-Zarr 0.5 metadata, one shard per block.
    V3,
}

/// The format of an output store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFormat {
    /// OME-Zarr in this Zarr format: arrays `0`, `1`, ...
    Zarr(ZarrVersion),
    /// N5 (gzip blocks): datasets `s0`, `s1`, ... with n5-viewer's multiscale attributes, what
    /// Fiji's N5 plugins, BigDataViewer and n5-viewer open. N5 has no float16.
    N5,
}

/// The voxel type of an output store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputType {
    /// P x 255, rounded.
    U8,
    /// P rounded to half precision (IEEE binary16, nearest): half the bytes of f32, and what
    /// viewers and GPU pipelines read directly.
    F16,
    /// P as computed.
    F32,
    /// Class indices (the most probable class of each voxel), stored as they are in `uint8`.
    Class,
}

impl OutputType {
    /// Zarr v3's `data_type`.
    fn name(self) -> &'static str {
        match self {
            OutputType::U8 | OutputType::Class => "uint8",
            OutputType::F16 => "float16",
            OutputType::F32 => "float32",
        }
    }

    /// The name in `.unet/job.json`: the data type, and for class indices what they are.
    fn job_name(self) -> &'static str {
        match self {
            OutputType::Class => "uint8 classes",
            other => other.name(),
        }
    }

    /// A value as stored in a byte: P x 255 rounded, or a class index as it is.
    fn to_byte(self, value: f32) -> u8 {
        match self {
            // Class indices below 256, exact in f32.
            OutputType::Class => value as u8,
            _ => to_u8(value),
        }
    }

    /// Zarr v2's `dtype` and the fill value.
    fn v2_dtype(self) -> (&'static str, Value) {
        match self {
            OutputType::U8 | OutputType::Class => ("|u1", json!(0)),
            OutputType::F16 => ("<f2", json!(0.0)),
            OutputType::F32 => ("<f4", json!(0.0)),
        }
    }
}

/// How a volume of `shape` (z, y, x) is cut into blocks of `block` voxels, numbered in (z, y, x)
/// row-major order; the last block along an axis may be smaller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockGrid {
    /// The volume's size (z, y, x).
    pub shape: [u64; 3],
    /// A block's size (z, y, x), whole chunks.
    pub block: [u64; 3],
}

impl BlockGrid {
    /// Blocks along each axis.
    pub fn counts(&self) -> [u64; 3] {
        [0, 1, 2].map(|d| self.shape[d].div_ceil(self.block[d]))
    }

    /// The number of blocks.
    pub fn len(&self) -> u64 {
        self.counts().iter().product()
    }

    /// Whether there is no block (never for a store this module made).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The voxels of block `id` along (z, y, x).
    pub fn block(&self, id: u64) -> [Range<usize>; 3] {
        let [_, ny, nx] = self.counts();
        let index = [id / (ny * nx), id / nx % ny, id % nx];
        [0, 1, 2].map(|d| {
            let start = index[d] * self.block[d];
            start as usize..(start + self.block[d]).min(self.shape[d]) as usize
        })
    }
}

/// What an output store holds: its geometry and format, and the caller's description of the
/// job (the model and options), all written to `.unet/job.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputSpec {
    /// Blocks and the volume's shape.
    pub grid: BlockGrid,
    /// The chunk shape (z, y, x); `grid.block` is a multiple of it.
    pub chunks: [u64; 3],
    /// Voxel type.
    pub dtype: OutputType,
    /// Channels: 1 gives a (z, y, x) array (P(cell), or classes); more give a channel axis
    /// first, (c, z, y, x), one channel per class, each chunk one channel.
    pub channels: u64,
    /// Zarr (and its version) or N5.
    pub format: StoreFormat,
    /// OME axis objects of z, y, x.
    pub axes: Vec<Value>,
    /// Voxel size along z, y, x.
    pub scale: [f64; 3],
    /// The caller's job description: a rerun with a different one is refused.
    pub job: Value,
    /// Pyramid levels beyond level 0: level `l` (array `l`) is level `l - 1` downsampled 2x in
    /// y and x (not z: EM volumes are anisotropic). 0 gives the single array `0`.
    pub pyramid: u32,
}

impl OutputSpec {
    /// `.unet/job.json`'s content (a channel count only when there are several, so a store
    /// of one channel reads as it always has).
    fn job_json(&self) -> Value {
        let mut job = json!({
            "job": self.job,
            "shape": self.grid.shape,
            "block": self.grid.block,
            "chunks": self.chunks,
            "dtype": self.dtype.job_name(),
        });
        // Zarr stores keep the job.json they had before N5 outputs, so they resume.
        match self.format {
            StoreFormat::Zarr(ZarrVersion::V2) => job["zarr_version"] = json!(2),
            StoreFormat::Zarr(ZarrVersion::V3) => job["zarr_version"] = json!(3),
            StoreFormat::N5 => job["format"] = json!("n5"),
        }
        if self.channels > 1 {
            job["channels"] = json!(self.channels);
        }
        // Only with a pyramid, so stores of before it keep their job.json and resume.
        if self.pyramid > 0 {
            job["pyramid"] = json!(self.pyramid);
        }
        job
    }

    /// Whether the pyramid fits the chunks: every level's chunks must be whole voxels, so the y
    /// and x chunk sizes must be multiples of 2^`pyramid`. The message names the flags.
    pub fn check_pyramid(&self) -> std::result::Result<(), String> {
        let n = self.pyramid;
        let factor = 1u64.checked_shl(n).filter(|&f| f <= 1 << 31);
        let [_, cy, cx] = self.chunks;
        match factor {
            Some(f) if cy % f == 0 && cx % f == 0 => Ok(()),
            Some(f) if f > cy.min(cx) => Err(format!(
                "--pyramid {n} halves the y and x chunks {n} times, but they are {cy} x {cx}, \
                 smaller than 2^{n} = {f}: choose fewer levels, or larger --chunks"
            )),
            Some(f) => Err(format!(
                "--pyramid {n} needs y and x chunk sizes divisible by 2^{n} = {f}, so each \
                 level's chunks are whole; they are {cy} x {cx}: choose --chunks Z,Y,X with Y \
                 and X multiples of {f}, or fewer levels"
            )),
            None => Err(format!("--pyramid {n}: at most 31 levels")),
        }
    }

    /// The shape and the blocks of pyramid level `level`: z as level 0, y and x divided by
    /// 2^`level` (rounded up), so level-0 block `id` is block `id` at every level.
    pub fn level_grid(&self, level: u32) -> BlockGrid {
        let f = 1u64 << level;
        let [z, y, x] = self.grid.shape;
        let [bz, by, bx] = self.grid.block;
        BlockGrid {
            shape: [z, y.div_ceil(f), x.div_ceil(f)],
            // Whole chunks of level 0, whose y and x are multiples of 2^level.
            block: [bz, by / f, bx / f],
        }
    }

    /// The chunk shape of pyramid level `level`: level 0's with y and x divided by 2^`level`,
    /// so a block's region at every level is whole chunks.
    pub fn level_chunks(&self, level: u32) -> [u64; 3] {
        let f = 1u64 << level;
        let [z, y, x] = self.chunks;
        [z, y / f, x / f]
    }

    /// The multiscale image's name: what its voxels hold.
    fn image_name(&self) -> &'static str {
        match (self.dtype, self.channels) {
            (OutputType::Class, _) => "classes",
            (_, 1) => "p_cell",
            _ => "class_probabilities",
        }
    }

    /// `spatial` (z, y, x) with the channel axis's `channel` in front when there is one.
    fn with_channel<T: Clone>(&self, channel: T, spatial: &[T]) -> Vec<T> {
        let mut all = Vec::with_capacity(4);
        if self.channels > 1 {
            all.push(channel);
        }
        all.extend_from_slice(spatial);
        all
    }

    /// The directory of pyramid level `level`: array `l` (Zarr), dataset `sl` (N5).
    fn level_dir(&self, level: u32) -> String {
        match self.format {
            StoreFormat::Zarr(_) => level.to_string(),
            StoreFormat::N5 => format!("s{level}"),
        }
    }

    /// What the store's root may hold: its metadata files, `.unet` and the levels.
    fn top_level_names(&self) -> Vec<String> {
        let metadata: &[&str] = match self.format {
            StoreFormat::Zarr(_) => &[".zgroup", ".zattrs", "zarr.json"],
            StoreFormat::N5 => &["attributes.json"],
        };
        let levels = (0..=self.pyramid).map(|l| self.level_dir(l));
        metadata
            .iter()
            .chain(&[".unet"])
            .map(|n| n.to_string())
            .chain(levels)
            .collect()
    }

    /// The metadata files of the store, relative to its root, in the order they are written
    /// (the array first, the group that announces it last).
    fn metadata_files(&self) -> Vec<(String, Value)> {
        let version = match self.format {
            StoreFormat::Zarr(version) => version,
            StoreFormat::N5 => return self.n5_metadata_files(),
        };
        let axes = json!(self.with_channel(json!({"name": "c", "type": "channel"}), &self.axes));
        let name = self.image_name();
        let levels = 0..=self.pyramid;
        // Level l's voxels are 2^l level-0 voxels wide in y and x. A mean of 2^l x 2^l voxels
        // is centred (2^l - 1) / 2 level-0 voxels further on than the first of them, so a
        // viewer lays the levels over each other; a class level keeps its group's first voxel,
        // which needs no shift.
        let datasets: Vec<Value> = levels
            .clone()
            .map(|l| {
                let f = f64::from(1u32 << l);
                let [z, y, x] = self.scale;
                let scale = self.with_channel(1.0, &[z, y * f, x * f]);
                let mut transforms = vec![json!({ "type": "scale", "scale": scale })];
                if l > 0 && self.dtype != OutputType::Class {
                    let shift = (f - 1.0) / 2.0;
                    let translation = self.with_channel(0.0, &[0.0, y * shift, x * shift]);
                    transforms.push(json!({ "type": "translation", "translation": translation }));
                }
                json!({
                    "path": l.to_string(),
                    "coordinateTransformations": transforms,
                })
            })
            .collect();
        let dataset = json!(datasets);
        let mut files: Vec<(String, Value)> = levels
            .map(|l| {
                (
                    format!("{l}/{}", array_file(version)),
                    self.array_metadata(version, l, &axes),
                )
            })
            .collect();
        match version {
            ZarrVersion::V2 => {
                files.extend([
                    (".zgroup".to_string(), json!({ "zarr_format": 2 })),
                    (
                        ".zattrs".to_string(),
                        json!({ "multiscales": [{
                            "version": "0.4",
                            "name": name,
                            "axes": axes,
                            "datasets": dataset,
                        }]}),
                    ),
                ]);
            }
            ZarrVersion::V3 => {
                files.push((
                    "zarr.json".to_string(),
                    json!({
                        "zarr_format": 3,
                        "node_type": "group",
                        "attributes": { "ome": {
                            "version": "0.5",
                            "multiscales": [{
                                "name": name,
                                "axes": axes,
                                "datasets": dataset,
                            }],
                        }},
                    }),
                ));
            }
        }
        files
    }

    /// The N5 attributes of each level's dataset, then of the root group: n5-viewer's and N5
    /// Spark's multiscale convention (level 0's `pixelResolution` on every level with its
    /// `downsamplingFactors`, from which a viewer places a level: its scale and the half-voxel
    /// shift of a mean; the root's `scales` for older n5-viewers), BigDataViewer's and
    /// Paintera's `multiScale` and `resolution`, and neuroglancer's `axes` and `units`. N5
    /// order: x, y, z, then the channel axis when there is one.
    fn n5_metadata_files(&self) -> Vec<(String, Value)> {
        let unit = self.axes.get(2).and_then(|a| a["unit"].as_str());
        let unit = unit.map_or("pixel".to_string(), n5_store::n5_unit);
        let n5_order = |zyx: [f64; 3], c: f64| {
            let mut v = vec![zyx[2], zyx[1], zyx[0]];
            if self.channels > 1 {
                v.push(c);
            }
            v
        };
        let resolution = n5_order(self.scale, 1.0);
        let pixel_resolution = json!({ "unit": unit, "dimensions": resolution });
        let dims = resolution.len();
        let axes = json!(["x", "y", "z", "c"][..dims]);
        let units = json!([unit.as_str(), unit.as_str(), unit.as_str(), ""][..dims]);
        let factors: Vec<Vec<f64>> = (0..=self.pyramid)
            .map(|l| n5_order([1.0, f64::from(1u32 << l), f64::from(1u32 << l)], 1.0))
            .collect();
        let mut files: Vec<(String, Value)> = (0..=self.pyramid)
            .map(|l| {
                let grid = self.level_grid(l);
                let shape = self.with_channel(self.channels, &grid.shape);
                let chunks = self.with_channel(1, &self.level_chunks(l));
                let mut attrs = n5_store::Dataset::attributes_json(&shape, &chunks, self.dtype);
                attrs["downsamplingFactors"] = json!(factors[l as usize]);
                attrs["pixelResolution"] = pixel_resolution.clone();
                attrs["axes"] = axes.clone();
                attrs["units"] = units.clone();
                (format!("{}/attributes.json", self.level_dir(l)), attrs)
            })
            .collect();
        files.push((
            "attributes.json".to_string(),
            json!({
                "n5": n5::VERSION.to_string(),
                "name": self.image_name(),
                "multiScale": true,
                "resolution": resolution,
                "pixelResolution": pixel_resolution,
                "downsamplingFactors": factors,
                "scales": factors,
                "axes": axes,
                "units": units,
            }),
        ));
        files
    }

    /// The metadata of pyramid level `level`'s array.
    fn array_metadata(&self, version: ZarrVersion, level: u32, axes: &Value) -> Value {
        let grid = self.level_grid(level);
        let shape = self.with_channel(self.channels, &grid.shape);
        let chunks = self.with_channel(1, &self.level_chunks(level));
        let shard = self.with_channel(self.channels, &grid.block);
        match version {
            ZarrVersion::V2 => {
                let (dtype, fill) = self.dtype.v2_dtype();
                json!({
                    "zarr_format": 2,
                    "shape": shape,
                    "chunks": chunks,
                    "dtype": dtype,
                    // zarr-python's own default. blosc-zstd packs probabilities smaller, but
                    // each chunk then costs a fresh zstd context of several MB: three times a
                    // worker's page faults (docs/RESULTS.md, "Volumes").
                    "compressor": {
                        "id": "blosc", "cname": "lz4", "clevel": 5,
                        "shuffle": 1, "blocksize": 0,
                    },
                    "fill_value": fill,
                    "order": "C",
                    "filters": null,
                    "dimension_separator": "/",
                })
            }
            ZarrVersion::V3 => {
                let (dtype, fill) = (self.dtype.name(), self.dtype.v2_dtype().1);
                let names: Vec<Value> = axes
                    .as_array()
                    .expect("axes are a list")
                    .iter()
                    .map(|a| a["name"].clone())
                    .collect();
                json!({
                    "zarr_format": 3,
                    "node_type": "array",
                    "shape": shape,
                    "data_type": dtype,
                    "chunk_grid": {
                        "name": "regular",
                        "configuration": { "chunk_shape": shard },
                    },
                    "chunk_key_encoding": {
                        "name": "default", "configuration": { "separator": "/" },
                    },
                    "fill_value": fill,
                    "codecs": [{
                        "name": "sharding_indexed",
                        "configuration": {
                            "chunk_shape": chunks,
                            "codecs": [
                                { "name": "bytes", "configuration": { "endian": "little" } },
                                { "name": "zstd", "configuration": { "level": 3, "checksum": false } },
                            ],
                            "index_codecs": [
                                { "name": "bytes", "configuration": { "endian": "little" } },
                                { "name": "crc32c" },
                            ],
                            "index_location": "end",
                        },
                    }],
                    "dimension_names": names,
                    "attributes": {},
                })
            }
        }
    }

    /// The unit a block is written in at pyramid level `level`: a chunk (v2, N5's blocks) or
    /// the block's one shard (v3).
    fn write_unit(&self, level: u32) -> [u64; 3] {
        match self.format {
            StoreFormat::Zarr(ZarrVersion::V2) | StoreFormat::N5 => self.level_chunks(level),
            StoreFormat::Zarr(ZarrVersion::V3) => self.level_grid(level).block,
        }
    }
}

/// An array's metadata file name in this Zarr format.
fn array_file(version: ZarrVersion) -> &'static str {
    match version {
        ZarrVersion::V2 => ".zarray",
        ZarrVersion::V3 => "zarr.json",
    }
}

fn pretty(value: &Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("JSON values serialise");
    bytes.push(b'\n');
    bytes
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The first difference between two job descriptions, in words (`model_sha256: the store has
/// X, this run Y`).
fn first_difference(prefix: &str, stored: &Value, ours: &Value) -> String {
    if let (Some(a), Some(b)) = (stored.as_object(), ours.as_object()) {
        let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let (x, y) = (&a.get(key).cloned().unwrap_or(Value::Null), b.get(key));
            let y = y.cloned().unwrap_or(Value::Null);
            if *x != y {
                let name = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                return first_difference(&name, x, &y);
            }
        }
    }
    format!("{prefix}: the store has {stored}, this run {ours}")
}

const JOB_FILE: &str = ".unet/job.json";
const BLOCKS_DIR: &str = ".unet/blocks";

/// A level's array and, for Zarr, the store it is in (which names its chunks' files).
enum LevelData {
    // Boxed: a zarrs array is several times the size of an N5 dataset.
    Zarr(Box<Array<FilesystemStore>>, Arc<FilesystemStore>),
    N5(n5_store::Dataset),
}

/// One resolution level of an output store: its array and where blocks go in it.
struct Level {
    data: LevelData,
    /// The level's shape, and a block's extent at this level.
    grid: BlockGrid,
    /// What a block is written in: whole chunks (v2, N5) or its shard (v3).
    write_unit: [u64; 3],
}

/// An output store of one blockwise job: its arrays (level 0 and any pyramid levels), its
/// blocks and their done-markers.
pub struct BlockStore {
    root: PathBuf,
    /// Level 0 (the full resolution) first, then each pyramid level.
    levels: Vec<Level>,
    spec_job: Value,
    job_sha256: String,
    grid: BlockGrid,
    chunks: [u64; 3],
    dtype: OutputType,
    channels: u64,
    format: StoreFormat,
}

impl std::fmt::Debug for BlockStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockStore")
            .field("root", &self.root)
            .field("grid", &self.grid)
            .finish()
    }
}

impl BlockStore {
    /// Creates the store at `root` for `spec`, or opens the one an earlier or concurrent worker
    /// of the same job made. The metadata files and `.unet/job.json` are written before any
    /// block, each atomically; identical files written by several workers at once are harmless.
    /// A store of another job is refused with its first difference, and a directory that holds
    /// anything else (a user's data) is never written into.
    pub fn create_or_open(root: impl AsRef<Path>, spec: &OutputSpec) -> Result<Self> {
        let root = root.as_ref();
        if root.exists() && !root.is_dir() {
            return Err(zarr_error(root, "exists and is not a directory"));
        }
        spec.check_pyramid().map_err(|e| zarr_error(root, e))?;
        if spec.format == StoreFormat::N5 && spec.dtype == OutputType::F16 {
            return Err(zarr_error(
                root,
                "N5 has no float16 data type: write u8 or f32 (--dtype), or a Zarr store",
            ));
        }
        let job = pretty(&spec.job_json());
        let job_path = root.join(JOB_FILE);
        let ours = spec.job_json();
        if job_path.is_file() {
            Self::check_job(root, &read_json(&job_path)?, &ours)?;
        } else {
            let files = spec.metadata_files();
            if root.is_dir() {
                let known = spec.top_level_names();
                for entry in fs::read_dir(root).map_err(|e| Error::io(root, e))? {
                    let entry = entry.map_err(|e| Error::io(root, e))?;
                    let name = entry.file_name();
                    // A concurrent worker's temporary file (`write_atomically`'s `.NAME.PID.tmp`).
                    let temporary = name
                        .to_str()
                        .is_some_and(|n| n.starts_with('.') && n.ends_with(".tmp"));
                    if !temporary && !known.iter().any(|k| name == k.as_str()) {
                        return Err(zarr_error(
                            root,
                            format!(
                                "exists and holds {:?}, which no unet job writes; choose another \
                                 --out",
                                name
                            ),
                        ));
                    }
                }
                for (name, value) in &files {
                    let path = root.join(name);
                    if path.is_file() && read_json(&path)? != *value {
                        return Err(zarr_error(
                            root,
                            format!("exists with another {name}; it is not a store of this job"),
                        ));
                    }
                }
            }
            for (name, value) in &files {
                write_atomically(root.join(name), &pretty(value))?;
            }
            write_atomically(&job_path, &job)?;
            // Two first workers with different jobs: the later rename wins, and the other
            // sees it here, before it writes any block.
            Self::check_job(root, &read_json(&job_path)?, &ours)?;
        }
        Self::open_array(root, spec, sha256_hex(&job))
    }

    fn check_job(root: &Path, stored: &Value, ours: &Value) -> Result<()> {
        if stored != ours {
            return Err(Error::StoreMismatch {
                path: root.to_path_buf(),
                detail: first_difference("", stored, ours),
            });
        }
        Ok(())
    }

    fn open_array(root: &Path, spec: &OutputSpec, job_sha256: String) -> Result<Self> {
        let store = match spec.format {
            StoreFormat::Zarr(_) => Some(Arc::new(
                FilesystemStore::new(root).map_err(|e| zarr_error(root, e))?,
            )),
            StoreFormat::N5 => None,
        };
        let levels = (0..=spec.pyramid)
            .map(|l| {
                let dir = spec.level_dir(l);
                let data = match &store {
                    Some(store) => LevelData::Zarr(
                        Box::new(
                            Array::open(store.clone(), &format!("/{dir}"))
                                .map_err(|e| zarr_error(root, e))?,
                        ),
                        store.clone(),
                    ),
                    None => {
                        let dir = root.join(dir);
                        let attrs = read_json(&dir.join("attributes.json"))?;
                        LevelData::N5(n5_store::Dataset::open(&dir, &attrs)?)
                    }
                };
                Ok(Level {
                    data,
                    grid: spec.level_grid(l),
                    write_unit: spec.write_unit(l),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(BlockStore {
            root: root.to_path_buf(),
            levels,
            spec_job: spec.job.clone(),
            job_sha256,
            grid: spec.grid,
            chunks: spec.chunks,
            dtype: spec.dtype,
            channels: spec.channels,
            format: spec.format,
        })
    }

    /// The block grid and done count of the store at `root`, from its `.unet/job.json` alone
    /// (what `--status` prints): (grid, blocks done).
    pub fn status(root: impl AsRef<Path>) -> Result<(BlockGrid, u64)> {
        let root = root.as_ref();
        let job_path = root.join(JOB_FILE);
        if !job_path.is_file() {
            return Err(zarr_error(
                root,
                "no .unet/job.json: not a store written by blockwise `unet predict`",
            ));
        }
        let job = read_json(&job_path)?;
        let dims = |key: &str| -> Result<[u64; 3]> {
            let v: Vec<u64> = job[key]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default();
            v.try_into()
                .map_err(|_| zarr_error(&job_path, format!("no 3 numbers in {key:?}")))
        };
        let grid = BlockGrid {
            shape: dims("shape")?,
            block: dims("block")?,
        };
        if grid.block.contains(&0) {
            return Err(zarr_error(&job_path, "a block of zero size"));
        }
        let sha = sha256_hex(&fs::read(&job_path).map_err(|e| Error::io(&job_path, e))?);
        let done = (0..grid.len())
            .filter(|&id| marker_is_current(&root.join(BLOCKS_DIR).join(id.to_string()), &sha))
            .count() as u64;
        Ok((grid, done))
    }

    /// The block grid.
    pub fn grid(&self) -> BlockGrid {
        self.grid
    }

    /// The caller's job description this store was made for.
    pub fn job(&self) -> &Value {
        &self.spec_job
    }

    fn marker_path(&self, id: u64) -> PathBuf {
        self.root.join(BLOCKS_DIR).join(id.to_string())
    }

    /// Whether block `id` is done: its marker exists and names this job.
    pub fn is_done(&self, id: u64) -> bool {
        marker_is_current(&self.marker_path(id), &self.job_sha256)
    }

    /// The number of blocks done.
    pub fn done_count(&self) -> u64 {
        (0..self.grid.len()).filter(|&id| self.is_done(id)).count() as u64
    }

    /// Writes block `id`'s values, and its part of every pyramid level, and flushes their chunk
    /// files to disk; [`BlockStore::mark_done`] then records it. The values are P(cell),
    /// probabilities or class indices as the store holds them, `[c][z][y][x]` over the channels
    /// and [`BlockGrid::block`] (`[z][y][x]` with one channel). Each pyramid level is computed
    /// from the one before in f32 (2 x 2 means; for classes the top-left voxel), before conversion to the stored type, so no
    /// level depends on another block.
    pub fn write_block(&self, id: u64, values: &[f32]) -> Result<()> {
        let mut dims = self.grid.block(id).map(|r| r.len());
        let channels = self.channels as usize;
        if values.len() != channels * dims.iter().product::<usize>() {
            return Err(zarr_error(
                &self.root,
                format!(
                    "block {id}: {} values for a block of {dims:?} voxels and {channels} \
                     channel(s)",
                    values.len()
                ),
            ));
        }
        let classes = self.dtype == OutputType::Class;
        let mut level_values = std::borrow::Cow::Borrowed(values);
        let mut written = Vec::with_capacity(self.levels.len());
        for (l, level) in self.levels.iter().enumerate() {
            if l > 0 {
                let smaller = downsample(&level_values, channels, dims, classes);
                level_values = std::borrow::Cow::Owned(smaller);
                dims = level.grid.block(id).map(|r| r.len());
            }
            written.push(self.write_level(level, id, &level_values)?);
        }
        // Every level's data on disk before the marker, which is written after this returns
        // (N5 blocks are, each written atomically).
        for (level, chunks) in self.levels.iter().zip(&written) {
            if let (LevelData::Zarr(array, store), Some(chunks)) = (&level.data, chunks) {
                sync_chunks(store, array, chunks)?;
            }
        }
        Ok(())
    }

    /// Writes block `id`'s `values` (`[c][z][y][x]` over the block at this level) into `level`,
    /// returning the Zarr chunks written (for N5, none: its blocks are on disk already).
    fn write_level(&self, level: &Level, id: u64, values: &[f32]) -> Result<Option<ArraySubset>> {
        let ranges = level.grid.block(id);
        let array = match &level.data {
            LevelData::Zarr(array, _) => array,
            LevelData::N5(dataset) => {
                // Whole N5 blocks (the chunks), one channel each: the channel axis is the first
                // here, as N5's last.
                let spatial = ranges.iter().map(|r| r.start as u64..r.end as u64);
                let all: Vec<Range<u64>> = match self.channels {
                    1 => spatial.collect(),
                    c => std::iter::once(0..c).chain(spatial).collect(),
                };
                dataset.write(&all, values, self.dtype)?;
                return Ok(None);
            }
        };
        let dims = ranges.clone().map(|r| r.len());
        let channels = self.channels as usize;
        // Whole write units (chunks, or the shard), padded with the fill value past the volume's
        // end: zarrs then encodes each one without reading what a killed worker left there.
        let unit = level.write_unit;
        let first = [0, 1, 2].map(|d| ranges[d].start as u64 / unit[d]);
        let last = [0, 1, 2].map(|d| (ranges[d].end as u64).div_ceil(unit[d]));
        let padded = [0, 1, 2].map(|d| ((last[d] - first[d]) * unit[d]) as usize);
        let origin = [0, 1, 2].map(|d| (first[d] * unit[d]) as usize);
        let (volume, padded_volume) = (
            dims.iter().product::<usize>(),
            padded.iter().product::<usize>(),
        );
        let mut full = vec![0f32; channels * padded_volume];
        for c in 0..channels {
            for z in 0..dims[0] {
                for y in 0..dims[1] {
                    let src = c * volume + (z * dims[1] + y) * dims[2];
                    let dz = ranges[0].start - origin[0] + z;
                    let dy = ranges[1].start - origin[1] + y;
                    let dst =
                        c * padded_volume + (dz * padded[1] + dy) * padded[2] + ranges[2].start
                            - origin[2];
                    full[dst..dst + dims[2]].copy_from_slice(&values[src..src + dims[2]]);
                }
            }
        }
        // All channels: a chunk per channel (v2), or the block's one shard of every channel.
        let channel_chunks = match self.format {
            StoreFormat::Zarr(ZarrVersion::V3) => 0..1,
            _ => 0..self.channels,
        };
        let spatial = (0..3).map(|d| first[d]..last[d]);
        let chunk_range: Vec<Range<u64>> = match self.channels {
            1 => spatial.collect(),
            _ => std::iter::once(channel_chunks).chain(spatial).collect(),
        };
        let chunks = ArraySubset::new_with_ranges(&chunk_range);
        let stored = match self.dtype {
            OutputType::U8 | OutputType::Class => {
                let bytes: Vec<u8> = full.iter().map(|&v| self.dtype.to_byte(v)).collect();
                array.store_chunks_elements(&chunks, &bytes)
            }
            OutputType::F16 => {
                let halves: Vec<half::f16> = full.iter().map(|&p| half::f16::from_f32(p)).collect();
                array.store_chunks_elements(&chunks, &halves)
            }
            OutputType::F32 => array.store_chunks_elements(&chunks, &full),
        };
        stored.map_err(|e| zarr_error(&self.root, format!("writing block {id}: {e}")))?;
        Ok(Some(chunks))
    }

    /// Marks block `id` done, atomically: call it after [`BlockStore::write_block`] returned,
    /// when the block's data is on disk. A marker names the job, so a store's markers only
    /// count for the job that wrote them.
    pub fn mark_done(&self, id: u64) -> Result<()> {
        let ranges = self.grid.block(id);
        let marker = json!({
            "block": id,
            "job_sha256": self.job_sha256,
            "z": [ranges[0].start, ranges[0].end],
            "y": [ranges[1].start, ranges[1].end],
            "x": [ranges[2].start, ranges[2].end],
        });
        write_atomically(self.marker_path(id), &pretty(&marker))
    }

    /// The chunk shape (z, y, x).
    pub fn chunks(&self) -> [u64; 3] {
        self.chunks
    }
}

/// Flushes the chunk files of `chunks` (and their directories) to disk, so a marker never
/// outlives the data it vouches for. A chunk of fill values only has no file (zarrs erases
/// it), which is what a reader expects.
fn sync_chunks(
    store: &FilesystemStore,
    array: &Array<FilesystemStore>,
    chunks: &ArraySubset,
) -> Result<()> {
    let mut dirs = std::collections::BTreeSet::new();
    for indices in &chunks.indices() {
        let path = store.key_to_fspath(&array.chunk_key(&indices));
        match fs::File::open(&path) {
            Ok(file) => file.sync_all().map_err(|e| Error::io(&path, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path, e)),
        }
        if let Some(parent) = path.parent() {
            dirs.insert(parent.to_path_buf());
        }
    }
    for dir in dirs {
        if let Ok(d) = fs::File::open(&dir) {
            d.sync_all().map_err(|e| Error::io(&dir, e))?;
        }
    }
    Ok(())
}

/// One pyramid step: `values` (`[c][z][y][x]` over `dims`) halved in y and x, to
/// `[z, ceil(y / 2), ceil(x / 2)]`. Probabilities take the mean of each 2 x 2 group, summed in
/// f32 in row-major order and divided by the count; an odd last row or column (only at the
/// volume's far edge, since blocks are whole chunks of even size) averages the voxels there
/// are. Class indices take each group's top-left voxel (nearest): a mean of classes is no class,
/// and a mode would need a rule for ties.
fn downsample(values: &[f32], channels: usize, dims: [usize; 3], nearest: bool) -> Vec<f32> {
    let [depth, h, w] = dims;
    let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
    let mut out = Vec::with_capacity(channels * depth * h2 * w2);
    for plane in values.chunks_exact(h * w).take(channels * depth) {
        for y in 0..h2 {
            for x in 0..w2 {
                let (y0, x0) = (2 * y, 2 * x);
                if nearest {
                    out.push(plane[y0 * w + x0]);
                    continue;
                }
                let (mut sum, mut n) = (0f32, 0u8);
                for yy in y0..(y0 + 2).min(h) {
                    for xx in x0..(x0 + 2).min(w) {
                        sum += plane[yy * w + xx];
                        n += 1;
                    }
                }
                out.push(sum / f32::from(n));
            }
        }
    }
    out
}

/// P(cell) in [0, 1] as stored in a `uint8` output: `round(P x 255)`.
pub fn to_u8(p: f32) -> u8 {
    (p.clamp(0.0, 1.0) * 255.0).round() as u8
}

fn marker_is_current(path: &Path, job_sha256: &str) -> bool {
    fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .is_some_and(|m| m["job_sha256"] == job_sha256)
}

/// The blocks worker `index` of `count` takes: every block `b` with `b % count == index`
/// (round-robin, so the workers share the volume's edges and its costly middle alike).
pub fn worker_blocks(total: u64, index: u64, count: u64) -> impl Iterator<Item = u64> {
    (index..total).step_by(count.max(1) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_paths_split_at_the_zarr_directory() {
        let (root, inner) = split_store_path(Path::new("/d/vol.zarr/raw/s0"));
        assert_eq!(
            (root, inner.as_str()),
            (PathBuf::from("/d/vol.zarr"), "raw/s0")
        );
        let (root, inner) = split_store_path(Path::new("rel/V.ZARR"));
        assert_eq!((root, inner.as_str()), (PathBuf::from("rel/V.ZARR"), ""));
        let (root, inner) = split_store_path(Path::new("plain/dir"));
        assert_eq!((root, inner.as_str()), (PathBuf::from("plain/dir"), ""));
    }

    #[test]
    fn axes_must_be_ome_ordered() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let p = Path::new("v.zarr");
        let r = axis_roles(p, &names(&["c", "z", "y", "x"]), &[2, 3, 4, 5]).unwrap();
        assert_eq!((r.c, r.z, r.x), (Some(0), 1, 3));
        let r = axis_roles(p, &names(&["t", "c", "z", "y", "x"]), &[1, 2, 3, 4, 5]).unwrap();
        assert_eq!((r.c, r.z), (Some(1), 2));
        for (axes, shape, why) in [
            (&["x", "y", "z"][..], &[1u64, 2, 3][..], "wrong order"),
            (&["c", "y", "x"], &[1, 2, 3], "z, y and x are all needed"),
            (&["q", "z", "y", "x"], &[1, 2, 3, 4], "unknown axis"),
            (&["t", "z", "y", "x"], &[2, 2, 3, 4], "time axis"),
            (&["z", "y", "x"], &[2, 3], "one name per dimension"),
        ] {
            let err = axis_roles(p, &names(axes), shape).unwrap_err().to_string();
            assert!(err.contains(why) && err.contains("v.zarr"), "{err}");
        }
    }

    #[test]
    fn blocks_tile_the_volume_and_workers_share_them() {
        let grid = BlockGrid {
            shape: [5, 9, 7],
            block: [2, 4, 4],
        };
        assert_eq!(grid.counts(), [3, 3, 2]);
        let mut seen = vec![0u8; 5 * 9 * 7];
        for id in 0..grid.len() {
            let [z, y, x] = grid.block(id);
            for z in z {
                for y in y.clone() {
                    for x in x.clone() {
                        seen[(z * 9 + y) * 7 + x] += 1;
                    }
                }
            }
        }
        assert!(seen.iter().all(|&n| n == 1));
        let mut all: Vec<u64> = (0..3)
            .flat_map(|i| worker_blocks(grid.len(), i, 3))
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..grid.len()).collect::<Vec<_>>());
    }

    fn spec(shape: [u64; 3], block: [u64; 3], chunks: [u64; 3], pyramid: u32) -> OutputSpec {
        OutputSpec {
            grid: BlockGrid { shape, block },
            chunks,
            dtype: OutputType::U8,
            channels: 1,
            format: StoreFormat::Zarr(ZarrVersion::V2),
            axes: ["z", "y", "x"]
                .map(|n| json!({ "name": n, "type": "space" }))
                .to_vec(),
            scale: [40.0, 4.0, 4.5],
            job: json!({}),
            pyramid,
        }
    }

    /// Every level-0 block is whole chunks of every level: its region there is level 0's
    /// divided by 2^l (the end rounded up), starting at a multiple of the level's chunks.
    #[test]
    fn pyramid_levels_halve_y_and_x_in_whole_chunks() {
        let s = spec([5, 37, 45], [2, 32, 40], [2, 16, 20], 2);
        s.check_pyramid().unwrap();
        assert_eq!(
            s.level_grid(1),
            BlockGrid {
                shape: [5, 19, 23],
                block: [2, 16, 20]
            }
        );
        assert_eq!(
            s.level_grid(2),
            BlockGrid {
                shape: [5, 10, 12],
                block: [2, 8, 10]
            }
        );
        assert_eq!(s.level_chunks(2), [2, 4, 5]);
        for l in 1..=2 {
            let (grid, chunks, f) = (s.level_grid(l), s.level_chunks(l), 1usize << l);
            assert_eq!(grid.counts(), s.grid.counts());
            for id in 0..s.grid.len() {
                let zero = s.grid.block(id);
                let at = grid.block(id);
                assert_eq!(at[0], zero[0]);
                for d in 1..3 {
                    let want = zero[d].start / f..zero[d].end.div_ceil(f);
                    assert_eq!(at[d], want, "level {l} block {id} axis {d}");
                    assert_eq!(at[d].start as u64 % chunks[d], 0);
                }
            }
        }
        // The metadata lists every level, its scale 2^l times level 0's in y and x.
        let files = s.metadata_files();
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["0/.zarray", "1/.zarray", "2/.zarray", ".zgroup", ".zattrs"]
        );
        assert_eq!(files[2].1["shape"], json!([5, 10, 12]));
        assert_eq!(files[2].1["chunks"], json!([2, 4, 5]));
        let datasets = &files[4].1["multiscales"][0]["datasets"];
        assert_eq!(datasets[2]["path"], "2");
        assert_eq!(
            datasets[2]["coordinateTransformations"][0]["scale"],
            json!([40.0, 16.0, 18.0])
        );
        // A job without a pyramid reads as before pyramids; one with names it.
        assert!(spec([5, 37, 45], [2, 32, 40], [2, 16, 20], 0)
            .job_json()
            .get("pyramid")
            .is_none());
        assert_eq!(s.job_json()["pyramid"], 2);
        // Sharded v3: a level's shard is the block at that level.
        let v3 = OutputSpec {
            format: StoreFormat::Zarr(ZarrVersion::V3),
            ..s.clone()
        };
        let files = v3.metadata_files();
        assert_eq!(
            files[1].1["chunk_grid"]["configuration"]["chunk_shape"],
            json!([2, 16, 20])
        );
        assert_eq!(
            files[1].1["codecs"][0]["configuration"]["chunk_shape"],
            json!([2, 8, 10])
        );
        assert_eq!(v3.write_unit(2), [2, 8, 10]);
    }

    #[test]
    fn a_pyramid_needs_chunks_divisible_by_its_factor() {
        for (chunks, pyramid, why) in [
            ([2, 16, 20], 3, "divisible by 2^3 = 8"),
            ([2, 16, 20], 5, "smaller than 2^5 = 32"),
            ([1, 6, 8], 2, "divisible by 2^2 = 4"),
            ([1, 64, 64], 40, "at most 31"),
        ] {
            let err = spec([5, 64, 64], [1, 64, 64], chunks, pyramid)
                .check_pyramid()
                .unwrap_err();
            assert!(err.contains(&format!("--pyramid {pyramid}")), "{err}");
            assert!(err.contains(why), "{err}");
        }
        assert!(spec([5, 64, 64], [1, 64, 64], [1, 8, 24], 3)
            .check_pyramid()
            .is_ok());
    }

    #[test]
    fn downsampling_averages_2x2_groups_and_keeps_classes() {
        // Two channels of one 3 x 3 section: the last row and column average what is there.
        let a: Vec<f32> = (0..9).map(|v| v as f32).collect();
        let b: Vec<f32> = a.iter().map(|v| v * 10.0).collect();
        let both: Vec<f32> = a.iter().chain(&b).copied().collect();
        let got = downsample(&both, 2, [1, 3, 3], false);
        assert_eq!(got, [2.0, 3.5, 6.5, 8.0, 20.0, 35.0, 65.0, 80.0]);
        assert_eq!(downsample(&a, 1, [1, 3, 3], true), [0.0, 2.0, 6.0, 8.0]);
        // z is kept: two sections of 2 x 4.
        let two: Vec<f32> = (0..16).map(|v| v as f32).collect();
        assert_eq!(
            downsample(&two, 1, [2, 2, 4], false),
            [2.5, 4.5, 10.5, 12.5]
        );
    }

    #[test]
    fn rounding_to_u8() {
        assert_eq!(
            [0.0, 0.5, 1.0, 0.001_96, 0.998].map(to_u8),
            [0, 128, 255, 0, 254]
        );
    }

    #[test]
    fn job_differences_are_named() {
        let a = json!({"job": {"model_sha256": "aa", "tile": 8}, "dtype": "uint8"});
        let b = json!({"job": {"model_sha256": "bb", "tile": 8}, "dtype": "uint8"});
        let d = first_difference("", &a, &b);
        assert!(
            d.starts_with("job.model_sha256: the store has \"aa\""),
            "{d}"
        );
    }
}
