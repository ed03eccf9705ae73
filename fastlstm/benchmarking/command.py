"""``fastlstm bench``: time fastlstm side by side with its peers.

With no option it times the default model (LSTM 256/256, batch 1, 100 steps,
seeded weights) on one thread with every fastlstm backend and, when PyTorch is
installed, ``torch.nn.LSTM`` on the same weights: ms per sequence and per step,
the speed ratio and the max abs difference.  With any option it runs the config
table (``--configs``, default all) and prints a markdown table with roofs.

``--precision fp32,bf16,int8`` adds fastlstm with bf16 and int8 weights (on the
backends that run them) and the reduced-precision forms of the requested peers
(torch -> torch-bf16, torch-int8; openvino -> openvino-bf16), each in a table of
its precision with the roof for its weight bytes, plus an accuracy table.
"""

import os
import platform
import sys
import time

import fastlstm

from . import configs as config_registry
from . import engines as engine_module
from . import peers as peer_registry
from . import report
from . import roof as roof_module

TABLE_OPTIONS = ("configs", "threads", "peers", "backends", "precision", "json", "plot", "repeat",
                 "quick")


def add_arguments(parser):
    names = ",".join(config_registry.CONFIGS)
    parser.add_argument("--configs", metavar="A,B|all",
                        help=f"configs to run (default with any option: all): {names}")
    parser.add_argument("--threads", metavar="N,M",
                        help="thread counts, applied to every engine (default 1)")
    parser.add_argument("--peers", metavar="P,Q",
                        help=f"peers to compare with (default torch): {','.join(peer_registry.PEERS)} "
                             "or none; the bf16/int8 ones are added by --precision and "
                             "reported apart")
    parser.add_argument("--precision", metavar="P,Q",
                        help="weight precisions to time fastlstm in (default fp32): "
                             f"{','.join(peer_registry.PRECISIONS)}; bf16/int8 bring the "
                             "requested peers' bf16/int8 forms and an accuracy table")
    parser.add_argument("--backends", metavar="B,C",
                        help="fastlstm backends (default: every available one)")
    parser.add_argument("--json", metavar="PATH", help="write every result and roof to PATH")
    parser.add_argument("--plot", metavar="PATH", help="write a log-scale plot (needs matplotlib)")
    parser.add_argument("--repeat", type=int, metavar="N",
                        help="timed calls per engine (default: adaptive, a fixed time budget)")
    parser.add_argument("--quick", action="store_true",
                        help="few repeats and a smaller GEMM for the roof: checks the harness, "
                             "figures are rough")


def run(args):
    table_mode = any(getattr(args, name) not in (None, False) for name in TABLE_OPTIONS)
    try:
        settings = _settings(args, table_mode)
    except ValueError as error:
        print(f"fastlstm bench: {error}", file=sys.stderr)
        return 2
    if table_mode:
        return _run_table(args, **settings)
    return _run_default(**settings)


def _settings(args, table_mode):
    if args.repeat is not None and args.repeat < 1:
        raise ValueError(f"--repeat: expected a positive integer, got {args.repeat}")
    threads = _parse_threads(args.threads)
    spec = args.configs if args.configs is not None else ("all" if table_mode else None)
    precisions = peer_registry.parse_precisions(args.precision)
    peers = peer_registry.parse(args.peers if args.peers is not None else "torch")
    return dict(configs=config_registry.select(spec), threads=threads,
                peers=peer_registry.with_precisions(peers, precisions),
                backends=engine_module.parse_backends(args.backends), precisions=precisions)


def _parse_threads(spec):
    if spec is None:
        return [1]
    try:
        values = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise ValueError(f"--threads: expected a comma list of positive integers, got {spec!r}")
    return list(dict.fromkeys(values))


# -- the main job: the default model ------------------------------------------------------------

def _run_default(configs, threads, peers, backends, precisions):
    config, n_threads = configs[0], threads[0]
    engines, skipped = engine_module.requested_engines(backends, peers, precisions)
    print(f"fastlstm bench: default model {config.name}: {config.describe()}, "
          f"seed {config_registry.SEED}, {n_threads} thread(s)")
    case = engine_module.Case(config)
    try:
        records = engine_module.bench_cells(engines, case, n_threads)
        for record in records:
            print(_default_line(record))
    finally:
        case.close()
    for name, reason in skipped.items():
        print(f"{name}: skipped ({reason})")
    timed = {r["engine"]: r for r in records if "median_ms" in r}
    torch_record = timed.get("torch")
    for record in timed.values():
        if record["kind"] != "fastlstm":
            continue
        if not record["threads_applied"]:
            print(f"{record['engine']}: note: fastlstm.set_num_threads is missing, "
                  "it ran with its default threads")
        if torch_record is not None:
            ratio = torch_record["median_ms"] / record["median_ms"]
            verdict = "faster" if ratio >= 1 else "slower"
            shown = ratio if ratio >= 1 else 1 / ratio
            print(f"{record['engine']} is {shown:.2f}x {verdict} than torch "
                  f"(torch/fastlstm = {ratio:.2f}); max abs diff {record['max_abs_diff']:.2e}"
                  + (" (FLAGGED: above 1e-4)" if record["flagged"] else ""))
    return 1 if any("error" in r or r.get("flagged") for r in records) else 0


