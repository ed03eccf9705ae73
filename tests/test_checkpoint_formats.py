"""``read_state_dict`` against torch's own reading of the same files: dtypes, views,
strides, shared storage, nested containers, byte order, the legacy format, safetensors
and npz; and that reading never imports torch."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from fastlstm import read_state_dict
from checkpoint_models import make_model, rewrite_zip, save_lightning, zip_record


def torch_values(obj):
    """What torch itself reads back, as numpy (bfloat16 widened to float32)."""
    def convert(tensor):
        tensor = tensor.detach()
        return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()
    return {name: convert(tensor) for name, tensor in obj.items()}


def assert_same(got, expected):
    assert list(got) == list(expected)
    for name in expected:
        assert got[name].dtype == expected[name].dtype, name
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def views_dict():
    torch.manual_seed(0)
    t = torch.randn(4, 6)
    return {
        "t": t, "tail": t[1:], "transposed": t.t(), "strided": t[:, 1::2],
        "column": t[:, 3], "scalar": t[2, 2], "expanded": torch.randn(3, 1).expand(3, 5),
        "permuted": torch.randn(2, 3, 4).permute(2, 0, 1), "empty": torch.zeros(0, 3),
        "param": torch.nn.Parameter(torch.randn(3)),
    }


def dtypes_dict():
    torch.manual_seed(0)
    base = torch.randn(3, 4)
    return {
        "f32": base, "f64": base.double(), "f16": base.half(), "bf16": base.bfloat16(),
        "f16_view": base.half()[1:, ::2], "i64": torch.arange(6).reshape(2, 3),
        "i32": torch.arange(4, dtype=torch.int32), "i8": torch.tensor([-3, 4], dtype=torch.int8),
        "u8": torch.arange(5, dtype=torch.uint8), "bool": torch.tensor([True, False]),
        "u16": torch.full((3,), 7, dtype=torch.uint16), "c64": torch.randn(2, dtype=torch.complex64),
    }


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("make", [views_dict, dtypes_dict])
def test_tensors_equal_torch_load(tmp_path, make, legacy):
    obj = make()
    if legacy and "u16" in obj:
        del obj["u16"]  # the legacy format cannot store dtypes newer than its storage classes
    path = tmp_path / "t.pt"
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)

    assert_same(read_state_dict(path), torch_values(torch.load(path, weights_only=True)))


def test_shared_storage_reads_independent_arrays(tmp_path):
    t = torch.arange(12.0).reshape(3, 4)
    torch.save({"a": t, "b": t[1:], "c": t.t()}, tmp_path / "s.pt")

    state = read_state_dict(tmp_path / "s.pt")
    state["a"][:] = -1

    np.testing.assert_array_equal(state["b"], t[1:].numpy())
    np.testing.assert_array_equal(state["c"], t.t().numpy())
    assert state["c"].flags.c_contiguous


def test_dtype_float32_casts_floats_only(tmp_path):
    torch.save(dtypes_dict(), tmp_path / "d.pt")

    state = read_state_dict(tmp_path / "d.pt", dtype=np.float32)

    for name in ("f32", "f64", "f16", "bf16", "f16_view"):
        assert state[name].dtype == np.float32, name
    assert state["i64"].dtype == np.int64 and state["bool"].dtype == np.bool_
    assert state["u16"].dtype == np.uint16 and state["c64"].dtype == np.complex64


def test_nested_containers(tmp_path):
    model = make_model("tagger")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    torch.save({"model_state_dict": model.state_dict(), "optimizer_state_dict": optimizer.state_dict(),
                "epoch": 4, "loss": 0.25}, tmp_path / "c.pt")
    expected = torch_values(model.state_dict())

    assert_same(read_state_dict(tmp_path / "c.pt"), expected)
    assert_same(read_state_dict(tmp_path / "c.pt", key="model_state_dict"), expected)


def test_lightning_checkpoint(tmp_path):
    model = make_model("tagger")
    save_lightning(model, tmp_path / "l.ckpt")
    expected = torch_values({f"model.{k}": v for k, v in model.state_dict().items()})

    assert_same(read_state_dict(tmp_path / "l.ckpt"), expected)
    assert_same(read_state_dict(tmp_path / "l.ckpt", key="state_dict"), expected)


def test_nested_key_path(tmp_path):
    inner = {"w": torch.ones(2)}
    torch.save({"ema": {"weights": inner, "decay": 0.99}, "other": {"w": torch.zeros(1)}},
               tmp_path / "n.pt")

    assert_same(read_state_dict(tmp_path / "n.pt", key=("ema", "weights")), torch_values(inner))


def test_big_endian_zip(tmp_path):
    values = torch.arange(6, dtype=torch.float32).reshape(2, 3) / 7
    torch.save({"w": values, "i": torch.arange(3)}, tmp_path / "le.pt")
    byteorder, _ = zip_record(tmp_path / "le.pt", "/byteorder")
    w_name, w_bytes = zip_record(tmp_path / "le.pt", "/data/0")
    i_name, i_bytes = zip_record(tmp_path / "le.pt", "/data/1")
    rewrite_zip(tmp_path / "le.pt", tmp_path / "be.pt", replace={
        byteorder: b"big",
        w_name: np.frombuffer(w_bytes, "<f4").astype(">f4").tobytes(),
        i_name: np.frombuffer(i_bytes, "<i8").astype(">i8").tobytes()})

    state = read_state_dict(tmp_path / "be.pt")

    np.testing.assert_array_equal(state["w"], values.numpy())
    np.testing.assert_array_equal(state["i"], [0, 1, 2])
    assert state["w"].dtype.isnative


def test_zip_written_without_crc(tmp_path):
    torch.serialization.set_crc32_options(False)
    try:
        torch.save({"w": torch.ones(3)}, tmp_path / "nocrc.pt")
    finally:
        torch.serialization.set_crc32_options(True)

    np.testing.assert_array_equal(read_state_dict(tmp_path / "nocrc.pt")["w"], np.ones(3))


@pytest.mark.parametrize("writer", ["torch", "numpy"])
def test_safetensors_written_by_the_package(tmp_path, writer):
    import safetensors.numpy
    import safetensors.torch
    path = str(tmp_path / "m.safetensors")
    if writer == "torch":
        tensors = {k: v.contiguous() for k, v in dtypes_dict().items()
                   if k not in ("c64", "u16")}
        tensors["bf16"] = tensors["bf16"].contiguous()
        safetensors.torch.save_file(tensors, path, metadata={"format": "pt"})
        expected = torch_values(safetensors.torch.load_file(path))
    else:
        arrays = {"a": np.arange(6, dtype=np.float64).reshape(3, 2), "b": np.ones(0, np.float32),
                  "c": np.array([1, -2], np.int16)}
        safetensors.numpy.save_file(arrays, path)
        expected = safetensors.numpy.load_file(path)

    got = read_state_dict(path)
    assert sorted(got) == sorted(expected)
    assert_same({k: got[k] for k in expected}, expected)


def test_npz(tmp_path):
    arrays = {"lstm.weight_ih_l0": np.ones((8, 3), np.float32), "step": np.array(7)}
    np.savez(tmp_path / "w.npz", **arrays)

    assert_same(read_state_dict(tmp_path / "w.npz"), arrays)


def test_format_found_from_bytes_not_extension(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "weights.safetensors")  # misleading name
    with open(tmp_path / "arrays.pt", "wb") as file:  # numpy.savez would append .npz to a name
        np.savez(file, w=np.zeros(2))

    np.testing.assert_array_equal(read_state_dict(tmp_path / "weights.safetensors")["w"], [1, 1])
    np.testing.assert_array_equal(read_state_dict(tmp_path / "arrays.pt")["w"], [0, 0])


def test_reading_and_loading_never_import_torch(tmp_path):
    model = make_model("tagger")
    save_lightning(model, tmp_path / "l.ckpt")
    torch.save(model.state_dict(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    script = textwrap.dedent(f"""
        import sys
        import fastlstm
        from fastlstm.cli import main
        paths = [{str(tmp_path / 'l.ckpt')!r}, {str(tmp_path / 'legacy.pt')!r}]
        for path in paths:
            fastlstm.read_state_dict(path, dtype="float32")
            fastlstm.load_all(path)
            assert main(["info", path]) == 0
        assert "torch" not in sys.modules, sorted(m for m in sys.modules if m.startswith("torch"))
        print("torch-free")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "error"}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("torch-free")
