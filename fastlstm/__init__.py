"""fastlstm: fast CPU inference for LSTM, GRU and RNN layers with PyTorch semantics.

numpy in, numpy out; weights packed once at load; the whole time loop in
compiled code with the GIL released.  PyTorch is never imported at run time.
"""

from .backends import available_backends
from .cells import GRUCell, LSTMCell, RNNCell
from .checkpoint import CheckpointError, UnsafeCheckpointError, read_state_dict
from .importers import from_keras, from_onnx
from .layers import GRU, LSTM, RNN
from .streaming import Stream, StreamPool
from .loading import load, load_all
from .threads import get_num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "available_backends",
           "get_num_threads", "set_num_threads", "Stream", "StreamPool", "from_onnx", "from_keras",
           "read_state_dict", "load", "load_all", "CheckpointError", "UnsafeCheckpointError"]
