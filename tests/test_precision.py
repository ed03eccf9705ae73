"""bf16 and int8 weights.

The references are independent of fastlstm's own conversion code: bf16
rounding is torch's ``Tensor.to(torch.bfloat16)``; int8 is the symmetric
per-row formula written out below.  Reduced weights multiply a layer's input x
as the sum of its two leading bf16 parts (``two_bf16_parts``, 16 significant
bits), so the references are given that input.  bf16 layers must match PyTorch
fp32 run on the rounded weights to 1e-5 (only weights and x are reduced; the
inputs of deeper layers are rounded the same way, a change of at most 2^-17
relative that the tolerance covers).  int8 layers also
quantize the recurrent input h per row and step (symmetric, scale max|h|/127),
so they are checked against ``int8_reference`` below, a float64 loop written
from those equations, to 1e-5.
"""

import numpy as np
import pytest
import torch

import fastlstm
from fastlstm import cython_glue
from fastlstm.kernels import cython_isa
from fastlstm.precision import bf16_bits, bf16_to_float32, int8_rows

ATOL = 1e-5  # vs PyTorch fp32 on the same rounded weights
ISA_ATOL = {"fp32": 1e-6, "bf16": 1e-6,  # AVX-512 vs AVX2 vs baseline kernels
            # int8 quantizes h every step: a last-bit difference between builds
            # (the baseline build has no FMA) can move one value across a rounding
            # boundary of the int8 grid, a change of up to ~max|h|/127 * |w|
            "int8": 2e-3}


def torch_bf16(weight):
    return torch.from_numpy(weight).to(torch.bfloat16).to(torch.float32).numpy()


