//! 2x2 stride-2 max-pool whose backward routes each gradient to its window's first maximum.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{contiguous_f32, fast_path_for};

/// The row-major index (0..4) of the first maximum of a 2x2 window.
#[inline]
fn argmax4(v: [f32; 4]) -> usize {
    let mut best = 0;
    for i in 1..4 {
        if v[i] > v[best] {
            best = i;
        }
    }
    best
}

/// The 2x2 max-pool of a contiguous `[n, c, h, w]` slice: `[n, c, h / 2, w / 2]`.
pub(crate) fn max_pool_forward(x: &[f32], (n, c, h, w): (usize, usize, usize, usize)) -> Vec<f32> {
    let (ho, wo) = (h / 2, w / 2);
    let mut y = Vec::with_capacity(n * c * ho * wo);
    if ho * wo > 0 {
        y.spare_capacity_mut()[..n * c * ho * wo]
            .par_chunks_mut(ho * wo)
            .zip(x.par_chunks(h * w))
            .for_each(|(out, plane)| {
                for i in 0..ho {
                    let (r0, r1) = (&plane[2 * i * w..], &plane[(2 * i + 1) * w..]);
                    for j in 0..wo {
                        out[i * wo + j].write(
                            r0[2 * j]
                                .max(r0[2 * j + 1])
                                .max(r1[2 * j].max(r1[2 * j + 1])),
                        );
                    }
                }
            });
    }
    // SAFETY: every output plane was written in full above (or there are none).
    unsafe { y.set_len(n * c * ho * wo) };
    y
}

/// Adds the input gradient of [`max_pool_forward`], from its input `x` and output gradient
/// `dy`, to `dx` (`x`'s shape): each window's gradient goes to its first maximum (PyTorch's
/// choice).
pub(crate) fn max_pool_backward_into(
    x: &[f32],
    dy: &[f32],
    (n, c, h, w): (usize, usize, usize, usize),
    dx: &mut [f32],
) {
    let (ho, wo) = (h / 2, w / 2);
    if ho * wo == 0 || n * c == 0 {
        return;
    }
    dx.par_chunks_mut(h * w)
        .zip(x.par_chunks(h * w).zip(dy.par_chunks(ho * wo)))
        .for_each(|(out, (plane, grad))| {
            for i in 0..ho {
                for j in 0..wo {
                    let at = [
                        2 * i * w + 2 * j,
                        2 * i * w + 2 * j + 1,
                        (2 * i + 1) * w + 2 * j,
                        (2 * i + 1) * w + 2 * j + 1,
                    ];
                    let best = argmax4(at.map(|p| plane[p]));
                    out[at[best]] += grad[i * wo + j];
                }
            }
        });
}

struct MaxPool2x2Op;

impl CustomOp1 for MaxPool2x2Op {
    fn name(&self) -> &'static str {
        "unet-max-pool-2x2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let x = contiguous_f32(s, l, self.name())?;
        let y = max_pool_forward(x, (n, c, h, w));
        Ok((CpuStorage::F32(y), Shape::from((n, c, h / 2, w / 2))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&dy.contiguous()?, &MaxPoolGradOp)?))
    }
}

/// `(x, dy) -> dx`: each window's gradient goes to its first maximum (PyTorch's choice).
struct MaxPoolGradOp;

impl CustomOp2 for MaxPoolGradOp {
    fn name(&self) -> &'static str {
        "unet-max-pool-2x2-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l1.shape().dims4()?;
        let (ho, wo) = (h / 2, w / 2);
        if l2.shape().dims4()? != (n, c, ho, wo) {
            candle_core::bail!("unet max-pool grad: bad shapes {l1:?} {l2:?}");
        }
        let x = contiguous_f32(s1, l1, self.name())?;
        let dy = contiguous_f32(s2, l2, self.name())?;
        let mut dx = vec![0f32; n * c * h * w];
        max_pool_backward_into(x, dy, (n, c, h, w), &mut dx);
        Ok((CpuStorage::F32(dx), Shape::from((n, c, h, w))))
    }
}

/// 2x2 max-pool with stride 2 of an NCHW map (odd sizes drop the last row / column).
///
/// The fast op for f32 CPU tensors; its backward sends each window's gradient to the window's
/// first maximum, as PyTorch does. Elsewhere a reshape and two max reductions, whose backward
/// gives the full gradient to every maximum of a window. Not candle's `max_pool2d`: in candle
/// 0.11.1 its backward multiplies the gradient by the fraction of maxima in the window instead
/// of dividing by their count, so a unique maximum receives a quarter of its gradient.
pub fn max_pool2x2(x: &Tensor) -> candle_core::Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if fast_path_for(x) {
        return x.contiguous()?.apply_op1(MaxPool2x2Op);
    }
    let (ho, wo) = (h / 2, w / 2);
    if ho == 0 || wo == 0 {
        return Tensor::zeros((n, c, ho, wo), x.dtype(), x.device());
    }
    x.narrow(2, 0, 2 * ho)?
        .narrow(3, 0, 2 * wo)?
        .contiguous()?
        .reshape((n, c, ho, 2, wo, 2))?
        .max(5)?
        .max(3)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::kernels::tests::{assert_close, probe_backward, random};
    use crate::kernels::with_fast_ops;

    #[test]
    fn max_pool_matches_stock() {
        for shape in [[2, 3, 8, 6], [1, 1, 2, 2], [3, 2, 7, 9], [1, 4, 3, 5]] {
            let x = Var::from_tensor(&random(&shape, 5)).unwrap();
            let probe = random(&[shape[0], shape[1], shape[2] / 2, shape[3] / 2], 6);
            let run = |fast: bool| {
                with_fast_ops(fast, || {
                    let y = max_pool2x2(x.as_tensor()).unwrap();
                    let grads = probe_backward(&y, &probe);
                    (y, grads.get(x.as_tensor()).unwrap().clone())
                })
            };
            let (fast, stock) = (run(true), run(false));
            assert_close(&fast.0, &stock.0, &format!("{shape:?} forward"));
            assert_close(&fast.1, &stock.1, &format!("{shape:?} grad"));
            // The forward also matches candle's own max_pool2d.
            let candle = x.as_tensor().max_pool2d(2).unwrap();
            assert_close(&fast.0, &candle, &format!("{shape:?} candle forward"));
        }
    }

    #[test]
    fn ties_go_to_the_first_maximum() {
        let x = Var::from_tensor(
            &Tensor::from_vec(vec![1f32, 3.0, 3.0, 0.0], (1, 1, 2, 2), &Device::Cpu).unwrap(),
        )
        .unwrap();
        let grads = with_fast_ops(true, || {
            max_pool2x2(x.as_tensor())
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
        });
        let g = grads.get(x.as_tensor()).unwrap().flatten_all().unwrap();
        assert_eq!(g.to_vec1::<f32>().unwrap(), vec![0.0, 1.0, 0.0, 0.0]);
    }
}
