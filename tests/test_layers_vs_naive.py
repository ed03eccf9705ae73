"""LSTM / GRU / RNN against the float64 reference in ``naive.py`` on every registry case.

No torch here: weights are drawn with numpy (wider than PyTorch's init range, so
the gates leave their linear region) and loaded as numpy arrays.
"""

import pytest

import helpers
from cases import LAYER_CASES


@pytest.mark.parametrize("case", LAYER_CASES, ids=lambda case: case.id)
def test_layer_matches_naive(case, backend, rng):
    state_dict = helpers.random_state_dict(helpers.expected_shapes(case), case.hidden_size, rng,
                                           scale=2.0)
    layer = helpers.fastlstm_layer(case, backend)
    layer.load_state_dict(state_dict)
    x, h0, c0 = (helpers.given(value, case.dtype) for value in helpers.layer_inputs(case, rng)[:3])
    lengths = helpers.given_lengths(case.lengths, case.dtype)

    got = helpers.call_layer(layer, case.mode, x, h0, c0, lengths)
    ref = helpers.naive_layer(case, state_dict, helpers.seen(x), helpers.seen(h0),
                              helpers.seen(c0), case.lengths)
    helpers.assert_matches(got, ref, "naive", ("out", "h_n", "c_n"))
