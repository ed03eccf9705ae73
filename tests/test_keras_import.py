"""fastlstm.from_keras against Keras 3 itself: small models with random weights, saved as
.keras and .h5, imported, and run on the same inputs as Keras.

Keras runs on its numpy backend (KERAS_BACKEND is set before keras is imported; Keras'
numpy backend imports jax).  The tests are skipped when keras or h5py is missing.
"""

import inspect
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "numpy")

import fastlstm  # noqa: E402
from fastlstm.importers import KerasLayer  # noqa: E402

keras = pytest.importorskip("keras")
pytest.importorskip("h5py")

TOLERANCE = dict(atol=1e-5, rtol=0.0)
T, B, I, H = 6, 3, 5, 4
FORMATS = ["keras", "h5"]

needs_linear_before_reset = pytest.mark.skipif(
    "linear_before_reset" not in inspect.signature(fastlstm.GRU).parameters,
    reason="fastlstm.GRU has no linear_before_reset= yet (Keras GRU reset_after=False)")

# Keras' own notices: the legacy HDF5 format on every save, numpy 2's __array__ protocol
pytestmark = [pytest.mark.filterwarnings("ignore:.*HDF5 file.*legacy"),
              pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")]


def randomize(model, rng, scale=0.5):
    """Random weights everywhere (Keras initialises biases to zero, which would hide them)."""
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            layer.set_weights([rng.normal(0, scale, w.shape).astype(np.float32) for w in weights])
    return model


def save_and_import(model, tmp_path, file_format, backend):
    path = tmp_path / f"model.{file_format}"
    model.save(path)
    return fastlstm.from_keras(path, backend=backend)


def keras_outputs(model, *inputs):
    result = model(list(inputs) if len(inputs) > 1 else inputs[0])
    if isinstance(result, (list, tuple)):
        return [keras.ops.convert_to_numpy(r) for r in result]
    return keras.ops.convert_to_numpy(result)


def assert_same(got, expected):
    if isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected)
        for g, e in zip(got, expected):
            assert_same(g, e)
        return
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, **TOLERANCE)


def single_layer_model(layer, input_size=I):
    inputs = keras.Input((T, input_size))
    return keras.Model(inputs, layer(inputs))


def make_x(rng, input_size=I):
    return rng.normal(0, 1, (B, T, input_size)).astype(np.float32)


# -- one layer at a time ----------------------------------------------------------------------

LAYERS = {
    "lstm": lambda **kw: keras.layers.LSTM(H, name="rec", **kw),
    "gru": lambda **kw: keras.layers.GRU(H, name="rec", **kw),
    "rnn_tanh": lambda **kw: keras.layers.SimpleRNN(H, name="rec", **kw),
    "rnn_relu": lambda **kw: keras.layers.SimpleRNN(H, activation="relu", name="rec", **kw),
}
OPTIONS = {
    "sequences": dict(return_sequences=True),
    "last": dict(),
    "state": dict(return_sequences=True, return_state=True),
    "backwards": dict(return_sequences=True, go_backwards=True),
    "backwards_last_state": dict(go_backwards=True, return_state=True),
    "no_bias": dict(return_sequences=True, use_bias=False),
}


@pytest.mark.parametrize("file_format", FORMATS)
@pytest.mark.parametrize("options", list(OPTIONS))
@pytest.mark.parametrize("kind", list(LAYERS))
def test_single_layer(rng, backend, tmp_path, kind, options, file_format):
    model = randomize(single_layer_model(LAYERS[kind](**OPTIONS[options])), rng)
    layers = save_and_import(model, tmp_path, file_format, backend)
    assert list(layers) == ["rec"]
    imported = layers["rec"]
    assert isinstance(imported, KerasLayer)
    x = make_x(rng)
    assert_same(imported(x), keras_outputs(model, x))


@needs_linear_before_reset
@pytest.mark.parametrize("file_format", FORMATS)
@pytest.mark.parametrize("options", ["sequences", "state", "backwards", "no_bias"])
def test_gru_reset_before(rng, backend, tmp_path, options, file_format):
    """reset_after=False (the original GRU, one bias row) -> linear_before_reset=False."""
    layer = keras.layers.GRU(H, reset_after=False, name="rec", **OPTIONS[options])
    model = randomize(single_layer_model(layer), rng)
    imported = save_and_import(model, tmp_path, file_format, backend)["rec"]
    assert imported.layer.variant.linear_before_reset is False
    x = make_x(rng)
    assert_same(imported(x), keras_outputs(model, x))


@pytest.mark.parametrize("file_format", FORMATS)
@pytest.mark.parametrize("options", ["sequences", "last", "state"])
@pytest.mark.parametrize("kind", list(LAYERS))
def test_bidirectional(rng, backend, tmp_path, kind, options, file_format):
    layer = keras.layers.Bidirectional(LAYERS[kind](**OPTIONS[options]), name="bi")
    model = randomize(single_layer_model(layer), rng)
    imported = save_and_import(model, tmp_path, file_format, backend)["bi"]
    assert imported.layer.bidirectional
    x = make_x(rng)
    assert_same(imported(x), keras_outputs(model, x))


@pytest.mark.parametrize("file_format", FORMATS)
def test_bidirectional_with_explicit_backward_layer(rng, backend, tmp_path, file_format):
    layer = keras.layers.Bidirectional(
        keras.layers.GRU(H, return_sequences=True),
        backward_layer=keras.layers.GRU(H, return_sequences=True, go_backwards=True), name="bi")
    model = randomize(single_layer_model(layer), rng)
    imported = save_and_import(model, tmp_path, file_format, backend)["bi"]
    x = make_x(rng)
    assert_same(imported(x), keras_outputs(model, x))


