"""A slow, obviously-correct float64 reference for every layer and cell of fastlstm.

Written straight from the equations (PyTorch's documentation of ``nn.LSTM``,
``nn.GRU``, ``nn.RNN`` and their cells); it never imports fastlstm, so a test
reads ``ref = naive.x(...)``, ``got = fastlstm.X(...)(...)`` and compares.

Conventions:
    mode        "LSTM", "GRU", "RNN_TANH" or "RNN_RELU"
    state_dict  {PyTorch key: numpy array}; hyper-parameters are read from the keys
    x           (T, B, I) time-major and batched (tests transpose / add B themselves)
    h0          (L*D, B, H_out), c0 (L*D, B, H), or None for zeros
    lengths     (B,) ints in [1, T], or None for all T
Every sequence is run on its own, one step at a time, in float64.
"""

import numpy as np

MODES = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")
GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}  # gate blocks per mode


def sigmoid(v):
    with np.errstate(over="ignore"):  # exp(-v) = inf for v << 0 gives the right limit, 0
        return 1.0 / (1.0 + np.exp(-v))


def _f64(array):
    return None if array is None else np.asarray(array, dtype=np.float64)


# -- one step of one sequence ----------------------------------------------------------------
# x (I,), h (H_out,), c (H,); weights in PyTorch layout; b_ih/b_hh None without bias.

def lstm_step(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None):
    """-> (h', c').  Gates i, f, g, o; with a projection h' = W_hr (o * tanh(c'))."""
    hidden = w_hh.shape[0] // 4
    pre = w_ih @ x + w_hh @ h
    if b_ih is not None:
        pre = pre + b_ih + b_hh
    i = sigmoid(pre[0 * hidden:1 * hidden])
    f = sigmoid(pre[1 * hidden:2 * hidden])
    g = np.tanh(pre[2 * hidden:3 * hidden])
    o = sigmoid(pre[3 * hidden:4 * hidden])
    c_new = f * c + i * g
    h_new = o * np.tanh(c_new)
    if w_hr is not None:
        h_new = w_hr @ h_new
    return h_new, c_new


