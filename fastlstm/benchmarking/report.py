"""Presenting results: the markdown table, the JSON file and the plot.

Input everywhere is the list of per-(config, threads, engine) records made by
``engines.bench_cell`` plus the roofs {(config, threads, precision): Roof}, so the
outputs cannot disagree.  Tables: fp32 engines; then, per reduced precision run,
its engines with the roof for its weight bytes; then the accuracy of the reduced
precisions against the fp32 reference.
"""

import json

from . import engines as engine_module

FLAG_LIMIT_NOTE = "!"      # appended to a time whose output is beyond tolerance of the reference
THREADS_NOTE = "~"         # appended to a time where the engine could not be told the thread count
# share of the cores used by other processes during a run from which it is called out
BUSY_NOTE = 0.1
# An engine slower on more threads than on one by this factor is called out: a spin-waiting
# thread pool sharing the cores with another (seen on a 2-core VM: torch-int8 thr_med on 2
# threads 3.1-3.3 s in the bench process, 65-90 ms in its own), not a speed of the engine
SLOWER_WITH_THREADS = 2.0


def _fmt_ms(value):
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def engine_order(records):
    """Engine names in first-seen order, fastlstm backends first."""
    names = list(dict.fromkeys(record["engine"] for record in records))
    return sorted(names, key=lambda name: (not name.startswith("fastlstm"), names.index(name)))


def _cell(record):
    if record is None:
        return "-"
    if "skipped" in record:
        return "skip"
    if "error" in record:
        return "error"
    text = f"{_fmt_ms(record['median_ms'])} / {_fmt_ms(record['min_ms'])}"
    if record.get("flagged"):
        text += FLAG_LIMIT_NOTE
    if not record.get("threads_applied", True):
        text += THREADS_NOTE
    return text


def _of_precision(records, precision):
    return [record for record in records if record.get("precision", "fp32") == precision]


def _markdown(header, rows):
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in rows])


def _ratio(value):
    return f"{value:.2f}x" if value is not None else "-"


def markdown_table(records, roofs):
    """The fp32 engines: one row per (config, threads); per engine "median / min" ms; per
    fastlstm backend its speed-up over the fastest fp32 peer, GFLOP/s and multiple of the roof."""
    records = _of_precision(records, "fp32")
    engines = engine_order(records)
    backends = [name for name in engines if name.startswith("fastlstm")]
    by_key = {(r["config"], r["threads"], r["engine"]): r for r in records}
    rows = list(dict.fromkeys((r["config"], r["threads"]) for r in records))
    header = ["config", "thr", "roof ms"] + [f"{name} ms" for name in engines]
    for name in backends:
        short = name if len(backends) > 1 else "fastlstm"
        header += [f"{short} speed-up", f"{short} GFLOP/s", f"{short} x roof"]
    table = []
    for config, threads in rows:
        roof = roofs.get((config, threads, "fp32"))
        cells = [config, str(threads), _fmt_ms(roof.roof_ms) if roof else "-"]
        cells += [_cell(by_key.get((config, threads, name))) for name in engines]
        for name in backends:
            record = by_key.get((config, threads, name), {})
            cells.append(_ratio(record.get("speedup_vs_best_fp32_peer")))
            cells.append(f"{record['gflops']:.1f}" if "gflops" in record else "-")
            cells.append(f"{record['x_roof']:.1f}" if "x_roof" in record else "-")
        table.append(cells)
    return _markdown(header, table)


