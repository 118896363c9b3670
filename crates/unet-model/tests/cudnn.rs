//! The cuDNN ops (`--features cudnn`) against the CPU fast kernels on the same random inputs:
//! outputs and the gradients of a random linear functional of the output, through candle's
//! autograd. f32 must agree to 1e-3 of the reference's largest magnitude; f16 and bf16, whose
//! inputs are rounded to the half type first (the CPU reference gets the same rounded values),
//! to 2e-2.
//!
//! Tests that need a GPU print "skipped: no CUDA device (...)" and pass where
//! `Device::new_cuda(0)` fails (a machine without a GPU, or one running with the stub libraries).
#![cfg(feature = "cudnn")]

use candle_core::{DType, Device, Tensor, Var};
use unet_model::kernels::{self, cudnn, with_fast_ops};

/// Relative tolerance of f32 results.
const TOL_F32: f64 = 1e-3;
/// Relative tolerance of f16 and bf16 results.
const TOL_HALF: f64 = 2e-2;

/// The first CUDA device, or `None` after printing why the test is skipped.
fn cuda() -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(device) => Some(device),
        Err(e) => {
            // The first line: candle appends a backtrace when RUST_BACKTRACE is set.
            let reason = e.to_string();
            let reason = reason.lines().next().unwrap_or_default();
            println!("skipped: no CUDA device ({reason})");
            None
        }
    }
}

/// The first CUDA device with cuDNN usable on it; panics if there is a device but cuDNN cannot
/// be initialised there (then the check would prove nothing).
fn cuda_with_cudnn() -> Option<Device> {
    let device = cuda()?;
    let Device::Cuda(cuda) = &device else {
        unreachable!("new_cuda returned a non-CUDA device")
    };
    assert!(
        cudnn::available(cuda),
        "a CUDA device but cuDNN cannot be initialised (see the warning above)"
    );
    println!("cuDNN version {:?}", cudnn::version());
    Some(device)
}

/// `len` pseudo-random values in [-1, 1) (a 64-bit LCG; reproducible, no dependencies).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A random CPU tensor, rounded through `dtype` so that the CUDA copy in `dtype` holds the
/// same values.
fn random(shape: &[usize], seed: u64, dtype: DType) -> Tensor {
    let len = shape.iter().product();
    Tensor::from_vec(values(len, seed), shape, &Device::Cpu)
        .and_then(|t| t.to_dtype(dtype))
        .and_then(|t| t.to_dtype(DType::F32))
        .expect("random tensor")
}

