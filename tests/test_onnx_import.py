"""fastlstm.from_onnx against onnxruntime: single-node models built with onnx.helper from
random weights, and models exported by torch.onnx.export.

Each test runs the same inputs through onnxruntime and through the imported layer, whose
outputs are reshaped to ONNX's with ``onnx_outputs``.  onnxruntime does not run layout=1
(batch-major) nodes, so those are checked against the same node with layout=0 on
transposed data, and against onnx's reference evaluator.
"""

import inspect

import numpy as np
import pytest

import fastlstm
from fastlstm.importers import ReversedLayer, onnx_hx, onnx_outputs

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

TOLERANCE = dict(atol=1e-5, rtol=0.0)
T, B, I, H = 6, 4, 5, 7
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}
OPSET = 22


def _has(layer_class, keyword):
    return keyword in inspect.signature(layer_class).parameters


def _needs(layer_class, keyword):
    return pytest.mark.skipif(not _has(layer_class, keyword),
                              reason=f"fastlstm.{layer_class.__name__} has no {keyword}= yet")


needs_peephole = _needs(fastlstm.LSTM, "peephole")
needs_coupled = _needs(fastlstm.LSTM, "coupled_input_forget")
needs_lstm_clip = _needs(fastlstm.LSTM, "clip")
needs_gru_clip = _needs(fastlstm.GRU, "clip")
needs_rnn_clip = _needs(fastlstm.RNN, "clip")
needs_linear_before_reset = _needs(fastlstm.GRU, "linear_before_reset")


# -- building models --------------------------------------------------------------------------

def make_weights(rng, op, directions, bias=True, peephole=False, scale=0.6):
    G = GATES[op]
    weights = {"W": rng.normal(0, scale, (directions, G * H, I)),
               "R": rng.normal(0, scale, (directions, G * H, H))}
    if bias:
        weights["B"] = rng.normal(0, scale, (directions, 2 * G * H))
    if peephole:
        weights["P"] = rng.normal(0, scale, (directions, 3 * H))
    return {key: value.astype(np.float32) for key, value in weights.items()}


