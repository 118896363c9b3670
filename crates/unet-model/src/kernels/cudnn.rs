//! cuDNN convolutions on CUDA as candle custom ops (the `cudnn` feature).
//!
//! - [`conv2d`]: the stride-1 square-kernel convolution with bias: cuDNN's forward convolution
//!   (the output pre-filled with the broadcast bias, blended with `beta = 1`), its input gradient
//!   cuDNN's backward-data and its weight gradient cuDNN's backward-filter; the bias gradient is
//!   the channel sums of the output gradient, in candle ops.
//! - [`upconv2x2`]: the 2x2 stride-2 up-convolution as the transposed convolution it is: the
//!   backward-data of a 2x2 stride-2 convolution whose filter is the up-convolution's
//!   `[in, out, 2, 2]` weight; its input gradient is that convolution's forward, its weight
//!   gradient that convolution's backward-filter.
//!
//! f32, f16 and bf16, always with f32 accumulation. f16 and bf16 may use tensor cores; f32 uses
//! plain FMA maths unless candle's `gemm_reduced_precision_f32` is on (then cuDNN may use TF32),
//! so that a convolution is exactly as precise as candle's own f32 matrix products.
//!
//! Like PyTorch's `cudnn.benchmark`, each (device, direction, dtype, shape) picks its algorithm
//! once per process (cuDNN's heuristics, `cudnnGetConvolution*Algorithm_v7`) and keeps it. One
//! cuDNN handle per device and thread (cudarc's handle is neither `Send` nor `Sync`, as cuDNN
//! handles must not be shared between threads), created on first use, bound to the device's
//! stream; one workspace buffer per device, grown as needed and shared by every thread, which is
//! safe because every launch on a device goes to its one stream, so launches that use the
//! buffer run one after another.
//!
//! cuDNN is linked (cudarc's `cudnn` feature under candle's `dynamic-linking`): a binary built
//! with the feature needs `libcudnn.so.9` to start. [`available`] checks once per process that
//! the library is a real cuDNN 9 that can make a handle; if not (the stub library of
//! `docs/gpu/make-cudnn-stub.sh`, an old cuDNN, no usable GPU), it prints one warning and
//! [`super::conv2d`] and the up-convolution keep to their other CUDA paths.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::cudnn::{
    result as cudnn_result, sys, ConvBackwardData, ConvBackwardFilter, ConvDescriptor, ConvForward,
    Cudnn, CudnnDataType, CudnnError, FilterDescriptor, TensorDescriptor,
};
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, DeviceRepr};
use candle_core::cuda_backend::{CudaDType, CudaDevice, DeviceId};
use candle_core::{
    CpuStorage, CudaStorage, CustomOp2, CustomOp3, DType, Device, Layout, Shape, Tensor, WithDType,
};

use super::fast_ops_enabled;

/// The oldest cuDNN the bindings work with: cudarc's `cudnn` feature binds cuDNN 9's API.
const MIN_CUDNN_VERSION: usize = 9_00_00;

/// What the process-wide probe found: cuDNN's version, or why cuDNN cannot be used.
static STATUS: OnceLock<Result<usize, String>> = OnceLock::new();

/// Whether cuDNN can run convolutions on `device`: probed once per process (on the first CUDA
/// device asked about), with one warning to stderr naming the reason when it cannot.
pub fn available(device: &CudaDevice) -> bool {
    STATUS
        .get_or_init(|| {
            let status = probe(device);
            if let Err(reason) = &status {
                eprintln!(
                    "warning: cuDNN is unavailable ({reason}); CUDA convolutions use \
                     unet's own GEMM formulation instead"
                );
            }
            status
        })
        .is_ok()
}

/// The loaded cuDNN's version (`major * 10000 + minor * 100 + patch`), once [`available`] has
/// succeeded; `None` before the probe or when it failed.
pub fn version() -> Option<usize> {
    STATUS.get().and_then(|s| s.as_ref().ok().copied())
}