def precision_table(records, roofs, precision):
    """The ``precision`` (bf16 or int8) engines: one row per (config, threads); the roof for
    that precision's weight bytes; per engine "median / min" ms; per fastlstm engine its
    speed-up over the fastest peer in the same precision and over ONNX Runtime fp32, and
    its multiple of the roof.  Empty string when no engine of that precision ran."""
    chosen = _of_precision(records, precision)
    if not chosen:
        return ""
    engines = engine_order(chosen)
    fastlstm = [name for name in engines if name.startswith("fastlstm")]
    peers = [name for name in engines if name not in fastlstm]
    by_key = {(r["config"], r["threads"], r["engine"]): r for r in records}
    rows = list(dict.fromkeys((r["config"], r["threads"]) for r in chosen))
    header = ["config", "thr", f"{precision} roof ms"] + [f"{name} ms" for name in engines]
    header.append("onnxruntime fp32 ms")
    best_label = (peers[0] if len(peers) == 1 else f"fastest of {'/'.join(peers)}") if peers \
        else f"fastest {precision} peer"
    for name in fastlstm:
        short = name if len(fastlstm) > 1 else f"fastlstm {precision}"
        header += [f"{short} vs {best_label}", f"{short} vs onnxruntime fp32",
                   f"{short} x roof"]
    table = []
    for config, threads in rows:
        roof = roofs.get((config, threads, precision))
        cells = [config, str(threads), _fmt_ms(roof.roof_ms) if roof else "-"]
        cells += [_cell(by_key.get((config, threads, name))) for name in engines]
        cells.append(_cell(by_key.get((config, threads, engine_module.ONNXRUNTIME))))
        for name in fastlstm:
            record = by_key.get((config, threads, name), {})
            cells.append(_ratio(record.get(f"speedup_vs_best_{precision}_peer")))
            cells.append(_ratio(record.get("speedup_vs_onnxruntime_fp32")))
            cells.append(f"{record['x_roof']:.1f}" if "x_roof" in record else "-")
        table.append(cells)
    return _markdown(header, table)


def accuracy_table(accuracy):
    """One row per config: the reference and each reduced-precision engine's max abs
    difference from it (``engines.accuracy``).  Empty string when there is none."""
    if not accuracy:
        return ""
    engines = engine_order([{"engine": name} for row in accuracy.values() for name in row
                            if name != "reference"])
    header = ["config", "reference (fp32)"] + [f"{name} max abs err" for name in engines]
    table = [[config, row["reference"]]
             + [f"{row[name]:.1e}" if name in row else "-" for name in engines]
             for config, row in accuracy.items()]
    return _markdown(header, table)


def tables(records, roofs):
    """Every table, titled, in print order: fp32, each reduced precision, accuracy."""
    parts = [("fp32 weights", markdown_table(records, roofs))]
    for precision in ("bf16", "int8"):
        parts.append((f"{precision} weights", precision_table(records, roofs, precision)))
    parts.append(("accuracy of reduced precisions: max abs difference of the outputs from the "
                  "fp32 reference on the same weights and input",
                  accuracy_table(engine_module.accuracy(records))))
    shown = [(title, text) for title, text in parts if text]
    if len(shown) == 1:
        return shown[0][1]
    return "\n\n".join(f"### {title}\n\n{text}" for title, text in shown)


