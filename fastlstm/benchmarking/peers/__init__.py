"""Peer engines, one module each, all optional.

Each peer module exposes
    NAME       column label
    FP32       True when it computes in float32 (only those count as "fastest fp32 peer")
    TOLERANCE  max abs difference from PyTorch fp32 above which its result is flagged
    version()  imports its library (ImportError when missing) and returns its version
    build(case, threads) -> Runner   a callable ``runner() -> out (T, B, D*H)`` bound to the
               case's input, with ``activate()`` (apply the thread count just before timing)
               and ``threads_applied`` (False when the engine could not be told)

``load(name)`` returns the module or raises ``PeerUnavailable`` with the reason,
so a missing library is reported as skipped, never a crash.
"""

import importlib

PEERS = {
    "torch": "fastlstm.benchmarking.peers.torch_peer",
    "onnxruntime": "fastlstm.benchmarking.peers.onnxruntime_peer",
    "openvino": "fastlstm.benchmarking.peers.openvino_peer",
    "openvino-bf16": "fastlstm.benchmarking.peers.openvino_bf16_peer",
}
FP32_TOLERANCE = 1e-4


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
