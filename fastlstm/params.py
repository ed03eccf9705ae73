"""Parameter specs: the names and shapes of every weight, exactly as PyTorch names them.

A spec is an ordered ``{key: shape}`` dict in ``state_dict`` order, so a layer can
say which key is missing, unexpected or mis-shaped before anything is packed.
"""

import numpy as np

from ._arrays import as_float32, to_numpy

# gates per cell type, in PyTorch's order
GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def direction_suffixes(bidirectional):
    return ("", "_reverse") if bidirectional else ("",)


def sequence_spec(mode, input_size, hidden_size, num_layers, bidirectional, proj_size, bias,
                  peephole=False):
    """{key: shape} of ``nn.LSTM``/``nn.GRU``/``nn.RNN`` with these hyper-parameters.

    With ``peephole`` each layer and direction also has ``weight_peephole_l{k}[_reverse]``
    (3, H): the peephole weights of gates i, f, o.
    """
    gates = GATES[mode] * hidden_size
    hidden_out = proj_size or hidden_size
    directions = len(direction_suffixes(bidirectional))
    spec = {}
    for layer in range(num_layers):
        layer_input = input_size if layer == 0 else directions * hidden_out
        for suffix in direction_suffixes(bidirectional):
            tag = f"l{layer}{suffix}"
            spec[f"weight_ih_{tag}"] = (gates, layer_input)
            spec[f"weight_hh_{tag}"] = (gates, hidden_out)
            if bias:
                spec[f"bias_ih_{tag}"] = (gates,)
                spec[f"bias_hh_{tag}"] = (gates,)
            if proj_size:
                spec[f"weight_hr_{tag}"] = (proj_size, hidden_size)
            if peephole:
                spec[f"weight_peephole_{tag}"] = (3, hidden_size)
    return spec


def cell_spec(mode, input_size, hidden_size, bias):
    """{key: shape} of ``nn.LSTMCell``/``nn.GRUCell``/``nn.RNNCell``."""
    gates = GATES[mode] * hidden_size
    spec = {"weight_ih": (gates, input_size), "weight_hh": (gates, hidden_size)}
    if bias:
        spec["bias_ih"] = (gates,)
        spec["bias_hh"] = (gates,)
    return spec


def init_params(spec, hidden_size, rng=None):
    """PyTorch's default initialisation: every parameter U(-1/sqrt(H), 1/sqrt(H))."""
    rng = np.random.default_rng() if rng is None else rng
    bound = 1.0 / np.sqrt(hidden_size)
    return {key: rng.uniform(-bound, bound, size=shape).astype(np.float32)
            for key, shape in spec.items()}


def check_state_dict(spec, state_dict, owner):
    """Validated float32 copies of ``state_dict`` against ``spec`` (strict).

    Missing keys, unexpected keys, mis-shaped or non-float values -> ValueError /
    TypeError naming the key, the expected and the received shape or dtype.
    """
    if not hasattr(state_dict, "keys"):
        raise TypeError(f"state_dict: expected a mapping of names to arrays, got {type(state_dict).__name__}")
    missing = [key for key in spec if key not in state_dict]
    unexpected = [key for key in state_dict if key not in spec]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        raise ValueError(f"state_dict does not match {owner}: " + "; ".join(parts)
                         + f" (expected keys: {list(spec)})")
    params = {}
    for key, shape in spec.items():
        received = to_numpy(state_dict[key])
        if tuple(received.shape) != tuple(shape):
            raise ValueError(f"state_dict[{key!r}]: expected shape {tuple(shape)} for {owner}, "
                             f"got {tuple(received.shape)}")
        params[key] = np.array(as_float32(received, f"state_dict[{key!r}]"), dtype=np.float32, copy=True)
    return params
