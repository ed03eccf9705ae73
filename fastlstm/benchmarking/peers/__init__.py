"""Peer engines, one module each, all optional.

Each peer module exposes
    NAME       column label
    BASE       the library peer it is a form of ("torch", "onnxruntime", "openvino")
    PRECISION  "fp32", "bf16" or "int8": what its weights are stored in (only fp32 peers count
               as "fastest fp32 peer"; the others are compared with fastlstm in that precision)
    version()  imports its library (ImportError when missing) and returns its version
    build(case, threads) -> Runner   a callable ``runner() -> out (T, B, D*H)`` bound to the
               case's input, with ``activate()`` (apply the thread count just before timing)
               and ``threads_applied`` (False when the engine could not be told); raises
               ``PeerUnavailable`` for a case it cannot compute (e.g. torch on a peephole LSTM)

``load(name)`` returns the module or raises ``PeerUnavailable`` with the reason,
so a missing library is reported as skipped, never a crash.  ``with_precisions``
adds the reduced-precision forms of the requested peers.
"""

import importlib

PEERS = {
    "torch": "fastlstm.benchmarking.peers.torch_peer",
    "onnxruntime": "fastlstm.benchmarking.peers.onnxruntime_peer",
    "openvino": "fastlstm.benchmarking.peers.openvino_peer",
    "openvino-bf16": "fastlstm.benchmarking.peers.openvino_bf16_peer",
    "torch-bf16": "fastlstm.benchmarking.peers.torch_bf16_peer",
    "torch-int8": "fastlstm.benchmarking.peers.torch_int8_peer",
}
PRECISIONS = ("fp32", "bf16", "int8")
# Max abs difference from the fp32 reference above which a result is flagged.  fp32: the
# accuracy check proper.  bf16/int8: a sanity bound against a broken engine, not an
# accuracy target (the accuracy table reports their real errors).  Worst seen in a full
# ``--configs all --threads 1,2`` run: bf16 0.011 (torch-bf16 on gru_thr, all in bf16),
# int8 0.042 (torch-int8 on gru_thr, activations quantized too); fastlstm's own 0.0029
# (bf16) and 0.0086 (int8).
TOLERANCES = {"fp32": 1e-4, "bf16": 0.25, "int8": 0.25}
FP32_TOLERANCE = TOLERANCES["fp32"]


class PeerUnavailable(Exception):
    """A peer that cannot run here (library missing or unusable); the message says why."""


def parse(spec):
    """Peer names from ``"a,b"`` (``"none"`` or empty -> [])."""
    names = [name.strip() for name in (spec or "").split(",") if name.strip()]
    if names == ["none"]:
        return []
    unknown = [name for name in names if name not in PEERS]
    if unknown:
        raise ValueError(f"--peers: unknown peer(s) {unknown}; expected a comma list of "
                         f"{list(PEERS)} or 'none'")
    return list(dict.fromkeys(names))


def parse_precisions(spec):
    """Precisions from ``"fp32,bf16"`` (None -> fp32 only)."""
    if spec is None:
        return ["fp32"]
    names = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = [name for name in names if name not in PRECISIONS]
    if unknown or not names:
        raise ValueError(f"--precision: expected a comma list of {list(PRECISIONS)}, got {spec!r}")
    return list(dict.fromkeys(names))


def with_precisions(names, precisions):
    """``names`` and, after them, every reduced-precision peer in ``precisions`` whose BASE
    library is among ``names`` (torch -> torch-bf16, torch-int8; openvino -> openvino-bf16)."""
    chosen = list(names)
    for name, module_name in PEERS.items():
        module = importlib.import_module(module_name)
        if (name not in chosen and module.PRECISION != "fp32" and module.PRECISION in precisions
                and module.BASE in names):
            chosen.append(name)
    return chosen


def load(name):
    """The peer module ``name`` after checking its libraries import; else PeerUnavailable."""
    module = importlib.import_module(PEERS[name])
    try:
        module.version()
    except ImportError as error:
        raise PeerUnavailable(f"{error.name or error} not installed") from error
    return module


class Runner:
    """``runner() -> out``; ``activate()`` applies thread settings that are process-global."""

    threads_applied = True

    def __init__(self, run, activate=None, threads_applied=True):
        self._run = run
        self._activate = activate
        self.threads_applied = threads_applied

    def __call__(self):
        return self._run()

    def activate(self):
        if self._activate is not None:
            self._activate()