/// Checks that the linked libcudnn is a real cuDNN 9 or newer and that it makes a handle on
/// `device`'s stream (which it keeps, as the thread's handle for that device).
fn probe(device: &CudaDevice) -> Result<usize, String> {
    let version = cudnn_result::get_version();
    if version == 0 {
        return Err("libcudnn reports version 0: the stub library, not cuDNN".into());
    }
    if version < MIN_CUDNN_VERSION {
        return Err(format!(
            "cuDNN {} found; cuDNN 9 or newer is needed",
            version_string(version)
        ));
    }
    handle(device).map_err(|e| {
        format!(
            "cuDNN {} could not create a handle: {e}",
            version_string(version)
        )
    })?;
    Ok(version)
}

/// `90100` as `9.1.0`.
fn version_string(v: usize) -> String {
    format!("{}.{}.{}", v / 10000, (v / 100) % 100, v % 100)
}

/// Whether `x` should go through the cuDNN ops: fast ops on, a CUDA tensor of a dtype the ops
/// take, and cuDNN usable (see [`available`]).
pub fn usable_for(x: &Tensor) -> bool {
    if !fast_ops_enabled() || !matches!(x.dtype(), DType::F32 | DType::F16 | DType::BF16) {
        return false;
    }
    match x.device() {
        Device::Cuda(device) => available(device),
        _ => false,
    }
}

thread_local! {
    /// This thread's cuDNN handle per device, bound to the device's stream.
    static HANDLES: RefCell<HashMap<DeviceId, Arc<Cudnn>>> = RefCell::new(HashMap::new());
}

/// This thread's cuDNN handle for `device`, created on first use.
fn handle(device: &CudaDevice) -> Result<Arc<Cudnn>, CudnnError> {
    HANDLES.with(|handles| {
        if let Some(h) = handles.borrow().get(&device.id()) {
            return Ok(h.clone());
        }
        let h = Cudnn::new(device.cuda_stream())?;
        handles.borrow_mut().insert(device.id(), h.clone());
        Ok(h)
    })
}

/// Each device's workspace, shared by the threads (see the module documentation).
static WORKSPACES: LazyLock<Mutex<HashMap<DeviceId, CudaSlice<u8>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Runs `launch` with `device`'s workspace of at least `bytes` bytes (`None` for 0), growing it
/// first if needed. The lock is held while `launch` enqueues its work, so launches that share
/// the buffer are queued on the stream in turn.
fn with_workspace<R>(
    device: &CudaDevice,
    bytes: usize,
    launch: impl FnOnce(Option<&mut CudaSlice<u8>>) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    if bytes == 0 {
        return launch(None);
    }
    let mut workspaces = WORKSPACES
        .lock()
        .map_err(|_| candle_core::Error::Msg("unet cudnn: workspace lock poisoned".into()))?;
    let grow = workspaces
        .get(&device.id())
        .is_none_or(|ws| ws.len() < bytes);
    if grow {
        // Drop the old buffer first so that its memory can serve the new one.
        workspaces.remove(&device.id());
        // SAFETY: a workspace is scratch memory cuDNN writes before it reads.
        let ws = unsafe { device.alloc::<u8>(bytes)? };
        workspaces.insert(device.id(), ws);
    }
    let ws = workspaces
        .get_mut(&device.id())
        .ok_or_else(|| candle_core::Error::Msg("unet cudnn: workspace missing".into()))?;
    launch(Some(ws))
}

/// The three convolution passes cuDNN runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Direction {
    /// `y = conv(x, w)`.
    Forward,
    /// `dx = conv^T(dy, w)`, the input gradient (the transposed convolution).
    BackwardData,
    /// `dw = corr(x, dy)`, the weight gradient.
    BackwardFilter,
}

/// A convolution as cuDNN sees it: input `[n, c, h, w]`, filter `[o, c, k, k]`, zero padding
/// `pad` and stride `stride` on both axes, output `[n, o, ho, wo]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ConvGeom {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    k: usize,
    pad: usize,
    stride: usize,
    ho: usize,
    wo: usize,
}

