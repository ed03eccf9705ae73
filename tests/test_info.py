"""``fastlstm info PATH``: every recurrent module (prefix, type, sizes, layers, directions,
parameter count) and the other tensors by name and shape."""

import subprocess
import sys

import numpy as np
import torch

from fastlstm.cli import main
from checkpoint_models import make_model, save_lightning


def run_info(capsys, *args):
    code = main(["info", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def row(out, first):
    """The whitespace-split table row starting with ``first``."""
    return next(line.split() for line in out.splitlines() if line.split()[:1] == [first])


def test_lists_modules_and_other_tensors(tmp_path, capsys):
    model = make_model("tagger")
    torch.save(model.state_dict(), tmp_path / "tagger.pt")

    code, out, _ = run_info(capsys, tmp_path / "tagger.pt")

    assert code == 0
    assert "PyTorch checkpoint" in out and "recurrent modules (1)" in out
    lstm_parameters = sum(p.numel() for p in model.lstm.parameters())
    assert row(out, "lstm.") == ["lstm.", "LSTM", "6", "8", "-", "2", "2", "yes",
                                 f"{lstm_parameters:,}", "float32"]
    assert "other tensors (3)" in out
    assert row(out, "embedding.weight") == ["embedding.weight", "(20,", "6)", "float32"]
    assert row(out, "head.bias") == ["head.bias", "(4,)", "float32"]


def test_several_modules_cells_projection_and_entry(tmp_path, capsys):
    save_lightning(make_model("relu_rnn"), tmp_path / "r.ckpt")
    save_lightning(make_model("projected"), tmp_path / "p.ckpt")

    code, out, _ = run_info(capsys, tmp_path / "r.ckpt")
    assert code == 0
    assert "entry 'state_dict'" in out
    assert row(out, "model.rnn.")[:8] == ["model.rnn.", "RNN", "3", "6", "-", "2", "1", "yes"]
    assert row(out, "model.cell.")[:8] == ["model.cell.", "GRUCell", "6", "4", "-", "1", "1", "no"]
    assert "nonlinearity is not stored" in out

    code, out, _ = run_info(capsys, tmp_path / "p.ckpt", "--key", "state_dict")
    assert code == 0
    assert row(out, "model.rnn.")[:8] == ["model.rnn.", "LSTM", "4", "10", "3", "2", "2", "yes"]


def test_half_precision_and_safetensors(tmp_path, capsys):
    from safetensors.numpy import save_file
    torch.manual_seed(0)
    weights = {f"gru.{k}": v.half().numpy() for k, v in torch.nn.GRU(4, 5).state_dict().items()}
    save_file(weights, str(tmp_path / "g.safetensors"))

    code, out, _ = run_info(capsys, tmp_path / "g.safetensors")

    assert code == 0 and "safetensors" in out
    assert row(out, "gru.") == ["gru.", "GRU", "4", "5", "-", "1", "1", "yes", "165", "float16"]
    assert "other tensors (0)" in out


def test_broken_module_is_reported_with_status_1(tmp_path, capsys):
    tensors = {f"lstm.{k}": v.numpy() for k, v in torch.nn.LSTM(2, 3, num_layers=3).state_dict().items()
               if "_l1" not in k}
    np.savez(tmp_path / "gap.npz", **tensors)

    code, out, _ = run_info(capsys, tmp_path / "gap.npz")

    assert code == 1
    assert "invalid recurrent key sets (1)" in out and "gap" in out


def test_unreadable_file_is_an_error_not_a_traceback(tmp_path, capsys):
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint at all")

    code, out, err = run_info(capsys, tmp_path / "x.pt")

    assert code == 1 and out == ""
    assert err.startswith("fastlstm info: error:") and "not a recognised checkpoint" in err
    code, _, err = run_info(capsys, tmp_path / "missing.pt")
    assert code == 1 and "no such file" in err


def test_console_script(tmp_path):
    torch.save(torch.nn.GRUCell(2, 3).state_dict(), tmp_path / "c.pt")

    result = subprocess.run([sys.executable, "-m", "fastlstm", "info", str(tmp_path / "c.pt")],
                            capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    assert "(top level)  GRUCell" in result.stdout
