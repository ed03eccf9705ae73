"""OpenVINO with its CPU default on this CPU, bf16 inference: NOT float32.

Its own column in the bf16 table, next to fastlstm's bf16; never the "fastest fp32 peer".
On a CPU without bf16 instructions (no AVX512-BF16 or AMX: the plugin's
``OPTIMIZATION_CAPABILITIES`` lacks ``BF16``) OpenVINO ignores the bf16 hint and runs
float32, so there is no OpenVINO bf16 to compare with and the peer declines.
"""

import functools

from . import openvino_peer

NAME = "openvino-bf16"
BASE = "openvino"
PRECISION = "bf16"
version = openvino_peer.version
NO_BF16_NOTE = ("OpenVINO runs float32 on this CPU (its CPU plugin lists no BF16 "
                "capability: no AVX512-BF16 or AMX), so it has no bf16 form here")


@functools.lru_cache(maxsize=None)
def cpu_has_bf16():
    """Whether OpenVINO's CPU plugin can infer in bf16 on this machine."""
    import openvino
    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def build(case, threads):
    from . import PeerUnavailable
    if not cpu_has_bf16():
        raise PeerUnavailable(NO_BF16_NOTE)
    return openvino_peer.build(case, threads, precision="bf16")
