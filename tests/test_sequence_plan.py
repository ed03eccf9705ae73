"""The Cython kernels' SequencePlan: one direction bound once to its buffers, with the
input projection run by the steps' own thread team.  Checked here: one-step calls
(each block projected just before its step, blocks backwards on alternate calls)
against PyTorch, results independent of the block order and of the thread split,
and every argument error of the plan raised before the kernel runs."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import fastlstm
from fastlstm import cython_glue
from helpers import TOLERANCE

pytestmark = pytest.mark.skipif("cython" not in fastlstm.available_backends(),
                                reason="the Cython backend is not built")


@pytest.fixture
def many_threads(monkeypatch, restore_threads):
    """Threads even for tiny steps, so each thread runs (and reverses) its own blocks."""
    monkeypatch.setattr(cython_glue, "_MIN_FLOPS_PER_THREAD_STEP", 1)
    fastlstm.set_num_threads(2)


def _torch_lstm(layer):
    module = torch.nn.LSTM(layer.input_size, layer.hidden_size, num_layers=layer.num_layers,
                           proj_size=layer.proj_size, bidirectional=layer.bidirectional)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    return module


def _assert_torch_results(layer, x, out, h_n, c_n):
    """out, h_n, c_n are what torch's LSTM with ``layer``'s weights gives for x."""
    with torch.no_grad():
        expected, (h, c) = _torch_lstm(layer)(torch.from_numpy(x))
    np.testing.assert_allclose(out, expected.numpy(), **TOLERANCE["torch"])
    np.testing.assert_allclose(h_n, h.numpy(), **TOLERANCE["torch"])
    np.testing.assert_allclose(c_n, c.numpy(), **TOLERANCE["torch"])


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("hidden, proj_size", [(1, 0), (3, 0), (17, 0), (37, 0), (129, 0), (129, 37)])
def test_one_step_calls_equal_torch_on_the_whole_sequence(hidden, proj_size, threads, rng,
                                                          monkeypatch, restore_threads):
    monkeypatch.setattr(cython_glue, "_MIN_FLOPS_PER_THREAD_STEP", 1)
    fastlstm.set_num_threads(threads)
    layer = fastlstm.LSTM(5, hidden, num_layers=2, proj_size=proj_size, backend="cython")
    x = rng.normal(size=(7, 3, 5)).astype(np.float32)
    hx = None
    steps = []
    for t in range(len(x)):  # 7 calls: both block orders, alternately
        y, hx = layer(x[t:t + 1], hx)
        steps.append(y)
    with torch.no_grad():
        expected, (h_n, c_n) = _torch_lstm(layer)(torch.from_numpy(x))
    np.testing.assert_allclose(np.concatenate(steps), expected.numpy(), **TOLERANCE["torch"])
    np.testing.assert_allclose(hx[0], h_n.numpy(), **TOLERANCE["torch"])
    np.testing.assert_allclose(hx[1], c_n.numpy(), **TOLERANCE["torch"])


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
@pytest.mark.parametrize("mode", ["LSTM", "GRU", "GRU_RESET_BEFORE", "RNN"])
def test_block_order_does_not_change_the_numbers(mode, precision, rng, many_threads):
    """Blocks are independent within a step, so forwards and backwards give the same bits:
    the same one-step call twice in a row (two orders) and a 4-step call (both orders
    within it) against its steps called one at a time."""
    make = {"LSTM": fastlstm.LSTM, "GRU": fastlstm.GRU, "RNN": fastlstm.RNN,
            "GRU_RESET_BEFORE": lambda *a, **k: fastlstm.GRU(*a, linear_before_reset=False, **k)}
    layer = make[mode](17, 37, backend="cython", precision=precision)
    x = rng.normal(size=(4, 2, 17)).astype(np.float32)
    first, second = layer(x[:1])[0], layer(x[:1])[0]
    assert np.array_equal(first, second)
    whole = layer(x)[0]
    state, steps = None, []
    for t in range(4):
        y, state = layer(x[t:t + 1], state)
        steps.append(y)
    # one-step calls project per block, the 4-step call projects first: same sums per column
    np.testing.assert_allclose(np.concatenate(steps), whole, atol=1e-6, rtol=0)


# -- the plan's own argument checks --------------------------------------------------------

def _bound_plan(batch=2, n_steps=3, hidden=17, input_size=5, projection=True):
    """A plan for an LSTM direction on fresh buffers, and what it was bound with."""
    layer = fastlstm.LSTM(input_size, hidden, backend="cython")
    packed = layer._layers[0]
    n_blk = cython_glue._n_blocks(hidden)
    xproj = np.zeros((n_steps, batch, n_blk * 4 * cython_glue.UNITS), np.float32)
    h_state = np.zeros((2, batch, n_blk * cython_glue.UNITS), np.float32)
    c_state = np.zeros((batch, n_blk * cython_glue.UNITS), np.float32)
    n_active = np.full(n_steps, batch, np.int64)
    scratch = cython_glue.KernelScratch(batch, hidden, hidden, 1, False)
    plan = cython_glue.sequence_plan(
        cython_glue.kernel_mode("LSTM", packed.variant), xproj, 0, packed.directions[0], False,
        h_state, c_state, cython_glue._DUMMY_MATRIX, n_active, False, 0, hidden, hidden, 1,
        packed.variant, scratch, (packed, 0, None) if projection else None)
    return plan, layer


def test_a_bound_plan_runs_the_layer(rng):
    plan, layer = _bound_plan()
    x = rng.normal(size=(3, 2, 5)).astype(np.float32)
    out = np.empty((3, 2, 17), np.float32)
    h_n, c_n = np.empty((1, 2, 17), np.float32), np.empty((1, 2, 17), np.float32)
    plan.run(x.reshape(6, 5), out, None, None, h_n, c_n, 0)
    _assert_torch_results(layer, x, out, h_n, c_n)


@pytest.mark.parametrize("x_shape, out_shape, match", [
    ((6, 4), (3, 2, 17), r"x: expected \(6, 5\)"),
    ((5, 5), (3, 2, 17), r"x: expected \(6, 5\)"),
    ((6, 5), (2, 2, 17), r"out: expected \(3, 2, >= 17\)"),
    ((6, 5), (3, 1, 17), r"out: expected \(3, 2, >= 17\)"),
    ((6, 5), (3, 2, 16), r"out: expected \(3, 2, >= 17\)"),
])
def test_run_rejects_shapes_that_do_not_match_the_plan(x_shape, out_shape, match):
    plan, _ = _bound_plan()
    with pytest.raises(ValueError, match=match):
        plan.run(np.zeros(x_shape, np.float32), np.zeros(out_shape, np.float32))


@pytest.mark.parametrize("name, value, error", [
    ("x", np.zeros((6, 5), np.float64), ValueError),
    ("x", np.zeros((5, 6), np.float32).T, ValueError),          # not C-contiguous
    ("x", np.zeros((6, 5), np.float32).tolist(), TypeError),
    ("out", np.zeros((3, 2, 17), np.float64), ValueError),
    ("out", np.zeros((3, 2, 17), np.float32)[:, :, ::-1], ValueError),
    ("out", np.zeros((6, 17), np.float32), ValueError),         # 2-D
])
def test_run_rejects_arrays_it_cannot_read_or_write_in_place(name, value, error):
    plan, _ = _bound_plan()
    arrays = {"x": np.zeros((6, 5), np.float32), "out": np.zeros((3, 2, 17), np.float32)}
    arrays[name] = value
    with pytest.raises(error, match=name):
        plan.run(arrays["x"], arrays["out"])


def test_run_rejects_a_read_only_out():
    plan, _ = _bound_plan()
    out = np.zeros((3, 2, 17), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out: .*writeable"):
        plan.run(np.zeros((6, 5), np.float32), out)


def test_run_needs_x_exactly_when_a_projection_is_bound():
    out = np.zeros((3, 2, 17), np.float32)
    with pytest.raises(ValueError, match="x: expected the input rows exactly"):
        _bound_plan()[0].run(None, out)
    with pytest.raises(ValueError, match="x: expected the input rows exactly"):
        _bound_plan(projection=False)[0].run(np.zeros((6, 5), np.float32), out)


@pytest.mark.parametrize("name, shape, state", [
    ("h_n", (1, 3, 17), 0), ("h_n", (1, 2, 16), 0), ("h_n", (1, 2, 17), 1),
    ("c_n", (1, 2, 18), 0), ("h0", (1, 1, 17), 0), ("c0", (2, 2, 3), 0),
])
def test_run_rejects_states_that_do_not_match(name, shape, state):
    plan, _ = _bound_plan()
    arrays = {"h0": None, "c0": None, "h_n": np.zeros((2, 2, 17), np.float32),
              "c_n": np.zeros((2, 2, 17), np.float32)}
    arrays[name] = np.zeros(shape, np.float32)
    with pytest.raises(ValueError, match=name):
        plan.run(np.zeros((6, 5), np.float32), np.zeros((3, 2, 17), np.float32), arrays["h0"],
                 arrays["c0"], arrays["h_n"], arrays["c_n"], state)


def test_an_unbound_plan_refuses_to_run():
    with pytest.raises(ValueError, match="not bound"):
        cython_glue._kernels.SequencePlan().run(None, np.zeros((1, 1, 1), np.float32))


def test_bind_projection_rejects_weights_of_another_shape():
    plan, _ = _bound_plan(projection=False)
    other = fastlstm.LSTM(5, 40, backend="cython")._layers[0]  # 3 blocks, the plan has 2
    with pytest.raises(ValueError, match=r"w_blocks: expected \(2, I, 64\)"):
        cython_glue._kernels.bind_projection(plan, other.w_ih, other.bias)


def _bound_pair(batch=2, n_steps=3, hidden=17, input_size=5, teams=(1, 1), scratch_threads=2,
                share_state=False, same_columns=False):
    """The two directions' plans of a bidirectional LSTM on fresh buffers, as run_layers
    binds them for run_side_by_side, and the layer."""
    layer = fastlstm.LSTM(input_size, hidden, bidirectional=True, backend="cython")
    packed = layer._layers[0]
    n_blk = cython_glue._n_blocks(hidden)
    width = n_blk * cython_glue.UNITS
    xproj = np.zeros((n_steps, batch, 2 * n_blk * 4 * cython_glue.UNITS), np.float32)
    h_state = np.zeros((2, 2, batch, width), np.float32)
    c_state = np.zeros((2, batch, width), np.float32)
    n_active = np.full(n_steps, batch, np.int64)
    scratch = cython_glue.KernelScratch(batch, hidden, hidden, scratch_threads, False,
                                        [batch, batch])
    plans = [cython_glue.sequence_plan(
        cython_glue.kernel_mode("LSTM", packed.variant), xproj,
        (0 if same_columns else d) * n_blk * 4 * cython_glue.UNITS, packed.directions[d], False,
        h_state[0 if share_state else d], c_state[0 if share_state else d],
        cython_glue._DUMMY_MATRIX, n_active, d == 1, (0 if same_columns else d) * hidden, hidden,
        hidden, teams[d], packed.variant, scratch, (packed, d, None), d)
        for d in (0, 1)]
    return plans, layer


def test_directions_side_by_side_equal_torch(rng):
    plans, layer = _bound_pair()
    x = rng.normal(size=(3, 2, 5)).astype(np.float32)
    out = np.empty((3, 2, 34), np.float32)
    h_n, c_n = np.empty((2, 2, 17), np.float32), np.empty((2, 2, 17), np.float32)
    cython_glue._kernels.run_side_by_side(*plans, x.reshape(6, 5), out, None, None, h_n, c_n, 0, 1)
    _assert_torch_results(layer, x, out, h_n, c_n)


@pytest.mark.parametrize("kwargs, match", [
    (dict(teams=(1, 2)), r"teams differ \(1, 2\)"),
    (dict(share_state=True), "share their state"),
    (dict(same_columns=True), "share their state, columns or rows"),
    (dict(scratch_threads=1), "scratch for 2 threads"),
])
def test_run_side_by_side_rejects_plans_that_cannot_run_at_once(kwargs, match):
    plans, _ = _bound_pair(**kwargs)
    out = np.zeros((3, 2, 34), np.float32)
    h_n = np.zeros((2, 2, 17), np.float32)
    with pytest.raises(ValueError, match=match):
        cython_glue._kernels.run_side_by_side(*plans, np.zeros((6, 5), np.float32), out, None,
                                              None, h_n, h_n.copy(), 0, 1)


def _bound_halves(rows=(2, 1), row0s=(0, 2), batch=3, n_steps=3, hidden=17, input_size=5):
    """Two plans of one LSTM direction, each bound to a range of the batch's rows, on
    fresh buffers (the caller fills xproj), and the layer."""
    layer = fastlstm.LSTM(input_size, hidden, backend="cython")
    packed = layer._layers[0]
    width = cython_glue._n_blocks(hidden) * cython_glue.UNITS
    xproj = np.zeros((n_steps, batch, 4 * width), np.float32)
    scratch = cython_glue.KernelScratch(batch, hidden, hidden, 2, False, list(rows))
    plans = [cython_glue.sequence_plan(
        cython_glue.kernel_mode("LSTM", packed.variant), xproj, 0, packed.directions[0], False,
        np.zeros((2, n, width), np.float32), np.zeros((n, width), np.float32),
        cython_glue._DUMMY_MATRIX, np.full(n_steps, n, np.int64), False, 0, hidden, hidden, 1,
        packed.variant, scratch, None, lane, r0)
        for lane, (r0, n) in enumerate(zip(row0s, rows))]
    return plans, layer, xproj


def test_batch_halves_side_by_side_equal_torch(rng):
    plans, layer, xproj = _bound_halves()
    x = rng.normal(size=(3, 3, 5)).astype(np.float32)
    cython_glue.project(4, layer._layers[0], x.reshape(9, 5), xproj.reshape(9, -1), 1, None, 3)
    out = np.empty((3, 3, 17), np.float32)
    h_n, c_n = np.empty((1, 3, 17), np.float32), np.empty((1, 3, 17), np.float32)
    cython_glue._kernels.run_side_by_side(*plans, None, out, None, None, h_n, c_n, 0, 0)
    _assert_torch_results(layer, x, out, h_n, c_n)


def test_project_checks_shapes_before_the_kernel(rng):
    packed = fastlstm.LSTM(5, 17, backend="cython")._layers[0]
    x = rng.normal(size=(9, 5)).astype(np.float32)
    columns = packed.w_ih.shape[0] * packed.w_ih.shape[2]
    wide = np.full((9, cython_glue.xproj_row_length(columns)), np.nan, np.float32)
    cython_glue.project(4, packed, x, wide, 1, None, 3)  # extra columns are left alone
    narrow = np.empty((9, columns), np.float32)
    cython_glue.project(4, packed, x, narrow, 1, None, 3)
    np.testing.assert_array_equal(wide[:, :columns], narrow)
    assert np.isnan(wide[:, columns:]).all()
    kernels = cython_glue._kernels
    with pytest.raises(ValueError, match=rf"out must be \(9, >= {columns}\), got \(9, {columns - 1}\)"):
        kernels.project(4, packed.w_ih, packed.bias, x, narrow[:, 1:].copy(), 1, 3)
    with pytest.raises(ValueError, match=r"out must be \(9, "):
        kernels.project(4, packed.w_ih, packed.bias, x, narrow[:8], 1, 3)
    with pytest.raises(ValueError, match="w_blocks must be"):
        kernels.project(4, packed.w_ih, packed.bias, x[:, :4].copy(), narrow, 1, 3)
    with pytest.raises(ValueError, match="w_blocks must be"):
        kernels.project(3, packed.w_ih, packed.bias, x, narrow, 1, 3)
    with pytest.raises(ValueError, match="bias and scale must be"):
        kernels.project(4, packed.w_ih, packed.bias[:-1], x, narrow, 1, 3)
    for step_rows in (0, 2, 10):
        with pytest.raises(ValueError, match=rf"step_rows: expected a positive divisor of x's 9 "
                                             rf"rows, got {step_rows}"):
            kernels.project(4, packed.w_ih, packed.bias, x, narrow, 1, step_rows)


def test_run_side_by_side_rejects_overlapping_rows():
    plans, _, _ = _bound_halves(rows=(2, 2), row0s=(0, 1))
    h_n = np.zeros((1, 3, 17), np.float32)
    with pytest.raises(ValueError, match="share their state, columns or rows"):
        cython_glue._kernels.run_side_by_side(*plans, None, np.zeros((3, 3, 17), np.float32),
                                              None, None, h_n, h_n.copy(), 0, 0)


def test_row_ranges_are_checked_when_bound():
    with pytest.raises(ValueError, match=r"row0, h_state, n_active: rows 2 \.\. 4 of 3"):
        _bound_halves(rows=(2, 2), row0s=(0, 2))
    plans, layer, _ = _bound_halves()
    packed = layer._layers[0]
    with pytest.raises(ValueError, match="some of the rows takes xproj from the caller"):
        cython_glue._kernels.bind_projection(plans[1], packed.w_ih, packed.bias)


def test_directions_side_by_side_run_on_one_thread_when_openmp_grants_one():
    """OMP_THREAD_LIMIT=1: the pair's parallel region gets one thread, which runs both
    directions in turn (a team waiting for a missing thread would hang)."""
    code = ("import numpy as np, fastlstm\n"
            "fastlstm.set_num_threads(2)\n"
            "layer = fastlstm.LSTM(5, 17, num_layers=2, bidirectional=True, backend='cython')\n"
            "x = np.random.default_rng(0).normal(size=(4, 3, 5)).astype(np.float32)\n"
            "two = layer(x)[0]\n"
            "fastlstm.set_num_threads(1)\n"
            "print(np.array_equal(two, layer(x)[0]))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "OMP_THREAD_LIMIT": "1"}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


def test_replaced_weights_are_not_kept_alive_by_cached_plans(rng):
    """Plans cache their layer stacks' weights; a stack replaced by reloading is released
    once a few newer stacks have run at that call shape (memory stays bounded)."""
    import gc
    import weakref

    layer = fastlstm.LSTM(5, 17, backend="cython")
    x = rng.normal(size=(3, 2, 5)).astype(np.float32)
    layer(x)
    old = weakref.ref(layer._layers[0])
    for _ in range(cython_glue._CACHED_STACKS):
        layer.load_state_dict(layer.state_dict())  # repacks: a new stack of packed weights
        layer(x)
    gc.collect()
    assert old() is None


# -- DirectCall: a stream's steady step checked in C ------------------------------------------

class _Owner:
    """Stands for the layer: DirectCall runs while owner._layers is the bound object."""

    def __init__(self):
        self._layers = object()


def _direct_call(chunk_shape=(3, 2, 5), out_shape=(3, 2, 17)):
    from fastlstm import threads
    plan, layer = _bound_plan()
    owner = _Owner()
    direct = cython_glue._kernels.DirectCall(threads, owner)
    direct.bind(plan, chunk_shape, out_shape, threads._num_threads, owner._layers)
    return direct, plan, layer, owner


@pytest.mark.parametrize("chunk_shape, out_shape", [((3, 2, 5), (3, 2, 17)), ((6, 5), (6, 17)),
                                                   ((2, 3, 5), (2, 3, 17))])
def test_direct_call_runs_the_plan_and_carries_the_state(chunk_shape, out_shape, rng):
    """Two calls of 3 steps continue one another, as PyTorch's 6-step call (the chunk and
    out are T*B rows in any 2 or 3 dims; which is which is the caller's layout)."""
    direct, _, layer, _ = _direct_call(chunk_shape, out_shape)
    x = rng.normal(size=(6, 2, 5)).astype(np.float32)
    first = direct(x[:3].reshape(chunk_shape))
    buffer = np.empty(out_shape, np.float32)
    second = direct(x[3:].reshape(chunk_shape), buffer)
    assert first.shape == out_shape and first.dtype == np.float32 and second is buffer
    with torch.no_grad():
        expected, _ = _torch_lstm(layer)(torch.from_numpy(x))
    got = np.concatenate([first.reshape(3, 2, 17), second.reshape(3, 2, 17)])
    np.testing.assert_allclose(got, expected.numpy(), **TOLERANCE["torch"])


