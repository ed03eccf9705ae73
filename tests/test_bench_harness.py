"""The benchmark harness itself: CLI, JSON, formulas, missing peers, the bench/ suite,
reduced precisions (bf16/int8 engines, roofs, accuracy) and the ONNX-only variant rows.

Quick mode throughout, so the whole file stays well under a minute.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import fastlstm
from fastlstm import cli
from fastlstm.benchmarking import configs, engines, peers, report, roof, timing
from fastlstm.benchmarking.configs import BenchConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _has(*modules):
    import importlib.util
    return all(importlib.util.find_spec(module) is not None for module in modules)


def _hide(monkeypatch, *modules):
    """Make ``import name`` raise ImportError, as on a machine without it."""
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


# -- registry and formulas --------------------------------------------------------------------

def test_registry_has_the_table():
    assert list(configs.CONFIGS) == ["lat_small", "lat_med", "lat_large", "lat_xl", "thr_med",
                                     "thr_large", "gru_med", "gru_thr", "stack_bi", "step1",
                                     "peephole_med", "gru_reset_before"]
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


def test_weight_bytes_by_hand():
    lat_med = configs.CONFIGS["lat_med"]            # W_hh (1024, 256)
    assert lat_med.recurrent_matrix_bytes("fp32") == 1024 * 256 * 4
    assert lat_med.recurrent_matrix_bytes("bf16") == 1024 * 256 * 2
    assert lat_med.recurrent_matrix_bytes("int8") == 1024 * 256 + 1024 * 4   # + row scales
    assert configs.CONFIGS["gru_med"].recurrent_matrix_bytes("bf16") == 768 * 256 * 2


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
    # reduced weights: the memory half shrinks with the bytes, the compute half does not
    bf16 = roof.roof_from(lat_med, bandwidth_gbs=100.0, gemm_gflops=200.0, precision="bf16")
    assert bf16.memory_ms == pytest.approx(1.048576 / 2)
    assert bf16.compute_ms == pytest.approx(0.524288) and bf16.bound == "memory"
    int8 = roof.roof_from(lat_med, bandwidth_gbs=100.0, gemm_gflops=200.0, precision="int8")
    assert int8.memory_ms == pytest.approx(100 * (1024 * 256 + 4096) / 100e9 * 1e3)
    assert int8.roof_ms == pytest.approx(0.524288) and int8.bound == "compute"


def test_read_bandwidth_sums_contiguous_rows_of_the_asked_size():
    """The read kernel gets C-contiguous rows (a view cut short of the padded stride
    compiles to a scalar loop: 17 instead of 340 GB/s on 2 threads) and sums only
    the first ``elements`` of each."""
    elements = 8448 + 3  # a 66 KiB buffer's share per thread, not a multiple of 4 KiB
    rows = roof._aligned_rows(2, elements)
    assert rows.flags.c_contiguous and rows.shape[1] >= elements and rows.shape[1] % 1024 == 0
    assert rows.ctypes.data % 4096 == 0
    out = np.zeros(2, np.float32)
    roof._get_read_kernel()(rows, elements, 3, out)
    np.testing.assert_array_equal(out, [3.0 * elements] * 2)
    assert roof.read_bandwidth_gbs(66 * 1024 + 12, 2, quick=True) > 0
    assert all(signature[0].layout == "C" for signature in roof._get_read_kernel().signatures)


def test_an_fp32_engine_below_the_roof_is_called_out():
    config = configs.CONFIGS["lat_med"]
    roofs = {("lat_med", 1, "fp32"): roof.roof_from(config, bandwidth_gbs=100.0, gemm_gflops=200.0)}
    records = [{"config": "lat_med", "threads": 1, "engine": "torch", "kind": "peer",
                "precision": "fp32", "fp32": True, "median_ms": 0.5, "min_ms": 0.5}]
    engines.add_roofs(records, roofs)
    assert records[0]["x_roof"] == pytest.approx(0.5 / 1.048576)
    text = "\n".join(report.notes(records, {}, {}))
    assert "WARNING: torch on lat_med" in text and "not a bound" in text


def test_below_the_roof_by_arithmetic():
    """An fp32-arithmetic engine is bound by the whole roof, one multiplying in int8 by its
    memory half only."""
    config = configs.CONFIGS["thr_med"]          # compute bound
    roofs = {("thr_med", 1, p): roof.roof_from(config, 100.0, 200.0, p) for p in ("bf16", "int8")}
    memory = roofs["thr_med", 1, "int8"].memory_ms
    assert memory < roofs["thr_med", 1, "int8"].roof_ms
    between = (memory + roofs["thr_med", 1, "int8"].roof_ms) / 2
    records = [
        _record("fastlstm[cython,bf16]", "bf16", between, kind="fastlstm", config="thr_med",
                fp32_arithmetic=True),
        _record("fastlstm[cython,int8]", "int8", between, kind="fastlstm", config="thr_med",
                fp32_arithmetic=False),
        _record("torch-int8", "int8", memory / 2, config="thr_med", fp32_arithmetic=False),
    ]
    engines.add_roofs(records, roofs)
    text = "\n".join(report.notes(records, {}, {}))
    assert "WARNING: fastlstm[cython,bf16] on thr_med" in text
    assert "fastlstm[cython,int8] on thr_med" not in text
    assert "WARNING: torch-int8 on thr_med (threads 1) ran at 0.50x the roof's memory half" in text
    found, _ = engines.fastlstm_engines(["cython"], ["fp32", "bf16", "int8"])
    from fastlstm import cython_glue  # bf16 multiplies on bf16 tiles where the CPU has AMX
    assert {e.precision: e.fp32_arithmetic for e in found} in (
        {}, {"fp32": True, "bf16": not cython_glue._AMX_CPU, "int8": False})


def test_a_busy_machine_is_called_out():
    from fastlstm.benchmarking import command
    share = command._OtherProcesses().share()
    assert share is None or 0.0 <= share <= 1.0
    text = "\n".join(report.notes([], {}, {"cores": 2, "load_average": [1.5, 1.0, 0.5],
                                            "other_processes_cpu_share": 0.49}))
    assert "machine: 2 cores, load average at start 1.50 1.00 0.50" in text
    assert "other processes used 49% of the cores during the run: figures with as many" in text
    quiet = "\n".join(report.notes([], {}, {"cores": 2, "other_processes_cpu_share": 0.01}))
    assert "other processes used 1% of the cores during the run" in quiet
    assert "shared them" not in quiet


def test_other_processes_share_needs_several_clock_ticks(monkeypatch):
    """/proc/stat counts whole ticks: over microseconds one tick is no share at all;
    over a longer run the share is at most the whole machine."""
    import os
    from fastlstm.benchmarking import command
    tick = 1 / os.sysconf("SC_CLK_TCK")
    samples = iter([(0.0, 0.0, 0.0), (1e-5, tick, 0.0), (10.0, 100.0, 0.0), (10.0, 5.0, 1.0)])
    monkeypatch.setattr(command._OtherProcesses, "_sample", staticmethod(lambda: next(samples)))
    monkeypatch.setattr(command.os, "cpu_count", lambda: 2)
    probe = command._OtherProcesses()
    assert probe.share() is None
    assert probe.share() == 1.0
    assert probe.share() == 0.2  # (5 - 1) s busy of others over 10 s x 2 cores


def test_timing_warms_up_then_times_the_requested_repeats():
    calls = []
    result = timing.measure(lambda: calls.append(1), repeat=7)
    assert result.repeats == 7 and len(calls) >= 7 + timing.WARMUP_CALLS
    assert 0 <= result.min_ms <= result.median_ms


class _LoggingRunner:
    """A runner that logs its calls and activations to a shared list; ``fail_at``: the
    call number (1-based) that raises."""

    threads_applied = True

    def __init__(self, name, log, fail_at=None):
        self.name, self.log, self.fail_at, self.calls = name, log, fail_at, 0

    def activate(self):
        self.log.append(("activate", self.name))

    def __call__(self):
        self.calls += 1
        self.log.append(("call", self.name))
        if self.calls == self.fail_at:
            raise RuntimeError(f"{self.name} broke")


def test_interleaved_timing_shares_every_round(monkeypatch):
    monkeypatch.setattr(timing, "SWITCH_PAUSE_S", 0.0)
    log = []
    runners = [_LoggingRunner("a", log), _LoggingRunner("b", log)]
    results = timing.measure_interleaved(runners, repeat=7, rounds=3)
    assert [result.repeats for result in results] == [7, 7]
    calls = [name for kind, name in log if kind == "call"]
    # warm-ups first, then rounds of a's share and b's share (7 calls as 2, 2, 3), each
    # activated first and led by one untimed call (the calls here are short)
    warm = calls.count("a") - 7 - 3
    assert warm >= timing.WARMUP_CALLS and calls.count("b") == calls.count("a")
    timed = calls[2 * warm:]
    assert timed == ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3 + ["a"] * 4 + ["b"] * 4
    assert log.count(("activate", "a")) == 1 + 3


def _busy_thread(seconds):
    """A thread keeping a core busy for ``seconds`` (numpy sums release the GIL)."""
    import threading

    def spin():
        block = np.ones(1 << 16, np.float32)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            block.sum()

    thread = threading.Thread(target=spin)
    thread.start()
    return thread


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="per-thread CPU time: Linux")
def test_wait_for_quiet_threads_waits_out_a_busy_thread():
    """A thread busy for 0.25 s is waited out (quiet, after >= 0.2 s); one busy for 2 s
    outlasts a 0.1 s limit (not quiet); with nothing busy the wait takes a window or two."""
    timing.wait_for_quiet_threads(max_s=2.0)   # earlier tests' worker threads settle
    waited, quiet = timing.wait_for_quiet_threads(max_s=2.0)
    assert quiet and waited < 0.2
    spinner = _busy_thread(0.25)
    time.sleep(0.02)
    waited, quiet = timing.wait_for_quiet_threads(max_s=2.0)
    spinner.join()
    assert quiet and waited >= 0.2
    spinner = _busy_thread(2.0)
    time.sleep(0.02)
    waited, quiet = timing.wait_for_quiet_threads(max_s=0.1)
    spinner.join()
    assert not quiet and 0.1 <= waited < 1.0


def test_wait_for_quiet_threads_without_proc_returns_at_once(monkeypatch):
    monkeypatch.setattr(timing, "_other_threads_cpu_s", lambda: None)
    assert timing.wait_for_quiet_threads(max_s=1.0) == (0.0, True)


def test_interleaved_timing_waits_for_quiet_threads_at_each_switch(monkeypatch):
    monkeypatch.setattr(timing, "SWITCH_PAUSE_S", 0.0)
    waits = []
    monkeypatch.setattr(timing, "wait_for_quiet_threads", lambda: waits.append(1) or (0.0, True))
    log = []
    timing.measure_interleaved([_LoggingRunner("a", log), _LoggingRunner("b", log)], repeat=4,
                               rounds=2)
    assert len(waits) == 4   # 2 rounds x 2 shares
    waits.clear()
    timing.measure_interleaved([_LoggingRunner("a", log)], repeat=4, rounds=2)
    assert waits == []       # one engine: nothing to switch from


def test_interleaved_timing_reports_a_failing_runner_and_times_the_rest(monkeypatch):
    monkeypatch.setattr(timing, "SWITCH_PAUSE_S", 0.0)
    log = []
    runners = [_LoggingRunner("a", log, fail_at=5), _LoggingRunner("b", log)]
    first, second = timing.measure_interleaved(runners, repeat=6, rounds=3)
    assert isinstance(first, RuntimeError) and "a broke" in str(first)
    assert second.repeats == 6


def test_bench_cells_records_an_engine_failing_while_timed(monkeypatch):
    """Checked and then broken on its third call (inside the timed rounds): that engine's
    record carries the error, the other engine is timed."""
    monkeypatch.setattr(timing, "SWITCH_PAUSE_S", 0.0)
    case = engines.Case(configs.CONFIGS["lat_small"])
    try:
        reference = case.reference()

        def build(fail_at):
            def make(case, threads):
                calls = []

                def run():
                    calls.append(1)
                    if len(calls) == fail_at:
                        raise RuntimeError("engine broke")
                    return reference
                return peers.Runner(run)
            return make

        broken = engines.Engine("broken", "peer", "fp32", build(3))
        steady = engines.Engine("steady", "peer", "fp32", build(None))
        records = engines.bench_cells([broken, steady], case, 1, repeat=4)
    finally:
        case.close()
    assert [r["engine"] for r in records] == ["broken", "steady"]
    assert "engine broke" in records[0]["error"] and "median_ms" not in records[0]
    assert records[1]["repeats"] == 4 and records[1]["max_abs_diff"] == 0.0


def test_an_engine_slower_on_more_threads_is_called_out():
    records = [{"engine": "torch-int8", "config": "thr_med", "threads": n, "median_ms": ms}
               for n, ms in ((1, 80.0), (2, 3200.0))]
    records += [{"engine": "torch", "config": "thr_med", "threads": n, "median_ms": ms}
                for n, ms in ((1, 100.0), (2, 150.0))]
    lines = report.notes(records, {}, {})
    warned = [line for line in lines if "its 1-thread time" in line]
    assert len(warned) == 1
    assert "torch-int8 on thr_med took 40.0x its 1-thread time on 2 threads" in warned[0]


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
    assert payload["meta"]["precisions"] == ["fp32"] and payload["accuracy"] == {}
    assert set(payload["configs"]) == {"lat_small", "step1"}
    assert payload["machine"]["gemm_gflops"]["1"]["best"] > 0
    assert payload["machine"]["read_bandwidth_gbs"]["1"]
    assert payload["machine"]["cores"] == os.cpu_count()
    assert "other_processes_cpu_share" in payload["machine"]
    names = {r["engine"] for r in payload["results"]}
    assert "torch" in names and any(name.startswith("fastlstm[") for name in names)
    for record in payload["results"]:
        for field in ("config", "threads", "engine", "precision", "reference", "median_ms",
                      "min_ms", "repeats", "ms_per_step", "gflops", "max_abs_diff", "flagged",
                      "roof_ms", "x_roof"):
            assert field in record, field
        assert record["max_abs_diff"] <= 1e-4 and not record["flagged"]
        assert record["x_roof"] == pytest.approx(record["median_ms"] / record["roof_ms"])
        if record["kind"] == "fastlstm":
            assert record["best_fp32_peer"] == "torch"
            assert record["speedup_vs_best_fp32_peer"] > 0
    for item in payload["roofs"]:
        assert item["roof_ms"] == max(item["memory_ms"], item["compute_ms"]) > 0
        assert item["precision"] == "fp32"
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
    assert cli.main(["bench", "--precision", "fp16"]) == 2
    assert cli.main(["bench", "--precision", ","]) == 2
    assert "fastlstm bench:" in capsys.readouterr().err


def test_peer_names_parse():
    assert peers.parse("torch, openvino") == ["torch", "openvino"]
    assert peers.parse("none") == []
    assert peers.parse_precisions(None) == ["fp32"]
    assert peers.parse_precisions("int8, bf16,int8") == ["int8", "bf16"]


def test_reduced_precision_peers_follow_their_library():
    everything = ["fp32", "bf16", "int8"]
    assert peers.with_precisions(["torch", "onnxruntime", "openvino"], everything) == \
        ["torch", "onnxruntime", "openvino", "openvino-bf16", "torch-bf16", "torch-int8"]
    assert peers.with_precisions(["torch"], ["fp32", "int8"]) == ["torch", "torch-int8"]
    assert peers.with_precisions(["onnxruntime"], everything) == ["onnxruntime"]
    assert peers.with_precisions(["torch"], ["fp32"]) == ["torch"]
    # named outright, a reduced peer runs whatever --precision says
    assert peers.with_precisions(["openvino-bf16"], ["fp32"]) == ["openvino-bf16"]


def test_fastlstm_engines_per_precision():
    found, skipped = engines.fastlstm_engines(["cython", "numba"], ["fp32", "bf16", "int8"])
    names = [engine.name for engine in found]
    if "cython" in fastlstm.available_backends():
        assert {"fastlstm[cython]", "fastlstm[cython,bf16]", "fastlstm[cython,int8]"} <= set(names)
    if "numba" in fastlstm.available_backends():
        assert "fastlstm[numba]" in names and "fastlstm[numba,bf16]" not in names
        assert "runs fp32 weights only" in skipped["fastlstm[numba,int8]"]
    for engine in found:
        assert engine.tolerance == peers.TOLERANCES[engine.precision]
        assert engines.parse_engine_name(engine.name)[1] == engine.precision
    assert engines.parse_engine_name("fastlstm[cython,int8]") == ("cython", "int8")
    assert engines.parse_engine_name("fastlstm[numba]") == ("numba", "fp32")


# -- reduced precisions --------------------------------------------------------------------------

def _record(engine, precision, ms, kind="peer", config="c", **extra):
    return dict(config=config, threads=1, engine=engine, kind=kind, precision=precision,
                fp32=precision == "fp32", median_ms=ms, min_ms=ms, **extra)


def test_speedups_by_hand():
    records = [
        _record("fastlstm[cython]", "fp32", 2.0, kind="fastlstm"),
        _record("fastlstm[cython,bf16]", "bf16", 1.0, kind="fastlstm"),
        _record("fastlstm[cython,int8]", "int8", 0.5, kind="fastlstm"),
        _record("onnxruntime", "fp32", 3.0),
        _record("torch", "fp32", 4.0),
        _record("torch-bf16", "bf16", 1.5),
        _record("openvino-bf16", "bf16", 0.8, flagged=True),   # wrong: never the best
        _record("torch-int8", "int8", 2.0),
    ]
    engines.add_speedups(records)
    fp32, bf16, int8 = records[:3]
    assert fp32["best_fp32_peer"] == "onnxruntime" and fp32["speedup_vs_best_fp32_peer"] == 1.5
    assert bf16["best_bf16_peer"] == "torch-bf16" and bf16["speedup_vs_best_bf16_peer"] == 1.5
    assert int8["best_int8_peer"] == "torch-int8" and int8["speedup_vs_best_int8_peer"] == 4.0
    assert [r["speedup_vs_onnxruntime_fp32"] for r in records[:3]] == [1.5, 3.0, 6.0]
    assert "best_fp32_peer" not in bf16 and "best_bf16_peer" not in fp32


def test_reduced_roofs_and_accuracy_table_by_hand():
    config = configs.CONFIGS["lat_med"]
    roofs = {("lat_med", 1, precision): roof.roof_from(config, 100.0, 1e9, precision)
             for precision in ("fp32", "bf16", "int8")}
    records = [
        _record("fastlstm[cython,bf16]", "bf16", 1.0, kind="fastlstm", config="lat_med",
                max_abs_diff=2e-3, reference="torch"),
        _record("fastlstm[cython,int8]", "int8", 1.0, kind="fastlstm", config="lat_med",
                max_abs_diff=5e-3, reference="torch"),
        _record("torch-int8", "int8", 2.0, config="lat_med", max_abs_diff=3e-2, reference="torch"),
        _record("torch", "fp32", 2.0, config="lat_med", max_abs_diff=0.0, reference="torch"),
    ]
    engines.add_roofs(records, roofs)
    assert records[0]["roof_ms"] == pytest.approx(1.048576 / 2)       # 2 bytes a weight
    assert records[2]["roof_ms"] == roofs[("lat_med", 1, "int8")].roof_ms
    assert records[3]["roof_ms"] == pytest.approx(1.048576)
    assert engines.accuracy(records) == {"lat_med": {
        "reference": "torch", "fastlstm[cython,bf16]": 2e-3, "fastlstm[cython,int8]": 5e-3,
        "torch-int8": 3e-2}}
    text = report.tables(records, roofs)
    assert "### bf16 weights" in text and "### int8 weights" in text and "### accuracy" in text
    assert "| lat_med | torch | 2.0e-03 | 5.0e-03 | 3.0e-02 |" in text
    assert "fastlstm int8 vs torch-int8" in text and "fastlstm int8 vs onnxruntime fp32" in text
    # fp32 alone: one untitled table, as before
    assert not report.tables(records[3:], roofs).startswith("###")


@pytest.mark.skipif(not _has("torch", "onnx", "onnxruntime"),
                    reason="needs torch, onnx and onnxruntime")
def test_cli_precision_tables_and_json(tmp_path, capsys):
    out = tmp_path / "prec.json"
    code = cli.main(["bench", "--configs", "step1,gru_reset_before", "--quick", "--peers",
                     "torch,onnxruntime,openvino", "--precision", "fp32,bf16,int8",
                     "--backends", "cython", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    for text in ("### fp32 weights", "### bf16 weights", "### int8 weights", "### accuracy",
                 "fastlstm[cython,bf16] ms", "torch-bf16 ms", "torch-int8 ms",
                 "skipped torch-int8 on gru_reset_before: torch.nn.GRU has no "
                 "linear_before_reset=False"):
        assert text in printed, text
    payload = json.loads(out.read_text())
    assert payload["meta"]["precisions"] == ["fp32", "bf16", "int8"]
    roofs = {(r["config"], r["precision"]): r for r in payload["roofs"]}
    for name in ("step1", "gru_reset_before"):
        assert roofs[name, "int8"]["memory_ms"] < roofs[name, "bf16"]["memory_ms"] \
            < roofs[name, "fp32"]["memory_ms"]
    by_key = {(r["config"], r["engine"]): r for r in payload["results"]}
    reduced = [r for r in payload["results"] if r["precision"] != "fp32" and "median_ms" in r]
    assert {r["engine"] for r in reduced} >= {"fastlstm[cython,bf16]", "fastlstm[cython,int8]",
                                              "torch-bf16", "torch-int8"}
    # judged by their own bound, not the fp32 1e-4: they differ by more and are not flagged
    assert all(not r["flagged"] and r["tolerance"] == peers.TOLERANCES[r["precision"]]
               for r in reduced)
    assert max(r["max_abs_diff"] for r in reduced) > 1e-4
    step_bf16 = by_key["step1", "fastlstm[cython,bf16]"]
    assert step_bf16["best_bf16_peer"] in ("torch-bf16", "openvino-bf16")
    assert step_bf16["speedup_vs_onnxruntime_fp32"] > 0 and step_bf16["x_roof"] > 0
    assert by_key["step1", "fastlstm[cython,int8]"]["best_int8_peer"] == "torch-int8"
    assert by_key["gru_reset_before", "torch"]["skipped"].startswith("torch.nn.GRU has no")
    assert by_key["gru_reset_before", "fastlstm[cython]"]["reference"] == "onnxruntime"
    assert by_key["gru_reset_before", "fastlstm[cython]"]["max_abs_diff"] <= 1e-4
    accuracy = payload["accuracy"]
    assert accuracy["step1"]["reference"] == "torch"
    assert accuracy["gru_reset_before"]["reference"] == "onnxruntime"
    wanted = {"fastlstm[cython,bf16]", "fastlstm[cython,int8]", "torch-bf16", "torch-int8"}
    if _has("openvino"):
        from fastlstm.benchmarking.peers import openvino_bf16_peer
        if openvino_bf16_peer.cpu_has_bf16():
            wanted.add("openvino-bf16")
        else:
            assert by_key["step1", "openvino-bf16"]["skipped"] == openvino_bf16_peer.NO_BF16_NOTE
    assert wanted <= set(accuracy["step1"])
    assert all(0 < value < peers.TOLERANCES["bf16"] for row in accuracy.values()
               for key, value in row.items() if key != "reference")


@pytest.mark.skipif(not _has("torch"), reason="needs torch")
def test_torch_int8_peer_is_really_quantized(monkeypatch):
    import torch

    from fastlstm.benchmarking.peers import torch_int8_peer
    module = torch.nn.LSTM(8, 16)
    quantized = torch_int8_peer.quantize(module)
    assert "quantized" in type(quantized).__module__
    # quantize_dynamic on a bare nn.LSTM hands it back in fp32; the peer must notice
    monkeypatch.setattr(torch.ao.quantization, "quantize_dynamic",
                        lambda model, *args, **kwargs: model)
    with pytest.raises(RuntimeError, match="unquantized"):
        torch_int8_peer.quantize(module)


# -- the ONNX-only variant rows -------------------------------------------------------------------

def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _onnx_equations(op, weights, x, linear_before_reset=0):
    """ONNX's LSTM (gates i, o, f, c; peepholes P i, o, f) or GRU (z, r, h) equations for one
    forward direction, float64, read off the ONNX operator definitions: (T, B, H)."""
    W, R, B = (np.asarray(weights[key][0], np.float64) for key in "WRB")
    hidden = R.shape[1]
    Wb, Rb = B[:len(B) // 2], B[len(B) // 2:]
    h = np.zeros((x.shape[1], hidden))
    c = np.zeros_like(h)
    P = np.asarray(weights["P"][0], np.float64) if "P" in weights else np.zeros(3 * hidden)
    outputs = []
    block = lambda array, k: array[k * hidden:(k + 1) * hidden]  # noqa: E731
    for xt in np.asarray(x, np.float64):
        if op == "LSTM":
            pre = [xt @ block(W, k).T + h @ block(R, k).T + block(Wb, k) + block(Rb, k)
                   for k in range(4)]                                     # i, o, f, c
            i = _sigmoid(pre[0] + block(P, 0) * c)
            f = _sigmoid(pre[2] + block(P, 2) * c)
            c = f * c + i * np.tanh(pre[3])
            o = _sigmoid(pre[1] + block(P, 1) * c)
            h = o * np.tanh(c)
        else:
            z = _sigmoid(xt @ block(W, 0).T + h @ block(R, 0).T + block(Wb, 0) + block(Rb, 0))
            r = _sigmoid(xt @ block(W, 1).T + h @ block(R, 1).T + block(Wb, 1) + block(Rb, 1))
            if linear_before_reset:
                n = np.tanh(xt @ block(W, 2).T + r * (h @ block(R, 2).T + block(Rb, 2))
                            + block(Wb, 2))
            else:
                n = np.tanh(xt @ block(W, 2).T + (r * h) @ block(R, 2).T + block(Rb, 2)
                            + block(Wb, 2))
            h = (1 - z) * n + z * h
        outputs.append(h)
    return np.stack(outputs)


SMALL_VARIANTS = [
    BenchConfig("peephole_small", "LSTM", 5, 7, batch=3, steps=11, peephole=True),
    BenchConfig("reset_before_small", "GRU", 5, 7, batch=3, steps=11, linear_before_reset=False),
]


@pytest.mark.skipif(not _has("onnx", "onnxruntime"), reason="needs onnx and onnxruntime")
@pytest.mark.parametrize("config", SMALL_VARIANTS, ids=lambda c: c.name)
def test_variant_models_follow_the_onnx_equations(config):
    """The helper-built model's gate reorders, checked against ONNX's equations in float64
    (no fastlstm, no importer), run by ONNX Runtime, and fastlstm on the PyTorch-named weights."""
    import onnxruntime
    from onnx import numpy_helper

    from fastlstm.benchmarking.peers import onnx_export
    state, x = config.make_state_dict(), config.make_input()
    model = onnx_export.build_model(config, state)
    onnx_export.check_graph(model, config)
    weights = {tensor.name.split("_")[0]: numpy_helper.to_array(tensor)
               for tensor in model.graph.initializer if tensor.name != "out_shape"}
    assert ("P" in weights) == config.peephole
    expected = _onnx_equations(config.mode, weights, x, int(config.linear_before_reset))
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["y"], {"x": x})[0], expected, atol=1e-5, rtol=0)
    layer = config.fastlstm_class()(**config.layer_kwargs()).load_state_dict(state)
    np.testing.assert_allclose(layer(x)[0], expected, atol=1e-5, rtol=0)


@pytest.mark.skipif(not _has("onnx", "onnxruntime"), reason="needs onnx and onnxruntime")
def test_variant_model_of_a_stack():
    """Two bidirectional peephole layers: each node's Y reshaped into the next one's X."""
    import onnxruntime

    from fastlstm.benchmarking.peers import onnx_export
    config = BenchConfig("stack", "LSTM", 5, 7, batch=3, steps=6, num_layers=2,
                         bidirectional=True, peephole=True)
    state, x = config.make_state_dict(), config.make_input()
    session = onnxruntime.InferenceSession(
        onnx_export.build_model(config, state).SerializeToString(),
        providers=["CPUExecutionProvider"])
    layer = config.fastlstm_class()(**config.layer_kwargs()).load_state_dict(state)
    np.testing.assert_allclose(session.run(["y"], {"x": x})[0], layer(x)[0], atol=1e-5, rtol=0)


@pytest.mark.skipif(not _has("onnx", "openvino"), reason="needs onnx and openvino")
def test_openvino_bf16_declines_where_the_cpu_has_no_bf16(monkeypatch):
    """OpenVINO silently runs float32 where its CPU plugin cannot run bf16: such a column
    would pass fp32 off as bf16, so the peer declines, and only then."""
    import openvino
    from fastlstm.benchmarking import peers
    from fastlstm.benchmarking.peers import openvino_bf16_peer
    capabilities = openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert openvino_bf16_peer.cpu_has_bf16() == ("BF16" in capabilities)
    monkeypatch.setattr(openvino_bf16_peer, "cpu_has_bf16", lambda: False)
    with pytest.raises(peers.PeerUnavailable, match="runs float32 on this CPU"):
        openvino_bf16_peer.build(None, 1)


@pytest.mark.skipif(not _has("onnx", "openvino"), reason="needs onnx and openvino")
def test_openvino_still_drops_peepholes(tmp_path):
    """Why the openvino peers decline peephole rows.  Should this fail, OpenVINO has started
    computing ONNX peepholes: remove the skip in peers/openvino_peer.py."""
    import onnx
    import openvino

    from fastlstm.benchmarking.peers import onnx_export
    config = SMALL_VARIANTS[0]
    state, x = config.make_state_dict(), config.make_input()
    path = tmp_path / "peephole.onnx"
    onnx.save(onnx_export.build_model(config, state), path)
    compiled = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = compiled.create_infer_request().infer({0: x})[compiled.outputs[0]]
    without = {key: value for key, value in state.items() if "peephole" not in key}
    plain = fastlstm.LSTM(config.input_size, config.hidden_size).load_state_dict(without)
    with_peepholes = config.fastlstm_class()(**config.layer_kwargs()).load_state_dict(state)
    np.testing.assert_allclose(got, plain(x)[0], atol=1e-5, rtol=0)
    assert np.abs(got - with_peepholes(x)[0]).max() > 1e-3


def test_variant_rows_check_against_onnxruntime(monkeypatch):
    config = configs.CONFIGS["gru_reset_before"]
    assert not config.torch_expressible and config.reference_engine == "onnxruntime"
    assert config.describe().endswith("linear_before_reset=False")
    case = engines.Case(config)
    try:
        torch_peer = [e for e in engines.peer_engines(["torch"])[0]]
        if torch_peer:
            record = engines.bench_cell(torch_peer[0], case, 1, quick=True)
            assert record["skipped"] == "torch.nn.GRU has no linear_before_reset=False"
        _hide(monkeypatch, "onnxruntime")
        assert case.reference() is None   # no reference without onnxruntime, as without torch
    finally:
        case.close()


# -- the pytest-benchmark suite ------------------------------------------------------------------

def test_bench_suite_runs_in_quick_mode():
    command = [sys.executable, "-m", "pytest", "bench", "--benchmark-disable", "-q", "-rA",
               "-p", "no:cacheprovider", "-k", "step1 or gru_reset_before"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
    # every precision by default, and the variant row's torch cells skipped with the reason
    if "cython" in fastlstm.available_backends():
        for name in ("step1-fastlstm[cython,bf16]", "step1-fastlstm[cython,int8]",
                     "gru_reset_before-fastlstm[cython,int8]"):
            assert f"PASSED bench/test_bench.py::test_bench[1t-{name}]" in done.stdout, name
    if _has("torch"):
        assert "PASSED bench/test_bench.py::test_bench[1t-step1-torch-int8]" in done.stdout
        assert "torch.nn.GRU has no linear_before_reset=False" in done.stdout


# -- bench/sporadic.py: calls that arrive apart -------------------------------------------------

@pytest.mark.skipif(not _has("torch") or "cython" not in fastlstm.available_backends(),
                    reason="the fp32 reference is PyTorch's; the script runs the Cython backend")
def test_sporadic_script_prints_percentiles_of_spaced_and_back_to_back_calls():
    command = [sys.executable, "bench/sporadic.py", "--quick", "--configs", "step1",
               "--threads", "1,2", "--peers", "", "--precision", "fp32,int8", "--gap-ms", "5"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = [line.split("|")[1:-1] for line in done.stdout.splitlines()
             if line.startswith("| step1 |")]
    # 2 engines x 2 thread counts x (5 ms apart, back to back)
    assert [(cells[1].strip(), cells[2].strip(), cells[3].strip()) for cells in table] == [
        (engine, threads, gap) for threads in ("1", "2")
        for engine in ("fastlstm[cython]", "fastlstm[cython,int8]") for gap in ("5", "0")]
    for cells in table:
        p10, p50, p90, p99, worst = (float(cell) for cell in cells[4:])
        assert 0 < p10 <= p50 <= p90 <= p99 <= worst
