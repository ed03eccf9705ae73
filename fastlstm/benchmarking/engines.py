"""Building, checking and timing every engine on one case.

A ``Case`` holds what all engines share for one config: the seeded weights, the
input, and (lazily) the torch module, the ONNX export and PyTorch's fp32
output.  ``bench_cell`` runs one engine on one case at one thread count: build,
apply threads, check the output against PyTorch fp32, and only then time.
"""

import shutil
import tempfile

import numpy as np

import fastlstm

from . import peers as peer_registry
from . import roof as roof_module
from . import timing

FASTLSTM_PREFIX = "fastlstm"


def fastlstm_engine_name(backend):
    return f"{FASTLSTM_PREFIX}[{backend}]"


def parse_backends(spec):
    """Backend names from ``"a,b"`` (None -> every available backend); unavailable
    ones are reported as skipped later, not rejected here."""
    if spec is None:
        return list(fastlstm.available_backends())
    return list(dict.fromkeys(name.strip() for name in spec.split(",") if name.strip()))


class Case:
    """Everything engines share for one config: weights, input, reference, ONNX file."""

    def __init__(self, config, seed=0, workdir=None):
        self.config = config
        self.seed = seed
        self.state_dict = config.make_state_dict(seed)
        self.x = config.make_input(seed)
        self._workdir = workdir
        self._own_workdir = None
        self._torch_module = None
        self._onnx_path = None
        self._onnx_error = None
        self._reference = None
        self._reference_done = False

    def torch_module(self):
        if self._torch_module is None:
            from .peers import torch_peer
            self._torch_module = torch_peer.build_module(self)
        return self._torch_module

    def reference(self):
        """PyTorch fp32 output, or None when torch is not installed."""
        if not self._reference_done:
            self._reference_done = True
            try:
                from .peers import torch_peer
                torch_peer.version()
            except ImportError:
                return None
            self._reference = torch_peer.reference_output(self)
        return self._reference

    def onnx_path(self):
        """The case exported to ONNX (once); raises PeerUnavailable without torch/onnx."""
        if self._onnx_error is not None:
            raise self._onnx_error
        if self._onnx_path is None:
            from .peers import onnx_export
            try:
                self._onnx_path = onnx_export.export(self, self.workdir())
            except ImportError as error:
                self._onnx_error = peer_registry.PeerUnavailable(
                    f"exporting to ONNX needs torch and onnx ({error.name or error} not installed)")
                raise self._onnx_error from error
        return self._onnx_path

    def workdir(self):
        if self._workdir is None:
            self._own_workdir = self._workdir = tempfile.mkdtemp(prefix="fastlstm-bench-")
        return self._workdir

    def close(self):
        if self._own_workdir is not None:
            shutil.rmtree(self._own_workdir, ignore_errors=True)
            self._own_workdir = self._workdir = None
            self._onnx_path = None


def build_fastlstm(case, backend, threads):
    """A runner for fastlstm on ``backend``; threads through ``fastlstm.set_num_threads``
    when this installation has it (otherwise ``threads_applied`` is False)."""
    layer_class = case.config.fastlstm_class()
    layer = layer_class(**case.config.hyperparameters(), backend=backend)
    layer.load_state_dict(case.state_dict)
    set_threads = getattr(fastlstm, "set_num_threads", None)
    x = case.x

    def run():
        return layer(x)[0]

    def activate():
        if set_threads is not None:
            set_threads(threads)

    activate()
    return peer_registry.Runner(run, activate, threads_applied=set_threads is not None)


class Engine:
    """One column of the table: a fastlstm backend or a peer."""

    def __init__(self, name, kind, fp32, tolerance, build):
        self.name = name
        self.kind = kind          # "fastlstm" or "peer"
        self.fp32 = fp32
        self.tolerance = tolerance
        self._build = build       # (case, threads) -> Runner

    def build(self, case, threads):
        return self._build(case, threads)


def fastlstm_engines(backends):
    """Engines for the requested backends; unavailable ones go to ``skipped``."""
    engines, skipped = [], {}
    available = fastlstm.available_backends()
    for backend in backends:
        name = fastlstm_engine_name(backend)
        if backend not in available:
            skipped[name] = f"backend {backend!r} not available (available: {available})"
            continue
        engines.append(Engine(name, "fastlstm", True, peer_registry.FP32_TOLERANCE,
                              lambda case, threads, backend=backend:
                              build_fastlstm(case, backend, threads)))
    return engines, skipped


def peer_engines(names):
    """Engines for the requested peers; missing libraries go to ``skipped`` with the reason."""
    engines, skipped = [], {}
    for name in names:
        try:
            module = peer_registry.load(name)
        except peer_registry.PeerUnavailable as error:
            skipped[name] = str(error)
            continue
        engines.append(Engine(module.NAME, "peer", module.FP32, module.TOLERANCE, module.build))
    return engines, skipped


def max_abs_diff(out, reference):
    if reference is None:
        return None
    out = np.asarray(out)
    if out.shape != reference.shape:
        return float("inf")
    return float(np.max(np.abs(out.astype(np.float64) - reference)))


def bench_cell(engine, case, threads, *, quick=False, repeat=None):
    """Build, check against PyTorch fp32, then time ``engine`` on ``case``; returns a record.

    A failure to build or run (an engine that cannot handle the case) is recorded
    in ``error`` instead of raising, so one peer never stops the run.
    """
    config = case.config
    record = {"config": config.name, "threads": threads, "engine": engine.name,
              "kind": engine.kind, "fp32": engine.fp32, "tolerance": engine.tolerance}
    try:
        runner = engine.build(case, threads)
        runner.activate()
        out = np.array(runner(), copy=True)   # first call: compile / warm, and the check
        diff = max_abs_diff(out, case.reference())
        measured = timing.measure(runner, quick=quick, repeat=repeat)
    except peer_registry.PeerUnavailable as error:
        record.update(skipped=str(error))
        return record
    except Exception as error:  # noqa: BLE001 - any engine failure is reported, not raised
        record.update(error=f"{type(error).__name__}: {error}")
        return record
    record.update(measured.as_dict())
    record.update(
        ms_per_step=measured.median_ms / config.steps,
        gflops=roof_module.gflops(config, measured.median_ms),
        max_abs_diff=diff,
        flagged=diff is not None and not diff <= engine.tolerance,
        threads_applied=runner.threads_applied,
    )
    return record


def add_roofs(records, roofs):
    """Give each timed record ``roof_ms`` and ``x_roof`` (its median as a multiple of the
    roof) from ``roofs`` {(config, threads): Roof}."""
    for record in records:
        roof = roofs.get((record["config"], record["threads"]))
        if roof is not None and "median_ms" in record:
            record.update(roof_ms=roof.roof_ms, x_roof=record["median_ms"] / roof.roof_ms)
    return records


def add_speedups(records):
    """Give each fastlstm record ``speedup_vs_best_fp32_peer`` (= best peer ms / its ms)
    and ``best_fp32_peer``, per (config, threads)."""
    best = {}
    for record in records:
        if record["kind"] == "peer" and record["fp32"] and "median_ms" in record \
                and not record.get("flagged"):
            key = (record["config"], record["threads"])
            if key not in best or record["median_ms"] < best[key]["median_ms"]:
                best[key] = record
    for record in records:
        key = (record["config"], record["threads"])
        if record["kind"] == "fastlstm" and "median_ms" in record and key in best:
            record["best_fp32_peer"] = best[key]["engine"]
            record["speedup_vs_best_fp32_peer"] = best[key]["median_ms"] / record["median_ms"]
    return records
