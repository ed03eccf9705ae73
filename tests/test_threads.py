"""Thread settings: set_num_threads / get_num_threads / FASTLSTM_NUM_THREADS, a call
never using more threads than set, identical results at any thread count, and the
floating-point state of the calling thread left as it was."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

import fastlstm
from fastlstm import cython_glue


def run_python(code, **env):
    environment = {**os.environ, **env}
    environment.pop("FASTLSTM_NUM_THREADS", None) if "FASTLSTM_NUM_THREADS" not in env else None
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=environment, timeout=120)
    return result


def test_default_is_the_cores_this_process_may_use():
    result = run_python("import fastlstm; print(fastlstm.get_num_threads())")
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == len(os.sched_getaffinity(0))


def test_environment_variable_sets_the_default():
    result = run_python("import fastlstm; print(fastlstm.get_num_threads())", FASTLSTM_NUM_THREADS="1")
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == 1


@pytest.mark.parametrize("value", ["0", "two", "-3"])
def test_bad_environment_variable_is_a_clear_error(value):
    result = run_python("import fastlstm", FASTLSTM_NUM_THREADS=value)
    assert result.returncode != 0
    assert "FASTLSTM_NUM_THREADS" in result.stderr and repr(value) in result.stderr


@pytest.mark.parametrize("value, error", [(0, ValueError), (-1, ValueError), ("2", TypeError),
                                          (True, TypeError), (1.5, TypeError)])
def test_set_num_threads_rejects(value, error):
    with pytest.raises(error, match="n"):
        fastlstm.set_num_threads(value)


def test_set_and_get(restore_threads):
    fastlstm.set_num_threads(3)
    assert fastlstm.get_num_threads() == 3


def test_results_do_not_depend_on_the_thread_count(restore_threads, monkeypatch, rng):
    """Each thread owns whole blocks of units, so the arithmetic per unit is the same."""
    monkeypatch.setattr(cython_glue, "_MIN_FLOPS_PER_THREAD_STEP", 1)  # threads even for tiny work
    layers = [fastlstm.LSTM(17, 129, num_layers=2, bidirectional=True, proj_size=37, backend="cython"),
              fastlstm.GRU(37, 129, bidirectional=True, backend="cython",
                           linear_before_reset=False),
              fastlstm.LSTM(17, 129, backend="cython", peephole=True, precision="int8")]
    for layer in layers:
        x = rng.normal(size=(9, 5, layer.input_size)).astype(np.float32)
        lengths = np.array([9, 3, 1, 9, 6])
        results = []
        for threads in (1, 2, 3):
            fastlstm.set_num_threads(threads)
            results.append(layer(x, lengths=lengths))
        for other in results[1:]:
            assert np.array_equal(other[0], results[0][0])


@pytest.mark.parametrize("threads", [2, 3])
def test_many_short_steps_meet_at_every_barrier(restore_threads, monkeypatch, rng, threads):
    """Teams of two wait on each other's count of steps, larger teams on a shared
    counter: over 400 steps of a few microseconds each (where a thread reading its
    partner's h before it is written would show), the same numbers as one thread."""
    monkeypatch.setattr(cython_glue, "_MIN_FLOPS_PER_THREAD_STEP", 1)
    layer = fastlstm.LSTM(3, 37, backend="cython")
    x = rng.normal(size=(400, 1, 3)).astype(np.float32)
    fastlstm.set_num_threads(1)
    expected = layer(x)
    fastlstm.set_num_threads(threads)
    for _ in range(5):
        got = layer(x)
        assert np.array_equal(got[0], expected[0])
        assert np.array_equal(got[1][0], expected[1][0])


def test_layouts_of_the_threads(restore_threads, monkeypatch):
    """Two threads: directions side by side; bf16/int8 batches in halves from 8 rows
    when W_hh fits a core's L2 share, from 64 rows whatever its size; fp32 in halves
    from 64 rows where both halves run on AMX tiles; anything else one team.  One
    thread: always one team."""
    fastlstm.set_num_threads(2)
    layout = cython_glue.lane_layout
    openmp = cython_glue._kernels.openmp_enabled()
    small, large = 1 << 19, 1 << 21  # bytes of W_hh
    assert layout(2, 1, 4, small) == ("directions" if openmp else "team")
    assert layout(1, 8, 2, small) == ("rows" if openmp else "team")
    assert layout(1, 64, 1, large) == ("rows" if openmp else "team")
    for n_dirs, batch, weight_bytes, size in [(1, 7, 2, small), (1, 63, 2, large),
                                              (1, 63, 4, small)]:
        assert layout(n_dirs, batch, weight_bytes, size) == "team"
    tiles = cython_glue._AMX_CPU and cython_glue._USE_AMX
    assert layout(1, 64, 4, large) == ("rows" if openmp and tiles else "team")
    monkeypatch.setattr(cython_glue, "_USE_AMX", False)
    assert layout(1, 64, 4, small) == "team"
    fastlstm.set_num_threads(1)
    assert layout(2, 64, 2, small) == "team"


# bf16 rounds h every step too: off the AMX tiles, where row tiles of different sizes
# sum in different orders, a last-bit difference can move a value across a bf16
# rounding boundary (seen: 5e-5 on GRU 129 at batch 65, test_precision.ISA_ATOL)
BF16_HALVES_ATOL = 1e-6 if cython_glue._AMX_CPU else 2e-3


@pytest.mark.parametrize("precision, atol, batch", [
    ("bf16", BF16_HALVES_ATOL, 33),  # on AMX: sums of exact products, other tile rows
    ("bf16", BF16_HALVES_ATOL, 65),  # the LSTM's steps multiply x in their tiles (AMX)
    # int8 quantizes h every step: a last-bit difference can move a value across a
    # rounding boundary of the int8 grid (test_precision.ISA_ATOL)
    ("int8", 2e-3, 33),
    # fp32 halves from 64 rows where they run on AMX tiles (halves of 33 and 32 rows)
    ("fp32", 1e-6, 65),
])
def test_batch_halves_give_the_one_thread_results(restore_threads, rng, precision, atol, batch):
    """Batches run in two halves side by side on 2 threads (bf16/int8 from 8 rows, fp32
    from 64 on AMX CPUs): the same numbers as one team on 1 thread, with lengths, initial
    states, projection and the original GRU, for an odd batch (halves of different sizes).
    Weights from ``rng`` (the default initialisation is unseeded)."""
    layers = [fastlstm.LSTM(17, 37, num_layers=2, proj_size=5, precision=precision),
              fastlstm.GRU(17, 37, precision=precision, linear_before_reset=False),
              fastlstm.GRU(17, 129, precision=precision)]
    for layer in layers:
        layer.load_state_dict({key: rng.uniform(-0.3, 0.3, value.shape).astype(np.float32)
                               for key, value in layer.state_dict().items()})
    x = rng.normal(size=(9, batch, 17)).astype(np.float32)
    lengths = rng.integers(1, 10, batch)
    for layer in layers:
        h_out = layer.proj_size or layer.hidden_size
        h0 = rng.normal(size=(layer.num_layers, batch, h_out)).astype(np.float32)
        state = (h0, rng.normal(size=(layer.num_layers, batch, layer.hidden_size))
                 .astype(np.float32)) if isinstance(layer, fastlstm.LSTM) else h0
        fastlstm.set_num_threads(1)
        one = layer(x, state, lengths=lengths)
        fastlstm.set_num_threads(2)
        two = layer(x, state, lengths=lengths)
        np.testing.assert_allclose(two[0], one[0], atol=atol, rtol=0)
        for got, expected in zip(_parts(two[1]), _parts(one[1])):
            np.testing.assert_allclose(got, expected, atol=atol, rtol=0)


def _parts(state):
    """An LSTM's (h, c) or another cell's h, as a tuple."""
    return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize("backend", fastlstm.available_backends())
def test_one_thread_means_one_busy_core(restore_threads, backend, rng):
    """With set_num_threads(1) a big call keeps process CPU time at its wall time
    (no OpenMP team, no BLAS threads); several busy threads would exceed it."""
    fastlstm.set_num_threads(1)
    layer = fastlstm.LSTM(256, 256, backend=backend)
    x = rng.normal(size=(50, 64, 256)).astype(np.float32)
    layer(x)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(3):
        layer(x)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert cpu <= 1.15 * wall + 0.02, (cpu, wall)


def test_denormals_are_flushed_only_inside_kernels(rng):
    """Inputs with denormal values give finite, correct-size results, and the
    caller's floating-point mode is restored afterwards: a denormal still survives
    numpy arithmetic after the call."""
    layer = fastlstm.LSTM(17, 37, backend="cython")
    x = np.full((5, 2, 17), 1e-40, np.float32)
    out, _ = layer(x)
    assert np.all(np.isfinite(out))
    tiny = np.array([1e-39], np.float32)
    assert (tiny * np.float32(1.0))[0] != 0.0


PINNING_PROBE = """
import os, sys, numpy as np, fastlstm
def pinned_threads():
    found = {}
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/status") as status:
            for line in status:
                if line.startswith("Cpus_allowed_list:"):
                    cpus = line.split(":")[1].strip()
                    if cpus.isdigit():
                        found[int(tid)] = int(cpus)
    return found
allowed = sorted(os.sched_getaffinity(0))
if len(sys.argv) > 1:
    allowed = allowed[:1]
    os.sched_setaffinity(0, allowed)
fastlstm.set_num_threads(2)
layer = fastlstm.LSTM(256, 256, backend="cython")
x = np.random.default_rng(0).normal(size=(20, 1, 256)).astype(np.float32)
before = pinned_threads()
out = layer(x)[0]
after = pinned_threads()
fastlstm.set_num_threads(1)
alone = layer(x)[0]
print(repr((before, after, os.getpid(), sorted(os.sched_getaffinity(0)), allowed,
            float(np.abs(out - alone).max()))))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or len(os.sched_getaffinity(0)) < 2
                    or not cython_glue._kernels.openmp_enabled(),
                    reason="needs Linux, two allowed CPUs and OpenMP")
def test_team_workers_are_pinned_apart_from_the_caller():
    """A 2-thread call pins its worker to one allowed CPU (not the caller: the caller's
    own affinity is left as it was), so the worker cannot be woken onto the caller's
    CPU; with one CPU allowed the team shares it.  Results equal the 1-thread call."""
    result = run_python(PINNING_PROBE)
    assert result.returncode == 0, result.stderr
    before, after, pid, caller_cpus, allowed, diff = eval(result.stdout)
    assert before == {}
    assert pid not in after and caller_cpus == allowed
    assert len(after) == 1 and list(after.values())[0] in allowed
    assert diff <= 1e-6

    result = subprocess.run([sys.executable, "-c", PINNING_PROBE, "one-cpu"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    before, after, pid, caller_cpus, allowed, diff = eval(result.stdout)
    assert caller_cpus == allowed and len(allowed) == 1 and set(after.values()) == set(allowed)
    assert diff <= 1e-6