def reference_int8(weight):
    """Symmetric per-output-row int8: scale = max|row| / 127, q = round(w / scale)."""
    scale = np.abs(weight).max(axis=1, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    return np.clip(np.rint(weight / scale), -127, 127) * scale


ROUNDERS = {"bf16": torch_bf16, "int8": reference_int8}


def two_bf16_parts(x):
    """float32 x -> hi + lo with hi = x rounded to bf16 and lo = (x - hi) rounded to
    bf16: the input values bf16 and int8 weights multiply."""
    x = np.asarray(x, dtype=np.float32)
    hi = torch_bf16(x)
    return hi + torch_bf16(x - hi)


def quantized(h):
    """h rounded to the int8 grid of its own max: what the int8 recurrent product sees."""
    peak = np.abs(h).max()
    scale = peak / 127.0 if peak > 0 else 1.0
    return np.clip(np.rint(h / scale), -127, 127) * scale


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def int8_step(mode, weights, x, h, c, linear_before_reset=True):
    """One step of one sequence, float64, with int8-rounded weights and quantized h."""
    w_ih, w_hh = (reference_int8(weights[k]).astype(np.float64) for k in ("w_ih", "w_hh"))
    gx = w_ih @ x + weights["b_ih"]
    hq = quantized(h)
    hidden = c.shape[0] if c is not None else h.shape[0]
    if mode == "LSTM":
        g = gx + w_hh @ hq + weights["b_hh"]
        i, f, gg, o = np.split(g, 4)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(gg)
        full = sigmoid(o) * np.tanh(c)
        if weights.get("w_hr") is not None:
            return reference_int8(weights["w_hr"]).astype(np.float64) @ full, c
        return full, c
    if mode == "GRU":
        if linear_before_reset:
            gh = w_hh @ hq + weights["b_hh"]
            r = sigmoid(gx[:hidden] + gh[:hidden])
            z = sigmoid(gx[hidden:2 * hidden] + gh[hidden:2 * hidden])
            n = np.tanh(gx[2 * hidden:] + r * gh[2 * hidden:])
        else:
            gh = w_hh[:2 * hidden] @ hq + weights["b_hh"][:2 * hidden]
            r = sigmoid(gx[:hidden] + gh[:hidden])
            z = sigmoid(gx[hidden:2 * hidden] + gh[hidden:])
            n = np.tanh(gx[2 * hidden:] + w_hh[2 * hidden:] @ (r * h) + weights["b_hh"][2 * hidden:])
        return (1 - z) * n + z * h, None
    pre = gx + w_hh @ hq + weights["b_hh"]
    return (np.maximum(pre, 0) if mode == "RNN_RELU" else np.tanh(pre)), None


def int8_reference(mode, state, num_layers, bidirectional, x, lengths, hidden, proj=0, **variant):
    """out (T, B, D*H_out) of an int8 layer, each sequence run alone (rows are independent)."""
    steps, batch = x.shape[:2]
    directions = ("", "_reverse") if bidirectional else ("",)
    hidden_out = proj or hidden
    layer_input = x.astype(np.float64)
    for layer in range(num_layers):
        layer_input = two_bf16_parts(layer_input.astype(np.float32)).astype(np.float64)
        out = np.zeros((steps, batch, len(directions) * hidden_out))
        for d, suffix in enumerate(directions):
            tag = f"_l{layer}{suffix}"
            weights = {"w_ih": state[f"weight_ih{tag}"], "w_hh": state[f"weight_hh{tag}"],
                       "b_ih": state.get(f"bias_ih{tag}", 0.0), "b_hh": state.get(f"bias_hh{tag}", 0.0),
                       "w_hr": state.get(f"weight_hr{tag}")}
            for b in range(batch):
                h, c = np.zeros(hidden_out), (np.zeros(hidden) if mode == "LSTM" else None)
                order = range(lengths[b]) if d == 0 else reversed(range(lengths[b]))
                for t in order:
                    h, c = int8_step(mode, weights, layer_input[t, b], h, c, **variant)
                    out[t, b, d * hidden_out:(d + 1) * hidden_out] = h
        layer_input = out
    return layer_input


def rounded_module(module, precision):
    """A copy of ``module`` whose weight matrices hold ``precision``-rounded values."""
    copy = type(module)(**{name: getattr(module, name) for name in (
        ["input_size", "hidden_size", "bias"]
        + (["num_layers", "batch_first", "bidirectional"] if hasattr(module, "num_layers") else [])
        + (["proj_size"] if isinstance(module, torch.nn.LSTM) else [])
        + (["nonlinearity"] if isinstance(module, (torch.nn.RNN, torch.nn.RNNCell)) else []))})
    state = {key: (torch.from_numpy(ROUNDERS[precision](value.numpy()).astype(np.float32))
                   if value.ndim == 2 else value)
             for key, value in module.state_dict().items()}
    copy.load_state_dict(state)
    return copy


def test_bf16_rounding_is_round_to_nearest_even_like_torch(rng):
    weights = rng.normal(size=(129, 37)).astype(np.float32) * 10.0 ** rng.integers(-6, 6, size=(129, 1))
    # ties: values exactly halfway between two bfloat16 numbers
    ties = (np.arange(1, 64, dtype=np.uint32) << 16 | 0x8000).view(np.float32)
    for values in (weights, ties[None]):
        assert np.array_equal(bf16_to_float32(bf16_bits(values)), torch_bf16(values))


def test_int8_rows_match_the_formula(rng):
    weights = rng.normal(size=(17, 37)).astype(np.float32)
    weights[3] = 0.0
    q, scale = int8_rows(weights)
    assert q.dtype == np.int8 and scale.dtype == np.float32
    assert np.abs(q).max() <= 127 and np.all(np.abs(q[np.arange(17) != 3]).max(axis=1) == 127)
    np.testing.assert_allclose(q * scale[:, None], reference_int8(weights), atol=1e-7, rtol=0)


CASES = [
    # mode, kwargs for torch and fastlstm, I, H
    ("LSTM", {}, 3, 1),
    ("LSTM", dict(num_layers=2, bidirectional=True), 17, 37),
    ("LSTM", dict(proj_size=5), 17, 37),
    ("LSTM", dict(batch_first=True), 129, 17),
    ("GRU", dict(num_layers=2), 37, 17),
    ("GRU", dict(bidirectional=True), 3, 129),
    ("RNN", dict(nonlinearity="relu"), 17, 3),
    ("RNN", dict(bias=False), 37, 37),
]


@pytest.mark.parametrize("precision", ["bf16"])
@pytest.mark.parametrize("mode, kwargs, input_size, hidden_size", CASES)
def test_layer_matches_torch_on_rounded_weights(mode, kwargs, input_size, hidden_size, precision, rng):
    torch.manual_seed(int(rng.integers(1 << 30)))
    module = getattr(torch.nn, mode)(input_size, hidden_size, **kwargs)
    batch, steps = 3, 7
    shape = (batch, steps, input_size) if kwargs.get("batch_first") else (steps, batch, input_size)
    x = rng.normal(size=shape).astype(np.float32)
    lengths = np.array([7, 1, 4])
    with torch.inference_mode():
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            torch.from_numpy(two_bf16_parts(x)), torch.from_numpy(lengths),
            batch_first=bool(kwargs.get("batch_first")),
            enforce_sorted=False)
        out, state = rounded_module(module, precision)(packed)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=bool(kwargs.get("batch_first")),
                                                        total_length=steps)
    layer = getattr(fastlstm, mode).from_torch(module, precision=precision)
    assert layer.precision == precision and layer.backend_name == "cython"
    got, got_state = layer(x, lengths=lengths)
    np.testing.assert_allclose(got, out.numpy(), atol=ATOL, rtol=0)
    for got_part, ref_part in zip(got_state if mode == "LSTM" else (got_state,),
                                  state if mode == "LSTM" else (state,)):
        np.testing.assert_allclose(got_part, ref_part.numpy(), atol=ATOL, rtol=0)


