"""A case as an ONNX model (once), for ONNX Runtime and OpenVINO alike.

Two routes, chosen by whether torch has the case's cell:

* PyTorch cells: the legacy TorchScript exporter (``dynamo=False``) maps
  ``nn.LSTM``/``nn.GRU`` to one ONNX ``LSTM``/``GRU`` node per layer (both
  directions in one node); the export is checked for exactly that, so peers run
  the fused op and not an unrolled loop.
* ONNX-only variants (peepholes, GRU ``linear_before_reset=0``): torch has no
  such module, so the model is written with ``onnx.helper`` from the case's
  PyTorch-named weights, one node per layer, gates reordered with the inverse of
  the importer's tables (``fastlstm.importers.onnx``) so the two stay one fact.

Either way the graph input is ``x`` (T, B, I) and the output ``y`` (T, B, D*H),
like ``nn.LSTM``'s; static shapes (each case has one input shape).
"""

import os
import warnings

import numpy as np

OPSET = 17
INPUT_NAME = "x"
OUTPUT_NAME = "y"


def export(case, directory):
    """Write ``<directory>/<config>.onnx`` and return its path (needs onnx, and torch for
    the PyTorch cells)."""
    import onnx

    path = os.path.join(directory, f"{case.config.name}.onnx")
    if case.config.torch_expressible:
        _torch_export(case, path)
    else:
        onnx.save(build_model(case.config, case.state_dict), path)
    check_graph(onnx.load(path), case.config)
    return path


def _torch_export(case, path):
    import torch

    from . import torch_peer
    # a fresh module: one that already ran under inference_mode holds inference
    # tensors, which the tracing exporter refuses
    module = torch_peer.build_module(case)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(module, (torch.from_numpy(case.x),), path, opset_version=OPSET,
                          dynamo=False, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME, "h_n"] + (["c_n"] if case.config.mode == "LSTM"
                                                               else []))


def check_graph(model, config):
    """One fused LSTM/GRU/RNN node per layer, and no loops."""
    op_types = [node.op_type for node in model.graph.node]
    fused = op_types.count(config.mode)
    if fused != config.num_layers or {"Loop", "Scan"} & set(op_types):
        raise RuntimeError(f"ONNX export of {config.name}: expected {config.num_layers} "
                           f"{config.mode} node(s) and no loops, got {op_types}")


# -- writing the model from weights ------------------------------------------------------------

def _inverse(order):
    """The permutation undoing ``order`` (importer: ONNX block order[k] -> PyTorch block k)."""
    inverse = [0] * len(order)
    for pytorch_block, onnx_block in enumerate(order):
        inverse[onnx_block] = pytorch_block
    return tuple(inverse)


def onnx_weights(config, state_dict, layer):
    """One layer's PyTorch-named weights -> ONNX W (D, G*H, I), R (D, G*H, H), B (D, 2*G*H)
    and, with peepholes, P (D, 3H); gate blocks in ONNX's order (LSTM i, o, f, c; GRU z, r, h;
    P i, o, f)."""
    from ...importers._common import reorder_gates
    from ...importers.onnx import _GATE_ORDER, _PEEPHOLE_ORDER

    to_onnx = _inverse(_GATE_ORDER[config.mode])
    to_onnx_peephole = _inverse(_PEEPHOLE_ORDER)
    suffixes = ("", "_reverse")[:config.directions]
    W, R, B, P = [], [], [], []
    for suffix in suffixes:
        tag = f"l{layer}{suffix}"
        W.append(reorder_gates(state_dict[f"weight_ih_{tag}"], to_onnx))
        R.append(reorder_gates(state_dict[f"weight_hh_{tag}"], to_onnx))
        B.append(np.concatenate([reorder_gates(state_dict[f"bias_ih_{tag}"], to_onnx),
                                 reorder_gates(state_dict[f"bias_hh_{tag}"], to_onnx)]))
        if config.peephole:
            P.append(reorder_gates(state_dict[f"weight_peephole_{tag}"], to_onnx_peephole).ravel())
    weights = {"W": np.stack(W), "R": np.stack(R), "B": np.stack(B)}
    if config.peephole:
        weights["P"] = np.stack(P)
    return weights


def build_model(config, state_dict):
    """An ONNX ``ModelProto``: one ``LSTM``/``GRU``/``RNN`` node per layer from the PyTorch-named
    ``state_dict``, each node's Y (T, D, B, H) turned into (T, B, D*H) for the next layer
    and for the output ``y``."""
    from onnx import TensorProto, helper, numpy_helper

    steps, batch, width = config.output_shape()
    nodes, initializers = [], []
    layer_input = INPUT_NAME
    for layer in range(config.num_layers):
        weights = onnx_weights(config, state_dict, layer)
        names = {key: f"{key}_{layer}" for key in weights}
        initializers += [numpy_helper.from_array(value.astype(np.float32), names[key])
                         for key, value in weights.items()]
        inputs = [layer_input, names["W"], names["R"], names["B"]]
        if "P" in names:
            inputs += ["", "", "", names["P"]]   # sequence_lens, initial_h, initial_c absent
        attributes = dict(hidden_size=config.hidden_size,
                          direction="bidirectional" if config.bidirectional else "forward")
        if config.mode == "GRU":
            attributes["linear_before_reset"] = int(config.linear_before_reset)
        nodes.append(helper.make_node(config.mode, inputs, [f"Y_{layer}"],
                                      name=f"{config.mode}_{layer}", **attributes))
        nodes.append(helper.make_node("Transpose", [f"Y_{layer}"], [f"Yt_{layer}"],
                                      perm=[0, 2, 1, 3]))
        layer_output = OUTPUT_NAME if layer == config.num_layers - 1 else f"h_{layer}"
        nodes.append(helper.make_node("Reshape", [f"Yt_{layer}", "out_shape"], [layer_output]))
        layer_input = layer_output
    initializers.append(numpy_helper.from_array(np.array([steps, batch, width], np.int64),
                                                "out_shape"))
    graph = helper.make_graph(
        nodes, f"fastlstm_bench_{config.name}",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT,
                                       [steps, batch, config.input_size])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [steps, batch, width])],
        initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
