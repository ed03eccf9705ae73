"""bf16's recurrent products on vdpbf16ps: off the AMX tiles (no AMX, or
FASTLSTM_AMX=0), at up to two rows, where the CPU has AVX512-BF16.  The other path
(FASTLSTM_BF16DP=0, and three rows or more) widens the weights to fp32 for FMAs.  Both
multiply h rounded to bf16, so each is checked against test_precision's float64
reference of bf16's equations, and against the other to bf16's path tolerance.
"""

import numpy as np
import pytest
import torch

import fastlstm
from fastlstm import cython_glue
from test_precision import (ISA_ATOL, assert_cell_step_matches_reduced_step,
                            assert_matches_reduced_reference, float64_state, kernel_mode,
                            layer_outputs)

pytestmark = pytest.mark.skipif(not cython_glue._BF16DP_CPU,
                                reason="this CPU has no AVX512-BF16: the widened path only")

CASES = [
    # mode, kwargs, I, H, batch, lengths (rows drop to 2 and 1 part-way where batch is 3)
    ("LSTM", {}, 3, 17, 1, [6]),
    ("LSTM", {}, 17, 129, 2, [6, 3]),
    ("LSTM", dict(proj_size=5), 17, 37, 2, [2, 6]),
    ("LSTM", dict(num_layers=2, bidirectional=True), 37, 37, 3, [6, 1, 4]),
    ("GRU", {}, 129, 17, 1, [6]),
    ("GRU", dict(bidirectional=True), 1, 129, 2, [5, 6]),
    ("RNN", {}, 37, 3, 1, [6]),
    ("RNN", dict(nonlinearity="relu"), 5, 37, 3, [6, 2, 5]),
]


@pytest.fixture(params=[True, False], ids=["vdpbf16ps", "widened"])
def off_tiles(request, monkeypatch):
    """bf16 off the AMX tiles, on vdpbf16ps (True) or widened weights (False)."""
    monkeypatch.setattr(cython_glue, "_USE_AMX", False)
    monkeypatch.setattr(cython_glue, "_USE_BF16DP", request.param)
    return request.param


@pytest.mark.parametrize("mode, kwargs, input_size, hidden_size, batch, lengths", CASES)
def test_layers_match_the_bf16_reference(mode, kwargs, input_size, hidden_size, batch, lengths, rng,
                                         off_tiles):
    torch.manual_seed(int(rng.integers(1 << 30)))
    module = getattr(torch.nn, mode)(input_size, hidden_size, **kwargs)
    state = float64_state(module)
    x = rng.normal(size=(6, batch, input_size)).astype(np.float32)
    lengths = np.array(lengths)
    layer = getattr(fastlstm, mode).from_torch(module, precision="bf16")
    outputs = layer_outputs(mode, input_size, hidden_size, kwargs, state, "bf16", x, lengths,
                            layer(x, lengths=lengths)[0])
    assert_matches_reduced_reference("bf16", kernel_mode(mode, kwargs), state, x, lengths, hidden_size,
                                     outputs, kwargs.get("bidirectional", False), kwargs.get("proj_size", 0))


@pytest.mark.parametrize("variant", [dict(peephole=True, coupled_input_forget=True, clip=0.4),
                                     dict(linear_before_reset=False, clip=0.3),
                                     dict(linear_before_reset=False)])
def test_variants_match_the_bf16_reference(variant, rng, off_tiles):
    """The original GRU's r and z products run on vdpbf16ps, its new-gate product of r*h
    (fp32, not rounded) on FMAs."""
    mode = "GRU" if "linear_before_reset" in variant else "LSTM"
    layer = getattr(fastlstm, mode)(17, 37, num_layers=2, bidirectional=True, backend="cython",
                                    precision="bf16", **variant)
    layer.load_state_dict({key: (rng.normal(size=value.shape) if key.startswith("weight_peephole")
                                 else rng.uniform(-0.2, 0.2, value.shape)).astype(np.float32)
                           for key, value in layer.state_dict().items()})
    x = rng.normal(size=(7, 2, 17)).astype(np.float32)
    lengths = np.array([3, 7])
    state = float64_state(layer)
    outputs = layer_outputs(mode, 17, 37, dict(num_layers=2, bidirectional=True), state, "bf16", x,
                            lengths, layer(x, lengths=lengths)[0], **variant)
    reference_variant = {key: value for key, value in variant.items() if key != "peephole"}
    assert_matches_reduced_reference("bf16", mode, state, x, lengths, 37, outputs, True,
                                     **reference_variant)


@pytest.mark.parametrize("cell_class", ["LSTMCell", "GRUCell", "RNNCell"])
def test_one_row_cells_match_the_bf16_reference(cell_class, rng, off_tiles):
    assert_cell_step_matches_reduced_step(cell_class, "bf16", 1, 129, rng)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch", [1, 2])
def test_vdpbf16ps_and_widened_weights_agree(batch, threads, rng, monkeypatch):
    """The same products in another fp32 order: close (bf16's rounding of h can step where
    the orders differ in the last bit), and not bit-identical, which shows vdpbf16ps ran."""
    layer = fastlstm.LSTM(37, 129, num_layers=2, bidirectional=True, backend="cython", precision="bf16")
    layer.load_state_dict({key: rng.uniform(-0.1, 0.1, value.shape).astype(np.float32)
                           for key, value in layer.state_dict().items()})
    x = rng.normal(size=(7, batch, 37)).astype(np.float32)
    monkeypatch.setattr(cython_glue, "_USE_AMX", False)
    previous = fastlstm.get_num_threads()
    fastlstm.set_num_threads(threads)
    try:
        monkeypatch.setattr(cython_glue, "_USE_BF16DP", True)
        dot = layer(x)
        monkeypatch.setattr(cython_glue, "_USE_BF16DP", False)
        widened = layer(x)
    finally:
        fastlstm.set_num_threads(previous)
    assert not np.array_equal(dot[0], widened[0])
    for got, expected in zip((dot[0],) + dot[1], (widened[0],) + widened[1]):
        np.testing.assert_allclose(got, expected, atol=ISA_ATOL["bf16"], rtol=0)
