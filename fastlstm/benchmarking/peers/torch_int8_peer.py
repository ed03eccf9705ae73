"""PyTorch dynamic int8: ``torch.ao.quantization.quantize_dynamic`` on the LSTM/GRU, qint8.

quantize_dynamic swaps the *children* of the module it is given, so the nn.LSTM/GRU is
wrapped in a parent first: applied to a bare nn.LSTM it returns it unchanged, still fp32,
without a word.  ``build`` checks the swap happened.  Weights are int8 (per tensor), and
activations are quantized to int8 on the fly inside each product.
"""

import warnings

from . import torch_peer

NAME = "torch-int8"
BASE = "torch"
PRECISION = "int8"
version = torch_peer.version


def quantize(module):
    """The dynamically quantized copy of ``module`` (an nn.LSTM/GRU); raises RuntimeError
    when torch left it in float32."""
    import torch

    from . import PeerUnavailable

    class Parent(torch.nn.Module):
        def __init__(self, rnn):
            super().__init__()
            self.rnn = rnn

    quantization = getattr(getattr(torch, "ao", None), "quantization", None)
    if quantization is None or not hasattr(quantization, "quantize_dynamic"):
        raise PeerUnavailable(f"torch {torch.__version__} has no "
                              "torch.ao.quantization.quantize_dynamic")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecation notice
        quantized = quantization.quantize_dynamic(Parent(module), {torch.nn.LSTM, torch.nn.GRU},
                                                  dtype=torch.qint8).rnn
    if type(quantized) is type(module) or "quantized" not in type(quantized).__module__:
        raise RuntimeError(f"quantize_dynamic left {type(module).__name__} unquantized "
                           f"({type(quantized).__module__}.{type(quantized).__name__})")
    return quantized


def build(case, threads):
    import torch
    return torch_peer.runner(quantize(torch_peer.build_module(case)), torch.from_numpy(case.x),
                             threads)
