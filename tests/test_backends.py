"""Backend selection: names, ``backend=`` and ``FASTLSTM_BACKEND``, the test-run
restriction ``FASTLSTM_TEST_BACKENDS``, and every backend agreeing with the others."""

import numpy as np
import pytest

import conftest
import fastlstm
import helpers
from cases import CELL_CASES, LAYER_CASES


def test_available_backends():
    names = fastlstm.available_backends()
    assert isinstance(names, list) and names
    assert all(isinstance(name, str) for name in names)
    assert "numba" in names
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("cls", [fastlstm.LSTM, fastlstm.GRU, fastlstm.RNN,
                                 fastlstm.LSTMCell, fastlstm.GRUCell, fastlstm.RNNCell],
                         ids=lambda cls: cls.__name__)
def test_explicit_and_auto_backend(cls, backend, monkeypatch):
    assert cls(2, 3, backend=backend).backend_name == backend
    monkeypatch.delenv("FASTLSTM_BACKEND", raising=False)
    assert cls(2, 3).backend_name == fastlstm.available_backends()[0]
    monkeypatch.setenv("FASTLSTM_BACKEND", backend)
    assert cls(2, 3).backend_name == backend
    assert cls(2, 3, backend="auto").backend_name == backend


@pytest.mark.parametrize("isa, fp32_first", [("avx512", "cython"), ("avx2", "cython"),
                                              ("generic", "numba")])
def test_auto_follows_the_cython_build_in_use(isa, fp32_first, monkeypatch):
    """fp32 goes to Cython where its AVX-512 or AVX2 build runs, to Numba on the baseline
    build; bf16 and int8 go to Cython, the one backend that runs them."""
    from fastlstm import backends, cython_glue
    monkeypatch.delenv("FASTLSTM_BACKEND", raising=False)
    monkeypatch.setattr(cython_glue, "ISA", isa)
    assert fastlstm.available_backends()[0] == fp32_first
    assert fastlstm.LSTM(2, 3).backend_name == fp32_first
    assert fastlstm.LSTM(2, 3, precision="int8").backend_name == "cython"
    assert fastlstm.GRU(2, 3, precision="bf16").backend_name == "cython"


def test_forcing_an_unknown_backend_through_the_environment(monkeypatch):
    monkeypatch.setenv("FASTLSTM_BACKEND", "no-such-backend")
    with pytest.raises(ValueError, match=r"^backend\b.*no-such-backend"):
        fastlstm.LSTM(2, 3)


def test_test_backends_env_restricts(monkeypatch):
    available = fastlstm.available_backends()
    monkeypatch.setenv("FASTLSTM_TEST_BACKENDS", f" {available[-1]} ,")
    assert conftest.backends_under_test() == [available[-1]]
    monkeypatch.setenv("FASTLSTM_TEST_BACKENDS", "")
    assert conftest.backends_under_test() == available
    monkeypatch.setenv("FASTLSTM_TEST_BACKENDS", "no-such-backend")
    with pytest.raises(pytest.UsageError, match="no-such-backend"):
        conftest.backends_under_test()


_AGREEMENT_CASES = [case for case in LAYER_CASES if case.lengths and case.initial_state][:4]


@pytest.mark.parametrize("case", _AGREEMENT_CASES, ids=lambda case: case.id)
def test_backend_agrees_with_preferred_backend(case, backend, rng):
    """Each backend against the one ``auto`` prefers, same weights and inputs."""
    weights = helpers.random_state_dict(helpers.expected_shapes(case), case.hidden_size, rng)
    x, h0, c0, lengths = helpers.layer_inputs(case, rng)
    results = []
    for name in (fastlstm.available_backends()[0], backend):
        layer = helpers.fastlstm_layer(case, name)
        layer.load_state_dict(weights)
        results.append(helpers.call_layer(layer, case.mode, x, h0, c0, lengths))
    preferred, got = results
    helpers.assert_matches(got, tuple(preferred), "backend", ("out", "h_n", "c_n"))
