"""OpenVINO CPU plugin on the exported ONNX model, forced to float32.

The CPU plugin runs in bf16 by default on CPUs with AMX/AVX512-BF16 (this one):
``INFERENCE_PRECISION_HINT=f32`` compares like with like.  The bf16 variant is a
separate peer (``openvino-bf16``), never counted as an fp32 peer.
"""

NAME = "openvino"
FP32 = True
TOLERANCE = 1e-4
PRECISION = "f32"


def version():
    import openvino
    return openvino.__version__


def build(case, threads, precision=PRECISION):
    import openvino

    from . import Runner
    config = {
        "INFERENCE_PRECISION_HINT": precision,
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
    }
    compiled = openvino.Core().compile_model(case.onnx_path(), "CPU", config)
    request = compiled.create_infer_request()
    x = case.x
    output = compiled.outputs[0]

    def run():
        return request.infer({0: x})[output]

    return Runner(run)
