"""The roof: the time below which no float32-arithmetic engine can run a config on this machine.

    roof = max(memory, compute)
    memory  = steps * sum over layers/directions of bytes(W_hh) / read_bandwidth(bytes(W_hh), threads)
    compute = (recurrent + input-projection flops) / gemm_ceiling(threads)

Every step must read each recurrent matrix once (the step depends on the
previous one, so the reads cannot be batched across steps), and every flop has
to be done at best at the speed of a large, well-tuned float32 sgemm.  Both
machine figures are measured in the same run, once per buffer size / thread
count (cached for the rest of the process).

Per weight precision the memory half uses the bytes W_hh takes in it (bf16 2 a
weight, int8 1 plus a float32 scale per row; ``configs.WEIGHT_BYTES``) and the
bandwidth measured over a buffer of that size; the compute half stays the fp32
GEMM ceiling, which binds the engines that multiply in float32 (fastlstm's bf16
widens its weights, on CPUs without AMX).  An engine multiplying in bf16 or int8
(AMX, VNNI: fastlstm int8's recurrent product, fastlstm bf16 on AMX, torch's and
OpenVINO's reduced forms) is bound by the memory half only.

* read bandwidth: a hot, vectorised sum over a float32 buffer of the matrix's
  size, split over ``threads`` threads (a Numba kernel; numpy's
  ``np.add.reduce`` too for one thread); best of several runs;
* GEMM ceiling: a 2048^3 float32 matrix product in a fresh subprocess per
  thread count, with numpy's OpenBLAS both as it picks its kernels and forced
  to ``OPENBLAS_CORETYPE=SkylakeX`` (its runtime detection may settle for the
  AVX2 kernels on AVX-512 CPUs, about half the speed), and with ``torch.mm``
  when torch is installed; the best wins.
"""

import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

GEMM_SIZE = 2048
QUICK_GEMM_SIZE = 1024
GEMM_VARIANTS = {
    # label: (library, extra environment)
    "numpy[OPENBLAS_CORETYPE=SkylakeX]": ("numpy", {"OPENBLAS_CORETYPE": "SkylakeX"}),
    "numpy": ("numpy", {}),
    "torch": ("torch", {}),
}
THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
READ_TARGET_BYTES = 2 << 30   # bytes read per timed bandwidth call (about 10-20 ms)
READ_RUNS = 7
ALIGN = 4096

_gemm_cache = {}
_bandwidth_cache = {}


@dataclass
class Roof:
    memory_ms: float
    compute_ms: float
    bandwidth_gbs: float
    gemm_gflops: float

    @property
    def roof_ms(self):
        return max(self.memory_ms, self.compute_ms)

    @property
    def bound(self):
        return "memory" if self.memory_ms >= self.compute_ms else "compute"

    def as_dict(self):
        return {"roof_ms": self.roof_ms, "memory_ms": self.memory_ms,
                "compute_ms": self.compute_ms, "bound": self.bound,
                "bandwidth_gbs": self.bandwidth_gbs, "gemm_gflops": self.gemm_gflops}


def roof_from(config, bandwidth_gbs, gemm_gflops, precision="fp32"):
    """The roof of ``config`` with ``precision`` weights given the machine figures (pure
    arithmetic, no measuring)."""
    bytes_read = config.steps * config.recurrent_matrices * config.recurrent_matrix_bytes(precision)
    memory_ms = bytes_read / (bandwidth_gbs * 1e9) * 1e3
    compute_ms = config.flops() / (gemm_gflops * 1e9) * 1e3
    return Roof(memory_ms, compute_ms, bandwidth_gbs, gemm_gflops)


def config_roof(config, threads, quick=False, precision="fp32"):
    """Measure (or reuse) the machine figures and return the roof of ``config`` with
    ``precision`` weights (read bandwidth measured over a buffer of their size).

    An engine given n threads may use just one, so the n-thread figures used are
    at least the 1-thread ones.  This also keeps the roof honest when another
    process on a shared machine spoils the n-thread measurement (seen here: a
    2-thread sgemm at 162 GFLOP/s against 166 on one thread while the other core
    was busy).
    """
    counts = sorted({1, int(threads)})
    nbytes = config.recurrent_matrix_bytes(precision)
    bandwidth = max(read_bandwidth_gbs(nbytes, n, quick) for n in counts)
    ceiling = max(gemm_ceiling(n, quick)["best"] for n in counts)
    return roof_from(config, bandwidth, ceiling, precision)