impl ConvGeom {
    /// The geometry of input `[n, c, h, w]` and filter `[o, c, k, k]`, or an error naming both.
    fn new(
        (n, c, h, w): (usize, usize, usize, usize),
        (o, c_k, k, k2): (usize, usize, usize, usize),
        pad: usize,
        stride: usize,
    ) -> candle_core::Result<Self> {
        if c != c_k || k != k2 || k == 0 || stride == 0 || h + 2 * pad < k || w + 2 * pad < k {
            candle_core::bail!(
                "unet cudnn: input [{n}, {c}, {h}, {w}], kernel [{o}, {c_k}, {k}, {k2}], padding \
                 {pad}, stride {stride} is not a square-kernel convolution that fits its input"
            );
        }
        let dims = [n, c, h, w, o, k];
        if dims.iter().any(|&d| i32::try_from(d).is_err()) || n * c * h * w > i32::MAX as usize {
            candle_core::bail!("unet cudnn: {dims:?} is too large for cuDNN's 32-bit sizes");
        }
        Ok(Self {
            n,
            c,
            h,
            w,
            o,
            k,
            pad,
            stride,
            ho: (h + 2 * pad - k) / stride + 1,
            wo: (w + 2 * pad - k) / stride + 1,
        })
    }

    fn x_len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }

    fn w_len(&self) -> usize {
        self.o * self.c * self.k * self.k
    }

    fn y_len(&self) -> usize {
        self.n * self.o * self.ho * self.wo
    }
}

/// An element type the cuDNN ops take: f32, f16, bf16.
trait Elem: CudaDType + CudnnDataType + DeviceRepr + WithDType {}
impl Elem for f32 {}
impl Elem for half::f16 {}
impl Elem for half::bf16 {}

/// The math type for `dtype`: tensor cores for f16/bf16; for f32 FMA only unless candle allows
/// reduced-precision f32 GEMMs (TF32).
fn math_type(dtype: DType) -> sys::cudnnMathType_t {
    use sys::cudnnMathType_t as M;
    match dtype {
        DType::F32 if candle_core::cuda_backend::gemm_reduced_precision_f32() => {
            M::CUDNN_DEFAULT_MATH
        }
        DType::F32 => M::CUDNN_FMA_MATH,
        _ => M::CUDNN_TENSOR_OP_MATH,
    }
}

/// What an algorithm choice depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct AlgoKey {
    device: DeviceId,
    direction: Direction,
    dtype: DType,
    math: sys::cudnnMathType_t,
    geom: ConvGeom,
}

/// The algorithm picked for each key, per direction (each has its own algorithm enum).
static FWD_ALGOS: LazyLock<Mutex<HashMap<AlgoKey, sys::cudnnConvolutionFwdAlgo_t>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));
static BWD_DATA_ALGOS: LazyLock<Mutex<HashMap<AlgoKey, sys::cudnnConvolutionBwdDataAlgo_t>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));
static BWD_FILTER_ALGOS: LazyLock<Mutex<HashMap<AlgoKey, sys::cudnnConvolutionBwdFilterAlgo_t>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The cached algorithm for `key`, or the one `pick` finds (then cached).
fn cached_algo<A: Copy>(
    cache: &Mutex<HashMap<AlgoKey, A>>,
    key: AlgoKey,
    pick: impl FnOnce() -> Result<A, CudnnError>,
) -> candle_core::Result<A> {
    if let Some(algo) = cache.lock().ok().and_then(|c| c.get(&key).copied()) {
        return Ok(algo);
    }
    let algo = pick().map_err(|e| cudnn_error("algorithm search", key.direction, e))?;
    if let Ok(mut c) = cache.lock() {
        c.insert(key, algo);
    }
    Ok(algo)
}

