"""Products on AMX tiles: bf16 and int8 input projections at 16 rows or more, int8's
recurrent products at 16 rows or more, bf16's at every batch size (up to 16 rows in
one tile); fp32 as six bf16 products of three-part weights and activations,
recurrent at 32 rows or more and the projection at 64.

Activations are split in bf16 parts: x in two below 16 sequences a call and one
from 16, h in one for bf16 weights (rounded) and three that sum to the float for
fp32; int8 recurrent products are exact integer sums either way.  bf16 LSTM and RNN
steps from 64 sequences multiply their x in the tiles of their recurrent product.  The references are the same as test_precision's: PyTorch fp32
(fp32) and the float64 loop of each reduced precision's equations.  On a CPU without
AMX these tests run the AVX-512 (or portable) paths at the same sizes, which must
pass the same checks.
"""

import threading

import numpy as np
import pytest
import torch

import fastlstm
from fastlstm import cython_glue
from test_precision import (ATOL, assert_matches_reduced_reference, float64_state, kernel_mode,
                            layer_outputs, two_bf16_parts)

HAS_AMX = cython_glue._AMX_CPU
# AMX on and off differ by fp32 rounding of sums taken in another order (fp32 also by
# the products the six of its three-part weights and h leave out, below 2^-24)
PATH_ATOL = {"fp32": 1e-6,
             # bf16 rounds and int8 quantizes h every step: a last-bit difference can
             # move one value across a rounding boundary (see test_precision.ISA_ATOL)
             "bf16": 2e-3, "int8": 2e-3}

CASES = [
    # mode, kwargs, I, H, batch
    ("LSTM", {}, 3, 17, 17),
    ("LSTM", dict(num_layers=2, bidirectional=True), 37, 37, 37),
    ("LSTM", dict(proj_size=5), 17, 37, 33),
    ("GRU", {}, 129, 17, 17),
    ("GRU", dict(bidirectional=True), 17, 129, 20),
    ("RNN", dict(nonlinearity="relu"), 37, 3, 16),
    ("RNN", {}, 1, 37, 129),
    ("LSTM", {}, 17, 129, 1),
    ("GRU", {}, 5, 37, 3),
    ("LSTM", dict(num_layers=2), 17, 37, 8),
]


def _lengths(rng, batch, steps):
    """Lengths that take the running rows below 16 part-way, so steps switch path."""
    lengths = rng.integers(1, steps + 1, size=batch)
    lengths[0] = steps
    return lengths


def _torch_outputs(module, x, lengths):
    """A torch module's padded outputs (T, B, D*H) on x (T, B, I) with per-row lengths."""
    with torch.inference_mode():
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            torch.from_numpy(x), torch.from_numpy(lengths), enforce_sorted=False)
        out, _ = module(packed)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=x.shape[0])
    return out.numpy()


@pytest.mark.parametrize("mode, kwargs, input_size, hidden_size, batch", CASES)
def test_fp32_at_tile_sizes_matches_torch(mode, kwargs, input_size, hidden_size, batch, rng):
    """fp32 runs its recurrent products on tiles from 32 rows and its input projection
    from 64 (here every case with batch >= 8), as six bf16 products: still within the
    fp32 tolerance of PyTorch."""
    torch.manual_seed(int(rng.integers(1 << 30)))
    module = getattr(torch.nn, mode)(input_size, hidden_size, **kwargs)
    steps = 9
    x = rng.normal(size=(steps, batch, input_size)).astype(np.float32)
    lengths = _lengths(rng, batch, steps)
    layer = getattr(fastlstm, mode).from_torch(module)
    np.testing.assert_allclose(layer(x, lengths=lengths)[0], _torch_outputs(module, x, lengths),
                               atol=ATOL, rtol=0)


@pytest.mark.parametrize("tiles", [True, False])
@pytest.mark.parametrize("precision", ["bf16", "int8"])
@pytest.mark.parametrize("mode, kwargs, input_size, hidden_size, batch", CASES)
def test_reduced_precisions_at_tile_sizes_match_their_reference(mode, kwargs, input_size, hidden_size,
                                                                batch, precision, tiles, rng,
                                                                monkeypatch):
    """On tiles and (AMX off) on FMAs, which must round h the same way."""
    monkeypatch.setattr(cython_glue, "_USE_AMX", tiles and cython_glue._USE_AMX)
    torch.manual_seed(int(rng.integers(1 << 30)))
    module = getattr(torch.nn, mode)(input_size, hidden_size, **kwargs)
    state = float64_state(module)
    steps = 5
    x = rng.normal(size=(steps, batch, input_size)).astype(np.float32)
    lengths = _lengths(rng, batch, steps)
    layer = getattr(fastlstm, mode).from_torch(module, precision=precision)
    outputs = layer_outputs(mode, input_size, hidden_size, kwargs, state, precision, x, lengths,
                            layer(x, lengths=lengths)[0])
    assert_matches_reduced_reference(precision, kernel_mode(mode, kwargs), state, x, lengths, hidden_size,
                                     outputs, kwargs.get("bidirectional", False), kwargs.get("proj_size", 0))


