"""One C pass per query for a whole deformable-attention layer of a narrow model, and the sampling part
of a wide model's layer (inference only).

:func:`voxel_inference.self_attention_layer` and :func:`~voxel_inference.cross_attention_layer` run a
layer as a chain of PyTorch operators on chunks of queries: offset and weight projections, softmax,
the fused sampling of :mod:`cpu_kernels`, output projection, residual, LayerNorm, FFN, LayerNorm. At
``tiny`` widths (C = 16, 2 heads) each of those operators moves more bytes than it computes, and most
of a layer's time is operator overhead and memory traffic. This kernel keeps one query's numbers in
registers and L1 from its input row to its output row:

    q = [x, x + pos] (DSA) or x (DCA/ICA)
    offsets, logits = Wp q + bp                 (one (Din, O) matrix: O = 3 N G P)
    w = softmax(logits over each group's P points) / G
    s[n] = sum over points of w * bilinear(value[n], ref + offset)   (zeros outside the map)
    r = x + bo + Wo s     (s = 0 for an invisible query: r = x + bo, as the training path)
    out = LN2(y + W2 relu(W1 y + b1) + b2),  y = LN1(r)

For tiny's sizes (C = 16, 2 heads, 4 points, FFN 32) the kernel runs 16 queries at a time with the
queries as the vector lanes, so nothing but the bilinear taps is horizontal; other sizes up to
C = 64 run one query at a time. Measured on tiny's DSA (one thread, 262144 queries): the operator
chain about 240 ms, one query at a time 125 ms, 16-query tiles 70-88 ms.

The value map (``value_proj`` of the keys) is one GEMM over the whole map, done by the caller. Same
parameters and maths as the training path; only the fp32 summation order differs, and the softmax
uses a polynomial exp (Cephes expf, about 2 ulp).

Wider models (``monoocc_s``: C = 128, 8 heads, 8 points) keep their projections, output projection
and FFN as GEMMs, where MKL/oneDNN run at this CPU's matmul rate (in bf16 under autocast), and call
:func:`deform_attend` for the part between them: from each query's projection row, the grouped
softmax, the bilinear corners and the weighted sum of the corners' value rows (float32 or bf16).
The per-query path of the narrow layer calls the same C function (``attend``), so there is one
sampling loop.
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor, nn

from monoocc_ros.models.cpu_kernels import checked
from monoocc_ros.native import NativeLibrary, in_graph_capture

__all__ = ["MAX_DIM", "supports", "fused_layer", "attend_usable", "deform_attend"]

# Stack buffers per query are sized for these; wider models run their projections and FFN as GEMMs
# (big enough for MKL/oneDNN to be the faster path) around deform_attend.
MAX_DIM, MAX_FFN, MAX_PROJ = 64, 256, 768

_SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

#define MAX_DIM 64
#define MAX_FFN 256
#define MAX_PROJ 768

/* out[o] = b[o] + sum_i in[i] * wt[i * O + o] (weights stored transposed: the vector lanes run
   over outputs, no horizontal sums). Called with constant I and O, the accumulators stay in registers. */
static inline __attribute__((always_inline)) void matvec(const float* in, const int64_t I, const float* wt,
                                                         const float* b, const int64_t O, float* out) {
  for (int64_t o = 0; o < O; ++o) out[o] = b[o];
  for (int64_t i = 0; i < I; ++i) {
    const float xi = in[i];
    const float* w = wt + i * O;
    #pragma omp simd
    for (int64_t o = 0; o < O; ++o) out[o] += xi * w[o];
  }
}

static inline __attribute__((always_inline)) void layer_norm(float* v, const int64_t C, const float* g,
                                                             const float* b, float eps) {
  float mean = 0.f, var = 0.f;
  #pragma omp simd reduction(+:mean)
  for (int64_t c = 0; c < C; ++c) mean += v[c];
  mean /= (float)C;
  #pragma omp simd reduction(+:var)
  for (int64_t c = 0; c < C; ++c) { const float d = v[c] - mean; var += d * d; }
  const float rstd = 1.f / sqrtf(var / (float)C + eps);
  #pragma omp simd
  for (int64_t c = 0; c < C; ++c) v[c] = (v[c] - mean) * rstd * g[c] + b[c];
}

/* exp(x) for x <= 0 (softmax after subtracting the maximum), vectorisable: Cephes' expf, 2 ulp. */
static inline float exp_neg(float x) {
  x = x < -87.f ? -87.f : x;
  const float n = nearbyintf(x * 1.44269504088896341f);
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  union { float f; int32_t i; } scale = {.i = ((int32_t)n + 127) << 23};
  return p * scale.f;
}

typedef struct {
  const float *x, *pos, *ref, *value, *wp, *bp, *wo, *bo, *g1, *be1, *w1, *b1, *w2, *b2, *g2, *be2;
  const uint8_t* visible;
  float* out;
  int64_t M, C, F, N, G, P, H, W;
  float eps1, eps2;
} Layer;

/* A bf16 value (the upper half of a float32) as float32. */
static inline float bf16_to_float(uint16_t b) {
  union { uint32_t i; float f; } u = {.i = (uint32_t)b << 16};
  return u.f;
}

/* The attention of one query from its projection row: softmax of each group's P logits (divided by
   G), the four bilinear corners of every point (zero outside the map) and the weighted sum of the
   corners' value rows into s (C floats). proj: (N, G, P, 2) offsets in pixels, then (N, G, P) logits;
   (rx, ry) the reference point in pixels. value: (H * W, C) rows, float32, or bf16 when `bf16`
   (then s = sum w * v over rows rounded to bf16, accumulated in float32). */
static inline __attribute__((always_inline)) void attend(const float* proj, float rx, float ry, const void* value,
    const int bf16, const int64_t H, const int64_t W, const int64_t C, const int64_t N, const int64_t G,
    const int64_t P, float* s) {
  const int64_t D = C / N, GP = G * P, NGP = N * GP;
  const float* off = proj;           /* (N, G, P, 2) */
  const float* logit = proj + 2 * NGP;  /* (N, G, P) */
  float wt[MAX_PROJ / 3], mx[MAX_PROJ / 3], cw[4][MAX_PROJ / 3];
  int32_t ci[4][MAX_PROJ / 3];
  for (int64_t k = 0; k < NGP; k += P) {
    float m = logit[k];
    for (int64_t p = 1; p < P; ++p) m = logit[k + p] > m ? logit[k + p] : m;
    for (int64_t p = 0; p < P; ++p) mx[k + p] = m;
  }
  #pragma omp simd
  for (int64_t k = 0; k < NGP; ++k) wt[k] = exp_neg(logit[k] - mx[k]);
  const float inv_g = 1.f / (float)G;
  for (int64_t k = 0; k < NGP; k += P) {
    float total = 0.f;
    for (int64_t p = 0; p < P; ++p) total += wt[k + p];
    const float scale = inv_g / total;
    for (int64_t p = 0; p < P; ++p) wt[k + p] *= scale;
  }
  const float fw = (float)W, fh = (float)H;
  #pragma omp simd
  for (int64_t k = 0; k < NGP; ++k) {
    const float px = rx + off[2 * k], py = ry + off[2 * k + 1];
    const float xf = floorf(px), yf = floorf(py);
    const float fx = px - xf, fy = py - yf;
    /* validity in float: a point far outside the map must not overflow an integer */
    const float vx0 = (xf >= 0.f) & (xf < fw), vx1 = (xf >= -1.f) & (xf < fw - 1.f);
    const float vy0 = (yf >= 0.f) & (yf < fh), vy1 = (yf >= -1.f) & (yf < fh - 1.f);
    const float xc = xf < -1.f ? -1.f : (xf > fw ? fw : xf), yc = yf < -1.f ? -1.f : (yf > fh ? fh : yf);
    const int32_t base = ((int32_t)yc * (int32_t)W + (int32_t)xc) * (int32_t)C;
    const float w = wt[k];
    /* an outside corner reads row 0 with weight 0 */
    cw[0][k] = w * (1.f - fx) * (1.f - fy) * (vx0 * vy0);
    cw[1][k] = w * fx * (1.f - fy) * (vx1 * vy0);
    cw[2][k] = w * (1.f - fx) * fy * (vx0 * vy1);
    cw[3][k] = w * fx * fy * (vx1 * vy1);
    ci[0][k] = vx0 * vy0 > 0.f ? base : 0;
    ci[1][k] = vx1 * vy0 > 0.f ? base + (int32_t)C : 0;
    ci[2][k] = vx0 * vy1 > 0.f ? base + (int32_t)(W * C) : 0;
    ci[3][k] = vx1 * vy1 > 0.f ? base + (int32_t)(W * C + C) : 0;
  }
#ifdef __AVX512F__
  if (D == 16) {  /* a head's channels are one register: explicit, so bf16 widens with one shift */
    for (int64_t n = 0; n < N; ++n) {
      __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
      for (int64_t j = 0; j < GP; ++j) {
        const int64_t k = n * GP + j;
        for (int c = 0; c < 4; ++c) {
          __m512 v;
          if (bf16) {
            const __m256i h = _mm256_loadu_si256((const __m256i*)((const uint16_t*)value + n * 16 + ci[c][k]));
            v = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
          } else {
            v = _mm512_loadu_ps((const float*)value + n * 16 + ci[c][k]);
          }
          acc[c >> 1] = _mm512_fmadd_ps(_mm512_set1_ps(cw[c][k]), v, acc[c >> 1]);
        }
      }
      _mm512_storeu_ps(s + n * 16, _mm512_add_ps(acc[0], acc[1]));
    }
    return;
  }
#endif
  for (int64_t n = 0; n < N; ++n) {
    /* two accumulators (corners 0-1 and 2-3): half the FMA latency chain */
    float acc[2][64];
    for (int64_t d = 0; d < D; ++d) { acc[0][d] = 0.f; acc[1][d] = 0.f; }
    for (int64_t j = 0; j < GP; ++j) {
      const int64_t k = n * GP + j;
      for (int c = 0; c < 4; ++c) {
        const float wc = cw[c][k];
        float* a = acc[c >> 1];
        if (bf16) {
          const uint16_t* v = (const uint16_t*)value + n * D + ci[c][k];
          #pragma omp simd
          for (int64_t d = 0; d < D; ++d) a[d] += wc * bf16_to_float(v[d]);
        } else {
          const float* v = (const float*)value + n * D + ci[c][k];
          #pragma omp simd
          for (int64_t d = 0; d < D; ++d) a[d] += wc * v[d];
        }
      }
    }
    for (int64_t d = 0; d < D; ++d) s[n * D + d] = acc[0][d] + acc[1][d];
  }
}

/* One query through the whole layer. Called with literal sizes for the common configurations
   (always_inline: every loop bound is then a constant) and with the runtime ones otherwise. */
static inline __attribute__((always_inline)) void query(const Layer* L, int64_t q, const int64_t C,
    const int64_t N, const int64_t G, const int64_t P, const int64_t F, const int dsa) {
  const int64_t NGP = N * G * P;
  const int64_t Din = dsa ? 2 * C : C, O = 3 * NGP;
  float qin[2 * MAX_DIM], proj[MAX_PROJ], s[MAX_DIM], r[MAX_DIM], h[MAX_FFN];
  const float* x = L->x + q * C;
  for (int64_t c = 0; c < C; ++c) qin[c] = x[c];
  if (dsa) {
    const float* p = L->pos + q * C;
    for (int64_t c = 0; c < C; ++c) qin[C + c] = x[c] + p[c];
  }
  for (int64_t c = 0; c < C; ++c) s[c] = 0.f;
  if (!L->visible || L->visible[q]) {
    matvec(qin, Din, L->wp, L->bp, O, proj);
    attend(proj, L->ref[q], L->ref[L->M + q], L->value, 0, L->H, L->W, C, N, G, P, s);
  }
  matvec(s, C, L->wo, L->bo, C, r);
  for (int64_t c = 0; c < C; ++c) r[c] += x[c];
  layer_norm(r, C, L->g1, L->be1, L->eps1);
  matvec(r, C, L->w1, L->b1, F, h);
  for (int64_t f = 0; f < F; ++f) h[f] = h[f] > 0.f ? h[f] : 0.f;
  float* out = L->out + q * C;
  matvec(h, F, L->w2, L->b2, C, out);
  for (int64_t c = 0; c < C; ++c) out[c] += r[c];
  layer_norm(out, C, L->g2, L->be2, L->eps2);
}

/* 16 queries [q0, q0 + 16) at once with the queries as the vector lanes (arrays [dim][16]): the
   projections, softmax, corner arithmetic, LayerNorms and FFN have no horizontal sums and no latency
   chains; only the bilinear taps read value rows lane by lane. For constant sizes that are multiples
   of 8 (the specialised configurations below); the per-query function handles the rest. */
#define T 16
static inline __attribute__((always_inline)) void mm_tile(const float* in, const int64_t I, const float* wt,
                                                          const float* b, const int64_t O, float* out) {
  for (int64_t ob = 0; ob < O; ob += 8) {
    float acc[8][T];
    for (int j = 0; j < 8; ++j)
      for (int t = 0; t < T; ++t) acc[j][t] = b[ob + j];
    for (int64_t i = 0; i < I; ++i) {
      const float* w = wt + i * O + ob;
      const float* v = in + i * T;
      for (int j = 0; j < 8; ++j) {
        #pragma omp simd
        for (int t = 0; t < T; ++t) acc[j][t] += w[j] * v[t];
      }
    }
    for (int j = 0; j < 8; ++j)
      for (int t = 0; t < T; ++t) out[(ob + j) * T + t] = acc[j][t];
  }
}

static inline __attribute__((always_inline)) void ln_tile(float* v, const int64_t C, const float* g,
                                                          const float* b, float eps) {
  float mean[T] = {0}, var[T] = {0};
  for (int64_t c = 0; c < C; ++c)
    for (int t = 0; t < T; ++t) mean[t] += v[c * T + t];
  for (int t = 0; t < T; ++t) mean[t] /= (float)C;
  for (int64_t c = 0; c < C; ++c)
    for (int t = 0; t < T; ++t) { const float d = v[c * T + t] - mean[t]; var[t] += d * d; }
  for (int t = 0; t < T; ++t) var[t] = 1.f / sqrtf(var[t] / (float)C + eps);
  for (int64_t c = 0; c < C; ++c)
    for (int t = 0; t < T; ++t) v[c * T + t] = (v[c * T + t] - mean[t]) * var[t] * g[c] + b[c];
}

static inline __attribute__((always_inline)) void tile(const Layer* L, int64_t q0, const int64_t C,
    const int64_t N, const int64_t G, const int64_t P, const int64_t F, const int dsa) {
  const int64_t D = C / N, GP = G * P, NGP = N * GP, H = L->H, W = L->W;
  const int64_t Din = dsa ? 2 * C : C, O = 3 * NGP;
  float qin[Din][T], proj[O][T], s[C][T], r[C][T], h[F][T], o[C][T], cw[4][NGP][T], vis[T];
  int32_t ci[4][NGP][T];
  for (int t = 0; t < T; ++t) {
    const float* x = L->x + (q0 + t) * C;
    for (int64_t c = 0; c < C; ++c) qin[c][t] = x[c];
    if (dsa) {
      const float* p = L->pos + (q0 + t) * C;
      for (int64_t c = 0; c < C; ++c) qin[C + c][t] = x[c] + p[c];
    }
    vis[t] = L->visible ? (float)(L->visible[q0 + t] != 0) : 1.f;
  }
  float seen = 0.f;
  for (int t = 0; t < T; ++t) seen += vis[t];
  if (seen == 0.f) {  /* no lane sees the map (ICA: a third of tiny's columns): s = 0, as query() */
    for (int64_t c = 0; c < C; ++c)
      for (int t = 0; t < T; ++t) s[c][t] = 0.f;
    goto project;
  }
  mm_tile(&qin[0][0], Din, L->wp, L->bp, O, &proj[0][0]);
  /* softmax over each group's P points, divided by G; invisible lanes get weight 0 */
  const float inv_g = 1.f / (float)G;
  for (int64_t k = 0; k < NGP; k += P) {
    float mx[T], total[T];
    for (int t = 0; t < T; ++t) mx[t] = proj[2 * NGP + k][t];
    for (int64_t p = 1; p < P; ++p)
      for (int t = 0; t < T; ++t) mx[t] = proj[2 * NGP + k + p][t] > mx[t] ? proj[2 * NGP + k + p][t] : mx[t];
    for (int t = 0; t < T; ++t) total[t] = 0.f;
    for (int64_t p = 0; p < P; ++p) {
      #pragma omp simd
      for (int t = 0; t < T; ++t) {
        proj[2 * NGP + k + p][t] = exp_neg(proj[2 * NGP + k + p][t] - mx[t]);
        total[t] += proj[2 * NGP + k + p][t];
      }
    }
    for (int t = 0; t < T; ++t) total[t] = vis[t] * inv_g / total[t];
    for (int64_t p = 0; p < P; ++p)
      for (int t = 0; t < T; ++t) proj[2 * NGP + k + p][t] *= total[t];
  }
  /* The same corner arithmetic as attend()'s, written out again on purpose: folded into one inline
     helper with small output arrays, GCC stopped vectorising both loops and DSA ran 2.4x slower
     (63 -> 153 ms p50, tiny_per_voxel at 185x613, one thread, bench_inference). */
  const float fw = (float)W, fh = (float)H;
  for (int64_t k = 0; k < NGP; ++k) {
    #pragma omp simd
    for (int t = 0; t < T; ++t) {
      const float px = L->ref[q0 + t] + proj[2 * k][t], py = L->ref[L->M + q0 + t] + proj[2 * k + 1][t];
      const float xf = floorf(px), yf = floorf(py);
      const float fx = px - xf, fy = py - yf;
      const float vx0 = (xf >= 0.f) & (xf < fw), vx1 = (xf >= -1.f) & (xf < fw - 1.f);
      const float vy0 = (yf >= 0.f) & (yf < fh), vy1 = (yf >= -1.f) & (yf < fh - 1.f);
      const float xc = xf < -1.f ? -1.f : (xf > fw ? fw : xf), yc = yf < -1.f ? -1.f : (yf > fh ? fh : yf);
      const int32_t base = ((int32_t)yc * (int32_t)W + (int32_t)xc) * (int32_t)C;
      const float w = proj[2 * NGP + k][t];
      cw[0][k][t] = w * (1.f - fx) * (1.f - fy) * (vx0 * vy0);
      cw[1][k][t] = w * fx * (1.f - fy) * (vx1 * vy0);
      cw[2][k][t] = w * (1.f - fx) * fy * (vx0 * vy1);
      cw[3][k][t] = w * fx * fy * (vx1 * vy1);
      ci[0][k][t] = vx0 * vy0 > 0.f ? base : 0;
      ci[1][k][t] = vx1 * vy0 > 0.f ? base + (int32_t)C : 0;
      ci[2][k][t] = vx0 * vy1 > 0.f ? base + (int32_t)(W * C) : 0;
      ci[3][k][t] = vx1 * vy1 > 0.f ? base + (int32_t)(W * C + C) : 0;
    }
  }
  for (int t = 0; t < T; ++t) {
    for (int64_t n = 0; n < N; ++n) {
      float acc[64];
      for (int64_t d = 0; d < D; ++d) acc[d] = 0.f;
      const float* vn = L->value + n * D;
      for (int64_t j = 0; j < GP; ++j) {
        const int64_t k = n * GP + j;
        for (int c = 0; c < 4; ++c) {
          const float wc = cw[c][k][t];
          const float* v = vn + ci[c][k][t];
          #pragma omp simd
          for (int64_t d = 0; d < D; ++d) acc[d] += wc * v[d];
        }
      }
      for (int64_t d = 0; d < D; ++d) s[n * D + d][t] = acc[d];
    }
  }
project:
  mm_tile(&s[0][0], C, L->wo, L->bo, C, &r[0][0]);
  for (int64_t c = 0; c < C; ++c)
    for (int t = 0; t < T; ++t) r[c][t] += qin[c][t];
  ln_tile(&r[0][0], C, L->g1, L->be1, L->eps1);
  mm_tile(&r[0][0], C, L->w1, L->b1, F, &h[0][0]);
  for (int64_t f = 0; f < F; ++f)
    for (int t = 0; t < T; ++t) h[f][t] = h[f][t] > 0.f ? h[f][t] : 0.f;
  mm_tile(&h[0][0], F, L->w2, L->b2, C, &o[0][0]);
  for (int64_t c = 0; c < C; ++c)
    for (int t = 0; t < T; ++t) o[c][t] += r[c][t];
  ln_tile(&o[0][0], C, L->g2, L->be2, L->eps2);
  for (int t = 0; t < T; ++t) {
    float* out = L->out + (q0 + t) * C;
    for (int64_t c = 0; c < C; ++c) out[c] = o[c][t];
  }
}

/* Queries [q0, q1): whole tiles, then the tail one query at a time. */
#define RUN(...) do {                                                            \
    int64_t q = q0;                                                              \
    for (; q + T <= q1; q += T) tile(&L, q, __VA_ARGS__);                        \
    for (; q < q1; ++q) query(&L, q, __VA_ARGS__);                               \
  } while (0)

/* Queries [0, M) in blocks over `threads` OpenMP threads; D = C / N channels per head. */
void deform_layer(const float* x, const float* pos, const float* ref, const uint8_t* visible, const float* value,
                  const float* wp, const float* bp, const float* wo, const float* bo,
                  const float* g1, const float* be1, const float* w1, const float* b1,
                  const float* w2, const float* b2, const float* g2, const float* be2, float* out,
                  int64_t M, int64_t C, int64_t F, int64_t N, int64_t G, int64_t P, int64_t H, int64_t W,
                  float eps1, float eps2, int threads) {
  const Layer L = {x, pos, ref, value, wp, bp, wo, bo, g1, be1, w1, b1, w2, b2, g2, be2, visible, out,
                   M, C, F, N, G, P, H, W, eps1, eps2};
  const int64_t block = 512, blocks = (M + block - 1) / block;
  #pragma omp parallel for schedule(dynamic, 4) num_threads(threads)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t q1 = (b + 1) * block < M ? (b + 1) * block : M;
    const int dsa = pos != 0;
    const int64_t q0 = b * block;
    if (C == 16 && N == 2 && P == 4 && F == 32 && G == 2 && dsa) {  /* tiny's DSA */
      RUN(16, 2, 2, 4, 32, 1);
    } else if (C == 16 && N == 2 && P == 4 && F == 32 && G == 1 && !dsa) {  /* tiny's DCA and ICA */
      RUN(16, 2, 1, 4, 32, 0);
    } else {
      for (int64_t q = b * block; q < q1; ++q) query(&L, q, C, N, G, P, F, dsa);
    }
  }
}

/* The attention part of a layer for m queries whose projections are already computed (wider models,
   where the projections are GEMMs): proj (m, 3 N G P) rows, ref_x/ref_y (m) reference points in pixels,
   value (H * W, C) rows (float32, or bf16 when `bf16`), out (m, C) the sampled rows s. */
#define ATTEND_ROWS(...) do {                                                               \
    for (int64_t q = q0; q < q1; ++q) attend(proj + q * O, ref_x[q], ref_y[q], value, __VA_ARGS__, out + q * C); \
  } while (0)

void deform_attend(const float* proj, const float* ref_x, const float* ref_y, const void* value, int bf16,
                   float* out, int64_t m, int64_t C, int64_t N, int64_t G, int64_t P, int64_t H, int64_t W,
                   int threads) {
  const int64_t O = 3 * N * G * P, block = 256, blocks = (m + block - 1) / block;
  #pragma omp parallel for schedule(dynamic, 4) num_threads(threads)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t q0 = b * block, q1 = (b + 1) * block < m ? (b + 1) * block : m;
    /* monoocc_s: C = 128, 8 heads, 8 points; DSA with 2 queue groups, DCA/ICA with one */
    if (C == 128 && N == 8 && P == 8 && G == 2 && bf16) ATTEND_ROWS(1, H, W, 128, 8, 2, 8);
    else if (C == 128 && N == 8 && P == 8 && G == 2) ATTEND_ROWS(0, H, W, 128, 8, 2, 8);
    else if (C == 128 && N == 8 && P == 8 && G == 1 && bf16) ATTEND_ROWS(1, H, W, 128, 8, 1, 8);
    else if (C == 128 && N == 8 && P == 8 && G == 1) ATTEND_ROWS(0, H, W, 128, 8, 1, 8);
    else if (bf16) ATTEND_ROWS(1, H, W, C, N, G, P);
    else ATTEND_ROWS(0, H, W, C, N, G, P);
  }
}
"""

