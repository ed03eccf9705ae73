"""Streaming inference: ``Stream`` feeds one layer chunk by chunk with the state
carried over; ``StreamPool`` keeps many independent sessions of one layer and
advances any set of them in one batched kernel call.

Both run on ``_stream_engine``: state and scratch buffers are allocated once
per chunk shape and the kernels update the state in place, so a steady-state
step allocates nothing but its output (and not even that with ``out=``).

Thread safety (one rule each):
- ``Stream`` is one sequence, so one caller at a time: a call (or ``state``,
  ``reset``) from a second thread while another is running raises RuntimeError
  and leaves the state as the running call leaves it.
- ``StreamPool`` is meant to be shared: every method takes the pool's lock, so
  threads may step, open and close sessions concurrently; calls run one at a time.
- Different streams (even of the same layer) are independent and run in parallel;
  the kernels release the GIL.
"""

import threading
from collections.abc import Mapping

import numpy as np

from . import _validate
from . import threads as _threads
from ._stream_engine import make_engine

_F32 = np.dtype(np.float32)
_NDARRAY = np.ndarray
_MAX_SHAPES = 32  # chunk shapes a stream keeps buffers for before dropping them all


class PoolFullError(RuntimeError):
    """``StreamPool.open`` when ``capacity`` sessions are already open."""


def _check_layer(layer, what):
    if not (hasattr(layer, "_layers") and hasattr(layer, "_mode") and hasattr(layer, "bidirectional")):
        raise TypeError(f"{what}: expected a fastlstm LSTM, GRU or RNN layer, "
                        f"got {type(layer).__name__}")
    if layer.bidirectional:
        raise ValueError(f"{what}: {layer!r} is bidirectional; its reverse direction needs the "
                         "whole sequence, so it cannot be streamed (call the layer on the "
                         "sequence instead)")


def _busy(what):
    return RuntimeError(f"{what} is being used by another thread; a Stream serves one caller at "
                        "a time (use one stream per thread, a lock of your own, or a StreamPool)")


class _Plan:
    """How a chunk of one shape maps onto the engine.

    run:          the engine's run(rows, out) for chunks of T steps
    rows_shape:   the chunk viewed as (T*B, I); None when the chunk already is that
    out_shape:    the result's shape in the caller's layout
    kernel_shape: (T, B, H_out), the view of the result the kernels write; None when
                  the result already has that shape
    fast:         False for a batch-first chunk with B > 1 and T > 1, whose memory
                  order differs from the kernels' (copied through a transpose)
    """

    __slots__ = ("run", "rows_shape", "out_shape", "kernel_shape", "fast", "direct")

    def __init__(self, run, rows_shape, out_shape, kernel_shape, fast):
        self.run, self.rows_shape = run, rows_shape
        self.out_shape, self.kernel_shape = out_shape, kernel_shape
        self.fast = fast
        # () -> (threads, SequencePlan) when run is that one plan's run at that thread
        # count, else None (the engines' run.direct); None when the engine has none
        self.direct = getattr(run, "direct", None) if fast else None


class _Guard:
    """The one-caller guard of a Stream where the Cython kernels (and their DirectCall)
    are not built: list.pop/append are atomic; calls always take the Python path."""

    __slots__ = ("_token",)

    def __init__(self):
        self._token = [None]

    def __call__(self, chunk, out=None):
        return None

    def enter(self):
        try:
            self._token.pop()
        except IndexError:
            return False
        return True

    def leave(self):
        self._token.append(None)

    def bind(self, *args):
        pass

    def unbind(self):
        pass


def _direct_call(layer):
    """The stream's guard and C fast path (kernels' DirectCall), or a _Guard."""
    try:
        from .cython_glue import _kernels
    except ImportError:
        return _Guard()
    return _kernels.DirectCall(_threads, layer)


