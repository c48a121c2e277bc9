"""``diffcut-gpu bench``: finds the checkout's scripts, passes arguments through, reports new JSON."""

from __future__ import annotations

import json

import pytest

from diffcut_gpu.cli import bench, main

FAKE = '''
import json, sys
from pathlib import Path
print("| col |\\n|---|\\n| " + " ".join(sys.argv[1:]) + " |")
out = Path("docs/results"); out.mkdir(parents=True, exist_ok=True)
(out / "bench_fake.json").write_text(json.dumps({"argv": sys.argv[1:]}))
sys.exit(3 if "--fail" in sys.argv else 0)
'''


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "__init__.py").write_text("")
    (tmp_path / "benchmarks" / "bench_fake.py").write_text(FAKE)
    (tmp_path / "benchmarks" / "common.py").write_text("")
    monkeypatch.setattr(bench, "checkout_root", lambda: tmp_path)
    return tmp_path


def test_smoke(checkout, capfd):
    assert main(["bench", "fake", "--quick", "--device", "cpu"]) == 0
    out, err = capfd.readouterr()
    assert "| --quick --device cpu |" in out
    assert json.loads((checkout / "docs" / "results" / "bench_fake.json").read_text())["argv"] == [
        "--quick", "--device", "cpu"
    ]
    assert "wrote" in err and "bench_fake.json" in err


def test_list_and_all(checkout, capfd):
    assert main(["bench", "--list"]) == 0
    assert capfd.readouterr().out.split() == ["fake"]  # helpers like common.py are not scripts
    assert main(["bench", "--fail"]) == 3  # no name: every bench_* script; a failure's code is returned


def test_real_checkout_lists_scripts(capsys):
    if bench.checkout_root() is None:
        pytest.skip("installed without a source checkout")
    assert main(["bench", "--list"]) == 0
    assert "recursive" in capsys.readouterr().out.split()


def test_exception(checkout, monkeypatch, capsys):
    assert main(["bench", "nope"]) == 2
    assert "expected one of fake" in capsys.readouterr().err
    monkeypatch.setattr(bench, "checkout_root", lambda: None)
    assert main(["bench", "fake"]) == 2
    assert "clone the repository" in capsys.readouterr().err
