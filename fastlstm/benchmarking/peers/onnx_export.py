"""Exporting a case's torch module to ONNX once, for ONNX Runtime and OpenVINO alike.

The legacy TorchScript exporter (``dynamo=False``) maps ``nn.LSTM``/``nn.GRU`` to
one ONNX ``LSTM``/``GRU`` node per layer (both directions in one node); the
export is checked for exactly that, so peers run the fused op and not an
unrolled loop.  Static shapes: each case has one input shape.
"""

import os
import warnings

OPSET = 17
INPUT_NAME = "x"
OUTPUT_NAME = "y"


def export(case, directory):
    """Write ``<directory>/<config>.onnx`` and return its path (needs torch and onnx)."""
    import onnx
    import torch

    from . import torch_peer
    path = os.path.join(directory, f"{case.config.name}.onnx")
    # a fresh module: one that already ran under inference_mode holds inference
    # tensors, which the tracing exporter refuses
    module = torch_peer.build_module(case)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(module, (torch.from_numpy(case.x),), path, opset_version=OPSET,
                          dynamo=False, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME, "h_n"] + (["c_n"] if case.config.mode == "LSTM"
                                                               else []))
    check_graph(onnx.load(path), case.config)
    return path


def check_graph(model, config):
    """One fused LSTM/GRU/RNN node per layer, and no loops."""
    op_types = [node.op_type for node in model.graph.node]
    fused = op_types.count(config.mode)
    if fused != config.num_layers or {"Loop", "Scan"} & set(op_types):
        raise RuntimeError(f"ONNX export of {config.name}: expected {config.num_layers} "
                           f"{config.mode} node(s) and no loops, got {op_types}")
