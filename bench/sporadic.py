"""Latency of calls that arrive apart: ``python bench/sporadic.py`` prints a markdown table.

A service rarely calls back to back: between requests its threads sleep, caches
cool and a thread team's worker has to be woken for the next call.  Each engine
is called ``--calls`` times with ``--gap-ms`` of sleep before every call (and once
back to back, gap 0, for comparison); the table gives percentiles of the call
times (ms).  Engines are the Cython backend in each precision and the peers asked
for (ONNX Runtime by default), on one config (lat_med by default) at each thread
count; each engine's output is checked against the fp32 reference first.
Options: --configs, --threads, --gap-ms, --calls, --peers, --precision, --quick.
"""

import argparse
import os
import sys
import time

import numpy as np

from fastlstm.benchmarking import configs as config_registry
from fastlstm.benchmarking import engines as engine_module

PERCENTILES = (10, 50, 90, 99)


def call_times(runner, gap_s, calls):
    """Times (ms) of ``calls`` calls of runner, each after sleeping ``gap_s``."""
    times = np.empty(calls)
    for index in range(calls):
        if gap_s:
            time.sleep(gap_s)
        start = time.perf_counter()
        runner()
        times[index] = (time.perf_counter() - start) * 1e3
    return times


def rows(config_name, threads, gaps_s, calls, precisions, peers):
    """Table rows (config, engine, threads, gap ms, percentiles..., max) for one config;
    each engine built and checked as the bench does (``prepare_engine``)."""
    case = engine_module.Case(config_registry.CONFIGS[config_name])
    engines, skipped = engine_module.requested_engines(["cython"], peers, precisions)
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}", file=sys.stderr)
    try:
        for n_threads in threads:
            for engine in engines:
                record, runner = engine_module.prepare_engine(engine, case, n_threads)
                if runner is None:
                    print(f"skipped {engine.name}: {record.get('skipped') or record['error']}",
                          file=sys.stderr)
                    continue
                if not record["max_abs_diff"] <= engine.tolerance:
                    raise AssertionError(f"{engine.name} on {config_name}: max abs diff "
                                         f"{record['max_abs_diff']:.2e} beyond "
                                         f"{engine.tolerance:.0e}")
                for _ in range(3):
                    runner()
                for gap_s in gaps_s:
                    times = call_times(runner, gap_s, calls)
                    yield (config_name, engine.name, n_threads, gap_s * 1e3,
                           *np.percentile(times, PERCENTILES), times.max())
    finally:
        case.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="lat_med")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--gap-ms", type=float, default=20.0)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--peers", default="onnxruntime")
    parser.add_argument("--precision", default="fp32,bf16,int8")
    parser.add_argument("--quick", action="store_true", help="20 calls (smoke test)")
    args = parser.parse_args(argv)
    calls = 20 if args.quick else args.calls
    threads = [int(value) for value in args.threads.split(",")]
    peers = [name for name in args.peers.split(",") if name]
    precisions = args.precision.split(",")
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"{calls} calls per row, load average {load} on {os.cpu_count()} cores\n")
    print("| config | engine | threads | gap ms | "
          + " | ".join(f"p{p} ms" for p in PERCENTILES) + " | max ms |")
    print("|---|---|---:|---:|" + "---:|" * (len(PERCENTILES) + 1))
    for config_name in args.configs.split(","):
        for config, engine, n_threads, gap_ms, *values in rows(
                config_name, threads, (args.gap_ms / 1e3, 0.0), calls, precisions, peers):
            cells = " | ".join(f"{value:.3g}" for value in values)
            print(f"| {config} | {engine} | {n_threads} | {gap_ms:g} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
