"""The benchmark harness itself: CLI, JSON, formulas, missing peers, the bench/ suite.

Quick mode throughout, so the whole file stays well under a minute.
"""

import json
import os
import subprocess
import sys

import pytest

from fastlstm import cli
from fastlstm.benchmarking import configs, engines, peers, report, roof, timing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _hide(monkeypatch, *modules):
    """Make ``import name`` raise ImportError, as on a machine without it."""
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


# -- registry and formulas --------------------------------------------------------------------

def test_registry_has_the_table():
    assert list(configs.CONFIGS) == ["lat_small", "lat_med", "lat_large", "lat_xl", "thr_med",
                                     "thr_large", "gru_med", "gru_thr", "stack_bi", "step1"]
    assert configs.CONFIGS[configs.DEFAULT_CONFIG].describe() == \
        "LSTM I=256 H=256, batch 1, 100 steps"
    assert [c.name for c in configs.select("step1,lat_small")] == ["step1", "lat_small"]
    with pytest.raises(ValueError, match="unknown config"):
        configs.select("nope")


def test_flops_by_hand():
    # LSTM: 2*B*4H*(I+H) per step, layer and direction
    lat_med = configs.CONFIGS["lat_med"]
    assert lat_med.flops_per_step() == 2 * 1 * 1024 * (256 + 256) == 1_048_576
    assert lat_med.flops() == 104_857_600
    assert lat_med.recurrent_matrix_bytes() == 4 * 1024 * 256 == 1 << 20
    # GRU: 3H gates
    assert configs.CONFIGS["gru_thr"].flops_per_step() == 2 * 64 * 768 * 512
    # two bidirectional layers: layer 1 reads 2H inputs
    stack = configs.CONFIGS["stack_bi"]
    assert stack.layer_input_sizes() == [256, 512]
    assert stack.flops_per_step() == 2 * 8 * 1024 * ((256 + 256) * 2 + (512 + 256) * 2)
    assert stack.recurrent_matrices == 4
    assert roof.gflops(lat_med, 1.0) == pytest.approx(104.8576)


def test_roof_by_hand():
    lat_med = configs.CONFIGS["lat_med"]
    # 100 steps x 1 MiB at 100 GB/s = 1.048576 ms; 104857600 flops at 200 GFLOP/s = 0.524288 ms
    got = roof.roof_from(lat_med, bandwidth_gbs=100.0, gemm_gflops=200.0)
    assert got.memory_ms == pytest.approx(1.048576)
    assert got.compute_ms == pytest.approx(0.524288)
    assert got.roof_ms == pytest.approx(1.048576) and got.bound == "memory"
    # batch 64: compute bound. flops = 100 * 2*64*1024*512
    thr = roof.roof_from(configs.CONFIGS["thr_med"], bandwidth_gbs=100.0, gemm_gflops=200.0)
    assert thr.compute_ms == pytest.approx(100 * 2 * 64 * 1024 * 512 / 200e9 * 1e3)
    assert thr.bound == "compute"
    # stack_bi: 4 matrices per step
    stack = roof.roof_from(configs.CONFIGS["stack_bi"], bandwidth_gbs=100.0, gemm_gflops=1e9)
    assert stack.memory_ms == pytest.approx(4 * 1.048576)


def test_an_fp32_engine_below_the_roof_is_called_out():
    config = configs.CONFIGS["lat_med"]
    roofs = {("lat_med", 1): roof.roof_from(config, bandwidth_gbs=100.0, gemm_gflops=200.0)}
    records = [{"config": "lat_med", "threads": 1, "engine": "torch", "kind": "peer",
                "fp32": True, "median_ms": 0.5, "min_ms": 0.5}]
    engines.add_roofs(records, roofs)
    assert records[0]["x_roof"] == pytest.approx(0.5 / 1.048576)
    text = "\n".join(report.notes(records, {}, {}))
    assert "WARNING: torch on lat_med" in text and "not a bound" in text


def test_timing_warms_up_then_times_the_requested_repeats():
    calls = []
    result = timing.measure(lambda: calls.append(1), repeat=7)
    assert result.repeats == 7 and len(calls) >= 7 + timing.WARMUP_CALLS
    assert 0 <= result.min_ms <= result.median_ms


def test_seeded_data_is_reproducible():
    config = configs.CONFIGS["lat_small"]
    first, second = config.make_state_dict(), config.make_state_dict()
    assert first.keys() == second.keys()
    assert all((first[key] == second[key]).all() for key in first)
    assert (config.make_input() == config.make_input()).all()


# -- the command ---------------------------------------------------------------------------------

