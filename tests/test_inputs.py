"""What a call accepts and returns beyond the registry: every float dtype and torch
tensors, non-contiguous arrays, inputs left untouched, repeated calls with changing
batch sizes, exact zeros past each length, saturated gates."""

import numpy as np
import pytest
import torch

import fastlstm
import helpers
from cases import LayerCase

MODES = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")
_NAMES = ("out", "h_n", "c_n")


def _loaded(case, backend, rng, scale=2.0):
    weights = helpers.random_state_dict(helpers.expected_shapes(case), case.hidden_size, rng,
                                        scale=scale)
    layer = helpers.fastlstm_layer(case, backend)
    layer.load_state_dict(weights)
    return layer, weights


def _check_against_naive(layer, case, weights, x, h0=None, c0=None, lengths=None):
    """Call with the values as given; the reference gets them as float32 numpy."""
    got = helpers.call_layer(layer, case.mode, x, h0, c0, lengths)
    ref = helpers.naive_layer(case, weights, *(_as_float32(v) for v in (x, h0, c0)),
                              None if lengths is None else np.asarray(lengths))
    helpers.assert_matches(got, ref, "naive", _NAMES)
    return got


def _as_float32(value):
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value.detach().to(torch.float32).numpy()
    return np.asarray(value, dtype=np.float32)


_DTYPES = {
    "float16": lambda a: a.astype(np.float16),
    "float32": lambda a: a.astype(np.float32),
    "float64": lambda a: a.astype(np.float64),
    "longdouble": lambda a: a.astype(np.longdouble),
    "float32-big-endian": lambda a: a.astype(">f4"),
    "list": lambda a: a.tolist(),
    "torch-float16": lambda a: torch.tensor(a, dtype=torch.float16),
    "torch-float32": lambda a: torch.tensor(a, dtype=torch.float32),
    "torch-float64": lambda a: torch.tensor(a, dtype=torch.float64),
    "torch-bfloat16": lambda a: torch.tensor(a, dtype=torch.bfloat16),
    "torch-requires-grad": lambda a: torch.tensor(a, dtype=torch.float32, requires_grad=True),
    "torch-non-contiguous": lambda a: torch.tensor(np.ascontiguousarray(a.swapaxes(0, -1)),
                                                   dtype=torch.float32).transpose(0, -1),
}


@pytest.mark.parametrize("dtype", list(_DTYPES))
@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_any_float_dtype_and_torch_tensors(mode, dtype, backend, rng):
    """x and the states in any float type; results are float32 numpy arrays."""
    case = LayerCase(mode, 3, 5, num_layers=2, bidirectional=True, initial_state=True)
    layer, weights = _loaded(case, backend, rng)
    x, h0, c0, _ = helpers.layer_inputs(case, rng)
    convert = _DTYPES[dtype]
    _check_against_naive(layer, case, weights, convert(x), convert(h0),
                         None if c0 is None else convert(c0))


@pytest.mark.parametrize("layout", ["fortran", "strided", "reversed", "batch-first-view"])
def test_non_contiguous_arrays(layout, backend, rng):
    case = LayerCase("LSTM", 4, 6, proj_size=3, initial_state=True, lengths=(5, 2, 7))
    layer, weights = _loaded(case, backend, rng)
    x, h0, c0, lengths = helpers.layer_inputs(case, rng)
    if layout == "fortran":
        x, h0, c0 = (np.asfortranarray(a) for a in (x, h0, c0))
    elif layout == "strided":
        x = np.repeat(x, 2, axis=2)[:, :, ::2]
        h0 = np.repeat(h0, 3, axis=1)[:, ::3]
    elif layout == "reversed":
        x = np.ascontiguousarray(x[::-1])[::-1]
        c0 = np.ascontiguousarray(c0[:, :, ::-1])[:, :, ::-1]
    else:  # a (T, B, I) layer fed a transposed view of batch-first data
        x = np.ascontiguousarray(x.transpose(1, 0, 2)).transpose(1, 0, 2)
    assert not (x.flags.c_contiguous and h0.flags.c_contiguous and c0.flags.c_contiguous)
    _check_against_naive(layer, case, weights, x, h0, c0, np.asarray(lengths[::-1])[::-1])


