//! Fast CPU kernels as candle custom ops, each with its own backward pass.
//!
//! candle 0.11.1's CPU convolution runs its GEMMs with the GEMM crate's own threading (which
//! splits the skinny `out_channels x (C*k*k)` products badly on two cores) and computes the input
//! gradient with a naive transposed-convolution loop. The ops here cut the work into im2col tiles
//! of ~512 output pixels and run one single-threaded [`gemm`] per tile on Rayon's threads:
//!
//! - [`conv2d`]: stride-1 square-kernel convolution with bias (3x3 valid or same, 1x1), forward;
//!   its input gradient is the same tiled correlation of the output gradient with the flipped,
//!   transposed kernel, its weight gradient a tiled `dY x col^T` accumulated per thread.
//!   The 3x3 convolutions of wide layers form the same three products by Winograd F(2x2, 3x3)
//!   instead ([`winograd`]), 2.25 times fewer multiply-adds on the same gemm calls.
//! - [`upconv2x2`]: the 2x2 stride-2 up-convolution, one GEMM and a scatter per tile of input
//!   rows, and the gather and two GEMMs back.
//!
//! With the `cudnn` feature, [`cudnn`] runs the same convolution and up-convolution on CUDA
//! through cuDNN (forward, backward-data, backward-filter), used by [`conv2d`] and
//! [`crate::layers::UpConv2x2`] when cuDNN can be initialised, [`conv2d_gemm`] otherwise.
//!
//! Each op matches candle's stock op to 1e-4 (see the tests). The fast path runs for contiguous
//! f32 tensors on the CPU. Other convolutions (CUDA, f16 on the CPU) go through [`conv2d_gemm`]
//! (shifted views and one batched GEMM, in candle's own ops) instead of candle's `conv2d`;
//! anything else (other layers in other dtypes, other geometries) falls back to the stock
//! candle op, as does everything when [`fast_ops_enabled`] is false: set the environment
//! variable `UNET_STOCK_OPS=1`, call [`set_fast_ops`], or scope a choice to the current thread
//! with [`with_fast_ops`] (what the equivalence tests do).

mod conv;
pub mod cpu_path;
#[cfg(feature = "cudnn")]
pub mod cudnn;
mod norm;
mod pool;
mod upconv;
pub mod winograd;

use std::cell::{Cell, RefCell};
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU8, Ordering};

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

pub use conv::{conv2d, conv2d_gemm, conv2d_input_grad, conv2d_weight_grad};
pub use norm::batch_norm;
pub use pool::max_pool2x2;
pub use upconv::upconv2x2;

// The slice-level kernels behind the ops, for the training step that bypasses autograd.
pub(crate) use conv::{channel_sums, conv_forward, conv_input_grad, conv_weight_grad, Geom};
pub(crate) use norm::{batch_mean_var, BatchNormOp};
pub(crate) use pool::{max_pool_backward_into, max_pool_forward};
pub(crate) use upconv::{upconv_forward, upconv_input_grad, upconv_weight_grad, UpGeom};

const UNSET: u8 = 0;
const FAST: u8 = 1;
const STOCK: u8 = 2;

static GLOBAL_MODE: AtomicU8 = AtomicU8::new(UNSET);

