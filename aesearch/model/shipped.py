"""The trained Fashion-MNIST model that ships inside the package.

`aesearch build-index` uses it unless told to train (`--train`, `--recipe`, `--epochs`), so a new
user waits for no training and the lean install (no PyTorch) builds the default bundle. It was
trained once by `scripts/train_shipped_model.py` (seeded); `fashion-mnist.json` beside it records
the file's SHA-256, the recipe, the machine and the figures that run reached, and the file is
checked against that SHA-256 before use: a damaged install says so in one line.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

from aesearch.errors import CheckpointError

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
SHIPPED_MODEL = SHIPPED_DIR / "fashion-mnist.safetensors"
SHIPPED_RECORD = SHIPPED_DIR / "fashion-mnist.json"


def shipped_record() -> dict:
    """What the shipped model is: its SHA-256, recipe, training run and measured figures."""
    try:
        return json.loads(SHIPPED_RECORD.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"the model record shipped with aesearch ({SHIPPED_RECORD}) cannot be read ({exc!s:.80}): "
            "reinstall aesearch, or pass --model / --train"
        ) from None


@cache
def shipped_model() -> Path:
    """The shipped checkpoint's path, once its bytes match the recorded SHA-256."""
    expected = shipped_record().get("sha256")
    try:
        actual = hashlib.sha256(SHIPPED_MODEL.read_bytes()).hexdigest()
    except OSError as exc:
        raise CheckpointError(
            f"the model shipped with aesearch ({SHIPPED_MODEL}) cannot be read ({exc.strerror or exc}): "
            "reinstall aesearch, or pass --model / --train"
        ) from None
    if actual != expected:
        raise CheckpointError(
            f"the model shipped with aesearch ({SHIPPED_MODEL}) is damaged (its SHA-256 is not the "
            "recorded one): reinstall aesearch, or pass --model / --train"
        )
    return SHIPPED_MODEL
