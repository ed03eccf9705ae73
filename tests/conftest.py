"""Fixtures: ``backend`` runs every test that takes it once per available backend
(``FASTLSTM_TEST_BACKENDS=numba,cython`` restricts the set); ``rng`` is a numpy
Generator seeded from the test's name and parameters, so every test is deterministic and
independent of the order tests run in."""

import os
import zlib

import numpy as np
import pytest

import fastlstm


def backends_under_test():
    """Backends to test: all available ones, or those named in FASTLSTM_TEST_BACKENDS."""
    available = fastlstm.available_backends()
    requested = os.environ.get("FASTLSTM_TEST_BACKENDS", "").strip()
    if not requested:
        return available
    names = [name.strip() for name in requested.split(",") if name.strip()]
    missing = [name for name in names if name not in available]
    if missing:
        raise pytest.UsageError(f"FASTLSTM_TEST_BACKENDS names backends that are not available: "
                                f"{missing} (available: {available})")
    return names


try:
    BACKENDS = backends_under_test()
    _BACKENDS_ERROR = None
except pytest.UsageError as error:  # reported by pytest_configure, without a traceback
    BACKENDS, _BACKENDS_ERROR = [], error


def pytest_configure(config):
    if _BACKENDS_ERROR is not None:
        raise _BACKENDS_ERROR
    # torch's own notice when running LSTM with proj_size; not about fastlstm
    config.addinivalue_line("filterwarnings",
                            "ignore:LSTM with projections is not supported with oneDNN:UserWarning")


def pytest_report_header(config):
    return f"fastlstm backends under test: {BACKENDS}"


@pytest.fixture(params=BACKENDS, scope="session")
def backend(request):
    return request.param


@pytest.fixture
def rng(request):
    """numpy Generator seeded from the test's name and parameters other than the backend,
    so runs, test orders and backends all see the same data."""
    callspec = getattr(request.node, "callspec", None)
    params = {} if callspec is None else {k: v for k, v in callspec.params.items() if k != "backend"}
    key = f"{request.node.module.__name__}::{request.node.originalname}::{sorted(params.items())!r}"
    return np.random.default_rng(zlib.crc32(key.encode()))


@pytest.fixture(autouse=True, scope="session")
def _single_torch_thread():
    # small cases: torch's thread pool only adds overhead on a shared 2-core machine
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def restore_threads():
    """Put fastlstm's thread count back as it was after the test."""
    saved = fastlstm.get_num_threads()
    yield
    fastlstm.set_num_threads(saved)
