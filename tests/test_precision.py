"""bf16 and int8 weights.

The references are independent of fastlstm's own conversion code: bf16
rounding is torch's ``Tensor.to(torch.bfloat16)``; int8 is the symmetric
per-row formula written out below.  bf16 weights multiply a layer's input x
rounded to bf16 in calls of 16 or more sequences, else as the sum of its two
leading bf16 parts; int8 weights multiply x quantized per row (symmetric, scale
max|x|/127) (``multiplied_input``).  The recurrent input h is reduced per step:
bf16 rounds it to bf16, int8 quantizes it per row (symmetric, scale max|h|/127).
In calls of 16 or more sequences int8 quantizes x and h to 7 bits (max/63).  ``reduced_reference`` is a float64 loop written from those
equations (with ONNX's variant terms), fed fastlstm's h of each step before
(teacher forcing), checked to 1e-5.  A single step from a zero state reduces
nothing but weights and x, so cells are also checked against PyTorch fp32 on the
rounded weights.
"""

import re

import numpy as np
import pytest
import torch

import fastlstm
from fastlstm import cython_glue
from fastlstm.kernels import cython_isa
from fastlstm.precision import bf16_bits, bf16_to_float32, int8_rows

ATOL = 1e-5  # vs PyTorch fp32 on the same rounded weights
ISA_ATOL = {"fp32": 1e-6,  # AVX-512 vs AVX2 vs baseline kernels
            # bf16 rounds and int8 quantizes h every step: a last-bit difference
            # between builds (the baseline build has no FMA) can move one value across
            # a rounding boundary, a change of up to ~max|h|/127 * |w| for int8
            "bf16": 2e-3, "int8": 2e-3}


def torch_bf16(weight):
    return torch.from_numpy(weight).to(torch.bfloat16).to(torch.float32).numpy()


def reference_int8(weight):
    """Symmetric per-output-row int8 in float32 arithmetic (fp32 scales, so a rounding
    tie is decided as in float32): scale = max|row| / 127, q = round(w / scale)."""
    weight = np.asarray(weight, dtype=np.float32)
    scale = np.abs(weight).max(axis=1, keepdims=True) / np.float32(127)
    scale[scale == 0] = 1.0
    return (np.clip(np.rint(weight / scale), -127, 127) * scale).astype(np.float64)


ROUNDERS = {"bf16": torch_bf16, "int8": reference_int8}


ONE_PART_BATCH = 16  # the README: x is rounded to bf16 in calls of 16 or more sequences
SEVEN_BIT_BATCH = 16  # the README: int8 quantizes x and h to 7 bits from 16 sequences


def int8_levels(batch):
    """The largest |q| of int8's quantized x and h in a call of ``batch`` sequences."""
    return 63 if batch >= SEVEN_BIT_BATCH else 127


def two_bf16_parts(x):
    """float32 x -> hi + lo with hi = x rounded to bf16 and lo = (x - hi) rounded to
    bf16."""
    x = np.asarray(x, dtype=np.float32)
    hi = torch_bf16(x)
    return hi + torch_bf16(x - hi)


def multiplied_input(x, batch, precision):
    """float32 x (..., I) -> the input values ``precision`` weights multiply in a call of
    ``batch`` sequences: bf16's, x rounded to bf16 from ONE_PART_BATCH sequences, else
    two_bf16_parts; int8's, each row quantized on its own (``quantized``)."""
    x = np.asarray(x, dtype=np.float32)
    if precision == "int8":
        return np.apply_along_axis(quantized, -1, x, int8_levels(batch))
    return torch_bf16(x) if batch >= ONE_PART_BATCH else two_bf16_parts(x)


