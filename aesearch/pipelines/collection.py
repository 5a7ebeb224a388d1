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
from dataclasses import replace
from pathlib import Path

import numpy as np

from aesearch import defaults
from aesearch.errors import InvalidArgumentError, torch_install_advice
from aesearch.model.architecture import ModelConfig, member_for
from aesearch.model.checkpoint import Checkpoint, load_checkpoint
from aesearch.search.index import IndexSpec
from aesearch.sources.folders import (
    FolderSource,
    Scan,
    Skipped,
    collection_roots,
    collection_traits,
    folder_classes,
    scan,
)
from aesearch.store.bundle import builds_bundle, check_outside_bundles
from aesearch.store.paths import shown
from aesearch.store.records import new_records

LABEL_MODES = ("folders",)
# Below this many images the default recipe trains a model that retrieves worse than reusing the
# Fashion-MNIST one (scripts/bench_collection.py --train-sizes; docs/collections.md).
SMALL_COLLECTION = 5_000


@builds_bundle
def build_from_folders(
    index_dir: str | Path,
    *,
    images: Sequence[str | Path] = (),
    images_from: str | Path | None = None,
    labels: str | None = None,
    model: str | Path | None = None,
    spec: IndexSpec,
    shifts: Sequence[Sequence[int]] | None = None,
    transform_auto: bool = False,
    train_config=None,
    epochs: int | None = None,
    size: int | None = None,
    channels: int | None = None,
    z_size: int | None = None,
    colour_invariant: bool = False,
    shipped_for_grey: bool = False,
    workers: int | None = None,
    max_index_memory: int | None = None,
    chunk_size: int = defaults.CHUNK_SIZE,
    cluster: str | None = None,
    segments: int = defaults.BASE_SEGMENTS,
    progress: bool = False,
    log: Callable[[str], None] | None = print,
) -> tuple[dict, list[Skipped]]:
    """Index every image under the roots; returns the manifest and the files skipped (with reasons).

    With a model the files are read as the streaming build asks for them, a chunk at a time: memory
    stays bounded by the chunk size, and a build killed midway resumes without reading again what
    it had encoded. Without one, the images are read into memory first, to train a model on them:
    the family member collection_model_config() chooses (colour or grey, size and z from the images
    unless size, channels, z_size say), with train_config's recipe or the member's default one
    (epochs: that recipe's epochs, overridden; colour_invariant: views of any hue count as the same
    image, so that hits may differ in colour).
    shipped_for_grey: with no model and no train_config, a grey collection is encoded with the
    Fashion-MNIST model shipped in the package rather than trained on (what `build-index --images`
    does: on small grey collections that model retrieves better than one trained on them).
    max_index_memory, chunk_size, cluster, segments: the streaming build's StreamOptions of those names.
    transform_auto: spec's whitening only when there are enough images to learn it (see
    whitening_needs), or a colour model is trained on them; otherwise plain vectors, and a line in
    the log that says so. shifts: None for the model's default (pooled over grid phases for the
    silhouette framing, not for photos: it did not pay on colour collections).
    """
    from aesearch.pipelines.build import assemble_bundle, stream_options
    from aesearch.pipelines.stream import check_build_options, check_segments, stream_build

    if labels is not None and labels not in LABEL_MODES:
        raise InvalidArgumentError(f"unknown `labels` {labels!r}: use `folders` (or leave it out)", parameter="labels")
    knobs = {"max_index_memory": max_index_memory, "chunk_size": chunk_size, "cluster": cluster, "segments": segments}
    roots = collection_roots(images, images_from)
    checkpoint = load_checkpoint(model) if model is not None else None
    if checkpoint is not None and (size, channels, z_size) != (None, None, None):
        raise InvalidArgumentError(
            f"--model {shown(str(model))} fixes the image size, channels and z size "
            f"({checkpoint.model_config.describe()}): drop --size, --channels and --z-size, or --model"
        )
    if size is not None:  # before any file is read
        _member(size, channels or 3, z_size or defaults.COLLECTION_Z_SIZE, "photo")
    found = scan(roots)
    where = ", ".join(shown(str(r)) for r in roots)  # one printable line, whatever the names
    if log:
        log(f"Found {len(found.files):,} image files under {where}")
    if len(found.files) < 2:
        raise InvalidArgumentError(
            f"found {len(found.files)} image file(s) under {where}: an index needs at "
            "least 2 (PNG, JPEG, GIF, WebP, BMP or TIFF files, in any subfolder)"
        )
    check_segments(segments, len(found.files))  # before any file is read or a model trained
    if labels == "folders" and not folder_classes(found.files):
        raise InvalidArgumentError(
            f"--labels folders names each image's class by its subfolder, and every image under {where} is at the "
            "top: put the images of each class in a folder of its own, or drop --labels"
        )
    member = None
    if checkpoint is None:
        member = collection_model_config(found, size=size, channels=channels, z_size=z_size, log=log)
        asked = (train_config, epochs, size, channels, z_size) != (None,) * 5 or colour_invariant  # to train
        if shipped_for_grey and not asked and member.channels == 1:
            from aesearch.model.shipped import shipped_model

            checkpoint, member = load_checkpoint(shipped_model()), None
            if log:
                log("The images are grey: encoding them with the Fashion-MNIST model shipped with aesearch")
    if member is not None:
        member = _check_colour_invariant(member, colour_invariant)
    model_config = checkpoint.model_config if checkpoint is not None else member
    if shifts is None:  # the model's default: pooled over grid phases for silhouettes, not for photos
        shifts = model_config.default_shifts
    # A colour model trained on these very images is whitened on them however few they are: measured
    # on 300-900 images, whitening its z gained P@10 (docs/colour-models.md). So is one reused (a rebuild
    # with the bundle's own model searched another space than the build that trained it).
    colour = model_config.channels == 3
    if transform_auto and spec.transform == "whiten" and not colour:
        z_size = model_config.z_size
        if len(found.files) < whitening_needs(z_size):
            spec = IndexSpec(spec.index_type, spec.metric, {}, "none")
            if log:
                log(
                    f"{len(found.files):,} images are too few to learn a whitening of {z_size} numbers (it takes "
                    f"{whitening_needs(z_size):,}): searching the plain vectors; rebuild to whiten once there are more"
                )
    options = stream_options(spec, shifts, **knobs)
    check_build_options(len(found.files), model_config, options)  # before a model trains for them
    source = FolderSource(found, labels, workers=workers, model_config=model_config)
    skipped: list[Skipped] = []
    if checkpoint is not None:
        manifest = stream_build(index_dir, source, checkpoint, options, log=log, skipped=skipped.extend)
        return manifest, found.skipped + skipped
    _require_torch(model_config)  # before reading every file, not after
    if cluster not in (None, "local"):  # reachable, with workers, before a model trains for it
        import contextlib

        from aesearch.dask_cluster import connect

        with contextlib.ExitStack() as stack:
            connect(cluster, stack, instead="leave cluster unset to build here")
    pixels, records, paths, skipped = read_collection(source)
    if len(pixels) < 2:
        raise InvalidArgumentError(
            f"found {len(pixels)} readable image(s) under {where}: an index needs at "
            "least 2 (PNG, JPEG, GIF, WebP, BMP or TIFF files, in any subfolder)"
        )
    checkpoint = train_on_collection(
        pixels,
        records,
        member,
        train_config,
        {"epochs": epochs, "hue": 1.0 if colour_invariant else None},
        resume_beside=Path(index_dir),
        progress=progress,
        log=log,
    )
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