/// A cuDNN failure as a candle error naming what failed.
fn cudnn_error(what: &str, direction: Direction, e: CudnnError) -> candle_core::Error {
    candle_core::Error::Msg(format!("unet cudnn {direction:?} {what}: {e}"))
}

/// The descriptors of one convolution.
struct Descriptors<T: Elem> {
    conv: ConvDescriptor<f32>,
    x: TensorDescriptor<T>,
    w: FilterDescriptor<T>,
    y: TensorDescriptor<T>,
}

impl<T: Elem> Descriptors<T> {
    fn new(
        cudnn: &Arc<Cudnn>,
        g: &ConvGeom,
        math: sys::cudnnMathType_t,
    ) -> Result<Self, CudnnError> {
        use sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW as NCHW;
        let i = |v: usize| v as i32; // ConvGeom::new checked that every size fits
        let mut conv = cudnn.create_conv2d::<f32>(
            [i(g.pad), i(g.pad)],
            [i(g.stride), i(g.stride)],
            [1, 1],
            sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
        )?;
        conv.set_math_type(math)?;
        Ok(Self {
            conv,
            x: cudnn.create_4d_tensor::<T>(NCHW, [i(g.n), i(g.c), i(g.h), i(g.w)])?,
            w: cudnn.create_4d_filter::<T>(NCHW, [i(g.o), i(g.c), i(g.k), i(g.k)])?,
            y: cudnn.create_4d_tensor::<T>(NCHW, [i(g.n), i(g.o), i(g.ho), i(g.wo)])?,
        })
    }
}

/// Runs one cuDNN pass of convolution `g` on `device`, `out = pass(a, b) + beta * out`:
/// - [`Direction::Forward`]: `a` = x, `b` = w, `out` = y;
/// - [`Direction::BackwardData`]: `a` = dy, `b` = w, `out` = dx;
/// - [`Direction::BackwardFilter`]: `a` = x, `b` = dy, `out` = dw.
///
/// With `accumulate` (beta = 1) `out` must hold initialised values; without, cuDNN only writes it.
fn run<T: Elem>(
    device: &CudaDevice,
    direction: Direction,
    g: &ConvGeom,
    a: &CudaView<'_, T>,
    b: &CudaView<'_, T>,
    out: &mut CudaSlice<T>,
    accumulate: bool,
) -> candle_core::Result<()> {
    let (a_len, b_len, out_len) = match direction {
        Direction::Forward => (g.x_len(), g.w_len(), g.y_len()),
        Direction::BackwardData => (g.y_len(), g.w_len(), g.x_len()),
        Direction::BackwardFilter => (g.x_len(), g.y_len(), g.w_len()),
    };
    if a.len() != a_len || b.len() != b_len || out.len() != out_len {
        candle_core::bail!(
            "unet cudnn {direction:?}: buffers of {}, {} and {} elements for {g:?}",
            a.len(),
            b.len(),
            out.len()
        );
    }
    let err = |what: &'static str| move |e: CudnnError| cudnn_error(what, direction, e);
    let cudnn = handle(device).map_err(err("handle"))?;
    let math = math_type(T::DTYPE);
    let d = Descriptors::<T>::new(&cudnn, g, math).map_err(err("descriptors"))?;
    let key = AlgoKey {
        device: device.id(),
        direction,
        dtype: T::DTYPE,
        math,
        geom: *g,
    };
    let one = T::from_f64(1.0);
    let beta = T::from_f64(if accumulate { 1.0 } else { 0.0 });
    match direction {
        Direction::Forward => {
            let op = ConvForward {
                conv: &d.conv,
                x: &d.x,
                w: &d.w,
                y: &d.y,
            };
            let algo = cached_algo(&FWD_ALGOS, key, || op.pick_algorithm())?;
            let bytes = op.get_workspace_size(algo).map_err(err("workspace size"))?;
            with_workspace(device, bytes, |ws| {
                // SAFETY: the buffers' lengths match the descriptors (checked above), all are
                // contiguous NCHW of type T, and all live on the handle's stream's device.
                unsafe { op.launch(algo, ws, (one, beta), a, b, out) }.map_err(err("launch"))
            })
        }
        Direction::BackwardData => {
            let op = ConvBackwardData {
                conv: &d.conv,
                dx: &d.x,
                w: &d.w,
                dy: &d.y,
            };
            let algo = cached_algo(&BWD_DATA_ALGOS, key, || op.pick_algorithm())?;
            let bytes = op.get_workspace_size(algo).map_err(err("workspace size"))?;
            with_workspace(device, bytes, |ws| {
                // SAFETY: as for the forward pass.
                unsafe { op.launch(algo, ws, (one, beta), out, b, a) }.map_err(err("launch"))
            })
        }
        Direction::BackwardFilter => {
            let op = ConvBackwardFilter {
                conv: &d.conv,
                x: &d.x,
                dw: &d.w,
                dy: &d.y,
            };
            let algo = cached_algo(&BWD_FILTER_ALGOS, key, || op.pick_algorithm())?;
            let bytes = op.get_workspace_size(algo).map_err(err("workspace size"))?;
            with_workspace(device, bytes, |ws| {
                // SAFETY: as for the forward pass.
                unsafe { op.launch(algo, ws, (one, beta), a, out, b) }.map_err(err("launch"))
            })
        }
    }
}