def quantized(h, levels=127):
    """h on the int8 grid of its own max, in float32 arithmetic as specified for the
    kernels (so a rounding tie is decided the same way): scale = max|h| / levels,
    q = rint(h * (1 / scale)) clipped to [-levels, levels]; q * scale as float64."""
    h = np.asarray(h, dtype=np.float32)
    peak = np.abs(h).max()
    scale = peak / np.float32(levels) if peak > 0 else np.float32(1)
    q = np.clip(np.rint(h * (np.float32(1) / scale)), -levels, levels)
    return q.astype(np.float64) * np.float64(scale)


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def bf16_h(h):
    """h as the bf16 recurrent product sees it: its float32 value rounded to bf16."""
    return torch_bf16(np.asarray(h, dtype=np.float32)).astype(np.float64)


def reduced_h(precision, h, batch):
    """h as the recurrent product of a ``precision`` layer multiplies it in a call of
    ``batch`` sequences."""
    return bf16_h(h) if precision == "bf16" else quantized(h, int8_levels(batch))


def direction_weights(state, tag=""):
    """reduced_step's weights of the direction ``tag`` (e.g. "_l0", "_l1_reverse"; "" for
    a cell) of a float64 state dict; absent biases 0, absent projection None."""
    return {"w_ih": state[f"weight_ih{tag}"], "w_hh": state[f"weight_hh{tag}"],
            "b_ih": state.get(f"bias_ih{tag}", 0.0), "b_hh": state.get(f"bias_hh{tag}", 0.0),
            "w_hr": state.get(f"weight_hr{tag}")}


def reduced_step(precision, mode, weights, x, h, c, peephole=None, coupled_input_forget=False,
                 clip=None, linear_before_reset=True, batch=1):
    """One step of one sequence of a call of ``batch``, float64: weight matrices rounded to
    ``precision`` and the recurrent product's h reduced per step (reduced_h).  ONNX's variants:
    peephole (3, H) rows i, f, o on c; f = 1 - i; pre-activations clipped to
    [-clip, clip].  The original GRU's r * h and the projection's input stay unrounded."""
    w_ih, w_hh = (ROUNDERS[precision](weights[k]).astype(np.float64) for k in ("w_ih", "w_hh"))
    gx = w_ih @ x + weights["b_ih"]
    hr = reduced_h(precision, h, batch)
    hidden = c.shape[0] if c is not None else h.shape[0]

    def bound(v):
        return v if clip is None else np.clip(v, -clip, clip)

    if mode == "LSTM":
        pi, pf, pg, po = np.split(gx + w_hh @ hr + weights["b_hh"], 4)
        p_i, p_f, p_o = peephole if peephole is not None else np.zeros((3, 1))
        i = sigmoid(bound(pi + p_i * c))
        f = 1 - i if coupled_input_forget else sigmoid(bound(pf + p_f * c))
        c = f * c + i * np.tanh(bound(pg))
        full = sigmoid(bound(po + p_o * c)) * np.tanh(c)
        if weights.get("w_hr") is not None:
            return ROUNDERS[precision](weights["w_hr"]).astype(np.float64) @ full, c
        return full, c
    if mode == "GRU":
        b_hh = np.broadcast_to(weights["b_hh"], (3 * hidden,))
        gh = w_hh[:2 * hidden] @ hr + b_hh[:2 * hidden]
        r = sigmoid(bound(gx[:hidden] + gh[:hidden]))
        z = sigmoid(bound(gx[hidden:2 * hidden] + gh[hidden:]))
        if linear_before_reset:
            pn = gx[2 * hidden:] + r * (w_hh[2 * hidden:] @ hr + b_hh[2 * hidden:])
        else:
            pn = gx[2 * hidden:] + w_hh[2 * hidden:] @ (r * h) + b_hh[2 * hidden:]
        n = np.tanh(bound(pn))
        return (1 - z) * n + z * h, None
    pre = bound(gx + w_hh @ hr + weights["b_hh"])
    return (np.maximum(pre, 0) if mode == "RNN_RELU" else np.tanh(pre)), None