_FLAGS = ["-O3", "-march=native", "-mprefer-vector-width=512", "-fopenmp", "-fPIC", "-shared", "-fno-math-errno",
          "-fno-trapping-math"]


def _declare(lib: ctypes.CDLL) -> None:
    i64 = ctypes.c_int64
    lib.deform_layer.argtypes = [ctypes.c_void_p] * 18 + [i64] * 8 + [ctypes.c_float, ctypes.c_float, ctypes.c_int]
    lib.deform_layer.restype = None
    lib.deform_attend.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int, ctypes.c_void_p] + [i64] * 7 + [ctypes.c_int]
    lib.deform_attend.restype = None


_LIBRARY = NativeLibrary("layers", _SOURCE, _FLAGS, declare=_declare, fallback="the operator chain")
_state = _LIBRARY.state  # tests set _state["lib"] = None to run the operator chain


def supports(x: Tensor, num_points: int, ffn_dim: int, groups: int, num_heads: int) -> bool:
    """True when this kernel can run the layer: CPU float32 rows, sizes within the stack buffers,
    at most 64 channels per head, the library built, and not inside a trace or compile."""
    if in_graph_capture():
        return False
    C = x.shape[-1]
    ok = (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
          and C <= MAX_DIM and ffn_dim <= MAX_FFN and 3 * num_heads * groups * num_points <= MAX_PROJ
          and C % num_heads == 0)
    return ok and _LIBRARY.load() is not None


