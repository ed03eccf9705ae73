"""Threads: one layer called from 8 threads at once gives what serial calls give; a
Stream refuses a second concurrent caller (RuntimeError) without corrupting its state;
a StreamPool shared by 8 threads serialises them and every session stays exact;
separate streams of one layer run side by side."""

import threading

import numpy as np
import pytest

import fastlstm
from test_stream import CHUNKED, make_layer
from test_stream_pool import BATCHED

N_THREADS = 8


def run_threads(target, count=N_THREADS):
    """Start ``count`` threads on target(index) together; re-raise the first error."""
    errors, start = [], threading.Barrier(count)

    def body(index):
        try:
            start.wait()
            target(index)
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            errors.append(error)

    threads = [threading.Thread(target=body, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_one_layer_from_eight_threads(backend, rng, mode):
    layer = make_layer(mode, backend, rng, input_size=12, hidden_size=40, num_layers=2)
    calls = []
    for _ in range(48):  # random shapes, lengths and initial states
        n_steps, batch = int(rng.integers(1, 12)), int(rng.integers(1, 6))
        x = rng.standard_normal((n_steps, batch, 12)).astype(np.float32)
        lengths = rng.integers(1, n_steps + 1, batch) if rng.random() < 0.3 else None
        h0 = rng.standard_normal((2, batch, 40)).astype(np.float32)
        hx = (h0, h0 * 0.5) if mode == "LSTM" else h0
        calls.append((x, hx, lengths))
    serial = [layer(x, hx, lengths=lengths) for x, hx, lengths in calls]
    threaded = [None] * len(calls)

    def work(index):
        for repeat in range(3):
            for k in range(index, len(calls), N_THREADS):
                x, hx, lengths = calls[k]
                threaded[k] = layer(x, hx, lengths=lengths)

    run_threads(work)
    for (out, state), (got_out, got_state) in zip(serial, threaded):
        np.testing.assert_array_equal(got_out, out)
        for part, got in zip(state if mode == "LSTM" else (state,),
                             got_state if mode == "LSTM" else (got_state,)):
            np.testing.assert_array_equal(got, part)


class _SlowArray:
    """An array-like whose conversion waits: holds a stream's call open on demand."""

    def __init__(self, array, entered, release):
        self._array, self._entered, self._release = array, entered, release

    def __array__(self, dtype=None, copy=None):
        self._entered.set()
        assert self._release.wait(10)
        return self._array if dtype is None else self._array.astype(dtype)


def test_stream_refuses_a_concurrent_caller(backend, rng):
    layer = make_layer("LSTM", backend, rng)
    stream = layer.stream()
    x = rng.standard_normal((3, 1, 5)).astype(np.float32)
    entered, release = threading.Event(), threading.Event()
    first = threading.Thread(target=stream, args=(_SlowArray(x, entered, release),))
    first.start()
    assert entered.wait(10)
    try:  # the first call is inside the stream now
        with pytest.raises(RuntimeError, match="another thread"):
            stream(x)
        with pytest.raises(RuntimeError, match="another thread"):
            stream.reset()
        with pytest.raises(RuntimeError, match="another thread"):
            stream.state
    finally:
        release.set()
        first.join()
    expected, state = layer(x)  # exactly the first call happened
    np.testing.assert_allclose(stream.state[0], state[0], **CHUNKED)
    np.testing.assert_allclose(stream.state[1], state[1], **CHUNKED)


def test_stream_hammered_by_threads_stays_consistent(backend, rng):
    """Threads racing on one stream: every call either runs whole or raises."""
    layer = make_layer("GRU", backend, rng)
    stream = layer.stream()
    x = rng.standard_normal((1, 1, 5)).astype(np.float32)
    done = [0] * N_THREADS

    def work(index):
        for _ in range(200):
            try:
                stream(x)
                done[index] += 1
            except RuntimeError:
                pass

    run_threads(work)
    _, expected = layer(np.repeat(x, sum(done), axis=0))
    np.testing.assert_allclose(stream.state, expected, atol=1e-5, rtol=0)


def test_pool_shared_by_threads(backend, rng):
    layer = make_layer("LSTM", backend, rng, num_layers=2)
    pool = fastlstm.StreamPool(layer, capacity=4 * N_THREADS)
    inputs = rng.standard_normal((N_THREADS, 4, 30, 5)).astype(np.float32)  # thread, session, t, I
    outputs = np.zeros((N_THREADS, 4, 30, 7), np.float32)
    sids = [None] * N_THREADS

    def work(index):
        mine = sids[index] = [pool.open() for _ in range(4)]
        t = 0
        while t < 30:
            n_steps = 1 + (t + index) % 3
            n_steps = min(n_steps, 30 - t)
            results = pool.step({sid: inputs[index, k, t:t + n_steps] for k, sid in enumerate(mine)})
            for k, sid in enumerate(mine):
                outputs[index, k, t:t + n_steps] = results[sid]
            t += n_steps

    run_threads(work)
    for index in range(N_THREADS):
        for k, sid in enumerate(sids[index]):
            expected, (h_n, c_n) = layer(inputs[index, k][:, None])
            np.testing.assert_allclose(outputs[index, k], expected[:, 0], **BATCHED)
            h, c = pool.state(sid)
            np.testing.assert_allclose(h, h_n[:, 0], **BATCHED)
            np.testing.assert_allclose(c, c_n[:, 0], **BATCHED)


def test_separate_streams_in_parallel(backend, rng):
    layer = make_layer("LSTM", backend, rng, input_size=8, hidden_size=24)
    x = rng.standard_normal((N_THREADS, 40, 1, 8)).astype(np.float32)
    got = np.zeros((N_THREADS, 40, 1, 24), np.float32)

    def work(index):
        stream = layer.stream()
        for t in range(40):
            got[index, t] = stream(x[index, t:t + 1])[0]

    run_threads(work)
    for index in range(N_THREADS):
        np.testing.assert_allclose(got[index], layer(x[index])[0], **CHUNKED)