@pytest.mark.skipif(not HAS_AMX, reason="this CPU has no AMX: one path only")
# batch 10: 70 rows, fp32 projects on tiles (64 rows) and FMAs (the other 6)
@pytest.mark.parametrize("batch", [1, 5, 8, 10, 40])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
@pytest.mark.parametrize("variant", [dict(), dict(peephole=True, coupled_input_forget=True, clip=0.5),
                                     dict(linear_before_reset=False)])
def test_amx_and_vector_paths_agree(precision, variant, threads, batch, rng, monkeypatch):
    """Every topology and variant gives the same answers with AMX on and off, on
    one thread and on two (each thread configures its own tiles)."""
    mode = "GRU" if "linear_before_reset" in variant else "LSTM"
    layer = getattr(fastlstm, mode)(37, 129, num_layers=2, bidirectional=True, backend="cython",
                                    precision=precision, **variant)
    layer.load_state_dict({key: rng.uniform(-0.1, 0.1, value.shape).astype(np.float32)
                           for key, value in layer.state_dict().items()})
    x = rng.normal(size=(7, batch, 37)).astype(np.float32)
    lengths = _lengths(rng, batch, 7)
    previous = fastlstm.get_num_threads()
    fastlstm.set_num_threads(threads)
    try:
        monkeypatch.setattr(cython_glue, "_USE_AMX", True)
        tiles = layer(x, lengths=lengths)
        monkeypatch.setattr(cython_glue, "_USE_AMX", False)
        vectors = layer(x, lengths=lengths)
    finally:
        fastlstm.set_num_threads(previous)
    np.testing.assert_allclose(tiles[0], vectors[0], atol=PATH_ATOL[precision], rtol=0)
    for got, expected in zip(tiles[1] if mode == "LSTM" else (tiles[1],),
                             vectors[1] if mode == "LSTM" else (vectors[1],)):
        np.testing.assert_allclose(got, expected, atol=PATH_ATOL[precision], rtol=0)


