"""Glue shared by the tests: building fastlstm/torch/naive versions of a registry case,
making its inputs, running each, and comparing against the tolerance table.

Layouts: a case's inputs are made in the layout the user passes (batch-first or
not, batched or not); the naive reference is time-major and batched, so
``naive_layer`` converts in and out.
"""

import numpy as np
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fastlstm
import naive

# Tolerances on outputs and final states (fastlstm returns float32).  Against
# torch: both float32, different summation orders.  Against naive: float64
# reference from the same float32 weights and inputs.  Measured worst case on the
# registry (numba backend): 7e-7 against torch; 4.3e-6 against naive, on RNN_RELU
# whose outputs reach |34| with the wider naive-test weights (relative error 1.3e-7).
TOLERANCE = {
    "torch": dict(atol=1e-5, rtol=0.0),
    "naive": dict(atol=1e-5, rtol=0.0),
    "backend": dict(atol=1e-5, rtol=0.0),  # one fastlstm backend against another
}

_FASTLSTM_LAYERS = {"LSTM": fastlstm.LSTM, "GRU": fastlstm.GRU,
                    "RNN_TANH": fastlstm.RNN, "RNN_RELU": fastlstm.RNN}
_FASTLSTM_CELLS = {"LSTM": fastlstm.LSTMCell, "GRU": fastlstm.GRUCell,
                   "RNN_TANH": fastlstm.RNNCell, "RNN_RELU": fastlstm.RNNCell}
_TORCH_LAYERS = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU,
                 "RNN_TANH": torch.nn.RNN, "RNN_RELU": torch.nn.RNN}
_TORCH_CELLS = {"LSTM": torch.nn.LSTMCell, "GRU": torch.nn.GRUCell,
                "RNN_TANH": torch.nn.RNNCell, "RNN_RELU": torch.nn.RNNCell}
_NONLINEARITY = {"RNN_TANH": "tanh", "RNN_RELU": "relu"}


# -- constructing -----------------------------------------------------------------------------

def layer_kwargs(case):
    """Constructor keywords shared by fastlstm and torch for a LayerCase."""
    kwargs = dict(input_size=case.input_size, hidden_size=case.hidden_size,
                  num_layers=case.num_layers, bias=case.bias, batch_first=case.batch_first,
                  bidirectional=case.bidirectional)
    if case.proj_size:
        kwargs["proj_size"] = case.proj_size
    if case.mode in _NONLINEARITY:
        kwargs["nonlinearity"] = _NONLINEARITY[case.mode]
    return kwargs


def cell_kwargs(case):
    kwargs = dict(input_size=case.input_size, hidden_size=case.hidden_size, bias=case.bias)
    if case.mode in _NONLINEARITY:
        kwargs["nonlinearity"] = _NONLINEARITY[case.mode]
    return kwargs


def fastlstm_layer(case, backend, **overrides):
    return _FASTLSTM_LAYERS[case.mode](**dict(layer_kwargs(case), **overrides), backend=backend)


def fastlstm_cell(case, backend):
    return _FASTLSTM_CELLS[case.mode](**cell_kwargs(case), backend=backend)


def expected_shapes(case):
    """PyTorch's {key: shape} for the case, from naive's independent table."""
    if hasattr(case, "num_layers"):
        return naive.param_shapes(case.mode, case.input_size, case.hidden_size, case.num_layers,
                                  case.bidirectional, case.proj_size, case.bias)
    return naive.cell_param_shapes(case.mode, case.input_size, case.hidden_size, case.bias)


def random_state_dict(shapes, hidden_size, rng, scale=1.0):
    """float32 weights U(-scale/sqrt(H), scale/sqrt(H)) (PyTorch's init range times scale)."""
    bound = scale / np.sqrt(hidden_size)
    return {key: rng.uniform(-bound, bound, size=shape).astype(np.float32)
            for key, shape in shapes.items()}


def torch_module(case, rng):
    """The torch layer or cell of ``case`` with weights drawn from ``rng``, in eval mode."""
    if hasattr(case, "num_layers"):
        module = _TORCH_LAYERS[case.mode](**layer_kwargs(case))
    else:
        module = _TORCH_CELLS[case.mode](**cell_kwargs(case))
    weights = random_state_dict(expected_shapes(case), case.hidden_size, rng)
    module.load_state_dict({key: torch.from_numpy(value) for key, value in weights.items()})
    return module.eval()


def load_from_torch(case, module, backend):
    """fastlstm's version of ``module`` through the case's loading path."""
    if case.load == "from_torch":
        fast_class = (_FASTLSTM_LAYERS if hasattr(case, "num_layers") else _FASTLSTM_CELLS)[case.mode]
        return fast_class.from_torch(module, backend=backend)
    build = fastlstm_layer if hasattr(case, "num_layers") else fastlstm_cell
    layer = build(case, backend)
    state = module.state_dict()
    if case.load == "numpy":
        state = {key: value.numpy().copy() for key, value in state.items()}
    layer.load_state_dict(state)
    return layer


# -- inputs -----------------------------------------------------------------------------------

def layer_inputs(case, rng):
    """x, h0, c0 (None without initial states), lengths (None or a tuple), in the
    user-facing layout, float64."""
    batch_shape = () if case.unbatched else (case.batch,)
    if case.unbatched:
        x_shape = (case.steps, case.input_size)
    elif case.batch_first:
        x_shape = (case.batch, case.steps, case.input_size)
    else:
        x_shape = (case.steps, case.batch, case.input_size)
    x = rng.standard_normal(x_shape)
    h0 = c0 = None
    if case.initial_state:
        states = case.num_layers * case.num_directions
        h0 = 0.5 * rng.standard_normal((states, *batch_shape, case.hidden_out))
        if case.mode == "LSTM":
            c0 = 0.5 * rng.standard_normal((states, *batch_shape, case.hidden_size))
    return x, h0, c0, case.lengths


