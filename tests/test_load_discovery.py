"""Finding recurrent modules from key names and shapes, and every way a state dict can
fail to describe one: each is a ``StateDictError`` (a ``ValueError``) listing what was
found, and nothing is half-loaded."""

import warnings

import numpy as np
import pytest
import torch

import fastlstm
from fastlstm.checkpoint import NonFiniteWeightWarning, StateDictError
from fastlstm.discovery import discover


def state(module, prefix=""):
    return {prefix + k: v.numpy().copy() for k, v in module.state_dict().items()}


def lstm_state(prefix="lstm.", **kwargs):
    torch.manual_seed(0)
    return state(torch.nn.LSTM(3, 4, **kwargs), prefix)


@pytest.mark.parametrize("module, expected", [
    (torch.nn.LSTM(3, 4, num_layers=3, bidirectional=True),
     dict(kind="LSTM", input_size=3, hidden_size=4, num_layers=3, bidirectional=True, proj_size=0, bias=True)),
    (torch.nn.LSTM(3, 6, proj_size=2, bias=False),
     dict(kind="LSTM", input_size=3, hidden_size=6, num_layers=1, bidirectional=False, proj_size=2, bias=False)),
    (torch.nn.GRU(5, 2, num_layers=2),
     dict(kind="GRU", input_size=5, hidden_size=2, num_layers=2, bidirectional=False, proj_size=0, bias=True)),
    (torch.nn.RNN(2, 7, bidirectional=True, bias=False),
     dict(kind="RNN", input_size=2, hidden_size=7, num_layers=1, bidirectional=True, proj_size=0, bias=False)),
    (torch.nn.LSTMCell(3, 5), dict(kind="LSTMCell", input_size=3, hidden_size=5, bias=True)),
    (torch.nn.GRUCell(4, 4, bias=False), dict(kind="GRUCell", input_size=4, hidden_size=4, bias=False)),
    (torch.nn.RNNCell(1, 3), dict(kind="RNNCell", input_size=1, hidden_size=3, bias=True)),
])
def test_hyperparameters_inferred(module, expected):
    found = discover(state(module, "enc.layer."))

    (described,) = found.modules
    assert described.prefix == "enc.layer."
    for name, value in expected.items():
        assert getattr(described, name) == value, name
    assert described.num_parameters == sum(p.numel() for p in module.parameters())
    assert not found.problems and not found.others


def test_other_tensors_are_listed():
    tensors = {"emb.weight": np.zeros((5, 3), np.float32), **lstm_state(), "fc.bias": np.zeros(2)}
    found = discover(tensors)

    assert [m.prefix for m in found.modules] == ["lstm."]
    assert found.others == {"emb.weight": (5, 3), "fc.bias": (2,)}


def test_no_recurrent_module():
    with pytest.raises(StateDictError, match="no recurrent module.*fc.weight"):
        fastlstm.load({"fc.weight": np.zeros((2, 2), np.float32)})
    with pytest.raises(StateDictError, match="no recurrent module"):
        fastlstm.load_all({"fc.weight": np.zeros((2, 2), np.float32)})


def test_several_modules_need_a_prefix():
    tensors = {**lstm_state("enc."), **lstm_state("dec.")}

    with pytest.raises(StateDictError, match="2 recurrent modules.*'enc.'.*'dec.'.*prefix="):
        fastlstm.load(tensors)
    assert isinstance(fastlstm.load(tensors, prefix="dec"), fastlstm.LSTM)


def test_unknown_prefix_lists_found():
    with pytest.raises(StateDictError, match="no recurrent module under prefix 'decoder.'.*'lstm.'"):
        fastlstm.load(lstm_state(), prefix="decoder")


def test_gap_in_layer_numbering():
    tensors = lstm_state(num_layers=3)
    for key in [k for k in tensors if k.endswith("_l1")]:
        del tensors[key]

    with pytest.raises(StateDictError, match=r"gap.*\[0, 2\].*missing \[1\]"):
        fastlstm.load(tensors)


def test_missing_key():
    tensors = lstm_state()
    del tensors["lstm.bias_hh_l0"]

    with pytest.raises(StateDictError, match="missing.*lstm.bias_hh_l0"):
        fastlstm.load(tensors)