def reduced_reference(precision, mode, state, x, lengths, hidden, outputs, bidirectional=False,
                      proj=0, **variant):
    """Each layer's out (T, B, D*H_out) of a ``precision`` layer (float64 state dict
    ``state``, x (T, B, I)), each sequence run alone, teacher-forced: ``outputs`` holds
    the layer's own outputs of every layer (layer l's from a copy of its first l + 1
    layers, ``layer_outputs``), and the reference's step t takes fastlstm's h of the step
    before and its layer input.  Rounding h makes a last-bit difference of h jump by a
    bf16 step (or an int8 one) where it straddles a rounding boundary, and without
    forcing such a jump would carry on through the rest of the sequence."""
    steps, batch = x.shape[:2]
    directions = ("", "_reverse") if bidirectional else ("",)
    hidden_out = proj or hidden
    layer_input, references = x, []
    for layer, forced in enumerate(outputs):
        layer_input = multiplied_input(layer_input, batch, precision).astype(np.float64)
        out = np.zeros((steps, batch, len(directions) * hidden_out))
        for d, suffix in enumerate(directions):
            tag = f"_l{layer}{suffix}"
            weights = direction_weights(state, tag)
            columns = slice(d * hidden_out, (d + 1) * hidden_out)
            for b in range(batch):
                c = np.zeros(hidden) if mode == "LSTM" else None
                order = list(range(lengths[b]) if d == 0 else reversed(range(lengths[b])))
                for previous, t in zip([None] + order, order):
                    h = (np.zeros(hidden_out) if previous is None
                         else forced[previous, b, columns].astype(np.float64))
                    out[t, b, columns], c = reduced_step(
                        precision, mode, weights, layer_input[t, b], h, c,
                        peephole=state.get(f"weight_peephole{tag}"), batch=batch, **variant)
        references.append(out)
        layer_input = forced
    return references


def layer_outputs(mode, input_size, hidden_size, kwargs, state, precision, x, lengths, top,
                  **variant):
    """fastlstm's outputs (T, B, D*H_out) of every layer on x (T, B, I): layer l's from a
    layer of l + 1 layers loaded with the first l + 1 layers' weights, the top one
    ``top`` (the whole layer's)."""
    num_layers = kwargs.get("num_layers", 1)
    outputs = []
    for n in range(1, num_layers):
        layer = getattr(fastlstm, mode)(input_size, hidden_size, backend="cython", precision=precision,
                                        **{**kwargs, "num_layers": n, "batch_first": False},
                                        **variant)
        layer.load_state_dict({key: value.astype(np.float32) for key, value in state.items()
                               if int(re.search(r"_l(\d+)", key).group(1)) < n})
        outputs.append(layer(x, lengths=lengths)[0])
    return outputs + [top]


def assert_matches_reduced_reference(precision, mode, state, x, lengths, hidden, outputs,
                                     bidirectional=False, proj=0, **variant):
    references = reduced_reference(precision, mode, state, x, lengths, hidden, outputs,
                                   bidirectional, proj, **variant)
    for got, expected in zip(outputs, references):
        np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)


def kernel_mode(mode, kwargs):
    """The reference's mode name for a torch module type and its kwargs."""
    if mode != "RNN":
        return mode
    return "RNN_RELU" if kwargs.get("nonlinearity") == "relu" else "RNN_TANH"


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


def float64_state(layer):
    """A fastlstm layer's or torch module's state dict as float64 numpy arrays."""
    return {key: np.asarray(value, dtype=np.float64) for key, value in layer.state_dict().items()}


