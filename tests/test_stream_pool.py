"""StreamPool: sessions opened and closed at any time, stepped in any subsets and chunk
sizes, give what each session's sequence gives through one layer call on its own (the
reference); errors name the session and change nothing."""

import numpy as np
import pytest

import fastlstm
from fastlstm.streaming import PoolFullError
from test_stream import make_layer

# A session runs in a batch of k rows here and alone in the reference; the kernels tile
# rows differently then and may round differently (seen: 3.6e-7 relative, ReLU outputs ~4).
BATCHED = dict(atol=1e-6, rtol=1e-6)


def reference(layer, steps):
    """The layer's output and final state on one session's whole input sequence."""
    out, state = layer(np.concatenate(steps)[:, None, :])
    if isinstance(state, tuple):
        return out[:, 0], tuple(part[:, 0] for part in state)
    return out[:, 0], state[:, 0]


@pytest.mark.parametrize("mode, kwargs", [
    ("LSTM", dict()), ("LSTM", dict(num_layers=2, proj_size=3)), ("GRU", dict()),
    ("RNN_RELU", dict(num_layers=2)),
])
def test_sessions_equal_stepping_alone(backend, rng, mode, kwargs):
    layer = make_layer(mode, backend, rng, **kwargs)
    pool = fastlstm.StreamPool(layer, capacity=6)
    inputs, outputs, finished = {}, {}, []
    for round_index in range(40):
        # sessions join and leave at any time (closing packs the last session into the gap)
        if len(pool) < pool.capacity and (len(pool) < 2 or rng.random() < 0.3):
            sid = pool.open()
            inputs[sid], outputs[sid] = [], []
        if len(pool) > 2 and rng.random() < 0.15:
            sid = pool.sessions()[rng.integers(len(pool))]
            finished.append((sid, pool.state(sid)))
            pool.close(sid)
        open_now = pool.sessions()
        chosen = [sid for sid in open_now if rng.random() < 0.7] or open_now[:1]
        n_steps = int(rng.integers(1, 4))
        single = n_steps == 1 and rng.random() < 0.5
        given = {}
        for sid in chosen:
            x = rng.standard_normal((n_steps, 5)).astype(np.float32)
            inputs[sid].append(x)
            given[sid] = x[0] if single else x
        results = pool.step(given)
        assert list(results) == chosen
        for sid, y in results.items():
            assert y.shape == ((layer.proj_size or 7,) if single else (n_steps, layer.proj_size or 7))
            outputs[sid].append(y.reshape(n_steps, -1))
    checked = finished + [(sid, pool.state(sid)) for sid in pool.sessions()]
    for sid, state in checked:
        if not inputs[sid]:
            continue
        expected_out, expected_state = reference(layer, inputs[sid])
        np.testing.assert_allclose(np.concatenate(outputs[sid]), expected_out, **BATCHED)
        if isinstance(state, tuple):
            for got, expected in zip(state, expected_state):
                np.testing.assert_allclose(got, expected, **BATCHED)
        else:
            np.testing.assert_allclose(state, expected_state, **BATCHED)


def test_close_moves_last_session_and_ids_are_not_reused(backend, rng):
    layer = make_layer("GRU", backend, rng)
    pool = fastlstm.StreamPool(layer, capacity=3)
    a, b, c = pool.open(), pool.open(), pool.open()
    x = {sid: rng.standard_normal(5).astype(np.float32) for sid in (a, b, c)}
    pool.step(x)
    state_c = pool.state(c)
    pool.close(a)
    assert pool.sessions() == [c, b]  # c moved into a's row
    np.testing.assert_array_equal(pool.state(c), state_c)
    d = pool.open()
    assert d not in (a, b, c) and a not in pool and len(pool) == 3
    assert not pool.state(d).any()  # a new session starts from zeros
    pool.reset(b)
    assert not pool.state(b).any()


