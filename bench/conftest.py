"""pytest-benchmark suite over ``fastlstm.benchmarking.configs`` (the registry the
``fastlstm bench`` command uses too).

    pytest bench                                  time every case (slow ones too)
    pytest bench -m "not slow"                    leave out the big cases
    pytest bench --benchmark-disable              quick mode (CI): each case built, checked
                                                  against PyTorch fp32 and run once; slow cases
                                                  skipped unless --bench-slow
    --bench-threads 1,2         thread counts (default 1)
    --bench-peers P,Q           peers (default torch,onnxruntime,openvino; 'none' for fastlstm only)
    --bench-precision fp32,...  weight precisions (default fp32,bf16,int8): fastlstm in each
                                (bf16/int8 on the backends that run them) and the requested
                                peers' bf16/int8 forms (torch-bf16, torch-int8, openvino-bf16)

``FASTLSTM_BENCH_QUICK=1`` turns quick mode on as well.
"""

import os

import pytest

from fastlstm.benchmarking import engines

_cases = {}


def pytest_addoption(parser):
    group = parser.getgroup("fastlstm bench")
    group.addoption("--bench-threads", default="1", help="comma list of thread counts (default 1)")
    group.addoption("--bench-peers", default="torch,onnxruntime,openvino",
                    help="comma list of peers, or 'none'")
    group.addoption("--bench-precision", default="fp32,bf16,int8",
                    help="comma list of weight precisions: fp32, bf16, int8")
    group.addoption("--bench-slow", action="store_true",
                    help="run slow (big) cases in quick mode too")


def quick_mode(config):
    disabled = config.getoption("benchmark_disable", False) and not config.getoption(
        "benchmark_enable", False)
    return bool(disabled) or os.environ.get("FASTLSTM_BENCH_QUICK", "") not in ("", "0")


def pytest_generate_tests(metafunc):
    if "threads" in metafunc.fixturenames:
        spec = metafunc.config.getoption("bench_threads")
        threads = [int(part) for part in spec.split(",") if part.strip()]
        metafunc.parametrize("threads", threads, ids=[f"{n}t" for n in threads])


def pytest_collection_modifyitems(config, items):
    if quick_mode(config) and not config.getoption("bench_slow"):
        skip = pytest.mark.skip(reason="slow case: skipped in quick mode (use --bench-slow)")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def quick(request):
    return quick_mode(request.config)


@pytest.fixture(scope="session")
def requested_precisions(request):
    from fastlstm.benchmarking import peers
    return peers.parse_precisions(request.config.getoption("bench_precision"))


@pytest.fixture(scope="session")
def requested_peers(request, requested_precisions):
    from fastlstm.benchmarking import peers
    return peers.with_precisions(peers.parse(request.config.getoption("bench_peers")),
                                 requested_precisions)


@pytest.fixture(scope="session")
def case_for():
    """case_for(config) -> the shared ``Case`` (weights, input, ONNX export, reference)."""
    def get(config):
        if config.name not in _cases:
            _cases[config.name] = engines.Case(config)
        return _cases[config.name]
    yield get
    for case in _cases.values():
        case.close()
    _cases.clear()
