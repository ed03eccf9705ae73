"""ONNX Runtime (CPU execution provider) on the case's single-node ONNX model; also the
reference output of the cell variants torch has no module for."""

NAME = "onnxruntime"
BASE = "onnxruntime"
PRECISION = "fp32"


def version():
    import onnxruntime
    return onnxruntime.__version__


def _session(case, threads):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(case.onnx_path(), options, providers=["CPUExecutionProvider"])


def build(case, threads):
    from . import Runner
    from .onnx_export import INPUT_NAME, OUTPUT_NAME
    session = _session(case, threads)
    feeds = {INPUT_NAME: case.x}
    outputs = [OUTPUT_NAME]

    def run():
        return session.run(outputs, feeds)[0]

    return Runner(run)


def reference_output(case):
    """ONNX Runtime's fp32 output on one thread (ImportError or PeerUnavailable if it cannot)."""
    version()
    return build(case, 1)().copy()