@pytest.mark.parametrize("precision", ["bf16", "int8"])
@pytest.mark.parametrize("mode, kwargs, input_size, hidden_size", CASES)
def test_layer_matches_the_reduced_reference(mode, kwargs, input_size, hidden_size, precision, rng):
    torch.manual_seed(int(rng.integers(1 << 30)))
    module = getattr(torch.nn, mode)(input_size, hidden_size, **kwargs)
    state = float64_state(module)
    batch, steps = 3, 7
    x = rng.normal(size=(steps, batch, input_size)).astype(np.float32)
    lengths = np.array([7, 1, 4])
    layer = getattr(fastlstm, mode).from_torch(module, precision=precision)
    assert layer.precision == precision and layer.backend_name == "cython"
    given = x.transpose(1, 0, 2) if kwargs.get("batch_first") else x
    got = layer(given, lengths=lengths)[0]
    got = got.transpose(1, 0, 2) if kwargs.get("batch_first") else got
    outputs = layer_outputs(mode, input_size, hidden_size, kwargs, state, precision, x, lengths, got)
    assert_matches_reduced_reference(precision, kernel_mode(mode, kwargs), state, x, lengths, hidden_size,
                                     outputs, kwargs.get("bidirectional", False), kwargs.get("proj_size", 0))


@pytest.mark.parametrize("batch", [6, 19])
@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN"])
def test_int8_paths_are_identical(mode, batch, rng, monkeypatch):
    """The integer product (vpdpbusd with AVX512-VNNI, vpmaddubsw by the sign trick on the
    AVX2 build, or without it on the 7-bit grid of 16 or more sequences) and the portable
    path compute the same integer sums.  Batches of 6 (or 19) down to 1 rows take every
    row tile of both paths."""
    if cython_glue.ISA == "avx2":  # every CPU that runs it has the integer path
        assert cython_glue._kernels.cpu_supports_vnni()
    layer = getattr(fastlstm, mode)(37, 129, num_layers=2, bidirectional=True, backend="cython",
                                    precision="int8")
    layer.load_state_dict({key: rng.uniform(-0.1, 0.1, value.shape).astype(np.float32)
                           for key, value in layer.state_dict().items()})
    x = rng.normal(size=(9, batch, 37)).astype(np.float32)
    lengths = np.resize([9, 2, 1, 9, 5, 3], batch)
    monkeypatch.setattr(cython_glue, "_USE_VNNI", True)
    fast = layer(x, lengths=lengths)[0]
    monkeypatch.setattr(cython_glue, "_USE_VNNI", False)
    assert np.array_equal(layer(x, lengths=lengths)[0], fast)
    if batch < SEVEN_BIT_BATCH:  # alone, the same grid: fp32 rounding apart
        alone = layer(x[:, :1])[0]
        np.testing.assert_allclose(alone, fast[:, :1], atol=ISA_ATOL["int8"], rtol=0)


def assert_cell_step_matches_reduced_step(cell_class, precision, batch, hidden, rng):
    """One step of a ``precision`` cell (17 inputs, ``hidden`` units, from a torch cell)
    on ``batch`` rows from a given state, against reduced_step row by row to ATOL.
    Returns the torch cell, the fastlstm cell, x and the mode for further checks."""
    torch.manual_seed(int(rng.integers(1 << 30)))
    module = getattr(torch.nn, cell_class)(17, hidden)
    x = rng.normal(size=(batch, 17)).astype(np.float32)
    h = rng.uniform(-1, 1, size=(batch, hidden)).astype(np.float32)
    c = rng.normal(size=(batch, hidden)).astype(np.float32)
    cell = getattr(fastlstm, cell_class).from_torch(module, precision=precision)
    got = cell(x, (h, c)) if cell_class == "LSTMCell" else cell(x, h)
    state = float64_state(module)
    weights = direction_weights(state)
    mode = cell_class[:-len("Cell")]
    for row in range(batch):
        ref = reduced_step(precision, kernel_mode(mode, {}), weights,
                           multiplied_input(x[row], batch, precision).astype(np.float64),
                           h[row].astype(np.float64),
                           c[row].astype(np.float64) if mode == "LSTM" else None, batch=batch)
        for got_part, ref_part in zip(got if mode == "LSTM" else (got,), ref):
            np.testing.assert_allclose(got_part[row], ref_part, atol=ATOL, rtol=0)
    return module, cell, x, mode


