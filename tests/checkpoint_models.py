"""Real ``torch.nn`` models and the ways the checkpoint tests save them.

Each model is small (a few thousand weights) so the whole matrix of models x save
formats runs in seconds.  ``SAVERS`` write a state dict the way users do.
For half/bfloat16 saves the reference is the saved module cast back to float32.
"""

import zipfile

import numpy as np
import torch
from torch import nn

TOLERANCE = dict(atol=1e-5, rtol=0.0)


class Tagger(nn.Module):
    """Embedding -> LSTM (2 layers, bidirectional) -> Linear."""

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(20, 6)
        self.lstm = nn.LSTM(6, 8, num_layers=2, bidirectional=True)
        self.head = nn.Linear(16, 4)


class TwoGRUs(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.GRU(5, 7)
        self.decoder = nn.GRU(7, 6, num_layers=2, bias=False)
        self.out = nn.Linear(6, 3)


class CellDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 5)
        self.cell = nn.LSTMCell(5, 9)


class Projected(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(4, 10, num_layers=2, proj_size=3, bidirectional=True)


class ReluRNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.RNN(3, 6, num_layers=2, nonlinearity="relu")
        self.cell = nn.GRUCell(6, 4, bias=False)


MODELS = {"tagger": Tagger, "two_grus": TwoGRUs, "cell_decoder": CellDecoder,
          "projected": Projected, "relu_rnn": ReluRNN}

# model name -> {prefix: torch submodule name} of its recurrent modules
RECURRENT = {"tagger": {"lstm.": "lstm"},
             "two_grus": {"encoder.": "encoder", "decoder.": "decoder"},
             "cell_decoder": {"cell.": "cell"},
             "projected": {"rnn.": "rnn"},
             "relu_rnn": {"rnn.": "rnn", "cell.": "cell"}}


def make_model(name, seed=0):
    torch.manual_seed(seed)
    return MODELS[name]().eval()


# -- saving -------------------------------------------------------------------------------------

def save_zip(module, path):
    torch.save(module.state_dict(), path)


def save_legacy(module, path):
    torch.save(module.state_dict(), path, _use_new_zipfile_serialization=False)


def save_lightning(module, path):
    """A Lightning-style checkpoint: weights under state_dict with model. prefixes, plus
    optimizer state, loop counters and hyper-parameters."""
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    module.zero_grad()
    sum(p.sum() for p in module.parameters()).backward()
    optimizer.step()  # gives the optimizer real state tensors; changes the weights
    torch.save({
        "epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.4.0",
        "state_dict": {f"model.{k}": v for k, v in module.state_dict().items()},
        "optimizer_states": [optimizer.state_dict()], "lr_schedulers": [],
        "hparams_name": "kwargs", "hyper_parameters": {"hidden": 8, "lr": 1e-3, "tags": ("a",)},
        "loops": {"fit_loop": {"epoch_progress": {"total": {"ready": 3}}}},
    }, path)


def save_safetensors(module, path):
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))


SAVERS = {"zip": save_zip, "legacy": save_legacy, "lightning": save_lightning,
          "safetensors": save_safetensors}


# -- running -------------------------------------------------------------------------------------

def flatten(result):
    """Nested tuples of outputs/states -> a flat list of float32 numpy arrays."""
    if isinstance(result, (tuple, list)):
        return [array for item in result for array in flatten(item)]
    if isinstance(result, torch.Tensor):
        return [result.detach().numpy()]
    return [np.asarray(result)]


def torch_output(module, x):
    with torch.no_grad():
        return flatten(module(torch.from_numpy(x)))


def assert_same_outputs(layer, module, x):
    """fastlstm ``layer`` and torch ``module`` give the same outputs and states on ``x``."""
    expected = torch_output(module, x)
    got = flatten(layer(x))
    assert len(got) == len(expected)
    for got_array, expected_array in zip(got, expected):
        np.testing.assert_allclose(got_array, expected_array, **TOLERANCE)


def sample_input(module, rng):
    """A float32 input for ``module``: (T, B, I) for layers ((B, T, I) batch-first), (B, I) cells."""
    if isinstance(module, nn.RNNCellBase):
        return rng.standard_normal((3, module.input_size)).astype(np.float32)
    shape = (3, 5, module.input_size) if module.batch_first else (5, 3, module.input_size)
    return rng.standard_normal(shape).astype(np.float32)


# -- editing files -------------------------------------------------------------------------------

def rewrite_zip(source, target, replace=None, drop=()):
    """Copy a zip record by record, replacing some records' bytes and dropping others."""
    replace = replace or {}
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as new:
        for info in old.infolist():
            if info.filename in drop:
                continue
            new.writestr(info.filename, replace.get(info.filename, old.read(info.filename)))


def zip_record(path, suffix):
    """(name, bytes) of the record of zip ``path`` whose name ends with ``suffix``."""
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith(suffix))
        return name, archive.read(name)

