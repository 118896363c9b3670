//! Which SIMD micro-kernels the CPU matrix products run on, chosen at run time per CPU and per
//! product, never at build time.
//!
//! Both x86 families are compiled into every build (gemm's AVX2+FMA kernels and its AVX-512
//! ones), and one is picked for each of a convolution's three products when the process first
//! needs it. Which is faster depends on the CPU and on the product: on an AMD EPYC Zen 4 the
//! 512-bit kernels win the forward-shaped products but lose the weight gradient of the wide
//! layers, whose operands gemm packs slowly in 512-bit lanes; on an Intel Sapphire Rapids they
//! win all three (docs/RESULTS.md, "CPU kernel paths"). The rule below encodes those
//! measurements rather than timing the products at start-up, so the same CPU always gets the
//! same kernels and a run's numbers repeat to the last bit. `UNET_CPU_KERNELS` overrides it for
//! the whole process, and [`with_kernel_paths`] for the current thread (what the tests do to run
//! every path); `unet bench kernels` checks it on a new CPU.

use std::cell::Cell;
use std::fmt;
use std::sync::OnceLock;

/// A family of gemm micro-kernels for f32 products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GemmPath {
    /// gemm's portable kernels, for CPUs without AVX2: scalar on x86, gemm's own pick (NEON,
    /// ...) elsewhere.
    Generic,
    /// 256-bit AVX2 + FMA kernels.
    Avx2,
    /// 512-bit AVX-512F kernels.
    Avx512,
}

impl GemmPath {
    /// Every path, in the order the tests force them.
    pub const ALL: [GemmPath; 3] = [GemmPath::Generic, GemmPath::Avx2, GemmPath::Avx512];

    /// The name used in `UNET_CPU_KERNELS` and in `unet bench`'s JSON.
    pub fn name(self) -> &'static str {
        match self {
            GemmPath::Generic => "generic",
            GemmPath::Avx2 => "avx2",
            GemmPath::Avx512 => "avx512",
        }
    }

    /// Whether this CPU can run the path.
    pub fn available(self) -> bool {
        let cpu = cpu_info();
        match self {
            GemmPath::Generic => true,
            GemmPath::Avx2 => cpu.avx2_fma,
            GemmPath::Avx512 => cpu.avx512f,
        }
    }
}

impl fmt::Display for GemmPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The products of a convolution (and of the up-convolution), which prefer different paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvProduct {
    /// `W x columns`: the forward pass.
    Forward,
    /// The output gradient against the flipped kernel: the input gradient.
    InputGrad,
    /// `dY x columns^T`, summed over pixels: the weight gradient.
    WeightGrad,
}

/// The path each [`ConvProduct`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelPaths {
    /// The forward products.
    pub forward: GemmPath,
    /// The input-gradient products.
    pub input_grad: GemmPath,
    /// The weight-gradient products.
    pub weight_grad: GemmPath,
}

impl KernelPaths {
    /// The same path for every product.
    pub fn all(path: GemmPath) -> KernelPaths {
        KernelPaths {
            forward: path,
            input_grad: path,
            weight_grad: path,
        }
    }

    /// The path of one product.
    pub fn of(self, product: ConvProduct) -> GemmPath {
        match product {
            ConvProduct::Forward => self.forward,
            ConvProduct::InputGrad => self.input_grad,
            ConvProduct::WeightGrad => self.weight_grad,
        }
    }

    /// The measured rule for this CPU: the widest kernels it has, except the weight gradient
    /// on AVX-512 CPUs not made by Intel, which stays on AVX2 (see the module doc).
    pub fn rule_for(cpu: &CpuInfo) -> KernelPaths {
        if cpu.avx512f {
            let weight_grad = match cpu.vendor == "GenuineIntel" {
                true => GemmPath::Avx512,
                false => GemmPath::Avx2,
            };
            KernelPaths {
                forward: GemmPath::Avx512,
                input_grad: GemmPath::Avx512,
                weight_grad,
            }
        } else if cpu.avx2_fma {
            KernelPaths::all(GemmPath::Avx2)
        } else {
            KernelPaths::all(GemmPath::Generic)
        }
    }

