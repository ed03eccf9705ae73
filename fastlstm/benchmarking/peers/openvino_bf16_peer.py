"""OpenVINO with its CPU default on this CPU, bf16 inference: NOT float32.

Reported in its own, labelled column for information; never the "fastest fp32
peer", and checked against a bf16-sized tolerance.
"""

from . import openvino_peer

NAME = "openvino-bf16"
FP32 = False
TOLERANCE = 5e-2
version = openvino_peer.version


def build(case, threads):
    return openvino_peer.build(case, threads, precision="bf16")
