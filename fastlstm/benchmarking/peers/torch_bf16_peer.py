"""PyTorch eager in bfloat16: the fp32 module converted with ``.to(torch.bfloat16)``, the
input in bfloat16, under ``torch.inference_mode()``.  Weights, activations and state are
all bf16 here (fastlstm's bf16 keeps everything but the stored weights in fp32)."""

from . import torch_peer

NAME = "torch-bf16"
BASE = "torch"
PRECISION = "bf16"
version = torch_peer.version


def build(case, threads):
    import torch
    module = torch_peer.build_module(case).to(torch.bfloat16)
    x = torch.from_numpy(case.x).to(torch.bfloat16)
    return torch_peer.runner(module, x, threads, to_numpy=lambda out: out.float().numpy())