def gru_step(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    """-> h'.  r, z, n; n = tanh(W_in x + b_in + r * (W_hn h + b_hn)); h' = (1 - z) n + z h."""
    hidden = w_hh.shape[0] // 3
    gi = w_ih @ x
    gh = w_hh @ h
    if b_ih is not None:
        gi = gi + b_ih
        gh = gh + b_hh
    r = sigmoid(gi[0 * hidden:1 * hidden] + gh[0 * hidden:1 * hidden])
    z = sigmoid(gi[1 * hidden:2 * hidden] + gh[1 * hidden:2 * hidden])
    n = np.tanh(gi[2 * hidden:3 * hidden] + r * gh[2 * hidden:3 * hidden])
    return (1.0 - z) * n + z * h


def rnn_step(x, h, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
    """-> h' = act(W_ih x + b_ih + W_hh h + b_hh)."""
    pre = w_ih @ x + w_hh @ h
    if b_ih is not None:
        pre = pre + b_ih + b_hh
    if nonlinearity == "tanh":
        return np.tanh(pre)
    if nonlinearity == "relu":
        return np.maximum(pre, 0.0)
    raise ValueError(nonlinearity)


def _step(mode, x, h, c, weights):
    """One step of any mode -> (h', c' or None)."""
    if mode == "LSTM":
        return lstm_step(x, h, c, **weights)
    if mode == "GRU":
        return gru_step(x, h, **weights), None
    nonlinearity = {"RNN_TANH": "tanh", "RNN_RELU": "relu"}[mode]
    return rnn_step(x, h, nonlinearity=nonlinearity, **weights), None


# -- cells -------------------------------------------------------------------------------------

def _cell_weights(state_dict):
    return {"w_ih": _f64(state_dict["weight_ih"]), "w_hh": _f64(state_dict["weight_hh"]),
            "b_ih": _f64(state_dict.get("bias_ih")), "b_hh": _f64(state_dict.get("bias_hh"))}


def cell(mode, state_dict, x, h0=None, c0=None):
    """``nn.LSTMCell``/``GRUCell``/``RNNCell`` on a batch: x (B, I), h0/c0 (B, H) or None.

    -> (h1 (B, H), c1 (B, H) or None), float64.
    """
    weights = _cell_weights(state_dict)
    x = _f64(x)
    batch, hidden = x.shape[0], weights["w_hh"].shape[1]
    h0 = np.zeros((batch, hidden)) if h0 is None else _f64(h0)
    c0 = np.zeros((batch, hidden)) if c0 is None else _f64(c0)
    h1 = np.zeros((batch, hidden))
    c1 = np.zeros((batch, hidden))
    for b in range(batch):
        h1[b], c_b = _step(mode, x[b], h0[b], c0[b], weights)
        if c_b is not None:
            c1[b] = c_b
    return h1, (c1 if mode == "LSTM" else None)


# -- stacked, bidirectional sequence layers --------------------------------------------------

def hyperparameters(mode, state_dict):
    """(num_layers, num_directions, hidden_size, proj_size, bias) read off the keys."""
    num_layers = 1 + max(int(key.split("_l")[1].split("_")[0]) for key in state_dict)
    directions = 2 if "weight_ih_l0_reverse" in state_dict else 1
    gates = GATES[mode]
    hidden = state_dict["weight_ih_l0"].shape[0] // gates
    proj = state_dict["weight_hr_l0"].shape[0] if "weight_hr_l0" in state_dict else 0
    bias = "bias_ih_l0" in state_dict
    return num_layers, directions, hidden, proj, bias


def _direction_weights(mode, state_dict, tag):
    weights = {"w_ih": _f64(state_dict[f"weight_ih_{tag}"]),
               "w_hh": _f64(state_dict[f"weight_hh_{tag}"]),
               "b_ih": _f64(state_dict.get(f"bias_ih_{tag}")),
               "b_hh": _f64(state_dict.get(f"bias_hh_{tag}"))}
    if mode == "LSTM":
        weights["w_hr"] = _f64(state_dict.get(f"weight_hr_{tag}"))
    return weights


def sequence(mode, state_dict, x, h0=None, c0=None, lengths=None):
    """``nn.LSTM``/``GRU``/``RNN`` on time-major batched x (T, B, I).

    -> (out (T, B, D*H_out), h_n (L*D, B, H_out), c_n (L*D, B, H) or None), float64.
    Sequence b only sees steps 0..lengths[b]-1; the reverse direction starts at
    step lengths[b]-1; out is zero past each length; h_n/c_n are the states after
    the last step each direction ran.
    """
    num_layers, directions, hidden, proj, _ = hyperparameters(mode, state_dict)
    hidden_out = proj or hidden
    x = _f64(x)
    n_steps, batch = x.shape[0], x.shape[1]
    n_states = num_layers * directions
    h0 = np.zeros((n_states, batch, hidden_out)) if h0 is None else _f64(h0)
    c0 = np.zeros((n_states, batch, hidden)) if c0 is None else _f64(c0)
    lengths = [n_steps] * batch if lengths is None else [int(n) for n in lengths]
    h_n = np.zeros((n_states, batch, hidden_out))
    c_n = np.zeros((n_states, batch, hidden))

    layer_input = x
    for layer in range(num_layers):
        out = np.zeros((n_steps, batch, directions * hidden_out))
        for d in range(directions):
            tag = f"l{layer}" + ("_reverse" if d == 1 else "")
            weights = _direction_weights(mode, state_dict, tag)
            state = layer * directions + d
            columns = slice(d * hidden_out, (d + 1) * hidden_out)
            for b in range(batch):
                steps = range(lengths[b])
                if d == 1:
                    steps = reversed(steps)
                h, c = h0[state, b], c0[state, b]
                for t in steps:
                    h, c = _step(mode, layer_input[t, b], h, c, weights)
                    out[t, b, columns] = h
                h_n[state, b] = h
                if c is not None:
                    c_n[state, b] = c
        layer_input = out
    return layer_input, h_n, (c_n if mode == "LSTM" else None)


# -- PyTorch's parameter names and shapes, from the documentation ----------------------------


def param_shapes(mode, input_size, hidden_size, num_layers=1, bidirectional=False,
                 proj_size=0, bias=True):
    """{key: shape} of ``nn.LSTM``/``GRU``/``RNN``, in ``state_dict`` order."""
    gates = GATES[mode] * hidden_size
    hidden_out = proj_size or hidden_size
    suffixes = ("", "_reverse") if bidirectional else ("",)
    shapes = {}
    for layer in range(num_layers):
        layer_input = input_size if layer == 0 else len(suffixes) * hidden_out
        for suffix in suffixes:
            shapes[f"weight_ih_l{layer}{suffix}"] = (gates, layer_input)
            shapes[f"weight_hh_l{layer}{suffix}"] = (gates, hidden_out)
            if bias:
                shapes[f"bias_ih_l{layer}{suffix}"] = (gates,)
                shapes[f"bias_hh_l{layer}{suffix}"] = (gates,)
            if proj_size:
                shapes[f"weight_hr_l{layer}{suffix}"] = (proj_size, hidden_size)
    return shapes


def cell_param_shapes(mode, input_size, hidden_size, bias=True):
    """{key: shape} of ``nn.LSTMCell``/``GRUCell``/``RNNCell``, in ``state_dict`` order."""
    gates = GATES[mode] * hidden_size
    shapes = {"weight_ih": (gates, input_size), "weight_hh": (gates, hidden_size)}
    if bias:
        shapes["bias_ih"] = (gates,)
        shapes["bias_hh"] = (gates,)
    return shapes
