"""`aesearch build-index`: train if needed, encode every Fashion-MNIST image, write a bundle."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from aesearch.errors import InvalidArgumentError
from aesearch.model.checkpoint import Checkpoint, load_checkpoint
from aesearch.model.runtime import NumpyAutoEncoder
from aesearch.search.engine import DEFAULT_INDEX_DIR
from aesearch.search.index import IndexSpec, VectorIndex, check_index_type
from aesearch.search.segments import INDEX_FILE
from aesearch.search.trust import TrustCalibration, calibrate
from aesearch.store.bundle import BundleWriter
from aesearch.store.records import new_records, pixel_hashes

SPLITS = ("train", "test")
# The default search space, chosen by scripts/ablation_retrieval.py on a validation split carved out
# of the training images: cosine similarity after PCA whitening with shrinkage.
DEFAULT_METRIC = "cosine"
DEFAULT_TRANSFORM = "whiten"
DEFAULT_WHITEN_SHRINKAGE = 0.03
# The top 192 principal axes: validation P@10 0.8411 against 0.8415 with all 314, for 40% less
# scanning per query (scripts/ablation_retrieval.py).
DEFAULT_WHITEN_DIMS = 192
# Each image's vector is z averaged over the two diagonal phases of the encoder's 2-pixel grid.
DEFAULT_EMBEDDING_SHIFTS = ((0, 0), (1, 1))
_CALIBRATION_SAMPLE = 20_000  # images whose reconstruction error calibrates the trust score
_ENCODE_CHUNK = 4096


def build_index(
    index_dir: str | Path = DEFAULT_INDEX_DIR,
    *,
    model: str | Path | None = None,
    index_type: str = "flat",
    metric: str = DEFAULT_METRIC,
    transform: str = DEFAULT_TRANSFORM,
    whiten_shrinkage: float = DEFAULT_WHITEN_SHRINKAGE,
    whiten_dims: int | None = DEFAULT_WHITEN_DIMS,
    embedding_shifts: Sequence[Sequence[int]] = DEFAULT_EMBEDDING_SHIFTS,
    data_dir: str | Path | None = None,
    train_config=None,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> dict:
    """Build the bundle for all 70,000 Fashion-MNIST images (train ids first, then test).

    Args:
        model: a checkpoint to reuse; without one, a model is trained with train_config
            (default: the default recipe) and stored in the bundle.
        index_type: flat (exact), hnsw, ivf, sq8, or a FAISS factory string.
        metric: l2 or cosine.
        transform: none, or whiten (PCA whitening learned on the training split, applied to every
            vector and query; whiten_shrinkage damps the low-variance axes, whiten_dims keeps that
            many principal axes; see AffineTransform).
        embedding_shifts: each image's vector is its z averaged over these (dy, dx) translations
            (see NumpyAutoEncoder.embed); ((0, 0),) for the plain z.
    Returns:
        The new bundle's manifest. The previous bundle at index_dir, if any, is replaced only
        once the new one is complete.
    """
    from aesearch.store.atomic import check_writable

    index_dir = Path(index_dir)
    if not 0 <= whiten_shrinkage <= 10:
        raise InvalidArgumentError(f"whitening shrinkage must be from 0 to 10, got {whiten_shrinkage}")
    if whiten_dims is not None and not 1 <= whiten_dims <= 100_000:
        raise InvalidArgumentError(f"whitening dimensions must be a positive integer, got {whiten_dims}")
    params = {"whiten_shrinkage": whiten_shrinkage, "whiten_dims": whiten_dims} if transform == "whiten" else {}
    spec = IndexSpec(index_type, metric, params, transform)
    checkpoint = load_checkpoint(model) if model is not None else None
    check_index_type(index_type, checkpoint.model_config.z_size if checkpoint else 314)
    if index_dir.exists() and not index_dir.is_dir():
        raise InvalidArgumentError(f"{index_dir} is a file: give a folder for the index (--index-dir)")
    check_writable(index_dir / "manifest.json")

    from aesearch.sources.fashion_mnist import load_fashion_mnist

    data = load_fashion_mnist(data_dir)
    if log:
        log(f"Fashion-MNIST from {data.source}")
    if checkpoint is None:
        checkpoint = _train(data, train_config, progress=progress, log=log)
    elif log:
        mse = checkpoint.test_mse
        log(
            f"Using model {model} (recipe {checkpoint.info.get('recipe')}, test MSE {mse:.5f})"
            if mse
            else f"Using {model}"
        )

    images = np.concatenate([data.train.images.cpu().numpy(), data.test.images.cpu().numpy()])
    records = new_records(len(images))
    offset = 0
    for split_number, split in enumerate((data.train, data.test)):
        rows = slice(offset, offset + len(split))
        records["split"][rows] = split_number
        records["position"][rows] = np.arange(len(split))
        records["label"][rows] = split.labels.cpu().numpy()
        offset += len(split)

    info = {
        "dataset": "Fashion-MNIST",
        "class_names": list(data.class_names),
        "split_names": list(SPLITS),
        "split_sizes": {"train": len(data.train), "test": len(data.test)},
        "data_fingerprint": {"train": data.train.fingerprint(), "test": data.test.fingerprint()},
    }
    manifest = assemble_bundle(
        index_dir, checkpoint=checkpoint, images=images, records=records, info=info, spec=spec,
        shifts=embedding_shifts, progress=progress, log=log,
    )  # fmt: skip
    if log:
        log(f"Index written to {index_dir} ({manifest['count']:,} images, {index_type}, {metric}, {transform})")
    return manifest


def assemble_bundle(
    index_dir: str | Path,
    *,
    checkpoint: Checkpoint,
    images: np.ndarray,
    records: np.ndarray,
    info: dict,
    spec: IndexSpec,
    paths: list[str] | None = None,
    shifts: Sequence[Sequence[int]] = DEFAULT_EMBEDDING_SHIFTS,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Encode images, index them, calibrate the trust score, and write the bundle atomically.

    records: one RECORD_DTYPE row per image (ids are assigned here, 0 to n-1, in this order; the
    content hash is filled in when left empty); paths: each image's path relative to its collection
    root, for collections of files. Split 0 is the training split: whitening, when the
    spec asks for one, is learned on it alone, so evaluation on the other splits stays honest.
    """
    autoencoder = NumpyAutoEncoder.from_checkpoint(checkpoint)
    z, vectors = encode_all(autoencoder, images, shifts, progress=progress)
    if log:
        log(f"Building {spec.index_type} index ({spec.metric}, transform {spec.transform}) of {len(vectors):,} vectors")
    index = VectorIndex.build(vectors, spec, fit_rows=np.nonzero(records["split"] == 0)[0])
    trust = calibrate_trust(autoencoder, images, z, vectors, index)
    with BundleWriter.create(index_dir) as writer:
        writer.set_model(checkpoint)
        segment = writer.new_segment(len(images), name="base")
        segment.records[:] = records
        segment.records["id"] = writer.allocate_ids(len(images))
        if not records["content_hash"].any():
            segment.records["content_hash"] = pixel_hashes(images)
        segment.images[:] = images
        segment.embeddings[:] = vectors
        if paths is not None:
            segment.set_paths(paths)
        index.write(segment.file(INDEX_FILE))
        writer.add_segment(segment, meta={"index_type": index.spec.index_type, "index_params": index.spec.params})
        if index.transform is not None:
            np.savez(writer.space_file("transform.npz"), mean=index.transform.mean, matrix=index.transform.matrix)
        writer.space_file("trust.json").write_text(json.dumps(trust.to_dict()) + "\n")
        return writer.commit(
            {
                **info,
                "embedding_shifts": [list(shift) for shift in shifts],
                "metric": index.spec.metric,
                "index_type": index.spec.index_type,
                "index_params": index.spec.params,
                "transform": index.spec.transform,
                "model": {
                    "recipe": checkpoint.info.get("recipe"),
                    "test_mse": checkpoint.info.get("test_mse"),
                    "train_config": checkpoint.info.get("train_config"),
                    "data_fingerprint": checkpoint.info.get("data_fingerprint"),
                },
            }
        )


