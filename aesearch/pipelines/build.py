"""`aesearch build-index`: train if needed, encode every Fashion-MNIST image, write a bundle."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from aesearch import defaults
from aesearch.errors import InvalidArgumentError
from aesearch.model.architecture import ModelConfig
from aesearch.model.checkpoint import Checkpoint, load_checkpoint
from aesearch.pipelines.builder import StreamOptions
from aesearch.search.index import IndexSpec, check_index_type
from aesearch.store.bundle import builds_bundle
from aesearch.store.records import new_records

SPLITS = ("train", "test")
# A bundle's bytes per image: image 784, pooled z 1,256, whitened vector 768, records ~60; checked
# free before the encoding starts, not found missing after it.
_BYTES_PER_IMAGE = 3_000


@builds_bundle
def build_index(
    index_dir: str | Path = defaults.INDEX_DIR,
    *,
    model: str | Path | None = None,
    index_type: str = defaults.INDEX_TYPE,
    metric: str = defaults.METRIC,
    transform: str = defaults.TRANSFORM,
    whiten_shrinkage: float = defaults.WHITEN_SHRINKAGE,
    whiten_dims: int | None = defaults.WHITEN_DIMS,
    embedding_shifts: Sequence[Sequence[int]] = defaults.EMBEDDING_SHIFTS,
    data_dir: str | Path | None = None,
    train_config=None,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
    max_index_memory: int | None = None,
    chunk_size: int = defaults.CHUNK_SIZE,
    cluster: str | None = None,
    segments: int = defaults.BASE_SEGMENTS,
) -> dict:
    """Build the bundle for all 70,000 Fashion-MNIST images (train ids first, then test).

    Args:
        model: a checkpoint to reuse; without one, a model is trained with train_config
            (default: the default recipe) and stored in the bundle.
        index_type: auto (chosen from the size and max_index_memory: index_choice.py), flat (exact),
            hnsw, ivf, sq8, or a FAISS factory string.
        max_index_memory: bytes the loaded index may take (auto's budget; default: index_choice's).
        chunk_size: images encoded at a time; cluster: a Dask scheduler address, or "local".
        segments: the base as this many segments of contiguous id ranges, each indexed alone (auto:
            chosen for its size within its share of max_index_memory), so that `serve --cluster`
            spreads them over workers; the whitening and the trust score are learned on all.
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
    from aesearch.atomic import check_writable

    index_dir = Path(index_dir)
    if not 0 <= whiten_shrinkage <= 10:
        raise InvalidArgumentError(
            f"whiten_shrinkage must be from 0 to 10, got {whiten_shrinkage}", parameter="whiten_shrinkage"
        )
    if whiten_dims is not None and not 1 <= whiten_dims <= 100_000:
        raise InvalidArgumentError(
            f"whiten_dims must be a positive integer, got {whiten_dims}", parameter="whiten_dims"
        )
    params = {"whiten_shrinkage": whiten_shrinkage, "whiten_dims": whiten_dims} if transform == "whiten" else {}
    spec = IndexSpec(index_type, metric, params, transform)
    checkpoint = load_checkpoint(model) if model is not None else None
    z_size = checkpoint.model_config.z_size if checkpoint else ModelConfig().z_size
    # The index holds the vectors as searched: after whitening, whiten_dims of them (PQ32 is valid
    # at 192 dimensions though not at 314; PQ157 the other way round).
    prior = checkpoint.model_config.prior_size if checkpoint else 0  # searched beside z, as they are
    check_index_type(index_type, prior + (min(whiten_dims or z_size, z_size) if transform == "whiten" else z_size))
    check_writable(index_dir / "manifest.json", own_folder=True, need_bytes=_BYTES_PER_IMAGE * 70_000)
    from aesearch.pipelines.stream import check_segments

    check_segments(segments, 70_000)  # before a model is trained

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

    images = np.concatenate([data.train.arrays()[0], data.test.arrays()[0]])
    records = new_records(len(images))
    offset = 0
    for split_number, split in enumerate((data.train, data.test)):
        rows = slice(offset, offset + len(split))
        records["split"][rows] = split_number
        records["position"][rows] = np.arange(len(split))
        records["label"][rows] = split.arrays()[1]
        offset += len(split)

    info = {
        "dataset": "Fashion-MNIST",
        "class_names": list(data.class_names),
        "split_names": list(SPLITS),
        "split_sizes": {"train": len(data.train), "test": len(data.test)},
        "data_fingerprint": {"train": data.train.fingerprint(), "test": data.test.fingerprint()},
    }
    manifest = assemble_bundle(
        index_dir,
        checkpoint=checkpoint,
        images=images,
        records=records,
        info=info,
        spec=spec,
        shifts=embedding_shifts,
        log=log,
        max_index_memory=max_index_memory,
        chunk_size=chunk_size,
        cluster=cluster,
        segments=segments,
    )
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
    shifts: Sequence[Sequence[int]] = defaults.EMBEDDING_SHIFTS,
    log: Callable[[str], None] | None = None,
    max_index_memory: int | None = None,
    chunk_size: int = defaults.CHUNK_SIZE,
    cluster: str | None = None,
    prune_classes: bool = False,
    segments: int = defaults.BASE_SEGMENTS,
) -> dict:
    """Encode images, index them, calibrate the trust score, and write the bundle atomically.

    The work is the streaming build's (pipelines/stream.py), fed from these arrays; max_index_memory,
    chunk_size, cluster and segments are its StreamOptions of those names.

    records: one RECORD_DTYPE row per image (ids are assigned here, 0 to n-1, in this order; the
    content hash is filled in when left empty); paths: each image's path relative to its collection
    root, for collections of files; prune_classes: drop the class names no image has (folders whose
    files were all unreadable), renumbering the labels. Split 0 is the training split: whitening, when the
    spec asks for one, is learned on it alone, so evaluation on the other splits stays honest.
    """
    from aesearch.pipelines.stream import stream_build
    from aesearch.sources.arrays import ArraySource

    info = dict(info)
    split_names = info.pop("split_names", None) or ["collection"]
    class_names = info.pop("class_names", None)
    source = ArraySource(
        images,
        records=records,
        paths=paths,
        split_names=split_names,
        class_names=class_names,
        fit_split=0 if len(split_names) > 1 else None,
        info=info,
        name="images",
    )
    source.prune_classes = prune_classes
    options = stream_options(
        spec, shifts, max_index_memory=max_index_memory, chunk_size=chunk_size, cluster=cluster, segments=segments
    )
    return stream_build(index_dir, source, checkpoint, options, log=log)


