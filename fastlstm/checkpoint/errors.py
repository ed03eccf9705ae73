"""The exceptions (and the one warning) of checkpoint reading and loading.

Every error is a ``CheckpointError``, itself a ``ValueError``, so callers can
catch one type; the subclasses say what went wrong and messages say what to do.
"""


class CheckpointError(ValueError):
    """The file or state dict cannot be turned into weights."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The path does not exist (also a ``FileNotFoundError``)."""


class UnsupportedCheckpointError(CheckpointError):
    """A file of a kind fastlstm does not read (unknown bytes, TorchScript, old tar format...)."""


class CorruptCheckpointError(CheckpointError):
    """A file of a known kind whose contents are truncated or inconsistent."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle that asks for a Python global outside the tensor-rebuilding allow-list."""


class StateDictError(CheckpointError):
    """Tensors that do not describe the recurrent module(s) asked for: none found, several
    found, a gap in layer numbering, a missing, extra or mis-shaped weight."""


class NonFiniteWeightWarning(RuntimeWarning):
    """A loaded weight contains NaN or infinity."""