/// The contiguous elements of `storage` under `layout` (which must have `len` of them), or an
/// error naming the op and the operand.
fn contiguous_view<'a, T: Elem>(
    storage: &'a CudaStorage,
    layout: &Layout,
    len: usize,
    what: &str,
) -> candle_core::Result<CudaView<'a, T>> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("unet cudnn: {what} must be contiguous, got {layout:?}");
    };
    if end - start != len {
        candle_core::bail!(
            "unet cudnn: {what} has {} elements, want {len}",
            end - start
        );
    }
    storage
        .as_cuda_slice::<T>()?
        .try_slice(start..end)
        .ok_or_else(|| candle_core::Error::Msg(format!("unet cudnn: {what} out of bounds")))
}

/// A fresh output of `len` elements for a pass that writes all of it (beta = 0).
fn output<T: Elem>(device: &CudaDevice, len: usize) -> candle_core::Result<CudaSlice<T>> {
    // SAFETY: with beta = 0 cuDNN writes every element without reading it.
    unsafe { device.alloc::<T>(len) }
}

/// A fresh `[n, o, h, w]` output holding the broadcast bias (`[o]` under `layout`), for a pass
/// that accumulates onto it (beta = 1): the convolution plus its bias in one pass.
fn biased_output(
    bias: &CudaStorage,
    layout: &Layout,
    (n, o, h, w): (usize, usize, usize, usize),
) -> candle_core::Result<CudaStorage> {
    if layout.shape().dims() != [o] || layout.contiguous_offsets().is_none() {
        candle_core::bail!(
            "unet cudnn: the bias must be a contiguous [{o}] tensor, got {layout:?}"
        );
    }
    let device = bias.device().clone();
    let mut out = match bias.dtype() {
        DType::F32 => CudaStorage::wrap_cuda_slice(output::<f32>(&device, n * o * h * w)?, device),
        DType::F16 => {
            CudaStorage::wrap_cuda_slice(output::<half::f16>(&device, n * o * h * w)?, device)
        }
        DType::BF16 => {
            CudaStorage::wrap_cuda_slice(output::<half::bf16>(&device, n * o * h * w)?, device)
        }
        dtype => candle_core::bail!("unet cudnn: dtype {dtype:?} (f32, f16 and bf16 only)"),
    };
    // Stride 0 everywhere but the channel: every pixel of channel `oi` reads `bias[oi]`.
    let broadcast = Layout::new(
        Shape::from((n, o, h, w)),
        vec![0, 1, 0, 0],
        layout.start_offset(),
    );
    bias.copy_strided_src(&mut out, 0, &broadcast)?;
    Ok(out)
}