def test_cli_quick_table_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    plot = tmp_path / "bench.png"
    code = cli.main(["bench", "--configs", "lat_small,step1", "--quick", "--peers", "torch",
                     "--json", str(out), "--plot", str(plot)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| config | thr | roof ms |" in printed and "| lat_small | 1 |" in printed
    payload = json.loads(out.read_text())
    assert set(payload) >= {"meta", "configs", "machine", "roofs", "results", "skipped"}
    assert payload["meta"]["quick"] is True and payload["meta"]["threads"] == [1]
    assert set(payload["configs"]) == {"lat_small", "step1"}
    assert payload["machine"]["gemm_gflops"]["1"]["best"] > 0
    assert payload["machine"]["read_bandwidth_gbs"]["1"]
    names = {r["engine"] for r in payload["results"]}
    assert "torch" in names and any(name.startswith("fastlstm[") for name in names)
    for record in payload["results"]:
        for field in ("config", "threads", "engine", "median_ms", "min_ms", "repeats",
                      "ms_per_step", "gflops", "max_abs_diff", "flagged", "roof_ms", "x_roof"):
            assert field in record, field
        assert record["max_abs_diff"] <= 1e-4 and not record["flagged"]
        assert record["x_roof"] == pytest.approx(record["median_ms"] / record["roof_ms"])
        if record["kind"] == "fastlstm":
            assert record["best_fp32_peer"] == "torch"
            assert record["speedup_vs_best_fp32_peer"] > 0
    for item in payload["roofs"]:
        assert item["roof_ms"] == max(item["memory_ms"], item["compute_ms"]) > 0
    if _has("matplotlib"):
        assert plot.stat().st_size > 0


def test_cli_default_model(capsys):
    assert cli.main(["bench"]) == 0
    printed = capsys.readouterr().out
    assert "default model lat_med" in printed
    assert "ms/sequence" in printed and "us/step" in printed
    assert "than torch" in printed and "max abs diff" in printed


def test_cli_default_model_without_torch(monkeypatch, capsys):
    _hide(monkeypatch, "torch")
    assert cli.main(["bench", "--repeat", "2", "--configs", "lat_small"]) == 0
    assert "skipped torch: torch not installed" in capsys.readouterr().out
    assert cli.main(["bench"]) == 0
    printed = capsys.readouterr().out
    assert "ms/sequence" in printed and "torch: skipped (torch not installed)" in printed


def test_missing_peers_are_skipped(monkeypatch, tmp_path):
    _hide(monkeypatch, "onnxruntime", "openvino")
    found, skipped = engines.peer_engines(["torch", "onnxruntime", "openvino", "openvino-bf16"])
    assert [engine.name for engine in found] == ["torch"]
    assert set(skipped) == {"onnxruntime", "openvino", "openvino-bf16"}
    assert all("not installed" in reason for reason in skipped.values())
    out = tmp_path / "skip.json"
    code = cli.main(["bench", "--configs", "step1", "--quick", "--peers", "onnxruntime,openvino",
                     "--json", str(out)])
    assert code == 0
    payload = json.loads(out.read_text())
    assert set(payload["skipped"]) == {"onnxruntime", "openvino"}
    assert {r["engine"] for r in payload["results"]} <= {"fastlstm[numba]", "fastlstm[cython]"}


def test_onnx_peers_skip_without_torch_to_export(monkeypatch):
    _hide(monkeypatch, "torch")
    case = engines.Case(configs.CONFIGS["step1"])
    try:
        found, _ = engines.peer_engines(["onnxruntime"])
        record = engines.bench_cell(found[0], case, 1, quick=True)
    finally:
        case.close()
    assert "needs torch" in record["skipped"]


def test_bad_options_exit_2(capsys):
    assert cli.main(["bench", "--configs", "nope"]) == 2
    assert cli.main(["bench", "--peers", "tensorflow"]) == 2
    assert cli.main(["bench", "--threads", "0"]) == 2
    assert "fastlstm bench:" in capsys.readouterr().err


def test_peer_names_parse():
    assert peers.parse("torch, openvino") == ["torch", "openvino"]
    assert peers.parse("none") == []


# -- the pytest-benchmark suite ------------------------------------------------------------------

def test_bench_suite_runs_in_quick_mode():
    command = [sys.executable, "-m", "pytest", "bench", "--benchmark-disable", "-q",
               "-p", "no:cacheprovider", "-k", "lat_small or step1"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "failed" not in done.stdout


def _has(module):
    import importlib.util
    return importlib.util.find_spec(module) is not None