def cell_inputs(case, rng):
    batch_shape = () if case.unbatched else (case.batch,)
    x = rng.standard_normal((*batch_shape, case.input_size))
    h0 = c0 = None
    if case.initial_state:
        h0 = 0.5 * rng.standard_normal((*batch_shape, case.hidden_size))
        if case.mode == "LSTM":
            c0 = 0.5 * rng.standard_normal((*batch_shape, case.hidden_size))
    return x, h0, c0


def given(array, dtype):
    """``array`` as the user passes it under the case's dtype."""
    if array is None:
        return None
    if dtype == "torch":
        return torch.tensor(np.asarray(array, dtype=np.float32))
    return np.asarray(array, dtype=dtype)


def given_lengths(lengths, dtype):
    if lengths is None:
        return None
    if dtype == "torch":
        return torch.tensor(lengths, dtype=torch.int64)
    if dtype == "float64":
        return list(lengths)
    return np.asarray(lengths, dtype=np.int32)


def seen(value):
    """What fastlstm computes on: the given value rounded to float32 (as numpy)."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        value = value.numpy()
    return np.asarray(value, dtype=np.float32)


# -- running ----------------------------------------------------------------------------------

def call_layer(layer, mode, x, h0, c0, lengths):
    """fastlstm layer -> (out, h_n, c_n or None), passing hx only when there is one."""
    hx = None
    if h0 is not None:
        hx = (h0, c0) if mode == "LSTM" else h0
    kwargs = {} if lengths is None else {"lengths": lengths}
    if mode == "LSTM":
        out, (h_n, c_n) = layer(x, hx, **kwargs)
        return out, h_n, c_n
    out, h_n = layer(x, hx, **kwargs)
    return out, h_n, None


def call_cell(cell, mode, x, h0, c0):
    if mode == "LSTM":
        return cell(x, None if h0 is None else (h0, c0))
    return cell(x, h0), None


def torch_layer(module, case, x, h0, c0, lengths):
    """torch's (out, h_n, c_n) as float32 numpy; x/h0/c0 float32 numpy (user layout)."""
    x = torch.from_numpy(x)
    hx = None
    if h0 is not None:
        hx = (torch.from_numpy(h0), torch.from_numpy(c0)) if case.mode == "LSTM" else torch.from_numpy(h0)
    with torch.inference_mode():
        if lengths is None:
            out, state = module(x, hx)
        else:
            packed = pack_padded_sequence(x, torch.tensor(lengths, dtype=torch.int64),
                                          batch_first=case.batch_first, enforce_sorted=False)
            out, state = module(packed, hx)
            out, _ = pad_packed_sequence(out, batch_first=case.batch_first,
                                         total_length=case.steps)
    h_n, c_n = state if case.mode == "LSTM" else (state, None)
    return out.numpy(), h_n.numpy(), (None if c_n is None else c_n.numpy())


def torch_cell(module, case, x, h0, c0):
    x = torch.from_numpy(x)
    hx = None
    if h0 is not None:
        hx = (torch.from_numpy(h0), torch.from_numpy(c0)) if case.mode == "LSTM" else torch.from_numpy(h0)
    with torch.inference_mode():
        result = module(x, hx)
    h1, c1 = result if case.mode == "LSTM" else (result, None)
    return h1.numpy(), (None if c1 is None else c1.numpy())


def naive_layer(case, state_dict, x, h0, c0, lengths):
    """naive's (out, h_n, c_n) in the case's user layout; inputs as fastlstm saw them."""
    if case.unbatched:
        x = x[:, None]
        h0 = None if h0 is None else h0[:, None]
        c0 = None if c0 is None else c0[:, None]
    elif case.batch_first:
        x = x.transpose(1, 0, 2)
    out, h_n, c_n = naive.sequence(case.mode, state_dict, x, h0, c0, lengths)
    if case.unbatched:
        out, h_n = out[:, 0], h_n[:, 0]
        c_n = None if c_n is None else c_n[:, 0]
    elif case.batch_first:
        out = out.transpose(1, 0, 2)
    return out, h_n, c_n


def naive_cell(case, state_dict, x, h0, c0):
    if case.unbatched:
        x = x[None]
        h0 = None if h0 is None else h0[None]
        c0 = None if c0 is None else c0[None]
    h1, c1 = naive.cell(case.mode, state_dict, x, h0, c0)
    if case.unbatched:
        h1 = h1[0]
        c1 = None if c1 is None else c1[0]
    return h1, c1


# -- comparing --------------------------------------------------------------------------------

def assert_matches(got, ref, reference, names):
    """Each fastlstm result is a float32 numpy array of the reference's shape, within
    ``TOLERANCE[reference]``; ``None`` results must be ``None`` on both sides."""
    for name, got_value, ref_value in zip(names, got, ref):
        if ref_value is None:
            assert got_value is None, f"{name}: expected None, got {type(got_value).__name__}"
            continue
        assert type(got_value) is np.ndarray, f"{name}: expected numpy.ndarray, got {type(got_value)}"
        assert got_value.dtype == np.float32, f"{name}: expected float32, got {got_value.dtype}"
        assert got_value.shape == ref_value.shape, (
            f"{name}: expected shape {ref_value.shape}, got {got_value.shape}")
        np.testing.assert_allclose(got_value, ref_value, err_msg=f"{name} vs {reference}",
                                   **TOLERANCE[reference])