def _int8_packed_lstm(inputs, hidden, rng):
    """(float32 state dict, the int8 Cython layer's packed layer) of an LSTM with random
    weights."""
    layer = fastlstm.LSTM(inputs, hidden, backend="cython")
    state = {key: rng.uniform(-0.3, 0.3, value.shape).astype(np.float32)
             for key, value in layer.state_dict().items()}
    layer.load_state_dict(state)
    return state, layer.with_precision("int8")._layers[0]


@pytest.mark.parametrize("one_step", [True, False])
@pytest.mark.parametrize("integer_tiles", [True, False])
@pytest.mark.parametrize("rows, inputs", [(1, 1), (3, 17), (17, 3), (37, 129), (129, 37)])
def test_int8_projection_quantizes_each_row_of_x(rows, inputs, integer_tiles, one_step, rng,
                                                 monkeypatch):
    """int8's input projection = each row of x quantized on its own int8 grid @ the int8
    weights + bias, to fp32 rounding: on the integer tiles (wq) and the float path, in
    panels of 32 rows on 2 threads; the columns past the projection's are left alone.
    Rows of one step of ``rows`` sequences (7-bit grid from 16), or of rows steps of one."""
    monkeypatch.setattr(cython_glue, "_USE_VNNI", integer_tiles)
    batch = rows if one_step else 1
    state, packed = _int8_packed_lstm(inputs, 37, rng)
    x = (rng.normal(size=(rows, inputs)) * rng.uniform(0.01, 10, size=(rows, 1))).astype(np.float32)
    columns = packed.w_ih.shape[0] * packed.w_ih.shape[2]
    out = np.full((rows, columns + 3), np.nan, np.float32)
    scratch = cython_glue.ProjectScratch(inputs, 4, 2, int8=True)
    cython_glue.project(4, packed, x, out, 2, scratch, batch)
    expected = (multiplied_input(x, batch, "int8") @ reference_int8(state["weight_ih_l0"]).T
                + state["bias_ih_l0"] + state["bias_hh_l0"])
    unit_rows = cython_glue._blocked_rows(4, 37)
    np.testing.assert_allclose(out[:, :columns][:, unit_rows >= 0],
                               expected[:, unit_rows[unit_rows >= 0]], atol=ATOL, rtol=1e-6)
    assert np.all(out[:, :columns][:, unit_rows < 0] == 0)  # padding units: zero weights, bias
    assert np.isnan(out[:, columns:]).all()


def test_int8_projection_checks_its_scratch_and_integer_weights(rng):
    _, packed = _int8_packed_lstm(37, 17, rng)
    x = rng.normal(size=(5, 37)).astype(np.float32)
    out = np.empty((5, packed.w_ih.shape[0] * packed.w_ih.shape[2]), np.float32)
    kernels = cython_glue._kernels
    need = kernels.q8_scratch_bytes(37)
    scratch = np.zeros((2, need), np.uint8)
    args = (4, packed.w_ih, packed.bias, x, out, 2, 1, packed.scale_ih, None, None, None)
    with pytest.raises(ValueError, match=rf"int8 needs q8_scratch of \(>= 2, >= {need}\) bytes.*got None"):
        kernels.project(*args)
    with pytest.raises(ValueError, match=rf"got \(2, {need - 4}\)"):
        kernels.project(*args, packed.w_ih_q, packed.w_ih_sum, scratch[:, 4:].copy())
    with pytest.raises(ValueError, match=r"got \(1, "):
        kernels.project(*args, packed.w_ih_q, packed.w_ih_sum, scratch[:1].copy())
    with pytest.raises(ValueError, match="wq and wsum go together"):
        kernels.project(*args, packed.w_ih_q, None, scratch)
    with pytest.raises(ValueError, match=r"wq, wsum: expected \(2, 16, 64, 4\) and \(2, 64\)"):
        kernels.project(*args, packed.w_ih_q[:1].copy(), packed.w_ih_sum[:1].copy(), scratch)
    kernels.project(*args, packed.w_ih_q, packed.w_ih_sum, scratch)
    expected = out.copy()
    kernels.project(*args, None, None, scratch)
    np.testing.assert_array_equal(out, expected)  # integer tiles and floats: the same sums


