"""Every error case of the public API: the exception type, and a message naming the
argument together with the expected and the received shape (or value)."""

import re

import numpy as np
import pytest
import torch

import fastlstm
import helpers
from cases import LayerCase

T, B, I, H, P = 7, 3, 5, 6, 2


def _shape(*dims):
    """The text of a shape tuple as it appears in a message, escaped for ``match``."""
    return re.escape(str(tuple(dims)))


@pytest.fixture
def lstm(backend):
    return fastlstm.LSTM(I, H, num_layers=2, bidirectional=True, backend=backend)


@pytest.fixture
def gru(backend):
    return fastlstm.GRU(I, H, backend=backend)


@pytest.fixture
def x():
    return np.zeros((T, B, I), np.float32)


# -- input dtypes -----------------------------------------------------------------------------

BAD_DTYPES = [np.int32, np.int64, np.uint8, np.bool_, np.complex64, np.complex128, object]


@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=lambda d: np.dtype(d).name)
def test_non_float_x_is_type_error(dtype, lstm, gru, backend):
    x = np.zeros((T, B, I), dtype=dtype)
    for layer in (lstm, gru, fastlstm.RNN(I, H, backend=backend)):
        with pytest.raises(TypeError, match=r"^x\b.*" + np.dtype(dtype).name):
            layer(x)
    for cell in (fastlstm.LSTMCell(I, H, backend=backend), fastlstm.GRUCell(I, H, backend=backend),
                 fastlstm.RNNCell(I, H, backend=backend)):
        with pytest.raises(TypeError, match=r"^x\b"):
            cell(x[0])


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64], ids=str)
def test_non_float_torch_x_is_type_error(dtype, lstm):
    with pytest.raises(TypeError, match=r"^x\b"):
        lstm(torch.zeros((T, B, I), dtype=dtype))


def test_non_float_states_are_type_errors(lstm, gru, x):
    h0 = np.zeros((4, B, H), np.float32)
    with pytest.raises(TypeError, match=r"^hx\[0\]"):
        lstm(x, (h0.astype(np.int32), h0))
    with pytest.raises(TypeError, match=r"^hx\[1\]"):
        lstm(x, (h0, h0.astype(np.complex64)))
    with pytest.raises(TypeError, match=r"^hx\b"):
        gru(x, np.zeros((1, B, H), np.int64))


# -- x: rank and sizes ------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(I,), (2, T, B, I), ()], ids=["1d", "4d", "0d"])
def test_layer_x_wrong_rank(shape, lstm, gru):
    for layer in (lstm, gru):
        with pytest.raises(ValueError, match=r"^x\b.*\(T, B, I\).*" + _shape(*shape)):
            layer(np.zeros(shape, np.float32))


def test_layer_x_wrong_rank_names_batch_first_layout(backend):
    layer = fastlstm.GRU(I, H, batch_first=True, backend=backend)
    with pytest.raises(ValueError, match=r"^x\b.*\(B, T, I\).*" + _shape(1, B, T, I)):
        layer(np.zeros((1, B, T, I), np.float32))


@pytest.mark.parametrize("shape", [(T, B, I + 1), (T, B, 1), (T, I - 1)],
                         ids=["batched", "batched-1", "unbatched"])
def test_layer_x_wrong_feature_size(shape, lstm, backend):
    rnn = fastlstm.RNN(I, H, nonlinearity="relu", backend=backend)
    for layer in (lstm, rnn):
        with pytest.raises(ValueError, match=rf"^x\b.*{I}.*" + _shape(*shape)):
            layer(np.zeros(shape, np.float32))


@pytest.mark.parametrize("shape", [(0, B, I), (T, 0, I), (0, I)], ids=["T0", "B0", "unbatched-T0"])
def test_layer_x_empty(shape, lstm):
    with pytest.raises(ValueError, match=r"^x\b.*" + _shape(*shape)):
        lstm(np.zeros(shape, np.float32))


