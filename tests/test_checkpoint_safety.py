"""Reading a checkpoint never runs code from it: globals outside the allow-list are refused
(naming them) before they are imported, and no pickle can reach outside its storages."""

import os
import pickle
import sys
import zipfile

import numpy as np
import pytest
import torch

from fastlstm import CheckpointError, UnsafeCheckpointError, load, read_state_dict
from fastlstm.checkpoint import CorruptCheckpointError, UnsupportedCheckpointError
from fastlstm.checkpoint.torch_legacy import MAGIC_NUMBER, PROTOCOL_VERSION
from checkpoint_models import make_model, rewrite_zip, zip_record


def write_torch_zip(path, pickle_bytes):
    """A zip laid out like torch.save's, holding ``pickle_bytes`` as its data.pkl."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle_bytes)
        archive.writestr("archive/byteorder", b"little")
        archive.writestr("archive/version", b"3\n")


def write_legacy(path, obj):
    """A file laid out like torch's legacy format, pickling ``obj`` as its object."""
    with open(path, "wb") as file:
        for header in (MAGIC_NUMBER, PROTOCOL_VERSION,
                       {"protocol_version": PROTOCOL_VERSION, "little_endian": True}):
            pickle.dump(header, file, protocol=2)
        pickle.dump(obj, file, protocol=2)
        pickle.dump([], file, protocol=2)


class RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class WritesFile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


class Evaluates:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return eval, (f"open({self.marker!r}, 'w')",)


@pytest.mark.parametrize("payload, global_name", [
    (RunsShell, "system"), (WritesFile, "open"), (Evaluates, "eval")])
@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_code_in_pickle_is_refused_and_not_run(tmp_path, payload, global_name, layout):
    marker = tmp_path / "pwned"
    obj = {"state_dict": {"w": payload(str(marker))}}
    path = tmp_path / "evil.pt"
    if layout == "zip":
        write_torch_zip(path, pickle.dumps(obj, protocol=2))
    else:
        write_legacy(path, obj)

    with pytest.raises(UnsafeCheckpointError, match=global_name) as caught:
        read_state_dict(path)

    assert "refusing to load global" in str(caught.value)
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError):
        load(path)
    assert not marker.exists()


def test_refused_module_is_never_imported(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "side_effect_module.py").write_text(
        f"open({str(marker)!r}, 'w').close()\ndef f():\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    evil = b"\x80\x02cside_effect_module\nf\n)R."
    write_torch_zip(tmp_path / "e.pt", evil)

    with pytest.raises(UnsafeCheckpointError, match="side_effect_module.f"):
        read_state_dict(tmp_path / "e.pt")

    assert "side_effect_module" not in sys.modules
    assert not marker.exists()


def test_whole_model_pickle_is_refused_with_a_hint(tmp_path):
    torch.save(make_model("tagger"), tmp_path / "model.pt")

    with pytest.raises(UnsafeCheckpointError, match="Tagger") as caught:
        read_state_dict(tmp_path / "model.pt")

    assert "state_dict()" in str(caught.value)


def test_build_cannot_rewire_an_allowed_global(tmp_path):
    # OrderedDict global; BUILD with slot state {'_func': <the same global>}
    rewire = (b"\x80\x02ccollections\nOrderedDict\nq\x00N}q\x01"
              b"X\x05\x00\x00\x00_funcq\x02h\x00s\x86b.")
    write_torch_zip(tmp_path / "b.pt", rewire)

    with pytest.raises(CheckpointError):
        read_state_dict(tmp_path / "b.pt")


def test_view_outside_its_storage_is_refused(tmp_path):
    torch.save({"w": torch.ones(3, 4)}, tmp_path / "ok.pt")
    name, data = zip_record(tmp_path / "ok.pt", "data.pkl")
    size = b"K\x03K\x04\x86"  # BININT1 3, BININT1 4, TUPLE2: the size (3, 4)
    assert data.count(size) == 1
    rewrite_zip(tmp_path / "ok.pt", tmp_path / "big.pt",
                replace={name: data.replace(size, b"K\x09K\x04\x86")})

    with pytest.raises(CorruptCheckpointError, match="reaches element"):
        read_state_dict(tmp_path / "big.pt")


def test_npz_object_arrays_are_not_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    np.savez(tmp_path / "o.npz", w=np.array([RunsShell(str(marker))], dtype=object))

    with pytest.raises(UnsupportedCheckpointError, match="allow_pickle"):
        read_state_dict(tmp_path / "o.npz")

    assert not marker.exists()