def _check_colour_invariant(member: ModelConfig, colour_invariant: bool) -> ModelConfig:
    """--colour-invariant asks a colour model's views to turn hues: a grey member has none to turn.
    Its member searches without a prior: the colour histogram beside z tells hues apart."""
    if colour_invariant and member.channels == 1:
        raise InvalidArgumentError(
            f"--colour-invariant turns the hues of colour views, and the model to train is grey "
            f"({member.describe()}: --channels 1, or grey images): drop --colour-invariant"
        )
    return replace(member, prior="") if colour_invariant else member


def _require_torch(member: ModelConfig) -> None:
    try:
        import torch  # noqa: F401  (the training right after needs it)
    except ImportError:
        raise InvalidArgumentError(
            f"training a {member.describe()} model on these images needs PyTorch, which this install leaves out: "
            f"{torch_install_advice()}, or pass --model CHECKPOINT (--model shipped: the grey Fashion-MNIST one)"
        ) from None


def whitening_needs(z_size: int) -> int:
    """The fewest images a whitening of z_size components is learned from (transform auto)."""
    return defaults.WHITEN_MIN_IMAGES_PER_DIM * z_size


def read_collection(source: FolderSource) -> tuple[np.ndarray, np.ndarray, list[str], list[Skipped]]:
    """Every file of a folder source in memory: (images, records without ids, paths, skipped)."""
    chunks = list(source.chunks(source.count or 1))
    shape = source.model_config.image_shape
    pixels = np.concatenate([c.images for c in chunks]) if chunks else np.zeros((0, *shape), np.uint8)
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


