"""Fused CPU kernels for inference: deformable sampling and the occupancy head.

Deformable sampling: bilinear taps, attention weights and the sum over points in one loop.
``grid_sample`` gathers every channel of every corner separately and writes a (heads, Dh, points, queries)
tensor that is then weighted and summed; for the DSA's 8.4 million sampling points of the tiny model that
is most of a frame. This kernel walks the queries once, reads each corner's Dh channels as one contiguous
row of the (S, heads * Dh) value rows and accumulates ``weight * bilinear * value`` in registers.

Occupancy head: trilinear x2 upsampling, LayerNorm, the classifier and the argmax (and confidence) per
output voxel in one pass, reading the (X, Y, Z, C) voxel rows and writing only the uint8 labels, where
the tensor version writes and re-reads the upsampled features and the logits of 2 M voxels.

Both are a hundred lines of C, compiled on first use with the system C compiler (``cc -O3 -march=native
-fopenmp``) into a per-user cache and loaded with ctypes; ctypes releases the GIL during the call. Where
no compiler is available :func:`load` returns None and callers use ``grid_sample`` (same numbers).

Sampling semantics are ``grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False)`` with
locations in pixel units, ``px = loc_x * W - 0.5`` (the centre of pixel i is at i); the head is
``F.interpolate(trilinear, align_corners=True)`` then ``LayerNorm`` and ``Linear`` as in
:class:`~monoocc_ros.models.heads.OccupancyHead`.
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from monoocc_ros.native import NativeLibrary

__all__ = ["load", "usable", "deform_sample", "occupancy_head", "kernel_status"]

_SOURCE = r"""
#include <math.h>
#include <stdint.h>

/* value: (S, N*D) rows, S = H*W row-major; loc: (N, P, 2, m) pixel coordinates (x, y);
   weight: (N, P, m); out: (m, N*D) rows. Queries [q0, q1). */
#define BODY(DD)                                                                          \
  for (int64_t q = q0; q < q1; ++q) {                                                     \
    for (int64_t n = 0; n < N; ++n) {                                                     \
      float acc[DD];                                                                      \
      for (int d = 0; d < DD; ++d) acc[d] = 0.f;                                          \
      for (int64_t p = 0; p < P; ++p) {                                                   \
        const float* l = loc + ((n * P + p) * 2) * m;                                     \
        const float x = l[q], y = l[m + q];                                               \
        const float w = weight[(n * P + p) * m + q];                                      \
        const float xf = floorf(x), yf = floorf(y);                                       \
        const int64_t x0 = (int64_t)xf, y0 = (int64_t)yf;                                 \
        const float fx = x - xf, fy = y - yf;                                             \
        const float cw[4] = {(1.f - fx) * (1.f - fy), fx * (1.f - fy), (1.f - fx) * fy, fx * fy}; \
        for (int c = 0; c < 4; ++c) {                                                     \
          const int64_t xc = x0 + (c & 1), yc = y0 + (c >> 1);                            \
          if (xc < 0 || xc >= W || yc < 0 || yc >= H) continue;                           \
          const float wc = w * cw[c];                                                     \
          const float* v = value + (yc * W + xc) * ND + n * DD;                           \
          for (int d = 0; d < DD; ++d) acc[d] += wc * v[d];                               \
        }                                                                                 \
      }                                                                                   \
      float* o = out + q * ND + n * DD;                                                   \
      for (int d = 0; d < DD; ++d) o[d] = acc[d];                                         \
    }                                                                                     \
  }

static void run(const float* value, const float* loc, const float* weight, float* out,
                int64_t N, int64_t H, int64_t W, int64_t D, int64_t P, int64_t m, int64_t q0, int64_t q1) {
  const int64_t ND = N * D;
  if (D == 8) { BODY(8) }
  else if (D == 16) { BODY(16) }
  else if (D == 32) { BODY(32) }
  else if (D == 64) { BODY(64) }
  else { BODY(D) }
}

void deform_sample(const float* value, const float* loc, const float* weight, float* out,
                   int64_t N, int64_t H, int64_t W, int64_t D, int64_t P, int64_t m, int threads) {
  const int64_t block = 256;
  const int64_t blocks = (m + block - 1) / block;
  #pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t q1 = (b + 1) * block < m ? (b + 1) * block : m;
    run(value, loc, weight, out, N, H, W, D, P, m, b * block, q1);
  }
}

/* Source index of output o for x2 upsampling with align_corners=True. */
static void axis(int64_t n, int64_t o, int64_t* lo, int64_t* hi, float* w) {
  const double scale = (2 * n > 1) ? (double)(n - 1) / (double)(2 * n - 1) : 0.0;
  const double src = o * scale;
  int64_t l = (int64_t)floor(src);
  if (l > n - 2) l = n - 2;
  if (l < 0) l = 0;
  *lo = l;
  *hi = l + 1 < n ? l + 1 : n - 1;
  *w = (float)(src - (double)l);
}