thread_local! {
    static THREAD_OVERRIDE: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Whether the fast kernels are used on this thread: the [`with_fast_ops`] override if one is
/// active, else the process-wide setting ([`set_fast_ops`], default: on unless the environment
/// variable `UNET_STOCK_OPS` is set to something other than `0` or the empty string).
pub fn fast_ops_enabled() -> bool {
    if let Some(choice) = THREAD_OVERRIDE.with(Cell::get) {
        return choice;
    }
    match GLOBAL_MODE.load(Ordering::Relaxed) {
        FAST => true,
        STOCK => false,
        _ => {
            let stock = std::env::var("UNET_STOCK_OPS").is_ok_and(|v| !v.is_empty() && v != "0");
            GLOBAL_MODE.store(if stock { STOCK } else { FAST }, Ordering::Relaxed);
            !stock
        }
    }
}

/// Turns the fast kernels on or off for the whole process (overrides `UNET_STOCK_OPS`).
pub fn set_fast_ops(enabled: bool) {
    GLOBAL_MODE.store(if enabled { FAST } else { STOCK }, Ordering::Relaxed);
}

/// Runs `f` with the fast kernels on or off for the current thread only, restoring the previous
/// choice afterwards. The choice is made when an op is built (in the forward pass); its backward
/// pass follows whatever the forward chose.
pub fn with_fast_ops<R>(enabled: bool, f: impl FnOnce() -> R) -> R {
    with_thread_value(&THREAD_OVERRIDE, Some(enabled), f)
}

/// Whether `t` can go through a fast kernel: an f32 tensor on the CPU, with fast ops enabled.
pub fn fast_path_for(t: &Tensor) -> bool {
    fast_ops_enabled() && t.dtype() == DType::F32 && matches!(t.device(), Device::Cpu)
}

/// A raw pointer that Rayon tasks may share because each task writes a disjoint region.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);

// SAFETY: only used to hand disjoint output regions to Rayon tasks.
unsafe impl Send for SharedMut {}
// SAFETY: as above; no two tasks touch the same element.
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer; a method so that closures capture the whole (Send) wrapper.
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// Items `start..start + len` of image `img` (output pixels, or 2x2 output tiles): one Rayon
/// task's share of a convolution.
#[derive(Debug, Clone, Copy)]
struct ImageRun {
    img: usize,
    start: usize,
    len: usize,
}

/// Cuts each of `n` images' `per_image` items into runs of at most `most`, and into at least
/// enough runs overall that every one of `threads` has work.
fn image_runs(n: usize, per_image: usize, most: usize, threads: usize) -> Vec<ImageRun> {
    if per_image == 0 || n == 0 {
        return Vec::new();
    }
    let count = per_image
        .div_ceil(most.max(1))
        .max(threads.div_ceil(n))
        .min(per_image);
    let len = per_image.div_ceil(count);
    (0..n)
        .flat_map(|img| {
            (0..per_image).step_by(len).map(move |start| ImageRun {
                img,
                start,
                len: len.min(per_image - start),
            })
        })
        .collect()
}

/// Runs `f` with the thread-local `key` set to `value`, restoring the previous value afterwards
/// (also when `f` panics): the per-thread overrides of the kernels' choices.
fn with_thread_value<T: Copy + 'static, R>(
    key: &'static std::thread::LocalKey<Cell<T>>,
    value: T,
    f: impl FnOnce() -> R,
) -> R {
    struct Restore<T: Copy + 'static>(&'static std::thread::LocalKey<Cell<T>>, T);
    impl<T: Copy + 'static> Drop for Restore<T> {
        fn drop(&mut self) {
            self.0.with(|c| c.set(self.1));
        }
    }
    let _restore = Restore(key, key.with(|c| c.replace(value)));
    f()
}

/// A vector of `len` floats initialised by `fill` through the raw pointer it is given, without
/// zeroing it first: the kernels' outputs, which their tiles cover completely. Zeroing them on
/// the calling thread first cost a serial pass over every map.
///
/// # Safety
/// `fill` must write every one of the `len` elements (through raw pointers, or references to
/// `MaybeUninit`), and must not read one before writing it.
unsafe fn written_by(len: usize, fill: impl FnOnce(SharedMut)) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    fill(SharedMut(v.as_mut_ptr()));
    // SAFETY: the caller's contract: all `len` elements are initialised.
    unsafe { v.set_len(len) };
    v
}

/// `count` planes of `plane` floats each, plane `idx` written in full by `f(idx, plane)`, the
/// planes in parallel, nothing zeroed first.
pub(crate) fn map_planes(
    count: usize,
    plane: usize,
    f: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(count * plane);
    if plane > 0 {
        out.spare_capacity_mut()[..count * plane]
            .par_chunks_mut(plane)
            .enumerate()
            .for_each(|(idx, dst)| f(idx, dst));
    }
    // SAFETY: `f` wrote every element of every plane (its contract).
    unsafe { out.set_len(count * plane) };
    out
}

/// Writes `src` into the start of `dst`.
pub(crate) fn write_from(dst: &mut [MaybeUninit<f32>], src: &[f32]) {
    dst.iter_mut().zip(src).for_each(|(d, &s)| _ = d.write(s));
}

thread_local! {
    /// Each thread's scratch tile (im2col columns, up-convolution tiles), reused across calls.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A second one, for what a kernel holds while the first holds its tile (the weight
    /// gradient's transposed output-gradient tile).
    static OUTER_SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with the thread's buffer `key`, at least `len` floats long (contents unspecified).
fn scratch_in<R>(
    key: &'static std::thread::LocalKey<RefCell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    key.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        if buffer.len() < len {
            buffer.resize(len, 0.0);
        }
        f(&mut buffer[..len])
    })
}

/// Runs `f` with the thread's scratch buffer, at least `len` floats long (contents
/// unspecified). Not re-entrant: `f` must not call it again.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    scratch_in(&SCRATCH, len, f)
}

/// [`with_scratch`] with a second buffer, which `f` may hold while calling [`with_scratch`].
fn with_outer_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    scratch_in(&OUTER_SCRATCH, len, f)
}

/// A strided f32 matrix operand of [`sgemm`]: element `(i, j)` at `ptr + i*row_stride +
/// j*col_stride`, strides in elements.
type Operand<P> = (P, usize, usize);

