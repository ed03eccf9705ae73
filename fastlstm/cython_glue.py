"""Glue of the Cython backend: the blocked layout, workspaces and dispatch.

Blocked layout: hidden units in blocks of 16; a block's weights are (K, G, 16)
contiguous (gates of each unit adjacent across the block), padded with zero
units to a multiple of 16.  The input projection writes its output in the same
blocked order, so the recurrent kernel reads its 16-unit gate slices with
plain vector loads and updates h and c while the gates are in registers.

Rows are sorted longest first, so at every step the running sequences are a
prefix of the batch and the kernels simply run fewer rows.
"""

import os
import threading
from dataclasses import dataclass

import numpy as np

from ._aligned import aligned, aligned_empty, aligned_zeros
from .kernels import cython_isa
from .layout import sort_by_length
from .params import GATES
from .precision import bf16_bits, bf16_parts, bf16_to_float32, int8_rows
from .threads import get_num_threads
from .variants import Variant

NAME = "cython"
_kernels = cython_isa.load()
ISA = _kernels.ISA
UNITS = _kernels.UNITS_PER_BLOCK
_MODE = {"LSTM": _kernels.LSTM, "GRU": _kernels.GRU,
         "RNN_TANH": _kernels.RNN_TANH, "RNN_RELU": _kernels.RNN_RELU}
_DUMMY_MATRIX = np.zeros((1, 1), np.float32)
# int8 on AVX512-VNNI uses vpdpbusd; FASTLSTM_VNNI=0 forces the portable path
# (same results: both compute exact integer sums).
_USE_VNNI = os.environ.get("FASTLSTM_VNNI", "1") != "0"
# On AMX tiles where the CPU has AMX-BF16/INT8: bf16 recurrent products at any batch,
# int8's at >= 16 rows, and the input projection at >= 16 rows; fp32 as six bf16
# products (fp32 accuracy) at >= 32 rows (recurrent) and >= 64 (projection).
# FASTLSTM_AMX=0 forces the AVX-512 paths.  The weights are also packed in the tiles'
# order only on such CPUs.
_AMX_CPU = _kernels.cpu_supports_amx()
_USE_AMX = os.environ.get("FASTLSTM_AMX", "1") != "0"
# bf16 off the tiles (no AMX, or FASTLSTM_AMX=0) on AVX512-BF16: recurrent products on
# vdpbf16ps, with w_hh in pair order; FASTLSTM_BF16DP=0 forces the portable path
# (weights widened to fp32, the same h rounding: results differ by fp32 rounding).
_BF16DP_CPU = _kernels.cpu_supports_bf16dp()
_USE_BF16DP = os.environ.get("FASTLSTM_BF16DP", "1") != "0"
AMX_ROWS, AMX_PARTS, AMX_X_PARTS = _kernels.AMX_ROWS, _kernels.AMX_PARTS, _kernels.AMX_X_PARTS
# fuses_input from this many sequences a call.  bf16 LSTM 256/256, 100 steps, 1 thread,
# median ms, fused vs a projection of every step first: batch 32 5.6 vs 5.5, 48 9.4 vs
# 8.8 (fused pads x's rows to 64 for the tiles), 64 11.1-11.3 vs 12.4-12.7, 80 15.2 vs
# 17.3, 96 18.2 vs 21.1, 128 22.1 vs 27.1; LSTM 512/512 batch 64 42.0 vs 48.9, 128/128
# 4.0 vs 5.0, RNN 256 3.6 vs 3.8; 2 threads (batch halves) LSTM 256 6.1 vs 6.3.
_FUSED_MIN_BATCH = 64

# Threads pay off once a step does enough work to cover the barrier.  Measured with
# 2 threads vs 1 on an LSTM H/H, batch 1, 100 steps (idle machine, ms): H=48 (18
# kflop a step) 0.067 vs 0.051, slower; H=64 (33 kflop) 0.083 vs 0.087, level; H=96
# (74 kflop) 0.133 vs 0.169 and H=128 (lat_small, 131 kflop) 0.209 vs 0.276, faster.
_MIN_FLOPS_PER_THREAD_STEP = 2 * 64 * 256