    /// `{"forward": "avx512", ...}`, for `unet bench`'s JSON line.
    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "forward": self.forward.name(),
            "input_grad": self.input_grad.name(),
            "weight_grad": self.weight_grad.name(),
        })
    }
}

impl fmt::Display for KernelPaths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.forward == self.input_grad && self.forward == self.weight_grad {
            return write!(f, "{}", self.forward);
        }
        write!(
            f,
            "forward {}, input gradient {}, weight gradient {}",
            self.forward, self.input_grad, self.weight_grad
        )
    }
}

/// What the process knows of its CPU: read once, from CPUID on x86.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuInfo {
    /// The CPUID vendor string (`GenuineIntel`, `AuthenticAMD`, ...), or the architecture's
    /// name off x86.
    pub vendor: String,
    /// The CPUID brand string ("AMD EPYC 9R14 ..."), or empty where the CPU has none.
    pub model: String,
    /// The family, as `/proc/cpuinfo`'s "cpu family" gives it (25 for AMD Zen 3 and Zen 4, 6
    /// for Intel's cores), or 0 off x86. Brand strings such as "AMD EPYC" alone do not tell
    /// CPU generations apart; family and model number do.
    pub family: u32,
    /// The model number within the family, as `/proc/cpuinfo`'s "model" (the EPYCs measured:
    /// Zen 3 1, Zen 4 17), or 0 off x86.
    pub model_number: u32,
    /// AVX2 and FMA both present.
    pub avx2_fma: bool,
    /// AVX-512F present (and enabled by the OS).
    pub avx512f: bool,
}

impl CpuInfo {
    /// `{"vendor": ..., "model": ..., "family": ..., "model_number": ..., "avx2_fma": ...,
    /// "avx512f": ...}`, for JSON lines.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "vendor": self.vendor,
            "model": self.model,
            "family": self.family,
            "model_number": self.model_number,
            "avx2_fma": self.avx2_fma,
            "avx512f": self.avx512f,
        })
    }

    #[cfg(target_arch = "x86_64")]
    fn read() -> CpuInfo {
        use std::arch::x86_64::__cpuid;
        // SAFETY: CPUID exists on every x86_64 CPU; leaves above the maximum return zeros.
        #[allow(unused_unsafe)]
        let leaf = |l: u32| unsafe { __cpuid(l) };
        let l0 = leaf(0);
        let vendor: Vec<u8> = [l0.ebx, l0.edx, l0.ecx]
            .iter()
            .flat_map(|r| r.to_le_bytes())
            .collect();
        let mut model = Vec::new();
        if leaf(0x8000_0000).eax >= 0x8000_0004 {
            for l in 0x8000_0002..=0x8000_0004 {
                let r = leaf(l);
                for reg in [r.eax, r.ebx, r.ecx, r.edx] {
                    model.extend_from_slice(&reg.to_le_bytes());
                }
            }
        }
        // Leaf 1's EAX: the base family and model, extended as the vendors' manuals say.
        let signature = leaf(1).eax;
        let base_family = (signature >> 8) & 0xf;
        let family = match base_family {
            0xf => base_family + ((signature >> 20) & 0xff),
            _ => base_family,
        };
        let model_number = match base_family {
            0x6 | 0xf => ((signature >> 12) & 0xf0) | ((signature >> 4) & 0xf),
            _ => (signature >> 4) & 0xf,
        };
        let text = |bytes: &[u8]| {
            String::from_utf8_lossy(bytes)
                .trim_matches(|c: char| c == '\0' || c.is_whitespace())
                .to_string()
        };
        CpuInfo {
            vendor: text(&vendor),
            model: text(&model),
            family,
            model_number,
            avx2_fma: std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma"),
            avx512f: std::arch::is_x86_feature_detected!("avx512f"),
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn read() -> CpuInfo {
        CpuInfo {
            vendor: std::env::consts::ARCH.to_string(),
            model: String::new(),
            family: 0,
            model_number: 0,
            avx2_fma: false,
            avx512f: false,
        }
    }
}

/// This machine's CPU, read once.
pub fn cpu_info() -> &'static CpuInfo {
    static INFO: OnceLock<CpuInfo> = OnceLock::new();
    INFO.get_or_init(CpuInfo::read)
}

