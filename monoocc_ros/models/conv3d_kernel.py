"""A direct C convolution for few channels: the proposal network's ASPP head (3D) and its 2D
encoder and decoder convolutions, at inference.

oneDNN's 2D convolutions with few channels run far below this CPU's FLOP rate, and PyTorch's CPU
Conv3d with few channels is a reference loop. This kernel walks one output row (one (d, h), every
output channel) at a time: the input rows of the kd x kh taps that exist are copied once into
zero-padded buffers, and 16 * S output voxels at a time accumulate every tap, input channel and kw
shift in Cout * S vector registers. Zero padding, dilation and bias as ``nn.Conv3d`` / ``nn.Conv2d``
(stride 1, same size; up to 64 input and 16 output channels), optionally followed by ReLU at the
store; fp32, summation order differs.

Compiled on first use like :mod:`cpu_kernels` (``MONOOCC_FUSED_KERNELS=0`` or no compiler: None,
and :func:`~monoocc_ros.models.proposals.conv3d_on_slices` uses oneDNN instead).
"""

from __future__ import annotations

import ctypes
import math

import torch
from torch import Tensor, nn

from monoocc_ros.models.cpu_kernels import checked
from monoocc_ros.native import NativeLibrary, in_graph_capture

__all__ = ["supports", "supports_2d", "conv3d_slices", "conv2d", "MAX_CHANNELS", "MAX_IN_CHANNELS"]

MAX_CHANNELS, MAX_IN_CHANNELS, MAX_WIDTH, MAX_TAPS, MAX_ROWS = 16, 64, 4096, 16, 4096