@dataclass(frozen=True)
class CythonDirection:
    # weights are float32, uint16 (bfloat16 bits) or int8, per the layer's precision
    w_hh: np.ndarray  # (n_blk, H_out, G*16); (n_blk, H, 32) r, z only for the original GRU
    w_hr: np.ndarray  # (n_pblk, H, 16), or a dummy without projection
    b_hn: np.ndarray  # (n_blk*16,)
    peep: np.ndarray  # (n_blk, 3, 16) peepholes i, f, o, or None
    w_hn: np.ndarray  # (n_blk, H, 16) original GRU's new-gate weights, or a dummy
    scale_hh: np.ndarray  # int8 column scales of w_hh (n_blk*G*16,), else None
    scale_hr: np.ndarray
    scale_hn: np.ndarray
    wq: np.ndarray        # int8: w_hh in VNNI order (n_blk, K4, G*16, 4), else None
    wsum: np.ndarray      # int8: its column sums (n_blk, G*16) int32, else None
    # on AMX CPUs, w_hh in pair order (n_blk, Q*K2, G*16, 2): bf16 (Q = 1), or fp32 as
    # Q = AMX_PARTS bf16 parts that sum to it; else None
    wp: np.ndarray


@dataclass(frozen=True)
class CythonLayer:
    w_ih: np.ndarray  # (D*n_blk, I, G*16): every direction's input weights, blocked
    bias: np.ndarray  # (D*n_blk*G*16,)
    directions: tuple
    variant: Variant
    scale_ih: np.ndarray  # int8 column scales of w_ih, else None
    w_ih_pairs: np.ndarray  # bf16/fp32 on AMX CPUs: w_ih in pair order, else None
    w_ih_q: np.ndarray    # int8: w_ih in VNNI order (D*n_blk, K4, G*16, 4), else None
    w_ih_sum: np.ndarray  # int8: its column sums (D*n_blk, G*16) int32, else None


