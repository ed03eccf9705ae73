"""``fastlstm.load``/``load_all`` on checkpoints written by ``torch.save`` (and safetensors)
from real models: the loaded layers reproduce the torch modules' outputs."""

import numpy as np
import pytest
import torch

import fastlstm
from checkpoint_models import (MODELS, RECURRENT, SAVERS, assert_same_outputs, make_model,
                               sample_input)

# (model, saver, dtype): every model in the zip format; the other savers and dtypes on a
# subset that still covers each module kind
CASES = [(model, "zip", "float32") for model in MODELS] + [
    ("tagger", "zip", "float16"), ("tagger", "legacy", "float32"), ("tagger", "lightning", "float32"),
    ("tagger", "safetensors", "float32"), ("tagger", "zip", "bfloat16"),
    ("two_grus", "legacy", "float16"), ("two_grus", "lightning", "float32"),
    ("cell_decoder", "legacy", "float32"), ("cell_decoder", "safetensors", "float16"),
    ("projected", "zip", "float16"), ("projected", "legacy", "float32"),
    ("projected", "lightning", "float32"), ("relu_rnn", "safetensors", "float32"),
    ("relu_rnn", "legacy", "float16"),
]


@pytest.mark.parametrize("model_name, saver, dtype", CASES)
def test_load_all_matches_torch(tmp_path, rng, backend, model_name, saver, dtype):
    model = make_model(model_name).to(getattr(torch, dtype))
    path = tmp_path / f"{model_name}.ckpt"
    SAVERS[saver](model, path)
    model.float()  # the reference: the saved weights, widened back (exactly) to float32
    prefix = "model." if saver == "lightning" else ""
    nonlinearity = {f"{prefix}rnn.": "relu"} if model_name == "relu_rnn" else None

    layers = fastlstm.load_all(path, backend=backend, nonlinearity=nonlinearity)

    assert sorted(layers) == sorted(prefix + name for name in RECURRENT[model_name])
    for name, attribute in RECURRENT[model_name].items():
        module = getattr(model, attribute)
        layer = layers[prefix + name]
        assert type(layer).__name__ == type(module).__name__ and layer.backend_name == backend
        assert_same_outputs(layer, module, sample_input(module, rng))


@pytest.mark.parametrize("saver", ["zip", "legacy", "safetensors"])
def test_load_one_module_by_prefix(tmp_path, rng, saver):
    model = make_model("two_grus")
    path = tmp_path / "model.bin"
    SAVERS[saver](model, path)

    layer = fastlstm.load(path, prefix="decoder", batch_first=True)

    assert isinstance(layer, fastlstm.GRU) and layer.batch_first and not layer.bias
    assert layer.num_layers == 2
    model.decoder.batch_first = True  # not saved in weights: the caller says it
    assert_same_outputs(layer, model.decoder, sample_input(model.decoder, rng))


def test_load_single_module_without_prefix(tmp_path, rng):
    model = make_model("tagger")
    path = tmp_path / "tagger.pt"
    SAVERS["zip"](model, path)

    layer = fastlstm.load(path)

    assert isinstance(layer, fastlstm.LSTM)
    assert (layer.num_layers, layer.bidirectional, layer.hidden_size) == (2, True, 8)
    assert_same_outputs(layer, model.lstm, sample_input(model.lstm, rng))


def test_load_bare_module_state_dict(tmp_path, rng):
    torch.manual_seed(1)
    module = torch.nn.LSTM(3, 5, proj_size=2, bias=False).eval()
    torch.save(module.state_dict(), tmp_path / "lstm.pt")

    layer = fastlstm.load(tmp_path / "lstm.pt", prefix="")

    assert (layer.proj_size, layer.bias) == (2, False)
    assert_same_outputs(layer, module, sample_input(module, rng))


@pytest.mark.parametrize("kind", ["RNNCell", "GRUCell"])
def test_load_cells_from_in_memory_state_dict(rng, kind):
    torch.manual_seed(2)
    module = getattr(torch.nn, kind)(4, 3).eval()

    layer = fastlstm.load({f"dec.{k}": v for k, v in module.state_dict().items()})

    assert type(layer).__name__ == kind
    assert_same_outputs(layer, module, sample_input(module, rng))


def test_loaded_weights_equal_read_state_dict(tmp_path):
    model = make_model("projected")
    SAVERS["zip"](model, tmp_path / "p.pt")

    layer = fastlstm.load(tmp_path / "p.pt")
    state = fastlstm.read_state_dict(tmp_path / "p.pt")

    for key, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, state[f"rnn.{key}"])
