"""Models from where the user stands: `pkg.module:factory` found in the working directory as `python -m`
would, `path/to/file.py:factory` (Polygraphy's --model-script), and paths that are not there named so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_one_line_error

FACTORY = """import torch.nn as nn


def build_net():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
"""

CHECK = """def same_sign(reference, outputs, inputs):
    name = next(iter(reference))
    agree = float(((reference[name] > 0) == (outputs[name] > 0)).mean())
    return {"sign_agreement": agree, "passed": agree > 0.99}
"""


def _deployval(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed console script, as a user runs it: its sys.path holds its own folder, not the cwd."""
    script = Path(sys.executable).parent / "deployval"
    command = [str(script)] if script.exists() else [sys.executable, "-c", "from deployval.cli import run; run()"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def test_a_package_in_the_working_directory_is_found(tmp_path):
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "models.py").write_text(FACTORY)
    proc = _deployval("compare", "mypkg.models:build_net", "--input-shape", "x=1x3x16x16", "--backends", "torch,ort",
                      "--iterations", "1", "--json", "r.json", "-q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "r.json").read_text())
    assert [r["status"] for r in report["results"]] == ["reference", "pass"]


def test_a_python_file_and_its_factory_run_in_this_and_an_isolated_process(cli, tmp_path, monkeypatch):
    """The factory is kept as an absolute path: the isolated row's child finds the same file; the file
    imports its neighbour, as a script beside its helpers does."""
    (tmp_path / "sources_layers.py").write_text(FACTORY)  # a name no other test's neighbour has
    (tmp_path / "net.py").write_text("from sources_layers import build_net\n")
    (tmp_path / "checks.py").write_text(CHECK)
    monkeypatch.chdir(tmp_path)
    report = tmp_path / "r.json"
    result = cli("compare", "net.py:build_net", "--input-shape", "x=1x3x16x16", "--backends", "torch,ort",
                 "--iterations", "1", "--isolate", "--task", "./checks.py:same_sign", "--json", report, "-q")
    assert result.code == 0, result.out + result.err
    data = json.loads(report.read_text())
    assert data["model"]["name"] == "net:build_net"
    assert data["model"]["factory"] == f"{tmp_path / 'net.py'}:build_net"
    ort = data["results"][1]
    assert ort["status"] == "pass" and ort["task_check"]["metrics"]["sign_agreement"] == 1.0, ort


@pytest.mark.parametrize(("model", "message"), [
    ("missing.onnx", "file not found: 'missing.onnx'"),
    ("weights/model.pt", "file not found: 'weights/model.pt'"),
    ("missing.py:build", "model 'missing.py:build': file not found: 'missing.py'"),
    ("conv", "unknown model 'conv': did you mean 'convs'?"),
])
def test_a_model_that_is_not_there_says_what_is_missing(cli, model, message):
    assert_one_line_error(cli("compare", model, "--input-shape", "x=1x3x8x8", "-q"), 2, message)


def test_a_module_that_cannot_be_imported_says_where_it_was_looked_for(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(cli("compare", "nopkg.models:build", "--input-shape", "x=1x3x8x8", "-q"), 2,
                          "cannot import 'nopkg.models' (ModuleNotFoundError: No module named 'nopkg'; looked on the "
                          "import path and in the working directory)")
