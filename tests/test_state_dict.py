"""Weights in and out: PyTorch's key names, shapes and order; exact round trips;
numpy, torch-tensor and from_torch loading; copies, not views."""

import numpy as np
import pytest
import torch

import fastlstm
import helpers
from cases import CellCase, LayerCase, with_

# one of each kind of key set: projections, bidirectional, stacked, no bias, cells
STATE_CASES = [
    LayerCase("LSTM", 3, 17, num_layers=3, bidirectional=True, proj_size=5),
    LayerCase("LSTM", 4, 6, num_layers=2, bias=False, proj_size=2),
    LayerCase("GRU", 3, 5, num_layers=2, bidirectional=True),
    LayerCase("RNN_TANH", 1, 1, bias=False),
    LayerCase("RNN_RELU", 3, 7, num_layers=3, bidirectional=True, bias=False),
    CellCase("LSTM", 3, 5),
    CellCase("GRU", 5, 3, bias=False),
    CellCase("RNN_RELU", 2, 4),
]
_ids = [case.id for case in STATE_CASES]


def _build(case, backend):
    if isinstance(case, LayerCase):
        return helpers.fastlstm_layer(case, backend)
    return helpers.fastlstm_cell(case, backend)


def _assert_state_equal(got, expected):
    """Same keys in the same order, float32 numpy arrays, bitwise-equal values."""
    assert list(got) == list(expected)
    for key, value in got.items():
        assert type(value) is np.ndarray and value.dtype == np.float32, key
        np.testing.assert_array_equal(value, np.asarray(expected[key], dtype=np.float32),
                                      err_msg=key)


@pytest.mark.parametrize("case", STATE_CASES, ids=_ids)
def test_keys_shapes_and_order_match_torch(case, backend, rng):
    module = helpers.torch_module(case, rng)
    state = _build(case, backend).state_dict()
    torch_shapes = [(key, tuple(value.shape)) for key, value in module.state_dict().items()]
    assert [(key, value.shape) for key, value in state.items()] == torch_shapes
    assert all(value.dtype == np.float32 for value in state.values())


@pytest.mark.parametrize("case", STATE_CASES, ids=_ids)
def test_default_init_is_torch_range(case, backend):
    """Fresh weights: U(-1/sqrt(H), 1/sqrt(H)) like PyTorch, and not constant."""
    bound = 1.0 / np.sqrt(case.hidden_size)
    values = np.concatenate([v.ravel() for v in _build(case, backend).state_dict().values()])
    assert np.all(np.abs(values) <= bound)
    assert np.unique(values).size > values.size // 2


@pytest.mark.parametrize("case", STATE_CASES, ids=_ids)
def test_numpy_round_trip_is_exact(case, backend, rng):
    source = helpers.random_state_dict(helpers.expected_shapes(case), case.hidden_size, rng)
    layer = _build(case, backend)
    layer.load_state_dict(source)
    _assert_state_equal(layer.state_dict(), source)
    # and a layer loaded from that state_dict computes the same thing, bit for bit
    twin = _build(case, backend)
    twin.load_state_dict(layer.state_dict())
    x = rng.standard_normal((4, 2, case.input_size) if isinstance(case, LayerCase)
                            else (2, case.input_size)).astype(np.float32)
    first, second = layer(x), twin(x)
    for a, b in zip(_flatten(first), _flatten(second), strict=True):
        np.testing.assert_array_equal(a, b)


def _flatten(result):
    if isinstance(result, tuple):
        return [array for part in result for array in _flatten(part)]
    return [result]


@pytest.mark.parametrize("load", ["from_torch", "torch", "numpy"])
@pytest.mark.parametrize("case", STATE_CASES, ids=_ids)
def test_state_dict_equals_torch_after_load(case, load, backend, rng):
    module = helpers.torch_module(case, rng)
    layer = helpers.load_from_torch(with_(case, load=load), module, backend)
    _assert_state_equal(layer.state_dict(), {k: v.numpy() for k, v in module.state_dict().items()})