@pytest.mark.parametrize("mode, kwargs, input_size, hidden_size", CASES)
def test_int8_layer_matches_the_quantized_reference(mode, kwargs, input_size, hidden_size, rng):
    torch.manual_seed(int(rng.integers(1 << 30)))
    module = getattr(torch.nn, mode)(input_size, hidden_size, **kwargs)
    state = {key: value.numpy().astype(np.float64) for key, value in module.state_dict().items()}
    batch, steps = 3, 7
    x = rng.normal(size=(steps, batch, input_size)).astype(np.float32)
    lengths = np.array([7, 1, 4])
    layer = getattr(fastlstm, mode).from_torch(module, precision="int8")
    given = x.transpose(1, 0, 2) if kwargs.get("batch_first") else x
    got = layer(given, lengths=lengths)[0]
    got = got.transpose(1, 0, 2) if kwargs.get("batch_first") else got
    kernel_mode = mode if mode != "RNN" else ("RNN_RELU" if kwargs.get("nonlinearity") == "relu" else "RNN_TANH")
    ref = int8_reference(kernel_mode, state, kwargs.get("num_layers", 1), kwargs.get("bidirectional", False),
                         x, lengths, hidden_size, kwargs.get("proj_size", 0))
    np.testing.assert_allclose(got, ref, atol=ATOL, rtol=0)


def test_int8_original_gru_matches_the_quantized_reference(rng):
    layer = fastlstm.GRU(17, 37, backend="cython", precision="int8", linear_before_reset=False)
    layer.load_state_dict({key: rng.uniform(-0.2, 0.2, value.shape).astype(np.float32)
                           for key, value in layer.state_dict().items()})
    state = {key: value.astype(np.float64) for key, value in layer.state_dict().items()}
    x = rng.normal(size=(7, 3, 17)).astype(np.float32)
    lengths = np.array([3, 7, 5])
    ref = int8_reference("GRU", state, 1, False, x, lengths, 37, linear_before_reset=False)
    np.testing.assert_allclose(layer(x, lengths=lengths)[0], ref, atol=ATOL, rtol=0)


