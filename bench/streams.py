"""Streaming benchmarks: ``python bench/streams.py`` prints markdown tables.

1. Per-step overhead on lat_med (LSTM 256/256, B=1, one step a call): the kernels
   alone (called directly on prepared buffers) against the stream's lean runner,
   ``s(x, out=buf)``, ``s(x)`` and a plain ``layer(x)``.  Measured as paired
   differences: each sample times the kernels and the candidate back to back
   (order alternating), so the machine's drift cancels; medians are reported.
2. StreamPool: 512 sessions of an LSTM 128/128 advanced together by one
   ``pool.step`` against the same 512 sessions stepped one by one (one Stream
   each); session-steps per second per core, one thread.
3. The GIL: lat_med calls (100 steps, B=1) from one thread and from two, with
   ``set_num_threads(1)`` so each call uses one core.
4. Resident memory over 1,000,000 one-step stream calls (a small LSTM 32/32, so
   it takes seconds).

Every timed path is checked against a reference first.  Options: --quick (short
runs, for a smoke test), --memory-steps N, --backend NAME (default: auto).
"""

import argparse
import os
import statistics
import sys
import threading
import time

import numpy as np

import fastlstm
from fastlstm.benchmarking.configs import CONFIGS

PAIRED_SAMPLES = 4000


def paired_overhead(kernel, candidate, samples):
    """Median of (candidate time - kernel time) over back-to-back pairs, and the kernel's
    median, in microseconds."""
    clock = time.perf_counter_ns
    diffs, kernel_times = [], []
    for index in range(samples):
        if index % 2:
            t0 = clock(); kernel(); t1 = clock(); candidate(); t2 = clock()  # noqa: E702
            kernel_time, candidate_time = t1 - t0, t2 - t1
        else:
            t0 = clock(); candidate(); t1 = clock(); kernel(); t2 = clock()  # noqa: E702
            candidate_time, kernel_time = t1 - t0, t2 - t1
        diffs.append(candidate_time - kernel_time)
        kernel_times.append(kernel_time)
    return statistics.median(kernel_times) / 1e3, statistics.median(diffs) / 1e3


def _cython_kernel_only(layer, x_rows):
    """The Cython kernels of one LSTM step on prepared buffers (what a step costs at least):
    a SequencePlan bound once, its team projecting x, as cython_glue.run_layers runs it."""
    from fastlstm import cython_glue as glue

    packed = layer._layers[0]
    n_blk = glue._n_blocks(layer.hidden_size)
    xproj = np.zeros((1, 1, n_blk * 4 * glue.UNITS), np.float32)
    h_state = np.zeros((2, 1, n_blk * glue.UNITS), np.float32)
    c_state = np.zeros((1, n_blk * glue.UNITS), np.float32)
    n_active = np.ones(1, np.int64)
    out = np.zeros((1, 1, layer.hidden_size), np.float32)
    threads = fastlstm.get_num_threads()
    scratch = glue.KernelScratch(1, layer.hidden_size, layer.hidden_size, threads, False)
    project_scratch = glue.ProjectScratch(layer.input_size, 4, threads,
                                          int8=packed.w_ih.dtype == np.int8)
    plan = glue.sequence_plan(
        glue.kernel_mode("LSTM", packed.variant), xproj, 0, packed.directions[0], False, h_state,
        c_state, glue._DUMMY_MATRIX, n_active, False, 0, layer.hidden_size, layer.hidden_size, 1,
        packed.variant, scratch, (packed, 0, project_scratch))

    def kernel():  # one step of one row
        plan.run(x_rows, out)
        return out

    return kernel