@pytest.mark.parametrize("case", STATE_CASES[:3] + STATE_CASES[5:6], ids=_ids[:3] + _ids[5:6])
def test_load_parameters_requiring_grad_float64_and_any_key_order(case, backend, rng):
    """named_parameters() (tensors requiring grad), float64 arrays, keys shuffled."""
    module = helpers.torch_module(case, rng)
    expected = {k: v.numpy() for k, v in module.state_dict().items()}

    layer = _build(case, backend)
    layer.load_state_dict(dict(module.named_parameters()))
    _assert_state_equal(layer.state_dict(), expected)

    layer = _build(case, backend)
    shuffled = list(expected.items())[::-1]
    layer.load_state_dict({key: value.astype(np.float64) for key, value in shuffled})
    _assert_state_equal(layer.state_dict(), expected)

    layer = _build(case, backend)
    layer.load_state_dict(module.double().state_dict())
    _assert_state_equal(layer.state_dict(), expected)


@pytest.mark.parametrize("case", [STATE_CASES[0], STATE_CASES[5]], ids=[_ids[0], _ids[5]])
def test_state_is_copied_in_and_out(case, backend, rng):
    """Mutating the loaded arrays or the returned state_dict changes nothing."""
    source = helpers.random_state_dict(helpers.expected_shapes(case), case.hidden_size, rng)
    kept = {key: value.copy() for key, value in source.items()}
    layer = _build(case, backend)
    layer.load_state_dict(source)
    x = rng.standard_normal((3, 2, case.input_size) if isinstance(case, LayerCase)
                            else (2, case.input_size)).astype(np.float32)
    before = _flatten(layer(x))

    for value in source.values():
        value[...] = 7.0
    for value in layer.state_dict().values():
        value[...] = -7.0
    _assert_state_equal(layer.state_dict(), kept)
    for a, b in zip(before, _flatten(layer(x)), strict=True):
        np.testing.assert_array_equal(a, b)


def test_torch_tensor_source_not_shared(backend, rng):
    """Loading from a torch module then changing its weights does not touch the layer."""
    case = STATE_CASES[2]
    module = helpers.torch_module(case, rng)
    layer = fastlstm.GRU.from_torch(module, backend=backend)
    expected = {k: v.numpy().copy() for k, v in module.state_dict().items()}
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.fill_(3.0)
    _assert_state_equal(layer.state_dict(), expected)


@pytest.mark.parametrize("torch_kwargs, attributes", [
    (dict(input_size=3, hidden_size=5, num_layers=2, bias=False, batch_first=True,
          bidirectional=True, proj_size=2),
     dict(input_size=3, hidden_size=5, num_layers=2, bias=False, batch_first=True,
          bidirectional=True, proj_size=2)),
], ids=["LSTM"])
def test_from_torch_copies_hyperparameters(torch_kwargs, attributes, backend):
    layer = fastlstm.LSTM.from_torch(torch.nn.LSTM(**torch_kwargs), backend=backend)
    assert {name: getattr(layer, name) for name in attributes} == attributes
    rnn = fastlstm.RNN.from_torch(torch.nn.RNN(2, 3, nonlinearity="relu", batch_first=True),
                                  backend=backend)
    assert (rnn.nonlinearity, rnn.batch_first) == ("relu", True)
    cell = fastlstm.RNNCell.from_torch(torch.nn.RNNCell(2, 3, bias=False, nonlinearity="relu"),
                                       backend=backend)
    assert (cell.nonlinearity, cell.bias, cell.input_size, cell.hidden_size) == ("relu", False, 2, 3)


def test_from_torch_ignores_dropout_in_eval(backend, rng):
    """Dropout only acts in training; an eval-mode torch LSTM with dropout is matched."""
    case = LayerCase("LSTM", 3, 5, num_layers=2, load="from_torch")
    module = helpers.torch_module(case, rng)
    module.dropout = 0.5
    layer = fastlstm.LSTM.from_torch(module, backend=backend)
    x = rng.standard_normal((7, 3, 3)).astype(np.float32)
    got = helpers.call_layer(layer, "LSTM", x, None, None, None)
    ref = helpers.torch_layer(module, case, x, None, None, None)
    helpers.assert_matches(got, ref, "torch", ("out", "h_n", "c_n"))
