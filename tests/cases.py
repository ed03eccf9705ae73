"""The one registry of test cases: every layer and cell test is parametrised from here.

A covering set rather than the full cartesian product: every mode sees every
shape row below, and each row exercises several features at once (sizes 1, 3,
17, 37, 129; 1-3 layers; bidirectional; batch_first; no bias; B 1 and 3; T 1
and 7; initial states or not; unbatched; unsorted lengths incl. all-equal and
a length of 1; each weight-loading path; each input dtype).  The rows are
plain data (no torch, no fastlstm) so benchmarks can reuse them.
"""

from dataclasses import dataclass, replace

MODES = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")

# how the weights reach fastlstm in the torch comparison
LOADS = ("from_torch", "numpy", "torch")
# how x (and the states) are given: numpy of a float dtype, or a torch float32 tensor
DTYPES = ("float32", "float64", "float16", "torch")


@dataclass(frozen=True)
class LayerCase:
    mode: str
    input_size: int
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    batch_first: bool = False
    proj_size: int = 0
    bias: bool = True
    batch: int = 3
    steps: int = 7
    initial_state: bool = False
    unbatched: bool = False
    lengths: tuple = None
    load: str = "numpy"
    dtype: str = "float32"

    def __post_init__(self):
        assert self.mode in MODES and self.load in LOADS and self.dtype in DTYPES
        assert self.lengths is None or (not self.unbatched and len(self.lengths) == self.batch
                                        and all(1 <= n <= self.steps for n in self.lengths))

    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    @property
    def hidden_out(self):
        return self.proj_size or self.hidden_size

    @property
    def id(self):
        parts = [self.mode, f"I{self.input_size}", f"H{self.hidden_size}"]
        if self.proj_size:
            parts.append(f"P{self.proj_size}")
        parts.append(f"L{self.num_layers}")
        parts += [flag for flag, on in (("bi", self.bidirectional), ("bf", self.batch_first),
                                        ("nobias", not self.bias), ("h0", self.initial_state))
                  if on]
        parts.append(f"T{self.steps}" + ("" if self.unbatched else f"B{self.batch}"))
        if self.unbatched:
            parts.append("unbatched")
        if self.lengths is not None:
            parts.append("len" + ".".join(map(str, self.lengths)))
        parts += [self.load, self.dtype]
        return "-".join(parts)


@dataclass(frozen=True)
class CellCase:
    mode: str
    input_size: int
    hidden_size: int
    bias: bool = True
    batch: int = 3
    initial_state: bool = True
    unbatched: bool = False
    load: str = "numpy"
    dtype: str = "float32"

    def __post_init__(self):
        assert self.mode in MODES and self.load in LOADS and self.dtype in DTYPES

    @property
    def id(self):
        parts = [self.mode + "Cell", f"I{self.input_size}", f"H{self.hidden_size}"]
        if not self.bias:
            parts.append("nobias")
        parts.append("unbatched" if self.unbatched else f"B{self.batch}")
        if self.initial_state:
            parts.append("h0")
        parts += [self.load, self.dtype]
        return "-".join(parts)


# Shape rows run for every mode.
_LAYER_ROWS = [
    dict(input_size=3, hidden_size=17, load="from_torch"),
    dict(input_size=1, hidden_size=1, batch=1, steps=1, initial_state=True),
    dict(input_size=17, hidden_size=37, num_layers=2, bidirectional=True, initial_state=True,
         load="torch", dtype="float64"),
    dict(input_size=37, hidden_size=3, num_layers=3, batch_first=True, bias=False, batch=1,
         load="from_torch", dtype="float16"),
    dict(input_size=129, hidden_size=129, bidirectional=True, steps=1, initial_state=True,
         dtype="torch"),
    # lengths: unsorted with a 1 and a full one, all equal, a lone short sequence
    dict(input_size=5, hidden_size=17, num_layers=2, bidirectional=True, lengths=(4, 7, 1),
         load="from_torch"),
    dict(input_size=3, hidden_size=3, bidirectional=True, batch_first=True, initial_state=True,
         lengths=(7, 7, 7), load="torch"),
    dict(input_size=3, hidden_size=37, num_layers=3, bidirectional=True, batch_first=True,
         bias=False, initial_state=True, lengths=(2, 1, 6), dtype="torch"),
    dict(input_size=4, hidden_size=5, num_layers=2, bidirectional=True, batch=1,
         initial_state=True, lengths=(3,), dtype="float64"),
    # unbatched (T, I) input and (L*D, H) states; batch_first has no effect on them
    dict(input_size=17, hidden_size=17, num_layers=2, bidirectional=True, batch_first=True,
         unbatched=True, initial_state=True, dtype="float64", load="from_torch"),
    dict(input_size=1, hidden_size=3, steps=1, unbatched=True, load="torch", dtype="float16"),
]

# LSTM with a projection (weight_hr, H_out = proj_size)
_PROJ_ROWS = [
    dict(input_size=3, hidden_size=17, proj_size=5, load="from_torch"),
    dict(input_size=17, hidden_size=3, proj_size=1, num_layers=2, bidirectional=True,
         initial_state=True, lengths=(3, 7, 1), load="torch"),
    dict(input_size=37, hidden_size=129, proj_size=37, num_layers=3, bidirectional=True,
         batch_first=True, bias=False, initial_state=True, dtype="float64"),
    dict(input_size=3, hidden_size=17, proj_size=3, num_layers=2, bidirectional=True,
         unbatched=True, initial_state=True, dtype="torch"),
    dict(input_size=1, hidden_size=2, proj_size=1, batch=1, steps=1, initial_state=True,
         load="from_torch", dtype="float16"),
]

LAYER_CASES = ([LayerCase(mode=mode, **row) for row in _LAYER_ROWS for mode in MODES]
               + [LayerCase(mode="LSTM", **row) for row in _PROJ_ROWS])

_CELL_ROWS = [
    dict(input_size=3, hidden_size=17),
    dict(input_size=1, hidden_size=1, batch=1, load="from_torch"),
    dict(input_size=129, hidden_size=37, bias=False, initial_state=False, load="torch",
         dtype="float64"),
    dict(input_size=17, hidden_size=129, unbatched=True, load="from_torch", dtype="torch"),
    dict(input_size=3, hidden_size=3, unbatched=True, initial_state=False, dtype="float16"),
]

CELL_CASES = [CellCase(mode=mode, **row) for row in _CELL_ROWS for mode in MODES]


def with_(case, **changes):
    """A copy of ``case`` with some fields changed."""
    return replace(case, **changes)
