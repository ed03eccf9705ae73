"""Building, checking and timing every engine on one case.

A ``Case`` holds what all engines share for one config: the seeded weights, the
input, and (lazily) the torch module, the ONNX model and the fp32 reference
output (PyTorch's, or ONNX Runtime's for the cell variants torch has no module
for).  ``bench_cell`` runs one engine on one case at one thread count: build,
apply threads, check the output against the reference, and only then time;
``bench_cells`` does so for all engines of a table row group, timing them in
interleaved rounds.

Engines have a weight precision.  An fp32 engine is flagged beyond 1e-4 of the
reference; a bf16/int8 engine only beyond a sanity bound (``peers.TOLERANCES``),
its real error going to the accuracy table (``accuracy``).
"""

import importlib
import shutil
import tempfile

import numpy as np

import fastlstm
from fastlstm.backends import REDUCED_PRECISION

from . import peers as peer_registry
from . import roof as roof_module
from . import timing

FASTLSTM_PREFIX = "fastlstm"
ONNXRUNTIME = "onnxruntime"


def fastlstm_engine_name(backend, precision="fp32"):
    """``fastlstm[cython]`` for fp32, ``fastlstm[cython,bf16]`` for a reduced precision."""
    return f"{FASTLSTM_PREFIX}[{backend}]" if precision == "fp32" else \
        f"{FASTLSTM_PREFIX}[{backend},{precision}]"


def parse_engine_name(name):
    """``fastlstm[cython,bf16]`` -> ("cython", "bf16"); ``fastlstm[numba]`` -> ("numba", "fp32")."""
    inside = name[len(FASTLSTM_PREFIX) + 1:-1]
    backend, _, precision = inside.partition(",")
    return backend, precision or "fp32"


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
        self.reference_name = config.reference_engine
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
        """The fp32 reference output (``reference_name``: PyTorch, or ONNX Runtime for a
        cell variant), or None when that library is not installed."""
        if not self._reference_done:
            self._reference_done = True
            module = importlib.import_module(peer_registry.PEERS[self.reference_name])
            try:
                module.version()
                self._reference = module.reference_output(self)
            except (ImportError, peer_registry.PeerUnavailable):
                return None
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
                needs = "torch and onnx" if self.config.torch_expressible else "onnx"
                self._onnx_error = peer_registry.PeerUnavailable(
                    f"exporting to ONNX needs {needs} ({error.name or error} not installed)")
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


def build_fastlstm(case, backend, threads, precision="fp32"):
    """A runner for fastlstm on ``backend`` with ``precision`` weights; threads through
    ``fastlstm.set_num_threads`` when this installation has it (otherwise
    ``threads_applied`` is False)."""
    layer_class = case.config.fastlstm_class()
    layer = layer_class(**case.config.layer_kwargs(), backend=backend, precision=precision)
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


def fastlstm_fp32_arithmetic(precision):
    """Whether fastlstm in ``precision`` multiplies in fp32, so that the roof's compute
    half (the fp32 GEMM ceiling) binds it.  bf16 widens its weights to fp32, except on
    CPUs with AMX, where its products run on bf16 tiles; int8 multiplies the recurrent product in int8 (vpdpbusd, AMX), so only
    the memory half binds it."""
    if precision == "bf16":
        from .. import cython_glue
        return not cython_glue._AMX_CPU
    return precision == "fp32"


class Engine:
    """One column of the table: a fastlstm backend in one precision, or a peer."""

    def __init__(self, name, kind, precision, build, fp32_arithmetic=None):
        self.name = name
        self.kind = kind              # "fastlstm" or "peer"
        self.precision = precision    # "fp32", "bf16" or "int8" weights
        self.tolerance = peer_registry.TOLERANCES[precision]
        self._build = build           # (case, threads) -> Runner
        # multiplies in fp32 (bound by the whole roof, not only its memory half)
        self.fp32_arithmetic = precision == "fp32" if fp32_arithmetic is None else fp32_arithmetic

    @property
    def fp32(self):
        return self.precision == "fp32"

    def build(self, case, threads):
        return self._build(case, threads)


def fastlstm_engines(backends, precisions=("fp32",)):
    """Engines for the requested backends in each requested precision (bf16/int8 only on the
    backends that run them); unavailable ones go to ``skipped`` with the reason."""
    engines, skipped = [], {}
    available = fastlstm.available_backends()
    for precision in precisions:
        for backend in backends:
            name = fastlstm_engine_name(backend, precision)
            if backend not in available:
                skipped[name] = f"backend {backend!r} not available (available: {available})"
            elif precision != "fp32" and backend not in REDUCED_PRECISION:
                skipped[name] = (f"backend {backend!r} runs fp32 weights only "
                                 f"({precision} runs on {list(REDUCED_PRECISION)})")
            else:
                engines.append(Engine(name, "fastlstm", precision,
                                      lambda case, threads, backend=backend, precision=precision:
                                      build_fastlstm(case, backend, threads, precision),
                                      fp32_arithmetic=fastlstm_fp32_arithmetic(precision)))
    return engines, skipped


def requested_engines(backends, peers, precisions):
    """fastlstm's engines (``fastlstm_engines``) then the peers' (``peer_engines``), and
    every one skipped, with the reason."""
    fast, skipped = fastlstm_engines(backends, precisions)
    others, skipped_peers = peer_engines(peers)
    skipped.update(skipped_peers)
    return fast + others, skipped


