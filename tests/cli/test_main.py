"""``diffcut-gpu`` front door: sub-commands registered from their modules, exit codes, ``python -m``."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import types
from pathlib import Path

from diffcut_gpu.cli import build_parser, main

main_module = sys.modules["diffcut_gpu.cli.main"]  # the module (the package exports the function)


def test_smoke(capsys):
    parser = build_parser()
    choices = parser._subparsers._group_actions[0].choices
    assert {"segment", "bench"} <= set(choices)
    assert main(["--version"]) == 0
    assert "diffcut-gpu" in capsys.readouterr().out
    assert main([]) == 2  # no command: help on stderr, usage error


def test_exception(capsys):
    assert main(["frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main(["segment"]) == 2  # PATH and --out are required
    assert "required" in capsys.readouterr().err


def test_registration_hook(monkeypatch, capsys):
    """A sub-command module that cannot be imported (missing, or broken) becomes a stub that says why;
    none is silently left out."""
    real_import = importlib.import_module

    def fake_import(name, *args):
        if name.endswith(".eval"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        if name.endswith(".bench"):
            raise SyntaxError("bad syntax in bench.py")
        return real_import(name, *args)

    monkeypatch.setattr(main_module.importlib, "import_module", fake_import)
    choices = build_parser()._subparsers._group_actions[0].choices
    assert {"eval", "segment", "bench"} <= set(choices)
    assert main(["bench", "--quick"]) == 2
    assert "failed to load: SyntaxError: bad syntax" in capsys.readouterr().err
    assert main(["eval"]) == 2
    assert "failed to load: ModuleNotFoundError" in capsys.readouterr().err


def test_exit_codes_and_int_options_have_one_home():
    from diffcut_gpu.cli import eval as eval_cli
    from diffcut_gpu.cli import options, summary

    assert (eval_cli.EXIT_OK, eval_cli.EXIT_USAGE) == (summary.EXIT_OK, summary.EXIT_USAGE) == (0, 2)
    assert eval_cli._positive is options.positive_int
    assert "EXIT_USAGE =" not in Path(eval_cli.__file__).read_text()


def test_module_run_is_the_handler(monkeypatch):
    fake = types.SimpleNamespace(
        add_parser=lambda sub: sub.add_parser("hello").add_argument("--n", type=int, default=1),
        run=lambda args: 40 + args.n,
    )
    real_import = importlib.import_module
    monkeypatch.setattr(main_module, "SUBCOMMANDS", ("hello",))
    monkeypatch.setattr(main_module.importlib, "import_module",
                        lambda name, *a: fake if name.endswith(".hello") else real_import(name, *a))
    assert main(["hello", "--n", "2"]) == 42
    assert isinstance(build_parser(), argparse.ArgumentParser)


def test_python_m():
    run = subprocess.run([sys.executable, "-m", "diffcut_gpu", "segment", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0 and "--model-path" in run.stdout and "--formats" in run.stdout