def train_from_folders(
    out: str | Path,
    *,
    images: Sequence[str | Path] = (),
    images_from: str | Path | None = None,
    train_config=None,
    epochs: int | None = None,
    size: int | None = None,
    channels: int | None = None,
    z_size: int | None = None,
    colour_invariant: bool = False,
    settings: dict | None = None,
    workers: int | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = print,
) -> Checkpoint:
    """`aesearch train --images DIR`: a model trained on a folder collection alone, saved at out.

    The same choice of member and recipe as build_from_folders without a model; the checkpoint can
    then build bundles of this or other folders (`build-index --model`). settings: TrainConfig
    fields to override (batch_size, lr, seed, device, precision; None: the recipe's).
    """
    from aesearch.atomic import check_writable
    from aesearch.model.checkpoint import save_checkpoint

    if Path(out).suffix != ".safetensors":
        raise InvalidArgumentError(f"a checkpoint is a .safetensors file: name it like {Path(out).stem}.safetensors")
    check_outside_bundles(out, "out")
    check_writable(out)
    if size is not None:
        _member(size, channels or 3, z_size or defaults.COLLECTION_Z_SIZE, "photo")
    found = scan(collection_roots(images, images_from))
    if log:
        log(f"Found {len(found.files):,} image files")
    member = collection_model_config(found, size=size, channels=channels, z_size=z_size, log=log)
    member = _check_colour_invariant(member, colour_invariant)
    _require_torch(member)
    pixels, records, _, skipped = read_collection(FolderSource(found, workers=workers, model_config=member))
    if len(pixels) < 2:
        raise InvalidArgumentError(f"found {len(pixels)} readable image(s): training needs at least 2")
    if log and skipped:
        log(f"{len(skipped):,} files could not be read and were left out")
    overrides = {"epochs": epochs, "hue": 1.0 if colour_invariant else None, **(settings or {})}
    checkpoint = train_on_collection(
        pixels, records, member, train_config, overrides, resume_beside=Path(out), progress=progress, log=log
    )
    save_checkpoint(out, checkpoint)
    return checkpoint


def collection_model_config(
    found: Scan,
    *,
    size: int | None = None,
    channels: int | None = None,
    z_size: int | None = None,
    log: Callable[[str], None] | None = None,
) -> ModelConfig:
    """The family member to train on a collection: colour when its images are, sized from them.

    A colour collection gets photo framing (the whole image, aspect kept) at the smallest of
    defaults.COLLECTION_SIZES that holds its images' median longest edge, z = COLLECTION_Z_SIZE; a
    grey one the seed's shape and silhouette framing, as Fashion-MNIST. size, channels and z_size
    override what the images say.
    """
    traits = collection_traits(found)
    colour = traits.colour if channels is None else channels == 3
    if log:
        kind = "colour" if traits.colour else "grey"
        log(
            f"Looked at {traits.sampled} images: {kind} ({traits.colour_share:.0%} have colour), "
            f"median longest edge {traits.median_edge} px"
        )
    if not colour:
        size, z, framing = size or defaults.IMAGE_SIZE, z_size or defaults.Z_SIZE, "silhouette"
    else:
        fitting = [s for s in defaults.COLLECTION_SIZES if s >= traits.median_edge]
        size = size or (fitting[0] if fitting else defaults.COLLECTION_SIZES[-1])
        z, framing = z_size or defaults.COLLECTION_Z_SIZE, "photo"
    return _member(size, 3 if colour else 1, z, framing)


