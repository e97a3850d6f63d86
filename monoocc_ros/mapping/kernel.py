"""C kernels of :meth:`monoocc_ros.mapping.SemanticMap.integrate`: the footprint's columns and the
per-voxel fusion in one pass each.

The numpy path of the map walks the frame's 2 M voxels through about twenty gathers and scatters
(observation codes, comparison with ``sat``, index lists, then one gather and one scatter per state
array). This kernel walks the footprint's map columns once, computes each voxel's observation code
on the fly and updates the state in place: the same float32 / float16 operations in the same
order (compiled with ``-ffp-contract=off``, so no fused multiply-add changes a rounding).

Only the decay factor ``exp`` is left to numpy: numpy's SIMD ``exp`` and the C library's ``expf``
differ in the last bit for a third of the inputs. The pass defers the voxels whose evidence decays
(a few thousand: movable classes with positive evidence), writing their exponents and indices;
numpy exponentiates them, and a second call updates just those. Each map voxel is fed by one grid
voxel, so the order does not matter and the result is bit-identical to the numpy path
(``test/mapping/test_map_kernel.py``).

Built on first use with the system compiler through :mod:`monoocc_ros.native`, like the inference
kernels (same cache directory and ``MONOOCC_FUSED_KERNELS=0`` switch, no torch import); where it
cannot be built :func:`load` returns None and the map uses numpy.
"""

from __future__ import annotations

import ctypes

from monoocc_ros.native import NativeLibrary

__all__ = ["load", "kernel_status"]