/// The paths for the process: `UNET_CPU_KERNELS` (`auto`, `generic`, `avx2` or `avx512`) if
/// set, else [`KernelPaths::rule_for`] this CPU. A forced path the CPU lacks, or a value not in
/// that list, falls back to the rule with one warning on stderr.
pub fn process_kernel_paths() -> KernelPaths {
    static PATHS: OnceLock<KernelPaths> = OnceLock::new();
    *PATHS.get_or_init(|| {
        let rule = KernelPaths::rule_for(cpu_info());
        let Ok(value) = std::env::var("UNET_CPU_KERNELS") else {
            return rule;
        };
        match paths_from_env(&value, rule) {
            Ok(paths) => paths,
            Err(why) => {
                eprintln!("warning: UNET_CPU_KERNELS={value:?}: {why}; using {rule}");
                rule
            }
        }
    })
}

/// The paths `UNET_CPU_KERNELS=value` asks for, or why they cannot be had.
fn paths_from_env(value: &str, rule: KernelPaths) -> Result<KernelPaths, String> {
    let value = value.trim();
    if value.is_empty() || value.eq_ignore_ascii_case("auto") {
        return Ok(rule);
    }
    let path = GemmPath::ALL
        .into_iter()
        .find(|p| p.name().eq_ignore_ascii_case(value))
        .ok_or("expected auto, generic, avx2 or avx512")?;
    match path.available() {
        true => Ok(KernelPaths::all(path)),
        false => Err(format!("this CPU ({}) cannot run {path}", cpu_info().model)),
    }
}

thread_local! {
    static THREAD_PATHS: Cell<Option<KernelPaths>> = const { Cell::new(None) };
}

/// The paths the kernels called from this thread use: the [`with_kernel_paths`] override if one
/// is active, else [`process_kernel_paths`]. Kernels read it once on the calling thread and hand
/// the choice to their Rayon tasks.
pub fn kernel_paths() -> KernelPaths {
    THREAD_PATHS
        .with(Cell::get)
        .unwrap_or_else(process_kernel_paths)
}

/// Runs `f` with `paths` for the kernels called from the current thread, restoring the previous
/// choice afterwards (how the tests run every path). A path the CPU lacks is replaced by the
/// rule's choice for that product, so forcing one never executes an unsupported instruction.
pub fn with_kernel_paths<R>(paths: KernelPaths, f: impl FnOnce() -> R) -> R {
    let rule = KernelPaths::rule_for(cpu_info());
    let pick = |path: GemmPath, product| match path.available() {
        true => path,
        false => rule.of(product),
    };
    let paths = KernelPaths {
        forward: pick(paths.forward, ConvProduct::Forward),
        input_grad: pick(paths.input_grad, ConvProduct::InputGrad),
        weight_grad: pick(paths.weight_grad, ConvProduct::WeightGrad),
    };
    super::with_thread_value(&THREAD_PATHS, Some(paths), f)
}

