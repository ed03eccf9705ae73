"""OpenVINO CPU plugin on the case's ONNX model, forced to float32.

The CPU plugin runs in bf16 by default on CPUs with AMX/AVX512-BF16 (this one):
``INFERENCE_PRECISION_HINT=f32`` compares like with like.  The bf16 variant is a
separate peer (``openvino-bf16``), never counted as an fp32 peer.

Peephole LSTMs are declined: OpenVINO 2026.4's ONNX front end drops the LSTM's ``P``
input without a word (its output equals the same LSTM without peepholes to 2e-7,
measured on peephole_med; ``tests/test_bench_harness.py`` re-checks it whenever
OpenVINO is installed), so a time for it would be a time for another computation.
"""

NAME = "openvino"
BASE = "openvino"
PRECISION = "fp32"
INFERENCE_PRECISION = "f32"
PEEPHOLE_NOTE = ("OpenVINO drops the ONNX LSTM peephole input P (its output is the "
                 "no-peephole LSTM's), so it does not compute this case")


def version():
    import openvino
    return openvino.__version__


def compile_model(case, threads, precision):
    import openvino
    config = {
        "INFERENCE_PRECISION_HINT": precision,
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
    }
    return openvino.Core().compile_model(case.onnx_path(), "CPU", config)


def build(case, threads, precision=INFERENCE_PRECISION):
    from . import PeerUnavailable, Runner
    if case.config.peephole:
        raise PeerUnavailable(PEEPHOLE_NOTE)
    compiled = compile_model(case, threads, precision)
    request = compiled.create_infer_request()
    x = case.x
    output = compiled.outputs[0]

    def run():
        return request.infer({0: x})[output]

    return Runner(run)
