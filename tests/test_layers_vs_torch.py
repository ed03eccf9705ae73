"""LSTM / GRU / RNN against PyTorch fp32 on every registry case.

Weights reach fastlstm through the case's loading path (``from_torch``, or
``load_state_dict`` with numpy arrays or torch tensors); inputs are given in the
case's dtype and layout; torch computes on the same float32-rounded values.
"""

import pytest

import helpers
from cases import LAYER_CASES


@pytest.mark.parametrize("case", LAYER_CASES, ids=lambda case: case.id)
def test_layer_matches_torch(case, backend, rng):
    module = helpers.torch_module(case, rng)
    layer = helpers.load_from_torch(case, module, backend)
    assert layer.backend_name == backend
    x, h0, c0 = (helpers.given(value, case.dtype) for value in helpers.layer_inputs(case, rng)[:3])
    lengths = helpers.given_lengths(case.lengths, case.dtype)

    got = helpers.call_layer(layer, case.mode, x, h0, c0, lengths)
    ref = helpers.torch_layer(module, case, helpers.seen(x), helpers.seen(h0), helpers.seen(c0),
                              case.lengths)
    helpers.assert_matches(got, ref, "torch", ("out", "h_n", "c_n"))
