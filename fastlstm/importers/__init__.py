"""Importers: layers from other frameworks' files, one module per source format.

``from_onnx`` reads the ``LSTM``/``GRU``/``RNN`` nodes of an ONNX model; ``from_keras`` the
``LSTM``, ``GRU``, ``SimpleRNN`` and ``Bidirectional`` layers of a ``.keras``/``.h5`` model.
Each source module keeps a table of converters, one per source operator or layer class;
the shared setters (gate reorders, variant keywords) are in ``_common``.  The source
packages (``onnx``, ``h5py``) are imported only when an importer runs.
"""

from ._reversed import ReversedLayer
from .keras import KerasLayer, from_keras
from .onnx import from_onnx, onnx_hx, onnx_outputs

__all__ = ["from_onnx", "from_keras", "onnx_hx", "onnx_outputs", "ReversedLayer", "KerasLayer"]
