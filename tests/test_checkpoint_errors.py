"""Bad files: each gives a specific ``CheckpointError`` subclass (all ``ValueError``s) whose
message says what to do; none crashes or returns partial weights."""

import tarfile

import numpy as np
import pytest
import torch

from fastlstm import CheckpointError, load, read_state_dict
from fastlstm.checkpoint import (CheckpointNotFoundError, CorruptCheckpointError,
                                 UnsupportedCheckpointError)
from checkpoint_models import make_model, rewrite_zip, save_safetensors, zip_record


@pytest.fixture
def saved(tmp_path):
    """{format: path} of one small model saved in each format."""
    model = make_model("cell_decoder")
    paths = {"zip": tmp_path / "m.pt", "legacy": tmp_path / "m_legacy.pt",
             "safetensors": tmp_path / "m.safetensors", "npz": tmp_path / "m.npz"}
    torch.save(model.state_dict(), paths["zip"])
    torch.save(model.state_dict(), paths["legacy"], _use_new_zipfile_serialization=False)
    save_safetensors(model, paths["safetensors"])
    np.savez(paths["npz"], **{k: v.numpy() for k, v in model.state_dict().items()})
    return paths


def truncate(source, target, keep):
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * keep)])
    return target


def test_every_error_is_a_value_error():
    for error in (CheckpointError, CheckpointNotFoundError, CorruptCheckpointError,
                  UnsupportedCheckpointError):
        assert issubclass(error, ValueError)
    assert issubclass(CheckpointNotFoundError, FileNotFoundError)


@pytest.mark.parametrize("fmt", ["zip", "legacy", "safetensors", "npz"])
@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_truncated_file(saved, tmp_path, fmt, keep):
    path = truncate(saved[fmt], tmp_path / f"cut_{fmt}", keep)

    with pytest.raises(CorruptCheckpointError, match="truncated"):
        read_state_dict(path)
    with pytest.raises(CorruptCheckpointError):
        load(path)


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))

    with pytest.raises(UnsupportedCheckpointError, match="not a recognised checkpoint"):
        read_state_dict(path)


def test_empty_file(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")

    with pytest.raises(CorruptCheckpointError, match="empty"):
        read_state_dict(tmp_path / "empty.pt")


def test_zip_that_is_not_a_checkpoint(tmp_path):
    import zipfile
    with zipfile.ZipFile(tmp_path / "docs.zip", "w") as archive:
        archive.writestr("readme.txt", "hello")

    with pytest.raises(UnsupportedCheckpointError, match="readme.txt"):
        read_state_dict(tmp_path / "docs.zip")


def test_missing_path(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="no such file"):
        read_state_dict(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nope.pt")


def test_directory_path(saved, tmp_path):
    with pytest.raises(CheckpointError, match="is a directory.*m.pt"):
        read_state_dict(tmp_path)


def test_pickle_of_unknown_class(tmp_path):
    from test_checkpoint_safety import write_torch_zip
    write_torch_zip(tmp_path / "u.pt", b"\x80\x02cmy_project.models\nSpecialLSTM\n)\x81.")

    with pytest.raises(CheckpointError, match="my_project.models.SpecialLSTM"):
        read_state_dict(tmp_path / "u.pt")


def test_garbage_pickle(saved, tmp_path):
    name, _ = zip_record(saved["zip"], "data.pkl")
    rewrite_zip(saved["zip"], tmp_path / "g.pt", replace={name: b"\x80\x02garbage"})

    with pytest.raises(CorruptCheckpointError, match="not a valid pickle"):
        read_state_dict(tmp_path / "g.pt")


def test_storage_record_missing(saved, tmp_path):
    name, _ = zip_record(saved["zip"], "data/0")
    rewrite_zip(saved["zip"], tmp_path / "s.pt", drop={name})

    with pytest.raises(CorruptCheckpointError, match="missing"):
        read_state_dict(tmp_path / "s.pt")


def test_corrupted_storage_bytes_fail_the_crc(saved, tmp_path):
    name, data = zip_record(saved["zip"], "data/0")
    rewrite_zip(saved["zip"], tmp_path / "c.pt")
    raw = bytearray((tmp_path / "c.pt").read_bytes())
    raw[raw.index(data) + 3] ^= 0xFF
    (tmp_path / "c.pt").write_bytes(bytes(raw))

    with pytest.raises(CorruptCheckpointError, match="CRC"):
        read_state_dict(tmp_path / "c.pt")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated
def test_torchscript_archive(tmp_path):
    torch.jit.save(torch.jit.trace(torch.nn.Linear(2, 2), torch.ones(1, 2)), tmp_path / "ts.pt")

    with pytest.raises(UnsupportedCheckpointError, match="TorchScript.*state_dict"):
        read_state_dict(tmp_path / "ts.pt")


def test_old_tar_checkpoint(tmp_path):
    (tmp_path / "pickle").write_bytes(b"x")
    with tarfile.open(tmp_path / "old.pt", "w") as archive:
        archive.add(tmp_path / "pickle", arcname="pickle")

    with pytest.raises(UnsupportedCheckpointError, match="re-save"):
        read_state_dict(tmp_path / "old.pt")


def test_plain_pickle_and_npy(tmp_path):
    import pickle
    (tmp_path / "p.pkl").write_bytes(pickle.dumps({"w": [1.0]}, protocol=4))
    np.save(tmp_path / "a.npy", np.ones(3))

    with pytest.raises(UnsupportedCheckpointError, match="not a torch checkpoint"):
        read_state_dict(tmp_path / "p.pkl")
    with pytest.raises(UnsupportedCheckpointError, match="savez"):
        read_state_dict(tmp_path / "a.npy")


def test_unknown_key_lists_entries(tmp_path):
    torch.save({"weights": {"w": torch.ones(1)}, "epoch": 2}, tmp_path / "k.pt")

    with pytest.raises(CheckpointError, match="'state_dict' not found.*'weights'.*'epoch'"):
        read_state_dict(tmp_path / "k.pt", key="state_dict")


def test_no_state_dict_inside(tmp_path):
    torch.save({"epoch": 2, "note": "no weights"}, tmp_path / "n.pt")

    with pytest.raises(CheckpointError, match="no state dict found.*'epoch'"):
        read_state_dict(tmp_path / "n.pt")


def test_key_on_a_flat_format(saved):
    with pytest.raises(CheckpointError, match="flat"):
        read_state_dict(saved["safetensors"], key="state_dict")


def test_safetensors_bad_header_and_dtype(tmp_path):
    def write(name, header, data=b""):
        raw = header.encode()
        (tmp_path / name).write_bytes(len(raw).to_bytes(8, "little") + raw + data)
        return tmp_path / name

    with pytest.raises(CorruptCheckpointError, match="not valid JSON"):
        read_state_dict(write("bad.safetensors", "{not json"))
    with pytest.raises(UnsupportedCheckpointError, match="F8_E4M3"):
        read_state_dict(write("f8.safetensors",
                              '{"w": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}}',
                              b"\0\0"))
    with pytest.raises(CorruptCheckpointError, match="needs 16"):
        read_state_dict(write("size.safetensors",
                              '{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}',
                              b"\0" * 8))
