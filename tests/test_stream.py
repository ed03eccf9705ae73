"""Stream: a sequence fed in chunks of any sizes gives the outputs and final state of
one layer call on the whole sequence (the independent reference here), per backend;
PyTorch end to end; ``out=``; state get/set/reset; errors leave the state untouched;
resident memory stays flat over many steps."""

import numpy as np
import pytest
import torch

import fastlstm
from helpers import TOLERANCE, random_state_dict

CHUNKED = dict(atol=1e-6, rtol=0.0)  # the same kernels, only the chunking differs

_CLASSES = {"LSTM": fastlstm.LSTM, "GRU": fastlstm.GRU, "RNN_TANH": fastlstm.RNN,
            "RNN_RELU": fastlstm.RNN}


def make_layer(mode, backend, rng, input_size=5, hidden_size=7, **kwargs):
    """A layer of ``mode`` with random weights (PyTorch's init range)."""
    if mode.startswith("RNN"):
        kwargs["nonlinearity"] = "relu" if mode == "RNN_RELU" else "tanh"
    layer = _CLASSES[mode](input_size, hidden_size, backend=backend, **kwargs)
    shapes = {key: value.shape for key, value in layer.state_dict().items()}
    return layer.load_state_dict(random_state_dict(shapes, hidden_size, rng))


def whole(layer, x, hx=None):
    """(out, state) of one layer call; state is (h, c) for LSTM, else h."""
    out, state = layer(x, hx)
    return out, state


def chunks_of(sizes, n_steps):
    """Split range(n_steps) into consecutive slices of the given sizes (cycled)."""
    slices, start, index = [], 0, 0
    while start < n_steps:
        stop = min(n_steps, start + sizes[index % len(sizes)])
        slices.append(slice(start, stop))
        start, index = stop, index + 1
    return slices


def feed(stream, x, slices, time_axis):
    taken = [np.ascontiguousarray(x[(slice(None),) * time_axis + (part,)]) for part in slices]
    return np.concatenate([stream(chunk) for chunk in taken], axis=time_axis)


def assert_state_close(got, expected, tolerance):
    if isinstance(expected, tuple):
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, **tolerance)
    else:
        np.testing.assert_allclose(got, expected, **tolerance)


LAYOUTS = [
    pytest.param(dict(), id="time-major"),
    pytest.param(dict(batch_first=True), id="batch-first"),
    pytest.param(dict(num_layers=3), id="3-layers"),
]
SCHEDULES = [pytest.param([1], id="steps-of-1"), pytest.param([3, 1, 4, 1, 5, 9, 2, 6], id="mixed"),
             pytest.param([40], id="one-chunk")]


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("mode", list(_CLASSES))
def test_chunks_equal_whole_sequence(backend, rng, mode, layout, schedule):
    layer = make_layer(mode, backend, rng, **layout)
    batch, n_steps = 3, 23
    time_axis = 1 if layer.batch_first else 0
    shape = (batch, n_steps, 5) if layer.batch_first else (n_steps, batch, 5)
    x = rng.standard_normal(shape).astype(np.float32)
    expected_out, expected_state = whole(layer, x)
    stream = layer.stream(batch_size=batch)
    got = feed(stream, x, chunks_of(schedule, n_steps), time_axis)
    np.testing.assert_allclose(got, expected_out, **CHUNKED)
    assert_state_close(stream.state, expected_state, CHUNKED)


@pytest.mark.parametrize("kwargs", [
    pytest.param(dict(mode="LSTM", proj_size=3), id="LSTM-proj"),
    pytest.param(dict(mode="LSTM", peephole=True, clip=0.7), id="LSTM-peephole-clip"),
    pytest.param(dict(mode="LSTM", coupled_input_forget=True), id="LSTM-coupled"),
    pytest.param(dict(mode="GRU", linear_before_reset=False, num_layers=2), id="GRU-original"),
    pytest.param(dict(mode="LSTM", bias=False, num_layers=2, proj_size=2), id="LSTM-nobias-proj"),
])
def test_variants_chunked(backend, rng, kwargs):
    kwargs = dict(kwargs)
    layer = make_layer(kwargs.pop("mode"), backend, rng, **kwargs)
    x = rng.standard_normal((11, 2, 5)).astype(np.float32)
    expected_out, expected_state = whole(layer, x)
    stream = layer.stream(batch_size=2)
    got = feed(stream, x, chunks_of([2, 1, 3], 11), 0)
    np.testing.assert_allclose(got, expected_out, **CHUNKED)
    assert_state_close(stream.state, expected_state, CHUNKED)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch", [2, 17, 65])
