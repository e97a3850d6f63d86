"""Fused CPU kernel for inference: the occupancy head (the attention layers' kernels are in
:mod:`~monoocc_ros.models.fused_layers`).

Occupancy head: trilinear x2 upsampling, LayerNorm, the classifier and the argmax (and confidence) per
output voxel in one pass, writing only the uint8 labels, where the tensor version writes and re-reads the
upsampled features and the logits of 2 M voxels. Upsampling is linear and its weights sum to one, so the
classifier is applied once per input voxel (inside the kernel, on the two input rows each thread is
working from, while they are in cache) and the kernel interpolates those K projections and the C
channels (for the LayerNorm's statistics) instead of computing a K x C product for each of the 8x as
many output voxels.

A few hundred lines of C, compiled on first use with the system C compiler (``cc -O3 -march=native
-fopenmp``) into a per-user cache and loaded with ctypes; ctypes releases the GIL during the call. Where
no compiler is available :func:`load` returns None and callers use the tensor head (same numbers).

The head is ``F.interpolate(trilinear, align_corners=True)`` then ``LayerNorm`` and ``Linear`` as in
:class:`~monoocc_ros.models.heads.OccupancyHead`.
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from monoocc_ros.native import NativeLibrary, in_graph_capture

__all__ = ["load", "usable", "occupancy_head", "kernel_status", "checked"]

_SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

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

#ifdef __AVX512F__
/* Channel ch's z-line (Z <= 16 floats, one register) at output column (ox, oy), bilinear in (x, y)
   from the four input lines of the (Y, n, Z) arrays rx0 and rx1 (input rows x0 and x1). */
static inline __attribute__((always_inline)) __m512 bilinear_line(
    const float* rx0, const float* rx1, int64_t n, int64_t ch, int64_t Z, int64_t y0, int64_t y1, __m512 vx, __m512 vy) {
  const __mmask16 m = (__mmask16)((1u << Z) - 1u);
  const __m512 a00 = _mm512_maskz_loadu_ps(m, rx0 + (y0 * n + ch) * Z), a01 = _mm512_maskz_loadu_ps(m, rx0 + (y1 * n + ch) * Z);
  const __m512 a10 = _mm512_maskz_loadu_ps(m, rx1 + (y0 * n + ch) * Z), a11 = _mm512_maskz_loadu_ps(m, rx1 + (y1 * n + ch) * Z);
  const __m512 b0 = _mm512_fmadd_ps(vx, _mm512_sub_ps(a10, a00), a00);
  const __m512 b1 = _mm512_fmadd_ps(vx, _mm512_sub_ps(a11, a01), a01);
  return _mm512_fmadd_ps(vy, _mm512_sub_ps(b1, b0), b0);
}
#endif

/* The z-line of one channel at output column (ox, oy): bilinear in (x, y) from the four input lines
   (each Z contiguous floats of the (Y, n, Z) arrays rx0 and rx1, input rows x0 and x1), then linear
   along z into ZO outputs. */
static inline __attribute__((always_inline)) void zline(
    const float* rx0, const float* rx1, int64_t n, int64_t ch, int64_t Z, int64_t y0, int64_t y1,
    float wx, float wy, const int32_t* zlo, const int32_t* zhi, const float* wzs, int64_t ZO, float* out) {
  const float* r00 = rx0 + (y0 * n + ch) * Z;
  const float* r01 = rx0 + (y1 * n + ch) * Z;
  const float* r10 = rx1 + (y0 * n + ch) * Z;
  const float* r11 = rx1 + (y1 * n + ch) * Z;
#ifdef __AVX512F__
  if (Z <= 16) {  /* the line is one register; the z step is two permutes per 16 outputs */
    const __m512 line = bilinear_line(rx0, rx1, n, ch, Z, y0, y1, _mm512_set1_ps(wx), _mm512_set1_ps(wy));
    for (int64_t o = 0; o < ZO; o += 16) {  /* zlo, zhi and wzs are padded to a multiple of 16 */
      const __m512 lo = _mm512_permutexvar_ps(_mm512_loadu_si512(zlo + o), line);
      const __m512 hi = _mm512_permutexvar_ps(_mm512_loadu_si512(zhi + o), line);
      _mm512_storeu_ps(out + o, _mm512_fmadd_ps(_mm512_loadu_ps(wzs + o), _mm512_sub_ps(hi, lo), lo));
    }
    return;
  }
#endif
  float line[32];
  for (int64_t z = 0; z < Z; ++z) {
    const float a0 = r00[z] + wx * (r10[z] - r00[z]);
    const float a1 = r01[z] + wx * (r11[z] - r01[z]);
    line[z] = a0 + wy * (a1 - a0);
  }
  for (int64_t oz = 0; oz < ZO; ++oz) out[oz] = line[zlo[oz]] + wzs[oz] * (line[zhi[oz]] - line[zlo[oz]]);
}

#ifdef __AVX512F__
/* LayerNorm mean and 1/std over the C channels at the ZO outputs of one output column (Z <= 16), from
   three sums over the channels' bilinear z-lines L_c instead of each channel's ZO upsampled values:
   the mean is linear in them, and a z-interpolated u = (1 - w) a + w b (a, b = L_c at zlo, zhi = zlo + 1)
   has u^2 = (1 - w)^2 a^2 + 2 w (1 - w) a b + w^2 b^2, so E[u^2] needs only sum L_c^2 and sum L_c(z) L_c(z + 1).
   Var = E[u^2] - mean^2 (not the two-pass form): about 9 of the head's 22 ms at C = 16 were the
   channels' upsampling and statistics. */
static inline __attribute__((always_inline)) void column_stats(
    const float* rx0, const float* rx1, int64_t C, int64_t Z, int64_t y0, int64_t y1, float wx, float wy,
    const int32_t* zlo, const int32_t* zhi, const float* wzs, int64_t ZO, float eps, float* mean, float* rstd) {
  const __m512 vx = _mm512_set1_ps(wx), vy = _mm512_set1_ps(wy);
  const __m512i next = _mm512_min_epi32(_mm512_set_epi32(16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1),
                                        _mm512_set1_epi32((int)Z - 1));
  __m512 sum = _mm512_setzero_ps(), sq = _mm512_setzero_ps(), nb = _mm512_setzero_ps();
  for (int64_t c = 0; c < C; ++c) {
    const __m512 line = bilinear_line(rx0, rx1, C, c, Z, y0, y1, vx, vy);
    sum = _mm512_add_ps(sum, line);
    sq = _mm512_fmadd_ps(line, line, sq);
    nb = _mm512_fmadd_ps(line, _mm512_permutexvar_ps(next, line), nb);
  }
  const __m512 inv_c = _mm512_set1_ps(1.f / (float)C), one = _mm512_set1_ps(1.f), zero = _mm512_setzero_ps();
  for (int64_t o = 0; o < ZO; o += 16) {  /* zlo, zhi and wzs are padded to a multiple of 16 */
    const __m512i lo = _mm512_loadu_si512(zlo + o), hi = _mm512_loadu_si512(zhi + o);
    const __m512 w = _mm512_loadu_ps(wzs + o), v = _mm512_sub_ps(one, w);
    const __m512 slo = _mm512_permutexvar_ps(lo, sum), shi = _mm512_permutexvar_ps(hi, sum);
    const __m512 mu = _mm512_mul_ps(_mm512_fmadd_ps(w, _mm512_sub_ps(shi, slo), slo), inv_c);
    /* hi = lo + 1, or hi = lo = Z - 1 with w = 0 (then nb(lo) = sq(lo) anyway) */
    __m512 e2 = _mm512_mul_ps(_mm512_mul_ps(v, v), _mm512_permutexvar_ps(lo, sq));
    e2 = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_add_ps(w, w), v), _mm512_permutexvar_ps(lo, nb), e2);
    e2 = _mm512_fmadd_ps(_mm512_mul_ps(w, w), _mm512_permutexvar_ps(hi, sq), e2);
    const __m512 var = _mm512_max_ps(_mm512_fnmadd_ps(mu, mu, _mm512_mul_ps(e2, inv_c)), zero);
    _mm512_storeu_ps(mean + o, mu);
    _mm512_storeu_ps(rstd + o, _mm512_div_ps(one, _mm512_sqrt_ps(_mm512_add_ps(var, _mm512_set1_ps(eps)))));
  }
}
#endif

#ifdef __AVX512F__
/* The labels of one output column (Z <= 16, ZO <= 32 outputs, no confidence) with everything in
   registers: for each class its z-line of projections (bilinear in x, y, then linear in z, as
   zline()), its logits bias + rstd (W u - mean W 1) and a running maximum and argmax per output, in
   two 16-lane blocks. zline() and the loop below it store each class's logits for the confidence's
   softmax; without confidence that store and reload was about 10 of the head's 17 ms at C = 16. */
static inline __attribute__((always_inline)) void classify_column(
    const float* rx0, const float* rx1, int64_t K, int64_t Z, int64_t y0, int64_t y1, float wx, float wy,
    const int32_t* zlo, const int32_t* zhi, const float* wzs, int64_t ZO, const float* mean, const float* rstd,
    const float* wsum, const float* bias, uint8_t* lab) {
  const __m512 vx = _mm512_set1_ps(wx), vy = _mm512_set1_ps(wy);
  const __m512i lo[2] = {_mm512_loadu_si512(zlo), _mm512_loadu_si512(zlo + 16)};
  const __m512i hi[2] = {_mm512_loadu_si512(zhi), _mm512_loadu_si512(zhi + 16)};
  const __m512 wz[2] = {_mm512_loadu_ps(wzs), _mm512_loadu_ps(wzs + 16)};
  const __m512 mu[2] = {_mm512_loadu_ps(mean), _mm512_loadu_ps(mean + 16)};
  const __m512 rs[2] = {_mm512_loadu_ps(rstd), _mm512_loadu_ps(rstd + 16)};
  __m512 best_v[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
  __m512i best_k[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
  const int blocks = ZO > 16 ? 2 : 1;
  for (int64_t k = 0; k < K; ++k) {
    const __m512 line = bilinear_line(rx0, rx1, K, k, Z, y0, y1, vx, vy);
    const __m512 ws = _mm512_set1_ps(wsum[k]), bk = _mm512_set1_ps(bias[k]);
    for (int b = 0; b < blocks; ++b) {
      const __m512 l = _mm512_permutexvar_ps(lo[b], line), h = _mm512_permutexvar_ps(hi[b], line);
      const __m512 u = _mm512_fmadd_ps(wz[b], _mm512_sub_ps(h, l), l);
      const __m512 logit = _mm512_fmadd_ps(rs[b], _mm512_fnmadd_ps(mu[b], ws, u), bk);
      /* first maximum wins, as argmax: take only a strictly greater logit */
      const __mmask16 take = k == 0 ? (__mmask16)0xFFFF : _mm512_cmp_ps_mask(logit, best_v[b], _CMP_GT_OQ);
      best_v[b] = _mm512_mask_mov_ps(best_v[b], take, logit);
      best_k[b] = _mm512_mask_mov_epi32(best_k[b], take, _mm512_set1_epi32((int)k));
    }
  }
  for (int b = 0; b < blocks; ++b) {
    const int64_t n = ZO - 16 * b < 16 ? ZO - 16 * b : 16;
    _mm512_mask_cvtepi32_storeu_epi8(lab + 16 * b, (__mmask16)((1u << n) - 1u), best_k[b]);
  }
}
#endif

/* Input row x of the (X, Y, Z, C) voxel rows as z-lines: cen (Y, C, Z) and the classifier applied to
   them, zr (Y, K, Z) = W (K, C) x each column's (C, Z) block. */
static void input_row(const float* rows, const float* W, int64_t x, int64_t Y, int64_t Z, int64_t C, int64_t K,
                      float* cen, float* zr) {
#ifdef __AVX512F__
  if (Z == 16) {  /* a z-line is one register: gather it, then 16 classes at a time in registers */
    const __m512i stride = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                              _mm512_set1_epi32((int)C));
    for (int64_t y = 0; y < Y; ++y) {
      const float* src = rows + (x * Y + y) * Z * C;
      float* c_col = cen + y * C * Z;
      for (int64_t c = 0; c < C; ++c) _mm512_storeu_ps(c_col + c * 16, _mm512_i32gather_ps(stride, src + c, 4));
      float* k_col = zr + y * K * Z;
      for (int64_t k0 = 0; k0 < K; k0 += 16) {
        const int64_t nk = K - k0 < 16 ? K - k0 : 16;
        __m512 acc[16];
        for (int j = 0; j < 16; ++j) acc[j] = _mm512_setzero_ps();
        for (int64_t c = 0; c < C; ++c) {
          const __m512 v = _mm512_loadu_ps(c_col + c * 16);
          for (int j = 0; j < 16; ++j)
            if (j < nk) acc[j] = _mm512_fmadd_ps(_mm512_set1_ps(W[(k0 + j) * C + c]), v, acc[j]);
        }
        for (int j = 0; j < nk; ++j) _mm512_storeu_ps(k_col + (k0 + j) * 16, acc[j]);
      }
    }
    return;
  }
#endif
  for (int64_t y = 0; y < Y; ++y) {
    const float* src = rows + (x * Y + y) * Z * C;
    float* c_col = cen + y * C * Z;
    for (int64_t z = 0; z < Z; ++z)
      for (int64_t c = 0; c < C; ++c) c_col[c * Z + z] = src[z * C + c];
    float* k_col = zr + y * K * Z;
    for (int64_t k = 0; k < K; ++k) {
      float acc[32] = {0};
      const float* wk = W + k * C;
      for (int64_t c = 0; c < C; ++c) {
        const float wc = wk[c];
        #pragma omp simd
        for (int64_t z = 0; z < Z; ++z) acc[z] += wc * c_col[c * Z + z];
      }
      for (int64_t z = 0; z < Z; ++z) k_col[k * Z + z] = acc[z];
    }
  }
}

/* rows: (X, Y, Z, C) voxel features; W: (K, C) the classifier (LayerNorm scale folded in); wsum: (K) row
   sums of W; bias: (K); labels/conf: (2X, 2Y, 2Z) uint8, conf may be NULL.
   Upsampling is linear, so for an upsampled voxel u = sum_j a_j v_j, W u = sum_j a_j W v_j = interp(zr) and
     logits = bias + rstd(u) * (W u - mean(u) W 1)
   Only the C channels (for the LayerNorm's statistics) and the K projections are interpolated, not a
   K x C product per output voxel. One output z-line (2Z voxels) at a time, voxels as vector lanes.
   Each thread keeps the two input rows x0, x1 of its current output row as z-lines and projections
   (input_row, in slots x % 2): computed in cache, once per input row and thread, instead of a
   transposed copy of the grid and a batched GEMM that went through memory (about 7 of tiny's 28 ms). */
void occupancy_head(const float* rows, const float* W, const float* wsum, const float* bias, uint8_t* labels, uint8_t* conf,
                    int64_t X, int64_t Y, int64_t Z, int64_t C, int64_t K, float eps, int threads) {
  const int64_t XO = 2 * X, YO = 2 * Y, ZO = 2 * Z;
  if (ZO > 64 || C > 256 || K > 256) return;
  int32_t zlo[64 + 16] = {0}, zhi[64 + 16] = {0};
  float wzs[64 + 16] = {0};
  for (int64_t oz = 0; oz < ZO; ++oz) {
    int64_t lo, hi;
    axis(Z, oz, &lo, &hi, &wzs[oz]);
    zlo[oz] = (int32_t)lo;
    zhi[oz] = (int32_t)hi;
  }
  #pragma omp parallel num_threads(threads)
  {
    float* slot_cen[2] = {malloc(sizeof(float) * Y * C * Z), malloc(sizeof(float) * Y * C * Z)};
    float* slot_zr[2] = {malloc(sizeof(float) * Y * K * Z), malloc(sizeof(float) * Y * K * Z)};
    int64_t slot_x[2] = {-1, -1};
    float u[256][64 + 16];  /* (C, ZO) upsampled channels, then (K, ZO) logits */
    float mean[64 + 16], acc[64], rstd[64 + 16], best_v[64];
    int32_t best_k[64];
    /* chunks of 32 output rows (17 input rows, one of them also in the neighbouring chunk): dynamic,
       so a thread the scheduler parks does not hold up the other */
    #pragma omp for schedule(dynamic, 32)
    for (int64_t ox = 0; ox < XO; ++ox) {
      int64_t x0, x1; float wx;
      axis(X, ox, &x0, &x1, &wx);
      if (slot_x[x0 & 1] != x0) { input_row(rows, W, x0, Y, Z, C, K, slot_cen[x0 & 1], slot_zr[x0 & 1]); slot_x[x0 & 1] = x0; }
      if (slot_x[x1 & 1] != x1) { input_row(rows, W, x1, Y, Z, C, K, slot_cen[x1 & 1], slot_zr[x1 & 1]); slot_x[x1 & 1] = x1; }
      const float *c0 = slot_cen[x0 & 1], *c1 = slot_cen[x1 & 1], *k0 = slot_zr[x0 & 1], *k1 = slot_zr[x1 & 1];
      for (int64_t oy = 0; oy < YO; ++oy) {
        int64_t y0, y1; float wy;
        axis(Y, oy, &y0, &y1, &wy);
#ifdef __AVX512F__
        if (Z <= 16) column_stats(c0, c1, C, Z, y0, y1, wx, wy, zlo, zhi, wzs, ZO, eps, mean, rstd); else
#endif
        {
          for (int64_t oz = 0; oz < ZO; ++oz) { mean[oz] = 0.f; acc[oz] = 0.f; }
          for (int64_t c = 0; c < C; ++c) {
            zline(c0, c1, C, c, Z, y0, y1, wx, wy, zlo, zhi, wzs, ZO, u[c]);
            #pragma omp simd
            for (int64_t oz = 0; oz < ZO; ++oz) mean[oz] += u[c][oz];
          }
          #pragma omp simd
          for (int64_t oz = 0; oz < ZO; ++oz) mean[oz] /= (float)C;
          for (int64_t c = 0; c < C; ++c) {
            #pragma omp simd
            for (int64_t oz = 0; oz < ZO; ++oz) { const float d = u[c][oz] - mean[oz]; acc[oz] += d * d; }
          }
          #pragma omp simd
          for (int64_t oz = 0; oz < ZO; ++oz) rstd[oz] = 1.f / sqrtf(acc[oz] / (float)C + eps);
        }
        uint8_t* lab = labels + (ox * YO + oy) * ZO;
#ifdef __AVX512F__
        if (Z <= 16 && !conf) {
          classify_column(k0, k1, K, Z, y0, y1, wx, wy, zlo, zhi, wzs, ZO, mean, rstd, wsum, bias, lab);
          continue;
        }
#endif
        for (int64_t k = 0; k < K; ++k) {
          float* l = u[k];
          zline(k0, k1, K, k, Z, y0, y1, wx, wy, zlo, zhi, wzs, ZO, l);
          #pragma omp simd
          for (int64_t oz = 0; oz < ZO; ++oz) {
            l[oz] = bias[k] + rstd[oz] * (l[oz] - mean[oz] * wsum[k]);
            const int take = (k == 0) || (l[oz] > best_v[oz]);  /* first maximum wins, as argmax */
            best_v[oz] = take ? l[oz] : best_v[oz];
            best_k[oz] = take ? (int32_t)k : best_k[oz];
          }
        }
        for (int64_t oz = 0; oz < ZO; ++oz) lab[oz] = (uint8_t)best_k[oz];
        if (conf) {  /* the softmax's denominator over the stored logits */
          for (int64_t oz = 0; oz < ZO; ++oz) acc[oz] = 0.f;
          for (int64_t k = 0; k < K; ++k)
            for (int64_t oz = 0; oz < ZO; ++oz) acc[oz] += expf(u[k][oz] - best_v[oz]);
          uint8_t* cf = conf + (ox * YO + oy) * ZO;
          for (int64_t oz = 0; oz < ZO; ++oz) cf[oz] = (uint8_t)nearbyintf(255.f / acc[oz]);
        }
      }
    }
    for (int i = 0; i < 2; ++i) { free(slot_cen[i]); free(slot_zr[i]); }
  }
}
"""