@pytest.mark.parametrize("cell_class", [fastlstm.LSTMCell, fastlstm.GRUCell, fastlstm.RNNCell])
def test_cell_x_wrong_rank_and_size(cell_class, backend):
    cell = cell_class(I, H, backend=backend)
    for shape in [(1, B, I), ()]:
        with pytest.raises(ValueError, match=r"^x\b.*\(B, I\).*" + _shape(*shape)):
            cell(np.zeros(shape, np.float32))
    for shape in [(B, I + 2), (I + 2,), (0, I)]:
        with pytest.raises(ValueError, match=rf"^x\b.*{I}.*" + _shape(*shape)):
            cell(np.zeros(shape, np.float32))


# -- states -----------------------------------------------------------------------------------

def test_lstm_h0_c0_wrong_shapes(lstm, x):
    h0 = np.zeros((4, B, H), np.float32)
    for bad in [(2, B, H), (4, B + 1, H), (4, B, H + 1), (4, H), (1, 4, B, H)]:
        with pytest.raises(ValueError, match=r"^hx\[0\].*" + _shape(4, B, H) + ".*" + _shape(*bad)):
            lstm(x, (np.zeros(bad, np.float32), h0))
        with pytest.raises(ValueError, match=r"^hx\[1\].*" + _shape(4, B, H) + ".*" + _shape(*bad)):
            lstm(x, (h0, np.zeros(bad, np.float32)))


def test_lstm_projection_state_shapes(backend, x):
    """With proj_size, h0 has P features and c0 keeps H: swapping them is an error."""
    lstm = fastlstm.LSTM(I, H, proj_size=P, backend=backend)
    h0, c0 = np.zeros((1, B, P), np.float32), np.zeros((1, B, H), np.float32)
    lstm(x, (h0, c0))  # the right shapes are accepted
    with pytest.raises(ValueError, match=r"^hx\[0\].*" + _shape(1, B, P) + ".*" + _shape(1, B, H)):
        lstm(x, (c0, c0))
    with pytest.raises(ValueError, match=r"^hx\[1\].*" + _shape(1, B, H) + ".*" + _shape(1, B, P)):
        lstm(x, (h0, h0))


def test_unbatched_states_wrong_shapes(lstm, gru):
    """Unbatched x (T, I) takes (L*D, H) states; batched ones are rejected, and vice versa."""
    x = np.zeros((T, I), np.float32)
    h0 = np.zeros((4, H), np.float32)
    lstm(x, (h0, h0))
    for bad in [(4, 1, H), (2, H), (4, H + 1)]:
        with pytest.raises(ValueError, match=r"^hx\[0\].*" + _shape(4, H) + ".*" + _shape(*bad)):
            lstm(x, (np.zeros(bad, np.float32), h0))
        with pytest.raises(ValueError, match=r"^hx\[1\].*" + _shape(4, H) + ".*" + _shape(*bad)):
            lstm(x, (h0, np.zeros(bad, np.float32)))
    with pytest.raises(ValueError, match=r"^hx\b.*" + _shape(1, H) + ".*" + _shape(1, 1, H)):
        gru(x, np.zeros((1, 1, H), np.float32))
    # batched x with an unbatched state
    with pytest.raises(ValueError, match=r"^hx\b.*" + _shape(1, B, H) + ".*" + _shape(1, H)):
        gru(np.zeros((T, B, I), np.float32), np.zeros((1, H), np.float32))


def test_gru_and_rnn_h0_wrong_shape(gru, backend, x):
    rnn = fastlstm.RNN(I, H, num_layers=3, backend=backend)
    with pytest.raises(ValueError, match=r"^hx\b.*" + _shape(1, B, H) + ".*" + _shape(1, B, H - 1)):
        gru(x, np.zeros((1, B, H - 1), np.float32))
    with pytest.raises(ValueError, match=r"^hx\b.*" + _shape(3, B, H) + ".*" + _shape(1, B, H)):
        rnn(x, np.zeros((1, B, H), np.float32))


@pytest.mark.parametrize("hx", [np.zeros((4, B, H), np.float32), (np.zeros((4, B, H)),),
                                (np.zeros((4, B, H)),) * 3, "h0"],
                         ids=["array", "1-tuple", "3-tuple", "str"])