def calibrate_trust(
    autoencoder: NumpyAutoEncoder,
    images: np.ndarray,
    z: np.ndarray | None,
    vectors: np.ndarray,
    index: VectorIndex,
    *,
    sample: int = 3000,
) -> TrustCalibration:
    """Reconstruction error for a sample of images, nearest-other-image distance for a smaller one.

    z: the images' encoder outputs (None: the sample is encoded here); vectors: what the index holds.
    """
    rng = np.random.default_rng(0)
    chosen = np.sort(rng.choice(len(images), size=min(_CALIBRATION_SAMPLE, len(images)), replace=False))
    pixels = images[chosen].astype(np.float32) / np.float32(255)
    sample_z = autoencoder.encode(pixels) if z is None else z[chosen]
    errors = ((autoencoder.decode(sample_z) - pixels) ** 2).mean(axis=(1, 2))
    probe = rng.choice(len(vectors), size=min(sample, len(vectors)), replace=False)
    distances, ids = index.search(vectors[probe], min(2, len(vectors)))
    # The nearest result is normally the image itself; take the nearest *other* one.
    nearest_other = np.where(ids[:, 0] == probe, distances[:, -1], distances[:, 0])
    return calibrate(errors, nearest_other, images)


def encode_all(
    autoencoder: NumpyAutoEncoder,
    images: np.ndarray,
    shifts: Sequence[Sequence[int]] = ((0, 0),),
    *,
    progress: bool = True,
) -> np.ndarray:
    """(n, 28, 28) uint8 -> (z, vectors): the encoder's outputs and the vectors to index (z averaged
    over shifts), both (n, z_size) float32, with a progress bar."""
    from tqdm.auto import tqdm

    z = np.empty((len(images), autoencoder.z_size), dtype=np.float32)
    vectors = np.empty_like(z)
    # disable=None: no bar when stderr is not a terminal
    with tqdm(total=len(images), desc="encoding", unit="img", disable=None if progress else True, leave=False) as bar:
        for start in range(0, len(images), _ENCODE_CHUNK):
            chunk = images[start : start + _ENCODE_CHUNK].astype(np.float32) / np.float32(255)
            rows = slice(start, start + len(chunk))
            z[rows], vectors[rows] = autoencoder.embed(chunk, shifts)
            bar.update(len(chunk))
    return z, vectors


def _train(data, train_config, *, progress: bool, log) -> Checkpoint:
    from aesearch.training.train import TrainConfig, fit, to_checkpoint

    config = train_config or TrainConfig.for_recipe("default")
    if log:
        log(f"No --model given: training one with the {config.recipe} recipe ({config.epochs} epochs)")
    return to_checkpoint(fit(config, data, progress=progress, log=log))
