"""Thread policy: the spectral stage runs on one thread and restores the count; the CLI's choice.

Run in a fresh process: ``torch.set_num_threads`` changes process-wide MKL state (see the MKL batched-LU
note in docs/benchmarks.md), which must not leak into the other tests.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from diffcut_gpu._threads import auto_threads
from diffcut_gpu.cli.options import threads_arg

ROOT = Path(__file__).resolve().parents[1]


def test_spectral_stage_single_threaded_and_restored():
    code = (
        "import torch\n"
        "from diffcut_gpu import _threads\n"
        "from diffcut_gpu.modules import rwncut\n"
        "from tests.conftest import attention_like\n"
        "torch.set_num_threads(2)\n"
        "seen = []\n"
        "real = rwncut.recursive_ncut\n"
        "def spy(*a, **k):\n"
        "    seen.append(torch.get_num_threads())\n"
        "    return real(*a, **k)\n"
        "rwncut.recursive_ncut = spy\n"
        "cut = rwncut.RWNCut(threshold=0.5)\n"
        "labels = cut(attention_like(1, 36, seed=0, dtype=torch.float32), (6, 6))\n"
        "with _threads.single_threaded():\n"
        "    inner = torch.get_num_threads()\n"
        "print(seen, inner, torch.get_num_threads(), tuple(labels.shape))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split("\n")[0] == "[1] 1 2 (1, 6, 6)"


def test_auto_threads_in_range():
    import torch

    assert 1 <= auto_threads() <= torch.get_num_threads()


def test_threads_arg():
    assert threads_arg("auto") is None and threads_arg("3") == 3
    for bad in ("0", "-1", "two"):
        with pytest.raises(argparse.ArgumentTypeError, match="positive integer or 'auto'"):
            threads_arg(bad)
