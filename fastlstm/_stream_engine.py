"""The lean entry point behind ``Stream`` and ``StreamPool``: run a unidirectional
layer stack over one chunk with the recurrent state kept in place and every
buffer allocated once per chunk shape.

Why not ``backend.run_layers``: it is built for one-shot calls, so each call
allocates its state, scratch and output and copies the state in and out.  For
one step of a small model that costs as much as the kernels.  The engines here
call the same kernels on the same packed layers, with buffers allocated once:

    engine = make_engine(layer)            # bound to layer._layers (the packed weights)
    state = engine.new_state(batch)        # per layer: h (B, H_out), c (B, H); zeros
    run = engine.runner(state, n_steps)    # scratch for chunks of T steps, arguments bound
    run(rows, out)                         # rows (T*B, I) -> out (T, B, H_out); state advanced
    run.direct()                           # Cython: (threads, its single SequencePlan) or None

Every row is active at every step and there is one (forward) direction, so
there is no sorting, no lengths and no reverse pass.  The kernel calls mirror
those of ``cython_glue.run_layers`` and ``numba_glue.run_layers``; a layer on
any other backend gets ``_GenericEngine``, which calls ``run_layers`` itself
(correct, not lean).  tests/test_stream.py checks streams against
whole-sequence calls on every backend, so the call sites cannot drift apart
unnoticed.
"""

import numpy as np

from .params import GATES
from .threads import get_num_threads


class State:
    """A batch's recurrent state, one entry per layer.

    h[l]: (B, H_out) float32 view of layer l's hidden state (writable)
    c[l]: (B, H) float32 view of its cell state; ``c`` is None except for LSTM
    The engine owns the buffers behind the views (padded for the Cython kernels).
    """

    def __init__(self, h, c, buffers):
        self.h = h
        self.c = c
        self._buffers = buffers  # every array holding state, batch on the second-last axis

    @property
    def batch(self):
        return self.h[0].shape[0]

    def zero(self, row=None):
        """Zero every row, or only ``row``."""
        index = slice(None) if row is None else row
        for buffer in self._buffers:
            buffer[..., index, :] = 0.0


def _layer_outputs(n_steps, batch, hidden_out, num_layers):
    """Outputs of every layer but the last (which writes the caller's ``out``):
    [(T, B, H_out)] and the same as [(T*B, H_out)] rows, the next layer's input."""
    outs = [np.empty((n_steps, batch, hidden_out), np.float32) for _ in range(num_layers - 1)]
    return outs + [None], [out.reshape(n_steps * batch, hidden_out) for out in outs] + [None]


class _Engine:
    """What every engine shares: the layer's sizes and the packed weights it was built on."""

    def __init__(self, layer):
        self.layers = layer._layers  # the packed weights; reloading weights replaces the tuple
        self.mode = layer._mode
        self.num_layers = layer.num_layers
        self.hidden_size = layer.hidden_size
        self.proj_size = layer.proj_size
        self.hidden_out = layer.proj_size or layer.hidden_size
        self.has_cell = self.mode == "LSTM"

    def _read_variant(self):
        """The cell variant the glue packed (peepholes, clip, ...), for the kernels' arguments."""
        self.variant = self.layers[0].variant
        self.reset_before = self.mode == "GRU" and not self.variant.linear_before_reset  # original GRU