def notes(records, skipped, machine):
    """Plain-text lines under the tables: legend, skipped engines, accuracy, machine figures."""
    lines = ["times: median / min ms per sequence; speed-up = fastest fp32 peer's median / "
             "fastlstm's median (> 1: fastlstm faster); roof = max(recurrent weight reads at the "
             "measured read bandwidth, all flops at the measured GEMM ceiling)"]
    reduced = [r for r in records if r.get("precision", "fp32") != "fp32"]
    if reduced:
        lines.append("bf16/int8 tables: 'vs X' = X's median / fastlstm's median; their roof "
                     "counts W_hh at 2 (bf16) or 1 byte a weight plus a 4-byte scale per row "
                     "(int8), its compute half at the fp32 GEMM ceiling, which binds fastlstm "
                     "bf16 where it widens its weights to fp32 (CPUs without AMX); engines "
                     "multiplying in bf16/int8 (fastlstm int8's recurrent product, fastlstm "
                     "bf16 on AMX, torch-bf16, torch-int8, openvino-bf16) are bound by its "
                     "memory half only. torch-bf16 keeps activations and state in bf16 too")
    if any(not r.get("threads_applied", True) for r in records if "median_ms" in r):
        lines.append(f"{THREADS_NOTE} thread count not applied (fastlstm.set_num_threads missing "
                     "in this installation): the engine ran with its default threads")
    for name, reason in skipped.items():
        lines.append(f"skipped {name}: {reason}")
    cases = {}
    for record in records:
        if "skipped" in record:
            cases.setdefault((record["engine"], record["skipped"]), []).append(record["config"])
    for (name, reason), configs in cases.items():
        lines.append(f"skipped {name} on {', '.join(dict.fromkeys(configs))}: {reason}")
    for record in records:
        if "error" in record:
            lines.append(f"error {record['engine']} on {record['config']} "
                         f"(threads {record['threads']}): {record['error']}")
    worst, references = {}, {}
    for record in _of_precision(records, "fp32"):
        if record.get("max_abs_diff") is not None:
            worst[record["engine"]] = max(worst.get(record["engine"], 0.0), record["max_abs_diff"])
            references.setdefault(record.get("reference", "torch"), []).append(record["config"])
    if worst:
        others = {name: list(dict.fromkeys(configs)) for name, configs in references.items()
                  if name != "torch"}
        against = "PyTorch fp32" + "".join(f" (on {', '.join(configs)}: {name} fp32)"
                                           for name, configs in others.items())
        lines.append(f"max abs diff of fp32 engines vs {against}: " + ", ".join(
            f"{name} {value:.1e}" for name, value in worst.items()))
    flagged = [r for r in records if r.get("flagged")]
    for record in flagged:
        what = "" if record.get("precision", "fp32") == "fp32" else \
            f" (sanity bound for {record['precision']})"
        lines.append(f"{FLAG_LIMIT_NOTE} {record['engine']} on {record['config']} "
                     f"(threads {record['threads']}): max abs diff {record['max_abs_diff']:.2e} "
                     f"> {record['tolerance']:.0e}{what}")
    for record in records:
        if "x_roof" not in record:
            continue
        if record.get("fp32_arithmetic", record.get("fp32")):
            beaten, what = record["x_roof"] < 1.0, f"{record['x_roof']:.2f}x the roof"
        else:   # multiplies in bf16/int8: only the memory half binds it
            beaten = record["median_ms"] < record.get("roof_memory_ms", 0.0)
            what = (f"{record['median_ms'] / record.get('roof_memory_ms', 1.0):.2f}x the roof's "
                    "memory half")
        if beaten:
            lines.append(f"WARNING: {record['engine']} on {record['config']} (threads "
                         f"{record['threads']}) ran at {what}: a machine figure was measured "
                         "low (cores shared with another process?); that roof is not a bound")
    lines.extend(_slower_with_threads(records))
    share, load = machine.get("other_processes_cpu_share"), machine.get("load_average")
    if share is not None or load:
        text = f"machine: {machine.get('cores')} cores"
        if load:
            text += f", load average at start {_fmt_load(load)} (1, 5, 15 min)"
        if share is not None:
            text += f", other processes used {share:.0%} of the cores during the run"
            if share >= BUSY_NOTE:
                text += (": figures with as many threads as cores shared them and can be far "
                         "off (two orders of magnitude for engines whose threads spin-wait)")
        lines.append(text)
    for threads, figures in machine.get("gemm_gflops", {}).items():
        lines.append(f"GEMM ceiling, {threads} thread(s): " + ", ".join(
            f"{label} {value:.0f}" for label, value in figures.items()) + " GFLOP/s")
    for threads, figures in machine.get("read_bandwidth_gbs", {}).items():
        lines.append(f"read bandwidth, {threads} thread(s): " + ", ".join(
            f"{_fmt_bytes(int(size))} {value:.0f}" for size, value in figures.items()) + " GB/s")
    return lines


