"""``diffcut-gpu bench [NAME] [ARGS...]``: run the timing scripts of a source checkout's ``benchmarks/``.

``NAME`` is a script of ``benchmarks/`` without the ``bench_`` prefix (``recursive`` runs
``python -m benchmarks.bench_recursive``) or ``plot``; no name runs every ``bench_*`` script in turn.
Remaining arguments (``--quick``, ``--device cuda`` ...) go to the script. Scripts print their table and
write JSON to ``docs/results/``. The benchmarks are not part of an installed wheel: this needs a checkout.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from .summary import EXIT_USAGE

__all__ = ["add_parser", "available", "checkout_root", "run"]


def checkout_root() -> Path | None:
    """The source checkout holding this package and a ``benchmarks/`` folder, or None for a plain install."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "benchmarks" / "__init__.py").is_file() else None


def available(root: Path) -> dict[str, str]:
    """``{name: module}`` of the runnable scripts: ``bench_<name>.py`` and ``plot.py``."""
    found = sorted((root / "benchmarks").glob("bench_*.py"))
    scripts = {p.stem[len("bench_"):]: f"benchmarks.{p.stem}" for p in found}
    if (root / "benchmarks" / "plot.py").is_file():
        scripts["plot"] = "benchmarks.plot"
    return scripts


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench",
        help="run benchmark scripts of a source checkout (benchmarks/); JSON goes to docs/results/",
        description="Run a benchmark script of the checkout's benchmarks/ folder (or all of them). "
        "Arguments after NAME are passed to the script, e.g. `diffcut-gpu bench recursive --quick`.",
    )
    p.add_argument("name", nargs="?", help="script name without 'bench_' (or 'plot'); omitted: all bench_*")
    p.add_argument("--list", action="store_true", help="list the scripts and exit")
    return p


def _results(root: Path) -> dict[Path, float]:
    folder = root / "docs" / "results"
    return {p: p.stat().st_mtime for p in folder.glob("*.json")} if folder.is_dir() else {}


def run(args: argparse.Namespace) -> int:
    """Run the chosen script(s) from the checkout root with this Python; returns the first failing code."""
    root = checkout_root()
    if root is None:
        print(
            "diffcut-gpu bench: error: the benchmark scripts ship with the source, not with the installed "
            f"package ({Path(__file__).resolve().parents[1]}); clone the repository and run "
            "`pip install -e .` there, then `diffcut-gpu bench`",
            file=sys.stderr,
        )
        return EXIT_USAGE
    scripts = available(root)
    if args.list:
        print("\n".join(scripts) if scripts else "(no benchmark scripts)")
        return 0
    if args.name is None:
        names = [n for n, module in scripts.items() if module.startswith("benchmarks.bench_")]
    else:
        name = args.name.removeprefix("bench_")
        if name not in scripts:
            print(f"diffcut-gpu bench: error: name: expected one of {', '.join(scripts)}, got {args.name!r}",
                  file=sys.stderr)
            return EXIT_USAGE
        names = [name]
    extra = list(getattr(args, "extra", []) or [])
    before = _results(root)
    path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    code = 0
    for name in names:
        cmd = [sys.executable, "-m", scripts[name], *extra]
        print(f"$ {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        rc = subprocess.run(cmd, cwd=root, env=env).returncode
        code = code or rc
    for path, mtime in sorted(_results(root).items()):
        if before.get(path) != mtime:
            print(f"wrote {path}", file=sys.stderr)
    return code