def _default_line(record):
    name = f"{record['engine']:<16}"
    if "error" in record:
        return f"{name} error: {record['error']}"
    if "skipped" in record:
        return f"{name} skipped: {record['skipped']}"
    return (f"{name} {record['median_ms']:8.3f} ms/sequence  "
            f"{record['ms_per_step'] * 1e3:8.2f} us/step  (min {record['min_ms']:.3f} ms, "
            f"{record['repeats']} runs, {record['gflops']:.1f} GFLOP/s)")


# -- the config table ----------------------------------------------------------------------------

def _run_table(args, configs, threads, peers, backends, precisions):
    engines, skipped = engine_module.requested_engines(backends, peers, precisions)
    load_at_start = _load_average()
    others = _OtherProcesses()
    roof_precisions = [p for p in peer_registry.PRECISIONS
                       if p == "fp32" or any(engine.precision == p for engine in engines)]
    started = time.time()
    progress = _Progress(len(configs) * len(threads) * (len(engines) + len(roof_precisions))
                         + (0 if args.quick else 1))
    # machine figures first, while no engine runs: subprocess GEMMs, hot reads
    for config in configs:
        for n_threads in threads:
            for precision in roof_precisions:
                progress.step(f"roof {config.name} {n_threads}t {precision}")
                roof_module.config_roof(config, n_threads, args.quick, precision)
    records = []
    for config in configs:
        case = engine_module.Case(config)
        try:
            for n_threads in threads:
                records.extend(engine_module.bench_cells(
                    engines, case, n_threads, quick=args.quick, repeat=args.repeat,
                    on_engine=lambda engine, n=n_threads: progress.step(
                        f"{config.name} {n}t {engine.name}")))
        finally:
            case.close()
    if not args.quick:
        # a second look at the machine figures, the better one kept: on a shared
        # machine either look may have had company on the cores
        progress.step("roof: second measurement")
        roof_module.remeasure()
    progress.close()
    roofs = {(config.name, n, precision): roof_module.config_roof(config, n, args.quick, precision)
             for config in configs for n in threads for precision in roof_precisions}
    engine_module.add_roofs(records, roofs)
    engine_module.add_speedups(records)
    machine = dict(roof_module.measured(), cores=os.cpu_count(), load_average=load_at_start,
                   other_processes_cpu_share=others.share())
    print(report.tables(records, roofs))
    print()
    for line in report.notes(records, skipped, machine):
        print(line)
    if args.json:
        report.write_json(args.json, _payload(args, configs, threads, precisions, records, roofs,
                                              skipped, machine, time.time() - started))
        print(f"wrote {args.json}")
    if args.plot:
        if report.plot(args.plot, records, roofs):
            print(f"wrote {args.plot}")
        else:
            print("plot skipped: matplotlib not installed")
    return 1 if any("error" in r or r.get("flagged") for r in records) else 0


def _load_average():
    """(1, 5, 15)-minute load averages, or None where the OS does not report them."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None


class _OtherProcesses:
    """The share of the machine's cores that other processes used since construction: all
    busy CPU time (/proc/stat) minus this process's and its children's, over wall time x
    cores, at most 1.  None where /proc/stat is missing (not Linux), or when less wall
    time than MIN_TICKS clock ticks has passed: /proc/stat counts whole ticks, so one
    tick over a few microseconds would read as a hundred times the machine."""

    MIN_TICKS = 20

    def __init__(self):
        self._start = self._sample()

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat") as handle:
                fields = [int(value) for value in handle.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # less idle, iowait
        mine = os.times()
        return (time.monotonic(), busy / os.sysconf("SC_CLK_TCK"),
                mine.user + mine.system + mine.children_user + mine.children_system)

    def share(self):
        end = self._sample()
        if self._start is None or end is None or end[0] <= self._start[0]:
            return None
        wall, busy, mine = (b - a for a, b in zip(self._start, end))
        if wall < self.MIN_TICKS / os.sysconf("SC_CLK_TCK"):
            return None
        return round(min(1.0, max(0.0, busy - mine) / (wall * (os.cpu_count() or 1))), 3)


def _payload(args, configs, threads, precisions, records, roofs, skipped, machine, seconds):
    return {
        "meta": {
            "fastlstm": fastlstm.__version__,
            "backends": fastlstm.available_backends(),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "threads": threads,
            "precisions": precisions,
            "quick": bool(args.quick),
            "repeat": args.repeat,
            "seed": config_registry.SEED,
            "seconds": seconds,
            "versions": _peer_versions(),
        },
        "configs": {config.name: config.as_dict() for config in configs},
        "machine": machine,
        "roofs": [dict(config=name, threads=n, precision=precision, **roof.as_dict())
                  for (name, n, precision), roof in roofs.items()],
        "results": records,
        "accuracy": engine_module.accuracy(records),
        "skipped": skipped,
    }


def _peer_versions():
    versions = {}
    for name in peer_registry.PEERS:
        try:
            versions[name] = peer_registry.load(name).version()
        except peer_registry.PeerUnavailable:
            versions[name] = None
    return versions


class _Progress:
    """tqdm on stderr when installed, else one plain line per step."""

    def __init__(self, total):
        self.total, self.done = total, 0
        try:
            from tqdm import tqdm
            self._bar = tqdm(total=total, file=sys.stderr, leave=False, dynamic_ncols=True)
        except ImportError:
            self._bar = None

    def step(self, label):
        if self._bar is not None:
            if self.done:
                self._bar.update(1)
            self._bar.set_description_str(label)
        else:
            print(f"[{self.done + 1}/{self.total}] {label}", file=sys.stderr, flush=True)
        self.done += 1

    def close(self):
        if self._bar is not None:
            self._bar.update(1)
            self._bar.close()
