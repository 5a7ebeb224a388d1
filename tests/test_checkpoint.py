"""Checkpoints: round trip, atomic writes, and a one-line error for every bad file."""

import json
import struct

import numpy as np
import pytest
import torch

from aesearch.errors import CheckpointError
from aesearch.model.checkpoint import Checkpoint, encoder_sha256, load_checkpoint, save_checkpoint
from aesearch.model.network import AutoEncoder, ModelConfig
from aesearch.model.runtime import NumpyAutoEncoder


def make_checkpoint(z_size=24, seed=0, **info):
    torch.manual_seed(seed)
    model = AutoEncoder(ModelConfig(z_size=z_size))
    return model, Checkpoint(model.weights(), model.config, {"recipe": "default", "test_mse": 0.01, **info})


def test_round_trip_encodes_identically(tmp_path):
    model, ckpt = make_checkpoint(history=[{"epoch": 1, "loss": 0.5}])
    path = save_checkpoint(tmp_path / "m.safetensors", ckpt)
    loaded = load_checkpoint(path)
    assert loaded.model_config == model.config
    assert loaded.info["history"] == [{"epoch": 1, "loss": 0.5}]
    assert loaded.info["package_version"] and loaded.info["created"]
    assert loaded.encoder_sha256 == ckpt.encoder_sha256
    x = torch.rand(4, 1, 28, 28)
    rebuilt = AutoEncoder.from_weights(loaded.weights, loaded.model_config)
    assert torch.equal(rebuilt.encode(x), model.encode(x))
    np.testing.assert_array_equal(
        NumpyAutoEncoder.from_checkpoint(loaded).encode(x[:, 0].numpy()),
        NumpyAutoEncoder.from_checkpoint(ckpt).encode(x[:, 0].numpy()),
    )


def test_encoder_hash_tracks_encoder_weights_only():
    _, ckpt = make_checkpoint()
    weights = dict(ckpt.weights)
    weights["decoder.0.bias"] = weights["decoder.0.bias"] + 1
    assert encoder_sha256(weights) == ckpt.encoder_sha256
    weights["encoder.5.bias"] = weights["encoder.5.bias"] + 1e-6
    assert encoder_sha256(weights) != ckpt.encoder_sha256


def test_failed_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, make_checkpoint(seed=0)[1])
    before = path.read_bytes()

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.numpy.save_file", explode)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, make_checkpoint(seed=1)[1])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary left behind


def _write_bad(tmp_path, kind):
    path = tmp_path / "bad.safetensors"
    _, ckpt = make_checkpoint()
    if kind == "missing":
        return tmp_path / "nope.safetensors"
    if kind == "folder":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("hello, I am not a checkpoint\n")
    elif kind == "torch-pickle":
        torch.save(AutoEncoder().state_dict(), path)
    elif kind == "truncated":
        save_checkpoint(path, ckpt)
        path.write_bytes(path.read_bytes()[:5000])
    elif kind == "other-safetensors":
        from safetensors.numpy import save_file

        save_file({"w": np.zeros(3, np.float32)}, str(path))
    elif kind in ("newer-format", "other-architecture", "damaged-weights"):
        save_checkpoint(path, ckpt)
        raw = path.read_bytes()
        n = struct.unpack("<Q", raw[:8])[0]
        header = json.loads(raw[8 : 8 + n])
        record = json.loads(header["__metadata__"]["aesearch"])
        if kind == "newer-format":
            record["format_version"] = 99
        elif kind == "other-architecture":
            record["model_config"]["z_size"] = 99
        else:
            record["encoder_sha256"] = "0" * 64
        header["__metadata__"]["aesearch"] = json.dumps(record)
        new = json.dumps(header).encode()
        new += b" " * (-len(new) % 8)
        path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "no checkpoint at .*aesearch train"),
        ("folder", "is a folder"),
        ("empty", "is not an aesearch checkpoint"),
        ("text", "is not an aesearch checkpoint"),
        ("torch-pickle", "is not an aesearch checkpoint"),
        ("truncated", "is not an aesearch checkpoint"),
        ("other-safetensors", "no aesearch metadata"),
        ("newer-format", "newer than this aesearch"),
        ("other-architecture", "different architecture"),
        ("damaged-weights", "do not match their recorded SHA-256"),
    ],
)
def test_bad_checkpoints_give_one_line_errors(tmp_path, kind, message):
    path = _write_bad(tmp_path, kind)
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_saved_files_get_ordinary_permissions(tmp_path):
    import os

    path = save_checkpoint(tmp_path / "m.safetensors", make_checkpoint()[1])
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