class _CythonEngine(_Engine):
    """Cython kernels: h in a ping-pong pair (2, B, ld), [0] current; c (B, ld) in place.

    After an odd chunk the plan copies h back to [0] (B*ld floats, in C), so the state
    never moves between buffers.
    """

    def __init__(self, layer):
        super().__init__(layer)
        from . import cython_glue as glue

        self._read_variant()
        self._glue = glue
        self._gates = GATES[self.mode]
        self._width = self._gates * glue.UNITS                       # G*16
        self._n_blk = glue._n_blocks(self.hidden_size)
        self._ld_h = glue._n_blocks(self.hidden_out) * glue.UNITS   # padded H_out
        self._ld_c = self._n_blk * glue.UNITS                       # padded H
        self._kernel_mode = glue.kernel_mode(self.mode, self.variant)

    def new_state(self, batch):
        pairs = [np.zeros((2, batch, self._ld_h), np.float32) for _ in range(self.num_layers)]
        cells = ([np.zeros((batch, self._ld_c), np.float32) for _ in range(self.num_layers)]
                 if self.has_cell else [self._glue._DUMMY_MATRIX] * self.num_layers)
        state = State([pair[0, :, :self.hidden_out] for pair in pairs],
                      [cell[:, :self.hidden_size] for cell in cells] if self.has_cell else None,
                      pairs + (cells if self.has_cell else []))
        state.pairs, state.cells = pairs, cells
        return state

    def runner(self, state, n_steps):
        """run(rows, out) for chunks of ``n_steps`` on ``state``, the kernels' arguments bound once.

        rows (T*B, I) float32 C-contiguous IN; out (T, B, H_out) float32 C-contiguous OUT.
        """
        glue = self._glue
        batch, n_blk, hidden_out = state.batch, self._n_blk, self.hidden_out
        gates, mode, has_proj = self._gates, self._kernel_mode, bool(self.proj_size)
        columns = n_blk * self._width
        row_length = glue.xproj_row_length(columns)
        xproj_rows = np.empty((n_steps * batch, row_length), np.float32)  # (T*B, >= n_blk*G*16)
        xproj = xproj_rows.reshape(n_steps, batch, row_length)
        n_active = np.full(n_steps, batch, np.int64)                   # (T,): every row runs
        padded = lambda: np.zeros((batch, self._ld_c), np.float32)     # (B, n_blk*16)
        h_full = padded() if has_proj else glue._DUMMY_MATRIX
        outs, out_rows = _layer_outputs(n_steps, batch, hidden_out, self.num_layers)
        step_flops = 2 * batch * hidden_out * columns
        input_size = max(self.layers[0].w_ih.shape[1], hidden_out)

        def bind(num_threads):
            """For this set_num_threads setting, per layer: (the packed layer, a separate
            projection's thread count or 0 when the plan's team projects, SequencePlan, the
            layer's output buffer and the next layer's input rows), as run_layers binds them."""
            scratch = glue.KernelScratch(batch, self.hidden_size, hidden_out, num_threads,
                                         self.reset_before)
            fused = glue.fuses_input(gates, self.layers[0].w_ih.dtype.itemsize, batch)
            project_scratch = glue.ProjectScratch(
                input_size, gates, num_threads, batch if fused else 0,
                int8=self.layers[0].w_ih.dtype == np.int8)
            threads, project_threads = glue.thread_split(step_flops, n_blk, n_steps, batch,
                                                         fused=fused)
            calls = []
            for index, layer in enumerate(self.layers):
                pair = state.pairs[index]
                plan = glue.sequence_plan(
                    mode, xproj, 0, layer.directions[0], has_proj, pair, state.cells[index],
                    h_full, n_active, False, 0, self.hidden_size, hidden_out, threads,
                    self.variant, scratch,
                    None if project_threads else (layer, 0, project_scratch), fused=fused)
                calls.append((layer, project_threads, plan, outs[index], out_rows[index]))
            return calls, project_scratch

        bound_threads = calls = project_scratch = None

        def run(rows, out):
            nonlocal bound_threads, calls, project_scratch
            num_threads = get_num_threads()
            if num_threads != bound_threads:
                calls, project_scratch = bind(num_threads)
                bound_threads = num_threads
            for layer, project_threads, plan, layer_out, next_rows in calls:
                if project_threads:
                    glue.project(gates, layer, rows, xproj_rows, project_threads, project_scratch,
                                 batch)
                    rows = None
                plan.run(rows, out if layer_out is None else layer_out)  # h stays in pair[0]
                rows = next_rows

        def direct():
            """(thread count, the SequencePlan whose run(rows, out) is all that run does at
            that count), when it makes one kernel call: a single layer whose plan also
            projects; else None.  A stream runs that plan from C (kernels' DirectCall)
            while the thread count stays."""
            if bound_threads is None or len(calls) != 1 or calls[0][1]:
                return None
            return bound_threads, calls[0][2]

        run.direct = direct
        return run