def make_model(op, weights, *, direction="forward", layout=0, lengths=False, initial_h=False,
               initial_c=False, constants=False, name="rnn", **attributes):
    """One ``op`` node named ``name``; weights as initializers (or Constant nodes)."""
    inputs = ["X", "W", "R", "B" if "B" in weights else "", "sequence_lens" if lengths else "",
              "initial_h" if initial_h else ""]
    if op == "LSTM":
        inputs += ["initial_c" if initial_c else "", "P" if "P" in weights else ""]
    while inputs[-1] == "":
        inputs.pop()
    outputs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    attributes = dict(hidden_size=H, direction=direction, **attributes)
    if layout:
        attributes["layout"] = layout
    nodes, initializers = [], []
    for key, value in weights.items():
        if constants:
            nodes.append(helper.make_node("Constant", [], [key + "_c"],
                                          value=numpy_helper.from_array(value, key + "_c")))
            nodes.append(helper.make_node("Identity", [key + "_c"], [key]))
        else:
            initializers.append(numpy_helper.from_array(value, key))
    nodes.append(helper.make_node(op, inputs, outputs, name=name, **attributes))
    D = DIRECTIONS[direction]
    state_shape = [B, D, H] if layout else [D, B, H]
    graph_inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT,
                                                  [B, T, I] if layout else [T, B, I])]
    if lengths:
        graph_inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, [B]))
    if initial_h:
        graph_inputs.append(helper.make_tensor_value_info("initial_h", TensorProto.FLOAT, state_shape))
    if initial_c:
        graph_inputs.append(helper.make_tensor_value_info("initial_c", TensorProto.FLOAT, state_shape))
    graph_outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
    graph = helper.make_graph(nodes, "g", graph_inputs, graph_outputs, initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def make_feeds(rng, op, direction, *, layout=0, lengths=None, initial_h=False, initial_c=False):
    D = DIRECTIONS[direction]
    feeds = {"X": rng.normal(0, 1, (B, T, I) if layout else (T, B, I)).astype(np.float32)}
    state_shape = (B, D, H) if layout else (D, B, H)
    if lengths is not None:
        feeds["sequence_lens"] = np.asarray(lengths, dtype=np.int32)
    if initial_h:
        feeds["initial_h"] = rng.normal(0, 1, state_shape).astype(np.float32)
    if initial_c:
        feeds["initial_c"] = rng.normal(0, 1, state_shape).astype(np.float32)
    return feeds


def run_onnxruntime(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def run_fastlstm(layer, feeds):
    hx = onnx_hx(layer, feeds.get("initial_h"), feeds.get("initial_c"))
    out, state = layer(feeds["X"], hx=hx, lengths=feeds.get("sequence_lens"))
    return onnx_outputs(layer, out, state)


def assert_outputs_close(got, expected):
    assert len(got) == len(expected)
    for name, g, e in zip(("Y", "Y_h", "Y_c"), got, expected):
        assert g.shape == e.shape, f"{name}: shape {g.shape} vs onnxruntime {e.shape}"
        np.testing.assert_allclose(g, e, **TOLERANCE, err_msg=name)


def check_against_onnxruntime(rng, backend, op, *, direction="forward", lengths=None,
                              initial_h=False, initial_c=False, bias=True, peephole=False,
                              **attributes):
    weights = make_weights(rng, op, DIRECTIONS[direction], bias=bias, peephole=peephole)
    model = make_model(op, weights, direction=direction, lengths=lengths is not None,
                       initial_h=initial_h, initial_c=initial_c, **attributes)
    feeds = make_feeds(rng, op, direction, lengths=lengths, initial_h=initial_h,
                       initial_c=initial_c)
    layer = fastlstm.from_onnx(model, node="rnn", backend=backend)
    expected = run_onnxruntime(model, feeds)
    assert_outputs_close(run_fastlstm(layer, feeds), expected)
    return layer, model, feeds, expected


# -- plain cells: every direction, with and without lengths and initial states ---------------

UNSORTED_LENGTHS = [3, T, 1, 4]  # unsorted, with a length-1 and a full-length sequence


@pytest.mark.parametrize("direction", list(DIRECTIONS))
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("lengths", [None, UNSORTED_LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("initial", [False, True], ids=["zero_state", "initial_state"])
def test_plain_node_matches_onnxruntime(rng, backend, op, direction, lengths, initial):
    # GRU: linear_before_reset=1 is PyTorch's GRU; 0 (ONNX's default) is a variant below
    attributes = {"linear_before_reset": 1} if op == "GRU" else {}
    layer, *_ = check_against_onnxruntime(rng, backend, op, direction=direction, lengths=lengths,
                                          initial_h=initial, initial_c=initial and op == "LSTM",
                                          **attributes)
    assert isinstance(layer, ReversedLayer) == (direction == "reverse")
    assert layer.bidirectional == (direction == "bidirectional")


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_node_without_bias(rng, backend, op):
    attributes = {"linear_before_reset": 1} if op == "GRU" else {}
    layer, *_ = check_against_onnxruntime(rng, backend, op, direction="bidirectional", bias=False,
                                          lengths=UNSORTED_LENGTHS, **attributes)
    assert layer.bias is False


@pytest.mark.parametrize("state", ["initial_h", "initial_c"])
@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_lstm_one_initial_state_alone(rng, backend, direction, state):
    check_against_onnxruntime(rng, backend, "LSTM", direction=direction, lengths=UNSORTED_LENGTHS,
                              **{state: True})


@pytest.mark.parametrize("activation", ["Tanh", "Relu"])
@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_rnn_activations(rng, backend, activation, direction):
    per_direction = [activation] * DIRECTIONS[direction]
    layer, *_ = check_against_onnxruntime(rng, backend, "RNN", direction=direction,
                                          lengths=UNSORTED_LENGTHS, initial_h=True,
                                          activations=per_direction)
    assert layer.nonlinearity == activation.lower()


def test_explicit_default_lstm_activations_are_accepted(rng, backend):
    check_against_onnxruntime(rng, backend, "LSTM", direction="bidirectional",
                              activations=["Sigmoid", "Tanh", "Tanh"] * 2)


def test_sequence_lens_zero_fill_and_last_valid_state(rng, backend):
    """onnxruntime's conventions, which fastlstm shares: Y is zero past each length, Y_h
    is the state after the last valid step (forward) or after step 0 (reverse)."""
    _, _, feeds, (Y, Y_h, Y_c) = check_against_onnxruntime(
        rng, backend, "LSTM", direction="bidirectional", lengths=UNSORTED_LENGTHS)
    for b, length in enumerate(UNSORTED_LENGTHS):
        assert not Y[length:, :, b].any()
        np.testing.assert_array_equal(Y_h[0, b], Y[length - 1, 0, b])
        np.testing.assert_array_equal(Y_h[1, b], Y[0, 1, b])


# -- layout 1 (batch-major): onnxruntime runs only layout 0 ----------------------------------

@pytest.mark.parametrize("direction", list(DIRECTIONS))
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_layout_1(rng, backend, op, direction):
    attributes = {"linear_before_reset": 1} if op == "GRU" else {}
    weights = make_weights(rng, op, DIRECTIONS[direction])
    is_lstm = op == "LSTM"
    batch_major = make_model(op, weights, direction=direction, layout=1, lengths=True,
                             initial_h=True, initial_c=is_lstm, **attributes)
    time_major = make_model(op, weights, direction=direction, lengths=True, initial_h=True,
                            initial_c=is_lstm, **attributes)
    feeds = make_feeds(rng, op, direction, layout=1, lengths=UNSORTED_LENGTHS, initial_h=True,
                       initial_c=is_lstm)
    layer = fastlstm.from_onnx(batch_major, node="rnn", backend=backend)
    assert layer.batch_first
    got = run_fastlstm(layer, feeds)

    transposed = dict(feeds, X=feeds["X"].transpose(1, 0, 2))
    for key in ("initial_h", "initial_c"):
        if key in feeds:
            transposed[key] = np.ascontiguousarray(feeds[key].transpose(1, 0, 2))
    Y, *states = run_onnxruntime(time_major, transposed)
    expected = [Y.transpose(2, 0, 1, 3)] + [s.transpose(1, 0, 2) for s in states]
    assert_outputs_close(got, expected)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_layout_1_against_reference_evaluator(rng, backend, op):
    from onnx.reference import ReferenceEvaluator
    attributes = {"linear_before_reset": 1} if op == "GRU" else {}
    weights = make_weights(rng, op, 1)
    model = make_model(op, weights, layout=1, initial_h=True, initial_c=op == "LSTM", **attributes)
    feeds = make_feeds(rng, op, "forward", layout=1, initial_h=True, initial_c=op == "LSTM")
    expected = ReferenceEvaluator(model).run(None, feeds)
    got = run_fastlstm(fastlstm.from_onnx(model, node="rnn", backend=backend), feeds)
    assert_outputs_close(got, expected)


# -- LSTM variants: peepholes, coupled input-forget, clip -----------------------------------

@needs_peephole
@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_lstm_peephole(rng, backend, direction):
    layer, *_ = check_against_onnxruntime(rng, backend, "LSTM", direction=direction,
                                          peephole=True, lengths=UNSORTED_LENGTHS,
                                          initial_h=True, initial_c=True)
    keys = [key for key in layer.state_dict() if key.startswith("weight_peephole")]
    assert keys == ["weight_peephole_l0", "weight_peephole_l0_reverse"][:DIRECTIONS[direction]]


def test_all_zero_peepholes_need_no_variant(rng, backend):
    weights = make_weights(rng, "LSTM", 1, peephole=True)
    weights["P"][:] = 0
    model = make_model("LSTM", weights, initial_c=True)
    feeds = make_feeds(rng, "LSTM", "forward", initial_c=True)
    layer = fastlstm.from_onnx(model, node="rnn", backend=backend)
    assert not any(key.startswith("weight_peephole") for key in layer.state_dict())
    assert_outputs_close(run_fastlstm(layer, feeds), run_onnxruntime(model, feeds))


def test_peephole_order_matters(rng, backend):
    """Guard against a wrong P reorder passing by luck: permuting ONNX's P changes Y."""
    if not _has(fastlstm.LSTM, "peephole"):
        pytest.skip("fastlstm.LSTM has no peephole= yet")
    weights = make_weights(rng, "LSTM", 1, peephole=True)
    model = make_model("LSTM", weights)
    feeds = make_feeds(rng, "LSTM", "forward")
    (Y, *_) = run_onnxruntime(model, feeds)
    P = weights["P"].reshape(3, H)
    swapped = dict(weights, P=P[[0, 2, 1]].reshape(1, 3 * H))
    (Y_swapped, *_) = run_onnxruntime(make_model("LSTM", swapped), feeds)
    assert np.abs(Y - Y_swapped).max() > 1e-3


@needs_coupled
@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_lstm_coupled_input_forget(rng, backend, direction):
    check_against_onnxruntime(rng, backend, "LSTM", direction=direction, input_forget=1,
                              lengths=UNSORTED_LENGTHS, initial_h=True, initial_c=True)


def _assert_clip_bites(rng, op, clip, **attributes):
    """The same node with and without clip differ: the clip value is small enough to matter."""
    weights = make_weights(rng, op, 1, scale=1.5)
    feeds = make_feeds(rng, op, "forward")
    (clipped, *_) = run_onnxruntime(make_model(op, weights, clip=clip, **attributes), feeds)
    (free, *_) = run_onnxruntime(make_model(op, weights, **attributes), feeds)
    assert np.abs(clipped - free).max() > 1e-2


CLIP = 0.7


@needs_lstm_clip
@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_lstm_clip(rng, backend, direction):
    _assert_clip_bites(rng, "LSTM", CLIP)
    layer, *_ = check_against_onnxruntime(rng, backend, "LSTM", direction=direction, clip=CLIP,
                                          lengths=UNSORTED_LENGTHS, initial_h=True,
                                          initial_c=True)


@needs_peephole
@needs_coupled
@needs_lstm_clip
@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_lstm_all_variants_together(rng, backend, direction):
    check_against_onnxruntime(rng, backend, "LSTM", direction=direction, peephole=True,
                              input_forget=1, clip=CLIP, lengths=UNSORTED_LENGTHS,
                              initial_h=True, initial_c=True)


# -- GRU: linear_before_reset 0 (ONNX's default) and 1; clip on GRU and RNN -----------------

@needs_linear_before_reset
@pytest.mark.parametrize("linear_before_reset", [0, 1, None], ids=["lbr0", "lbr1", "default"])
@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_gru_linear_before_reset(rng, backend, direction, linear_before_reset):
    attributes = {} if linear_before_reset is None else {"linear_before_reset": linear_before_reset}
    layer, *_ = check_against_onnxruntime(rng, backend, "GRU", direction=direction,
                                          lengths=UNSORTED_LENGTHS, initial_h=True, **attributes)
    assert layer.variant.linear_before_reset == bool(linear_before_reset)


@needs_gru_clip
@pytest.mark.parametrize("linear_before_reset", [0, 1])
def test_gru_clip(rng, backend, linear_before_reset):
    if not linear_before_reset and not _has(fastlstm.GRU, "linear_before_reset"):
        pytest.skip("fastlstm.GRU has no linear_before_reset= yet")
    _assert_clip_bites(rng, "GRU", CLIP, linear_before_reset=linear_before_reset)
    check_against_onnxruntime(rng, backend, "GRU", direction="bidirectional", clip=CLIP,
                              linear_before_reset=linear_before_reset, lengths=UNSORTED_LENGTHS)


@needs_rnn_clip
@pytest.mark.parametrize("activation", ["Tanh", "Relu"])
def test_rnn_clip(rng, backend, activation):
    _assert_clip_bites(rng, "RNN", CLIP, activations=[activation])
    check_against_onnxruntime(rng, backend, "RNN", clip=CLIP, activations=[activation],
                              lengths=UNSORTED_LENGTHS, initial_h=True)


# -- how weights are stored, and the model container -----------------------------------------

def test_weights_from_constant_nodes_through_identity(rng, backend):
    weights = make_weights(rng, "LSTM", 2)
    model = make_model("LSTM", weights, direction="bidirectional", constants=True)
    feeds = make_feeds(rng, "LSTM", "bidirectional")
    layer = fastlstm.from_onnx(model, node="rnn", backend=backend)
    assert_outputs_close(run_fastlstm(layer, feeds), run_onnxruntime(model, feeds))


def test_float16_and_float64_weights_are_read_as_float32(rng, backend):
    weights = make_weights(rng, "GRU", 1)
    model16 = make_model("GRU", {k: v.astype(np.float16) for k, v in weights.items()},
                         linear_before_reset=1)
    model64 = make_model("GRU", {k: v.astype(np.float64) for k, v in weights.items()},
                         linear_before_reset=1)
    state = fastlstm.from_onnx(model64, node="rnn", backend=backend).state_dict()
    state16 = fastlstm.from_onnx(model16, node="rnn", backend=backend).state_dict()
    for key, value in state.items():
        assert value.dtype == np.float32 and state16[key].dtype == np.float32
        np.testing.assert_allclose(state16[key], value, atol=1e-3)


def test_all_nodes_by_name_from_path_and_bytes(rng, backend, tmp_path):
    """A model with an LSTM, a GRU and an unnamed RNN node, read from a file and from bytes."""
    lstm, gru, rnn = (make_weights(rng, op, 1) for op in ("LSTM", "GRU", "RNN"))
    nodes = [helper.make_node("LSTM", ["X", "Wl", "Rl", "Bl"], ["Yl", "Yl_h"], name="enc",
                              hidden_size=H),
             helper.make_node("GRU", ["X", "Wg", "Rg", "Bg"], ["Yg"], name="dec", hidden_size=H,
                              linear_before_reset=1),
             helper.make_node("RNN", ["X", "Wr", "Rr", "Br"], ["Yr"], hidden_size=H)]
    initializers = [numpy_helper.from_array(value, key + suffix)
                    for weights, suffix in ((lstm, "l"), (gru, "g"), (rnn, "r"))
                    for key, value in weights.items()]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT,
                                                                         [T, B, I])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                               for o in ("Yl", "Yg", "Yr")], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    path = tmp_path / "three.onnx"
    onnx.save(model, path)
    feeds = {"X": rng.normal(0, 1, (T, B, I)).astype(np.float32)}
    expected = run_onnxruntime(model, feeds)
    for source in (path, str(path), model.SerializeToString(), model):
        layers = fastlstm.from_onnx(source, backend=backend)
        assert list(layers) == ["enc", "dec", "RNN_2"]
        assert [type(layer).__name__ for layer in layers.values()] == ["LSTM", "GRU", "RNN"]
        for layer, Y in zip(layers.values(), expected):
            out, state = layer(feeds["X"])
            np.testing.assert_allclose(onnx_outputs(layer, out, state)[0], Y, **TOLERANCE)


# -- errors -----------------------------------------------------------------------------------

def test_non_default_activations_raise_naming_node_and_attribute(rng):
    model = make_model("LSTM", make_weights(rng, "LSTM", 1),
                       activations=["HardSigmoid", "Tanh", "Tanh"])
    with pytest.raises(NotImplementedError, match=r"node 'rnn' \(LSTM\), attribute activations"):
        fastlstm.from_onnx(model)
    model = make_model("GRU", make_weights(rng, "GRU", 1), activations=["Sigmoid", "Relu"])
    with pytest.raises(NotImplementedError, match=r"node 'rnn' \(GRU\), attribute activations"):
        fastlstm.from_onnx(model)
    model = make_model("RNN", make_weights(rng, "RNN", 2), direction="bidirectional",
                       activations=["Tanh", "Relu"])
    with pytest.raises(NotImplementedError, match=r"node 'rnn' \(RNN\), attribute activations"):
        fastlstm.from_onnx(model)


@pytest.mark.parametrize("attribute", ["activation_alpha", "activation_beta"])
def test_activation_parameters_raise(rng, attribute):
    model = make_model("RNN", make_weights(rng, "RNN", 1), **{attribute: [0.5]})
    with pytest.raises(NotImplementedError, match=rf"node 'rnn' \(RNN\), attribute {attribute}"):
        fastlstm.from_onnx(model)


def test_computed_weights_raise(rng):
    weights = make_weights(rng, "GRU", 1)
    model = make_model("GRU", weights)
    model.graph.node.insert(0, helper.make_node("Neg", ["W0"], ["W"]))
    model.graph.initializer[0].name = "W0"
    with pytest.raises(ValueError, match=r"node 'rnn' \(GRU\): input W \('W'\) comes from a 'Neg' node"):
        fastlstm.from_onnx(model)


def test_mis_shaped_weights_raise(rng):
    weights = make_weights(rng, "LSTM", 1)
    weights["B"] = weights["B"][:, :-1]
    with pytest.raises(ValueError, match=r"input B has shape \(1, 55\), expected \(1, 56\)"):
        fastlstm.from_onnx(make_model("LSTM", weights))


def test_unknown_node_and_bad_source():
    model = helper.make_model(helper.make_graph([], "empty", [], []))
    assert fastlstm.from_onnx(model) == {}
    with pytest.raises(KeyError, match="no LSTM/GRU/RNN node named 'enc'"):
        fastlstm.from_onnx(model, node="enc")
    with pytest.raises(TypeError, match="path_or_model"):
        fastlstm.from_onnx(42)


def test_variants_missing_from_the_layers_raise_not_implemented(rng, monkeypatch):
    """An installation whose GRU lacks linear_before_reset says so, naming the node."""
    from fastlstm.importers import _common
    monkeypatch.setattr(_common, "accepts", lambda layer_class, keyword: False)
    model = make_model("GRU", make_weights(rng, "GRU", 1))  # ONNX default linear_before_reset=0
    with pytest.raises(NotImplementedError, match=r"node 'rnn' \(GRU\), attribute "
                                                  r"linear_before_reset=0: needs fastlstm.GRU"):
        fastlstm.from_onnx(model)


# -- onnx_outputs / ReversedLayer on their own ------------------------------------------------

def test_reversed_layer_unbatched_and_batch_first(rng, backend):
    inner = fastlstm.GRU(I, H, backend=backend)
    reversed_layer = ReversedLayer(inner)
    x = rng.normal(0, 1, (T, I)).astype(np.float32)
    out, h_n = reversed_layer(x)
    ref_out, ref_h = inner(x[::-1].copy())
    np.testing.assert_allclose(out, ref_out[::-1], **TOLERANCE)
    np.testing.assert_allclose(h_n, ref_h, **TOLERANCE)
    batch_first = ReversedLayer(fastlstm.GRU(I, H, batch_first=True, backend=backend))
    batch_first.load_state_dict(inner.state_dict())
    xb = rng.normal(0, 1, (B, T, I)).astype(np.float32)
    lengths = np.array(UNSORTED_LENGTHS)
    out_bf, h_bf = batch_first(xb, lengths=lengths)
    out_tm, h_tm = reversed_layer(xb.transpose(1, 0, 2), lengths=lengths)
    np.testing.assert_allclose(out_bf, out_tm.transpose(1, 0, 2), **TOLERANCE)
    np.testing.assert_allclose(h_bf, h_tm, **TOLERANCE)
    with pytest.raises(ValueError, match="lengths"):
        reversed_layer(xb.transpose(1, 0, 2), lengths=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="one-direction"):
        ReversedLayer(fastlstm.GRU(I, H, bidirectional=True, backend=backend))


# -- models exported by torch.onnx.export -----------------------------------------------------

def quiet_export(test):
    """Silence the TorchScript exporter's own notices (deprecation, tracing, batch size)."""
    for warning in ("ignore::DeprecationWarning", "ignore::UserWarning",
                    "ignore:Converting a tensor to a Python boolean"):
        test = pytest.mark.filterwarnings(warning)(test)
    return test


def _export(module, args, path, input_names, output_names, dynamic_batch=True):
    import torch
    axes = {name: {1: "batch"} for name in input_names} if dynamic_batch else None
    torch.onnx.export(module, args, str(path), input_names=input_names,
                      output_names=output_names, dynamo=False, dynamic_axes=axes)
    return onnx.load(str(path))


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@quiet_export
def test_torch_exported_single_layer(rng, backend, tmp_path, kind, bidirectional):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = getattr(torch.nn, kind)(I, H, bidirectional=bidirectional).eval()
    D = 2 if bidirectional else 1
    x = torch.from_numpy(rng.normal(0, 1, (T, B, I)).astype(np.float32))
    h0 = torch.from_numpy(rng.normal(0, 1, (D, B, H)).astype(np.float32))
    if kind == "LSTM":
        c0 = torch.from_numpy(rng.normal(0, 1, (D, B, H)).astype(np.float32))
        args, inputs, outputs = (x, (h0, c0)), ["x", "h0", "c0"], ["out", "h_n", "c_n"]
    else:
        args, inputs, outputs = (x, h0), ["x", "h0"], ["out", "h_n"]
    model = _export(module, args, tmp_path / "m.onnx", inputs, outputs)
    layers = fastlstm.from_onnx(tmp_path / "m.onnx", backend=backend)
    assert len(layers) == 1
    (layer,) = layers.values()
    feeds = {name: tensor.numpy() for name, tensor in zip(inputs, [x, *args[1]] if kind == "LSTM"
                                                          else [x, h0])}
    expected = run_onnxruntime(model, feeds)
    hx = (feeds["h0"], feeds["c0"]) if kind == "LSTM" else feeds["h0"]
    out, state = layer(feeds["x"], hx=hx)
    got = [out] + (list(state) if kind == "LSTM" else [state])
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, **TOLERANCE)
    with torch.no_grad():
        reference = module(*args)
    np.testing.assert_allclose(out, reference[0].numpy(), **TOLERANCE)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@quiet_export
def test_torch_exported_stacked_layers_chain(rng, backend, tmp_path, kind):
    """A 2-layer bidirectional torch module exports as two nodes; chained, they give its output."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    module = getattr(torch.nn, kind)(I, H, num_layers=2, bidirectional=True,
                                     batch_first=True).eval()
    x = torch.from_numpy(rng.normal(0, 1, (B, T, I)).astype(np.float32))
    model = _export(module, (x,), tmp_path / "m.onnx", ["x"], ["out", "h_n"], dynamic_batch=False)
    layers = list(fastlstm.from_onnx(model, backend=backend).values())
    assert len(layers) == 2
    y = np.ascontiguousarray(x.numpy().transpose(1, 0, 2))  # the exporter works time-major
    final_h = []
    for layer in layers:
        y, state = layer(y)
        final_h.append(state[0] if kind == "LSTM" else state)
    out, h_n = run_onnxruntime(model, {"x": x.numpy()})[:2]
    np.testing.assert_allclose(y.transpose(1, 0, 2), out, **TOLERANCE)
    np.testing.assert_allclose(np.concatenate(final_h), h_n, **TOLERANCE)
