"""OpenVINO with its CPU default on this CPU, bf16 inference: NOT float32.

Its own column in the bf16 table, next to fastlstm's bf16; never the "fastest fp32 peer".
"""

from . import openvino_peer

NAME = "openvino-bf16"
BASE = "openvino"
PRECISION = "bf16"
version = openvino_peer.version


def build(case, threads):
    return openvino_peer.build(case, threads, precision="bf16")