class Stream:
    """One layer run forward chunk by chunk, its recurrent state carried between calls.

    ``s = layer.stream(batch_size=B)`` (or ``Stream(layer, B)``); unidirectional layers only.

    ``y = s(chunk)``
        chunk: (T, B, I), (B, T, I) for a batch_first layer, or (T, I) when B == 1
               (unbatched); T >= 1 may change from call to call; any float dtype
        y:     (T, B, H_out), (B, T, H_out) or (T, H_out) float32, a new array
    ``y = s(chunk, out=buf)``: writes into ``buf`` (float32, C-contiguous, y's shape) and
        returns it; with the same shape every call, a step allocates nothing.
    Feeding a sequence in chunks gives the outputs and final state of one layer call on it.

    ``s.state``: LSTM ``(h, c)``, h (L, B, H_out), c (L, B, H); GRU/RNN ``h``; float32 copies.
    Assigning ``s.state = ...`` (same shapes) sets it.  ``s.reset()`` zeros the state,
    ``s.reset(b)`` zeros sequence b only.

    One caller at a time: a concurrent call from another thread raises RuntimeError
    (see the module docstring).  If the layer's weights are reloaded, the stream uses
    the new weights from its next call on, with its state kept.
    """

    __slots__ = ("layer", "batch_size", "_engine", "_state", "_plans", "_runners", "_fast_plans",
                 "_out_seen", "_direct")

    def __init__(self, layer, batch_size=1):
        _check_layer(layer, "layer")
        self.layer = layer
        self.batch_size = _validate.check_positive_int(batch_size, "batch_size")
        self._engine = make_engine(layer)
        self._state = self._engine.new_state(self.batch_size)
        self._plans = {}     # chunk shape -> _Plan
        self._runners = {}   # T -> the engine's run(rows, out) for chunks of T steps
        self._fast_plans = {}  # the plans float32 C-contiguous chunks may take directly
        self._out_seen = None  # (buffer, plan, kernel view) of the last out= checked
        # The one-caller guard, and the steady step in C for the chunk shape run last
        # when that is one kernel call (a Cython stream of one layer)
        self._direct = _direct_call(layer)

    # -- stepping --------------------------------------------------------------------------

    def __call__(self, chunk, out=None):
        result = self._direct(chunk, out)
        if result is not None:
            return result
        self._acquire()
        try:
            plan = self._fast_plans.get(chunk.shape) if type(chunk) is _NDARRAY else None
            if (plan is None or chunk.dtype is not _F32 or not chunk.flags.c_contiguous
                    or self.layer._layers is not self._engine.layers):
                return self._call_checked(chunk, out)
            # a float32 C-contiguous array of a shape seen before
            rows = chunk if plan.rows_shape is None else chunk.reshape(plan.rows_shape)
            if out is None:
                result = np.empty(plan.out_shape, np.float32)
                view = result if plan.kernel_shape is None else result.reshape(plan.kernel_shape)
            else:
                seen = self._out_seen
                if seen is not None and seen[0] is out and seen[1] is plan:
                    view = seen[2]
                else:
                    view = self._check_out(out, plan)
                result = out
            plan.run(rows, view)
            if plan.direct is not None:
                self._learn_direct(plan, chunk.shape)
            return result
        finally:
            self._release()

    forward = __call__

    def _call_checked(self, chunk, out):
        """Any chunk: validate and convert, then run (and learn the shape's plan)."""
        if self.layer._layers is not self._engine.layers:  # weights reloaded
            self._engine = make_engine(self.layer)
            self._forget_plans()
        x, batched = _validate.check_sequence_input(chunk, self.layer.input_size,
                                                    self.layer.batch_first)  # (T, B, I)
        n_steps, batch = x.shape[0], x.shape[1]
        if not batched and self.batch_size != 1:
            raise ValueError(f"x: an unbatched chunk (T, I) needs a stream with batch_size=1, "
                             f"this one has batch_size={self.batch_size}; got shape "
                             f"{tuple(x[:, 0].shape)}")
        if batch != self.batch_size:
            raise ValueError(f"x: this stream has batch_size={self.batch_size}, got a chunk of "
                             f"{batch} sequences (shape {tuple(np.shape(chunk))})")
        plan = self._plan_for(np.shape(chunk), n_steps, batched)
        if out is not None:
            self._check_out(out, plan)
        if not plan.fast:  # batch-first chunk with B > 1 and T > 1
            y = np.empty((n_steps, batch, self._engine.hidden_out), np.float32)
            plan.run(x.reshape(n_steps * batch, -1), y)
            result = out if out is not None else np.empty(plan.out_shape, np.float32)
            np.copyto(result, y.transpose(1, 0, 2))
            return result
        result = out if out is not None else np.empty(plan.out_shape, np.float32)
        view = result if plan.kernel_shape is None else result.reshape(plan.kernel_shape)
        plan.run(x.reshape(n_steps * batch, -1), view)
        if plan.direct is not None and type(chunk) is _NDARRAY:
            self._learn_direct(plan, chunk.shape)
        return result

    def _learn_direct(self, plan, shape):
        """Let the C path take the next chunk of this shape when ``plan`` runs one kernel
        call (the run just made bound it at the current thread count)."""
        found = plan.direct()
        if found is not None:
            threads, sequence_plan = found
            self._direct.bind(sequence_plan, tuple(shape), plan.out_shape, threads,
                              self._engine.layers)

    def _forget_plans(self):
        self._direct.unbind()
        self._plans.clear()
        self._fast_plans.clear()
        self._runners.clear()
        self._out_seen = None

    def _plan_for(self, shape, n_steps, batched):
        plan = self._plans.get(shape)
        if plan is not None:
            return plan
        if len(self._plans) >= _MAX_SHAPES:  # chunk sizes keep changing: bound the buffers
            self._forget_plans()
        run = self._runners.get(n_steps)
        if run is None:
            run = self._runners[n_steps] = self._engine.runner(self._state, n_steps)
        batch, hidden_out = self.batch_size, self._engine.hidden_out
        kernel_shape = (n_steps, batch, hidden_out)
        if not batched:
            out_shape, rows_shape = (n_steps, hidden_out), None
        elif self.layer.batch_first:
            out_shape, rows_shape = (batch, n_steps, hidden_out), (n_steps * batch, shape[-1])
        else:
            out_shape, rows_shape = kernel_shape, (n_steps * batch, shape[-1])
        # (B, T, H_out) has the kernels' memory order only when B == 1 or T == 1
        fast = not (batched and self.layer.batch_first and batch > 1 and n_steps > 1)
        plan = _Plan(run, rows_shape, out_shape,
                     None if out_shape == kernel_shape else kernel_shape, fast)
        self._plans[tuple(shape)] = plan
        if fast:
            self._fast_plans[tuple(shape)] = plan
        return plan

    def _check_out(self, out, plan):
        """out -> the (T, B, H_out) view the kernels write; TypeError/ValueError naming ``out``."""
        if not isinstance(out, np.ndarray):
            raise TypeError(f"out: expected a numpy array, got {type(out).__name__}")
        if out.dtype != _F32:
            raise TypeError(f"out: expected dtype float32, got {out.dtype}")
        if out.shape != plan.out_shape:
            raise ValueError(f"out: expected shape {plan.out_shape} for this chunk, got {out.shape}")
        if not (out.flags.c_contiguous and out.flags.writeable):
            raise ValueError("out: expected a writeable C-contiguous array")
        if not plan.fast:
            return None  # the result is copied into out through a transpose
        view = out if plan.kernel_shape is None else out.reshape(plan.kernel_shape)
        self._out_seen = (out, plan, view)
        return view

    # -- state -----------------------------------------------------------------------------

    def _acquire(self):
        if not self._direct.enter():
            raise _busy("this Stream")

    def _release(self):
        self._direct.leave()

    @property
    def state(self):
        self._acquire()
        try:
            h = np.stack(self._state.h)  # (L, B, H_out)
            return (h, np.stack(self._state.c)) if self._state.c is not None else h
        finally:
            self._release()

    @state.setter
    def state(self, value):
        layers, batch = self.layer.num_layers, self.batch_size
        h_shape = (layers, batch, self._engine.hidden_out)
        if self._state.c is not None:
            if not isinstance(value, (tuple, list)) or len(value) != 2:
                raise TypeError(f"state: expected a tuple (h, c) for LSTM, got {type(value).__name__}")
            h = _validate.check_state(value[0], "state[0]", h_shape, True)
            c = _validate.check_state(value[1], "state[1]", (layers, batch, self.layer.hidden_size),
                                      True)
        else:
            h, c = _validate.check_state(value, "state", h_shape, True), None
        self._acquire()
        try:
            for index in range(layers):
                self._state.h[index][...] = h[index]
                if c is not None:
                    self._state.c[index][...] = c[index]
        finally:
            self._release()

    def reset(self, batch_index=None):
        """Zero the state of every sequence, or of sequence ``batch_index`` only."""
        row = None
        if batch_index is not None:
            row = _validate.check_positive_int(batch_index, "batch_index", minimum=0)
            if row >= self.batch_size:
                raise IndexError(f"batch_index: expected 0 <= batch_index < batch_size="
                                 f"{self.batch_size}, got {batch_index}")
        self._acquire()
        try:
            self._state.zero(row)
        finally:
            self._release()

    def __repr__(self):
        return f"Stream({self.layer!r}, batch_size={self.batch_size})"


