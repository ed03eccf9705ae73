"""ONNX Runtime (CPU execution provider) on the exported single-node model."""

NAME = "onnxruntime"
FP32 = True
TOLERANCE = 1e-4


def version():
    import onnxruntime
    return onnxruntime.__version__


def build(case, threads):
    import onnxruntime as ort

    from . import Runner
    from .onnx_export import INPUT_NAME, OUTPUT_NAME
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(case.onnx_path(), options, providers=["CPUExecutionProvider"])
    feeds = {INPUT_NAME: case.x}
    outputs = [OUTPUT_NAME]

    def run():
        return session.run(outputs, feeds)[0]

    return Runner(run)