def test_direct_call_declines_what_it_cannot_take(rng, restore_threads):
    """None (the caller's checked path then runs) for anything but the bound case."""
    direct, _, _, owner = _direct_call()
    x = rng.normal(size=(3, 2, 5)).astype(np.float32)
    declined = [
        (x.astype(np.float64), None), (np.asfortranarray(x), None), (x[:2], None),
        (x.reshape(6, 5), None), (x.tolist(), None),
        (x, np.zeros((3, 2, 17), np.float64)), (x, np.zeros((3, 2, 18), np.float32)),
        (x, np.zeros((3, 2, 34), np.float32)[:, :, ::2]), (x, [0.0]),
    ]
    read_only = np.zeros((3, 2, 17), np.float32)
    read_only.flags.writeable = False
    declined.append((x, read_only))
    for chunk, buffer in declined:
        assert direct(chunk, buffer) is None
    assert direct.enter()  # held by a caller: declined, and a second enter fails
    assert direct(x) is None and not direct.enter()
    direct.leave()
    assert direct(x) is not None
    fastlstm.set_num_threads(fastlstm.get_num_threads() + 1)  # bound at another count
    assert direct(x) is None
    fastlstm.set_num_threads(fastlstm.get_num_threads() - 1)
    owner._layers = object()  # weights reloaded
    assert direct(x) is None
    direct.bind(*_bound_plan()[:1], (3, 2, 5), (3, 2, 17), fastlstm.get_num_threads(),
                owner._layers)
    direct.unbind()
    assert direct(x) is None


@pytest.mark.parametrize("chunk_shape, out_shape, match", [
    ((3, 2, 4), (3, 2, 17), "must end in 5"),
    ((3, 3, 5), (3, 2, 17), "does not hold the plan's 6 rows"),
    ((3, 2, 5), (6, 16), "must end in >= 17"),
    ((3, 2, 5), (2, 17), "does not hold the plan's 6 rows"),
    ((6,), (6, 17), "2 or 3 positive sizes"),
    ((1, 6, 1, 5), (6, 17), "2 or 3 positive sizes"),
    ((0, 5), (6, 17), "2 or 3 positive sizes"),
])
def test_direct_call_binds_only_shapes_that_fit_the_plan(chunk_shape, out_shape, match):
    from fastlstm import threads
    plan, _ = _bound_plan()
    direct = cython_glue._kernels.DirectCall(threads, _Owner())
    with pytest.raises(ValueError, match=match):
        direct.bind(plan, chunk_shape, out_shape, 1, None)
    unprojected, _ = _bound_plan(projection=False)
    with pytest.raises(ValueError, match="with its projection"):
        direct.bind(unprojected, (3, 2, 5), (3, 2, 17), 1, None)