@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precision_chunked(rng, precision, batch, threads, restore_threads):
    """bf16/int8 weights (Cython backend): the stream runs the same reduced-precision kernels,
    and multiplies x in the parts of its batch (two below 16 sequences, one from 16) however
    many rows a chunk has, with the projection run by the steps' threads, apart from them
    (2 threads, a long chunk) or (bf16 from 64 sequences on AMX) in the steps' tiles:
    chunks of 1 to 25 steps."""
    if "cython" not in fastlstm.available_backends():
        pytest.skip("reduced precision runs on the cython backend")
    layer = make_layer("LSTM", "cython", rng, num_layers=2)
    if not hasattr(layer, "with_precision"):
        pytest.skip("this fastlstm has no reduced precision")
    layer = layer.with_precision(precision)
    fastlstm.set_num_threads(threads)
    x = rng.standard_normal((40, batch, 5)).astype(np.float32)
    expected_out, expected_state = whole(layer, x)
    stream = layer.stream(batch_size=batch)
    got = feed(stream, x, chunks_of([1, 3, 25], 40), 0)
    np.testing.assert_allclose(got, expected_out, **CHUNKED)
    assert_state_close(stream.state, expected_state, CHUNKED)


def test_unbatched_chunks(backend, rng):
    layer = make_layer("LSTM", backend, rng, num_layers=2)
    x = rng.standard_normal((9, 5)).astype(np.float32)
    expected_out, (h_n, c_n) = layer(x)
    stream = layer.stream()
    got = feed(stream, x, chunks_of([1, 3], 9), 0)
    assert got.shape == (9, 7)
    np.testing.assert_allclose(got, expected_out, **CHUNKED)
    h, c = stream.state  # the stream's state keeps its batch axis
    np.testing.assert_allclose(h[:, 0], h_n, **CHUNKED)
    np.testing.assert_allclose(c[:, 0], c_n, **CHUNKED)


def test_matches_torch_step_by_step(backend):
    """End to end against PyTorch: torch runs the whole sequence, fastlstm one step a call."""
    torch.manual_seed(0)
    module = torch.nn.LSTM(6, 10, num_layers=2, proj_size=4).eval()
    layer = fastlstm.LSTM.from_torch(module, backend=backend)
    x = np.random.default_rng(1).standard_normal((30, 2, 6)).astype(np.float32)
    with torch.inference_mode():
        expected, (h_n, c_n) = module(torch.from_numpy(x))
    stream = layer.stream(batch_size=2)
    got = np.concatenate([stream(x[t:t + 1]) for t in range(30)])
    np.testing.assert_allclose(got, expected.numpy(), **TOLERANCE["torch"])
    h, c = stream.state
    np.testing.assert_allclose(h, h_n.numpy(), **TOLERANCE["torch"])
    np.testing.assert_allclose(c, c_n.numpy(), **TOLERANCE["torch"])


def test_other_input_types_take_the_checked_path(backend, rng):
    """float64, torch, lists and non-contiguous chunks give what float32 arrays give."""
    layer = make_layer("GRU", backend, rng)
    x = rng.standard_normal((8, 2, 5)).astype(np.float32)
    expected, _ = layer(x)
    stream = layer.stream(batch_size=2)
    wide = np.zeros((8, 2, 10), np.float32)
    wide[..., ::2] = x
    parts = [x[0:1].astype(np.float64), torch.from_numpy(x[1:3].copy()), x[3:4].tolist(),
             wide[4:6, :, ::2], x[6:8]]
    got = np.concatenate([stream(part) for part in parts])
    np.testing.assert_allclose(got, expected, **CHUNKED)


def test_out_buffer(backend, rng):
    layer = make_layer("LSTM", backend, rng)
    x = rng.standard_normal((6, 1, 5)).astype(np.float32)
    expected, _ = layer(x)
    stream = layer.stream()
    buffer = np.full((1, 1, 7), np.nan, np.float32)
    got = []
    for t in range(6):
        result = stream(x[t:t + 1], out=buffer)
        assert result is buffer
        got.append(buffer.copy())
    np.testing.assert_allclose(np.concatenate(got), expected, **CHUNKED)
    # unbatched out, and batch-first with B > 1 and T > 1 (copied through a transpose)
    unbatched = np.empty((2, 7), np.float32)
    assert stream(x[:2, 0], out=unbatched) is unbatched
    bf = make_layer("GRU", backend, rng, batch_first=True)
    xb = rng.standard_normal((3, 4, 5)).astype(np.float32)
    buffer = np.empty((3, 4, 7), np.float32)
    bf.stream(batch_size=3)(xb, out=buffer)
    np.testing.assert_allclose(buffer, bf(xb)[0], **CHUNKED)