def gflops(config, ms):
    """Achieved GFLOP/s of one sequence run in ``ms`` milliseconds."""
    return config.flops() / (ms * 1e-3) / 1e9


def clear_cache():
    _gemm_cache.clear()
    _bandwidth_cache.clear()


def measured():
    """Every figure measured so far: {"gemm_gflops": {threads: {...}}, "read_bandwidth_gbs": ...}."""
    bandwidth = {}
    for (nbytes, threads), value in sorted(_bandwidth_cache.items()):
        bandwidth.setdefault(str(threads), {})[str(nbytes)] = value
    return {"gemm_gflops": {str(threads): dict(value)
                            for (threads, _), value in sorted(_gemm_cache.items())},
            "read_bandwidth_gbs": bandwidth}


# -- GEMM ceiling ---------------------------------------------------------------------------

def gemm_ceiling(threads, quick=False, refresh=False):
    """{variant label: GFLOP/s, ..., "best": max} for a float32 sgemm on ``threads`` threads.

    Measured once per run; ``refresh`` measures again and keeps the better figure
    per variant (a second look, later in the run, in case the first one shared
    the cores with another process).
    """
    key = (threads, bool(quick))
    if key not in _gemm_cache or refresh:
        size = QUICK_GEMM_SIZE if quick else GEMM_SIZE
        runs = 2 if quick else 6
        results = dict(_gemm_cache.get(key, {}))
        results.pop("best", None)
        for label, (library, extra_env) in GEMM_VARIANTS.items():
            if importlib.util.find_spec(library) is None:
                continue
            value = _gemm_subprocess(library, extra_env, threads, size, runs)
            if value is not None:
                results[label] = max(value, results.get(label, 0.0))
        if not results:
            raise RuntimeError("could not measure any GEMM ceiling (numpy subprocess failed)")
        results["best"] = max(results.values())
        _gemm_cache[key] = results
    return _gemm_cache[key]


def _gemm_subprocess(library, extra_env, threads, size, runs):
    env = dict(os.environ, **extra_env)
    for name in THREAD_ENV:
        env[name] = str(threads)
    command = [sys.executable, "-m", "fastlstm.benchmarking.roof", "gemm", library,
               str(threads), str(size), str(runs)]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300,
                              check=True)
        return float(json.loads(done.stdout.strip().splitlines()[-1])["gflops"])
    except (subprocess.SubprocessError, ValueError, KeyError, IndexError):
        return None


