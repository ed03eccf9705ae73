"""LSTMCell / GRUCell / RNNCell (tanh, relu) against PyTorch fp32 and the float64 reference."""

import pytest

import helpers
import naive
from cases import CELL_CASES

_NAMES = ("h1", "c1")


@pytest.mark.parametrize("case", CELL_CASES, ids=lambda case: case.id)
def test_cell_matches_torch(case, backend, rng):
    module = helpers.torch_module(case, rng)
    cell = helpers.load_from_torch(case, module, backend)
    assert cell.backend_name == backend
    x, h0, c0 = (helpers.given(value, case.dtype) for value in helpers.cell_inputs(case, rng))

    got = helpers.call_cell(cell, case.mode, x, h0, c0)
    ref = helpers.torch_cell(module, case, helpers.seen(x), helpers.seen(h0), helpers.seen(c0))
    helpers.assert_matches(got, ref, "torch", _NAMES)


@pytest.mark.parametrize("case", CELL_CASES, ids=lambda case: case.id)
def test_cell_matches_naive(case, backend, rng):
    state_dict = helpers.random_state_dict(helpers.expected_shapes(case), case.hidden_size, rng,
                                           scale=2.0)
    cell = helpers.fastlstm_cell(case, backend)
    cell.load_state_dict(state_dict)
    x, h0, c0 = (helpers.given(value, case.dtype) for value in helpers.cell_inputs(case, rng))

    got = helpers.call_cell(cell, case.mode, x, h0, c0)
    ref = helpers.naive_cell(case, state_dict, helpers.seen(x), helpers.seen(h0), helpers.seen(c0))
    helpers.assert_matches(got, ref, "naive", _NAMES)


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"])
def test_cell_equals_one_step_layer(mode, backend, rng):
    """A cell with a layer's weights is that layer run for one step."""
    case = [c for c in CELL_CASES if c.mode == mode][0]
    layer_state = helpers.random_state_dict(
        naive.param_shapes(mode, case.input_size, case.hidden_size), case.hidden_size, rng)
    cell = helpers.fastlstm_cell(case, backend)
    cell.load_state_dict({key[:-3]: value for key, value in layer_state.items()})  # drop "_l0"
    x, h0, c0 = helpers.cell_inputs(case, rng)

    h1, c1 = helpers.call_cell(cell, mode, x, h0, c0)
    ref_out, ref_h, ref_c = naive.sequence(mode, layer_state, x[None], h0[None],
                                                   None if c0 is None else c0[None])
    helpers.assert_matches((h1, c1), (ref_h[0], None if ref_c is None else ref_c[0]), "naive",
                           _NAMES)