@pytest.mark.parametrize("bad, error", [
    (np.empty((1, 1, 7), np.float64), TypeError),
    (np.empty((2, 1, 7), np.float32), ValueError),
    (np.empty((1, 1, 14), np.float32)[..., ::2], ValueError),
    ([[[0.0] * 7]], TypeError),
])
def test_bad_out_raises_and_leaves_state(backend, rng, bad, error):
    layer = make_layer("LSTM", backend, rng)
    stream = layer.stream()
    x = rng.standard_normal((1, 1, 5)).astype(np.float32)
    stream(x)
    before = stream.state
    with pytest.raises(error, match="out"):
        stream(x, out=bad)
    assert_state_close(stream.state, before, dict(atol=0, rtol=0))


def test_bad_chunks_raise_and_leave_state(backend, rng):
    layer = make_layer("GRU", backend, rng)
    stream = layer.stream(batch_size=2)
    stream(rng.standard_normal((3, 2, 5)).astype(np.float32))
    before = stream.state
    with pytest.raises(ValueError, match="I=5"):
        stream(np.zeros((1, 2, 4), np.float32))
    with pytest.raises(ValueError, match="batch_size=2"):
        stream(np.zeros((1, 3, 5), np.float32))
    with pytest.raises(ValueError, match="batch_size=1"):
        stream(np.zeros((1, 5), np.float32))
    with pytest.raises(ValueError, match="at least one step"):
        stream(np.zeros((0, 2, 5), np.float32))
    with pytest.raises(TypeError, match="floating-point"):
        stream(np.zeros((1, 2, 5), np.int64))
    np.testing.assert_array_equal(stream.state, before)


def test_construction_errors(backend, rng):
    with pytest.raises(ValueError, match="bidirectional"):
        make_layer("LSTM", backend, rng, bidirectional=True).stream()
    layer = make_layer("RNN_TANH", backend, rng)
    with pytest.raises(ValueError, match="batch_size"):
        layer.stream(batch_size=0)
    with pytest.raises(TypeError, match="batch_size"):
        layer.stream(batch_size=1.5)
    with pytest.raises(TypeError, match="layer"):
        fastlstm.Stream(object())


def test_state_set_reset(backend, rng):
    layer = make_layer("LSTM", backend, rng, num_layers=2)
    x = rng.standard_normal((5, 3, 5)).astype(np.float32)
    h0 = rng.standard_normal((2, 3, 7)).astype(np.float32)
    c0 = rng.standard_normal((2, 3, 7)).astype(np.float32)
    stream = layer.stream(batch_size=3)
    stream.state = (h0, c0)
    expected, _ = layer(x, (h0, c0))
    np.testing.assert_allclose(stream(x), expected, **CHUNKED)

    # reset(b) zeros sequence b only: b continues like a fresh start, the others unchanged
    stream.state = (h0, c0)
    stream.reset(1)
    h, c = stream.state
    assert not h[:, 1].any() and not c[:, 1].any()
    np.testing.assert_array_equal(h[:, [0, 2]], h0[:, [0, 2]])
    got = stream(x)
    fresh, _ = layer(x[:, 1:2])
    np.testing.assert_allclose(got[:, 1:2], fresh, **CHUNKED)
    np.testing.assert_allclose(got[:, [0, 2]], expected[:, [0, 2]], **CHUNKED)

    stream.reset()
    assert not any(part.any() for part in stream.state)
    with pytest.raises(IndexError, match="batch_index"):
        stream.reset(3)
    with pytest.raises(ValueError, match=r"state\[0\]"):
        stream.state = (h0[:1], c0)
    with pytest.raises(TypeError, match="tuple"):
        stream.state = h0


def test_reloaded_weights_apply_from_the_next_call(backend, rng):
    layer = make_layer("GRU", backend, rng)
    x = rng.standard_normal((4, 1, 5)).astype(np.float32)
    stream = layer.stream()
    stream(x[:2])
    state = stream.state
    other = make_layer("GRU", backend, rng)
    layer.load_state_dict(other.state_dict())
    expected, _ = other(x[2:], state)
    np.testing.assert_allclose(stream(x[2:]), expected, **CHUNKED)