def _t(w: Tensor) -> Tensor:
    """(O, I) weight -> (I, O) contiguous float32 (the kernel's lanes run over outputs)."""
    return w.detach().t().contiguous().float()


def fused_layer(layer: nn.Module, sampler: nn.Module, x: Tensor, value: Tensor, map_hw: tuple[int, int],
                pixel_ref: Tensor, *, pos: Tensor | None = None, visible: Tensor | None = None,
                groups: int = 1) -> Tensor:
    """One post-norm deformable-attention layer (attention -> LN -> FFN -> LN) on query rows.

    Args:
        layer: the SelfAttentionLayer / CrossAttentionLayer (norm1, ffn, norm2, attn.output_proj).
        sampler: the module holding ``sampling_offsets``, ``attention_weights``, ``num_heads``,
            ``num_points`` (the DeformSelfAttention, or the DeformableSampler of a cross-attention).
        x: (M, C) float32 query rows.
        value: (H * W, C) value rows of the sampled map (``value_proj`` already applied).
        map_hw: (H, W).
        pixel_ref: (2, M) reference points in map pixels (pixel i centred at i).
        pos: (M, C) positional encoding: the projections then read [x, x + pos] (DSA).
        visible: (M,) bool; invisible queries do not sample (their attention output is the bias).
        groups: G softmax groups of P points per head (the DSA's queue copies; weights / G).

    Returns:
        (M, C) float32.
    """
    M, C = x.shape
    H, W = map_hw
    attn = layer.attn
    proj_w = torch.cat([sampler.sampling_offsets.weight, sampler.attention_weights.weight], 0)
    proj_b = torch.cat([sampler.sampling_offsets.bias, sampler.attention_weights.bias], 0).detach().float().contiguous()
    ffn = layer.ffn
    keep = [x.contiguous(), value.float().contiguous(), pixel_ref.float().contiguous(), _t(proj_w), proj_b,
            _t(attn.output_proj.weight), attn.output_proj.bias.detach().float().contiguous(),
            _t(ffn.fc1.weight), _t(ffn.fc2.weight)]
    x, value, pixel_ref, wp, bp, wo, bo, w1, w2 = keep
    pos = pos.float().contiguous() if pos is not None else None
    vis = visible.to(torch.uint8).contiguous() if visible is not None else None
    params = [p.detach().float().contiguous() for p in (layer.norm1.weight, layer.norm1.bias, ffn.fc1.bias,
                                                        ffn.fc2.bias, layer.norm2.weight, layer.norm2.bias)]
    g1, be1, b1, b2, g2, be2 = params
    N, P, F = sampler.num_heads, sampler.num_points, ffn.fc1.out_features
    O, Din = 3 * N * groups * P, (2 * C if pos is not None else C)
    # the C loop's stack buffers and the pointers it reads: refuse rather than read out of bounds
    if C > MAX_DIM or F > MAX_FFN or O > MAX_PROJ or C % N:
        raise ValueError(f"fused_layer: C={C}, ffn={F}, projections={O}, heads={N} exceed the kernel's buffers")
    shapes = {"x": (x, (M, C)), "value": (value, (H * W, C)), "pixel_ref": (pixel_ref, (2, M)), "wp": (wp, (Din, O)),
              "bp": (bp, (O,)), "wo": (wo, (C, C)), "bo": (bo, (C,)), "w1": (w1, (C, F)), "w2": (w2, (F, C)),
              "norm1.weight": (g1, (C,)), "norm1.bias": (be1, (C,)), "fc1.bias": (b1, (F,)), "fc2.bias": (b2, (C,)),
              "norm2.weight": (g2, (C,)), "norm2.bias": (be2, (C,))}
    if pos is not None:
        shapes["pos"] = (pos, (M, C))
    for name, (t, shape) in shapes.items():
        checked(name, t, shape)
    if vis is not None:
        checked("visible", vis, (M,), torch.uint8)
    out = torch.empty_like(x)

    def ptr(t: Tensor | None):
        return t.data_ptr() if t is not None else None

    _LIBRARY.load().deform_layer(
        ptr(x), ptr(pos), ptr(pixel_ref), ptr(vis), ptr(value), ptr(wp), ptr(bp), ptr(wo), ptr(bo),
        ptr(g1), ptr(be1), ptr(w1), ptr(b1), ptr(w2), ptr(b2), ptr(g2), ptr(be2), ptr(out),
        M, C, F, N, groups, P, H, W,
        float(layer.norm1.eps), float(layer.norm2.eps), torch.get_num_threads(),
    )
    return out