/// Largest `|got - want|` over the largest `|want|` (at least 1e-3, for values that are zero up
/// to rounding), both read as f32 on the CPU.
fn relative_error(got: &Tensor, want: &Tensor, what: &str) -> f64 {
    assert_eq!(got.dims(), want.dims(), "{what}: shapes");
    let read = |t: &Tensor| -> Vec<f32> {
        t.to_device(&Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .expect("read tensor")
    };
    let (got, want) = (read(got), read(want));
    let scale = want.iter().fold(1e-3f64, |m, &v| m.max(v.abs() as f64));
    let worst = got
        .iter()
        .zip(&want)
        .map(|(&g, &w)| (g as f64 - w as f64).abs())
        .fold(0f64, f64::max);
    assert!(
        got.iter().all(|v| v.is_finite()),
        "{what}: non-finite output"
    );
    worst / scale
}

/// Output and input, weight and bias gradients of `op` on `(x, weight, bias)` for the output
/// gradient `probe` (the gradient of `sum(y * probe)`).
type Results = (Tensor, Tensor, Tensor, Tensor);

/// Runs `op` on Vars made from `x`, `weight`, `bias` and pushes `probe` back through it.
fn run(
    op: impl Fn(&Tensor, &Tensor, &Tensor) -> candle_core::Result<Tensor>,
    (x, weight, bias, probe): (&Tensor, &Tensor, &Tensor, &Tensor),
    device: &Device,
    dtype: DType,
) -> Results {
    let on = |t: &Tensor| t.to_device(device).and_then(|t| t.to_dtype(dtype));
    let x = Var::from_tensor(&on(x).unwrap()).unwrap();
    let weight = Var::from_tensor(&on(weight).unwrap()).unwrap();
    let bias = Var::from_tensor(&on(bias).unwrap()).unwrap();
    let probe = on(probe).unwrap();
    let y = op(x.as_tensor(), weight.as_tensor(), bias.as_tensor()).expect("forward");
    let grads = (&y * &probe)
        .and_then(|t| t.sum_all())
        .and_then(|t| t.backward())
        .expect("backward");
    let g = |v: &Var| grads.get(v.as_tensor()).expect("gradient").clone();
    (y, g(&x), g(&weight), g(&bias))
}

/// Asserts that every result of `got` is within `tol` of `want`, printing the errors.
fn compare(got: &Results, want: &Results, tol: f64, what: &str) {
    let parts = [
        ("forward", &got.0, &want.0),
        ("input grad", &got.1, &want.1),
        ("weight grad", &got.2, &want.2),
        ("bias grad", &got.3, &want.3),
    ];
    for (part, g, w) in parts {
        let err = relative_error(g, w, &format!("{what} {part}"));
        println!("{what} {part}: relative error {err:.2e} (bound {tol:.0e})");
        assert!(
            err <= tol,
            "{what} {part}: relative error {err:.3e} > {tol:.0e}"
        );
    }
}

/// The tolerance for `dtype`.
fn tolerance(dtype: DType) -> f64 {
    if dtype == DType::F32 {
        TOL_F32
    } else {
        TOL_HALF
    }
}

/// `cudnn::conv2d` in `dtype` on `device` against the CPU fast kernels, geometry
/// `[n, c, o, h, w, k, pad]`.
fn check_conv(device: &Device, dtype: DType, [n, c, o, h, w, k, pad]: [usize; 7]) {
    let seed = (n * 1000 + c * 100 + o * 10 + h + w + k + pad) as u64;
    let x = random(&[n, c, h, w], seed, dtype);
    let weight = random(&[o, c, k, k], seed + 1, dtype);
    let bias = random(&[o], seed + 2, dtype);
    let probe = random(
        &[n, o, h + 2 * pad + 1 - k, w + 2 * pad + 1 - k],
        seed + 3,
        dtype,
    );
    let inputs = (&x, &weight, &bias, &probe);
    let conv = |x: &Tensor, w: &Tensor, b: &Tensor| cudnn::conv2d(x, w, b, pad);
    let got = run(conv, inputs, device, dtype);
    let cpu = |x: &Tensor, w: &Tensor, b: &Tensor| kernels::conv2d(x, w, b, pad);
    let want = with_fast_ops(true, || run(cpu, inputs, &Device::Cpu, DType::F32));
    let what = format!("{dtype:?} conv n{n} c{c} o{o} {h}x{w} k{k} p{pad}");
    compare(&got, &want, tolerance(dtype), &what);
}

/// The geometries checked: 3x3 valid and same, 1x1, 2x2 valid; small channel counts, batch 2.
const CONV_GEOMETRIES: [[usize; 7]; 5] = [
    [2, 3, 4, 9, 7, 3, 0],
    [2, 3, 5, 8, 8, 3, 1],
    [2, 4, 3, 6, 5, 1, 0],
    [2, 2, 3, 7, 6, 2, 0],
    [2, 16, 8, 12, 10, 3, 1],
];

#[test]
fn conv_f32_matches_the_cpu_kernels() {
    let Some(device) = cuda_with_cudnn() else {
        return;
    };
    for dims in CONV_GEOMETRIES {
        check_conv(&device, DType::F32, dims);
    }
}

#[test]
fn conv_f16_matches_the_cpu_kernels() {
    let Some(device) = cuda_with_cudnn() else {
        return;
    };
    for dims in CONV_GEOMETRIES {
        check_conv(&device, DType::F16, dims);
    }
}

#[test]
fn conv_bf16_matches_the_cpu_kernels() {
    let Some(device) = cuda_with_cudnn() else {
        return;
    };
    for dims in CONV_GEOMETRIES {
        check_conv(&device, DType::BF16, dims);
    }
}

/// `cudnn::upconv2x2` in `dtype` against the CPU up-convolution kernel, `[n, c, o, h, w]`.
fn check_upconv(device: &Device, dtype: DType, [n, c, o, h, w]: [usize; 5]) {
    let seed = (n * 1000 + c * 100 + o * 10 + h * 3 + w) as u64;
    let x = random(&[n, c, h, w], seed, dtype);
    let weight = random(&[c, o, 2, 2], seed + 1, dtype);
    let bias = random(&[o], seed + 2, dtype);
    let probe = random(&[n, o, 2 * h, 2 * w], seed + 3, dtype);
    let inputs = (&x, &weight, &bias, &probe);
    let got = run(cudnn::upconv2x2, inputs, device, dtype);
    let want = with_fast_ops(true, || {
        run(kernels::upconv2x2, inputs, &Device::Cpu, DType::F32)
    });
    let what = format!("{dtype:?} upconv n{n} c{c} o{o} {h}x{w}");
    compare(&got, &want, tolerance(dtype), &what);
}

#[test]
fn upconv_matches_the_cpu_kernel() {
    let Some(device) = cuda_with_cudnn() else {
        return;
    };
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for dims in [[2, 4, 3, 5, 6], [2, 8, 4, 3, 3], [1, 1, 1, 1, 1]] {
            check_upconv(&device, dtype, dims);
        }
    }
}