class _NumbaEngine(_Engine):
    """Numba kernels: each layer's state arrays are passed as both initial and final state."""

    def __init__(self, layer):
        super().__init__(layer)
        from .kernels.blas_threads import capped
        from .kernels.config import BLAS_MIN_BATCH
        from .kernels.numba_common import project
        from .kernels.numba_gru import gru_sequence
        from .kernels.numba_lstm import lstm_sequence
        from .kernels.numba_rnn import rnn_sequence
        from .numba_glue import _EMPTY_MATRIX

        self._read_variant()
        self._capped, self._blas_min_batch, self._project = capped, BLAS_MIN_BATCH, project
        self._sequence = {"LSTM": lstm_sequence, "GRU": gru_sequence}.get(self.mode, rnn_sequence)
        self._empty = _EMPTY_MATRIX
        self._gate_width = GATES[self.mode] * self.hidden_size
        self._clip = np.inf if self.variant.clip is None else self.variant.clip
        self._coupled = self.variant.coupled_input_forget

    def new_state(self, batch):
        h = [np.zeros((batch, self.hidden_out), np.float32) for _ in range(self.num_layers)]
        c = ([np.zeros((batch, self.hidden_size), np.float32) for _ in range(self.num_layers)]
             if self.has_cell else None)
        return State(h, c, h + (c or []))

    def runner(self, state, n_steps):
        """As ``_CythonEngine.runner``."""
        batch, hidden, empty = state.batch, self.hidden_size, self._empty
        scratch = lambda columns: np.empty((batch, columns), np.float32)
        xproj_rows = np.empty((n_steps * batch, self._gate_width), np.float32)  # (T*B, G*H)
        xproj = xproj_rows.reshape(n_steps, batch, self._gate_width)
        lengths = np.full(batch, n_steps, np.int64)                             # (B,)
        gates = scratch(2 * hidden if self.reset_before else self._gate_width)
        gates_n, rh = (scratch(hidden), scratch(hidden)) if self.reset_before else (empty, empty)
        h_full, h_proj = (scratch(hidden), scratch(self.proj_size)) if self.proj_size else (empty, empty)
        outs, out_rows = _layer_outputs(n_steps, batch, self.hidden_out, self.num_layers)
        sequence, project, clip = self._sequence, self._project, self._clip
        calls = []  # per layer: (w_ih, bias, the kernel's arguments before / after ``out``)
        for index, layer in enumerate(self.layers):
            d, h = layer.directions[0], state.h[index]
            if self.mode == "LSTM":
                c = state.c[index]
                before = (xproj, 0, d.w_hh, d.w_hr, h, c, lengths, False)
                after = (0, h, c, gates, h_full, h_proj, d.peep, self._coupled, clip)
            elif self.mode == "GRU":
                before = (xproj, 0, d.w_hh, d.b_hn, h, lengths, False)
                after = (0, h, gates, d.w_hn, gates_n, rh, clip)
            else:
                before = (xproj, 0, d.w_hh, self.mode == "RNN_RELU", h, lengths, False)
                after = (0, h, gates, clip)
            calls.append((layer.w_ih, layer.bias, before, after, outs[index], out_rows[index]))
        # argument tuples built once (the last layer's per caller's ``out``), as in the Cython engine
        inner = [(w_ih, bias, before + (dest,) + after, next_rows)
                 for w_ih, bias, before, after, dest, next_rows in calls[:-1]]
        w_ih_last, bias_last, before_last, after_last = calls[-1][:4]
        last_out = last_args = None

        def run_calls(rows, out):
            nonlocal last_out, last_args
            for w_ih, bias, args, next_rows in inner:
                project(rows, w_ih, bias, xproj_rows)
                sequence(*args)
                rows = next_rows
            if out is not last_out:
                last_out, last_args = out, before_last + (out,) + after_last
            project(rows, w_ih_last, bias_last, xproj_rows)
            sequence(*last_args)

        if n_steps * batch < self._blas_min_batch:  # every product is the kernels' own loop
            return run_calls
        capped = self._capped

        def run(rows, out):
            # SciPy's BLAS capped at get_num_threads(), as numba_glue.run_layers does:
            # uncapped, its threads spin against ours on a busy machine
            with capped(get_num_threads()):
                run_calls(rows, out)

        return run


class _GenericEngine(_Engine):
    """Any backend, through its ``run_layers``: allocates per call, always correct."""

    def __init__(self, layer):
        super().__init__(layer)
        self._backend = layer._backend

    def new_state(self, batch):
        h = np.zeros((self.num_layers, batch, self.hidden_out), np.float32)
        c = np.zeros((self.num_layers, batch, self.hidden_size), np.float32) if self.has_cell else None
        state = State(list(h), None if c is None else list(c), [h] + ([c] if c is not None else []))
        state.arrays = h, c
        return state

    def runner(self, state, n_steps):
        h, c = state.arrays
        lengths = np.full(state.batch, n_steps, np.int64)

        def run(rows, out):
            x = rows.reshape(n_steps, state.batch, -1)
            y, h_n, c_n = self._backend.run_layers(self.mode, self.layers, self.hidden_size,
                                                   self.proj_size, x, h, c, lengths)
            out[...] = y
            h[...] = h_n
            if c is not None:
                c[...] = c_n

        return run


_ENGINES = {"cython": _CythonEngine, "numba": _NumbaEngine}


def make_engine(layer):
    """The engine for a unidirectional ``LSTM``/``GRU``/``RNN`` layer's backend."""
    if layer.bidirectional:
        raise ValueError("streams run forward in time; a bidirectional layer needs the whole "
                         "sequence (call the layer instead)")
    return _ENGINES.get(layer.backend_name, _GenericEngine)(layer)