@pytest.mark.parametrize("mode, kwargs, input_size, hidden_size", [
    ("LSTM", dict(num_layers=2, bidirectional=True), 17, 37),
    ("GRU", {}, 37, 17),
    ("GRU", dict(linear_before_reset=False), 3, 37),
])
def test_int8_calls_of_16_or_more_sequences_match_the_reduced_reference(
        mode, kwargs, input_size, hidden_size, rng):
    """From 16 sequences a call, x and h go to int8's 7-bit grid."""
    torch.manual_seed(int(rng.integers(1 << 30)))
    variant = {k: kwargs.pop(k) for k in list(kwargs) if k == "linear_before_reset"}
    module = getattr(torch.nn, mode)(input_size, hidden_size, **kwargs)
    state = float64_state(module)
    x = rng.normal(size=(5, 17, input_size)).astype(np.float32)
    lengths = np.resize([5, 1, 3, 4], 17)
    layer = getattr(fastlstm, mode)(input_size, hidden_size, backend="cython", precision="int8",
                                    **kwargs, **variant)
    layer.load_state_dict({key: value.astype(np.float32) for key, value in state.items()})
    got = layer(x, lengths=lengths)[0]
    outputs = layer_outputs(mode, input_size, hidden_size, kwargs, state, "int8", x, lengths, got,
                            **variant)
    assert_matches_reduced_reference("int8", mode, state, x, lengths, hidden_size, outputs,
                                     kwargs.get("bidirectional", False), **variant)


@pytest.mark.parametrize("batch", [1, 17, 37])
def test_int8_single_steps_match_the_reduced_reference(batch, rng):
    """One-step calls project x block by block just before each block's step (rows
    quantized once, up to 32 of them) or, from 33 rows, all blocks first."""
    torch.manual_seed(int(rng.integers(1 << 30)))
    module = torch.nn.LSTM(17, 37)
    x = rng.normal(size=(1, batch, 17)).astype(np.float32)
    layer = fastlstm.LSTM.from_torch(module, precision="int8")
    h0 = rng.uniform(-1, 1, size=(1, batch, 37)).astype(np.float32)
    got, (h_n, _) = layer(x, (h0, np.zeros_like(h0)))
    state = float64_state(module)
    weights = direction_weights(state, "_l0")
    for row in range(batch):
        ref, _ = reduced_step("int8", "LSTM", weights,
                              multiplied_input(x[0, row], batch, "int8").astype(np.float64),
                              h0[0, row].astype(np.float64), np.zeros(37), batch=batch)
        np.testing.assert_allclose(got[0, row], ref, atol=ATOL, rtol=0)
    np.testing.assert_array_equal(h_n[0], got[0])


@pytest.mark.parametrize("precision", ["bf16", "int8"])
@pytest.mark.parametrize("cell_class", ["LSTMCell", "GRUCell", "RNNCell"])
def test_cell_matches_the_reduced_reference(cell_class, precision, rng):
    module, cell, x, mode = assert_cell_step_matches_reduced_step(cell_class, precision, 3, 37, rng)
    with torch.inference_mode():  # from a zero state only the weights and x are reduced
        zero = rounded_module(module, precision)(
            torch.from_numpy(multiplied_input(x, 3, precision).astype(np.float32)))
    got = cell(x)
    for got_part, ref_part in zip(got if mode == "LSTM" else (got,),
                                  zero if mode == "LSTM" else (zero,)):
        np.testing.assert_allclose(got_part, ref_part.numpy(), atol=ATOL, rtol=0)


