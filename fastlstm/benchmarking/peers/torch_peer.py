"""PyTorch eager, float32, under ``torch.inference_mode()``; also the reference output."""

NAME = "torch"
FP32 = True
TOLERANCE = 1e-4


def version():
    import torch
    return torch.__version__


def build_module(case):
    """``torch.nn.<mode>`` with the case's seeded weights, in eval mode."""
    import torch
    module = getattr(torch.nn, case.config.mode)(**case.config.hyperparameters()).eval()
    module.load_state_dict({key: torch.from_numpy(value) for key, value in case.state_dict.items()})
    return module


def reference_output(case):
    """PyTorch fp32 output for the case's input: the yardstick every engine is checked against."""
    import torch
    with torch.inference_mode():
        return case.torch_module()(torch.from_numpy(case.x))[0].numpy().copy()


def build(case, threads):
    import torch

    from . import Runner
    module = case.torch_module()
    x = torch.from_numpy(case.x)

    def run():
        with torch.inference_mode():
            return module(x)[0].numpy()

    def activate():
        torch.set_num_threads(threads)

    activate()
    return Runner(run, activate)