def _numba_kernel_only(layer, x_rows):
    from fastlstm.kernels.numba_common import project
    from fastlstm.kernels.numba_lstm import lstm_sequence
    from fastlstm.numba_glue import _EMPTY_MATRIX as empty

    packed = layer._layers[0]
    direction = packed.directions[0]
    hidden = layer.hidden_size
    xproj_rows = np.zeros((1, 4 * hidden), np.float32)
    xproj = xproj_rows.reshape(1, 1, -1)
    h, c = np.zeros((1, hidden), np.float32), np.zeros((1, hidden), np.float32)
    gates = np.zeros((1, 4 * hidden), np.float32)
    lengths = np.ones(1, np.int64)
    out = np.zeros((1, 1, hidden), np.float32)

    def kernel():
        project(x_rows, packed.w_ih, packed.bias, xproj_rows)
        lstm_sequence(xproj, 0, direction.w_hh, direction.w_hr, h, c, lengths, False, out, 0,
                      h, c, gates, empty, empty, direction.peep, False, np.inf)
        return out

    return kernel


def step_overhead(backend, samples):
    config = CONFIGS["lat_med"]
    layer = fastlstm.LSTM(config.input_size, config.hidden_size, backend=backend)
    layer.load_state_dict(config.make_state_dict())
    x = config.make_input()[:1, 0]  # (1, I): one step, unbatched
    make_kernel = {"cython": _cython_kernel_only, "numba": _numba_kernel_only}.get(layer.backend_name)
    if make_kernel is None:
        return []
    kernel = make_kernel(layer, x)
    stream = layer.stream()
    buffer = np.empty((1, config.hidden_size), np.float32)
    # check before timing: one step of each path equals the layer's one-step call
    expected = layer(x)[0]
    for got in (kernel()[0], stream(x), layer.stream()(x, out=buffer)):
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    stream(x)
    run = stream._plans[x.shape].run  # the lean runner the stream calls (internal)
    out3 = np.empty((1, 1, config.hidden_size), np.float32)
    candidates = [
        ("runner (lean entry point)", lambda: run(x, out3)),
        ("`s(x, out=buf)`", lambda: stream(x, out=buffer)),
        ("`s(x)`", lambda: stream(x)),
        ("`s(x)` batched (1, 1, I)", lambda x3=x[:, None]: stream(x3)),
        ("`layer(x)` (no stream)", lambda: layer(x)),
    ]
    rows = []
    for name, candidate in candidates:
        for _ in range(200):
            candidate(); kernel()  # noqa: E702 - warm-up
        kernel_us, overhead_us = paired_overhead(kernel, candidate, samples)
        rows.append((layer.backend_name, name, kernel_us, kernel_us + overhead_us, overhead_us))
    return rows


def pool_throughput(backend, sessions, rounds):
    """Session-steps per second: one pool.step over every session vs one Stream each."""
    hidden = 128
    rng = np.random.default_rng(0)
    layer = fastlstm.LSTM(hidden, hidden, backend=backend)
    bound = 1 / np.sqrt(hidden)
    layer.load_state_dict({key: rng.uniform(-bound, bound, value.shape).astype(np.float32)
                           for key, value in layer.state_dict().items()})
    xs = rng.standard_normal((rounds + 1, sessions, hidden)).astype(np.float32)
    pool = fastlstm.StreamPool(layer, capacity=sessions)
    sids = [pool.open() for _ in range(sessions)]
    streams = [layer.stream() for _ in range(sessions)]
    # check before timing: the first step agrees both ways
    batched = pool.step(dict(zip(sids, xs[0])))
    for sid, stream, x in zip(sids, streams, xs[0]):
        np.testing.assert_allclose(batched[sid], stream(x[None])[0], atol=1e-6, rtol=1e-6)
    together, alone = [], []
    for r in range(1, rounds + 1):
        inputs = dict(zip(sids, xs[r]))
        start = time.perf_counter()
        pool.step(inputs)
        together.append(time.perf_counter() - start)
        start = time.perf_counter()
        for stream, x in zip(streams, xs[r]):
            stream(x[None])
        alone.append(time.perf_counter() - start)
    return sessions / statistics.median(together), sessions / statistics.median(alone)


