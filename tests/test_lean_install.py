"""The lean install: query, serve, info, eval, map and build-index --model work with PyTorch absent.

Each check runs in a fresh interpreter whose import system refuses torch and torchvision (a
meta-path finder), which is what `pip install aesearch` without the `train` extra looks like.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NO_TORCH = """
import importlib.abc, sys
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
sys.meta_path.insert(0, _NoTorch())
"""


def run_python(code: str, cwd: Path, *, block_torch: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    source = (NO_TORCH if block_torch else "") + code
    return subprocess.run([sys.executable, "-c", source], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    code = f"sys.argv = ['aesearch', *{args!r}]\nfrom aesearch.interfaces.cli import main\nmain()"
    return run_python(code, cwd)


def test_the_query_path_and_the_server_import_no_torch(tiny_bundle, tmp_path):
    done = run_python(
        f"""
import sys
import numpy as np
from aesearch import SearchEngine
from aesearch.interfaces.server import create_app
engine = SearchEngine.load({str(tiny_bundle)!r})
result = engine.query(engine.image(5), k=3)
create_app(engine=engine)
assert result.hits[0].id == 5 and result.hits[0].distance == 0.0
print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision")))
""",
        tmp_path,
        block_torch=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "args",
    [
        ["info"],
        ["query", "--id", "3", "-k", "2", "--json", "--no-picture"],
        ["eval", "--json"],
        ["map", "--out", "map.png"],
        ["duplicates", "--json"],
    ],
)
def test_commands_over_a_bundle_work_without_torch(tiny_bundle, tmp_path, args):
    done = run_cli([*args, "--index-dir", str(tiny_bundle)], tmp_path)
    assert done.returncode == 0, done.stderr
    if "--json" in args:
        json.loads(done.stdout)


def test_build_index_with_a_model_works_without_torch(tiny_bundle, fake_data_dir, tmp_path):
    model = next(Path(tiny_bundle).rglob("model.safetensors"))
    done = run_cli(
        ["build-index", "--index-dir", "idx", "--model", str(model), "--data-dir", str(fake_data_dir)], tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "70,000 images" in done.stdout


def test_build_index_uses_the_shipped_model_without_torch(fake_data_dir, tmp_path):
    from aesearch.model.checkpoint import load_checkpoint
    from aesearch.model.shipped import shipped_model

    done = run_cli(["build-index", "--index-dir", "idx", "--data-dir", str(fake_data_dir)], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "the one shipped with aesearch" in done.stdout and "70,000 images" in done.stdout
    built = load_checkpoint(tmp_path / "idx" / "model.safetensors")
    assert built.encoder_sha256 == load_checkpoint(shipped_model()).encoder_sha256


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--epochs", "1"],
        ["build-index", "--train", "--index-dir", "x"],
        ["build-index", "--recipe", "seed", "--index-dir", "x"],
        ["build-index", "--epochs", "2", "--index-dir", "x"],
    ],
)
def test_training_without_torch_is_one_line_that_says_what_to_install(tmp_path, args):
    done = run_cli(args, tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "make setup" in done.stderr  # a checkout's advice


def test_the_advice_to_add_torch_fits_the_install(tmp_path, monkeypatch):
    import aesearch.errors
    from aesearch.errors import torch_install_advice

    assert "make setup" in torch_install_advice() and "[train]" in torch_install_advice()  # this checkout
    (tmp_path / "aesearch").mkdir()
    monkeypatch.setattr(aesearch.errors, "__file__", str(tmp_path / "aesearch/errors.py"))  # site-packages
    assert torch_install_advice() == "pip install 'aesearch[train]'"
