"""Model checkpoints: one safetensors file holding the weights and everything that describes them.

safetensors rather than torch.save: it loads without torch (the query path never imports it), it
cannot execute code on load, and it is a well-kept format other tools read. The weights keep the
seed's state_dict names and shapes; the metadata (JSON under the key "aesearch") records the model
config, the training recipe and settings, per-epoch history, test MSE, a fingerprint of the
training data and the package version, so a checkpoint is rebuilt and judged from itself alone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aesearch._version import __version__
from aesearch.atomic import atomic_path
from aesearch.errors import CheckpointError, reason
from aesearch.model.architecture import ModelConfig, parameter_shapes

FORMAT = "aesearch-checkpoint"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Checkpoint:
    """A trained model: float32 weights under the seed's names, its config, and its record."""

    weights: dict[str, np.ndarray]
    model_config: ModelConfig
    info: dict = field(default_factory=dict)  # recipe, history, test_mse, data_fingerprint, ...

    @property
    def encoder_sha256(self) -> str:
        return encoder_sha256(self.weights)

    @property
    def decoder_sha256(self) -> str:
        """Identity of the decoder: what reconstructions, explanations and the trust score come from."""
        return _part_sha256(self.weights, ("decoder.", "prior.condition_"))  # a prior's condition feeds the decoder

    @property
    def test_mse(self) -> float | None:
        return self.info.get("test_mse")


def encoder_sha256(weights: dict[str, np.ndarray]) -> str:
    """Identity of the encoder: SHA-256 over its parameter names, shapes and float32 bytes."""
    return _part_sha256(weights, ("encoder.", "prior.grey."))  # a prior's grey model makes part of each vector


def _part_sha256(weights: dict[str, np.ndarray], prefix: str | tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for name in sorted(k for k in weights if k.startswith(prefix)):
        array = np.ascontiguousarray(weights[name], dtype=np.float32)
        digest.update(f"{name}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def save_checkpoint(path: str | Path, checkpoint: Checkpoint) -> Path:
    """Write atomically: an interrupted save never replaces a good checkpoint with half a file."""
    from safetensors.numpy import save_file

    _check_weights(checkpoint.weights, checkpoint.model_config, Path(path))
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **checkpoint.info,
        "model_config": checkpoint.model_config.to_dict(),
        "encoder_sha256": checkpoint.encoder_sha256,
    }
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in checkpoint.weights.items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "aesearch": json.dumps(record)})
    return path


# What a checkpoint's refusal advises for a checkpoint file of one's own; a bundle's model gets the
# bundle's advice instead (store/bundle.py: rebuild the index), which a new user found missing.
STANDALONE_ADVICE = (
    "pass a file written by `aesearch train`",
    "retrain with `aesearch train`",
    "use a checkpoint written by `aesearch train`",
)


def with_advice(error: CheckpointError, advice: str) -> str:
    """error's message with its standalone advice replaced by advice (or advice added)."""
    message = str(error)
    for standalone in STANDALONE_ADVICE:
        if message.endswith(f": {standalone}"):
            return f"{message[: -len(standalone) - 2]}: {advice}"
    return message if message.endswith(": upgrade aesearch") else f"{message}: {advice}"


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and validate a checkpoint; every problem is one CheckpointError line."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: train one with `aesearch train --out {path}`")
    if not path.is_file():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file: pass the .safetensors file inside it")
    not_ours = f"{path} is not an aesearch checkpoint"
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
            weights = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError, MemoryError) as exc:
        raise CheckpointError(f"{not_ours} ({reason(exc)}): pass a file written by `aesearch train`") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{not_ours} (no aesearch metadata): pass a file written by `aesearch train`")
    try:
        record = json.loads(metadata["aesearch"])
        version = int(record["format_version"])
        model_config = ModelConfig.from_dict(record["model_config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} has damaged metadata ({reason(exc)}): retrain with `aesearch train`") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} is checkpoint format {version}, newer than this aesearch ({__version__}) reads "
            f"(format {FORMAT_VERSION}): upgrade aesearch"
        )
    _check_weights(weights, model_config, path)
    checkpoint = Checkpoint(weights, model_config, record)
    if record.get("encoder_sha256") not in (None, checkpoint.encoder_sha256):
        raise CheckpointError(f"{path} is damaged: its encoder weights do not match their recorded SHA-256")
    return checkpoint


def read_model_config(path: str | Path) -> ModelConfig:
    """The model config of the checkpoint at path, from its metadata alone (no weights read)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return ModelConfig.from_dict(json.loads((f.metadata() or {})["aesearch"])["model_config"])
    except (SafetensorError, OSError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{path} has no readable model config ({reason(exc)}): retrain with `aesearch train`"
        ) from None


def _check_weights(weights: dict[str, np.ndarray], config: ModelConfig, path: Path) -> None:
    expected = parameter_shapes(config)
    if set(weights) != set(expected):
        missing, extra = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
        raise CheckpointError(
            f"{path} holds a different architecture (missing {missing or 'nothing'}, unexpected "
            f"{extra or 'nothing'}): use a checkpoint written by `aesearch train`"
        )
    for name, shape in expected.items():
        if tuple(weights[name].shape) != shape:
            raise CheckpointError(
                f"{path} holds a different architecture ({name} has shape {tuple(weights[name].shape)}, "
                f"expected {shape} for a {config.describe()} model): use a checkpoint written by `aesearch train`"
            )
        if not np.all(np.isfinite(weights[name])):
            raise CheckpointError(
                f"{path} is damaged ({name} holds NaN or infinite values): retrain with `aesearch train`"
            )
