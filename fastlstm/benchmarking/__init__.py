"""Benchmarking fastlstm against PyTorch, ONNX Runtime and OpenVINO.

configs   the one registry of cases (shapes, seeded weights, flop/byte counts)
timing    warm-up then adaptive timed repeats (median, min)
roof      the machine's read bandwidth and GEMM ceiling, and each case's roof
peers     one module per peer engine; a missing one is skipped, never a crash
engines   building and checking every engine (fastlstm backends and peers) for a case
report    markdown table, JSON, plot
command   ``fastlstm bench``
"""