/* acc[oz] = sum over channels c of wk[c] * u[c][oz]: one class's un-normalised logit along a z line
   (both the argmax pass and the softmax pass of the head use it, in the same order). */
static inline void class_dot(const float* wk, const float* u, int64_t C, int64_t ZO, float* acc) {
  #pragma omp simd
  for (int64_t oz = 0; oz < ZO; ++oz) acc[oz] = 0.f;
  for (int64_t c = 0; c < C; ++c) {
    const float wkc = wk[c];
    const float* uc = u + c * ZO;
    #pragma omp simd
    for (int64_t oz = 0; oz < ZO; ++oz) acc[oz] += wkc * uc[oz];
  }
}

/* x: (X, Y, Z, C) rows; weight: (K, C) classifier with the LayerNorm scale folded in; bias: (K);
   labels/conf: (2X, 2Y, 2Z) uint8, conf may be NULL. One output z-line (2Z voxels) at a time, with the
   voxels as the vector lanes: no reduction runs across lanes. */
void occupancy_head(const float* x, const float* weight, const float* bias, uint8_t* labels, uint8_t* conf,
                    int64_t X, int64_t Y, int64_t Z, int64_t C, int64_t K, float eps, int threads) {
  const int64_t XO = 2 * X, YO = 2 * Y, ZO = 2 * Z;
  if (ZO > 64 || C > 256 || K > 256) return;
  int64_t zlo[64], zhi[64];
  float wzs[64];
  for (int64_t oz = 0; oz < ZO; ++oz) axis(Z, oz, &zlo[oz], &zhi[oz], &wzs[oz]);
  #pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t ox = 0; ox < XO; ++ox) {
    float line[32 * 256];  /* (Z, C): the (x, y)-interpolated input line */
    float u[256 * 64];     /* (C, ZO) */
    float mean[64], rstd[64], best_v[64], acc[64];
    int32_t best_k[64];
    int64_t x0, x1; float wx;
    axis(X, ox, &x0, &x1, &wx);
    for (int64_t oy = 0; oy < YO; ++oy) {
      int64_t y0, y1; float wy;
      axis(Y, oy, &y0, &y1, &wy);
      const float* r00 = x + (x0 * Y + y0) * Z * C;
      const float* r01 = x + (x0 * Y + y1) * Z * C;
      const float* r10 = x + (x1 * Y + y0) * Z * C;
      const float* r11 = x + (x1 * Y + y1) * Z * C;
      /* linear along x, then y, then z, as the tensor version does */
      #pragma omp simd
      for (int64_t i = 0; i < Z * C; ++i) {
        const float a0 = r00[i] + wx * (r10[i] - r00[i]);
        const float a1 = r01[i] + wx * (r11[i] - r01[i]);
        line[i] = a0 + wy * (a1 - a0);
      }
      for (int64_t oz = 0; oz < ZO; ++oz) { mean[oz] = 0.f; acc[oz] = 0.f; }
      for (int64_t c = 0; c < C; ++c) {
        float* uc = u + c * ZO;
        #pragma omp simd
        for (int64_t oz = 0; oz < ZO; ++oz) {
          const float lo = line[zlo[oz] * C + c], hi = line[zhi[oz] * C + c];
          uc[oz] = lo + wzs[oz] * (hi - lo);
          mean[oz] += uc[oz];
        }
      }
      #pragma omp simd
      for (int64_t oz = 0; oz < ZO; ++oz) mean[oz] /= (float)C;
      for (int64_t c = 0; c < C; ++c) {
        float* uc = u + c * ZO;
        #pragma omp simd
        for (int64_t oz = 0; oz < ZO; ++oz) { uc[oz] -= mean[oz]; acc[oz] += uc[oz] * uc[oz]; }
      }
      #pragma omp simd
      for (int64_t oz = 0; oz < ZO; ++oz) rstd[oz] = 1.f / sqrtf(acc[oz] / (float)C + eps);
      uint8_t* lab = labels + (ox * YO + oy) * ZO;
      for (int64_t k = 0; k < K; ++k) {
        class_dot(weight + k * C, u, C, ZO, acc);
        #pragma omp simd
        for (int64_t oz = 0; oz < ZO; ++oz) {
          const float l = bias[k] + rstd[oz] * acc[oz];
          const int take = (k == 0) || (l > best_v[oz]);  /* first maximum wins, as argmax */
          best_v[oz] = take ? l : best_v[oz];
          best_k[oz] = take ? (int32_t)k : best_k[oz];
        }
      }
      for (int64_t oz = 0; oz < ZO; ++oz) lab[oz] = (uint8_t)best_k[oz];
      if (conf) {
        /* second pass over the classes for the softmax's denominator */
        float total[64];
        for (int64_t oz = 0; oz < ZO; ++oz) total[oz] = 0.f;
        for (int64_t k = 0; k < K; ++k) {
          class_dot(weight + k * C, u, C, ZO, acc);
          for (int64_t oz = 0; oz < ZO; ++oz) total[oz] += expf(bias[k] + rstd[oz] * acc[oz] - best_v[oz]);
        }
        uint8_t* cf = conf + (ox * YO + oy) * ZO;
        for (int64_t oz = 0; oz < ZO; ++oz) cf[oz] = (uint8_t)nearbyintf(255.f / total[oz]);
      }
    }
  }
}
"""

_FLAGS = ["-O3", "-march=native", "-mprefer-vector-width=512", "-fopenmp", "-fPIC", "-shared", "-fno-math-errno"]
def _declare(lib: ctypes.CDLL) -> None:
    i64 = ctypes.c_int64
    lib.deform_sample.argtypes = [ctypes.c_void_p] * 4 + [i64] * 6 + [ctypes.c_int]
    lib.deform_sample.restype = None
    lib.occupancy_head.argtypes = [ctypes.c_void_p] * 5 + [i64] * 5 + [ctypes.c_float, ctypes.c_int]
    lib.occupancy_head.restype = None


_LIBRARY = NativeLibrary("kernels", _SOURCE, _FLAGS, declare=_declare, fallback="PyTorch operators")
_state = _LIBRARY.state  # tests set _state["lib"] = None to run the fallback
load = _LIBRARY.load


def usable(*tensors: Tensor) -> bool:
    """True when the fused kernels can run on these tensors: CPU float32, the library built, and not
    inside a trace or compile (an opaque ctypes call would be frozen into the graph as a constant)."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return False
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors) and load() is not None