/// One single-threaded f32 product `dst = alpha * dst + lhs x rhs` (`alpha` 0 or 1 as
/// `read_dst`), `[m, k] x [k, n]`, on `path`'s micro-kernels. Strides in elements, as gemm's
/// (column stride first).
///
/// # Safety
/// gemm's contract: every element the strides address lies inside its allocation, and `dst`
/// overlaps neither operand. `path` must be [`GemmPath::available`] (every caller gets its path
/// from [`kernel_paths`], which only hands out available ones).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_f32_on(
    path: GemmPath,
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    (dst_cs, dst_rs): (isize, isize),
    read_dst: bool,
    lhs: *const f32,
    (lhs_cs, lhs_rs): (isize, isize),
    rhs: *const f32,
    (rhs_cs, rhs_rs): (isize, isize),
) {
    // gemm's public `gemm` first turns a row-major destination into a column-major one (the
    // transposed product: its micro-kernels write columns), then dispatches to a per-family
    // `gemm_basic`. Without that step a row-major destination, which every convolution tile is,
    // runs in the slow orientation (docs/RESULTS.md: the bug this fixed), so it is done here as
    // gemm does it. Negative strides are never passed: every caller addresses its operands
    // forwards (asserted in debug builds).
    debug_assert!(
        [dst_cs, dst_rs, lhs_cs, lhs_rs, rhs_cs, rhs_rs]
            .iter()
            .all(|&s| s >= 0),
        "gemm_f32_on takes non-negative strides"
    );
    let (m, n, (dst_cs, dst_rs), (lhs, lhs_cs, lhs_rs), (rhs, rhs_cs, rhs_rs)) =
        match dst_cs < dst_rs {
            // dst^T = rhs^T x lhs^T: the operands swap, and every matrix's strides with them.
            true => (
                n,
                m,
                (dst_rs, dst_cs),
                (rhs, rhs_rs, rhs_cs),
                (lhs, lhs_rs, lhs_cs),
            ),
            false => (
                m,
                n,
                (dst_cs, dst_rs),
                (lhs, lhs_cs, lhs_rs),
                (rhs, rhs_cs, rhs_rs),
            ),
        };
    // gemm's own per-family entry points (`gemm_basic`) are private; this is what each expands
    // to, with the family's micro-kernel tables and lane count `N`.
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    macro_rules! on_family {
        ($simd:expr, $uk:path, $n:expr) => {{
            use $uk as uk;
            const N: usize = $n;
            // SAFETY: the caller's contract; `$simd` exists, so the CPU has its features.
            unsafe {
                gemm_common::gemm::gemm_basic_generic::<
                    _,
                    f32,
                    N,
                    { uk::MR_DIV_N * N },
                    { uk::NR },
                    { uk::MR_DIV_N },
                    { uk::H_M },
                    { uk::H_N },
                >(
                    $simd,
                    m,
                    n,
                    k,
                    dst,
                    dst_cs,
                    dst_rs,
                    read_dst,
                    lhs,
                    lhs_cs,
                    lhs_rs,
                    rhs,
                    rhs_cs,
                    rhs_rs,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    |a, b, c| a * b + c,
                    &uk::UKR,
                    &uk::H_UKR,
                    false,
                    gemm_common::Parallelism::None,
                )
            }
        }};
    }
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    match path {
        GemmPath::Generic => on_family!(
            gemm_common::simd::Scalar,
            gemm_f32::microkernel::scalar::f32,
            1
        ),
        GemmPath::Avx2 => on_family!(
            gemm_common::simd::V3::try_new().expect("AVX2 checked by kernel_paths"),
            gemm_f32::microkernel::fma::f32,
            8
        ),
        GemmPath::Avx512 => on_family!(
            gemm_common::simd::V4::try_new().expect("AVX-512 checked by kernel_paths"),
            gemm_f32::microkernel::avx512f::f32,
            16
        ),
    }
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
    {
        let _ = path;
        // SAFETY: the caller's contract.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst,
                dst_cs,
                dst_rs,
                read_dst,
                lhs,
                lhs_cs,
                lhs_rs,
                rhs,
                rhs_cs,
                rhs_rs,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intel(avx512f: bool) -> CpuInfo {
        CpuInfo {
            vendor: "GenuineIntel".into(),
            model: "Intel(R) Xeon(R) Platinum 8488C".into(),
            family: 6,
            model_number: 143,
            avx2_fma: true,
            avx512f,
        }
    }

    #[test]
    fn the_rule_takes_the_widest_kernels_but_keeps_amds_weight_gradient_on_avx2() {
        assert_eq!(
            KernelPaths::rule_for(&intel(true)),
            KernelPaths::all(GemmPath::Avx512)
        );
        assert_eq!(
            KernelPaths::rule_for(&intel(false)),
            KernelPaths::all(GemmPath::Avx2)
        );
        let zen4 = CpuInfo {
            vendor: "AuthenticAMD".into(),
            model: "AMD EPYC".into(),
            family: 25,
            model_number: 17,
            ..intel(true)
        };
        let paths = KernelPaths::rule_for(&zen4);
        assert_eq!(paths.forward, GemmPath::Avx512);
        assert_eq!(paths.input_grad, GemmPath::Avx512);
        assert_eq!(paths.weight_grad, GemmPath::Avx2);
        let old = CpuInfo {
            avx2_fma: false,
            avx512f: false,
            ..intel(false)
        };
        assert_eq!(
            KernelPaths::rule_for(&old),
            KernelPaths::all(GemmPath::Generic)
        );
    }

    #[test]
    fn the_environment_forces_one_path_or_says_why_not() {
        let rule = KernelPaths::all(GemmPath::Avx2);
        assert_eq!(paths_from_env("", rule), Ok(rule));
        assert_eq!(paths_from_env(" AUTO ", rule), Ok(rule));
        assert_eq!(
            paths_from_env("generic", rule),
            Ok(KernelPaths::all(GemmPath::Generic))
        );
        assert!(paths_from_env("sse9", rule).unwrap_err().contains("avx512"));
        let avx512 = paths_from_env("avx512", rule);
        match GemmPath::Avx512.available() {
            true => assert_eq!(avx512, Ok(KernelPaths::all(GemmPath::Avx512))),
            false => assert!(avx512.unwrap_err().contains("cannot run avx512")),
        }
    }

    #[test]
    fn a_forced_path_the_cpu_lacks_falls_back_to_the_rule() {
        let rule = KernelPaths::rule_for(cpu_info());
        for path in GemmPath::ALL {
            let got = with_kernel_paths(KernelPaths::all(path), kernel_paths);
            let want = match path.available() {
                true => KernelPaths::all(path),
                false => rule,
            };
            assert_eq!(got, want, "{path}");
        }
        assert_eq!(kernel_paths(), process_kernel_paths());
    }

    #[test]
    fn cpu_info_names_the_cpu() {
        let cpu = cpu_info();
        assert!(!cpu.vendor.is_empty());
        if cpu.avx512f {
            assert!(cpu.avx2_fma, "AVX-512F without AVX2 and FMA: {cpu:?}");
        }
        // The kernel's own reading of CPUID is the independent check of family and model.
        if cfg!(all(target_arch = "x86_64", target_os = "linux")) {
            let proc = std::fs::read_to_string("/proc/cpuinfo").expect("/proc/cpuinfo");
            let field = |name: &str| {
                proc.lines()
                    .find_map(|l| {
                        let (key, value) = l.split_once(':')?;
                        (key.trim() == name).then(|| value.trim().parse::<u32>().ok())?
                    })
                    .unwrap_or_else(|| panic!("no {name:?} in /proc/cpuinfo"))
            };
            assert_eq!(cpu.family, field("cpu family"), "{cpu:?}");
            assert_eq!(cpu.model_number, field("model"), "{cpu:?}");
        }
    }

    /// Every path computes the same product as a naive triple loop, for the layouts the kernels
    /// use (row-major, transposed operands, accumulation into the destination).
    #[test]
    fn every_path_matches_a_naive_product() {
        let (m, n, k) = (37usize, 45usize, 29usize);
        let lhs: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919) % 23) as f32 - 11.0)
            .collect();
        let rhs: Vec<f32> = (0..k * n)
            .map(|i| ((i * 104729) % 19) as f32 - 9.0)
            .collect();
        let init: Vec<f32> = (0..m * n).map(|i| (i % 5) as f32).collect();
        for path in GemmPath::ALL.into_iter().filter(|p| p.available()) {
            for (transpose_rhs, accumulate) in [(false, false), (true, false), (true, true)] {
                // rhs as [k, n] row-major, or the same matrix stored as [n, k].
                let rhs_stored: Vec<f32> = match transpose_rhs {
                    false => rhs.clone(),
                    true => (0..n * k).map(|i| rhs[(i % k) * n + i / k]).collect(),
                };
                let (rhs_cs, rhs_rs) = match transpose_rhs {
                    false => (1, n as isize),
                    true => (k as isize, 1),
                };
                let mut dst = init.clone();
                // SAFETY: all operands are dense and in bounds; path is available.
                unsafe {
                    gemm_f32_on(
                        path,
                        (m, n, k),
                        dst.as_mut_ptr(),
                        (1, n as isize),
                        accumulate,
                        lhs.as_ptr(),
                        (1, k as isize),
                        rhs_stored.as_ptr(),
                        (rhs_cs, rhs_rs),
                    )
                };
                for i in 0..m {
                    for j in 0..n {
                        let mut want: f32 = (0..k).map(|p| lhs[i * k + p] * rhs[p * n + j]).sum();
                        if accumulate {
                            want += init[i * n + j];
                        }
                        // Small integers: every path's sum is exact.
                        assert_eq!(dst[i * n + j], want, "{path} ({i}, {j})");
                    }
                }
            }
        }
    }
}