def peer_engines(names):
    """Engines for the requested peers; missing libraries go to ``skipped`` with the reason."""
    engines, skipped = [], {}
    for name in names:
        try:
            module = peer_registry.load(name)
        except peer_registry.PeerUnavailable as error:
            skipped[name] = str(error)
            continue
        engines.append(Engine(module.NAME, "peer", module.PRECISION, module.build))
    return engines, skipped


def max_abs_diff(out, reference):
    if reference is None:
        return None
    out = np.asarray(out)
    if out.shape != reference.shape:
        return float("inf")
    return float(np.max(np.abs(out.astype(np.float64) - reference)))


def bench_cell(engine, case, threads, *, quick=False, repeat=None):
    """Build, check against the fp32 reference, then time ``engine`` on ``case``; returns a record.

    A failure to build or run (an engine that cannot handle the case) is recorded
    in ``error`` instead of raising, so one peer never stops the run.
    """
    return bench_cells([engine], case, threads, quick=quick, repeat=repeat)[0]


def bench_cells(engines, case, threads, *, quick=False, repeat=None, on_engine=None):
    """``bench_cell`` for several engines on one case and thread count, their timed calls
    interleaved in rounds (``timing.measure_interleaved``), so that load from elsewhere
    on the machine falls on all of them alike.  Every engine is built and checked first;
    ``on_engine(engine)`` is called as each is.  Returns the records in ``engines``' order."""
    prepared = []
    for engine in engines:
        if on_engine is not None:
            on_engine(engine)
        prepared.append(prepare_engine(engine, case, threads))
    ready = [(record, runner) for record, runner in prepared if runner is not None]
    timings = timing.measure_interleaved([runner for _, runner in ready], quick=quick,
                                         repeat=repeat)
    config = case.config
    for (record, runner), measured in zip(ready, timings):
        diff = record.pop("max_abs_diff")
        if isinstance(measured, Exception):
            record.update(error=f"{type(measured).__name__}: {measured}")
            continue
        record.update(measured.as_dict())
        record.update(
            ms_per_step=measured.median_ms / config.steps,
            gflops=roof_module.gflops(config, measured.median_ms),
            max_abs_diff=diff,
            flagged=diff is not None and not diff <= record["tolerance"],
            threads_applied=runner.threads_applied,
        )
    return [record for record, _ in prepared]


def prepare_engine(engine, case, threads):
    """(record, runner): the engine built, its threads applied, its first output checked
    against the reference (the difference in ``max_abs_diff``); runner None when it was
    skipped or failed (the record says which)."""
    config = case.config
    record = {"config": config.name, "threads": threads, "engine": engine.name,
              "kind": engine.kind, "precision": engine.precision, "fp32": engine.fp32,
              "fp32_arithmetic": engine.fp32_arithmetic,
              "tolerance": engine.tolerance, "reference": case.reference_name}
    try:
        runner = engine.build(case, threads)
        runner.activate()
        out = np.array(runner(), copy=True)   # first call: compile / warm, and the check
        record["max_abs_diff"] = max_abs_diff(out, case.reference())
    except peer_registry.PeerUnavailable as error:
        record.update(skipped=str(error))
        return record, None
    except Exception as error:  # noqa: BLE001 - any engine failure is reported, not raised
        record.update(error=f"{type(error).__name__}: {error}")
        return record, None
    return record, runner


def add_roofs(records, roofs):
    """Give each timed record ``roof_ms`` and ``x_roof`` (its median as a multiple of the
    roof) from ``roofs`` {(config, threads, precision): Roof}: the roof for the weight
    bytes of the record's precision."""
    for record in records:
        roof = roofs.get((record["config"], record["threads"], record["precision"]))
        if roof is not None and "median_ms" in record:
            record.update(roof_ms=roof.roof_ms, roof_memory_ms=roof.memory_ms,
                          x_roof=record["median_ms"] / roof.roof_ms)
    return records


def _usable(record):
    return "median_ms" in record and not record.get("flagged")


def add_speedups(records):
    """Give each fastlstm record, per (config, threads), ``best_<precision>_peer`` and
    ``speedup_vs_best_<precision>_peer`` (= the fastest peer in the same precision's median
    / its median) and ``speedup_vs_onnxruntime_fp32``; flagged peers never count."""
    best, onnxruntime = {}, {}
    for record in records:
        if record["kind"] != "peer" or not _usable(record):
            continue
        key = (record["config"], record["threads"], record["precision"])
        if key not in best or record["median_ms"] < best[key]["median_ms"]:
            best[key] = record
        if record["engine"] == ONNXRUNTIME:
            onnxruntime[key[:2]] = record
    for record in records:
        if record["kind"] != "fastlstm" or "median_ms" not in record:
            continue
        precision = record["precision"]
        peer = best.get((record["config"], record["threads"], precision))
        if peer is not None:
            record[f"best_{precision}_peer"] = peer["engine"]
            record[f"speedup_vs_best_{precision}_peer"] = peer["median_ms"] / record["median_ms"]
        peer = onnxruntime.get((record["config"], record["threads"]))
        if peer is not None:
            record["speedup_vs_onnxruntime_fp32"] = peer["median_ms"] / record["median_ms"]
    return records


def accuracy(records):
    """{config: {"reference": engine, reduced-precision engine: max abs diff}}: each bf16/int8
    engine's worst difference from the fp32 reference over the thread counts run."""
    table = {}
    for record in records:
        if record["precision"] == "fp32" or record.get("max_abs_diff") is None:
            continue
        row = table.setdefault(record["config"], {"reference": record["reference"]})
        row[record["engine"]] = max(row.get(record["engine"], 0.0), record["max_abs_diff"])
    return table