_FLAGS = ["-O3", "-march=native", "-mprefer-vector-width=512", "-fopenmp", "-fPIC", "-shared", "-fno-math-errno"]
def _declare(lib: ctypes.CDLL) -> None:
    i64 = ctypes.c_int64
    lib.occupancy_head.argtypes = [ctypes.c_void_p] * 6 + [i64] * 5 + [ctypes.c_float, ctypes.c_int]
    lib.occupancy_head.restype = None


_LIBRARY = NativeLibrary("kernels", _SOURCE, _FLAGS, declare=_declare, fallback="PyTorch operators")
_state = _LIBRARY.state  # tests set _state["lib"] = None to run the fallback
load = _LIBRARY.load


def usable(*tensors: Tensor) -> bool:
    """True when the fused kernels can run on these tensors: CPU float32, the library built, and not
    inside a trace or compile (an opaque ctypes call would be frozen into the graph as a constant).
    Autocast is fine: the wrappers compute everything they hand to C in float32 (autocast disabled)."""
    if in_graph_capture():
        return False
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors) and load() is not None


def checked(name: str, t: Tensor, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> Tensor:
    """``t`` unchanged if it is what a C kernel may read: a contiguous CPU tensor of ``dtype`` and
    ``shape`` (-1: any size); else ValueError naming it. Every pointer handed to C goes through here:
    a kernel reads raw memory, so a bf16 tensor (made under autocast) read as float32 is garbage and
    runs past its end."""
    if (t.device.type != "cpu" or t.dtype != dtype or not t.is_contiguous() or t.dim() != len(shape)
            or any(want not in (-1, got) for want, got in zip(shape, t.shape))):
        layout = "" if t.is_contiguous() else "non-contiguous "
        raise ValueError(f"C kernel argument {name}: expected a contiguous CPU {dtype} tensor of shape {shape}, "
                         f"got a {layout}{t.device.type} {t.dtype} tensor of shape {tuple(t.shape)}")
    return t


def kernel_status() -> str:
    """One line saying whether the fused kernels or PyTorch operators run."""
    return _LIBRARY.status()


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
    # the kernel reads float32: under bf16 autocast a caller's tensors may be bf16, which C would read
    # as float32 past the end of the buffer (a segfault); checked() refuses anything else
    with torch.autocast("cpu", enabled=False):
        weight, bias = weight.float().contiguous(), bias.float().contiguous()
        rows = checked("rows", rows.float().contiguous(), (X * Y * Z, C))
        checked("weight", weight, (K, C))
        wsum = checked("wsum", weight.sum(1).contiguous(), (K,))
    checked("bias", bias, (K,))
    labels = torch.empty(2 * X, 2 * Y, 2 * Z, dtype=torch.uint8)
    conf = torch.empty_like(labels) if with_confidence else None
    lib.occupancy_head(
        rows.data_ptr(), weight.data_ptr(), wsum.data_ptr(), bias.data_ptr(), labels.data_ptr(),
        conf.data_ptr() if conf is not None else None, X, Y, Z, C, K, float(eps), torch.get_num_threads(),
    )
    return labels, conf