def _n_blocks(units):
    return -(-units // UNITS)


def _blocked_rows(gates, hidden):
    """Original row (g*H + unit) of each blocked column, -1 for padding units."""
    n_blk = _n_blocks(hidden)
    units = np.arange(n_blk * UNITS).reshape(n_blk, 1, UNITS)
    rows = np.arange(gates).reshape(1, gates, 1) * hidden + units
    return np.where(units < hidden, rows, -1).reshape(-1)


def _gather(array, rows):
    """array[rows] with zeros where rows == -1 (padding)."""
    padded = np.concatenate([array, np.zeros((1,) + array.shape[1:], array.dtype)])
    return padded[rows]


def _blocks(weight, gates, hidden):
    """(G*H, K) -> (n_blk, K, G*16) C-contiguous, same dtype."""
    n_blk = _n_blocks(hidden)
    rows = _gather(weight, _blocked_rows(gates, hidden))  # (n_blk*G*16, K)
    blocked = rows.reshape(n_blk, gates * UNITS, weight.shape[1]).transpose(0, 2, 1)
    return aligned(np.ascontiguousarray(blocked))


_WEIGHT_DTYPE = {"fp32": np.float32, "bf16": np.uint16, "int8": np.int8}
_DUMMY = {precision: np.zeros((1, 1, UNITS), dtype) for precision, dtype in _WEIGHT_DTYPE.items()}


def _bf16_pair_order(blocked, width):
    """bf16 bits (..., W) -> the same shape, each run of 2*width along W stored as pairs
    (i, width + i); width 0: unchanged."""
    if not width:
        return blocked
    runs = blocked.reshape(-1, 2, width).transpose(0, 2, 1)
    return aligned(np.ascontiguousarray(runs).reshape(blocked.shape))


def _typed_blocks(weight, gates, hidden, precision):
    """(G*H, K) float32 -> (blocked weights in ``precision``, int8 column scales or None)."""
    weight = np.asarray(weight, dtype=np.float32)
    if precision == "bf16":
        # the build's pair order (kernels/fastlstm_simd.h, FL_BF16_PAIRED): narrow builds,
        # which have neither AMX nor vdpbf16ps, so _tile_weights never sees it
        width = _kernels.bf16_pair_width()
        return _bf16_pair_order(_blocks(bf16_bits(weight), gates, hidden), width), None
    if precision == "int8":
        q, scale = int8_rows(weight)
        scale = np.ascontiguousarray(_gather(scale, _blocked_rows(gates, hidden)), np.float32)
        return _blocks(q, gates, hidden), scale
    return _blocks(weight, gates, hidden), None


def _blocked_vectors(vectors, hidden):
    """(V, H) per-unit vectors -> (n_blk, V, 16), zero-padded."""
    padded = _gather(vectors.T, _blocked_rows(1, hidden))  # (n_blk*16, V)
    blocked = padded.reshape(_n_blocks(hidden), UNITS, vectors.shape[0]).transpose(0, 2, 1)
    return np.ascontiguousarray(blocked, dtype=np.float32)


def _k_groups(blocked, group, k_multiple):
    """(n_blk, K, W) -> (n_blk, Kp/group, W, group), K zero-padded to Kp, a multiple of
    k_multiple: ``group`` consecutive k of a column adjacent, as vpdpbusd, vdpbf16ps and
    the AMX tiles read them."""
    n_blk, k_dim, width = blocked.shape
    padded = np.zeros((n_blk, -(-k_dim // k_multiple) * k_multiple, width), blocked.dtype)
    padded[:, :k_dim] = blocked
    groups = padded.reshape(n_blk, -1, group, width).transpose(0, 1, 3, 2)
    return aligned(np.ascontiguousarray(groups))


def _vnni_order(blocked):
    """int8 (n_blk, K, W) -> ((n_blk, K4, W, 4) with K zero-padded to a multiple of 64 (an
    AMX tile row), column sums (n_blk, W) int32)."""
    return _k_groups(blocked, 4, 64), aligned(blocked.sum(axis=1, dtype=np.int32))


def _pair_order(blocked):
    """bf16 bits or int8 (n_blk, K, W) -> bf16 bits (n_blk, K2, W, 2), K zero-padded to a
    multiple of 32 (an AMX tile row); int8 values are exact in bf16."""
    if blocked.dtype == np.int8:
        blocked = bf16_bits(blocked.astype(np.float32))
    return _k_groups(blocked, 2, 32)


def _tile_weights(blocked, precision, input_weights=False):
    """Weights (n_blk, K, W) in the AMX tiles' pair order where this CPU has them: bf16
    as they are; fp32 as AMX_PARTS bf16 parts summing to them, stacked on axis 1 (so 1.5x
    their bytes more), unless a weight is not the sum of its parts (inf, NaN, near
    float32's limit), when fp32 stays on FMAs.  bf16 recurrent weights also where
    vdpbf16ps reads the same order.  Else None (int8: its products are integer tiles,
    wq)."""
    if precision == "bf16" and not input_weights and _BF16DP_CPU:
        return _pair_order(blocked)
    if not _AMX_CPU or precision == "int8":
        return None
    if precision != "fp32":
        return _pair_order(blocked)
    parts = bf16_parts(blocked, AMX_PARTS)
    total = bf16_to_float32(parts).astype(np.float64).sum(axis=0)
    if not np.array_equal(total, blocked):
        return None
    return aligned(np.concatenate([_pair_order(part) for part in parts], axis=1))


def _pack_direction(mode, hidden_size, direction, variant, precision):
    w_hh, scale_hh = _typed_blocks(direction["w_hh"], GATES[mode], hidden_size, precision)
    w_hn, scale_hn = _DUMMY[precision], None
    if mode == "GRU" and not variant.linear_before_reset:
        w_hh, scale_hh = _typed_blocks(direction["w_hh"][: 2 * hidden_size], 2, hidden_size, precision)
        w_hn, scale_hn = _typed_blocks(direction["w_hh"][2 * hidden_size:], 1, hidden_size, precision)
    w_hr, scale_hr = _DUMMY[precision], None
    if direction["w_hr"] is not None:
        w_hr, scale_hr = _typed_blocks(direction["w_hr"], 1, direction["w_hr"].shape[0], precision)
    peep = direction["peep"]
    wq, wsum = _vnni_order(w_hh) if precision == "int8" else (None, None)
    wp = _tile_weights(w_hh, precision)
    return CythonDirection(
        w_hh=w_hh,
        w_hr=w_hr,
        b_hn=np.ascontiguousarray(_gather(direction["b_hn"], _blocked_rows(1, hidden_size)),
                                  np.float32),
        peep=None if peep is None else _blocked_vectors(peep, hidden_size),
        w_hn=w_hn,
        scale_hh=scale_hh, scale_hr=scale_hr, scale_hn=scale_hn,
        wq=wq,
        wsum=wsum,
        wp=wp,
    )


def pack_layer(mode, hidden_size, proj_size, directions, variant, precision="fp32"):
    """One layer from ``layout`` direction dicts, weights converted to ``precision``."""
    gates = GATES[mode]
    rows = _blocked_rows(gates, hidden_size)
    blocked, scale_ih = [], []
    for d in directions:
        w, scale = _typed_blocks(d["w_ih"], gates, hidden_size, precision)
        blocked.append(w)
        scale_ih.append(scale)
    w_ih = aligned(np.concatenate(blocked))
    w_ih_q, w_ih_sum = _vnni_order(w_ih) if precision == "int8" else (None, None)
    return CythonLayer(
        w_ih=w_ih,
        bias=aligned(np.concatenate([_gather(d["bias"], rows) for d in directions]).astype(np.float32)),
        directions=tuple(_pack_direction(mode, hidden_size, d, variant, precision)
                         for d in directions),
        variant=variant,
        scale_ih=None if precision != "int8" else np.ascontiguousarray(np.concatenate(scale_ih)),
        w_ih_pairs=_tile_weights(w_ih, precision, input_weights=True),
        w_ih_q=w_ih_q,
        w_ih_sum=w_ih_sum,
    )


def _threads_for(flops_per_step, n_blocks, available=None):
    available = get_num_threads() if available is None else available
    wanted = min(available, n_blocks) if flops_per_step > _MIN_FLOPS_PER_THREAD_STEP else 1
    return int(max(1, wanted)) if _kernels.openmp_enabled() else 1


def thread_split(step_flops, n_blocks, n_steps, batch, teams=1, apart=False, fused=False):
    """(threads of a plan's team, threads of a separate input projection or 0), for
    ``teams`` plans running side by side, each on its own share of the threads, each
    doing step_flops a step.

    The steps' teams also run the projection, each thread its own blocks, unless the
    projection alone would use more threads (long inputs to a small layer), or the
    plans share out the rows (``apart``: one projection of every row comes first);
    never when the steps multiply x themselves (``fused``, fuses_input).
    Measured on step1 (LSTM 256/256, one step), 2 threads: the team's projection keeps
    each core's half of W_ih in its L2 across calls."""
    step_threads = _threads_for(step_flops, n_blocks, max(1, get_num_threads() // teams))
    project_threads = _threads_for(step_flops * n_steps, n_steps * batch)
    if not fused and (apart or project_threads > teams * step_threads):
        return step_threads, project_threads
    return step_threads, 0


# bf16/int8 batches split in two halves on 2+ threads from this many rows, when each
# core can hold all the recurrent weights (up to _ROW_SPLIT_MAX_WEIGHTS bytes), and from
# _ROW_SPLIT_ANY_WEIGHTS rows whatever their size
_ROW_SPLIT_MIN_BATCH = 8
_ROW_SPLIT_MAX_WEIGHTS = 1 << 20
_ROW_SPLIT_ANY_WEIGHTS = 64


def lane_layout(n_dirs, batch, weight_bytes, recurrent_bytes):
    """How a layer's steps use the threads: "team" (one team runs each direction in
    turn, each thread its share of the blocks, a barrier every step), "directions" (the
    two directions at once, each on half of the threads), or "rows" (unidirectional
    bf16/int8, weight_bytes < 4, or fp32 whose halves each run on AMX tiles: the batch
    in two halves at once, each on half of the threads; every core then reads all
    recurrent_bytes of W_hh a step, and splits and quantizes only its own rows of h).
    Two teams need no barrier between them.
    Measured, 2 threads, 100 steps, median ms:
    - directions, one team per direction in turn -> side by side, two alternations:
      LSTM 256/256 2 layers bidirectional batch 8 (stack_bi) fp32 15.5-16.8 -> 14.6-15.1,
      bf16 8.9-9.7 -> 6.0-6.2, int8 8.2-8.3 -> 6.0-6.1; 1 layer batch 1 fp32 1.34-1.37 ->
      1.14-1.26, bf16 0.88-0.91 -> 0.70-0.72; batch 64 fp32 48.9-52.3 -> 45.8-48.8; GRU
      128/128 batch 1 0.32 -> 0.23-0.24;
    - rows, one team -> two halves, LSTM H/H unless named, alternated 2-3 times:
      256 bf16 (W_hh 0.5 MiB): batch 64 15.0-15.4 -> 11.0-12.4, GRU 11.5-12.4 -> 8.4-9.2,
      32 7.2-7.4 -> 5.6, 16 3.9-4.1 -> 2.4, 8 2.0-2.2 -> 1.4, 4 0.96-0.98 -> 0.95-0.97,
      2 0.58-0.61 -> 0.74-0.84; int8 batch 64 13.1-13.7 -> 9.0-9.2, GRU 12.3-12.7 ->
      7.2-7.3, 4 0.91 -> 0.67-0.68;
      512 bf16 (2 MiB): 64 51.9-54.2 -> 44.7-45.2, 32 22.8-24.7 -> 21.5-23.0, 16 11.0-11.7
      -> 11.3-11.5, 8 5.5 -> 6.7-6.8, 4 3.0-3.2 -> 5.1-5.2; int8 (1 MiB) 8 5.0-5.1 ->
      4.6-4.7, 4 2.6-2.8 -> 2.7; 384 bf16 (1.1 MiB) 8 3.5-3.7 -> 3.5-3.6;
      fp32 256 batch 64 26.0-26.9 -> 25.5-26.0, 16 6.2-6.5 -> 6.2-6.3: not worth a
      second copy of W_hh in each core's L2 on FMAs; on AMX tiles (halves of 32+ rows,
      kernels/fastlstm_simd.h FL_AMX_F32_MIN_ROWS), where every step splits h in bf16
      parts, it is: 256 batch 64 20.7-21.0 -> 18.4-18.8, GRU 16.2-17.2 -> 14.7-15.9,
      batch 128 44.8-45.0 -> 39.2-39.4; 512 batch 64 81.1-82.6 -> 78.7-79.5."""
    if get_num_threads() < 2 or not _kernels.openmp_enabled():
        return "team"
    if n_dirs == 2:
        return "directions"
    if weight_bytes < 4 and batch >= _ROW_SPLIT_MIN_BATCH and (
            recurrent_bytes <= _ROW_SPLIT_MAX_WEIGHTS or batch >= _ROW_SPLIT_ANY_WEIGHTS):
        return "rows"
    if weight_bytes == 4 and _AMX_CPU and _USE_AMX and batch >= 2 * _kernels.AMX_F32_MIN_ROWS:
        return "rows"
    return "team"


def kernel_mode(mode, variant):
    """The kernels' mode for a cell type and variant (the original GRU has its own)."""
    if mode == "GRU" and not variant.linear_before_reset:
        return _kernels.GRU_RESET_BEFORE
    return _MODE[mode]


def _round_up(n, multiple):
    return -(-n // multiple) * multiple


class KernelScratch:
    """Per-call scratch of the sequence kernel for B rows: the original GRU's r*h and
    z, and per thread the K-chunked (or AMX) partial sums, int8's quantized (bf16's
    rounded) h rows and the split h rows of bf16 and fp32 on AMX.  Rows padded to a
    multiple of 32 for the AMX tiles."""

    def __init__(self, batch, hidden_size, hidden_out, threads, reset_before, lane_rows=None):
        padded = _n_blocks(hidden_size) * UNITS
        rows = _round_up(batch, AMX_ROWS)
        threads = max(1, threads)
        # per lane (plans running side by side each need their own): its rows
        lane_rows = [batch] if lane_rows is None else lane_rows
        self.rh = [aligned_zeros((n, padded), np.float32) if reset_before else None
                   for n in lane_rows]
        self.z = [aligned_zeros((n, padded), np.float32) if reset_before else None
                  for n in lane_rows]
        self.scratch = aligned_zeros((threads, rows * 4 * UNITS), np.float32)
        # int8 quantizes the recurrent product's input (K = H_out) per row, bf16 rounds it
        self.q_scratch = aligned_zeros((threads, batch * (hidden_out + 1)), np.float32)
        self.u8_scratch = aligned_zeros((threads, rows * _round_up(hidden_out, 64)), np.uint8)
        # bf16 and fp32 on AMX: h split in bf16 parts; bf16 on vdpbf16ps: h rounded
        self.a16_scratch = (aligned_zeros((threads, AMX_PARTS * rows
                                           * _kernels.amx_row_elements(hidden_out)),
                                          np.uint16)
                            if _AMX_CPU or _BF16DP_CPU else None)


def sequence_plan(mode, xproj, xcol, direction, has_proj, h_state, c_state, h_full, n_active,
                  reverse, out_col, hidden_size, hidden_out, threads, variant, scratch,
                  projection=None, lane=0, row0=0, fused=False):
    """A kernel ``SequencePlan`` for one direction, bound once: ``plan.run(x, out)``
    (and ``plan.run(x, out, h0, c0, h_n, c_n, state)`` to set and read the state).
    lane: the plan's index into the per-lane parts of ``scratch``; row0: its first row
    (h_state's rows from there are the plan's).

    projection: None (the caller fills xproj and runs with x None), or (layer, d,
    ProjectScratch or None): the plan's team also projects x with direction d's input
    weights of ``layer`` (a CythonLayer), each thread the blocks it runs; with ``fused``
    (see fuses_input) each step multiplies its x in its recurrent product's tiles instead.
    """
    plan = _kernels.SequencePlan()
    _kernels.bind_sequence(
        plan, mode, xproj, xcol, direction.w_hh, has_proj, direction.w_hr, direction.b_hn,
        h_state, c_state, h_full, n_active, reverse, out_col, hidden_out, threads,
        direction.peep, variant.coupled_input_forget, variant.clip, direction.w_hn,
        scratch.rh[lane], scratch.z[lane], scratch.scratch, direction.scale_hh,
        direction.scale_hr, direction.scale_hn,
        scratch.q_scratch, direction.wq if _USE_VNNI else None, direction.wsum,
        scratch.u8_scratch, _USE_AMX, _USE_BF16DP, direction.wp, scratch.a16_scratch,
        hidden_size if mode == _kernels.LSTM else 0, row0)
    if projection is not None:
        layer, d, project_scratch = projection
        n_blk = direction.w_hh.shape[0]
        blocks = slice(d * n_blk, (d + 1) * n_blk)
        width = layer.w_ih.shape[2]
        columns = slice(d * n_blk * width, (d + 1) * n_blk * width)
        pairs, a16, stage, wq, wsum, q8 = _projection_arrays(layer, blocks, project_scratch)
        _kernels.bind_projection(
            plan, layer.w_ih[blocks], layer.bias[columns],
            None if layer.scale_ih is None else layer.scale_ih[columns], pairs, a16, stage,
            fused, wq, wsum, q8)
    return plan


def _projection_arrays(layer, blocks, scratch):
    """The optional arrays of the kernels' input projection of ``layer``'s blocks (a
    slice): (w_pairs, a16_scratch, stage) for AMX tiles, where the CPU has them and
    FASTLSTM_AMX allows; (wq, wsum) for int8's integer tiles unless FASTLSTM_VNNI=0;
    int8's q8_scratch.  None for each that does not apply; ``scratch`` a ProjectScratch
    or None."""
    amx = (_USE_AMX and layer.w_ih_pairs is not None and scratch is not None
           and scratch.a16 is not None)
    vnni = _USE_VNNI and layer.w_ih_q is not None
    return (layer.w_ih_pairs[blocks] if amx else None, scratch.a16 if amx else None,
            scratch.stage if amx else None, layer.w_ih_q[blocks] if vnni else None,
            layer.w_ih_sum[blocks] if vnni else None,
            None if scratch is None else scratch.q8)


class ProjectScratch:
    """Per-thread scratch of the input projection for inputs of up to k_max columns and
    G gates.  On AMX CPUs (else None): a panel of rows split in bf16 parts (kernels'
    FL_AMX_PROJECT_A16_ROWS), or the ``batch`` rows of a fused step (fuses_input), and
    its products (a16, stage).  For int8 weights (``int8``, else None): a panel of rows
    quantized (q8)."""

    def __init__(self, k_max, gates, threads, batch=0, int8=False):
        threads = max(1, threads)
        self.a16 = self.stage = self.q8 = None
        if _AMX_CPU:
            rows = max(_kernels.amx_projection_scratch_rows(), _round_up(batch, AMX_ROWS))
            self.a16 = aligned_zeros((threads, rows * _kernels.amx_row_elements(k_max)),
                                     np.uint16)
            self.stage = aligned_zeros((threads, AMX_ROWS * gates * UNITS), np.float32)
        if int8:
            self.q8 = aligned_zeros((threads, _round_up(_kernels.q8_scratch_bytes(k_max), 64)),
                                    np.uint8)


def fuses_input(gates, weight_bytes, batch):
    """Whether the steps multiply x themselves, in the AMX tiles of their recurrent
    product (kernels' bind_projection ``fused``), rather than after one input projection
    of every step: bf16 LSTM and RNN layers on AMX from _FUSED_MIN_BATCH sequences.  The
    projection's output (T*B rows of G*H floats: 26 MB on thr_med) is then never
    written nor read back."""
    return (_AMX_CPU and _USE_AMX and weight_bytes == 2 and gates != GATES["GRU"]
            and batch >= _FUSED_MIN_BATCH)


def project(gates, layer, x, out, threads, scratch, batch):
    """out (N, D*n_blk*G*16) = x (N, K) @ layer's input weights + bias, blocked columns,
    x holding N / batch steps of ``batch`` rows; on AMX tiles where the CPU has them and
    ``scratch`` (a ProjectScratch) is given."""
    _kernels.project(gates, layer.w_ih, layer.bias, x, out, threads, batch, layer.scale_ih,
                     *_projection_arrays(layer, slice(None), scratch))


@dataclass
class _Lane:
    """One plan's share of a layer call: direction d, rows row0 .. row0 + rows, and
    its state: h (2, rows, H_out padded), c, the unprojected h, rows active per step."""
    d: int
    row0: int
    rows: int
    h_state: np.ndarray
    c_state: np.ndarray
    h_full: np.ndarray
    n_active: np.ndarray


def xproj_row_length(columns):
    """float32 row length >= columns for the input projection's output: an odd number
    of 64-byte lines.  Rows of 4 KiB (LSTM 256, 1024 columns) put the 16 rows an AMX tile
    stores, and the x rows a block's step loads, in one L1 set.  Projection alone, 6400
    rows, 1 thread, median ms, 3 alternations: bf16 LSTM 256 5.84-5.92 -> 5.16-5.37, 512
    28.4-28.6 -> 26.7-27.2; fp32 256 15.6-16.4 -> 15.3-16.1, 512 61.7-64.1 -> 61.1-62.6;
    GRU 256 (3 KiB rows) unchanged."""
    return (-(-columns // 16) | 1) * 16


class _Workspace:
    """Scratch of one call shape, reused by later calls of that shape on the same thread."""

    def __init__(self, n_steps, batch, input_size, hidden_size, proj_size, n_dirs, gates, has_c,
                 reset_before, weight_bytes):
        n_blk = _n_blocks(hidden_size)
        padded = n_blk * UNITS
        hidden_out = proj_size or hidden_size
        row_length = xproj_row_length(n_dirs * n_blk * gates * UNITS)
        self.fused = fuses_input(gates, weight_bytes, batch)
        # fused: nothing is projected ahead, so xproj is never touched (nor its pages mapped)
        self.xproj = (aligned_empty if self.fused else aligned_zeros)(
            (n_steps * batch, row_length), np.float32)
        self.xproj3 = self.xproj.reshape(n_steps, batch, -1)
        self.threads = get_num_threads()
        self.layout = lane_layout(n_dirs, batch, weight_bytes,
                                  hidden_out * n_blk * gates * UNITS * weight_bytes)
        if self.layout == "rows":
            spans = [(0, 0, (batch + 1) // 2), (0, (batch + 1) // 2, batch // 2)]
        else:
            spans = [(d, 0, batch) for d in range(n_dirs)]
        self.lanes = [_Lane(
            d, row0, rows,
            aligned_zeros((2, rows, _n_blocks(hidden_out) * UNITS), np.float32),
            aligned_zeros((rows, padded), np.float32) if has_c else _DUMMY_MATRIX,
            aligned_zeros((rows, padded), np.float32) if proj_size else _DUMMY_MATRIX,
            np.full(n_steps, rows, np.int64)) for d, row0, rows in spans]
        self.ragged = False  # the lanes' n_active hold a call's lengths
        self.kernel = KernelScratch(batch, hidden_size, hidden_out, self.threads, reset_before,
                                    [lane.rows for lane in self.lanes])
        lane_flops = 2 * self.lanes[0].rows * hidden_out * n_blk * gates * UNITS
        # project_threads 0: the steps' teams project (thread_split), or multiply x (fused)
        self.step_threads, self.project_threads = thread_split(
            lane_flops, n_blk, n_steps, batch, 1 if self.layout == "team" else len(self.lanes),
            apart=self.layout == "rows", fused=self.fused)
        self.project = ProjectScratch(max(input_size, n_dirs * hidden_out), gates, self.threads,
                                      batch if self.fused else 0, int8=weight_bytes == 1)
        self.plans = {}  # id(packed layers) -> (packed layers, their SequencePlans)

    def set_lengths(self, lengths, n_steps):
        """The lanes' rows active at each step for sorted ``lengths`` (None: all rows)."""
        if lengths is not None and lengths[-1] != n_steps:
            # lengths sorted descending: rows with length > t are a prefix
            active = np.searchsorted(-lengths, -np.arange(n_steps), side="left")
            for lane in self.lanes:
                np.clip(active - lane.row0, 0, lane.rows, out=lane.n_active)
            self.ragged = True
        elif self.ragged:
            for lane in self.lanes:
                lane.n_active.fill(lane.rows)
            self.ragged = False

    def plans_for(self, mode, layers, hidden_size, proj_size):
        """Per layer, per lane: a SequencePlan bound to this workspace, built once."""
        entry = self.plans.get(id(layers))
        if entry is not None and entry[0] is layers:
            return entry[1]
        variant = layers[0].variant
        hidden_out = proj_size or hidden_size
        column = _n_blocks(hidden_size) * GATES[mode] * UNITS  # one direction's xproj columns
        plans = [[sequence_plan(kernel_mode(mode, variant), self.xproj3, lane.d * column,
                                layer.directions[lane.d], bool(proj_size), lane.h_state,
                                lane.c_state, lane.h_full, lane.n_active, lane.d == 1,
                                lane.d * hidden_out, hidden_size, hidden_out, self.step_threads,
                                variant, self.kernel,
                                None if self.project_threads else (layer, lane.d, self.project),
                                index, lane.row0, self.fused)
                  for index, lane in enumerate(self.lanes)]
                 for layer in layers]
        # plans hold their weights: keep those of at most _CACHED_STACKS layer stacks per
        # call shape and thread, so weights a layer has replaced are freed soon after
        if len(self.plans) >= _CACHED_STACKS:
            self.plans.pop(next(iter(self.plans)))
        self.plans[id(layers)] = (layers, plans)
        return plans


_local = threading.local()
_CACHED_SHAPES = 8
_CACHED_STACKS = 2


def _workspace(key, *shape):
    cache = getattr(_local, "workspaces", None)
    if cache is None:
        cache = _local.workspaces = {}
    workspace = cache.get(key)
    if workspace is None or workspace.threads != get_num_threads():
        if len(cache) >= _CACHED_SHAPES:
            cache.pop(next(iter(cache)))
        workspace = cache[key] = _Workspace(*shape)
    return workspace


def run_layers(mode, layers, hidden_size, proj_size, x, h0, c0, lengths):
    """Run packed layers over a validated sequence.

    x       (T, B, I) float32 C-contiguous
    h0      (L*D, B, H_out) float32 C-contiguous, or None for zeros
    c0      (L*D, B, H) float32 C-contiguous for LSTM, or None for zeros
    lengths (B,) int64 in [1, T], or None when every sequence has T steps
    returns out (T, B, D*H_out), h_n (L*D, B, H_out), c_n (L*D, B, H) or None
    """
    n_steps, batch = x.shape[0], x.shape[1]
    order = None if lengths is None else sort_by_length(lengths)
    if order is not None:
        x = np.ascontiguousarray(x[:, order])
        h0 = np.ascontiguousarray(h0[:, order]) if h0 is not None else None
        c0 = np.ascontiguousarray(c0[:, order]) if c0 is not None else None
        lengths = lengths[order]
    gates = GATES[mode]
    reset_before = mode == "GRU" and not layers[0].variant.linear_before_reset
    n_dirs = len(layers[0].directions)
    hidden_out = proj_size or hidden_size
    weight_bytes = layers[0].w_ih.dtype.itemsize
    # plans bind the kernel paths in force when they are built (FASTLSTM_AMX, _VNNI, _BF16DP)
    ws = _workspace((mode, reset_before, n_steps, batch, x.shape[2], hidden_size, proj_size, n_dirs,
                     weight_bytes, _USE_AMX, _USE_VNNI, _USE_BF16DP),
                    n_steps, batch, x.shape[2], hidden_size, proj_size, n_dirs, gates,
                    mode == "LSTM", reset_before, weight_bytes)
    plans = ws.plans_for(mode, layers, hidden_size, proj_size)
    ws.set_lengths(lengths, n_steps)
    n_states = len(layers) * n_dirs
    h_n = np.empty((n_states, batch, hidden_out), np.float32)
    c_n = np.empty((n_states, batch, hidden_size), np.float32) if mode == "LSTM" else None
    layer_input = x
    for index, layer in enumerate(layers):
        rows = layer_input.reshape(n_steps * batch, -1)
        if ws.project_threads:
            project(gates, layer, rows, ws.xproj, ws.project_threads, ws.project, batch)
            rows = None
        out = np.empty((n_steps, batch, n_dirs * hidden_out), np.float32)
        if ws.layout == "team":
            for d, plan in enumerate(plans[index]):
                plan.run(rows, out, h0, c0, h_n, c_n, index * n_dirs + d)
        else:  # two lanes: directions (states index*2, index*2 + 1) or row halves
            states = (index * 2, index * 2 + 1) if ws.layout == "directions" else (index, index)
            _kernels.run_side_by_side(*plans[index], rows, out, h0, c0, h_n, c_n, *states)
        layer_input = out
    if order is not None:
        inverse = np.argsort(order)
        layer_input = np.ascontiguousarray(layer_input[:, inverse])
        h_n = np.ascontiguousarray(h_n[:, inverse])
        c_n = np.ascontiguousarray(c_n[:, inverse]) if c_n is not None else None
    return layer_input, h_n, c_n