def kernel_status() -> str:
    """One line saying whether the fused kernels or PyTorch operators run."""
    return _LIBRARY.status()


def deform_sample(value_rows: Tensor, map_hw: tuple[int, int], loc_px: Tensor, weights: Tensor) -> Tensor:
    """Weighted bilinear samples, summed over points.

    Args:
        value_rows: (S, N * Dh) float32 value rows of an (H, W) map, head-major channels.
        map_hw: (H, W).
        loc_px: (N, P, 2, m) float32 sampling locations in pixels (x, y), pixel i centred at i.
        weights: (N, P, m) float32 attention weights.

    Returns:
        (m, N * Dh) float32.
    """
    lib = load()
    if lib is None:
        raise RuntimeError(kernel_status())
    N, P, _, m = loc_px.shape
    H, W = map_hw
    C = value_rows.shape[1]
    value_rows, loc_px, weights = value_rows.contiguous(), loc_px.contiguous(), weights.contiguous()
    out = torch.empty(m, C, dtype=torch.float32)
    lib.deform_sample(
        value_rows.data_ptr(), loc_px.data_ptr(), weights.data_ptr(), out.data_ptr(),
        N, H, W, C // N, P, m, torch.get_num_threads(),
    )
    return out


def occupancy_head(rows: Tensor, grid_size: tuple[int, int, int], weight: Tensor, bias: Tensor, eps: float,
                   with_confidence: bool) -> tuple[Tensor, Tensor | None]:
    """Labels (and confidence) of the x2 upsampled grid from voxel rows.

    Args:
        rows: (X*Y*Z, C) float32 voxel features, flat voxel order.
        grid_size: (X, Y, Z).
        weight: (K, C) classifier weight times the LayerNorm weight. bias: (K,) with the LayerNorm bias folded in.
        eps: the LayerNorm epsilon.

    Returns:
        labels (2X, 2Y, 2Z) uint8 and confidence (same, round(255 * max softmax)) or None.
    """
    lib = load()
    if lib is None:
        raise RuntimeError(kernel_status())
    X, Y, Z = grid_size
    K, C = weight.shape
    if C > 256 or K > 256 or Z > 32:
        raise ValueError("the fused head supports at most 256 channels, 256 classes and 32 input z cells")
    rows, weight, bias = rows.contiguous(), weight.contiguous().float(), bias.contiguous().float()
    labels = torch.empty(2 * X, 2 * Y, 2 * Z, dtype=torch.uint8)
    conf = torch.empty_like(labels) if with_confidence else None
    lib.occupancy_head(
        rows.data_ptr(), weight.data_ptr(), bias.data_ptr(), labels.data_ptr(), conf.data_ptr() if conf is not None else None,
        X, Y, Z, C, K, float(eps), torch.get_num_threads(),
    )
    return labels, conf
