"""Index bundles: one self-contained folder that describes, and checks, itself. Never imports torch.

    indexes/fashion-mnist/
      manifest.json       what built it, and the SHA-256 and size of every other file
      model.safetensors   the checkpoint whose encoder produced the vectors
      index.faiss         the FAISS index of every image's latent vector
      images.npy          (n, 28, 28) uint8: results can be shown without the dataset
      metadata.npy        (n,) records: split, position in its split, label
      transform.npz       optional: the affine transform (whitening) applied before the metric
      trust.json          distributions of reconstruction error and nearest-neighbour distance

A bundle is written into a temporary folder beside the target and swapped in whole (atomic.py);
loading verifies the manifest, every checksum, and that index, encoder and arrays agree, and
refuses anything else with one line that says what is wrong and how to fix it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aesearch._version import __version__
from aesearch.errors import BundleError, CheckpointError, reason
from aesearch.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from aesearch.search.index import AffineTransform, IndexSpec, VectorIndex
from aesearch.search.trust import TrustCalibration
from aesearch.store.atomic import atomic_folder

FORMAT = "aesearch-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL_FILE = "model.safetensors"
INDEX_FILE = "index.faiss"
IMAGES_FILE = "images.npy"
METADATA_FILE = "metadata.npy"
TRANSFORM_FILE = "transform.npz"
TRUST_FILE = "trust.json"
METADATA_DTYPE = np.dtype([("split", "u1"), ("position", "<u4"), ("label", "u1")])


@dataclass
class Bundle:
    """A loaded, verified index bundle."""

    path: Path
    manifest: dict
    checkpoint: Checkpoint
    index: VectorIndex
    images: np.ndarray  # (n, 28, 28) uint8, memory-mapped
    metadata: np.ndarray  # (n,) METADATA_DTYPE
    trust: TrustCalibration

    @property
    def class_names(self) -> list[str]:
        return self.manifest["class_names"]

    @property
    def split_names(self) -> list[str]:
        return self.manifest["split_names"]

    def __len__(self) -> int:
        return len(self.metadata)


def no_index_message(path: Path) -> str:
    where = f"{path} (from {Path.cwd()})" if not path.is_absolute() else str(path)
    return f"no index at {where}: run `aesearch build-index --index-dir {path}` first, or pass --index-dir"


def _rebuild(path: Path) -> str:
    return f"rebuild with `aesearch build-index --index-dir {path}` (--model CHECKPOINT reuses a trained model)"


def manifest_digest(manifest: dict) -> str:
    """SHA-256 of the manifest's content without its own digest: catches edits and damage."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def write_bundle(
    target: str | Path,
    *,
    checkpoint: Checkpoint,
    index: VectorIndex,
    images: np.ndarray,
    metadata: np.ndarray,
    info: dict,
    trust: TrustCalibration,
) -> dict:
    """Write a complete bundle atomically and return its manifest.

    Args:
        info: recorded in the manifest as given (dataset name, class_names, split_names,
            data_fingerprint, and anything else worth knowing about the build).
    """
    images = np.ascontiguousarray(images, dtype=np.uint8)
    assert images.ndim == 3 and images.shape[1:] == (28, 28), f"images must be (n, 28, 28), got {images.shape}"
    assert len(images) == len(metadata) == len(index), "images, metadata and index must hold the same ids"
    assert index.dim == checkpoint.model_config.z_size, "index dimension must equal the encoder's z size"
    with atomic_folder(target) as staging:
        save_checkpoint(staging / MODEL_FILE, checkpoint)
        index.write(staging / INDEX_FILE)
        np.save(staging / IMAGES_FILE, images)
        np.save(staging / METADATA_FILE, np.asarray(metadata, dtype=METADATA_DTYPE))
        if index.transform is not None:
            np.savez(staging / TRANSFORM_FILE, mean=index.transform.mean, matrix=index.transform.matrix)
        (staging / TRUST_FILE).write_text(json.dumps(trust.to_dict()) + "\n")
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "package_version": __version__,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "count": len(images),
            "z_size": checkpoint.model_config.z_size,
            "metric": index.spec.metric,
            "index_type": index.spec.index_type,
            "index_params": index.spec.params,
            "transform": index.spec.transform,
            "encoder_sha256": checkpoint.encoder_sha256,
            "model": {
                "recipe": checkpoint.info.get("recipe"),
                "test_mse": checkpoint.info.get("test_mse"),
                "train_config": checkpoint.info.get("train_config"),
                "data_fingerprint": checkpoint.info.get("data_fingerprint"),
            },
            **info,
            "files": {p.name: _file_record(p) for p in sorted(staging.iterdir())},
        }
        manifest["manifest_sha256"] = manifest_digest(manifest)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(path: str | Path) -> dict:
    """The manifest of the bundle at path, checked for format but not for file integrity."""
    path = Path(path)
    if not path.exists():
        raise BundleError(no_index_message(path))
    if not path.is_dir():
        raise BundleError(f"{path} is a file, not an index folder: pass the folder `aesearch build-index` wrote")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(
            f"{path} has no {MANIFEST}, so it is not an aesearch index: rebuild it with "
            f"`aesearch build-index --index-dir {path}`"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{manifest_path} is damaged ({exc}): {_rebuild(path)}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{manifest_path} is not an aesearch index manifest: {_rebuild(path)}")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BundleError(
            f"{path} is index format {version}, newer than this aesearch ({__version__}) reads "
            f"(format {FORMAT_VERSION}): upgrade aesearch or {_rebuild(path)}"
        )
    if manifest.get("manifest_sha256") != manifest_digest(manifest):
        raise BundleError(f"{manifest_path} was edited or damaged (its content does not match its SHA-256): "
                          f"{_rebuild(path)}")  # fmt: skip
    return manifest


