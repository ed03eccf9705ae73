"""Presenting results: the markdown table, the JSON file and the plot.

Input everywhere is the list of per-(config, threads, engine) records made by
``engines.bench_cell`` plus the roofs, so the three outputs cannot disagree.
"""

import json

FLAG_LIMIT_NOTE = "!"      # appended to a time whose output differs from PyTorch fp32 beyond tolerance
THREADS_NOTE = "~"         # appended to a time where the engine could not be told the thread count


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


def markdown_table(records, roofs):
    """One row per (config, threads); per engine "median / min" ms; per fastlstm
    backend its speed-up over the fastest fp32 peer, GFLOP/s and multiple of the roof."""
    engines = engine_order(records)
    backends = [name for name in engines if name.startswith("fastlstm")]
    by_key = {(r["config"], r["threads"], r["engine"]): r for r in records}
    rows = list(dict.fromkeys((r["config"], r["threads"]) for r in records))
    header = ["config", "thr", "roof ms"] + [f"{name} ms" for name in engines]
    for name in backends:
        short = name if len(backends) > 1 else "fastlstm"
        header += [f"{short} speed-up", f"{short} GFLOP/s", f"{short} x roof"]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    for config, threads in rows:
        roof = roofs.get((config, threads))
        cells = [config, str(threads), _fmt_ms(roof.roof_ms) if roof else "-"]
        cells += [_cell(by_key.get((config, threads, name))) for name in engines]
        for name in backends:
            record = by_key.get((config, threads, name), {})
            speedup = record.get("speedup_vs_best_fp32_peer")
            cells.append(f"{speedup:.2f}x" if speedup is not None else "-")
            cells.append(f"{record['gflops']:.1f}" if "gflops" in record else "-")
            cells.append(f"{record['x_roof']:.1f}" if "x_roof" in record else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes(records, skipped, machine):
    """Plain-text lines under the table: legend, skipped engines, accuracy, machine figures."""
    lines = ["times: median / min ms per sequence; speed-up = fastest fp32 peer's median / "
             "fastlstm's median (> 1: fastlstm faster); roof = max(recurrent weight reads at the "
             "measured read bandwidth, all flops at the measured GEMM ceiling)"]
    if any(not r.get("threads_applied", True) for r in records if "median_ms" in r):
        lines.append(f"{THREADS_NOTE} thread count not applied (fastlstm.set_num_threads missing "
                     "in this installation): the engine ran with its default threads")
    for name, reason in skipped.items():
        lines.append(f"skipped {name}: {reason}")
    for record in records:
        if "error" in record:
            lines.append(f"error {record['engine']} on {record['config']} "
                         f"(threads {record['threads']}): {record['error']}")
    worst = {}
    for record in records:
        if record.get("max_abs_diff") is not None:
            worst[record["engine"]] = max(worst.get(record["engine"], 0.0), record["max_abs_diff"])
    if worst:
        lines.append("max abs diff vs PyTorch fp32: " + ", ".join(
            f"{name} {value:.1e}" for name, value in worst.items()))
    flagged = [r for r in records if r.get("flagged")]
    for record in flagged:
        lines.append(f"{FLAG_LIMIT_NOTE} {record['engine']} on {record['config']} "
                     f"(threads {record['threads']}): max abs diff {record['max_abs_diff']:.2e} "
                     f"> {record['tolerance']:.0e}")
    below = [r for r in records if r.get("fp32") and r.get("x_roof", 1.0) < 1.0]
    for record in below:
        lines.append(f"WARNING: {record['engine']} on {record['config']} (threads "
                     f"{record['threads']}) ran at {record['x_roof']:.2f}x the roof: a machine "
                     "figure was measured low (cores shared with another process?); that roof "
                     "is not a bound")
    for threads, figures in machine.get("gemm_gflops", {}).items():
        lines.append(f"GEMM ceiling, {threads} thread(s): " + ", ".join(
            f"{label} {value:.0f}" for label, value in figures.items()) + " GFLOP/s")
    for threads, figures in machine.get("read_bandwidth_gbs", {}).items():
        lines.append(f"read bandwidth, {threads} thread(s): " + ", ".join(
            f"{_fmt_bytes(int(size))} {value:.0f}" for size, value in figures.items()) + " GB/s")
    return lines


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
    """ms per config (x threads) for every engine on a log scale, roofs as black bars.

    Returns False (and writes nothing) when matplotlib is not installed.
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = list(dict.fromkeys((r["config"], r["threads"]) for r in records))
    engines = engine_order(records)
    by_key = {(r["config"], r["threads"], r["engine"]): r for r in records}
    figure, axes = plt.subplots(figsize=(max(6.0, 0.9 * len(rows) + 2), 4.5))
    width = 0.8 / max(1, len(engines))
    for index, name in enumerate(engines):
        xs, ys = [], []
        for position, (config, threads) in enumerate(rows):
            record = by_key.get((config, threads, name))
            if record and "median_ms" in record:
                xs.append(position + (index - (len(engines) - 1) / 2) * width)
                ys.append(record["median_ms"])
        axes.bar(xs, ys, width=width, label=name)
    roof_x = [i for i, key in enumerate(rows) if key in roofs]
    if roof_x:
        axes.scatter(roof_x, [roofs[rows[i]].roof_ms for i in roof_x], marker="_", s=600,
                     color="black", label="roof", zorder=3)
    axes.set_yscale("log")
    axes.set_ylabel("ms per sequence (log)")
    axes.set_xticks(range(len(rows)))
    threads_seen = {threads for _, threads in rows}
    labels = [config if len(threads_seen) == 1 else f"{config}\n{threads}t" for config, threads in rows]
    axes.set_xticklabels(labels, rotation=45 if len(rows) > 6 else 0, ha="right" if len(rows) > 6 else "center",
                         fontsize=8)
    axes.grid(axis="y", which="both", alpha=0.3)
    axes.legend(fontsize=8)
    axes.set_title("fastlstm bench: median ms per sequence")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True