def _member(size: int, channels: int, z_size: int, framing: str) -> ModelConfig:
    """The family member; a colour one searched beside the grey model and a colour histogram (model/prior.py)."""
    prior = "grey-histogram" if channels == 3 else ""
    try:
        return member_for(size, channels, z_size, framing=framing, prior=prior)
    except ValueError as exc:
        raise InvalidArgumentError(f"no model for {size}x{size} images ({exc}): pick another --size") from None


def colour_schedule(images: int) -> dict:
    """The colour recipe's length for a collection: about defaults.COLOUR_IMAGE_PASSES image-passes.

    400 joint epochs for 500 images, 200 for 1,000, 20 for 10,000 (and more images still 20: the
    time grows with them); decoder-only epochs 10 for small collections down to 3.
    """
    low, high = defaults.COLOUR_EPOCHS
    epochs = min(high, max(low, round(defaults.COLOUR_IMAGE_PASSES / max(1, images))))
    low, high = defaults.COLOUR_DECODER_EPOCHS
    decoder = min(high, max(low, round(defaults.COLOUR_IMAGE_PASSES / 10 / max(1, images))))
    return {"epochs": epochs, "decoder_epochs": decoder, "batch_size": defaults.COLOUR_BATCH}


def train_on_collection(
    pixels: np.ndarray,
    records: np.ndarray,
    member: ModelConfig,
    train_config=None,
    overrides: dict | None = None,
    *,
    resume_beside: Path | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = print,
) -> Checkpoint:
    """Train the member on the collection's preprocessed images (a tenth held out for the test MSE).

    overrides: TrainConfig fields to change (None values: keep the recipe's).
    resume_beside: the bundle (or checkpoint) being made: the training state is kept beside it
    until training ends, so an interrupted build trains on from its last finished epoch.
    """
    import torch

    from aesearch.sources.fashion_mnist import FashionMNIST, Split
    from aesearch.training.train import TrainConfig, fit, resume_path, to_checkpoint

    colour = member.channels == 3
    smallest = defaults.SMALL_COLOUR_COLLECTION if colour else SMALL_COLLECTION
    if log and len(pixels) < smallest:
        why = (
            "it memorises them, and searches little better than a colour histogram"
            if colour
            else "retrieval is worse than with a reused one"
        )
        log(
            f"Warning: {len(pixels):,} images are too few to train a good model (under {smallest:,}: {why}): "
            "pass --model CKPT, e.g. --model shipped"
        )
    order = np.random.default_rng(0).permutation(len(pixels))
    held = max(1, len(pixels) // 10)
    x = torch.from_numpy(np.ascontiguousarray(pixels))
    y = torch.from_numpy(np.maximum(records["label"].astype(np.int64), 0))
    test, train = torch.from_numpy(np.sort(order[:held])), torch.from_numpy(np.sort(order[held:]))
    data = FashionMNIST(Split("train", x[train], y[train]), Split("test", x[test], y[test]), Path("."))
    recipe = defaults.COLOUR_RECIPE if colour else defaults.COLLECTION_RECIPE
    config = (train_config or TrainConfig.for_recipe(recipe)).with_z_size(member.z_size)
    if colour and train_config is None:
        config = replace(config, **colour_schedule(len(train)))
    if member.prior and train_config is None:
        config = replace(config, neighbours=defaults.PRIOR_NEIGHBOURS)
    config = replace(config, **{k: v for k, v in (overrides or {}).items() if v is not None})
    if config.batch_size > len(train):  # a small collection: every image in each step
        config = replace(config, batch_size=len(train))
    if log:
        log(
            f"Training a {member.describe()} model on the collection with the {config.recipe} recipe "
            f"({config.epochs + config.decoder_epochs} epochs)"
        )
    resume = resume_path(resume_beside) if resume_beside is not None else None
    return to_checkpoint(fit(config, data, model_config=member, resume=resume, progress=progress, log=log))