def test_lstm_hx_not_a_pair(hx, lstm, backend, x):
    with pytest.raises(TypeError, match=r"^hx\b.*tuple"):
        lstm(x, hx)
    cell = fastlstm.LSTMCell(I, H, backend=backend)
    with pytest.raises(TypeError, match=r"^hx\b.*tuple"):
        cell(x[0], hx)


@pytest.mark.parametrize("cell_class", [fastlstm.LSTMCell, fastlstm.GRUCell, fastlstm.RNNCell])
def test_cell_state_wrong_shapes(cell_class, backend):
    cell = cell_class(I, H, backend=backend)
    is_lstm = cell_class is fastlstm.LSTMCell
    name = r"hx\[0\]" if is_lstm else r"hx\b"

    def call(x, h):
        return cell(x, (h, np.zeros(x.shape[:-1] + (H,), np.float32)) if is_lstm else h)

    for x_shape, good, bad in [((B, I), (B, H), (B, H + 1)), ((B, I), (B, H), (B + 1, H)),
                               ((B, I), (B, H), (H,)), ((I,), (H,), (1, H))]:
        with pytest.raises(ValueError, match="^" + name + ".*" + _shape(*good) + ".*" + _shape(*bad)):
            call(np.zeros(x_shape, np.float32), np.zeros(bad, np.float32))
    if is_lstm:
        with pytest.raises(ValueError, match=r"^hx\[1\].*" + _shape(B, H) + ".*" + _shape(B, 1)):
            cell(np.zeros((B, I), np.float32),
                 (np.zeros((B, H), np.float32), np.zeros((B, 1), np.float32)))


# -- lengths ----------------------------------------------------------------------------------

@pytest.mark.parametrize("lengths", [[T] * (B + 1), [T] * (B - 1), [[T]] * B, T],
                         ids=["too-many", "too-few", "2d", "scalar"])
def test_lengths_wrong_shape(lengths, lstm, gru, x):
    received = _shape(*np.shape(lengths))
    for layer in (lstm, gru):
        with pytest.raises(ValueError, match=r"^lengths\b.*" + _shape(B) + ".*" + received):
            layer(x, lengths=lengths)


@pytest.mark.parametrize("lengths", [[7.0, 3.0, 1.0], np.array([1.5, 2, 3]), [True, True, True],
                                     torch.tensor([7.0, 3.0, 1.0])],
                         ids=["float-list", "float-array", "bool", "torch-float"])
def test_lengths_not_integers(lengths, lstm, x):
    with pytest.raises(TypeError, match=r"^lengths\b"):
        lstm(x, lengths=lengths)


@pytest.mark.parametrize("lengths", [[0, 3, 7], [3, -1, 7], [T + 1, 1, 1], [T, T, 100]],
                         ids=["zero", "negative", "T+1", "huge"])
def test_lengths_out_of_range(lengths, lstm, gru, x):
    for layer in (lstm, gru):
        with pytest.raises(ValueError, match=rf"^lengths\b.*\b{T}\b"):
            layer(x, lengths=lengths)
        with pytest.raises(ValueError, match=rf"^lengths\b.*\b{T}\b"):
            layer(x, lengths=torch.tensor(lengths))


# -- load_state_dict --------------------------------------------------------------------------

def _loaded_layer(backend, rng):
    case = LayerCase("LSTM", I, H, num_layers=2, bidirectional=True, proj_size=P)
    layer = helpers.fastlstm_layer(case, backend)
    weights = helpers.random_state_dict(helpers.expected_shapes(case), H, rng)
    layer.load_state_dict(weights)
    return layer, weights


def _assert_unchanged(layer, weights, probe, before):
    for key, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, weights[key], err_msg=key)
    out, (h_n, c_n) = layer(probe)
    np.testing.assert_array_equal(out, before[0])
    np.testing.assert_array_equal(h_n, before[1])
    np.testing.assert_array_equal(c_n, before[2])