def test_errors_name_the_session_and_change_nothing(backend, rng):
    layer = make_layer("LSTM", backend, rng)
    pool = fastlstm.StreamPool(layer, capacity=2)
    a, b = pool.open(), pool.open()
    pool.step({a: rng.standard_normal(5), b: rng.standard_normal(5)})
    before = {sid: pool.state(sid) for sid in (a, b)}
    good = rng.standard_normal(5).astype(np.float32)

    with pytest.raises(PoolFullError, match="capacity|all 2 sessions"):
        pool.open()
    with pytest.raises(KeyError, match="session 99"):
        pool.step({a: good, 99: good})
    with pytest.raises(ValueError, match=f"session {b}.*input_size=5"):
        pool.step({a: good, b: np.zeros(4, np.float32)})
    with pytest.raises(ValueError, match=f"session {b}.*2 steps"):
        pool.step({a: np.zeros((1, 5)), b: np.zeros((2, 5))})
    with pytest.raises(TypeError, match=f"session {b}"):
        pool.step({a: good, b: np.zeros(5, np.int32)})
    with pytest.raises(ValueError, match=f"session {b}"):
        pool.step({a: good, b: [[1.0] * 5, [1.0]]})
    with pytest.raises(TypeError, match="dict"):
        pool.step([good])
    for sid in (a, b):
        for got, expected in zip(pool.state(sid), before[sid]):
            np.testing.assert_array_equal(got, expected)

    pool.close(a)
    for call in (lambda: pool.close(a), lambda: pool.state(a), lambda: pool.reset(a),
                 lambda: pool.step({a: good})):
        with pytest.raises(KeyError, match=f"session {a}"):
            call()
    assert pool.step({}) == {}


def test_inputs_of_any_float_type(backend, rng):
    layer = make_layer("RNN_TANH", backend, rng)
    pool = fastlstm.StreamPool(layer, capacity=3)
    sids = [pool.open() for _ in range(3)]
    x = rng.standard_normal((3, 2, 5))
    results = pool.step({sids[0]: x[0], sids[1]: x[1].tolist(), sids[2]: x[2].astype(np.float32)})
    for sid, row in zip(sids, x):
        expected, _ = reference(layer, [row.astype(np.float32)])
        np.testing.assert_allclose(results[sid], expected, **BATCHED)
        assert results[sid].dtype == np.float32 and results[sid].flags.c_contiguous


def test_construction_errors(backend, rng):
    with pytest.raises(ValueError, match="bidirectional"):
        fastlstm.StreamPool(make_layer("GRU", backend, rng, bidirectional=True), capacity=2)
    with pytest.raises(ValueError, match="capacity"):
        fastlstm.StreamPool(make_layer("GRU", backend, rng), capacity=0)


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_a_full_pool_on_tiles_equals_each_session_alone(backend, rng, mode):
    """40 sessions stepped together take the batch paths (on AMX CPUs, fp32 products on
    tiles from 32 rows), each session alone the one-row path: the same numbers."""
    layer = make_layer(mode, backend, rng, input_size=17, hidden_size=37)
    pool = fastlstm.StreamPool(layer, capacity=40)
    sids = [pool.open() for _ in range(40)]
    inputs = {sid: [rng.standard_normal((3, 17)).astype(np.float32) for _ in range(4)]
              for sid in sids}
    outputs = {sid: [] for sid in sids}
    for chunk in range(4):
        for sid, y in pool.step({sid: inputs[sid][chunk] for sid in sids}).items():
            outputs[sid].append(y)
    for sid in sids:
        expected_out, expected_state = reference(layer, inputs[sid])
        np.testing.assert_allclose(np.concatenate(outputs[sid]), expected_out, **BATCHED)
        for got, expected in zip(pool.state(sid) if mode == "LSTM" else (pool.state(sid),),
                                 expected_state if mode == "LSTM" else (expected_state,)):
            np.testing.assert_allclose(got[:, 0] if got.ndim == 3 else got, expected, **BATCHED)