_SOURCE = r"""
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ROWS 4096
#define L 16  /* output voxels along W per vector: one vector of accumulators per output channel and step */

/* One output row: rows[t * Cin + ci] are the zero-padded input rows of the n valid (z, y) taps;
   wt: (n taps of kd*kh, Cin, kw, Cout) with the taps' weights; any Cout, scalar loops the compiler
   vectorises (the accumulators may live in memory). */
static void row_pass_any(const float* const* rows, const float* const* wt, int64_t n, int64_t Cin, int64_t kw,
    int64_t dw, const int64_t Cout, const float* b, int relu, int64_t W, int64_t H, float* out) {
  for (int64_t x0 = 0; x0 < W; x0 += L) {
    float acc[Cout][L];
    for (int64_t co = 0; co < Cout; ++co)
      for (int j = 0; j < L; ++j) acc[co][j] = b ? b[co] : 0.f;
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t ci = 0; ci < Cin; ++ci) {
        const float* r = rows[t * Cin + ci] + x0;
        const float* w = wt[t] + ci * kw * Cout;
        for (int64_t ix = 0; ix < kw; ++ix) {
          const float* v = r + ix * dw;
          for (int64_t co = 0; co < Cout; ++co) {
            const float wc = w[ix * Cout + co];
            #pragma omp simd
            for (int j = 0; j < L; ++j) acc[co][j] += wc * v[j];
          }
        }
      }
    }
    const int64_t m = W - x0 < L ? W - x0 : L;
    for (int64_t co = 0; co < Cout; ++co)
      for (int64_t j = 0; j < m; ++j) out[co * H * W + x0 + j] = relu && acc[co][j] < 0.f ? 0.f : acc[co][j];
  }
}

#ifdef __AVX512F__
#include <immintrin.h>
/* The same for a constant Cout, S vectors (16 * S voxels) per step: Cout * S accumulators held in
   registers. With one vector per channel the compiler kept them in memory, and every FMA waited on
   a store and a reload of the one before it (6 ms for a 4 -> 4 layer on 128x128x16 instead of 2). */
static inline __attribute__((always_inline)) void row_pass_reg(const float* const* rows, const float* const* wt,
    int64_t n, int64_t Cin, int64_t kw, int64_t dw, const int Cout, const int S, const float* b, int relu, int64_t W,
    int64_t H, float* out) {
  for (int64_t x0 = 0; x0 < W; x0 += L * S) {
    __m512 acc[16][8];
    for (int co = 0; co < Cout; ++co)
      for (int s = 0; s < S; ++s) acc[co][s] = _mm512_set1_ps(b ? b[co] : 0.f);
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t ci = 0; ci < Cin; ++ci) {
        const float* r = rows[t * Cin + ci] + x0;
        const float* w = wt[t] + ci * kw * Cout;
        for (int64_t ix = 0; ix < kw; ++ix) {
          __m512 v[8];
          for (int s = 0; s < S; ++s) {
            v[s] = _mm512_loadu_ps(r + ix * dw + s * L);
            /* keep the row in a register: otherwise GCC re-reads it (a line-crossing load) in each FMA */
            __asm__("" : "+v"(v[s]));
          }
          for (int co = 0; co < Cout; ++co) {
            const __m512 wc = _mm512_set1_ps(w[ix * Cout + co]);
            for (int s = 0; s < S; ++s) acc[co][s] = _mm512_fmadd_ps(wc, v[s], acc[co][s]);
          }
        }
      }
    }
    for (int s = 0; s < S; ++s) {
      const int64_t x = x0 + s * L;
      if (x >= W) break;
      const __mmask16 m = W - x >= L ? (__mmask16)0xFFFF : (__mmask16)((1u << (W - x)) - 1u);
      for (int co = 0; co < Cout; ++co)
        _mm512_mask_storeu_ps(out + co * H * W + x, m, relu ? _mm512_max_ps(acc[co][s], _mm512_setzero_ps()) : acc[co][s]);
    }
  }
}
#define MAX_STEPS 8
#else
#define MAX_STEPS 1
#endif

static void row_pass(const float* const* rows, const float* const* wt, int64_t n, int64_t Cin, int64_t kw,
    int64_t dw, int64_t Cout, const float* b, int relu, int64_t W, int64_t H, float* out) {
#ifdef __AVX512F__
  switch (Cout) {  /* Cout * S = 16 accumulators, S loaded rows and a weight: 18-25 of 32 registers */
    case 1: row_pass_reg(rows, wt, n, Cin, kw, dw, 1, 8, b, relu, W, H, out); return;
    case 2: row_pass_reg(rows, wt, n, Cin, kw, dw, 2, 8, b, relu, W, H, out); return;
    case 4: row_pass_reg(rows, wt, n, Cin, kw, dw, 4, 4, b, relu, W, H, out); return;
    case 8: row_pass_reg(rows, wt, n, Cin, kw, dw, 8, 2, b, relu, W, H, out); return;
    case 16: row_pass_reg(rows, wt, n, Cin, kw, dw, 16, 1, b, relu, W, H, out); return;
    default: break;
  }
#endif
  row_pass_any(rows, wt, n, Cin, kw, dw, Cout, b, relu, W, H, out);
}

/* x: (D, Cin, H, W) slices of one volume; w: (kd, kh, Cin, kw, Cout); b: (Cout) or NULL;
   out: (D, Cout, H, W), max(0, .) of it when relu. Output rows (d, h) over `threads` OpenMP threads. */
void conv3d_slices(const float* x, const float* w, const float* b, float* out, int64_t D, int64_t Cin,
                   int64_t H, int64_t W, int64_t Cout, int64_t kd, int64_t kh, int64_t kw,
                   int64_t dd, int64_t dh, int64_t dw, int64_t pd, int64_t ph, int64_t pw, int relu, int threads) {
  /* a padded row, rounded up past the last step's reads: x0 + L * MAX_STEPS - 1 + 2 * pw */
  const int64_t stride = ((W + 2 * pw + L - 1) / L + MAX_STEPS) * L;
  #pragma omp parallel num_threads(threads)
  {
    float* pad = (float*)calloc((size_t)(kd * kh * Cin * stride), sizeof(float));
    const float* rows[MAX_ROWS];  /* kd * kh * Cin, bounded by the wrapper */
    const float* wt[16 * 16];
    #pragma omp for schedule(static)
    for (int64_t row = 0; row < D * H; ++row) {
      const int64_t d = row / H, h = row % H;
      int64_t n = 0;
      for (int64_t iz = 0; iz < kd; ++iz) {
        const int64_t sd = d + iz * dd - pd;
        if (sd < 0 || sd >= D) continue;
        for (int64_t iy = 0; iy < kh; ++iy) {
          const int64_t sh = h + iy * dh - ph;
          if (sh < 0 || sh >= H) continue;
          for (int64_t ci = 0; ci < Cin; ++ci) {
            float* dst = pad + (n * Cin + ci) * stride;  /* zeros stay in the pads: only the middle is written */
            memcpy(dst + pw, x + ((sd * Cin + ci) * H + sh) * W, W * sizeof(float));
            rows[n * Cin + ci] = dst;
          }
          wt[n++] = w + (iz * kh + iy) * Cin * kw * Cout;
        }
      }
      float* o = out + (d * Cout * H + h) * W;
      row_pass(rows, wt, n, Cin, kw, dw, Cout, b, relu, W, H, o);
    }
    free(pad);
  }
}
"""

_FLAGS = ["-O3", "-march=native", "-mprefer-vector-width=512", "-fopenmp", "-fPIC", "-shared", "-fno-math-errno"]


def _declare(lib: ctypes.CDLL) -> None:
    lib.conv3d_slices.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 14 + [ctypes.c_int, ctypes.c_int]
    lib.conv3d_slices.restype = None


_LIBRARY = NativeLibrary("conv3d", _SOURCE, _FLAGS, declare=_declare, fallback="oneDNN Conv2d on slices")
_state = _LIBRARY.state  # tests set _state["lib"] = None to run the fallback