/// Calls `$f::<T>(...)` for the element type of `$dtype`, or fails for another dtype.
macro_rules! by_dtype {
    ($dtype:expr, $f:ident ( $($arg:expr),* )) => {
        match $dtype {
            DType::F32 => $f::<f32>($($arg),*),
            DType::F16 => $f::<half::f16>($($arg),*),
            DType::BF16 => $f::<half::bf16>($($arg),*),
            dtype => candle_core::bail!("unet cudnn: dtype {dtype:?} (f32, f16 and bf16 only)"),
        }
    };
}

/// `out = pass(a, b)` into a fresh storage of `out_len` elements (beta = 0).
fn pass<T: Elem>(
    direction: Direction,
    g: &ConvGeom,
    (s1, l1, len1): (&CudaStorage, &Layout, usize),
    (s2, l2, len2): (&CudaStorage, &Layout, usize),
    out_len: usize,
) -> candle_core::Result<CudaStorage> {
    let device = s1.device();
    let a = contiguous_view::<T>(s1, l1, len1, "first operand")?;
    let b = contiguous_view::<T>(s2, l2, len2, "second operand")?;
    let mut out = output::<T>(device, out_len)?;
    run(device, direction, g, &a, &b, &mut out, false)?;
    Ok(CudaStorage::wrap_cuda_slice(out, device.clone()))
}

/// `out += pass(a, b)` onto `out` (pre-filled with the bias).
fn pass_onto<T: Elem>(
    direction: Direction,
    g: &ConvGeom,
    (s1, l1, len1): (&CudaStorage, &Layout, usize),
    (s2, l2, len2): (&CudaStorage, &Layout, usize),
    out: &mut CudaStorage,
) -> candle_core::Result<()> {
    let device = s1.device().clone();
    let a = contiguous_view::<T>(s1, l1, len1, "first operand")?;
    let b = contiguous_view::<T>(s2, l2, len2, "second operand")?;
    run(
        &device,
        direction,
        g,
        &a,
        &b,
        out.as_cuda_slice_mut::<T>()?,
        true,
    )
}

/// The bias gradient `[o]`: the channel sums of `dy` `[n, o, h, w]`, summed in f32.
fn channel_sums(dy: &Tensor) -> candle_core::Result<Tensor> {
    if dy.dtype() == DType::F32 {
        return dy.sum((0, 2, 3));
    }
    dy.to_dtype(DType::F32)?
        .sum((0, 2, 3))?
        .to_dtype(dy.dtype())
}

/// The error of an op run on the CPU: these ops are CUDA-only (the CPU has its own kernels).
fn cuda_only(op: &str) -> candle_core::Result<(CpuStorage, Shape)> {
    candle_core::bail!("{op}: a cuDNN op, CUDA tensors only")
}

/// `(x, weight, bias) -> y`: the stride-1 convolution with bias, and its backward.
struct CudnnConv2dOp {
    padding: usize,
}