@pytest.mark.parametrize("precision", ["bf16", "int8"])
@pytest.mark.parametrize("variant", [dict(peephole=True, coupled_input_forget=True, clip=0.4),
                                     dict(linear_before_reset=False, clip=0.3),
                                     dict(linear_before_reset=False)])
def test_variants_in_reduced_precision(variant, precision, rng):
    """The variants' extra terms stay fp32 (reduced_step)."""
    mode = "GRU" if "linear_before_reset" in variant else "LSTM"
    layer = getattr(fastlstm, mode)(17, 37, num_layers=2, bidirectional=True, backend="cython",
                                    precision=precision, **variant)
    layer.load_state_dict({key: (rng.normal(size=value.shape) if key.startswith("weight_peephole")
                                 else rng.uniform(-0.2, 0.2, value.shape)).astype(np.float32)
                           for key, value in layer.state_dict().items()})
    x = rng.normal(size=(7, 3, 17)).astype(np.float32)
    lengths = np.array([2, 7, 5])
    state = float64_state(layer)
    outputs = layer_outputs(mode, 17, 37, dict(num_layers=2, bidirectional=True), state, precision, x,
                            lengths, layer(x, lengths=lengths)[0], **variant)
    reference_variant = {key: value for key, value in variant.items() if key != "peephole"}
    assert_matches_reduced_reference(precision, mode, state, x, lengths, 37, outputs, True,
                                     **reference_variant)


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
    x = rng.normal(size=(7, 2, 17)).astype(np.float32)
    state = float64_state(module)
    for precision in ("bf16", "int8"):
        layer = fastlstm.load(str(path), precision=precision)
        assert layer.precision == precision
        assert_matches_reduced_reference(precision, "LSTM", state, x, [7, 7], 37, [layer(x)[0]])


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_portable_kernels_agree_with_the_fastest(precision, rng, monkeypatch):
    """The AVX2 and baseline builds run the same precision with the same results up
    to fp32 rounding, so a CPU without AVX-512 (or without AVX512-BF16/VNNI) gets
    the same answers.  Run here by swapping the kernel module the glue uses."""
    shapes = {"lstm": fastlstm.LSTM(37, 129, num_layers=2, bidirectional=True).state_dict(),
              "gru": fastlstm.GRU(17, 37, linear_before_reset=False).state_dict()}
    weights = {name: {key: rng.uniform(-0.1, 0.1, value.shape).astype(np.float32)
                      for key, value in state.items()} for name, state in shapes.items()}

    def build():  # packed by the kernel module in use (bf16's storage order is the build's)
        layer = fastlstm.LSTM(37, 129, num_layers=2, bidirectional=True, backend="cython",
                              precision="fp32")
        gru = fastlstm.GRU(17, 37, backend="cython", precision="fp32", linear_before_reset=False)
        layer.load_state_dict(weights["lstm"])
        gru.load_state_dict(weights["gru"])
        return layer.with_precision(precision), gru.with_precision(precision)

    layer, gru = build()
    x = rng.normal(size=(6, 5, 37)).astype(np.float32)
    lengths = np.array([6, 1, 3, 6, 2])
    best = (layer(x, lengths=lengths)[0], gru(x[..., :17])[0])
    supported = [isa for isa in ("avx2", "generic") if _importable(isa)]
    assert "generic" in supported
    for isa in supported:
        monkeypatch.setattr(cython_glue, "_kernels", _module(isa))
        monkeypatch.setattr(cython_glue, "_local", type(cython_glue._local)())
        layer, gru = build()
        np.testing.assert_allclose(layer(x, lengths=lengths)[0], best[0], atol=ISA_ATOL[precision], rtol=0)
        got = gru(x[..., :17])[0]
        np.testing.assert_allclose(got, best[1], atol=ISA_ATOL[precision], rtol=0)
        if precision != "fp32":  # the build's own rounding of h, to the reference's 1e-5
            assert_matches_reduced_reference(precision, "GRU", float64_state(gru), x[..., :17],
                                             [6] * 5, 37, [got], linear_before_reset=False)


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