@pytest.mark.parametrize("rows, columns", [(1, 1), (3, 17), (37, 129), (16, 32)])
def test_bf16_split_parts_sum_to_the_floats(rows, columns, rng):
    kernels = cython_glue._kernels
    x = (rng.normal(size=(rows, columns)) * 10.0 ** rng.integers(-6, 6, size=(rows, columns)))
    x = x.astype(np.float32)
    width = -(-columns // 32) * 32 + 32
    parts = np.full((cython_glue.AMX_PARTS, rows, width), 0xFFFF, np.uint16)
    kernels.bf16_split(x, parts)
    values = (parts.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    assert np.all(parts[:, :, columns:] == 0)
    first = torch.from_numpy(x).to(torch.bfloat16).to(torch.float32).numpy()
    np.testing.assert_array_equal(values[0, :, :columns], first)  # round to nearest even
    error = np.abs(values.sum(axis=0)[:, :columns] - x)
    assert np.all(error <= np.abs(x) * 2.0 ** -24)


@pytest.mark.parametrize("rows, columns", [(1, 1), (3, 17), (37, 129), (16, 32)])
def test_bf16_parts_sum_is_what_the_split_parts_stand_for(rows, columns, rng):
    """The floats the vector paths multiply by bf16/int8 weights are the sums of the
    parts the AMX tiles multiply; for x's two parts, hi + lo of torch's rounding."""
    kernels = cython_glue._kernels
    x = (rng.normal(size=(rows, columns)) * 10.0 ** rng.integers(-6, 6, size=(rows, columns)))
    x = x.astype(np.float32)
    parts = np.zeros((cython_glue.AMX_PARTS, rows, columns), np.uint16)
    kernels.bf16_split(x, parts)
    values = (parts.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    for n_parts in range(1, cython_glue.AMX_PARTS + 1):
        out = np.full_like(x, np.nan)
        kernels.bf16_parts_sum(x, out, n_parts)
        np.testing.assert_array_equal(out, values[:n_parts].sum(axis=0))
        assert np.all(np.abs(out - x.astype(np.float64)) <= np.abs(x) * 2.0 ** (-8 * n_parts))
    out = np.empty_like(x)
    kernels.bf16_parts_sum(x, out, cython_glue.AMX_X_PARTS)
    np.testing.assert_array_equal(out, two_bf16_parts(x))


def test_bf16_parts_sum_rejects_bad_arguments():
    x = np.zeros((3, 40), np.float32)
    with pytest.raises(ValueError, match=r"out must be \(3, 40\)"):
        cython_glue._kernels.bf16_parts_sum(x, np.zeros((3, 39), np.float32), 2)
    with pytest.raises(ValueError, match="n_parts must be >= 1"):
        cython_glue._kernels.bf16_parts_sum(x, np.zeros((3, 40), np.float32), 0)


def test_bf16_split_rejects_a_short_buffer():
    x = np.zeros((3, 40), np.float32)
    with pytest.raises(ValueError, match="parts must be"):
        cython_glue._kernels.bf16_split(x, np.zeros((2, 3, 32), np.uint16))
    with pytest.raises(ValueError, match="parts must be"):
        cython_glue._kernels.bf16_split(x, np.zeros((2, 2, 64), np.uint16))


@pytest.mark.skipif(not HAS_AMX, reason="this CPU has no AMX: the pairs are never read")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_project_rejects_pairs_that_do_not_match_the_weights(precision, rng):
    """Pair-order weights with another K, block count or part count than w_blocks, or
    scratch too small for them, are refused before the tiles read them."""
    packed = fastlstm.LSTM(37, 17, backend="cython", precision=precision)._layers[0]
    x = rng.normal(size=(40, 37)).astype(np.float32)
    out = np.empty((40, packed.w_ih.shape[0] * packed.w_ih.shape[2]), np.float32)
    scratch = cython_glue.ProjectScratch(37, 4, 1)
    kernels, pairs = cython_glue._kernels, packed.w_ih_pairs
    kernels.project(4, packed.w_ih, packed.bias, x, out, 1, 40, None, pairs, scratch.a16,
                    scratch.stage)
    for bad_pairs, a16 in [(pairs[:, :-16].copy(), scratch.a16),   # K short of 37
                           (pairs[:, :-1].copy(), scratch.a16),    # not whole parts
                           (np.concatenate([pairs, pairs]), scratch.a16),  # other blocks
                           (pairs, scratch.a16[:, :32].copy())]:   # scratch too small
        with pytest.raises(ValueError, match="w_pairs, a16_scratch or stage do not match"):
            kernels.project(4, packed.w_ih, packed.bias, x, out, 1, 40, None, bad_pairs, a16,
                            scratch.stage)


@pytest.mark.parametrize("columns", [1, 3, 17, 37, 64, 129, 256, 512])
def test_amx_rows_cover_the_columns_in_an_odd_number_of_cache_lines(columns):
    """Split-activation rows hold K rounded up to a multiple of 32 (the tiles read
    whole chunks of 32 bf16) and span an odd number of 64-byte lines, so the 32 rows a
    tile pair loads do not crowd into a few L1 sets."""
    elements = cython_glue._kernels.amx_row_elements(columns)
    lines, rest = divmod(elements * 2, 64)
    assert rest == 0 and lines % 2 == 1
    covered = -(-columns // 32) * 32
    assert covered <= elements <= covered + 32


def test_fp32_tile_weights_are_parts_that_sum_to_the_weights(rng):
    """fp32 weights go to the tiles as three bf16 parts stacked on the K axis, each in
    pair order, which sum exactly to the weights; weights that are not such a sum (inf,
    NaN) keep fp32 on FMAs."""
    blocked = (rng.normal(size=(2, 37, 48)) * 10.0 ** rng.integers(-6, 6, size=(2, 37, 48)))
    blocked = blocked.astype(np.float32)
    parts = cython_glue._tile_weights(blocked, "fp32")
    if not HAS_AMX:
        assert parts is None
        return
    k2 = 32  # 37 rows of K padded to 64, in pairs
    assert parts.shape == (2, cython_glue.AMX_PARTS * k2, 48, 2)
    values = (parts.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    per_part = values.reshape(2, cython_glue.AMX_PARTS, k2, 48, 2)
    total = per_part.sum(axis=1).transpose(0, 1, 3, 2).reshape(2, 2 * k2, 48)
    np.testing.assert_array_equal(total[:, :37], blocked)
    assert np.all(total[:, 37:] == 0)
    blocked[1, 3, 5] = np.inf
    assert cython_glue._tile_weights(blocked, "fp32") is None


def test_tile_order_is_packed_only_where_amx_or_vdpbf16ps_runs():
    assert cython_glue._kernels.cpu_supports_amx() == HAS_AMX
    for precision in ("fp32", "bf16", "int8"):
        packed = fastlstm.LSTM(17, 37, backend="cython", precision=precision)._layers[0]
        assert (packed.w_ih_pairs is not None) == HAS_AMX
        assert (packed.directions[0].wp is not None) == (
            (HAS_AMX and precision != "int8") or (cython_glue._BF16DP_CPU and precision == "bf16"))


@pytest.mark.parametrize("precision", ["bf16", "int8"])
@pytest.mark.parametrize("mode, input_size, hidden_size", [("LSTM", 640, 320), ("GRU", 640, 512)])
def test_wide_projection_panels_match_their_reference(mode, input_size, hidden_size, precision, rng):
    """Input weights of more than 1.5 MiB (here 1.6 and 2.0) are projected in panels of
    256 rows on AMX; 333 rows end in a panel of 77, which goes through the 32-row stage
    (int8's scaled panels always do)."""
    torch.manual_seed(int(rng.integers(1 << 30)))
    module = getattr(torch.nn, mode)(input_size, hidden_size)
    state = float64_state(module)
    x = rng.normal(size=(9, 37, input_size)).astype(np.float32)
    lengths = _lengths(rng, 37, 9)
    layer = getattr(fastlstm, mode).from_torch(module, precision=precision)
    outputs = layer_outputs(mode, input_size, hidden_size, {}, state, precision, x, lengths,
                            layer(x, lengths=lengths)[0])
    assert_matches_reduced_reference(precision, kernel_mode(mode, {}), state, x, lengths, hidden_size,
                                     outputs)


def _workspace_fused(batch):
    """Whether this thread's last layer call of ``batch`` rows multiplied x in its steps."""
    return any(workspace.fused for key, workspace in cython_glue._local.workspaces.items()
               if key[3] == batch)


@pytest.mark.parametrize("mode, kwargs, input_size, hidden_size, batch", [
    ("LSTM", {}, 37, 17, 65),
    ("LSTM", dict(proj_size=5, num_layers=2), 17, 37, 67),
    ("LSTM", dict(bidirectional=True), 129, 3, 64),
    ("LSTM", dict(peephole=True, coupled_input_forget=True, clip=0.4), 3, 37, 129),
    ("RNN", dict(nonlinearity="relu"), 17, 129, 65),
    ("RNN", {}, 1, 37, 97),
])
def test_steps_multiplying_x_match_their_reference(mode, kwargs, input_size, hidden_size, batch,
                                                   rng):
    """bf16 LSTM and RNN from 64 sequences on AMX: each step multiplies its x (rounded to
    bf16) in the tiles of its recurrent product, no projection pass first; odd sizes,
    lengths that drop the running rows below 16, the ONNX variants."""
    layer = getattr(fastlstm, mode)(input_size, hidden_size, backend="cython", precision="bf16",
                                    **kwargs)
    layer.load_state_dict({key: (rng.normal(size=value.shape) if key.startswith("weight_peephole")
                                 else rng.uniform(-0.3, 0.3, value.shape)).astype(np.float32)
                           for key, value in layer.state_dict().items()})
    x = rng.normal(size=(7, batch, input_size)).astype(np.float32)
    lengths = _lengths(rng, batch, 7)
    got = layer(x, lengths=lengths)[0]
    assert _workspace_fused(batch) == HAS_AMX
    state = float64_state(layer)
    variant = {key: kwargs[key] for key in ("coupled_input_forget", "clip") if key in kwargs}
    outputs = layer_outputs(mode, input_size, hidden_size, kwargs, state, "bf16", x, lengths, got)
    assert_matches_reduced_reference("bf16", kernel_mode(mode, kwargs), state, x, lengths,
                                     hidden_size, outputs, kwargs.get("bidirectional", False),
                                     kwargs.get("proj_size", 0), **variant)


@pytest.mark.skipif(not HAS_AMX, reason="this CPU has no AMX: no plan multiplies x in its tiles")
@pytest.mark.parametrize("mode, precision, batch", [("GRU", "bf16", 64), ("LSTM", "int8", 64),
                                                    ("LSTM", "fp32", 64), ("LSTM", "bf16", 8)])
def test_plans_refuse_to_multiply_x_where_they_cannot(mode, precision, batch, rng, monkeypatch):
    """Only bf16 LSTM and RNN plans with x in one part take x into their recurrent tiles:
    GRU's new gate needs its two products apart, int8 and fp32 tiles multiply other
    operands, and below 16 sequences x has two parts."""
    monkeypatch.setattr(cython_glue, "fuses_input", lambda gates, weight_bytes, batch: True)
    monkeypatch.setattr(cython_glue, "_local", threading.local())  # workspaces made here go
    layer = getattr(fastlstm, mode)(37, 17, backend="cython", precision=precision)
    x = rng.normal(size=(3, batch, 37)).astype(np.float32)
    with pytest.raises(ValueError, match="fused needs bf16 LSTM or RNN plans on AMX tiles"):
        layer(x)