/// `dst = lhs x rhs` (or `dst += lhs x rhs` with `accumulate`), `[m, k] x [k, n]`, one
/// single-threaded gemm call on `path`'s micro-kernels: the kernels parallelise over tiles
/// themselves, and read their path once on the calling thread ([`cpu_path::kernel_paths`]).
///
/// # Safety
/// Every element the strides address must lie inside its allocation, `dst` must overlap
/// neither operand nor any other thread's output, and `path` must come from
/// [`cpu_path::kernel_paths`].
unsafe fn sgemm(
    path: cpu_path::GemmPath,
    (m, n, k): (usize, usize, usize),
    (dst, dst_rs, dst_cs): Operand<*mut f32>,
    accumulate: bool,
    (lhs, lhs_rs, lhs_cs): Operand<*const f32>,
    (rhs, rhs_rs, rhs_cs): Operand<*const f32>,
) {
    // SAFETY: the caller's contract.
    unsafe {
        cpu_path::gemm_f32_on(
            path,
            (m, n, k),
            dst,
            (dst_cs as isize, dst_rs as isize),
            accumulate,
            lhs,
            (lhs_cs as isize, lhs_rs as isize),
            rhs,
            (rhs_cs as isize, rhs_rs as isize),
        )
    }
}

/// `sum over tiles of f(acc, tile)` for an `acc` of `len` zeros: each Rayon thread accumulates
/// its share of the tiles into its own buffer, and the buffers are summed at the end (the
/// weight gradients, whose every tile adds to the same small matrix).
fn accumulate_over<T: Copy + Sync>(
    tiles: &[T],
    len: usize,
    f: impl Fn(&mut [f32], T) + Sync,
) -> Vec<f32> {
    let threads = rayon::current_num_threads();
    if tiles.is_empty() {
        return vec![0.0; len];
    }
    tiles
        .par_chunks(tiles.len().div_ceil(threads))
        .map(|group| {
            let mut acc = vec![0f32; len];
            for &tile in group {
                f(&mut acc, tile);
            }
            acc
        })
        .reduce_with(|mut a, b| {
            a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
            a
        })
        .unwrap_or_default()
}

/// The f32 contents of a contiguous CPU storage, or an error naming the op.
fn contiguous_f32<'a>(
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
    op: &str,
) -> candle_core::Result<&'a [f32]> {
    let all = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&all[start..end]),
        None => candle_core::bail!("{op}: expects a contiguous tensor"),
    }
}

/// `sum_{i < len} f(i)` with eight independent f32 accumulators per block of 1024 terms (so the
/// adds pipeline) and the blocks summed in f64 (so long sums keep their precision).
#[inline]
fn lane_sum(len: usize, f: impl Fn(usize) -> f32) -> f64 {
    const BLOCK: usize = 1024;
    let mut total = 0f64;
    let mut start = 0;
    while start < len {
        let end = (start + BLOCK).min(len);
        let mut lanes = [0f32; 8];
        let mut i = start;
        while i + 8 <= end {
            for (l, lane) in lanes.iter_mut().enumerate() {
                *lane += f(i + l);
            }
            i += 8;
        }
        for j in i..end {
            lanes[j % 8] += f(j);
        }
        total += lanes.iter().map(|&v| v as f64).sum::<f64>();
        start = end;
    }
    total
}

#[cfg(test)]
pub(crate) mod tests {
    use candle_core::{Device, Tensor};

    /// A tensor of standard normal samples.
    pub(crate) fn random(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = crate::layers::InitRng::new(seed);
        let len: usize = shape.iter().product();
        let v: Vec<f32> = (0..len).map(|_| rng.next_normal() as f32).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// The gradients of `sum(y * probe)`: a non-uniform output gradient `probe` pushed back
    /// through whatever made `y`.
    pub(crate) fn probe_backward(y: &Tensor, probe: &Tensor) -> candle_core::backprop::GradStore {
        (y * probe).unwrap().sum_all().unwrap().backward().unwrap()
    }

    /// Equal shapes and every element within 1e-4 of the largest magnitude of `want` (at least
    /// 1e-3, for gradients that are zero up to rounding).
    pub(crate) fn assert_close(got: &Tensor, want: &Tensor, what: &str) {
        assert_eq!(got.dims(), want.dims(), "{what}: shapes");
        let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-4 * scale,
                "{what}[{i}]: {g} vs {w} (scale {scale})"
            );
        }
    }

    #[test]
    fn lane_sum_matches_a_plain_sum() {
        for len in [0usize, 1, 7, 8, 9, 1023, 1024, 1025, 5000] {
            let got = super::lane_sum(len, |i| (i % 13) as f32 - 6.0);
            let want: f64 = (0..len).map(|i| (i % 13) as f64 - 6.0).sum();
            assert_eq!(got, want, "len {len}");
        }
    }
}
