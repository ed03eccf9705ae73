"""One benchmark per (config, engine, threads); ``benchmark.group`` is the config.

Every engine is built, warmed up (JIT compile never timed) and checked against
the case's fp32 reference (PyTorch, or ONNX Runtime for the cell variants torch
has no module for) before the timed part starts; a result beyond the engine's
tolerance (1e-4 for fp32, a sanity bound for bf16/int8) fails the test instead
of being timed.
"""

import pytest

import fastlstm
from fastlstm.backends import REDUCED_PRECISION
from fastlstm.benchmarking import configs, engines, peers, roof, timing

ENGINES = [engines.fastlstm_engine_name(backend, precision)
           for precision in peers.PRECISIONS for backend in fastlstm.available_backends()
           if precision == "fp32" or backend in REDUCED_PRECISION]
ENGINES += list(peers.PEERS)


def _params():
    for config in configs.CONFIGS.values():
        marks = [pytest.mark.slow] if config.slow else []
        for name in ENGINES:
            yield pytest.param(config, name, marks=marks, id=f"{config.name}-{name}")


def _engine(name, requested_peers, requested_precisions):
    if name.startswith(engines.FASTLSTM_PREFIX):
        backend, precision = engines.parse_engine_name(name)
        if precision not in requested_precisions:
            pytest.skip(f"{precision} not in --bench-precision")
        found, skipped = engines.fastlstm_engines([backend], [precision])
    else:
        if name not in requested_peers:
            pytest.skip(f"{name} not in --bench-peers")
        found, skipped = engines.peer_engines([name])
    if not found:
        pytest.skip(f"{name}: {skipped[name]}")
    return found[0]


@pytest.mark.parametrize("config,engine_name", _params())
def test_bench(benchmark, config, engine_name, threads, case_for, requested_peers,
               requested_precisions, quick):
    engine = _engine(engine_name, requested_peers, requested_precisions)
    case = case_for(config)
    if case.reference() is None:
        pytest.skip(f"{case.reference_name} is needed for the fp32 reference every result "
                    "is checked against")
    try:
        runner = engine.build(case, threads)
    except peers.PeerUnavailable as error:
        pytest.skip(str(error))
    runner.activate()
    out = runner()                      # first call: compile / lazy init, and the check
    diff = engines.max_abs_diff(out, case.reference())
    assert diff <= engine.tolerance, (
        f"{engine.name} on {config.name}: max abs diff {diff:.3e} from {case.reference_name} "
        f"fp32 > {engine.tolerance:.0e}; not timed")
    if not quick:
        timing.warm_up(runner)

    benchmark.group = config.name
    benchmark.extra_info.update(engine=engine.name, threads=threads, fp32=engine.fp32,
                                precision=engine.precision, reference=case.reference_name,
                                max_abs_diff=diff, flops=config.flops(),
                                threads_applied=runner.threads_applied)
    result = benchmark(runner)
    assert result is not None
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # None when --benchmark-disable
        benchmark.extra_info["gflops"] = roof.gflops(config, stats.stats.median * 1e3)