def test_int8_paths_are_identical(rng, monkeypatch):
    """vpdpbusd (AVX512-VNNI) and the portable path compute the same integer sums;
    a sequence alone or in a batch differs only by fp32 rounding (the float input
    projection sums in another order for a one-row tile)."""
    layer = fastlstm.LSTM(37, 129, num_layers=2, bidirectional=True, backend="cython", precision="int8")
    layer.load_state_dict({key: rng.uniform(-0.1, 0.1, value.shape).astype(np.float32)
                           for key, value in layer.state_dict().items()})
    x = rng.normal(size=(9, 6, 37)).astype(np.float32)
    lengths = np.array([9, 2, 1, 9, 5, 3])
    monkeypatch.setattr(cython_glue, "_USE_VNNI", True)
    fast = layer(x, lengths=lengths)[0]
    monkeypatch.setattr(cython_glue, "_USE_VNNI", False)
    assert np.array_equal(layer(x, lengths=lengths)[0], fast)
    alone = layer(x[:, :1])[0]
    np.testing.assert_allclose(alone, fast[:, :1], atol=ISA_ATOL["int8"], rtol=0)


@pytest.mark.parametrize("precision", ["bf16"])
@pytest.mark.parametrize("cell_class", ["LSTMCell", "GRUCell", "RNNCell"])
def test_cell_matches_torch_on_rounded_weights(cell_class, precision, rng):
    torch.manual_seed(int(rng.integers(1 << 30)))
    module = getattr(torch.nn, cell_class)(17, 37)
    x = rng.normal(size=(3, 17)).astype(np.float32)
    with torch.inference_mode():
        ref = rounded_module(module, precision)(torch.from_numpy(two_bf16_parts(x)))
    got = getattr(fastlstm, cell_class).from_torch(module, precision=precision)(x)
    for got_part, ref_part in zip(got if cell_class == "LSTMCell" else (got,),
                                  ref if cell_class == "LSTMCell" else (ref,)):
        np.testing.assert_allclose(got_part, ref_part.numpy(), atol=ATOL, rtol=0)


@pytest.mark.parametrize("precision", ["bf16"])
@pytest.mark.parametrize("variant", [dict(peephole=True, coupled_input_forget=True, clip=0.4),
                                     dict(linear_before_reset=False, clip=0.3)])
def test_variants_in_reduced_precision(variant, precision, rng):
    """The variants' extra terms stay fp32: an fp32 layer loaded with the rounded
    weights (the fp32 path is checked against onnxruntime elsewhere) must agree."""
    mode = "GRU" if "linear_before_reset" in variant else "LSTM"
    reduced = getattr(fastlstm, mode)(17, 37, num_layers=2, bidirectional=True, backend="cython",
                                      precision=precision, **variant)
    state = {key: (rng.normal(size=value.shape) if key.startswith("weight_peephole")
                   else rng.uniform(-0.2, 0.2, value.shape)).astype(np.float32)
             for key, value in reduced.state_dict().items()}
    reduced.load_state_dict(state)
    rounded = {key: (ROUNDERS[precision](value).astype(np.float32)
                     if value.ndim == 2 and not key.startswith("weight_peephole") else value)
               for key, value in state.items()}
    reference = getattr(fastlstm, mode)(17, 37, num_layers=2, bidirectional=True, backend="cython",
                                        **variant).load_state_dict(rounded)
    x = rng.normal(size=(7, 3, 17)).astype(np.float32)
    lengths = np.array([2, 7, 5])
    np.testing.assert_allclose(reduced(x, lengths=lengths)[0],
                               reference(two_bf16_parts(x), lengths=lengths)[0], atol=ATOL, rtol=0)