def _bad_state_dicts(weights):
    """(description, bad state dict, exception, message pattern); the bad key is the last
    one where possible, so a half-done load would already have changed the others."""
    last = list(weights)[-1]
    yield ("missing", {k: v for k, v in weights.items() if k != last}, ValueError,
           r"missing.*" + re.escape(last))
    yield ("unexpected", dict(weights, weight_ih_l2=weights["weight_ih_l1"]), ValueError,
           r"unexpected.*weight_ih_l2")
    yield ("misshaped", dict(weights, **{last: weights[last][:, :-1]}), ValueError,
           re.escape(last) + ".*" + _shape(*weights[last].shape) + ".*"
           + _shape(*weights[last][:, :-1].shape))
    yield ("transposed", dict(weights, **{last: weights[last].T}), ValueError,
           re.escape(last) + ".*" + _shape(*weights[last].shape) + ".*"
           + _shape(*weights[last].T.shape))
    yield ("integer", dict(weights, **{last: weights[last].astype(np.int32)}), TypeError,
           re.escape(last))
    yield ("torch-misshaped", {k: torch.from_numpy(v) for k, v in weights.items()}
           | {"bias_hh_l1_reverse": torch.zeros(4 * H + 1)}, ValueError,
           r"bias_hh_l1_reverse.*" + _shape(4 * H) + ".*" + _shape(4 * H + 1))
    yield ("not-a-mapping", list(weights.values()), TypeError, r"state_dict")


@pytest.mark.parametrize("kind", ["missing", "unexpected", "misshaped", "transposed", "integer",
                                  "torch-misshaped", "not-a-mapping"])
def test_bad_state_dict_is_rejected_and_changes_nothing(kind, backend, rng):
    layer, weights = _loaded_layer(backend, rng)
    probe = rng.standard_normal((T, B, I)).astype(np.float32)
    out, (h_n, c_n) = layer(probe)
    before = (out.copy(), h_n.copy(), c_n.copy())
    (_, bad, error, pattern), = [item for item in _bad_state_dicts(weights) if item[0] == kind]
    with pytest.raises(error, match=pattern):
        layer.load_state_dict(bad)
    _assert_unchanged(layer, weights, probe, before)


@pytest.mark.parametrize("cell_class", [fastlstm.LSTMCell, fastlstm.GRUCell, fastlstm.RNNCell])
def test_bad_cell_state_dict(cell_class, backend, rng):
    cell = cell_class(I, H, bias=False, backend=backend)
    weights = cell.state_dict()
    gates = weights["weight_hh"].shape[0]
    with pytest.raises(ValueError, match=r"missing.*weight_hh"):
        cell.load_state_dict({"weight_ih": weights["weight_ih"]})
    with pytest.raises(ValueError, match=r"unexpected.*bias_ih"):
        cell.load_state_dict(dict(weights, bias_ih=np.zeros(gates, np.float32)))
    with pytest.raises(ValueError, match=r"weight_ih.*" + _shape(gates, I) + ".*" + _shape(gates, I + 1)):
        cell.load_state_dict(dict(weights, weight_ih=np.zeros((gates, I + 1), np.float32)))
    # layer keys are not cell keys
    with pytest.raises(ValueError, match=r"missing.*weight_ih"):
        cell.load_state_dict({key + "_l0": value for key, value in weights.items()})
    for key, value in cell.state_dict().items():
        np.testing.assert_array_equal(value, weights[key])


# -- constructors -----------------------------------------------------------------------------

@pytest.mark.parametrize("proj_size", [H, H + 1, -1], ids=["equal", "larger", "negative"])
def test_lstm_bad_proj_size(proj_size, backend):
    with pytest.raises(ValueError, match=rf"^proj_size\b.*{proj_size}"):
        fastlstm.LSTM(I, H, proj_size=proj_size, backend=backend)


@pytest.mark.parametrize("layer_class", [fastlstm.GRU, fastlstm.RNN])
def test_proj_size_only_for_lstm(layer_class, backend):
    """Like torch.nn.GRU/RNN: a projection is a ValueError naming proj_size."""
    with pytest.raises(ValueError, match=r"proj_size"):
        layer_class(I, H, proj_size=2, backend=backend)


