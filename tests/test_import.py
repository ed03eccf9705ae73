"""``import fastlstm`` (and running a layer) must not import torch: torch is a test and
benchmark dependency only."""

import subprocess
import sys

_SCRIPT = """
import sys
import numpy as np
import fastlstm
assert "torch" not in sys.modules, "import fastlstm imported torch"
for backend in fastlstm.available_backends():
    fastlstm.LSTM(3, 4, proj_size=2, backend=backend)(np.zeros((2, 1, 3)), lengths=[1])
    fastlstm.GRU(3, 4, backend=backend)(np.zeros((2, 3)))
    fastlstm.RNNCell(3, 4, backend=backend)(np.zeros(3))
assert "torch" not in sys.modules, "running a layer imported torch"
print("ok")
"""


def test_import_does_not_import_torch():
    result = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