def test_with_precision_converts_a_copy(rng):
    layer = fastlstm.LSTM(17, 37, num_layers=2, backend="cython")
    layer.load_state_dict({key: rng.uniform(-0.2, 0.2, value.shape).astype(np.float32)
                           for key, value in layer.state_dict().items()})
    x = rng.normal(size=(5, 2, 17)).astype(np.float32)
    before = layer(x)[0]
    fast = layer.with_precision("int8")
    assert fast is not layer and fast.precision == "int8" and layer.precision == "fp32"
    assert np.array_equal(layer(x)[0], before)
    assert not np.array_equal(fast(x)[0], before)
    for key, value in layer.state_dict().items():  # the weights as loaded, not the rounded ones
        assert np.array_equal(fast.state_dict()[key], value)
    back = fast.with_precision("fp32")
    assert np.array_equal(back(x)[0], before)


def test_precision_errors():
    with pytest.raises(ValueError, match="precision"):
        fastlstm.LSTM(3, 4, precision="fp16")
    with pytest.raises(ValueError, match="numba.*cython"):
        fastlstm.GRU(3, 4, backend="numba", precision="bf16")
    with pytest.raises(ValueError, match="numba.*cython"):
        fastlstm.LSTM(3, 4, backend="numba").with_precision("int8")
    assert fastlstm.RNN(3, 4, precision="int8").backend_name == "cython"


def test_load_with_precision(tmp_path, rng):
    torch.manual_seed(int(rng.integers(1 << 30)))
    module = torch.nn.LSTM(17, 37)
    path = tmp_path / "lstm.pt"
    torch.save(module.state_dict(), path)
    layer = fastlstm.load(str(path), precision="bf16")
    assert fastlstm.load(str(path), precision="int8").precision == "int8"
    x = rng.normal(size=(7, 2, 17)).astype(np.float32)
    with torch.inference_mode():
        ref = rounded_module(module, "bf16")(torch.from_numpy(two_bf16_parts(x)))[0].numpy()
    assert layer.precision == "bf16"
    np.testing.assert_allclose(layer(x)[0], ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_portable_kernels_agree_with_the_fastest(precision, rng, monkeypatch):
    """The AVX2 and baseline builds run the same precision with the same results up
    to fp32 rounding, so a CPU without AVX-512 (or without AVX512-BF16/VNNI) gets
    the same answers.  Run here by swapping the kernel module the glue uses."""
    layer = fastlstm.LSTM(37, 129, num_layers=2, bidirectional=True, backend="cython", precision=precision)
    gru = fastlstm.GRU(17, 37, backend="cython", precision=precision, linear_before_reset=False)
    for module in (layer, gru):
        module.load_state_dict({key: rng.uniform(-0.1, 0.1, value.shape).astype(np.float32)
                                for key, value in module.state_dict().items()})
    x = rng.normal(size=(6, 5, 37)).astype(np.float32)
    lengths = np.array([6, 1, 3, 6, 2])
    best = (layer(x, lengths=lengths)[0], gru(x[..., :17])[0])
    supported = [isa for isa in ("avx2", "generic") if _importable(isa)]
    assert "generic" in supported
    for isa in supported:
        monkeypatch.setattr(cython_glue, "_kernels", _module(isa))
        monkeypatch.setattr(cython_glue, "_local", type(cython_glue._local)())
        np.testing.assert_allclose(layer(x, lengths=lengths)[0], best[0], atol=ISA_ATOL[precision], rtol=0)
        np.testing.assert_allclose(gru(x[..., :17])[0], best[1], atol=ISA_ATOL[precision], rtol=0)


def _module(isa):
    import importlib
    return importlib.import_module(f"fastlstm.kernels._cy_{isa}")


def _importable(isa):
    generic = _module("generic")
    return {"avx2": generic.cpu_supports_avx2(), "generic": True}[isa]


def test_isa_cap_from_environment(monkeypatch):
    monkeypatch.setenv("FASTLSTM_ISA", "generic")
    assert cython_isa.load().ISA == "generic"
    monkeypatch.setenv("FASTLSTM_ISA", "sse9")
    with pytest.raises(ValueError, match="FASTLSTM_ISA"):
        cython_isa.load()