def _gemm_worker(library, threads, size, runs):
    """Runs in the subprocess: best GFLOP/s of ``runs`` (size x size) @ (size x size) float32."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    if library == "torch":
        import torch
        torch.set_num_threads(threads)
        a, b = torch.from_numpy(a), torch.from_numpy(b)
        out = torch.empty(size, size)

        def product():
            torch.mm(a, b, out=out)
    else:
        out = np.empty((size, size), np.float32)

        def product():
            np.matmul(a, b, out=out)
    product()  # warm-up: thread pool start, page faults
    best = min(_seconds(product) for _ in range(runs))
    return 2.0 * size ** 3 / best / 1e9


def _seconds(fn):
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / 1e9


# -- read bandwidth -------------------------------------------------------------------------

_read_kernel = None


def _get_read_kernel():
    """A Numba kernel: the first ``elements`` of each row of ``rows`` summed ``reps``
    times, one row per thread.

    Summing needs reassociation to vectorise (several vector accumulators in flight);
    the reps loop keeps the buffer hot and amortises the parallel launch.  ``rows``
    is C-contiguous: a non-contiguous view (rows cut short of their padded stride)
    compiles to a scalar loop that read 17 GB/s on 2 threads where the vector loop
    reads 340.
    """
    global _read_kernel
    if _read_kernel is None:
        from numba import njit, prange

        @njit(parallel=True, nogil=True, fastmath={"reassoc", "contract", "nsz"})
        def read_kernel(rows, elements, reps, out):
            # rows (n, stride >= elements) float32 C-contiguous IN, out (n,) float32 OUT
            for c in prange(rows.shape[0]):
                row = rows[c]
                total = np.float32(0.0)
                for _ in range(reps):
                    acc = np.float32(0.0)
                    for i in range(elements):
                        acc += row[i]
                    total += acc
                out[c] = total

        _read_kernel = read_kernel
    return _read_kernel


def read_bandwidth_gbs(nbytes, threads, quick=False, refresh=False):
    """Best read bandwidth (GB/s) over a hot float32 buffer of ``nbytes`` on ``threads``
    threads; ``refresh`` measures again and keeps the better figure."""
    key = (int(nbytes), int(threads))
    if key not in _bandwidth_cache or refresh:
        value = _measure_bandwidth(int(nbytes), int(threads), quick)
        _bandwidth_cache[key] = max(value, _bandwidth_cache.get(key, 0.0))
    return _bandwidth_cache[key]


def remeasure():
    """Measure every figure taken so far once more, keeping the better one."""
    for threads, quick in list(_gemm_cache):
        gemm_ceiling(threads, quick, refresh=True)
    for nbytes, threads in list(_bandwidth_cache):
        read_bandwidth_gbs(nbytes, threads, refresh=True)


def _aligned_rows(rows, elements):
    """(rows, stride) float32 of ones, C-contiguous, stride = elements rounded up so
    that each row starts on a 4096-byte boundary.

    Alignment matters: a Numba sum over a 1 MiB buffer reads 168 GB/s from a
    64-byte aligned start and 94 GB/s from a start 16 bytes off (measured here,
    one thread); an engine is free to align its weights, so the roof does too.
    """
    stride = -(-elements * 4 // ALIGN) * ALIGN // 4
    raw = np.empty(rows * stride * 4 + ALIGN, np.uint8)
    start = (-raw.ctypes.data) % ALIGN
    block = raw[start:start + rows * stride * 4].view(np.float32).reshape(rows, stride)
    block[:] = 1.0
    return block


def _measure_bandwidth(nbytes, threads, quick):
    import numba

    runs = 3 if quick else READ_RUNS
    target = READ_TARGET_BYTES // (8 if quick else 1)
    usable = min(threads, numba.config.NUMBA_NUM_THREADS)
    elements = max(nbytes // 4 // usable, 16)
    rows = _aligned_rows(usable, elements)
    real_bytes = usable * elements * 4
    reps = max(1, target // real_bytes)
    out = np.empty(usable, np.float32)
    kernel = _get_read_kernel()
    previous = numba.get_num_threads()
    numba.set_num_threads(usable)
    try:
        kernel(rows, elements, 1, out)  # compile and warm
        best = min(_seconds(lambda: kernel(rows, elements, reps, out)) for _ in range(runs))
    finally:
        numba.set_num_threads(previous)
    bandwidth = real_bytes * reps / best / 1e9
    if usable == 1:  # numpy's own SIMD reduction as a second opinion
        flat = rows[0, :elements]
        np.add.reduce(flat)
        numpy_reps = max(1, reps // 4)

        def numpy_sum():
            for _ in range(numpy_reps):
                np.add.reduce(flat)
        numpy_best = min(_seconds(numpy_sum) for _ in range(runs))
        bandwidth = max(bandwidth, real_bytes * numpy_reps / numpy_best / 1e9)
    return bandwidth


if __name__ == "__main__":
    # python -m fastlstm.benchmarking.roof gemm LIBRARY THREADS SIZE RUNS  (used by gemm_ceiling)
    if len(sys.argv) == 6 and sys.argv[1] == "gemm":
        _, _, lib, n_threads, n, n_runs = sys.argv
        print(json.dumps({"gflops": _gemm_worker(lib, int(n_threads), int(n), int(n_runs))}))
    else:
        sys.exit("usage: python -m fastlstm.benchmarking.roof gemm LIBRARY THREADS SIZE RUNS")
