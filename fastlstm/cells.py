"""``LSTMCell``, ``GRUCell`` and ``RNNCell``: one step, PyTorch's ``nn.*Cell`` semantics.

A cell runs the same kernels as the sequence layers, with one step.
"""

import numpy as np

from . import _validate
from ._module import PackedModule
from .layout import cell_weights
from .params import cell_spec
from .variants import Variant


class _Cell(PackedModule):
    def __init__(self, input_size, hidden_size, bias=True, *, backend="auto", precision="fp32"):
        self.input_size = _validate.check_positive_int(input_size, "input_size")
        self.hidden_size = _validate.check_positive_int(hidden_size, "hidden_size")
        self.bias = bool(bias)
        self._spec = cell_spec(self._mode, self.input_size, self.hidden_size, self.bias)
        self._init_weights(backend, precision)

    def _pack(self, params):
        return tuple(self._backend.pack_layer(self._mode, self.hidden_size, 0, layer, Variant(),
                                              self.precision)
                     for layer in cell_weights(params, self._mode, self.hidden_size))

    @classmethod
    def _torch_hyperparameters(cls, module):
        return dict(input_size=module.input_size, hidden_size=module.hidden_size, bias=module.bias)

    def _step(self, x, h0, c0):
        """x (B, I) or (I,) -> h1, c1 (c1 None except LSTM), unbatched like x."""
        x, batched = _validate.check_cell_input(x, self.input_size)
        batch = x.shape[0]
        shape = (batch, self.hidden_size)
        name = "hx[0]" if self._mode == "LSTM" else "hx"
        h0 = (np.zeros(shape, np.float32) if h0 is None
              else _validate.check_state(h0, name, shape, batched))
        if self._mode == "LSTM":
            c0 = (np.zeros(shape, np.float32) if c0 is None
                  else _validate.check_state(c0, "hx[1]", shape, batched))
            c0 = c0[None]
        _, h_n, c_n = self._backend.run_layers(self._mode, self._layers, self.hidden_size, 0,
                                               x[None], h0[None], c0, None)
        h1 = h_n[0] if batched else h_n[0, 0]
        c1 = None if c_n is None else (c_n[0] if batched else c_n[0, 0])
        return h1, c1

    def __repr__(self):
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}, bias={self.bias}, "
                f"backend={self.backend_name!r}, precision={self.precision!r})")


class LSTMCell(_Cell):
    """``cell(x, hx=None) -> (h1, c1)``; x (B, I) or (I,), hx = (h0, c0) each (B, H) or (H,)."""

    _mode = "LSTM"
    _torch_class = "LSTMCell"

    def __call__(self, x, hx=None):
        if hx is None:
            h0 = c0 = None
        else:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"hx: expected a tuple (h0, c0) for LSTMCell, got {type(hx).__name__}")
            h0, c0 = hx
        return self._step(x, h0, c0)

    forward = __call__


class GRUCell(_Cell):
    """``cell(x, hx=None) -> h1``; x (B, I) or (I,), hx (B, H) or (H,)."""

    _mode = "GRU"
    _torch_class = "GRUCell"

    def __call__(self, x, hx=None):
        return self._step(x, hx, None)[0]

    forward = __call__


class RNNCell(_Cell):
    """``cell(x, hx=None) -> h1`` with h1 = act(W_ih x + b_ih + W_hh h + b_hh), act tanh or relu."""

    _torch_class = "RNNCell"

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", *, backend="auto",
                 precision="fp32"):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self._mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        super().__init__(input_size, hidden_size, bias, backend=backend, precision=precision)

    def __call__(self, x, hx=None):
        return self._step(x, hx, None)[0]

    forward = __call__

    @classmethod
    def _torch_hyperparameters(cls, module):
        return dict(super()._torch_hyperparameters(module), nonlinearity=module.nonlinearity)
