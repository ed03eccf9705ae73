"""Timing one callable: warm up first (JIT compile, lazy init and first-touch
allocation are never timed), then an adaptive number of timed calls with
``time.perf_counter_ns``; median and min are reported."""

import statistics
import time
from dataclasses import dataclass

# Timed-loop budget per (engine, config, threads).  A full
# ``--configs all --threads 1,2`` run with two backends and three peers times
# 10 x 2 x 5 = 100 such cells, so 0.6 s each keeps it to a few minutes.  Calls
# slower than the budget / MIN_REPEAT (the numba backend at batch 64, 1-2 s a
# call) get MIN_REPEAT calls: their run-to-run spread is a few percent.
BUDGET_S = 0.6
QUICK_BUDGET_S = 0.02
MIN_REPEAT = 3
QUICK_MIN_REPEAT = 2
MAX_REPEAT = 2000
# The caller's correctness check is the first call (and compiles); warm-up adds
# at least one more, and keeps going while under WARMUP_BUDGET_S.
WARMUP_CALLS = 1
WARMUP_BUDGET_S = 0.2


@dataclass
class Timing:
    median_ms: float
    min_ms: float
    repeats: int

    def as_dict(self):
        return {"median_ms": self.median_ms, "min_ms": self.min_ms, "repeats": self.repeats}


def warm_up(fn, calls=WARMUP_CALLS, budget_s=WARMUP_BUDGET_S):
    """Call ``fn`` at least ``calls`` times (more while under ``budget_s``);
    returns the duration of the last call in seconds, an estimate for planning."""
    start = time.perf_counter()
    last = 0.0
    done = 0
    while done < calls or (time.perf_counter() - start + last < budget_s and done < 50):
        t0 = time.perf_counter()
        fn()
        last = time.perf_counter() - t0
        done += 1
    return last


def plan_repeats(estimate_s, quick=False, repeat=None):
    """How many timed calls: ``repeat`` if given, else as many as fit the budget."""
    if repeat is not None:
        return max(1, int(repeat))
    budget = QUICK_BUDGET_S if quick else BUDGET_S
    minimum = QUICK_MIN_REPEAT if quick else MIN_REPEAT
    fit = int(budget / max(estimate_s, 1e-7))
    return max(minimum, min(MAX_REPEAT, fit))


def measure(fn, *, quick=False, repeat=None, warmup=True):
    """Warm up, then time ``fn()`` repeatedly; returns a ``Timing`` (ms)."""
    estimate = warm_up(fn, calls=WARMUP_CALLS,
                       budget_s=0.0 if quick else WARMUP_BUDGET_S) if warmup else 0.0
    samples = []
    for _ in range(plan_repeats(estimate, quick, repeat)):
        t0 = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t0)
    return Timing(median_ms=statistics.median(samples) / 1e6, min_ms=min(samples) / 1e6,
                  repeats=len(samples))
