"""What layers and cells share: PyTorch-named weights held as float32, packed by
the chosen backend in the chosen precision, and loading from torch modules."""

import copy

from .backends import resolve_backend
from .params import check_state_dict, init_params
from .precision import check_precision


class PackedModule:
    """Base of every layer and cell.  Subclasses set ``_mode``, ``_torch_class``,
    ``_spec`` and implement ``_pack(params) -> packed layers`` and
    ``_torch_hyperparameters(module)``."""

    _mode = None
    _torch_class = None

    def _init_weights(self, backend, precision):
        self.backend = backend
        self.precision = check_precision(precision)
        self._backend = resolve_backend(backend, self.precision)
        self._set_params(init_params(self._spec, self.hidden_size))

    @property
    def backend_name(self):
        """The backend this module runs on (``auto`` resolved)."""
        return self._backend.NAME

    def _set_params(self, params):
        self._params = params
        self._layers = self._pack(params)

    def load_state_dict(self, state_dict):
        """Load PyTorch-named weights (numpy arrays or torch tensors); strict.

        Missing, unexpected or mis-shaped keys raise ValueError; nothing is changed then.
        """
        self._set_params(check_state_dict(self._spec, state_dict, repr(self)))
        return self

    def state_dict(self):
        """{PyTorch key: float32 numpy array} copies, in PyTorch's order: the weights
        as loaded, whatever ``precision`` the module computes in."""
        return {key: value.copy() for key, value in self._params.items()}

    def with_precision(self, precision):
        """A new module with the same weights, converted once to ``precision``
        ("fp32", "bf16" or "int8"); this one is unchanged."""
        other = copy.copy(self)
        other.precision = check_precision(precision)
        other._backend = resolve_backend(self.backend, other.precision)
        other._set_params(self._params)
        return other

    @classmethod
    def from_torch(cls, module, *, backend="auto", precision="fp32"):
        """A module with the hyper-parameters and weights of a ``torch.nn`` module of the
        same type."""
        names = [klass.__name__ for klass in type(module).__mro__]
        if cls._torch_class not in names:
            raise TypeError(f"module: expected a torch.nn.{cls._torch_class}, "
                            f"got {type(module).__name__}")
        built = cls(**cls._torch_hyperparameters(module), backend=backend, precision=precision)
        return built.load_state_dict(module.state_dict())