def attend_usable(value: Tensor, num_heads: int, num_points: int, groups: int) -> bool:
    """True when :func:`deform_attend` can run: CPU value rows in float32 or bf16, at most 64 channels
    per head and 256 points per query (its stack buffers), the library built, and not in a trace."""
    if in_graph_capture():
        return False
    return (value.device.type == "cpu" and value.dtype in (torch.float32, torch.bfloat16)
            and _attend_fits(value.shape[-1], num_heads, groups, num_points) and _LIBRARY.load() is not None)


def _attend_fits(C: int, N: int, G: int, P: int) -> bool:
    """C channels split into N heads of at most 64 (attend's accumulators) and N * G * P points within
    its stack buffers (MAX_PROJ / 3)."""
    return C % N == 0 and C // N <= 64 and 3 * N * G * P <= MAX_PROJ


def deform_attend(proj: Tensor, pixel_ref: Tensor, value: Tensor, map_hw: tuple[int, int], num_heads: int,
                  groups: int, num_points: int) -> Tensor:
    """Softmax, bilinear sampling and the weighted sum of a deformable attention, from projections.

    Args:
        proj: (m, 3 N G P) float32 rows: the sampling offsets (N, G, P, 2) in map pixels, then the
            attention logits (N, G, P) (``[sampling_offsets; attention_weights]`` applied to the queries).
        pixel_ref: (2, m) reference points in map pixels (pixel i centred at i).
        value: (H * W, C) value rows, float32 or bf16 (accumulated in float32).
        map_hw: (H, W).

    Returns:
        (m, C) float32: each head's samples weighted by the softmax over its group's P points divided by
        the G groups, summed over points (zeros outside the map), as ``sample_weighted``.
    """
    m = proj.shape[0]
    H, W = map_hw
    C, N, G, P = value.shape[-1], num_heads, groups, num_points
    if not _attend_fits(C, N, G, P):
        raise ValueError(f"deform_attend: C={C}, heads={N}, points={G * P} exceed the kernel's buffers")
    proj = checked("proj", proj.contiguous(), (m, 3 * N * G * P))
    ref = checked("pixel_ref", pixel_ref.float().contiguous(), (2, m))
    value = checked("value", value.contiguous(), (H * W, C), value.dtype if value.dtype == torch.bfloat16 else torch.float32)
    out = torch.empty(m, C, dtype=torch.float32)
    _LIBRARY.load().deform_attend(
        proj.data_ptr(), ref.data_ptr(), ref[1].data_ptr(), value.data_ptr(), int(value.dtype == torch.bfloat16),
        out.data_ptr(), m, C, N, G, P, H, W, torch.get_num_threads(),
    )
    return out