def _supported(x: Tensor, conv: nn.Conv2d | nn.Conv3d) -> bool:
    """The checks shared by 2D and 3D: CPU float32 outside autocast, trace and compile; few channels;
    stride 1, same size; at most 16 taps per axis and MAX_ROWS padded input rows per output row."""
    if in_graph_capture() or torch.is_autocast_enabled("cpu"):
        return False
    rows = conv.in_channels * math.prod(conv.kernel_size[:-1])  # padded input rows of one output row
    return (x.device.type == "cpu" and x.dtype == torch.float32 and conv.weight.dtype == torch.float32
            and conv.in_channels <= MAX_IN_CHANNELS and conv.out_channels <= MAX_CHANNELS and conv.groups == 1
            and all(s == 1 for s in conv.stride) and x.shape[-1] <= MAX_WIDTH and max(conv.kernel_size) <= MAX_TAPS
            and rows <= MAX_ROWS and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
            and all(2 * p == d * (k - 1) for p, d, k in zip(conv.padding, conv.dilation, conv.kernel_size))
            and _LIBRARY.load() is not None)


def supports(x: Tensor, conv: nn.Conv3d) -> bool:
    """True when the kernel runs ``conv`` on ``x``: CPU float32, few channels, stride 1, same size,
    at most 16 taps per axis, the library built, and not inside a trace or compile."""
    return isinstance(conv, nn.Conv3d) and _supported(x, conv)


def supports_2d(x: Tensor, conv: nn.Conv2d) -> bool:
    """:func:`supports` for a ``Conv2d`` on (B, Cin, H, W) (up to 64 input channels)."""
    return isinstance(conv, nn.Conv2d) and x.dim() == 4 and _supported(x, conv)


def _run(x: Tensor, weight: Tensor, bias: Tensor | None, dilation: tuple[int, int, int], padding: tuple[int, int, int],
         depth: int, relu: bool) -> Tensor:
    """The C loop on (B * depth, Cin, H, W) slices with a (Cout, Cin, kd, kh, kw) weight."""
    BD, cin, H, W = x.shape
    cout, _, kd, kh, kw = weight.shape
    x = checked("x", x.contiguous(), (BD, cin, H, W))
    # (Cout, Cin, kd, kh, kw) -> (kd, kh, Cin, kw, Cout): per tap and input channel, kw x Cout weights
    weight = checked("weight", weight.detach().permute(2, 3, 1, 4, 0).contiguous(), (kd, kh, cin, kw, cout))
    bias = checked("bias", bias.detach().contiguous(), (cout,)) if bias is not None else None
    out = torch.empty(BD, cout, H, W, dtype=torch.float32)
    lib = _LIBRARY.load()
    per_volume = depth * cin * H * W
    for v in range(BD // depth):
        lib.conv3d_slices(
            x.data_ptr() + 4 * v * per_volume, weight.data_ptr(), bias.data_ptr() if bias is not None else None,
            out.data_ptr() + 4 * v * depth * cout * H * W, depth, cin, H, W, cout,
            kd, kh, kw, *dilation, *padding, int(relu), torch.get_num_threads(),
        )
    return out


def conv3d_slices(x: Tensor, conv: nn.Conv3d, depth: int, relu: bool = False,
                  folded: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """``conv`` (then ReLU when ``relu``) on volumes held as depth slices.

    Args:
        folded: (weight, bias) to use instead of the conv's own (a norm folded in by the caller).

    Shapes:
        x (B * D, Cin, H, W), slices of each volume consecutive -> (B * D, Cout, H, W)
    """
    # the C loop's buffers and pointer arithmetic (4-byte floats): refuse rather than read out of bounds
    if not supports(x, conv) or x.shape[0] % depth:
        raise ValueError(f"conv3d_slices: the kernel cannot run {conv} on {x.dtype} slices {tuple(x.shape)} "
                         f"of depth {depth} (see conv3d_kernel.supports)")
    weight, bias = folded if folded is not None else (conv.weight, conv.bias)
    return _run(x, weight, bias, conv.dilation, conv.padding, depth, relu)


def conv2d(x: Tensor, conv: nn.Conv2d, relu: bool = False) -> Tensor:
    """``conv`` (then ReLU when ``relu``): a 2D convolution is a 3D one of depth 1 with one depth tap.

    Shapes:
        x (B, Cin, H, W) -> (B, Cout, H, W)
    """
    if not supports_2d(x, conv):
        raise ValueError(f"conv2d: the kernel cannot run {conv} on {x.dtype} {tuple(x.shape)} (see conv3d_kernel.supports_2d)")
    return _run(x, conv.weight[:, :, None], conv.bias, (1, *conv.dilation), (0, *conv.padding), 1, relu)
