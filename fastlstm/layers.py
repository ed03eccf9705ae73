"""``LSTM``, ``GRU`` and ``RNN``: stacked, optionally bidirectional sequence layers
with PyTorch's constructor signatures, weight names and call semantics."""

import numpy as np

from . import _validate
from ._module import PackedModule
from .layout import sequence_weights
from .params import direction_suffixes, sequence_spec
from .variants import make_variant


class _SequenceLayer(PackedModule):
    """Shared machinery; subclasses fix the cell type (``_mode``)."""

    _mode = None
    _torch_class = None

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, *, backend="auto", precision="fp32",
                 **variant):
        self.input_size = _validate.check_positive_int(input_size, "input_size")
        self.hidden_size = _validate.check_positive_int(hidden_size, "hidden_size")
        self.num_layers = _validate.check_positive_int(num_layers, "num_layers")
        self.proj_size = _validate.check_positive_int(proj_size, "proj_size", minimum=0)
        if self.proj_size and self._mode != "LSTM":
            raise ValueError(f"proj_size: only LSTM supports a projection, got proj_size={proj_size}")
        if self.proj_size >= self.hidden_size:
            raise ValueError(f"proj_size: expected 0 <= proj_size < hidden_size={hidden_size}, "
                             f"got {proj_size}")
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.bidirectional = bool(bidirectional)
        # dropout acts between layers in training only; accepted and checked like PyTorch
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
            raise ValueError(f"dropout: expected a number in [0, 1], got {dropout!r}")
        self.dropout = float(dropout)
        self.variant = make_variant(self._mode, self.proj_size, **variant)
        self._spec = sequence_spec(self._mode, self.input_size, self.hidden_size, self.num_layers,
                                   self.bidirectional, self.proj_size, self.bias,
                                   self.variant.peephole)
        self._init_weights(backend, precision)

    # -- weights ---------------------------------------------------------------------------

    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    def _pack(self, params):
        weights = sequence_weights(params, self._mode, self.hidden_size, self.num_layers,
                                   direction_suffixes(self.bidirectional))
        return tuple(self._backend.pack_layer(self._mode, self.hidden_size, self.proj_size,
                                              layer, self.variant, self.precision)
                     for layer in weights)

    @classmethod
    def _torch_hyperparameters(cls, module):
        return dict(input_size=module.input_size, hidden_size=module.hidden_size,
                    num_layers=module.num_layers, bias=module.bias,
                    batch_first=module.batch_first, bidirectional=module.bidirectional)

    # -- calling ---------------------------------------------------------------------------

    def _state_shapes(self, batch):
        states = self.num_layers * self.num_directions
        return (states, batch, self.proj_size or self.hidden_size), (states, batch, self.hidden_size)

    def _prepare(self, x, h0, c0, lengths):
        x, batched = _validate.check_sequence_input(x, self.input_size, self.batch_first)
        n_steps, batch = x.shape[0], x.shape[1]
        h_shape, c_shape = self._state_shapes(batch)
        name = "hx[0]" if self._mode == "LSTM" else "hx"
        if h0 is not None:  # None: the backend starts from zeros
            h0 = _validate.check_state(h0, name, h_shape, batched)
        if c0 is not None:
            c0 = _validate.check_state(c0, "hx[1]", c_shape, batched)
        if lengths is not None:
            if not batched:
                lengths = np.asarray(_validate.to_numpy(lengths)).reshape(-1)
            lengths = _validate.check_lengths(lengths, batch, n_steps)
        return x, batched, h0, c0, lengths

    def _run(self, x, h0, c0, lengths):
        x, batched, h0, c0, lengths = self._prepare(x, h0, c0, lengths)
        out, h_n, c_n = self._backend.run_layers(self._mode, self._layers, self.hidden_size,
                                                 self.proj_size, x, h0, c0, lengths)
        if not batched:
            out, h_n = out[:, 0], h_n[:, 0]
            c_n = c_n[:, 0] if c_n is not None else None
        elif self.batch_first:
            out = np.ascontiguousarray(out.transpose(1, 0, 2))
        return out, h_n, c_n

    def stream(self, batch_size=1):
        """A ``fastlstm.Stream``: this layer fed chunk by chunk, the state carried between calls."""
        from .streaming import Stream
        return Stream(self, batch_size)

    def __repr__(self):
        extra = f", proj_size={self.proj_size}" if self.proj_size else ""
        if not self.variant.is_pytorch:
            extra += f", {self.variant}"
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}, "
                f"num_layers={self.num_layers}, bias={self.bias}, batch_first={self.batch_first}, "
                f"bidirectional={self.bidirectional}{extra}, backend={self.backend_name!r}, "
                f"precision={self.precision!r})")


