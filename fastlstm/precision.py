"""Weight precisions: what is stored, and how float32 weights are converted once.

- fp32: float32 weights.
- bf16: bfloat16 weights (round to nearest even), kept as their uint16 bits;
  widened to float32 in registers (or multiplied on AMX tiles), products
  accumulated in float32.
- int8: symmetric int8 weights with one float32 scale per output row
  (max |w| of the row / 127); the recurrent input h is quantized per row and step
  (max |h| / 127) so the recurrent product is an exact integer sum (vpdpbusd on
  AVX512-VNNI, vpmaddubsw on AVX2); the input projection quantizes each row of x
  the same way (kernels/fastlstm_simd.h, fl_project_q8_rows); biases and the cell
  state stay float32.
bf16's input projection multiplies x as the sum of its two leading bf16 parts (16
significant bits) in calls of fewer than 16 sequences, and x rounded to bf16 (one
part, as the peers do) from 16 (kernels/fastlstm_simd.h, FL_X_PARTS).
Peephole weights, biases and states are float32 in every precision.
"""

import numpy as np

PRECISIONS = ("fp32", "bf16", "int8")


def check_precision(precision):
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    return precision


def bf16_bits(weight):
    """float32 array -> uint16 bfloat16 bits, rounded to nearest even (NaN stays NaN)."""
    bits = np.ascontiguousarray(weight, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    nan = np.isnan(weight)
    if nan.any():
        rounded = np.where(nan, (bits >> np.uint32(16)) | np.uint32(0x40), rounded)
    return rounded.astype(np.uint16)


def bf16_to_float32(bits):
    """uint16 bfloat16 bits -> float32."""
    return (np.asarray(bits, dtype=np.uint32) << np.uint32(16)).view(np.float32)


def bf16_parts(weight, n_parts):
    """float32 array -> (n_parts, *shape) uint16 bfloat16 bits whose values sum to it:
    part 0 rounds the weight to nearest even, each next part the rest.  Three parts take
    all 24 bits of a normal float's mantissa."""
    rest = np.array(weight, dtype=np.float32)
    parts = np.empty((n_parts,) + rest.shape, np.uint16)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: no sum exists
        for p in range(n_parts):
            parts[p] = bf16_bits(rest)
            rest -= bf16_to_float32(parts[p])
    return parts


def int8_rows(weight):
    """(N, K) float32 -> (q (N, K) int8, scale (N,) float32) with w ~= q * scale[:, None]."""
    weight = np.asarray(weight, dtype=np.float32)
    peak = np.max(np.abs(weight), axis=1) if weight.shape[1] else np.zeros(weight.shape[0], np.float32)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(weight / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


def rounded(weight, precision):
    """The float32 values a weight takes after conversion to ``precision``."""
    if precision == "bf16":
        return bf16_to_float32(bf16_bits(weight))
    if precision == "int8":
        q, scale = int8_rows(weight)
        return q.astype(np.float32) * scale[:, None]
    return np.asarray(weight, dtype=np.float32)
