"""bf16 and int8 weights on a task: do they change what a trained model decides?

A small LSTM classifier is trained here with torch (fixed seed, a few seconds) on a
task that needs memory: a class token among the first few steps of a 60-step
sequence, noisy enough that some sequences are ambiguous (so decisions near the
boundary exist for a reduced precision to flip), followed by distractor tokens to
the end, where the class is read from the last output.  The trained checkpoint is
saved with ``torch.save`` and loaded with ``fastlstm.load`` in fp32, bf16 and int8;
on held-out sequences bf16 and int8 must decide as fp32 does on >= 99% of them and
lose <= 0.5 points of accuracy, and fp32 itself must be far above chance, so the
test cannot pass on an untrained model.
"""

import numpy as np
import pytest

import fastlstm

torch = pytest.importorskip("torch")

STEPS = 60              # sequence length
EARLY = 5               # the class token sits at one of the first EARLY steps
CLASSES = 4             # channels 0..3 carry the class token
DISTRACTORS = 4         # channels 4..7 carry distractor tokens at every other step
INPUTS = CLASSES + DISTRACTORS
HIDDEN = 32
TOKEN_NOISE = 0.4       # Gaussian noise on the class token: some sequences are ambiguous
# Learning to carry the token over 55+ steps: a forget-gate bias of 4 (sigmoid 0.98 a step)
# keeps the gradient alive across the sequence, clipping keeps Adam steady.  With these,
# 5 of 5 seeds reached 0.88-0.90 held-out accuracy by 600 steps (the noise caps it near
# 0.91); with the default init (forget bias near 0) the runs tried stayed at chance.
FORGET_BIAS = 4.0
LEARNING_RATE = 3e-3
CLIP_NORM = 1.0
TRAIN_STEPS = 600
BATCH = 64
HELD_OUT = 2000
SEED = 0

# Measured here: fp32 0.904 held-out accuracy; bf16 decides as fp32 on all 2000 sequences,
# int8 on 1997 (0.9985), accuracy 0.904 and 0.905.
MIN_FP32_ACCURACY = 0.80   # chance is 0.25
MIN_AGREEMENT = 0.99
MAX_ACCURACY_LOSS = 0.005


def make_data(rng, count):
    """x (T, B, INPUTS) float32, labels (B,): the class token at a random early step,
    a random distractor token at every later step."""
    labels = rng.integers(0, CLASSES, size=count)
    x = np.zeros((STEPS, count, INPUTS), np.float32)
    start = rng.integers(0, EARLY, size=count)
    batch = np.arange(count)
    x[start, batch, labels] = 1.0
    x[start, batch, :CLASSES] += rng.normal(0.0, TOKEN_NOISE, size=(count, CLASSES))
    later = np.arange(STEPS)[:, None] > start[None, :]                     # (T, B)
    distractor = rng.integers(CLASSES, INPUTS, size=(STEPS, count))
    steps, seqs = np.nonzero(later)
    x[steps, seqs, distractor[steps, seqs]] = 1.0
    return x, labels


class Classifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(INPUTS, HIDDEN)
        self.head = torch.nn.Linear(HIDDEN, CLASSES)
        with torch.no_grad():  # gates i, f, g, o: the forget block is the second
            self.lstm.bias_ih_l0[HIDDEN:2 * HIDDEN] = 0.0
            self.lstm.bias_hh_l0[HIDDEN:2 * HIDDEN] = FORGET_BIAS

    def forward(self, x):
        return self.head(self.lstm(x)[0][-1])


def train(rng):
    torch.manual_seed(SEED)
    model = Classifier()
    optimiser = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    for _ in range(TRAIN_STEPS):
        x, labels = make_data(rng, BATCH)
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x)),
                                                 torch.from_numpy(labels))
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
        optimiser.step()
    return model.eval()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(checkpoint path, head weight, head bias, held-out x, labels)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same training run on any machine size
    try:
        model = train(np.random.default_rng(SEED))
    finally:
        torch.set_num_threads(threads)
    path = tmp_path_factory.mktemp("task") / "classifier.pt"
    torch.save(model.state_dict(), path)
    x, labels = make_data(np.random.default_rng(SEED + 1), HELD_OUT)
    head = model.head
    return (path, head.weight.detach().numpy().copy(), head.bias.detach().numpy().copy(),
            x, labels)


def predict(layer, weight, bias, x):
    out, _ = layer(x)
    return np.argmax(out[-1] @ weight.T + bias, axis=1)


def test_reduced_precisions_decide_as_fp32(trained):
    path, weight, bias, x, labels = trained
    predictions = {precision: predict(fastlstm.load(path, prefix="lstm", precision=precision),
                                      weight, bias, x)
                   for precision in ("fp32", "bf16", "int8")}
    accuracy = {precision: float(np.mean(found == labels))
                for precision, found in predictions.items()}
    assert accuracy["fp32"] >= MIN_FP32_ACCURACY, f"the model did not learn the task: {accuracy}"
    for precision in ("bf16", "int8"):
        agreement = float(np.mean(predictions[precision] == predictions["fp32"]))
        assert agreement >= MIN_AGREEMENT, (precision, agreement, accuracy)
        assert accuracy["fp32"] - accuracy[precision] <= MAX_ACCURACY_LOSS, (precision, accuracy)
