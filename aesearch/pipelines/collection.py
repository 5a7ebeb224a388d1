"""`aesearch build-index --images DIR`: a bundle of a user's own folders of images.

The folders are scanned and read by sources/folders.py (FolderSource: decoding on every core),
each file's record keeps its path relative to its root (the root's number is the record's
`position`), size, mtime and content hash, and the label of its first-level folder with `--labels
folders`. The bundle is built by the streaming build (pipelines/stream.py), as Fashion-MNIST's and
a shard collection's are, so the search space, the index and the trust score are built the same
way; the only split is "collection", and the whitening is learned on all of it. Ids follow the
sorted (root, path) order of the files that could be read: 0 to n-1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from aesearch import defaults
from aesearch.errors import InvalidArgumentError
from aesearch.model.checkpoint import Checkpoint, load_checkpoint
from aesearch.search.index import IndexSpec, check_index_type
from aesearch.sources.folders import FolderSource, Skipped, collection_roots, scan
from aesearch.store.paths import shown
from aesearch.store.records import new_records

LABEL_MODES = ("folders",)
# Below this many images the default recipe trains a model that retrieves worse than reusing the
# Fashion-MNIST one (scripts/bench_collection.py --train-sizes; docs/collections.md).
SMALL_COLLECTION = 5_000


def build_from_folders(
    index_dir: str | Path,
    *,
    images: Sequence[str | Path] = (),
    images_from: str | Path | None = None,
    labels: str | None = None,
    model: str | Path | None = None,
    spec: IndexSpec,
    shifts: Sequence[Sequence[int]],
    transform_auto: bool = False,
    train_config=None,
    workers: int | None = None,
    max_index_memory: int | None = None,
    chunk_size: int = defaults.CHUNK_SIZE,
    cluster: str | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = print,
) -> tuple[dict, list[Skipped]]:
    """Index every image under the roots; returns the manifest and the files skipped (with reasons).

    With a model the files are read as the streaming build asks for them, a chunk at a time: memory
    stays bounded by the chunk size, and a build killed midway resumes without reading again what
    it had encoded. Without one, the images are read into memory first, to train a model on them.
    max_index_memory, chunk_size, cluster: the streaming build's StreamOptions of those names.
    transform_auto: spec's whitening only when there are enough images to learn it (see
    whitening_needs); otherwise plain vectors, and a line in the log that says so.
    """
    from aesearch.pipelines.build import assemble_bundle, stream_options
    from aesearch.pipelines.stream import stream_build

    if labels is not None and labels not in LABEL_MODES:
        raise InvalidArgumentError(f"unknown `labels` {labels!r}: use `folders` (or leave it out)", parameter="labels")
    knobs = {"max_index_memory": max_index_memory, "chunk_size": chunk_size, "cluster": cluster}
    roots = collection_roots(images, images_from)
    checkpoint = load_checkpoint(model) if model is not None else None
    check_index_type(spec.index_type, checkpoint.model_config.z_size if checkpoint else defaults.Z_SIZE)
    found = scan(roots)
    where = ", ".join(shown(str(r)) for r in roots)  # one printable line, whatever the names
    if log:
        log(f"Found {len(found.files):,} image files under {where}")
    if len(found.files) < 2:
        raise InvalidArgumentError(
            f"found {len(found.files)} image file(s) under {where}: an index needs at "
            "least 2 (PNG, JPEG, GIF, WebP, BMP or TIFF files, in any subfolder)"
        )
    if transform_auto and spec.transform == "whiten":
        z_size = defaults.Z_SIZE if train_config is None else train_config.z_size
        z_size = checkpoint.model_config.z_size if checkpoint else z_size
        if len(found.files) < whitening_needs(z_size):
            spec = IndexSpec(spec.index_type, spec.metric, {}, "none")
            if log:
                log(
                    f"{len(found.files):,} images are too few to learn a whitening of {z_size} numbers (it takes "
                    f"{whitening_needs(z_size):,}): searching the plain vectors; rebuild to whiten once there are more"
                )
    source = FolderSource(found, labels, workers=workers)
    skipped: list[Skipped] = []
    if checkpoint is not None:
        options = stream_options(spec, shifts, **knobs)
        manifest = stream_build(index_dir, source, checkpoint, options, log=log, skipped=skipped.extend)
        return manifest, found.skipped + skipped
    pixels, records, paths, skipped = read_collection(source)
    if len(pixels) < 2:
        raise InvalidArgumentError(
            f"found {len(pixels)} readable image(s) under {where}: an index needs at "
            "least 2 (PNG, JPEG, GIF, WebP, BMP or TIFF files, in any subfolder)"
        )
    checkpoint = _train_on(pixels, records, train_config, progress=progress, log=log)
    manifest = assemble_bundle(
        index_dir,
        checkpoint=checkpoint,
        images=pixels,
        records=records,
        paths=paths,
        info=source.info(),
        spec=spec,
        shifts=shifts,
        log=log,
        prune_classes=True,
        **knobs,
    )
    return manifest, found.skipped + skipped


def whitening_needs(z_size: int) -> int:
    """The fewest images a whitening of z_size components is learned from (transform auto)."""
    return defaults.WHITEN_MIN_IMAGES_PER_DIM * z_size


def read_collection(source: FolderSource) -> tuple[np.ndarray, np.ndarray, list[str], list[Skipped]]:
    """Every file of a folder source in memory: (images, records without ids, paths, skipped)."""
    from aesearch.sources.preprocess import SIZE  # the size files are preprocessed to

    chunks = list(source.chunks(source.count or 1))
    pixels = np.concatenate([c.images for c in chunks]) if chunks else np.zeros((0, SIZE, SIZE), np.uint8)
    records = new_records(len(pixels))
    if chunks:
        for column, name in (
            ("position", "positions"),
            ("bytes", "sizes"),
            ("mtime_ns", "mtimes_ns"),
            ("content_hash", "hashes"),
            ("label", "labels"),
        ):
            if getattr(chunks[0], name) is not None:
                records[column] = np.concatenate([getattr(c, name) for c in chunks])
    paths = [p for c in chunks for p in c.paths]
    return pixels, records, paths, [s for c in chunks for s in c.skipped]


def _train_on(pixels: np.ndarray, records: np.ndarray, train_config, *, progress: bool, log) -> Checkpoint:
    """Train the seed AutoEncoder on the collection itself (a tenth held out for the test MSE)."""
    import torch

    from aesearch.sources.fashion_mnist import FashionMNIST, Split
    from aesearch.training.train import TrainConfig, fit, to_checkpoint

    if log and len(pixels) < SMALL_COLLECTION:
        log(
            f"Warning: {len(pixels):,} images are too few to train a good model (under {SMALL_COLLECTION:,}, "
            "retrieval is worse than with a reused one): pass --model CKPT, e.g. the Fashion-MNIST model"
        )
    order = np.random.default_rng(0).permutation(len(pixels))
    held = max(1, len(pixels) // 10)
    x = torch.from_numpy(np.ascontiguousarray(pixels))
    y = torch.from_numpy(np.maximum(records["label"].astype(np.int64), 0))
    test, train = torch.from_numpy(np.sort(order[:held])), torch.from_numpy(np.sort(order[held:]))
    data = FashionMNIST(Split("train", x[train], y[train]), Split("test", x[test], y[test]), Path("."))
    config = train_config or TrainConfig.for_recipe(defaults.COLLECTION_RECIPE)
    if log:
        log(
            f"No --model given: training one on the collection with the {config.recipe} recipe ({config.epochs} epochs)"
        )
    return to_checkpoint(fit(config, data, progress=progress, log=log))