@pytest.mark.parametrize("file_format", FORMATS)
@pytest.mark.parametrize("kind", ["lstm", "gru", "bi_lstm"])
def test_initial_state(rng, backend, tmp_path, kind, file_format):
    x_in = keras.Input((T, I))
    n_states = {"lstm": 2, "gru": 1, "bi_lstm": 4}[kind]
    state_in = [keras.Input((H,)) for _ in range(n_states)]
    if kind == "bi_lstm":
        layer = keras.layers.Bidirectional(keras.layers.LSTM(H, return_sequences=True), name="rec")
    else:
        layer = LAYERS[kind](return_sequences=True, return_state=True)
    model = randomize(keras.Model([x_in] + state_in, layer(x_in, initial_state=state_in)), rng)
    imported = save_and_import(model, tmp_path, file_format, backend)["rec"]
    x = make_x(rng)
    states = [rng.normal(0, 1, (B, H)).astype(np.float32) for _ in range(n_states)]
    assert_same(imported(x, initial_state=states), keras_outputs(model, x, *states))


# -- whole models -----------------------------------------------------------------------------

@pytest.mark.parametrize("file_format", FORMATS)
@pytest.mark.parametrize("container", ["sequential", "functional"])
def test_stacked_model_chains_to_the_same_output(rng, backend, tmp_path, container, file_format):
    """LSTM -> GRU -> Bidirectional(SimpleRNN) -> Dense: three imported layers, in order,
    chained, give the Keras output before the Dense layer."""
    recurrent = [keras.layers.LSTM(H, return_sequences=True, name="enc"),
                 keras.layers.GRU(H + 1, return_sequences=True, go_backwards=True),
                 keras.layers.Bidirectional(keras.layers.SimpleRNN(H, activation="relu"))]
    if container == "sequential":
        model = keras.Sequential([keras.Input((T, I))] + recurrent + [keras.layers.Dense(2)])
    else:
        inputs = keras.Input((T, I))
        y = inputs
        for layer in recurrent + [keras.layers.Dense(2)]:
            y = layer(y)
        model = keras.Model(inputs, y)
    randomize(model, rng)
    layers = save_and_import(model, tmp_path, file_format, backend)
    assert list(layers) == [layer.name for layer in recurrent]
    x = make_x(rng)
    y = x
    for imported in layers.values():
        y = imported(y)
    before_dense = keras.Model(model.inputs, model.layers[-2].output)
    assert_same(y, keras_outputs(before_dense, x))


# -- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("file_format", FORMATS)
@pytest.mark.parametrize("layer, message", [
    (lambda: keras.layers.LSTM(H, activation="relu", name="bad"), "activation='relu'"),
    (lambda: keras.layers.GRU(H, recurrent_activation="hard_sigmoid", name="bad"),
     "recurrent_activation='hard_sigmoid'"),
    (lambda: keras.layers.SimpleRNN(H, activation="sigmoid", name="bad"), "activation='sigmoid'"),
    (lambda: keras.layers.Bidirectional(keras.layers.LSTM(H), merge_mode="sum", name="bad"),
     "merge_mode='sum'"),
    (lambda: keras.layers.RNN(keras.layers.LSTMCell(H), name="bad"), "RNN is not supported"),
], ids=["lstm_relu", "gru_hard_sigmoid", "rnn_sigmoid", "merge_sum", "generic_rnn"])
def test_unsupported_layers_raise_naming_the_layer(tmp_path, layer, message, file_format):
    model = single_layer_model(layer())
    path = tmp_path / f"model.{file_format}"
    model.save(path)
    with pytest.raises(NotImplementedError, match=rf"Keras layer 'bad': .*{message}"):
        fastlstm.from_keras(path)


def test_nested_model_with_recurrent_layers_raises(tmp_path):
    inner = keras.Sequential([keras.Input((T, I)), keras.layers.LSTM(H)], name="inner")
    outer = keras.Sequential([keras.Input((T, I)), inner, keras.layers.Dense(1)])
    outer.save(tmp_path / "nested.keras")
    with pytest.raises(NotImplementedError, match="Keras layer 'inner': recurrent layers inside"):
        fastlstm.from_keras(tmp_path / "nested.keras")


def test_models_without_recurrent_layers_give_nothing(tmp_path):
    model = keras.Sequential([keras.Input((I,)), keras.layers.Dense(2)])
    model.save(tmp_path / "dense.keras")
    assert fastlstm.from_keras(tmp_path / "dense.keras") == {}


def test_weights_only_and_foreign_files_raise(tmp_path):
    model = single_layer_model(keras.layers.LSTM(H))
    model.save_weights(tmp_path / "only.weights.h5")
    with pytest.raises(ValueError, match="weights-only"):
        fastlstm.from_keras(tmp_path / "only.weights.h5")
    (tmp_path / "text.keras").write_text("not a model")
    with pytest.raises(ValueError, match="neither a .keras archive nor an HDF5 file"):
        fastlstm.from_keras(tmp_path / "text.keras")


def test_adapter_checks_its_inputs(rng, tmp_path, backend):
    model = randomize(single_layer_model(keras.layers.LSTM(H, name="rec")), rng)
    imported = save_and_import(model, tmp_path, "keras", backend)["rec"]
    with pytest.raises(ValueError, match=r"x: expected a 3-D array \(B, T, I\)"):
        imported(make_x(rng)[0])
    with pytest.raises(ValueError, match="initial_state: expected 2 arrays"):
        imported(make_x(rng), initial_state=[np.zeros((B, H), np.float32)])
    assert "KerasLayer('rec', LSTM(" in repr(imported)