def load_bundle(path: str | Path, *, model: str | Path | None = None) -> Bundle:
    """Load and verify a bundle.

    Args:
        model: use this checkpoint instead of the bundle's own; refused unless its encoder is
            the one the index was built with.
    """
    path = Path(path)
    manifest = read_manifest(path)
    rebuild = _rebuild(path)
    files = manifest.get("files")
    has_transform = manifest.get("transform", "none") != "none"
    required = [MODEL_FILE, INDEX_FILE, IMAGES_FILE, METADATA_FILE, TRUST_FILE]
    required += [TRANSFORM_FILE] if has_transform else []
    if not isinstance(files, dict) or not set(required) <= set(files):
        raise BundleError(f"{path / MANIFEST} does not list the bundle's files: {rebuild}")
    for name, record in files.items():
        if not isinstance(name, str) or Path(name).name != name or name in (".", "..", MANIFEST):
            raise BundleError(f"{path / MANIFEST} lists {name!r}, which is not a file of the bundle: {rebuild}")
        _verify_file(path / name, record, rebuild)

    try:
        checkpoint = load_checkpoint(model if model is not None else path / MODEL_FILE)
    except CheckpointError as exc:
        raise BundleError(str(exc)) from None
    if checkpoint.encoder_sha256 != manifest.get("encoder_sha256"):
        which = f"checkpoint {model}" if model is not None else f"{path / MODEL_FILE}"
        raise BundleError(
            f"{which} does not match the index in {path} (encoder SHA-256 {checkpoint.encoder_sha256[:12]}..., "
            f"index built with {str(manifest.get('encoder_sha256'))[:12]}...): use the model the index was built "
            f"with, or build a new index for it with `aesearch build-index --model {which.split()[-1]} "
            "--index-dir NEW_FOLDER`"
        )

    try:
        transform = None
        if has_transform:
            with np.load(path / TRANSFORM_FILE, allow_pickle=False) as arrays:
                transform = AffineTransform(arrays["mean"], arrays["matrix"])
        spec = IndexSpec(
            manifest["index_type"], manifest["metric"], dict(manifest.get("index_params") or {}),
            manifest.get("transform", "none"),
        )  # fmt: skip
        index = VectorIndex.read(path / INDEX_FILE, spec, transform)
        images = np.load(path / IMAGES_FILE, mmap_mode="r", allow_pickle=False)
        metadata = np.load(path / METADATA_FILE, allow_pickle=False)
        trust = TrustCalibration.from_dict(json.loads((path / TRUST_FILE).read_text()))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise BundleError(
            f"{path} holds a file that cannot be read ({reason(exc, last_line=True)}): {rebuild}"
        ) from None

    count, z_size = manifest.get("count"), checkpoint.model_config.z_size
    problems = [
        (manifest.get("z_size") == z_size, f"manifest z size {manifest.get('z_size')} != model z size {z_size}"),
        (index.dim == z_size, f"index dimension {index.dim} != model z size {z_size}"),
        (len(index) == count, f"index holds {len(index)} vectors, manifest says {count}"),
        (images.shape == (count, 28, 28) and images.dtype == np.uint8, f"images are {images.shape} {images.dtype}"),
        (metadata.shape == (count,) and metadata.dtype == METADATA_DTYPE, f"metadata is {metadata.shape}"),
    ]
    for ok, problem in problems:
        if not ok:
            raise BundleError(f"{path} is inconsistent ({problem}): {rebuild}")
    return Bundle(path, manifest, checkpoint, index, images, metadata, trust)


def _file_record(path: Path) -> dict:
    return {"sha256": _sha256(path), "bytes": path.stat().st_size}


def _verify_file(path: Path, record: object, rebuild: str) -> None:
    if not path.is_file():
        raise BundleError(f"{path} is missing: {rebuild}")
    if not isinstance(record, dict) or "sha256" not in record:
        raise BundleError(f"the manifest has no checksum for {path.name}: {rebuild}")
    if path.stat().st_size != record.get("bytes"):
        raise BundleError(
            f"{path} is damaged ({path.stat().st_size} bytes, manifest says {record.get('bytes')}): {rebuild}"
        )
    if _sha256(path) != record["sha256"]:
        raise BundleError(f"{path} is damaged (its SHA-256 differs from the manifest's): {rebuild}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()
