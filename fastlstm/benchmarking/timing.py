"""Timing callables: warm up first (JIT compile, lazy init and first-touch
allocation are never timed), then an adaptive number of timed calls with
``time.perf_counter_ns``; median and min are reported.

Engines compared in one table are timed in interleaved rounds (``measure_interleaved``):
each gets a share of its calls in every round, so a burst of load from elsewhere on a
shared machine falls on all of them rather than on whichever ran at that moment."""

import os
import statistics
import threading
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
# so each share starts after a short pause, then waits until the process's other
# threads have gone quiet (wait_for_quiet_threads), and, for calls shorter than
# REWARM_BELOW_S (where a cold cache would show), makes one untimed call.  The
# spinning lasts longer than a short pause: after 10 calls of lat_med at 2 threads
# another thread kept a core busy for 65-70 ms after ONNX Runtime's, and 105-110 ms
# after the Numba backend's (SciPy's OpenBLAS workers); a 2-thread fastlstm call
# started in that time took 25-57 ms instead of 1.5 (Zen 3, 2 cores).
ROUNDS = 5
SWITCH_PAUSE_S = 0.01
REWARM_BELOW_S = 0.05
# Quiet: the other threads used less than QUIET_SHARE of a core over a window of
# QUIET_WINDOW_S (long enough for CPU time counted in scheduler ticks of 4 ms); the
# wait gives up after QUIET_MAX_S.
QUIET_WINDOW_S = 0.01
QUIET_SHARE = 0.3
QUIET_MAX_S = 0.5
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


def _other_threads_cpu_s():
    """CPU seconds used so far by this process's threads other than the calling one, or
    None where /proc does not give them (per-thread schedstat: Linux)."""
    me = threading.get_native_id()
    total = 0
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return None
    for tid in tids:
        if tid == str(me):
            continue
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as handle:
                total += int(handle.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # the thread ended, or no schedstat
    return total / 1e9


def wait_for_quiet_threads(max_s=None, window_s=None, share=None):
    """Wait until the process's other threads (a previous engine's workers spinning after
    its calls) use less than ``share`` of a core over a window of ``window_s``, for at
    most ``max_s`` (defaults: QUIET_SHARE, QUIET_WINDOW_S, QUIET_MAX_S).  Returns
    (seconds waited, whether they went quiet); (0, True) at once where /proc gives no
    per-thread CPU time."""
    max_s = QUIET_MAX_S if max_s is None else max_s
    window_s = QUIET_WINDOW_S if window_s is None else window_s
    share = QUIET_SHARE if share is None else share
    start = time.perf_counter()
    used = _other_threads_cpu_s()
    if used is None:
        return 0.0, True
    while time.perf_counter() - start < max_s:
        time.sleep(window_s)
        now = _other_threads_cpu_s()
        if now - used < share * window_s:
            return time.perf_counter() - start, True
        used = now
    return time.perf_counter() - start, False


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
                    wait_for_quiet_threads()
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