@pytest.mark.parametrize("mode", MODES)
def test_inputs_are_not_modified(mode, backend, rng):
    case = LayerCase(mode, 3, 4, num_layers=2, bidirectional=True, initial_state=True,
                     lengths=(2, 7, 1))
    layer, _ = _loaded(case, backend, rng)
    x, h0, c0, _ = helpers.layer_inputs(case, rng)
    inputs = [a.astype(np.float32) for a in (x, h0) + (() if c0 is None else (c0,))]
    lengths = np.array(case.lengths)
    kept = [a.copy() for a in inputs] + [lengths.copy()]
    results = helpers.call_layer(layer, mode, inputs[0], inputs[1],
                                 inputs[2] if c0 is not None else None, lengths)
    for before, after in zip(kept, inputs + [lengths]):
        np.testing.assert_array_equal(before, after)
    # results do not alias the inputs or each other
    arrays = [r for r in results if r is not None]
    for result in arrays:
        for other in inputs + [a for a in arrays if a is not result]:
            assert not np.shares_memory(result, other)


@pytest.mark.parametrize("mode", MODES)
def test_repeated_calls_with_changing_batch(mode, backend, rng):
    """One layer called with B=3, 1, 5, unbatched, then B=3 again: every call is right,
    and the repeat is bit-for-bit the first (no state kept between calls)."""
    case = LayerCase(mode, 3, 17, num_layers=2, bidirectional=True, initial_state=True)
    layer, weights = _loaded(case, backend, rng)
    first = None
    for batch, unbatched in [(3, False), (1, False), (5, False), (1, True), (3, False)]:
        variant = LayerCase(mode, 3, 17, num_layers=2, bidirectional=True, initial_state=True,
                            batch=batch, unbatched=unbatched)
        inputs = helpers.layer_inputs(variant, np.random.default_rng(batch + 10 * unbatched))
        got = _check_against_naive(layer, variant, weights, *inputs[:3])
        if first is None:
            first = got
    for a, b in zip(first, got):
        if a is not None:
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("case", [
    LayerCase("LSTM", 3, 5, num_layers=2, bidirectional=True, proj_size=2, initial_state=True,
              lengths=(3, 1, 7)),
    LayerCase("GRU", 3, 5, num_layers=3, bidirectional=True, batch_first=True,
              initial_state=True, lengths=(1, 6, 2)),
    LayerCase("RNN_TANH", 2, 4, bidirectional=True, initial_state=True, lengths=(7, 2, 4)),
    LayerCase("RNN_RELU", 2, 4, num_layers=2, initial_state=True, lengths=(4, 1, 7)),
], ids=lambda case: case.id)
def test_padding_is_exact_zero(case, backend, rng):
    """Steps past a length are exactly 0.0 (not merely within tolerance), and a length of T
    for every sequence is the same as no lengths at all."""
    layer, _ = _loaded(case, backend, rng)
    x, h0, c0, lengths = helpers.layer_inputs(case, rng)
    out = helpers.call_layer(layer, case.mode, x, h0, c0, lengths)[0]
    time_major = out.transpose(1, 0, 2) if case.batch_first else out
    for b, length in enumerate(lengths):
        assert np.all(time_major[length:, b] == 0.0)
        if case.mode != "RNN_RELU":  # relu may output exact zeros; the others never do here
            assert np.all(np.any(time_major[:length, b] != 0.0, axis=-1))
    full = helpers.call_layer(layer, case.mode, x, h0, c0, [case.steps] * case.batch)
    none = helpers.call_layer(layer, case.mode, x, h0, c0, None)
    for a, b in zip(full, none):
        if a is not None:
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH"])
def test_saturated_gates(mode, backend, rng):
    """Inputs in the hundreds push every gate to 0 or 1: no overflow, no NaN."""
    case = LayerCase(mode, 5, 17, num_layers=2, bidirectional=True, initial_state=True)
    layer, weights = _loaded(case, backend, rng, scale=4.0)
    x, h0, c0, _ = helpers.layer_inputs(case, rng)
    got = _check_against_naive(layer, case, weights, 300.0 * x, h0, c0)
    assert all(np.all(np.isfinite(a)) for a in got if a is not None)


def test_lstm_hx_as_list_and_cell_hx_as_list(backend, rng):
    case = LayerCase("LSTM", 3, 4, initial_state=True)
    layer, weights = _loaded(case, backend, rng)
    x, h0, c0, _ = helpers.layer_inputs(case, rng)
    out, (h_n, c_n) = layer(x, [h0, c0])
    ref = helpers.naive_layer(case, weights, *(a.astype(np.float32) for a in (x, h0, c0)), None)
    helpers.assert_matches((out, h_n, c_n), ref, "naive", _NAMES)
    cell = fastlstm.LSTMCell(3, 4, backend=backend)
    h1, c1 = cell(x[0], [h0[0], c0[0]])
    assert h1.shape == c1.shape == (3, 4) and h1.dtype == c1.dtype == np.float32
