"""The model shipped inside the package: checked before use, recorded, and what build-index uses."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from aesearch.errors import CheckpointError
from aesearch.interfaces.cli import cli
from aesearch.model import shipped
from aesearch.model.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def test_the_shipped_model_matches_its_record():
    record = shipped.shipped_record()
    path = shipped.shipped_model()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == record["sha256"]
    checkpoint = load_checkpoint(path)
    assert checkpoint.info["recipe"] == record["recipe"] and checkpoint.model_config.z_size == 314
    for protocol in ("validation", "test"):
        assert set(record["figures"][protocol]) == {"p_at_10", "map_at_100", "map_at_r", "shirt_p_at_10"}
    assert 0 < record["figures"]["test_mse"] <= 0.0035


def test_the_package_carries_the_shipped_model():
    lines = (ROOT / "pyproject.toml").read_text().splitlines()
    package_data = lines[lines.index("[tool.setuptools.package-data]") + 1]
    assert package_data.startswith("aesearch = [") and '"model/shipped/*"' in package_data


def test_a_damaged_shipped_model_is_one_line(tmp_path, monkeypatch):
    damaged = tmp_path / "fashion-mnist.safetensors"
    shutil.copyfile(shipped.SHIPPED_MODEL, damaged)
    with damaged.open("r+b") as f:
        f.seek(-100, 2)
        f.write(b"\0" * 8)
    monkeypatch.setattr(shipped, "SHIPPED_MODEL", damaged)
    shipped.shipped_model.cache_clear()
    try:
        with pytest.raises(CheckpointError, match=r"is damaged .*reinstall aesearch, or pass --model / --train"):
            shipped.shipped_model()
        result = CliRunner().invoke(cli, ["build-index", "--index-dir", str(tmp_path / "idx")])
        assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
        assert "is damaged" in result.output and not (tmp_path / "idx").exists()
    finally:
        shipped.shipped_model.cache_clear()


def test_a_model_and_training_together_are_refused(tmp_path):
    result = CliRunner().invoke(
        cli, ["build-index", "--model", str(shipped.SHIPPED_MODEL), "--epochs", "3", "--index-dir", str(tmp_path / "x")]
    )
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "drop --train, --recipe, --epochs, --size, --channels and --z-size, or --model" in result.output