impl CustomOp3 for CudnnConv2dOp {
    fn name(&self) -> &'static str {
        "unet-cudnn-conv2d"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        cuda_only(self.name())
    }

    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let g = ConvGeom::new(l1.shape().dims4()?, l2.shape().dims4()?, self.padding, 1)?;
        let out_dims = (g.n, g.o, g.ho, g.wo);
        let mut y = biased_output(s3, l3, out_dims)?;
        let (x, w) = ((s1, l1, g.x_len()), (s2, l2, g.w_len()));
        by_dtype!(s1.dtype(), pass_onto(Direction::Forward, &g, x, w, &mut y))?;
        Ok((y, Shape::from(out_dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let (_, _, h, w) = x.dims4()?;
        let padding = self.padding;
        // The network's input needs no gradient (as in the CPU kernels' backward).
        let dx = if x.track_op() {
            let op = InputGradOp { padding, h, w };
            Some(dy.apply_op2_no_bwd(&weight.contiguous()?, &op)?)
        } else {
            None
        };
        let k = weight.dim(2)?;
        let dw = x
            .contiguous()?
            .apply_op2_no_bwd(&dy, &WeightGradOp { padding, k })?;
        Ok((dx, Some(dw), Some(channel_sums(&dy)?)))
    }
}

/// `(dy, weight) -> dx` for [`CudnnConv2dOp`] (input sides `h`, `w`).
struct InputGradOp {
    padding: usize,
    h: usize,
    w: usize,
}

impl CustomOp2 for InputGradOp {
    fn name(&self) -> &'static str {
        "unet-cudnn-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        cuda_only(self.name())
    }

    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let (n, o, ho, wo) = l1.shape().dims4()?;
        let w_dims = l2.shape().dims4()?;
        let g = ConvGeom::new((n, w_dims.1, self.h, self.w), w_dims, self.padding, 1)?;
        if (g.o, g.ho, g.wo) != (o, ho, wo) {
            candle_core::bail!("unet cudnn conv2d input grad: bad shapes {l1:?} {l2:?}");
        }
        let (dy, w) = ((s1, l1, g.y_len()), (s2, l2, g.w_len()));
        let dx = by_dtype!(
            s1.dtype(),
            pass(Direction::BackwardData, &g, dy, w, g.x_len())
        )?;
        Ok((dx, Shape::from((g.n, g.c, g.h, g.w))))
    }
}

/// `(x, dy) -> dweight` for [`CudnnConv2dOp`] (kernel size `k`).
struct WeightGradOp {
    padding: usize,
    k: usize,
}

impl CustomOp2 for WeightGradOp {
    fn name(&self) -> &'static str {
        "unet-cudnn-conv2d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        cuda_only(self.name())
    }

    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let (n, c, h, w) = l1.shape().dims4()?;
        let (n_dy, o, ho, wo) = l2.shape().dims4()?;
        let g = ConvGeom::new((n, c, h, w), (o, c, self.k, self.k), self.padding, 1)?;
        if (n_dy, ho, wo) != (n, g.ho, g.wo) {
            candle_core::bail!("unet cudnn conv2d weight grad: bad shapes {l1:?} {l2:?}");
        }
        let (x, dy) = ((s1, l1, g.x_len()), (s2, l2, g.y_len()));
        let dw = by_dtype!(
            s1.dtype(),
            pass(Direction::BackwardFilter, &g, x, dy, g.w_len())
        )?;
        Ok((dw, Shape::from((o, c, self.k, self.k))))
    }
}

/// The convolution of [`super::conv2d`] through cuDNN: `x [n, c, h, w]`, `weight [o, c, k, k]`,
/// `bias [o]` -> `[n, o, h + 2p - k + 1, w + 2p - k + 1]`, stride 1, differentiable. CUDA
/// tensors of one dtype (f32, f16 or bf16) only; non-contiguous inputs are copied first.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    padding: usize,
) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        CudnnConv2dOp { padding },
    )
}

/// The cuDNN convolution behind an up-convolution of input `[n, c, h, w]` and weight
/// `[c, o, 2, 2]`: a 2x2 stride-2 convolution from the up-convolution's output `[n, o, 2h, 2w]`
/// to its input, whose filter is the up-convolution's weight.
fn up_geom(
    (n, c, h, w): (usize, usize, usize, usize),
    (c_w, o, k, k2): (usize, usize, usize, usize),
) -> candle_core::Result<ConvGeom> {
    if c_w != c || (k, k2) != (2, 2) {
        candle_core::bail!(
            "unet cudnn upconv2x2: weight [{c_w}, {o}, {k}, {k2}] does not fit input \
             [{n}, {c}, {h}, {w}] (want [{c}, out, 2, 2])"
        );
    }
    ConvGeom::new((n, o, 2 * h, 2 * w), (c, o, 2, 2), 0, 2)
}

/// `(x, weight, bias) -> y`: the 2x2 stride-2 up-convolution with bias, and its backward.
struct CudnnUpConvOp;