class StreamPool:
    """Many independent sessions of one unidirectional layer, stepped in one batched call.

    ``pool = StreamPool(layer, capacity=N)``
    ``sid = pool.open()``: a new session with a zero state; ids are ints, never reused.
        With ``capacity`` sessions open it raises ``PoolFullError`` (a RuntimeError).
    ``ys = pool.step({sid: x, ...})``: advances the given sessions (others keep their state)
        x: (I,) for one step or (T, I) for a chunk, same T for every session of the call;
           any float dtype, numpy, torch or nested lists
        ys: {sid: y}, y (H_out,) or (T, H_out) float32
        Unknown or closed sid -> KeyError naming it; a bad x -> TypeError/ValueError naming
        the session.  Everything is checked first, so an error changes no session.
    ``pool.close(sid)``, ``pool.reset(sid)``, ``pool.state(sid)`` (LSTM (h (L, H_out), c (L, H)),
    else h; copies), ``len(pool)``, ``sid in pool``, ``pool.sessions()``.

    States are packed densely: session rows 0..n-1 of (L, N, H) tables, closing one moves
    the last into its row.  A step gathers the given sessions' rows into one batch, runs
    the kernels once, and scatters the new states back.  Every method takes the pool's
    lock, so threads may share a pool (calls run one at a time).
    bf16 and int8: a step of 16 or more sessions multiplies x rounded to bf16, a smaller
    one x in two bf16 parts (README, Precision), so a session's outputs can move by about
    bf16's error from fp32 with the number of sessions stepped with it.
    """

    _MAX_SHAPES = 16  # (T, k) batch shapes whose buffers are kept

    def __init__(self, layer, capacity):
        _check_layer(layer, "layer")
        self.layer = layer
        self.capacity = _validate.check_positive_int(capacity, "capacity")
        self._engine = make_engine(layer)
        layers = layer.num_layers
        self._h = np.zeros((layers, self.capacity, self._engine.hidden_out), np.float32)
        self._c = (np.zeros((layers, self.capacity, layer.hidden_size), np.float32)
                   if self._engine.has_cell else None)
        self._row_of = {}   # sid -> row
        self._sid_at = []   # row -> sid; rows 0..n-1 are the open sessions
        self._next_sid = 0
        self._works = {}    # (T, k) -> (engine state of batch k, its run(rows, out))
        self._lock = threading.Lock()

    # -- sessions --------------------------------------------------------------------------

    def open(self):
        """A new session (zero state); its id."""
        with self._lock:
            row = len(self._sid_at)
            if row >= self.capacity:
                raise PoolFullError(f"StreamPool is full: all {self.capacity} sessions are open; "
                                    "close one first or make a pool with a larger capacity")
            sid = self._next_sid
            self._next_sid += 1
            self._zero_row(row)
            self._row_of[sid] = row
            self._sid_at.append(sid)
            return sid

    def close(self, sid):
        """End session ``sid``; the last session's state moves into its row."""
        with self._lock:
            row = self._row(sid)
            last = len(self._sid_at) - 1
            if row != last:
                moved = self._sid_at[last]
                self._h[:, row] = self._h[:, last]
                if self._c is not None:
                    self._c[:, row] = self._c[:, last]
                self._sid_at[row] = moved
                self._row_of[moved] = row
            self._sid_at.pop()
            del self._row_of[sid]

    def reset(self, sid):
        """Zero session ``sid``'s state."""
        with self._lock:
            self._zero_row(self._row(sid))

    def state(self, sid):
        """Session ``sid``'s state: LSTM (h (L, H_out), c (L, H)), else h; float32 copies."""
        with self._lock:
            row = self._row(sid)
            h = self._h[:, row].copy()
            return (h, self._c[:, row].copy()) if self._c is not None else h

    def sessions(self):
        """Ids of the open sessions, in row order."""
        with self._lock:
            return list(self._sid_at)

    def __len__(self):
        return len(self._sid_at)

    def __contains__(self, sid):
        return sid in self._row_of

    def _row(self, sid):
        try:
            return self._row_of[sid]
        except (KeyError, TypeError):
            raise KeyError(f"session {sid!r} is not open in this StreamPool (unknown or closed)") \
                from None

    def _zero_row(self, row):
        self._h[:, row] = 0.0
        if self._c is not None:
            self._c[:, row] = 0.0

    # -- stepping --------------------------------------------------------------------------

    def step(self, inputs):
        """{sid: x} -> {sid: y}; see the class docstring."""
        if not isinstance(inputs, Mapping):
            raise TypeError(f"inputs: expected a dict {{session id: x}}, got {type(inputs).__name__}")
        with self._lock:
            if not inputs:
                return {}
            sids = list(inputs)
            try:
                rows = [self._row_of[sid] for sid in sids]  # (k,) the sessions' rows
            except (KeyError, TypeError):
                rows = [self._row(sid) for sid in sids]  # raises, naming the session
            rows = np.array(rows, np.intp)
            x, single = self._stack(sids, list(inputs.values()))  # (T, k, I)
            n_steps, batch = x.shape[0], x.shape[1]
            if self.layer._layers is not self._engine.layers:  # weights reloaded
                self._engine = make_engine(self.layer)
                self._works.clear()
            state, run = self._work(n_steps, batch)
            for index in range(self.layer.num_layers):
                state.h[index][...] = self._h[index, rows]
                if self._c is not None:
                    state.c[index][...] = self._c[index, rows]
            y = np.empty((n_steps, batch, self._engine.hidden_out), np.float32)  # (T, k, H_out)
            run(x.reshape(n_steps * batch, -1), y)
            for index in range(self.layer.num_layers):
                self._h[index, rows] = state.h[index]
                if self._c is not None:
                    self._c[index, rows] = state.c[index]
        if single is True:  # every x was (I,): y[0] is (k, H_out), one row per session
            return dict(zip(sids, y[0]))
        per_session = np.ascontiguousarray(y.transpose(1, 0, 2))  # (k, T, H_out); no copy if T == 1
        if single is False:
            return dict(zip(sids, per_session))
        return {sid: per_session[j, 0] if single[j] else per_session[j]
                for j, sid in enumerate(sids)}

    def _stack(self, sids, values):
        """Inputs -> ((T, k, I) float32 C-contiguous, "was 1-D": True/False for every
        session alike, else a list of per-session flags)."""
        size = self.layer.input_size
        try:  # common case: float32 arrays of one shape (np.array beats np.stack 4x here)
            stacked = np.array(values)  # (k, I) or (k, T, I)
        except (ValueError, TypeError):
            stacked = None
        if (stacked is not None and stacked.dtype == _F32 and stacked.shape[-1] == size
                and stacked.size > 0):
            if stacked.ndim == 2:  # every x (I,)
                return stacked[None], True
            if stacked.ndim == 3:
                return np.ascontiguousarray(stacked.transpose(1, 0, 2)), False
        # slow path: check each session, naming the first that is wrong
        arrays, single, steps = [], [], None
        for sid, value in zip(sids, values):
            try:
                array = _validate.as_float32(value, f"session {sid!r}: x")
            except ValueError as error:  # e.g. ragged nested lists
                raise ValueError(f"session {sid!r}: x: cannot be read as an array ({error})") \
                    from None
            if array.ndim not in (1, 2) or array.shape[-1] != size or array.size == 0:
                raise ValueError(f"session {sid!r}: x: expected shape ({size},) or (T, {size}) "
                                 f"with input_size={size}, got {array.shape}")
            n_steps = 1 if array.ndim == 1 else array.shape[0]
            if steps is None:
                steps, first = n_steps, sid
            elif n_steps != steps:
                raise ValueError(f"session {sid!r}: x has {n_steps} steps but session {first!r} "
                                 f"has {steps}; one step() call advances every session by the "
                                 "same number of steps")
            arrays.append(array.reshape(n_steps, size))
            single.append(array.ndim == 1)
        return np.ascontiguousarray(np.stack(arrays, axis=1)), single

    def _work(self, n_steps, batch):
        key = (n_steps, batch)
        found = self._works.get(key)
        if found is None:
            if len(self._works) >= self._MAX_SHAPES:
                self._works.pop(next(iter(self._works)))  # oldest shape
            state = self._engine.new_state(batch)
            found = self._works[key] = (state, self._engine.runner(state, n_steps))
        return found

    def __repr__(self):
        return f"StreamPool({self.layer!r}, capacity={self.capacity}, open={len(self)})"