/// `kernels::conv2d` on CUDA (cuDNN, once `cuda_with_cudnn` found it usable) against
/// `conv2d_gemm` on the same device, for a non-contiguous input (which `conv2d` copies first).
#[test]
fn dispatched_conv2d_matches_conv2d_gemm_on_a_non_contiguous_input() {
    let Some(device) = cuda_with_cudnn() else {
        return;
    };
    // [n, c, w, h] transposed to [n, c, h, w]: a view with non-unit strides.
    let x = random(&[2, 3, 7, 9], 5, DType::F32)
        .to_device(&device)
        .and_then(|t| t.transpose(2, 3))
        .unwrap();
    assert!(!x.is_contiguous());
    let weight = random(&[4, 3, 3, 3], 6, DType::F32)
        .to_device(&device)
        .unwrap();
    let bias = random(&[4], 7, DType::F32).to_device(&device).unwrap();
    let (dispatched, gemm) = with_fast_ops(true, || {
        (
            kernels::conv2d(&x, &weight, &bias, 1).unwrap(),
            kernels::conv2d_gemm(&x, &weight, &bias, 1).unwrap(),
        )
    });
    let err = relative_error(&dispatched, &gemm, "dispatched conv2d vs conv2d_gemm");
    println!("dispatched conv2d vs conv2d_gemm: relative error {err:.2e}");
    assert!(err <= TOL_F32);
}

#[test]
fn the_cudnn_ops_refuse_cpu_tensors() {
    // Runs everywhere: the ops are CUDA-only and must say so, not panic.
    let x = random(&[1, 2, 4, 4], 1, DType::F32);
    let weight = random(&[3, 2, 3, 3], 2, DType::F32);
    let bias = random(&[3], 3, DType::F32);
    let err = cudnn::conv2d(&x, &weight, &bias, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("CUDA tensors only"), "{err}");
    let up_weight = random(&[2, 3, 2, 2], 4, DType::F32);
    let err = cudnn::upconv2x2(&x, &up_weight, &bias)
        .unwrap_err()
        .to_string();
    assert!(err.contains("CUDA tensors only"), "{err}");
}