_SOURCE = r"""
#include <math.h>
#include <stdint.h>

/* mapping/semantic_map.py SemanticMap._columns after its bounding box: every map column (wi, wj) of the box whose
   centre falls in a grid column, with that grid column and the map layer of the grid's layer 0; the
   same double operations in the same order. Returns the number of columns written. */
int64_t map_columns(int64_t i0, int64_t i1, int64_t j0, int64_t j1, double vs, double t0, double t1,
                    double t2, double c, double s, double ox, double oy, double zterm, double r20,
                    double r21, int64_t gx, int64_t gy, int64_t X, int64_t Y, int64_t lo2,
                    int64_t* ring_col, int64_t* src_col, int64_t* offset) {
  int64_t n = 0;
  for (int64_t wi = i0; wi < i1; ++wi) {
    const double cx = ((double)wi + 0.5) * vs - t0;
    const double a = c * cx, b = -s * cx;
    const int64_t ri = ((wi % X) + X) % X;  /* floor modulo, as numpy's % */
    for (int64_t wj = j0; wj < j1; ++wj) {
      const double cy = ((double)wj + 0.5) * vs - t1;
      const int64_t gi = (int64_t)floor((a + s * cy - ox) / vs);
      const int64_t gj = (int64_t)floor((b + c * cy - oy) / vs);
      if (gi < 0 || gi >= gx || gj < 0 || gj >= gy) continue;
      const double xg = ox + ((double)gi + 0.5) * vs;
      const double yg = oy + ((double)gj + 0.5) * vs;
      const double z0 = r20 * xg + r21 * yg + zterm + t2;
      ring_col[n] = ri * Y + (((wj % Y) + Y) % Y);
      src_col[n] = gi * gy + gj;
      offset[n] = (int64_t)floor(z0 / vs) - lo2;
      ++n;
    }
  }
  return n;
}

typedef struct {
  const uint8_t* labels; const uint8_t* conf; float* logodds; uint8_t* label; _Float16* votes;
  float* stamp; uint8_t* sat; const uint8_t* static_code; const float* weight_lut; const float* step_lut;
  float min_lo, max_lo, max_votes, now;
} Map;

/* The update of map voxel d from grid voxel s (mapping/semantic_map.py SemanticMap._update, same operations). */
static inline void update(const Map* m, int64_t s, int64_t d, int dec, float factor) {
  uint8_t cur = m->label[d];
  float lo = m->logodds[d];
  if (dec) lo *= factor;
  const uint8_t lab = m->labels[s];
  const float w = m->conf ? m->weight_lut[m->conf[s]] : 1.f;
  lo += m->step_lut[lab] * w;
  lo = lo < m->min_lo ? m->min_lo : (lo > m->max_lo ? m->max_lo : lo);
  if (lab != 0) {  /* EMPTY == 0: the class vote of an occupied observation */
    float v = cur == 0 ? 0.f : (float)m->votes[d];
    v += cur == lab ? w : -w;
    if (v < 0.f) cur = lab;
    const float a = v < 0.f ? -v : v;
    m->votes[d] = (_Float16)(a < m->max_votes ? a : m->max_votes);
  }
  if (lo <= 0.f) cur = 0;
  uint8_t st = m->static_code[cur];
  if (lo < m->max_lo) st = 0;
  if (lo <= m->min_lo) st = 0xE0;
  m->logodds[d] = lo;
  m->label[d] = cur;
  m->sat[d] = st;
  m->stamp[d] = m->now;
}

/* mode 0: one pass over the footprint's map columns (grid column src_col[c], gz layers from
   src_col[c] * gz; map column ring_col[c], grid layer k in map layer k + offset[c]); voxels whose
   evidence must decay first are deferred: their exponent goes to buf, their (s, d) to defer.
   *n_defer = their count. mode 1: update the n_defer deferred voxels with the factors in buf.
   Returns the number of voxels updated. */
int64_t map_fuse(int mode, const uint8_t* labels, const uint8_t* conf, const uint8_t* mask,
                 const uint8_t* obs_lut, const int64_t* ring_col, const int64_t* src_col,
                 const int64_t* offset, int64_t C, int64_t gz, int64_t Z,
                 float* logodds, uint8_t* label, _Float16* votes, float* stamp, uint8_t* sat,
                 const uint8_t* decays, const float* inv_tau, const uint8_t* static_code,
                 const float* weight_lut, const float* step_lut, float min_lo, float max_lo,
                 float max_votes, float now, float* buf, int64_t* defer, int64_t* n_defer) {
  const Map m = {labels, conf, logodds, label, votes, stamp, sat, static_code, weight_lut, step_lut,
                 min_lo, max_lo, max_votes, now};
  if (mode == 1) {
    for (int64_t i = 0; i < *n_defer; ++i) update(&m, defer[2 * i], defer[2 * i + 1], 1, buf[i]);
    return *n_defer;
  }
  int64_t n = 0, nd = 0;
  for (int64_t c = 0; c < C; ++c) {
    const int64_t o = offset[c];
    const int64_t k0 = o < 0 ? -o : 0;
    const int64_t k1 = gz < Z - o ? gz : Z - o;
    const int64_t sbase = src_col[c] * gz, dbase = ring_col[c] * Z + o;
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t s = sbase + k, d = dbase + k;
      const uint8_t go = obs_lut[labels[s]] & mask[s];
      if (go == 0 || go == sat[d]) continue;
      const uint8_t cur = label[d];
      if (decays[cur] && logodds[d] > 0.f) {
        buf[nd] = (stamp[d] - now) * inv_tau[cur];
        defer[2 * nd] = s;
        defer[2 * nd + 1] = d;
        ++nd;
        continue;
      }
      update(&m, s, d, 0, 1.f);
      ++n;
    }
  }
  *n_defer = nd;
  return n;
}
"""

_FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fPIC", "-shared"]
def _declare(lib: ctypes.CDLL) -> None:
    p, i64, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
    lib.map_fuse.argtypes = [ctypes.c_int] + [p] * 7 + [i64] * 3 + [p] * 10 + [f32] * 4 + [p] * 3
    lib.map_fuse.restype = i64
    f64 = ctypes.c_double
    lib.map_columns.argtypes = [i64] * 4 + [f64] * 11 + [i64] * 5 + [p] * 3
    lib.map_columns.restype = i64


_LIBRARY = NativeLibrary("map", _SOURCE, _FLAGS, declare=_declare, fallback="numpy")
load = _LIBRARY.load


def kernel_status() -> str:
    """One line saying whether the C kernel or numpy fuses the map."""
    return _LIBRARY.status()