@pytest.mark.parametrize("extra, pattern", [
    ("lstm.weight_ih_l0_reverse", "missing.*weight_hh_l0_reverse"),
    ("lstm.weight_hr_l1", "gap|missing"),
    ("lstm.scale", "unexpected.*lstm.scale"),
])
def test_extra_key(extra, pattern):
    tensors = lstm_state()
    tensors[extra] = tensors["lstm.weight_ih_l0"].copy()

    with pytest.raises(StateDictError, match=pattern):
        fastlstm.load(tensors)


def test_mis_shaped_tensor():
    tensors = lstm_state(num_layers=2)
    tensors["lstm.weight_ih_l1"] = np.zeros((16, 5), np.float32)

    with pytest.raises(StateDictError, match=r"'lstm.weight_ih_l1' is \(16, 5\), expected \(16, 4\)"):
        fastlstm.load(tensors)


@pytest.mark.parametrize("shape, pattern", [((10, 4), "not a multiple"), ((8, 4), "2 x hidden"),
                                            ((16,), "2 dimensions")])
def test_inconsistent_hidden_shapes(shape, pattern):
    tensors = lstm_state()
    tensors["lstm.weight_hh_l0"] = np.zeros(shape, np.float32)

    with pytest.raises(StateDictError, match=pattern):
        fastlstm.load(tensors)


def test_integer_weights():
    tensors = {k: v.astype(np.int32) for k, v in lstm_state().items()}

    with pytest.raises(StateDictError, match="floating point"):
        fastlstm.load(tensors)


def test_cell_and_layer_keys_under_one_prefix():
    tensors = {**lstm_state(), "lstm.weight_ih": np.zeros((16, 3), np.float32)}

    with pytest.raises(StateDictError, match="both layer keys.*and cell keys"):
        fastlstm.load(tensors)


def test_load_all_refuses_when_any_module_is_broken():
    tensors = {**lstm_state("good."), **lstm_state("bad.")}
    del tensors["bad.weight_hh_l0"]

    with pytest.raises(StateDictError, match="'good.': LSTM.*'bad.': invalid"):
        fastlstm.load_all(tensors)
    assert isinstance(fastlstm.load(tensors, prefix="good."), fastlstm.LSTM)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weights_load_with_a_warning(bad):
    tensors = lstm_state()
    tensors["lstm.weight_hh_l0"][1, 2] = bad

    with pytest.warns(NonFiniteWeightWarning, match="'lstm.weight_hh_l0'.*1 NaN/Inf"):
        layer = fastlstm.load(tensors)

    assert np.isnan(layer.state_dict()["weight_hh_l0"][1, 2]) == np.isnan(bad)


def test_finite_weights_load_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastlstm.load(lstm_state())


def test_nonlinearity_per_prefix(rng):
    torch.manual_seed(0)
    relu, tanh = torch.nn.RNN(3, 4, nonlinearity="relu"), torch.nn.RNNCell(3, 4)
    tensors = {**state(relu, "enc."), **state(tanh, "dec.")}

    layers = fastlstm.load_all(tensors, nonlinearity={"enc": "relu"})

    assert layers["enc."].nonlinearity == "relu" and layers["dec."].nonlinearity == "tanh"
    assert fastlstm.load(tensors, prefix="enc.", nonlinearity="relu").nonlinearity == "relu"
    x = rng.standard_normal((4, 2, 3)).astype(np.float32)
    np.testing.assert_allclose(layers["enc."](x)[0], relu(torch.from_numpy(x))[0].detach().numpy(),
                               atol=1e-5)


@pytest.mark.parametrize("nonlinearity, pattern", [
    ({"lstm.": "relu"}, "only RNN"), ({"nothere.": "relu"}, "not a module"), ("sigmoid", "tanh"),
])
def test_bad_nonlinearity(nonlinearity, pattern):
    with pytest.raises(ValueError, match=pattern):
        fastlstm.load(lstm_state(), nonlinearity=nonlinearity)


def test_bad_source_type():
    with pytest.raises(TypeError, match="checkpoint path or a state dict"):
        fastlstm.load(42)