def _slower_with_threads(records):
    """Warnings for engines whose median on N > 1 threads is SLOWER_WITH_THREADS times (or
    more) their median on one thread for the same config."""
    one = {(r["engine"], r["config"]): r["median_ms"] for r in records
           if "median_ms" in r and r["threads"] == 1}
    lines = []
    for record in records:
        base = one.get((record["engine"], record["config"]))
        if "median_ms" not in record or record["threads"] == 1 or not base:
            continue
        ratio = record["median_ms"] / base
        if ratio >= SLOWER_WITH_THREADS:
            lines.append(f"WARNING: {record['engine']} on {record['config']} took {ratio:.1f}x "
                         f"its 1-thread time on {record['threads']} threads: its threads "
                         "contended for the cores (spin-waiting pools?); that row's ratio is "
                         "not a speed of the engines")
    return lines


def _fmt_load(values):
    return " ".join(f"{value:.2f}" for value in values)


def _fmt_bytes(size):
    if size >= 1 << 20 and size % (1 << 20) == 0:
        return f"{size >> 20} MiB"
    return f"{size / 1024:.0f} KiB"


def write_json(path, payload):
    with open(path, "w") as handle:
        json.dump(payload, handle, indent=2, default=_json_default)


def _json_default(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def plot(path, records, roofs):
    """ms per config (x threads) for every engine on a log scale, roofs as black bars; a second
    panel for the bf16/int8 engines (with their roofs) when any ran.

    Returns False (and writes nothing) when matplotlib is not installed.
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = list(dict.fromkeys((r["config"], r["threads"]) for r in records))
    fp32 = _of_precision(records, "fp32")
    reduced = [r for r in records if r.get("precision", "fp32") != "fp32"]
    panels = [(fp32, ("fp32",), "fp32 weights")]
    if reduced:
        panels.append((reduced, ("bf16", "int8"), "bf16 / int8 weights"))
    panels = [panel for panel in panels if panel[0]]
    figure, all_axes = plt.subplots(len(panels), 1, squeeze=False, sharex=True,
                                    figsize=(max(6.0, 0.9 * len(rows) + 2), 4.5 * len(panels)))
    for axes, (chosen, precisions, title) in zip(all_axes[:, 0], panels):
        _bars(axes, chosen, rows, roofs, precisions)
        axes.set_title(f"fastlstm bench: median ms per sequence, {title}")
    threads_seen = {threads for _, threads in rows}
    labels = [config if len(threads_seen) == 1 else f"{config}\n{threads}t" for config, threads in rows]
    axes = all_axes[-1, 0]
    axes.set_xticks(range(len(rows)))
    axes.set_xticklabels(labels, rotation=45 if len(rows) > 6 else 0,
                         ha="right" if len(rows) > 6 else "center", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def _bars(axes, records, rows, roofs, precisions):
    engines = engine_order(records)
    by_key = {(r["config"], r["threads"], r["engine"]): r for r in records}
    width = 0.8 / max(1, len(engines))
    for index, name in enumerate(engines):
        xs, ys = [], []
        for position, (config, threads) in enumerate(rows):
            record = by_key.get((config, threads, name))
            if record and "median_ms" in record:
                xs.append(position + (index - (len(engines) - 1) / 2) * width)
                ys.append(record["median_ms"])
        axes.bar(xs, ys, width=width, label=name)
    # (size, colour): a shorter grey bar for int8 stays visible on bf16's where they agree
    styles = {"fp32": (600, "black"), "bf16": (600, "black"), "int8": (250, "dimgray")}
    for precision in precisions:
        roof_x = [i for i, (config, threads) in enumerate(rows)
                  if (config, threads, precision) in roofs]
        if roof_x:
            size, colour = styles[precision]
            axes.scatter(roof_x, [roofs[rows[i] + (precision,)].roof_ms for i in roof_x],
                         marker="_", s=size, linewidths=2, color=colour,
                         label=f"{precision} roof", zorder=3)
    axes.set_yscale("log")
    axes.set_ylabel("ms per sequence (log)")
    axes.grid(axis="y", which="both", alpha=0.3)
    axes.legend(fontsize=7, ncol=2)
