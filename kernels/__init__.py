"""Compiled kernels of fastlstm (installed as ``fastlstm.kernels``).

Kernels are the bottom layer: they take caller-owned, already validated
float32 C-contiguous arrays, never allocate per step, never validate and never
touch Python objects.  The layers in ``fastlstm`` validate, allocate and
dispatch.  Each backend module offers the same three sequence kernels
(``lstm_sequence``, ``gru_sequence``, ``rnn_sequence``) and one packing
function, so the layers are backend-agnostic.
"""