def stream_options(
    spec: IndexSpec,
    shifts: Sequence[Sequence[int]],
    *,
    max_index_memory: int | None = None,
    chunk_size: int = defaults.CHUNK_SIZE,
    cluster: str | None = None,
    segments: int = defaults.BASE_SEGMENTS,
) -> StreamOptions:
    """The streaming build's options for an IndexSpec (whitening parameters absent: none, all axes),
    the embedding shifts, and the streaming knobs."""
    params = spec.params
    return StreamOptions(
        index_type=spec.index_type,
        metric=spec.metric,
        transform=spec.transform,
        whiten_shrinkage=params.get("whiten_shrinkage", 0.0),
        whiten_dims=params.get("whiten_dims"),
        shifts=tuple((int(dy), int(dx)) for dy, dx in shifts),
        max_index_memory=max_index_memory,
        chunk_size=chunk_size,
        cluster=cluster,
        segments=segments,
    )


def _train(data, train_config, *, progress: bool, log) -> Checkpoint:
    from aesearch.training.train import TrainConfig, fit, to_checkpoint

    config = train_config or TrainConfig.for_recipe(defaults.RECIPE)
    if log:
        log(f"No --model given: training one with the {config.recipe} recipe ({config.epochs} epochs)")
    return to_checkpoint(fit(config, data, progress=progress, log=log))
