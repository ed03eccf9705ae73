"""The reference itself: naive.py against PyTorch on every registry case (no fastlstm).

If these fail, the float64 reference is wrong, not the engine.
"""

import numpy as np
import pytest

import helpers
import naive
from cases import CELL_CASES, LAYER_CASES


@pytest.mark.parametrize("case", LAYER_CASES, ids=lambda case: case.id)
def test_naive_layer_matches_torch(case, rng):
    module = helpers.torch_module(case, rng)
    state_dict = {key: value.numpy() for key, value in module.state_dict().items()}
    x, h0, c0 = (helpers.seen(value) for value in helpers.layer_inputs(case, rng)[:3])

    ref = helpers.naive_layer(case, state_dict, x, h0, c0, case.lengths)
    got = helpers.torch_layer(module, case, x, h0, c0, case.lengths)
    for name, naive_value, torch_value in zip(("out", "h_n", "c_n"), ref, got):
        if torch_value is None:
            assert naive_value is None
        else:
            np.testing.assert_allclose(naive_value, torch_value, err_msg=name,
                                       **helpers.TOLERANCE["torch"])


@pytest.mark.parametrize("case", CELL_CASES, ids=lambda case: case.id)
def test_naive_cell_matches_torch(case, rng):
    module = helpers.torch_module(case, rng)
    state_dict = {key: value.numpy() for key, value in module.state_dict().items()}
    x, h0, c0 = (helpers.seen(value) for value in helpers.cell_inputs(case, rng))

    ref = helpers.naive_cell(case, state_dict, x, h0, c0)
    got = helpers.torch_cell(module, case, x, h0, c0)
    for name, naive_value, torch_value in zip(("h1", "c1"), ref, got):
        if torch_value is None:
            assert naive_value is None
        else:
            np.testing.assert_allclose(naive_value, torch_value, err_msg=name,
                                       **helpers.TOLERANCE["torch"])


@pytest.mark.parametrize("case", [c for c in LAYER_CASES if c.steps > 1][:8] + CELL_CASES[:4],
                         ids=lambda case: case.id)
def test_naive_param_shapes_match_torch(case):
    module = helpers.torch_module(case, np.random.default_rng(0))
    torch_shapes = {key: tuple(value.shape) for key, value in module.state_dict().items()}
    assert list(torch_shapes.items()) == list(helpers.expected_shapes(case).items())


def test_naive_lengths_reverse_starts_at_last_valid_step():
    """Hand-checkable: a 1-unit RNN with identity-like weights sums its inputs, so the
    reverse direction's output at step t is the sum of x[t:length]."""
    state_dict = {"weight_ih_l0": np.ones((1, 1)), "weight_hh_l0": np.ones((1, 1)),
                  "weight_ih_l0_reverse": np.ones((1, 1)),
                  "weight_hh_l0_reverse": np.ones((1, 1))}
    x = np.array([1.0, 2.0, 4.0, 8.0]).reshape(4, 1, 1) * np.array([1.0, 0.1]).reshape(1, 2, 1)
    out, h_n, _ = naive.sequence("RNN_RELU", state_dict, x, lengths=[4, 2])
    np.testing.assert_allclose(out[:, 0, 0], [1, 3, 7, 15])
    np.testing.assert_allclose(out[:, 0, 1], [15, 14, 12, 8])
    np.testing.assert_allclose(out[:, 1, 0], [0.1, 0.3, 0, 0])
    np.testing.assert_allclose(out[:, 1, 1], [0.3, 0.2, 0, 0])
    np.testing.assert_allclose(h_n[:, :, 0], [[15, 0.3], [15, 0.3]])
