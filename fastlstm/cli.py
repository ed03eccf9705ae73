"""The ``fastlstm`` command.  Each subcommand lives in its own module exposing
``add_arguments(parser)`` and ``run(args) -> int``; modules are imported only
when their subcommand runs, so ``fastlstm info`` never imports the bench peers."""

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "bench": ("fastlstm.benchmarking.command",
              "time fastlstm on the default model or the config table, side by side with peers"),
    "info": ("fastlstm.info",
             "list the recurrent modules and other tensors of a checkpoint"),
}


def build_parser():
    parser = argparse.ArgumentParser(prog="fastlstm", description=__doc__.split(".")[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(_module=module_name)
        # arguments are added lazily below, once we know which subcommand runs
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if argv and argv[0] in SUBCOMMANDS:
        module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
        sub = argparse.ArgumentParser(prog=f"fastlstm {argv[0]}",
                                      description=SUBCOMMANDS[argv[0]][1])
        module.add_arguments(sub)
        return module.run(sub.parse_args(argv[1:]))
    parser.parse_args(argv)  # prints usage / errors for unknown commands
    return 2


if __name__ == "__main__":
    sys.exit(main())