def gil_scaling(backend, seconds):
    """lat_med calls per second from 1 and 2 threads (each call on one core)."""
    config = CONFIGS["lat_med"]
    layer = fastlstm.LSTM(config.input_size, config.hidden_size, backend=backend)
    layer.load_state_dict(config.make_state_dict())
    x = config.make_input()
    layer(x)

    def rate(n_threads):
        counts, stop = [0] * n_threads, threading.Event()
        barrier = threading.Barrier(n_threads + 1)

        def body(index):
            barrier.wait()
            while not stop.is_set():
                layer(x)
                counts[index] += 1

        threads = [threading.Thread(target=body, args=(i,)) for i in range(n_threads)]
        for thread in threads:
            thread.start()
        barrier.wait()
        start = time.perf_counter()
        time.sleep(seconds)
        stop.set()
        for thread in threads:
            thread.join()
        return sum(counts) / (time.perf_counter() - start)

    one, two = rate(1), rate(2)
    return one, two


def _resident_mib():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096 / 2**20


def memory_over_steps(backend, steps):
    layer = fastlstm.LSTM(32, 32, backend=backend)
    stream = layer.stream()
    x = np.random.default_rng(0).standard_normal((1, 32)).astype(np.float32)
    for _ in range(5000):
        stream(x)
    before = _resident_mib()
    start = time.perf_counter()
    for _ in range(steps):
        stream(x)
    elapsed = time.perf_counter() - start
    return before, _resident_mib(), elapsed


def _print_overhead(backends, quick):
    print("## Per-step overhead, lat_med (LSTM 256/256, B=1, one step a call)\n")
    print("| backend | path | kernels alone (us) | path (us) | overhead (us) |")
    print("|---|---|---:|---:|---:|")
    for backend in backends:
        for name, path, kernel_us, total_us, overhead_us in step_overhead(
                backend, 300 if quick else PAIRED_SAMPLES):
            print(f"| {name} | {path} | {kernel_us:.2f} | {total_us:.2f} | {overhead_us:+.2f} |")


def _print_pool(backends, quick, sessions):
    print(f"\n## StreamPool: {sessions} sessions of an LSTM 128/128, one step each\n")
    print("| backend | together: session-steps/s per core | one by one | speed-up |")
    print("|---|---:|---:|---:|")
    for backend in backends:
        together, alone = pool_throughput(backend, sessions, 3 if quick else 30)
        print(f"| {backend} | {together:,.0f} | {alone:,.0f} | {together / alone:.1f}x |")


def _print_gil(backends, quick):
    print("\n## The GIL: lat_med calls (100 steps, B=1) per second, one core per call\n")
    print("| backend | 1 thread | 2 threads | scaling |")
    print("|---|---:|---:|---:|")
    for backend in backends:
        one, two = gil_scaling(backend, 0.3 if quick else 3.0)
        print(f"| {backend} | {one:.1f} | {two:.1f} | {two / one:.2f}x |")


def _print_memory(backends, steps):
    print(f"\n## Resident memory over {steps:,} one-step calls (LSTM 32/32)\n")
    print("| backend | after warm-up (MiB) | after (MiB) | growth (MiB) | us/step |")
    print("|---|---:|---:|---:|---:|")
    for backend in backends:
        before, after, elapsed = memory_over_steps(backend, steps)
        print(f"| {backend} | {before:.1f} | {after:.1f} | {after - before:+.2f} | "
              f"{elapsed / steps * 1e6:.2f} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (smoke test)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--memory-steps", type=int, default=None)
    parser.add_argument("--sessions", type=int, default=None, help="pool sessions (default 512)")
    parser.add_argument("--only", default="overhead,pool,gil,memory",
                        help="comma list of sections to run (default: all)")
    args = parser.parse_args(argv)
    sections = set(args.only.split(","))
    quick = args.quick
    fastlstm.set_num_threads(1)
    backends = fastlstm.available_backends() if args.backend == "auto" else [args.backend]
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"fastlstm {fastlstm.__version__}, backends {backends}, one thread per call "
          f"(set_num_threads(1)); load average {load} on {os.cpu_count()} cores (the 2-thread "
          "figure needs the second core free)\n")

    if "overhead" in sections:
        _print_overhead(backends, quick)
    if "pool" in sections:
        _print_pool(backends, quick, args.sessions or (64 if quick else 512))
    if "gil" in sections:
        _print_gil(backends, quick)
    if "memory" in sections:
        _print_memory(backends, args.memory_steps or (20_000 if quick else 1_000_000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
