"""PyTorch eager, float32, under ``torch.inference_mode()``; also the reference output."""

NAME = "torch"
BASE = "torch"
PRECISION = "fp32"


def version():
    import torch
    return torch.__version__


def build_module(case):
    """``torch.nn.<mode>`` with the case's seeded weights, in eval mode; PeerUnavailable
    for a cell variant torch has no module for."""
    import torch

    from . import PeerUnavailable
    config = case.config
    if not config.torch_expressible:
        raise PeerUnavailable(f"torch.nn.{config.mode} has no {config.variant_description()}")
    module = getattr(torch.nn, config.mode)(**config.hyperparameters()).eval()
    module.load_state_dict({key: torch.from_numpy(value) for key, value in case.state_dict.items()})
    return module


def reference_output(case):
    """PyTorch fp32 output for the case's input: the yardstick every engine is checked against."""
    import torch
    with torch.inference_mode():
        return case.torch_module()(torch.from_numpy(case.x))[0].numpy().copy()


def runner(module, x, threads, to_numpy=lambda out: out.numpy()):
    """A Runner calling ``module(x)[0]`` under inference_mode on ``threads`` torch threads."""
    import torch

    from . import Runner

    def run():
        with torch.inference_mode():
            return to_numpy(module(x)[0])

    def activate():
        torch.set_num_threads(threads)

    activate()
    return Runner(run, activate)


def build(case, threads):
    import torch
    return runner(case.torch_module(), torch.from_numpy(case.x), threads)