class LSTM(_SequenceLayer):
    """Multi-layer LSTM with PyTorch's ``nn.LSTM`` semantics (gates i, f, g, o).

    ``layer(x, hx=None, lengths=None) -> out, (h_n, c_n)``
        x:      (T, B, I), (B, T, I) with batch_first, or unbatched (T, I); any float dtype
        hx:     (h0, c0) with h0 (L*D, B, H_out), c0 (L*D, B, H); zeros when None
        lengths: (B,) integers in [1, T]; steps past a length give zeros in ``out``
        out:    (T, B, D*H_out) float32 (batch-first/unbatched like x)
        h_n, c_n: state after each sequence's last valid step
    H_out is proj_size when set, else hidden_size; D is 2 when bidirectional.
    """

    _mode = "LSTM"
    _torch_class = "LSTM"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, *, backend="auto",
                 precision="fp32", peephole=False, coupled_input_forget=False, clip=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, backend=backend, precision=precision,
                         peephole=peephole,
                         coupled_input_forget=coupled_input_forget, clip=clip)

    def __call__(self, x, hx=None, lengths=None):
        if hx is None:
            h0 = c0 = None
        else:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"hx: expected a tuple (h0, c0) for LSTM, got {type(hx).__name__}")
            h0, c0 = hx
        out, h_n, c_n = self._run(x, h0, c0, lengths)
        return out, (h_n, c_n)

    forward = __call__

    @classmethod
    def _torch_hyperparameters(cls, module):
        return dict(super()._torch_hyperparameters(module), proj_size=module.proj_size)


class GRU(_SequenceLayer):
    """Multi-layer GRU with PyTorch's ``nn.GRU`` semantics (gates r, z, n).

    ``layer(x, hx=None, lengths=None) -> out, h_n``; shapes as for ``LSTM`` without c.
    """

    _mode = "GRU"
    _torch_class = "GRU"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, *, backend="auto",
                 precision="fp32", linear_before_reset=True, clip=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, backend=backend, precision=precision,
                         linear_before_reset=linear_before_reset, clip=clip)

    def __call__(self, x, hx=None, lengths=None):
        out, h_n, _ = self._run(x, hx, None, lengths)
        return out, h_n

    forward = __call__


class RNN(_SequenceLayer):
    """Multi-layer Elman RNN with PyTorch's ``nn.RNN`` semantics: h' = act(W_ih x + W_hh h + b).

    ``nonlinearity`` is "tanh" or "relu"; ``layer(x, hx=None, lengths=None) -> out, h_n``.
    """

    _torch_class = "RNN"

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, proj_size=0, *,
                 backend="auto", precision="fp32", clip=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self._mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, backend=backend, precision=precision, clip=clip)

    def __call__(self, x, hx=None, lengths=None):
        out, h_n, _ = self._run(x, hx, None, lengths)
        return out, h_n

    forward = __call__

    @classmethod
    def _torch_hyperparameters(cls, module):
        return dict(super()._torch_hyperparameters(module), nonlinearity=module.nonlinearity)
