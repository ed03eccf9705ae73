"""Timing callables: warm up first (JIT compile, lazy init and first-touch
allocation are never timed), then an adaptive number of timed calls with
``time.perf_counter_ns``; median and min are reported.

Engines compared in one table are timed in interleaved rounds (``measure_interleaved``):
each gets a share of its calls in every round, so a burst of load from elsewhere on a
shared machine falls on all of them rather than on whichever ran at that moment."""

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
# Interleaved timing: rounds of every engine's share of calls; after a switch the
# engine's caches are cold and the previous engine's worker threads may still spin,
# so each share starts after a short pause and, for calls shorter than REWARM_BELOW_S
# (where a cold cache would show), with one untimed call.
ROUNDS = 5
SWITCH_PAUSE_S = 0.01
REWARM_BELOW_S = 0.05
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


def _timing(samples):
    return Timing(median_ms=statistics.median(samples) / 1e6, min_ms=min(samples) / 1e6,
                  repeats=len(samples))


class _Plain:
    """A callable as a runner with nothing to activate."""

    def __init__(self, fn):
        self.fn = fn

    def activate(self):
        pass

    def __call__(self):
        return self.fn()


def measure(fn, *, quick=False, repeat=None):
    """Warm up, then time ``fn()`` repeatedly; returns a ``Timing`` (ms)."""
    result = measure_interleaved([_Plain(fn)], quick=quick, repeat=repeat, rounds=1)[0]
    if isinstance(result, Exception):
        raise result
    return result


def measure_interleaved(runners, *, quick=False, repeat=None, rounds=ROUNDS):
    """Time several callables side by side: each is activated (``runner.activate()``, its
    process-wide settings such as thread counts) and warmed up, then ``rounds`` rounds
    each give every runner an equal share of its planned calls (``plan_repeats`` from its
    own warm-up, as ``measure``).  Returns one result per runner, in order: a ``Timing``
    (ms), or the exception that runner raised (it then drops out of the rounds)."""
    results = [None] * len(runners)
    counts, estimates = [0] * len(runners), [0.0] * len(runners)
    for i, runner in enumerate(runners):
        try:
            runner.activate()
            estimates[i] = warm_up(runner, calls=WARMUP_CALLS,
                                   budget_s=0.0 if quick else WARMUP_BUDGET_S)
        except Exception as error:  # noqa: BLE001 - the caller records it for that runner
            results[i] = error
            continue
        counts[i] = plan_repeats(estimates[i], quick, repeat)
    n_rounds = max(1, min(rounds, max(counts, default=1)))
    samples = [[] for _ in runners]
    for round_index in range(n_rounds):
        for i, runner in enumerate(runners):
            share = counts[i] * (round_index + 1) // n_rounds - counts[i] * round_index // n_rounds
            if results[i] is not None or not share:
                continue
            try:
                runner.activate()
                if len(runners) > 1 and not quick:
                    time.sleep(SWITCH_PAUSE_S)
                    if estimates[i] < REWARM_BELOW_S:
                        runner()
                for _ in range(share):
                    t0 = time.perf_counter_ns()
                    runner()
                    samples[i].append(time.perf_counter_ns() - t0)
            except Exception as error:  # noqa: BLE001 - as above
                results[i] = error
    return [result if result is not None else _timing(taken)
            for result, taken in zip(results, samples)]