def test_thread_count_changes_between_steps(backend, rng, monkeypatch, restore_threads):
    """Steps bound at one thread count (the direct kernel call) keep working after
    set_num_threads changes the team: the stream rebinds and gives the same numbers."""
    from fastlstm import cython_glue
    monkeypatch.setattr(cython_glue, "_MIN_FLOPS_PER_THREAD_STEP", 1)  # 2 threads even here
    layer = make_layer("LSTM", backend, rng, hidden_size=37)
    x = rng.standard_normal((8, 1, 5)).astype(np.float32)
    expected_out, expected_state = whole(layer, x)
    stream = layer.stream()
    outputs = []
    for t, threads in enumerate([1, 1, 2, 2, 1, 2, 2, 1]):
        fastlstm.set_num_threads(threads)
        outputs.append(stream(x[t:t + 1]))
    np.testing.assert_allclose(np.concatenate(outputs), expected_out, **CHUNKED)
    assert_state_close(stream.state, expected_state, CHUNKED)


def test_steady_steps_call_the_kernel_directly(rng):
    """A one-layer Cython stream learns its single kernel call: the kernels' DirectCall then
    takes float32 chunks of that shape, with the results of the checked path."""
    if "cython" not in fastlstm.available_backends():
        pytest.skip("the direct call is the Cython engine's")
    stream = make_layer("LSTM", "cython", rng).stream()
    x = rng.standard_normal((1, 5)).astype(np.float32)
    expected = np.concatenate([stream(x), stream(x)])
    stream.reset()
    first = stream._direct(x)  # the C path takes the learned shape from the first call on
    assert first is not None
    np.testing.assert_array_equal(np.concatenate([first, stream._direct(x)]), expected)
    assert stream._direct(x.astype(np.float64)) is None  # the Python path converts it
    assert stream._direct(np.ones((2, 5), np.float32)) is None  # another shape
    stacked = make_layer("LSTM", "cython", rng, num_layers=2).stream()
    stacked(x)
    stacked(x)
    assert stacked._direct(x) is None  # two kernel calls a step: the runner


def test_many_chunk_shapes(backend, rng):
    """More distinct chunk sizes than the stream keeps buffers for: still exact."""
    layer = make_layer("LSTM", backend, rng)
    sizes = list(range(1, 45))
    n_steps = sum(sizes)
    x = rng.standard_normal((n_steps, 1, 5)).astype(np.float32)
    expected, _ = layer(x)
    stream = layer.stream()
    got = feed(stream, x, chunks_of(sizes, n_steps), 0)
    np.testing.assert_allclose(got, expected, **CHUNKED)


def _resident_bytes():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_resident_memory_flat_over_many_steps(backend, rng):
    layer = make_layer("LSTM", backend, rng, input_size=16, hidden_size=32)
    stream = layer.stream()
    x = rng.standard_normal((1, 1, 16)).astype(np.float32)
    buffer = np.empty((1, 1, 32), np.float32)
    for _ in range(2000):  # warm-up: buffers, JIT, allocator pools
        stream(x)
        stream(x, out=buffer)
    before = _resident_bytes()
    for _ in range(10000):
        stream(x)
        stream(x, out=buffer)
    grown = _resident_bytes() - before
    assert grown < 1 << 20, f"resident memory grew by {grown} bytes over 20,000 steps"


def test_without_the_cython_kernels_the_python_guard_serves(backend, rng, monkeypatch):
    """Where DirectCall is not built, the stream's guard is streaming._Guard: every call
    takes the Python path, with the same numbers and the same one-caller rule."""
    from fastlstm import streaming
    monkeypatch.setattr(streaming, "_direct_call", lambda layer: streaming._Guard())
    layer = make_layer("LSTM", backend, rng)
    x = rng.standard_normal((6, 1, 5)).astype(np.float32)
    expected_out, expected_state = whole(layer, x)
    stream = layer.stream()
    assert isinstance(stream._direct, streaming._Guard)
    outputs = [stream(x[t:t + 1]) for t in range(6)]
    np.testing.assert_allclose(np.concatenate(outputs), expected_out, **CHUNKED)
    assert_state_close(stream.state, expected_state, CHUNKED)
    assert stream._direct(x[:1]) is None
    assert stream._direct.enter()  # as if another thread were inside a call
    with pytest.raises(RuntimeError, match="another thread"):
        stream(x[:1])
    stream._direct.leave()
    stream(x[:1])
