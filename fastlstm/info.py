"""``fastlstm info PATH``: the recurrent modules and other tensors of a checkpoint.

Reads only the file's structure (names, shapes, dtypes), never tensor data, and
never imports torch.  Exit status: 0 when every recurrent-looking key set forms a
module, 1 when one does not or the file cannot be read (the reason on stderr).
"""

import sys

from .checkpoint import CheckpointError, open_checkpoint
from .discovery import discover


def add_arguments(parser):
    parser.add_argument("path", help="a PyTorch checkpoint, safetensors file or .npz archive")
    parser.add_argument("--key", action="append", metavar="KEY",
                        help="the entry holding the weights in a pickled checkpoint (e.g. "
                             "state_dict); repeat for nested entries")


def _table(rows, align_right):
    """Rows of strings -> lines with columns padded; ``align_right`` per column."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return ["  " + "  ".join(cell.rjust(width) if right else cell.ljust(width)
                             for cell, width, right in zip(row, widths, align_right)).rstrip()
            for row in rows]


def _module_rows(modules):
    header = ["prefix", "type", "input", "hidden", "proj", "layers", "directions", "bias",
              "parameters", "dtype"]
    rows = [header]
    for m in modules:
        rows.append([m.prefix or "(top level)", m.kind, str(m.input_size), str(m.hidden_size),
                     str(m.proj_size) if m.proj_size else "-", str(m.num_layers),
                     str(m.num_directions), "yes" if m.bias else "no", f"{m.num_parameters:,}",
                     m.dtype])
    return _table(rows, [False, False, True, True, True, True, True, False, True, False])


def format_report(checkpoint, found):
    """The lines ``fastlstm info`` prints for an open checkpoint and its ``Discovery``."""
    entry = f", entry {'/'.join(map(str, checkpoint.entry))!r}" if checkpoint.entry else ""
    lines = [f"{checkpoint.path}: {checkpoint.format}{entry}, {len(checkpoint.tensors)} tensors"]
    lines.append(f"recurrent modules ({len(found.modules)}):")
    lines += _module_rows(found.modules) if found.modules else ["  none"]
    if any(m.kind in ("RNN", "RNNCell") for m in found.modules):
        lines.append("  (an RNN's nonlinearity is not stored in its weights: tanh unless "
                     "load(..., nonlinearity='relu'))")
    if found.problems:
        lines.append(f"invalid recurrent key sets ({len(found.problems)}):")
        lines += [f"  {p.prefix or '(top level)'}: {p.message}" for p in found.problems]
    lines.append(f"other tensors ({len(found.others)}):")
    if found.others:
        rows = [[name, str(shape), checkpoint.tensors[name].dtype.name]
                for name, shape in found.others.items()]
        lines += _table(rows, [False, False, False])
    else:
        lines.append("  none")
    return lines


def run(args):
    key = None if not args.key else (args.key[0] if len(args.key) == 1 else args.key)
    try:
        with open_checkpoint(args.path, key) as checkpoint:
            found = discover(checkpoint.tensors)
            print("\n".join(format_report(checkpoint, found)))
    except CheckpointError as error:
        print(f"fastlstm info: error: {error}", file=sys.stderr)
        return 1
    return 1 if found.problems else 0
