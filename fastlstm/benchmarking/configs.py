"""The one registry of benchmark cases, shared by ``fastlstm bench`` and ``bench/``.

A case is a shape (cell type, sizes, batch, steps, layers, directions) and,
for the rows PyTorch cannot express, an ONNX cell variant (peepholes, GRU with
the reset before the product); weights and inputs are drawn from a fixed seed
so every engine, in every run, sees the same numbers.  The flop and byte counts
that the GFLOP/s and roof columns rest on are defined here, next to the shapes
they count, for each weight precision.
"""

from dataclasses import asdict, dataclass

import numpy as np

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
SEED = 0
DEFAULT_CONFIG = "lat_med"
# Stored bytes per recurrent weight in each precision (``fastlstm.precision``);
# int8 adds one float32 scale per row of W_hh.
WEIGHT_BYTES = {"fp32": 4, "bf16": 2, "int8": 1}
ROW_SCALE_BYTES = {"fp32": 0, "bf16": 0, "int8": 4}


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark case: a sequence-first, float32 recurrent layer stack.

    ``peephole`` (LSTM) and ``linear_before_reset=False`` (GRU) are ONNX's cell
    variants: torch has no such modules, so those rows are checked against and
    timed next to ONNX Runtime on a model built from the same weights.
    """

    name: str
    mode: str              # "LSTM", "GRU" or "RNN" (tanh)
    input_size: int
    hidden_size: int
    batch: int
    steps: int
    num_layers: int = 1
    bidirectional: bool = False
    slow: bool = False     # big case: marked slow in bench/, skipped by the quick CI run
    peephole: bool = False
    linear_before_reset: bool = True

    @property
    def directions(self):
        return 2 if self.bidirectional else 1

    @property
    def gate_width(self):
        """Rows of W_ih / W_hh: gates x hidden."""
        return GATES[self.mode] * self.hidden_size

    def layer_input_sizes(self):
        """Input width of each layer: I for the first, D*H for the rest."""
        return [self.input_size] + [self.directions * self.hidden_size] * (self.num_layers - 1)

    # -- work per step, summed over layers and directions ------------------------------

    def recurrent_flops_per_step(self):
        """h @ W_hh^T: 2*B*G*H*H per layer and direction."""
        per_matrix = 2 * self.batch * self.gate_width * self.hidden_size
        return per_matrix * self.num_layers * self.directions

    def input_flops_per_step(self):
        """x @ W_ih^T: 2*B*G*H*I_layer per layer and direction."""
        return sum(2 * self.batch * self.gate_width * size * self.directions
                   for size in self.layer_input_sizes())

    def flops_per_step(self):
        """LSTM: 2*B*4H*(I+H) per layer and direction (GRU 3H, RNN H)."""
        return self.recurrent_flops_per_step() + self.input_flops_per_step()

    def flops(self):
        """Flops of one whole sequence (all steps)."""
        return self.steps * self.flops_per_step()

    def recurrent_matrix_bytes(self, precision="fp32"):
        """Bytes of one W_hh (G*H, H) stored in ``precision``: what one layer/direction reads
        every step (fp32 4 bytes a weight, bf16 2, int8 1 plus a float32 scale per row)."""
        return (WEIGHT_BYTES[precision] * self.gate_width * self.hidden_size
                + ROW_SCALE_BYTES[precision] * self.gate_width)

    @property
    def recurrent_matrices(self):
        """How many W_hh matrices a step reads (layers x directions)."""
        return self.num_layers * self.directions

    # -- data ------------------------------------------------------------------------------

    def describe(self):
        extra = ""
        if self.variant_kwargs():
            extra += ", " + self.variant_description()
        if self.num_layers > 1:
            extra += f", {self.num_layers} layers"
        if self.bidirectional:
            extra += ", bidirectional"
        return (f"{self.mode} I={self.input_size} H={self.hidden_size}, batch {self.batch}, "
                f"{self.steps} steps{extra}")

    def as_dict(self):
        return dict(asdict(self), flops=self.flops(), reference=self.reference_engine,
                    recurrent_matrix_bytes=self.recurrent_matrix_bytes(),
                    recurrent_matrix_bytes_by_precision={
                        precision: self.recurrent_matrix_bytes(precision)
                        for precision in WEIGHT_BYTES})

    # -- variants ------------------------------------------------------------------------

    def variant_kwargs(self):
        """The fastlstm constructor's variant keywords that differ from PyTorch's cell."""
        kwargs = {}
        if self.peephole:
            kwargs["peephole"] = True
        if not self.linear_before_reset:
            kwargs["linear_before_reset"] = False
        return kwargs

    def variant_description(self):
        return ", ".join(f"{key}={value}" for key, value in self.variant_kwargs().items())

    @property
    def torch_expressible(self):
        """Whether ``torch.nn.<mode>`` computes this case (no ONNX-only variant)."""
        return not self.variant_kwargs()

    @property
    def reference_engine(self):
        """The fp32 engine every result is checked against: PyTorch, or ONNX Runtime for
        the variants PyTorch has no module for."""
        return "torch" if self.torch_expressible else "onnxruntime"

    def fastlstm_class(self):
        import fastlstm
        return getattr(fastlstm, self.mode)

    def hyperparameters(self):
        """Constructor arguments shared by ``fastlstm.<mode>`` and ``torch.nn.<mode>``."""
        return dict(input_size=self.input_size, hidden_size=self.hidden_size,
                    num_layers=self.num_layers, bidirectional=self.bidirectional)

    def layer_kwargs(self):
        """Constructor arguments of the ``fastlstm.<mode>`` layer: shared ones and variant."""
        return dict(self.hyperparameters(), **self.variant_kwargs())

    def make_state_dict(self, seed=SEED):
        """{PyTorch key: float32 array}, PyTorch's init U(-1/sqrt(H), 1/sqrt(H)), seeded.

        Keys and shapes come from a fastlstm layer, so no torch is needed; a peephole
        case also has ``weight_peephole_l{k}`` (3, H), rows i, f, o, drawn the same way.
        """
        template = self.fastlstm_class()(**self.layer_kwargs()).state_dict()
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(self.hidden_size)
        return {key: rng.uniform(-bound, bound, size=value.shape).astype(np.float32)
                for key, value in template.items()}

    def make_input(self, seed=SEED):
        """x (T, B, I) float32, standard normal, seeded (independent of the weights)."""
        rng = np.random.default_rng(seed + 1)
        shape = (self.steps, self.batch, self.input_size)
        return rng.standard_normal(shape).astype(np.float32)

    def output_shape(self):
        return (self.steps, self.batch, self.directions * self.hidden_size)


def _registry(*configs):
    return {config.name: config for config in configs}


CONFIGS = _registry(
    BenchConfig("lat_small", "LSTM", 64, 128, batch=1, steps=100),
    BenchConfig("lat_med", "LSTM", 256, 256, batch=1, steps=100),
    BenchConfig("lat_large", "LSTM", 512, 512, batch=1, steps=100, slow=True),
    BenchConfig("lat_xl", "LSTM", 1024, 1024, batch=1, steps=50, slow=True),
    BenchConfig("thr_med", "LSTM", 256, 256, batch=64, steps=100),
    BenchConfig("thr_large", "LSTM", 512, 512, batch=64, steps=100, slow=True),
    BenchConfig("gru_med", "GRU", 256, 256, batch=1, steps=100),
    BenchConfig("gru_thr", "GRU", 256, 256, batch=64, steps=100),
    BenchConfig("stack_bi", "LSTM", 256, 256, batch=8, steps=100, num_layers=2,
                bidirectional=True, slow=True),
    BenchConfig("step1", "LSTM", 256, 256, batch=1, steps=1),
    # ONNX-only cell variants (issue 6): reference and peer are ONNX Runtime
    BenchConfig("peephole_med", "LSTM", 256, 256, batch=1, steps=100, peephole=True),
    BenchConfig("gru_reset_before", "GRU", 256, 256, batch=1, steps=100,
                linear_before_reset=False),
)


def select(spec):
    """Configs named by ``"a,b"`` or ``"all"`` (None means the default model), in given order."""
    if spec is None:
        return [CONFIGS[DEFAULT_CONFIG]]
    names = [name.strip() for name in spec.split(",") if name.strip()]
    if names == ["all"]:
        return list(CONFIGS.values())
    unknown = [name for name in names if name not in CONFIGS]
    if unknown or not names:
        raise ValueError(f"--configs: unknown config(s) {unknown or [spec]}; "
                         f"expected 'all' or a comma list of {list(CONFIGS)}")
    return [CONFIGS[name] for name in dict.fromkeys(names)]