@pytest.mark.parametrize("nonlinearity", ["sigmoid", "Tanh", "", None])
def test_bad_nonlinearity(nonlinearity, backend):
    with pytest.raises(ValueError, match=r"^nonlinearity\b.*" + re.escape(repr(nonlinearity))):
        fastlstm.RNN(I, H, nonlinearity=nonlinearity, backend=backend)
    with pytest.raises(ValueError, match=r"^nonlinearity\b.*" + re.escape(repr(nonlinearity))):
        fastlstm.RNNCell(I, H, nonlinearity=nonlinearity, backend=backend)


ALL_CLASSES = [fastlstm.LSTM, fastlstm.GRU, fastlstm.RNN,
               fastlstm.LSTMCell, fastlstm.GRUCell, fastlstm.RNNCell]


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda cls: cls.__name__)
def test_bad_backend(cls):
    with pytest.raises(ValueError, match=r"^backend\b.*'cuda'"):
        cls(I, H, backend="cuda")
    with pytest.raises(TypeError, match=r"^backend\b"):
        cls(I, H, backend=1)


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("argument", ["input_size", "hidden_size"])
def test_bad_sizes(cls, argument, backend):
    sizes = dict(input_size=I, hidden_size=H)
    for value in (0, -3):
        with pytest.raises(ValueError, match=rf"^{argument}\b.*{value}"):
            cls(**dict(sizes, **{argument: value}), backend=backend)
    for value in (2.5, "3", None):
        with pytest.raises(TypeError, match=rf"^{argument}\b"):
            cls(**dict(sizes, **{argument: value}), backend=backend)


@pytest.mark.parametrize("cls", ALL_CLASSES[:3], ids=lambda cls: cls.__name__)
def test_bad_num_layers(cls, backend):
    with pytest.raises(ValueError, match=r"^num_layers\b.*0"):
        cls(I, H, num_layers=0, backend=backend)
    with pytest.raises(TypeError, match=r"^num_layers\b"):
        cls(I, H, num_layers=1.0, backend=backend)


@pytest.mark.parametrize("dropout", [-0.1, 1.5])
def test_bad_dropout(dropout, backend):
    """torch.nn.LSTM rejects a dropout outside [0, 1] with a ValueError."""
    with pytest.raises(ValueError, match=r"dropout"):
        fastlstm.LSTM(I, H, num_layers=2, dropout=dropout, backend=backend)


# -- from_torch -------------------------------------------------------------------------------

WRONG_MODULES = [
    (fastlstm.LSTM, torch.nn.GRU(I, H)),
    (fastlstm.LSTM, torch.nn.LSTMCell(I, H)),
    (fastlstm.LSTM, torch.nn.Linear(I, H)),
    (fastlstm.GRU, torch.nn.LSTM(I, H)),
    (fastlstm.GRU, torch.nn.RNN(I, H)),
    (fastlstm.RNN, torch.nn.LSTM(I, H)),
    (fastlstm.RNN, torch.nn.RNNCell(I, H)),
    (fastlstm.LSTMCell, torch.nn.LSTM(I, H)),
    (fastlstm.LSTMCell, torch.nn.GRUCell(I, H)),
    (fastlstm.GRUCell, torch.nn.RNNCell(I, H)),
    (fastlstm.RNNCell, torch.nn.RNN(I, H)),
    (fastlstm.RNNCell, torch.nn.LSTMCell(I, H)),
    (fastlstm.LSTM, {"weight_ih_l0": np.zeros((4 * H, I))}),
]


@pytest.mark.parametrize("cls, module", WRONG_MODULES,
                         ids=[f"{cls.__name__}-from-{type(module).__name__}"
                              for cls, module in WRONG_MODULES])
def test_from_torch_wrong_module_type(cls, module, backend):
    expected = re.escape(cls.__name__)
    with pytest.raises(TypeError, match=rf"^module\b.*{expected}.*{type(module).__name__}"):
        cls.from_torch(module, backend=backend)
