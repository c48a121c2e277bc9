"""``diffcut-gpu``: the command line. Each sub-command lives in its own module of this package.

A sub-command module provides ``add_parser(subparsers)`` (register its parser) and ``run(args) -> int``
(the exit code). `SUBCOMMANDS` lists them; one that fails to import (a missing optional dependency) is
registered as a stub that reports why, so the others keep working.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["SUBCOMMANDS", "build_parser", "main"]

#: Sub-command modules of ``diffcut_gpu.cli``, in help order.
SUBCOMMANDS = ("segment", "eval", "bench")
#: Sub-commands that take arguments meant for another program (passed on unparsed).
PASSTHROUGH = ("bench",)


def _version() -> str:
    try:
        from .. import __version__
    except ImportError:  # pragma: no cover - a broken package import is reported when a command runs
        return "unknown"
    return __version__


def _register(subparsers, name: str) -> None:
    """Import ``diffcut_gpu.cli.<name>`` and let it add its parser; the module's ``run`` handles it."""
    qualified = f"{__package__}.{name}"
    try:
        module = importlib.import_module(qualified)
    except Exception as err:  # a broken sub-command must not take the others down
        _register_broken(subparsers, name, err)
        return
    before = set(subparsers.choices)
    module.add_parser(subparsers)
    for added in set(subparsers.choices) - before:
        parser = subparsers.choices[added]
        if parser.get_default("_run") is None:
            parser.set_defaults(_run=module.run)


def _register_broken(subparsers, name: str, err: BaseException) -> None:
    parser = subparsers.add_parser(name, help=f"(unavailable: {type(err).__name__})", add_help=False)
    parser.add_argument("rest", nargs=argparse.REMAINDER)

    def unavailable(_args) -> int:
        print(f"diffcut-gpu {name}: error: this command failed to load: {type(err).__name__}: {err}",
              file=sys.stderr)
        return 2

    parser.set_defaults(_run=unavailable)


def build_parser() -> argparse.ArgumentParser:
    """The ``diffcut-gpu`` parser with every available sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="diffcut-gpu",
        description="Zero-shot image segmentation: recursive random-walk Normalized Cuts on self-attention.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        _register(subparsers, name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the sub-command, return its exit code."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra and args.command not in PASSTHROUGH:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exit_:  # usage errors (2), --help and --version (0): return, do not exit
        return exit_.code if isinstance(exit_.code, int) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    args.extra = extra
    try:
        return int(args._run(args))
    except KeyboardInterrupt:
        print("diffcut-gpu: interrupted; finished outputs are kept, re-run the command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