impl CustomOp3 for CudnnUpConvOp {
    fn name(&self) -> &'static str {
        "unet-cudnn-upconv2x2"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        cuda_only(self.name())
    }

    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let g = up_geom(l1.shape().dims4()?, l2.shape().dims4()?)?;
        // The up-convolution's output is the convolution's input.
        let out_dims = (g.n, g.c, g.h, g.w);
        let mut y = biased_output(s3, l3, out_dims)?;
        let (x, w) = ((s1, l1, g.y_len()), (s2, l2, g.w_len()));
        by_dtype!(
            s1.dtype(),
            pass_onto(Direction::BackwardData, &g, x, w, &mut y)
        )?;
        Ok((y, Shape::from(out_dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let dx = if x.track_op() {
            Some(dy.apply_op2_no_bwd(&weight.contiguous()?, &UpInputGradOp)?)
        } else {
            None
        };
        let dw = x.contiguous()?.apply_op2_no_bwd(&dy, &UpWeightGradOp)?;
        Ok((dx, Some(dw), Some(channel_sums(&dy)?)))
    }
}

/// `(dy [n, o, 2h, 2w], weight [c, o, 2, 2]) -> dx [n, c, h, w]`: the stride-2 convolution's
/// forward.
struct UpInputGradOp;

impl CustomOp2 for UpInputGradOp {
    fn name(&self) -> &'static str {
        "unet-cudnn-upconv2x2-input-grad"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        cuda_only(self.name())
    }

    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let (n, o, h2, w2) = l1.shape().dims4()?;
        let (c, o_w, _, _) = l2.shape().dims4()?;
        if h2 % 2 != 0 || w2 % 2 != 0 || o_w != o {
            candle_core::bail!("unet cudnn upconv2x2 input grad: bad shapes {l1:?} {l2:?}");
        }
        let g = up_geom((n, c, h2 / 2, w2 / 2), l2.shape().dims4()?)?;
        let (dy, w) = ((s1, l1, g.x_len()), (s2, l2, g.w_len()));
        let dx = by_dtype!(s1.dtype(), pass(Direction::Forward, &g, dy, w, g.y_len()))?;
        Ok((dx, Shape::from((n, c, h2 / 2, w2 / 2))))
    }
}

/// `(x [n, c, h, w], dy [n, o, 2h, 2w]) -> dweight [c, o, 2, 2]`: the stride-2 convolution's
/// backward-filter, with `dy` as its input and `x` as its output gradient.
struct UpWeightGradOp;

impl CustomOp2 for UpWeightGradOp {
    fn name(&self) -> &'static str {
        "unet-cudnn-upconv2x2-weight-grad"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        cuda_only(self.name())
    }

    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let (n, c, h, w) = l1.shape().dims4()?;
        let (n_dy, o, h2, w2) = l2.shape().dims4()?;
        if (n_dy, h2, w2) != (n, 2 * h, 2 * w) {
            candle_core::bail!("unet cudnn upconv2x2 weight grad: bad shapes {l1:?} {l2:?}");
        }
        let g = up_geom((n, c, h, w), (c, o, 2, 2))?;
        let (dy, x) = ((s2, l2, g.x_len()), (s1, l1, g.y_len()));
        let dw = by_dtype!(
            s1.dtype(),
            pass(Direction::BackwardFilter, &g, dy, x, g.w_len())
        )?;
        Ok((dw, Shape::from((c, o, 2, 2))))
    }
}

/// The 2x2 stride-2 up-convolution of [`super::upconv2x2`] through cuDNN: `x [n, in, h, w]`,
/// `weight [in, out, 2, 2]` (PyTorch's `ConvTranspose2d` layout), `bias [out]` ->
/// `[n, out, 2h, 2w]`, differentiable. CUDA tensors of one dtype (f32, f16 or bf16) only.
pub fn upconv2x2(x: &Tensor, weight: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, CudnnUpConvOp)
}
