"""The `aesearch` command: each subcommand parses options, calls one library function, formats.

Heavy imports (torch, faiss, matplotlib) happen inside the commands that need them, so
`aesearch --help` and `aesearch query` stay fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from aesearch import defaults
from aesearch._version import __version__
from aesearch.errors import AesearchError
from aesearch.integers import MAX_ID, check_int, parse_int
from aesearch.interfaces import tables


class Integer(click.ParamType):
    """An integer option read as aesearch.integers reads every integer: ASCII digits, range-checked.

    click's own INT takes whatever int() takes: "٣" (an Arabic-Indic three), "1_000", " 12 ".
    """

    name = "integer"

    def __init__(self, low: int = 0, high: int = MAX_ID) -> None:
        self.low, self.high = low, high

    def convert(self, value, param, ctx) -> int:
        try:
            if isinstance(value, int) and not isinstance(value, bool):  # a default
                return check_int(value, "the value", low=self.low, high=self.high)
            return parse_int(value, "the value", low=self.low, high=self.high)
        except AesearchError as exc:
            self.fail(str(exc), param, ctx)


class NonEmptyPath(click.Path):
    """A path option that refuses an empty value, which click.Path reads as "." (the current
    folder): `--images ""` trained a model on whatever the current folder held."""

    def __init__(self, **kwargs) -> None:
        super().__init__(path_type=Path, **kwargs)

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("it is empty: give a path (`.` for the current folder)", param, ctx)
        return super().convert(value, param, ctx)


class FiniteRange(click.FloatRange):
    """click's FloatRange, which lets `nan` through (every comparison with it is false)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if number != number:
            self.fail(f"{value!r} is not a number: give one from {self.min} to {self.max}", param, ctx)
        return number


# Library parameters whose option is not "--" + the parameter with dashes.
_OPTIONS = {"k": "-k"}


def option_name(parameter: str) -> str:
    """The option that sets a library parameter: chunk_size -> --chunk-size, k -> -k."""
    return _OPTIONS.get(parameter) or f"--{parameter.replace('_', '-')}"


class _Group(click.Group):
    """Every error is one line on stderr: AesearchError exits 1, a usage error 2; never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except AesearchError as exc:  # the library names its parameters; here they are options
            raise click.ClickException(exc.in_words(option_name)) from None
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx else "aesearch"
            one_line = click.ClickException(f"{exc.format_message()} (see `{command} --help`)")
            one_line.exit_code = exc.exit_code
            raise one_line from None
        except KeyboardInterrupt:
            click.echo("Interrupted: nothing was replaced.", err=True)
            sys.exit(130)
        except OSError as exc:  # the disk filled up, or a file or permission changed during the run
            from aesearch.errors import os_error_message

            if isinstance(exc, BrokenPipeError) and _reader_gone():
                # `aesearch info | head`: the reader took what it wanted; stop without a word, as cat does
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor one at the exit's flush
                sys.exit(128 + signal.SIGPIPE)
            raise click.ClickException(os_error_message(exc)) from None


def _reader_gone() -> bool:
    """Whether standard output is a pipe whose reader has closed it (poll says POLLERR)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll, no file descriptor (a test's capture)
        return False


# Any integer, its range left to the library, whose message names the real bounds ("k must be an
# integer from 1 to 120", the number of images, which the option cannot know before the bundle loads).
ANY_INTEGER = Integer(-MAX_ID)


# One text for `train` and `build-index`: such a model searches without the colour histogram beside it.
COLOUR_INVARIANT_HELP = (
    "With --images, colour: train the model to see an image in any hue as the same (hits may differ in colour); "
    "it searches by its own z alone, without the grey model and colour histogram beside it."
)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="aesearch")
def cli() -> None:
    """Search images by the latent vectors of a convolutional AutoEncoder (Fashion-MNIST)."""


@cli.command()
@click.option(
    "--recipe",
    type=click.Choice([*defaults.RECIPE_NAMES, "default"]),
    default=defaults.RECIPE,
    show_default=True,
    help="retrieval: reconstruction plus view consistency (ranks by shape); shipped: the same, longer "
    "(the shipped model's); reconstruction (or default, its old name): reconstruction only; seed: the article's.",
)
@click.option("--epochs", type=Integer(1, 10_000), help="Epochs to run, before any decoder-only ones [recipe's].")
@click.option("--batch-size", type=Integer(1, 60_000), help="Batch size [recipe's].")
@click.option("--lr", type=FiniteRange(0, 1, min_open=True), help="Learning rate (peak for one-cycle) [recipe's].")
@click.option(
    "--z-size",
    type=Integer(1, 100_000),
    help=f"Latent size  [{defaults.Z_SIZE}; {defaults.COLLECTION_Z_SIZE} for colour --images]",
)
@click.option("--seed", type=Integer(), default=0, show_default=True, help="Random seed (init and shuffling).")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda or cuda:N.")
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16"]),
    default="auto",
    show_default=True,
    help="auto: bfloat16 matmuls where the hardware has them, else float32.",
)
@click.option("--data-dir", type=NonEmptyPath(), help="Folder holding Fashion-MNIST (else searched).")
@click.option("--limit", type=Integer(1, 60_000), help="Train on the first N training images only.")
@click.option(
    "--images",
    "image_dirs",
    multiple=True,
    type=NonEmptyPath(),
    help="Train on the images in this folder (recursively) instead of Fashion-MNIST; repeatable.",
)
@click.option("--size", type=Integer(4, 4096), help="With --images: the model's image size  [from the images]")
@click.option(
    "--channels", type=click.Choice(["1", "3"]), help="With --images: grey (1) or colour (3)  [as the images are]"
)
@click.option(
    "--colour-invariant",
    is_flag=True,
    help=COLOUR_INVARIANT_HELP,
)
@click.option(
    "--out",
    type=NonEmptyPath(dir_okay=False),
    default=Path("runs/model.safetensors"),
    show_default=True,
    help="Checkpoint to write; its training curve goes beside it.",
)
def train(
    recipe,
    epochs,
    batch_size,
    lr,
    z_size,
    seed,
    device,
    precision,
    data_dir,
    limit,
    image_dirs,
    size,
    channels,
    colour_invariant,
    out,
) -> None:
    """Train the AutoEncoder; write a self-describing checkpoint and its training curve.

    Interrupted (Ctrl-C, a reboot), the same command goes on after the last finished epoch.
    """
    _need_torch("training")
    from aesearch.training.train import TrainConfig, curve_path, resolve_device, train_model

    resolve_device(device)  # `--device tpu`, or cuda without a GPU: one line before any image is read
    if not image_dirs and (size is not None or channels is not None or colour_invariant):
        from aesearch.errors import InvalidArgumentError

        raise InvalidArgumentError(
            "--size, --channels and --colour-invariant choose a model for --images: drop them for Fashion-MNIST"
        )
    settings = {"batch_size": batch_size, "lr": lr, "seed": seed, "device": device, "precision": precision}
    if image_dirs:
        from aesearch.pipelines.collection import train_from_folders

        given = recipe if click.get_current_context().get_parameter_source("recipe").name != "DEFAULT" else None
        config = TrainConfig.for_recipe(given, **settings) if given else None
        checkpoint = train_from_folders(
            out,
            images=image_dirs,
            train_config=config,
            epochs=epochs,
            size=size,
            channels=int(channels) if channels else None,
            z_size=z_size,
            colour_invariant=colour_invariant,
            settings=settings,
            log=click.echo,
        )
        from aesearch.figures.plots import training_curve

        title = f"{checkpoint.model_config.describe()}: test MSE {checkpoint.test_mse:.5f}"
        training_curve(checkpoint.info["history"], curve_path(out), title=title)
        click.echo(f"Checkpoint: {out}  ({checkpoint.model_config.describe()}, test MSE {checkpoint.test_mse:.5f})")
        click.echo(f"Training curve: {curve_path(out)}")
        return
    config = TrainConfig.for_recipe(recipe, epochs=epochs, z_size=z_size, **settings)
    result = train_model(config, out=out, data_dir=data_dir, limit=limit, log=click.echo)
    click.echo(
        f"Checkpoint: {out}  (test MSE {result.test_mse:.5f}, {result.seconds:.0f} s on {result.device}, "
        f"{result.precision})"
    )
    click.echo(f"Training curve: {curve_path(out)}")


INDEX_DIR_OPTION = click.option(
    "--index-dir",
    type=NonEmptyPath(),
    default=defaults.INDEX_DIR,
    show_default=True,
    help="The index bundle folder.",
)
WHERE_OPTION = click.option(
    "--where",
    metavar="FILTER",
    help="Only images that match, e.g. 'label = Shirt and size < 10KB' (docs/filters.md).",
)


@cli.command("build-index")
@INDEX_DIR_OPTION
@click.option(
    "--model",
    type=NonEmptyPath(),
    help="Use this checkpoint, or `shipped`: the Fashion-MNIST model shipped with aesearch  [default: shipped; "
    "with --images of colour images, a colour model trained on them]",
)
@click.option(
    "--train",
    is_flag=True,
    help="Train a model first (needs PyTorch; --recipe and --epochs imply it) instead of using the shipped one.",
)
@click.option(
    "--index-type",
    default=defaults.INDEX_TYPE,
    show_default=True,
    help="auto (from the size and --max-index-memory), flat (exact), hnsw, ivf, sq8, or a FAISS factory string.",
)
@click.option(
    "--max-index-memory",
    default=None,
    help="Memory the loaded index may take (auto picks exact, IVF-Flat or IVF+PQ with re-ranking)  "
    "[default: 256M, or 64 bytes an image where that is more]",
)
@click.option(
    "--chunk-size",
    type=Integer(1, 10_000_000),
    default=defaults.CHUNK_SIZE,
    show_default=True,
    help="Images encoded at a time: peak memory follows it; an interrupted build resumes after the last.",
)
@click.option(
    "--cluster",
    help="Encode on a Dask cluster: its scheduler address, or `local` for two local workers "
    "(needs `pip install aesearch[distributed]`).",
)
@click.option(
    "--segments",
    type=Integer(1, defaults.MAX_BASE_SEGMENTS),
    default=defaults.BASE_SEGMENTS,
    show_default=True,
    help="Write the index as this many segments of contiguous id ranges, each indexed alone, so that "
    "`serve --cluster` spreads them over its workers (docs/cluster.md).",
)
@click.option(
    "--metric",
    type=click.Choice(["l2", "cosine"]),
    default=defaults.METRIC,
    show_default=True,
    help="Distance between (transformed) latent vectors.",
)
@click.option(
    "--transform",
    type=click.Choice(["auto", "whiten", "none"]),
    default="auto",
    show_default=True,
    help="whiten: PCA whitening learned on the indexed images, applied to every vector and query; auto: "
    f"whiten, unless a grey folder collection has under {defaults.WHITEN_MIN_IMAGES_PER_DIM} images per component "
    "of z (a colour model's z is whitened however few).",
)
@click.option(
    "--whiten-shrinkage",
    type=FiniteRange(0, 10),
    default=defaults.WHITEN_SHRINKAGE,
    show_default=True,
    help="Added to each axis's variance, as a fraction of the largest, before whitening.",
)
@click.option(
    "--whiten-dims",
    type=Integer(1, 100_000),
    default=defaults.WHITEN_DIMS,
    show_default=True,
    help="Principal axes kept by the whitening (the vectors indexed have this many dimensions).",
)
@click.option(
    "--phase-pooling/--no-phase-pooling",
    default=None,
    help="Average each image's z over the two diagonal phases of the encoder's 2-pixel grid  "
    "[on for silhouette models; off for photo-framed (colour) models, where it does not pay]",
)
@click.option(
    "--recipe",
    type=click.Choice([*defaults.RECIPE_NAMES, "default"]),
    help=f"Train with this recipe (implies --train)  [default: {defaults.RECIPE}; "
    f"{defaults.COLLECTION_RECIPE} for grey --images, {defaults.COLOUR_RECIPE} for colour ones]",
)
@click.option("--epochs", type=Integer(1, 10_000), help="Train for this many epochs (implies --train).")
@click.option("--data-dir", type=NonEmptyPath(), help="Folder holding Fashion-MNIST (else searched).")
@click.option(
    "--images",
    "image_dirs",
    multiple=True,
    type=NonEmptyPath(),
    help="Index the images in this folder (recursively) instead of Fashion-MNIST; repeatable.",
)
@click.option(
    "--images-from",
    type=NonEmptyPath(dir_okay=False),
    help="Index the image files listed in this text file, one path a line.",
)
@click.option(
    "--labels",
    type=click.Choice(["folders"]),
    help="folders: each image's first-level subfolder is its class (for `aesearch eval`).",
)
@click.option(
    "--size",
    type=Integer(4, 4096),
    help="With --images: train a model for images this many pixels wide and high  [from the images]",
)
@click.option(
    "--channels",
    type=click.Choice(["1", "3"]),
    help="With --images: train a grey (1) or colour (3) model  [colour when the images are]",
)
@click.option("--z-size", type=Integer(1, 100_000), help="Train a model with this latent size (implies --train).")
@click.option(
    "--colour-invariant",
    is_flag=True,
    help=COLOUR_INVARIANT_HELP,
)
def build_index_command(
    index_dir,
    model,
    train,
    index_type,
    metric,
    transform,
    whiten_shrinkage,
    whiten_dims,
    phase_pooling,
    recipe,
    epochs,
    data_dir,
    image_dirs,
    images_from,
    labels,
    max_index_memory,
    chunk_size,
    cluster,
    segments,
    size,
    channels,
    z_size,
    colour_invariant,
) -> None:
    """Build the index bundle: encode with the shipped model (or --model, or --train one first), index, write.

    With --images, a colour collection trains a colour model on itself unless --model is given (a
    grey one is encoded with the shipped Fashion-MNIST model unless --train). The bundle is built
    beside the target and swapped in only when complete: an interrupted build leaves the previous
    one as it was.
    """
    from aesearch.errors import InvalidArgumentError
    from aesearch.pipelines.build import build_index
    from aesearch.search.index_choice import parse_memory
    from aesearch.sources.shards import is_shard_folder

    config = None
    shards = len(image_dirs) == 1 and not images_from and is_shard_folder(image_dirs[0])
    folders = bool(image_dirs or images_from) and not shards
    if (image_dirs or images_from) and data_dir is not None:  # it was ignored without a word
        raise InvalidArgumentError("--data-dir says where Fashion-MNIST is: drop it with --images or --images-from")
    if not folders and (size is not None or channels is not None or colour_invariant):
        raise InvalidArgumentError(
            "--size, --channels and --colour-invariant choose a model for --images: drop them for Fashion-MNIST"
        )
    channels = int(channels) if channels is not None else None
    train = train or recipe is not None or epochs is not None or size is not None or channels is not None
    train = train or z_size is not None or colour_invariant
    if model is not None and train:
        raise InvalidArgumentError(
            "--model uses a trained checkpoint: drop --train, --recipe, --epochs, --size, --channels and --z-size, "
            "or --model"
        )
    model = _shipped_if_named(model)
    from aesearch.store.bundle import check_build_target
    from aesearch.store.lock import build_lock

    check_build_target(index_dir)
    # Held until the command ends: what is checked here (images added in Python, say) cannot change
    # while a model trains, and an add, sync or second build meanwhile is refused at once.
    click.get_current_context().with_resource(build_lock(index_dir))
    if not shards:
        from aesearch.sources.folders import collection_roots

        _refuse_to_replace_another_index(index_dir, collection_roots(image_dirs, images_from) if folders else None)
    if folders:
        _build_from_folders(
            index_dir,
            image_dirs,
            images_from,
            labels,
            index_type=index_type,
            metric=metric,
            transform=transform,
            whiten_shrinkage=whiten_shrinkage,
            whiten_dims=whiten_dims,
            shifts=None if phase_pooling is None else defaults.EMBEDDING_SHIFTS if phase_pooling else ((0, 0),),
            model=model,
            train=train,
            recipe=recipe,
            epochs=epochs,
            size=size,
            channels=channels,
            z_size=z_size,
            colour_invariant=colour_invariant,
            max_index_memory=parse_memory(max_index_memory) if max_index_memory is not None else None,
            chunk_size=chunk_size,
            cluster=cluster,
            segments=segments,
        )
        return
    if train:  # training first: the one part that needs PyTorch
        _need_torch("build-index --train (and --recipe, --epochs)")
        from aesearch.training.train import TrainConfig

        config = TrainConfig.for_recipe(recipe or defaults.RECIPE, epochs=epochs, z_size=z_size)
    shipped_note = ""
    if model is None and not train:
        from aesearch.model.shipped import shipped_model, shipped_record

        model, record = shipped_model(), shipped_record()
        shipped_note = (
            f"Model: the one shipped with aesearch (recipe {record['recipe']}, test P@10 "
            f"{record['figures']['test']['p_at_10']:.3f}); --train trains a new one."
        )
    shifts = defaults.EMBEDDING_SHIFTS if phase_pooling in (None, True) else ((0, 0),)
    budget = parse_memory(max_index_memory) if max_index_memory is not None else None
    knobs = {"max_index_memory": budget, "chunk_size": chunk_size, "cluster": cluster, "segments": segments}
    common = {"model": model, "train_config": config, "log": click.echo, **knobs}  # every kind of build takes these
    transform_auto = transform == "auto"
    transform = defaults.TRANSFORM if transform_auto else transform
    space = {"metric": metric, "transform": transform, "whiten_shrinkage": whiten_shrinkage, "whiten_dims": whiten_dims}
    if shards:
        from aesearch.pipelines.stream import StreamOptions, build_from_shards

        shifts = None if phase_pooling is None else shifts  # None: the model's (a photo member's: no shifts)
        options = StreamOptions(index_type=index_type, shifts=shifts, **space, **knobs)
        manifest = build_from_shards(index_dir, image_dirs[0], model=model, options=options, log=click.echo)
        click.echo(f"Done: {manifest['count']:,} images in {index_dir}. {shipped_note}".rstrip())
        return
    if labels:
        raise InvalidArgumentError("--labels folders needs --images DIR or --images-from LIST")
    manifest = build_index(
        index_dir, index_type=index_type, embedding_shifts=shifts, data_dir=data_dir, **space, **common
    )
    click.echo(f"Done: {manifest['count']:,} images in {index_dir}. Try `aesearch query IMAGE --index-dir {index_dir}`")
    if shipped_note:
        click.echo(shipped_note)


def _refuse_to_replace_another_index(index_dir: Path, roots: list[Path] | None) -> None:
    """A build replaces the bundle at index_dir whole. Over an index of something else (Fashion-MNIST
    over your folders, your folders over Fashion-MNIST, other folders) that is a mistyped --index-dir
    or a forgotten --images, not a wish; over the same source it is a rebuild, refused only where it
    would lose images added in Python (no file behind them to index again). roots: the folders (and
    list file) being built, None for Fashion-MNIST. One line, before anything is read or trained."""
    import numpy as np

    from aesearch.errors import AesearchError, InvalidArgumentError
    from aesearch.store.bundle import load_bundle
    from aesearch.store.manifest import read_manifest, rebuild_advice
    from aesearch.store.records import PINNED, ROOT

    try:
        manifest = read_manifest(index_dir)
    except AesearchError:  # nothing there, or a damaged bundle: is it one of folders?
        if roots is None and any(p.stat().st_size for p in index_dir.glob("segments/*/paths.bin")):
            raise InvalidArgumentError(
                f"{index_dir} is a damaged index of your folders (its images have file paths): building "
                "Fashion-MNIST there would replace it; build it again with `aesearch build-index --index-dir "
                f"{index_dir} --images DIR`, or choose another --index-dir for Fashion-MNIST"
            ) from None
        return
    collection = manifest.get("collection")
    old_roots = (
        [Path(r) for r in collection["roots"]] if isinstance(collection, dict) and collection.get("roots") else None
    )
    shown_old = ", ".join(map(str, (old_roots or [])[:3]))
    if roots is None and old_roots:
        raise InvalidArgumentError(
            f"{index_dir} is an index of your folders ({shown_old}): building Fashion-MNIST there would replace "
            f"it. To build it again: {rebuild_advice(index_dir, manifest)}; "
            "for Fashion-MNIST choose another --index-dir"
        )
    if roots is not None and old_roots is None:
        raise InvalidArgumentError(
            f"{index_dir} is an index of Fashion-MNIST ({manifest['count']:,} images): building your folders there "
            "would replace it; choose another --index-dir (e.g. indexes/NAME)"
        )
    if roots is not None and sorted(map(str, roots)) != sorted(map(str, old_roots)):
        raise InvalidArgumentError(
            f"{index_dir} is an index of other folders ({shown_old}): building these there would replace it; "
            f"choose another --index-dir, or bring it up to date with `aesearch sync --index-dir {index_dir}`"
        )
    if old_roots:  # a rebuild of the same folders: images added in Python have no file to come back from
        try:
            bundle = load_bundle(index_dir, verify="sizes")
            pinned = sum(
                int(np.count_nonzero(s.records[ROOT][bundle.live_rows(n)] == PINNED))
                for n, s in enumerate(bundle.segments)
            )
        except AesearchError:
            return  # damaged: rebuilding it is the advice it gets
        if pinned:
            raise InvalidArgumentError(
                f"{index_dir} holds {pinned:,} images added in Python (Collection.add), with no file to index "
                f"again: a rebuild would lose them; build into another --index-dir, or `aesearch remove` them first"
            )


def _build_from_folders(index_dir, image_dirs, images_from, labels, **options) -> None:
    from aesearch.pipelines.collection import build_from_folders
    from aesearch.search.index import IndexSpec

    transform_auto = options["transform"] == "auto"
    transform = defaults.TRANSFORM if transform_auto else options["transform"]
    params = {k: options[k] for k in ("whiten_shrinkage", "whiten_dims")} if transform == "whiten" else {}
    spec = IndexSpec(options["index_type"], options["metric"], params, transform)
    train_config = None
    if options["recipe"] is not None:
        from aesearch.training.train import TrainConfig

        train_config = TrainConfig.for_recipe(options["recipe"])
    manifest, skipped = build_from_folders(
        index_dir,
        images=image_dirs,
        images_from=images_from,
        labels=labels,
        model=options["model"],
        spec=spec,
        shifts=options["shifts"],
        transform_auto=transform_auto,
        train_config=train_config,
        epochs=options["epochs"],
        size=options["size"],
        channels=options["channels"],
        z_size=options["z_size"],
        colour_invariant=options["colour_invariant"],
        shipped_for_grey=options["model"] is None and not options["train"],
        max_index_memory=options["max_index_memory"],
        chunk_size=options["chunk_size"],
        cluster=options["cluster"],
        segments=options["segments"],
        log=click.echo,
    )
    _echo_skipped(skipped)
    click.echo(
        f"Done: {manifest['count']:,} images in {index_dir}. Keep it current with "
        f"`aesearch sync --index-dir {index_dir}`"
    )


def _shipped_if_named(model: Path | None) -> Path | None:
    """`--model shipped`: the model in the package (unless a file of that name is there)."""
    if model is not None and str(model) == "shipped" and not model.exists():
        from aesearch.model.shipped import shipped_model

        return shipped_model()
    return model


def _echo_skipped(skipped, at_most: int = 20) -> None:
    """Unreadable files, one line each with its reason (at the end, so they are seen).

    Paths through paths.shown: a file name may hold any byte but "/" and NUL (a newline, bytes
    that are not UTF-8), and each must stay one printable line.
    """
    from aesearch.store.paths import shown

    if skipped:
        click.echo(f"Skipped {len(skipped):,} file(s) that could not be used:", err=True)
        for item in skipped[:at_most]:
            click.echo(f"  {shown(item.path)}: {shown(item.reason)}", err=True)
        if len(skipped) > at_most:
            click.echo(f"  ... and {len(skipped) - at_most:,} more (--json lists them all)", err=True)


@cli.command("sync")
@INDEX_DIR_OPTION
@click.option("--dry-run", is_flag=True, help="Say what would change; write nothing.")
@click.option(
    "--compact", is_flag=True, help="Also compact: one base (of as many segments as built), search space learned again."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the lists of paths.")
@click.option(
    "--allow-mass-removal",
    is_flag=True,
    help="Remove even a whole folder's images, or more than half of the index (refused otherwise: "
    "an unmounted disk looks like deleted files).",
)
def sync_command(index_dir, dry_run, compact, as_json, allow_mass_removal) -> None:
    """Bring an index built with --images in step with its folders (added, changed, moved, removed)."""
    from aesearch.pipelines.writer import Collection

    report = Collection.open(index_dir).sync(dry_run=dry_run, allow_mass_removal=allow_mass_removal, compact=compact)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
        return
    _echo_skipped(report.skipped)
    click.echo(report.summary())


@cli.command("add")
@click.argument("paths", nargs=-1, required=True, type=NonEmptyPath())
@INDEX_DIR_OPTION
def add_command(paths, index_dir) -> None:
    """Index these image files (or folders of them) now; `sync` would find them too."""
    from aesearch.pipelines.writer import Collection

    report = Collection.open(index_dir).add_files(paths)
    if len(paths) == 1 and not paths[0].is_dir() and len(report.skipped) == 1 and not report.changes:
        # The one file asked for could not be used (it is no image this tool reads): a refusal, as
        # for a file that is not an image by name, not a report of 0 added.
        from aesearch.errors import InvalidArgumentError
        from aesearch.store.paths import shown

        raise InvalidArgumentError(f"cannot add {shown(str(paths[0]))}: it {report.skipped[0].reason}")
    _echo_skipped(report.skipped)
    click.echo(report.summary())


@cli.command("remove")
@click.argument("targets", nargs=-1, required=True)
@INDEX_DIR_OPTION
def remove_command(targets, index_dir) -> None:
    """Remove images from the index by id or by path (the files are not touched)."""
    from aesearch.pipelines.writer import Collection

    # A target written in digits is an id (`aesearch remove 3`); anything else a path.
    ids = Collection.open(index_dir).remove(
        [parse_int(t, "an id to remove") if t.strip().isascii() and t.strip().isdigit() else t for t in targets]
    )
    click.echo(
        f"Removed {len(ids):,} image(s) from {index_dir}: ids {', '.join(map(str, ids[:20]))}"
        + (" ..." if len(ids) > 20 else "")
    )


@cli.command()
@click.argument("image", required=False, type=NonEmptyPath())
@click.option("-k", "k", type=ANY_INTEGER, default=defaults.K, show_default=True, help="Number of neighbours.")
@INDEX_DIR_OPTION
@click.option("--id", "query_id", type=Integer(), help="Query with the indexed image of this id instead of a file.")
@click.option(
    "--out",
    type=NonEmptyPath(dir_okay=False),
    help="Result picture (.png, .jpg, .webp; never the query or an image of the collection) "
    "[default: IMAGE.aesearch.png beside the query; for --id, "
    "query-id-N.aesearch.png here].",
)
@click.option("--no-picture", is_flag=True, help="Do not write the result picture.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
@click.option(
    "--max-pixels",
    type=Integer(1),
    default=defaults.MAX_PIXELS,
    show_default=True,
    help="Refuse larger images before decoding.",
)
@click.option(
    "--model",
    type=NonEmptyPath(),
    help="Use this checkpoint instead of the bundle's, or `shipped` (must be the encoder the index was built with).",
)
@click.option(
    "--explain",
    is_flag=True,
    help="Also write IMAGE.explain.png: difference maps and a latent path per hit (--no-picture leaves it be).",
)
@click.option("--more-like", "more_like", metavar="ID[,ID...]", help="Refine: indexed images to find more like.")
@click.option("--less-like", "less_like", metavar="ID[,ID...]", help="Refine: indexed images to find fewer like.")
@WHERE_OPTION
def query(
    image, k, index_dir, query_id, out, no_picture, as_json, max_pixels, model, explain, more_like, less_like, where
) -> None:
    """Find the K images nearest to IMAGE; show them with the query's reconstruction.

    --more-like / --less-like refine the search with relevance feedback (hits marked less-like are
    left out); run again with more marks for another round. --where narrows the search to the
    images that match a filter (docs/filters.md), e.g. 'label in (Shirt, Coat) and not path ~ "old/**"'.
    """
    from aesearch.errors import InvalidArgumentError
    from aesearch.search.engine import SearchEngine

    if image is None and query_id is None:
        raise InvalidArgumentError("give an IMAGE file to search with, or --id N for an indexed image")
    if image is not None and query_id is not None:
        raise InvalidArgumentError("give an IMAGE file or --id N, not both")

    if out is not None and no_picture:  # which one was meant? it wrote nothing, without a word
        raise InvalidArgumentError("--out names the picture to write, --no-picture writes none: give one of them")
    engine = SearchEngine.load(index_dir, model=_shipped_if_named(model))
    where = _checked_where(engine, where)
    if out is not None:
        _check_not_an_input(out, [image], engine.manifest)
    if query_id is not None:
        result = engine.query_id(query_id, k, where=where)
        label = f"id {query_id}"
    else:
        # The picture shows the image as given: decoded once, here, and kept in the result for it.
        result = engine.query(image, k, max_pixels=max_pixels, keep_original=not no_picture, where=where)
        label = str(image)
    notes: list[str] = []
    if more_like or less_like:
        result = engine.refine(result, _id_list(more_like, "--more-like"), _id_list(less_like, "--less-like"))
        if where is not None:  # they shape the refined query, but are never shown: say so, not nothing
            matching = set(engine.select(where).ids.tolist())
            outside = [i for i in result.feedback.more if i not in matching]
            if outside:
                notes.append(
                    f"Note: marked more like but outside the filter (they shape the query, not shown): "
                    f"{', '.join(map(str, outside))}"
                )
    picture = None
    if not no_picture:
        picture = out or _default_picture_path(image, query_id)
        given = out is not None
        picture = _unless_unwritable(picture, given, notes, "--out PATH or --no-picture")
        if picture is not None:
            _write_picture(engine, result, picture, label)
    explained = None
    if explain:
        from aesearch.figures.explain import render_explanations
        from aesearch.search.explain import explain_hits

        explained = _unless_unwritable(_default_picture_path(image, query_id, "explain"), False, notes, "")
        if explained is not None:
            hits = explain_hits(engine, result, result.hits)
            render_explanations(explained, hits, title=f"Why these hits: {label}")
    for note in notes:  # the search answered: a picture that could not be written is said, not fatal
        click.echo(note, err=True)
    if as_json:
        extra = {"explain_picture": str(explained)} if explained else {}
        click.echo(
            json.dumps({"query": label, **result.to_dict(), "picture": str(picture) if picture else None, **extra})
        )
        return
    click.echo(tables.query_table(result, label))
    if result.where is not None:
        nothing = "" if result.hits else " (no indexed image matches it: loosen the filter)"
        click.echo(f"Within: {result.where.summary}{nothing}")
    if result.trust.warning():  # on stderr, after the table: the last thing read
        click.echo(result.trust.warning(), err=True)
    if picture:
        click.echo(f"Result picture: {picture}")
    if explained:
        click.echo(f"Explanation picture: {explained}")


def _beside_bundle(index_dir: Path, kind: str) -> Path:
    """INDEX_DIR-KIND.png beside the bundle (defaults.BUNDLE_FIGURE_SUFFIXES), also for `--index-dir .`
    from inside it, whose name is empty."""
    named = index_dir if index_dir.name not in ("", "..") else Path(os.path.abspath(index_dir))
    picture = named.with_name(f"{named.name}-{kind}.png")
    assert picture.name.endswith(defaults.BUNDLE_FIGURE_SUFFIXES), f"scans leave out only {picture.name}'s kinds"
    return picture


def _checked_where(engine, where: str | None):
    """The --where filter parsed and matched against the bundle: a bad one is a usage error (exit 2)."""
    from aesearch.errors import InvalidArgumentError

    try:
        return engine.subset(where)[0]
    except InvalidArgumentError as exc:
        raise click.BadParameter(str(exc), param_hint="--where") from None


def _id_list(text: str | None, option: str) -> list[int]:
    """Parse ids like 12,345,6 into a list; one line naming the option for anything else."""
    from aesearch.integers import parse_int_list

    return parse_int_list(text or "", option)


def _unless_unwritable(path: Path, given: bool, notes: list[str], remedy: str, parameter: str = "out") -> Path | None:
    """path, if a picture can be written there. A path the user gave (as `parameter`) that cannot be
    is an error; a default one (beside the query, beside the bundle: a read-only folder, say) adds a
    note and None, so that the answer is still printed."""
    from aesearch.errors import InvalidArgumentError

    try:
        _check_output(path, parameter)
    except InvalidArgumentError as exc:
        if given:
            raise
        notes.append(f"Note: no picture written: {exc}" + (f" (or give {remedy})" if remedy else ""))
        return None
    return path


def _check_not_an_input(out: Path | None, inputs: Sequence[Path | int | None], manifest: dict, option: str = "--out"):
    """One line if a picture to write (out) names an input image of the command or an image of the
    indexed collection: the picture would replace it (a new user's `query a.png --out b.png`
    overwrote an indexed photo; `interpolate`, `map`, `duplicates` and `eval --report` did the same).
    A picture aesearch wrote before (NAME.aesearch.png) may be replaced. inputs: image files (ids and
    None are passed over)."""
    from aesearch.errors import InvalidArgumentError

    if out is None or not out.is_file():
        return
    if out.name.endswith(tuple(f".{kind}.png" for kind in defaults.RESULT_PICTURE_KINDS)):
        return
    written = out.resolve()
    for image in inputs:
        if isinstance(image, Path) and image.is_file() and written == image.resolve():
            raise InvalidArgumentError(
                f"`{option}` {out} is an input image of this command: give another path for the picture",
                parameter=option.lstrip("-"),
            )
    collection = manifest.get("collection")
    roots = [Path(r) for r in collection.get("roots", [])] if isinstance(collection, dict) else []
    for root in roots:
        folder = (root.parent if root.is_file() else root).resolve()  # a list's paths are relative to its folder
        if written.is_relative_to(folder):
            raise InvalidArgumentError(
                f"`{option}` {out} is a file of the indexed collection in {folder}: give a path outside it "
                "(or a new name) for the picture",
                parameter=option.lstrip("-"),
            )


def _check_output(path: Path, parameter: str) -> None:
    """A picture can be written at path, and not inside a bundle (whose files aesearch alone writes)."""
    from aesearch.atomic import check_writable
    from aesearch.store.bundle import check_outside_bundles

    check_outside_bundles(path, parameter)
    check_writable(path)


def _default_picture_path(image: Path | None, query_id: int | None, kind: str = "aesearch") -> Path:
    assert kind in defaults.RESULT_PICTURE_KINDS, f"scans leave out only {defaults.RESULT_PICTURE_KINDS} pictures"
    if image is None:
        return Path(f"query-id-{query_id}.{kind}.png")
    return image.with_name(f"{image.stem}.{kind}.png")


def _write_picture(engine, result, picture: Path, label: str) -> None:
    """The result picture, at a place query checked can be written; the query as given is
    result.original (None for --id: the indexed image)."""
    from aesearch.figures.render import picture_format, render_result

    picture_format(picture)
    feedback = result.feedback

    def name(hit) -> str:  # after feedback, a hit marked "more like" says so (the table's mark column)
        return f"{hit.name} · more like" if feedback.mark(hit.id) == "more" else hit.name

    refined = (
        f" · refined: {len(feedback.more)} more like, {len(feedback.less)} less like (left out); "
        "distances to the refined query"
        if feedback
        else ""
    )
    render_result(
        picture,
        original=result.original,
        query=result.query,
        reconstruction=result.reconstruction,
        neighbours=[(engine.image(h.id), name(h), f"#{h.rank} · id {h.id} · {h.distance:.3f}") for h in result.hits],
        title=f"{label} · k={len(result.hits)} · reconstruction MSE {result.reconstruction_mse:.4f} "
        f"(percentile {result.trust.reconstruction_percentile:.1f}){refined}",
        warning=result.trust.warning(),
    )


@cli.command()
@click.argument("start")
@click.argument("end")
@INDEX_DIR_OPTION
@click.option(
    "--steps", type=ANY_INTEGER, default=8, show_default=True, help="Images along the path, ends included (2-64)."
)
@click.option(
    "--out",
    type=NonEmptyPath(dir_okay=False),
    help="A .png strip or a .gif animation [default: START-END.interpolation.png here].",
)
def interpolate(start, end, index_dir, steps, out) -> None:
    """Decode the straight line in z between START and END (image files or indexed ids).

    An argument that names an existing file is an image; otherwise digits are an indexed id.
    """
    from aesearch.figures.explain import render_interpolation
    from aesearch.search.engine import SearchEngine
    from aesearch.search.explain import interpolate as interpolate_images

    ends = [_image_or_id(value) for value in (start, end)]
    names = [Path(v).stem if isinstance(v, Path) else f"id{v}" for v in ends]
    out = out or Path(f"{names[0]}-{names[1]}.interpolation.png")  # a name scans leave out
    if out.suffix.lower() not in (".png", ".gif"):
        from aesearch.errors import InvalidArgumentError

        raise InvalidArgumentError(f"cannot write an interpolation as {out}: name it .png or .gif")
    _check_output(out, "out")
    engine = SearchEngine.load(index_dir)
    _check_not_an_input(out, ends, engine.manifest)
    frames, fractions = interpolate_images(engine, ends[0], ends[1], steps=steps)
    render_interpolation(out, frames, fractions, title=f"{start} -> {end}: decoder along the line in z")
    click.echo(f"Interpolation ({steps} steps, linear in z): {out}")


def _image_or_id(value: str) -> Path | int:
    from aesearch.errors import InvalidArgumentError
    from aesearch.integers import parse_int
    from aesearch.store.paths import shown

    if not value.strip():  # Path("") is the current folder
        raise InvalidArgumentError("an interpolation end is empty: give an image file or an indexed id")
    if Path(value).exists():
        return Path(value)
    if value.strip().isascii() and value.strip().isdigit():
        return parse_int(value, "an indexed id")
    raise InvalidArgumentError(f"{shown(value)} is neither an image file nor an indexed id: give a path or a number")


@cli.command()
@INDEX_DIR_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@click.option(
    "--no-verify",
    "verify",
    is_flag=True,
    flag_value=False,
    default=True,
    help="Show the manifest without checking the files (to inspect a damaged bundle).",
)
def info(index_dir, as_json, verify) -> None:
    """Show what an index bundle holds and how it was built, and verify its checksums."""
    from aesearch.search.engine import SearchEngine
    from aesearch.store.bundle import load_bundle, read_manifest

    manifest = read_manifest(index_dir)
    if verify:
        # Every byte against its SHA-256, then everything an engine needs: one line if anything is off.
        SearchEngine(load_bundle(index_dir, verify="full"))
    if as_json:
        click.echo(json.dumps(manifest, indent=2))
    else:
        click.echo(tables.manifest_table(index_dir, manifest))
    if verify and not as_json:
        click.echo(f"Integrity: ok (all {len(manifest['files'])} files match their SHA-256; encoder matches index)")


@cli.command("eval")
@INDEX_DIR_OPTION
@click.option("--baselines", is_flag=True, help="Also score raw pixels and PCA to the z size, same protocol.")
@click.option(
    "--protocol",
    type=click.Choice(["test", "validation"]),
    default="test",
    show_default=True,
    help="test: test images against training images; validation: the last 10,000 training images "
    "against the other 50,000 (for choosing settings).",
)
@click.option(
    "--index-types",
    default=None,
    help="Comma-separated approximate index types to compare with exact search (e.g. hnsw,ivf,sq8); "
    "'all' for hnsw,ivf,sq8. Default: the bundle's own, if approximate.",
)
@click.option(
    "--report",
    type=NonEmptyPath(dir_okay=False),
    help="Report picture to write [default: INDEX_DIR-eval.png beside the bundle].",
)
@click.option(
    "--feedback",
    "feedback_rounds",
    type=Integer(1, 20),
    help="Instead: measure relevance feedback over this many rounds of simulated users.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@click.option(
    "--exclude-near-duplicates",
    "near_duplicates",
    is_flag=False,
    flag_value=-1.0,
    default=None,
    type=FiniteRange(-1, 4),
    metavar="[T]",
    help="Leave out each test query's near duplicates in the training split (distance <= T, default "
    "the `duplicates` threshold) before scoring.",
)
def eval_command(
    index_dir, baselines, protocol, index_types, report, feedback_rounds, as_json, near_duplicates
) -> None:
    """Measure search quality by class label, beside baselines and exact search."""
    from aesearch.errors import InvalidArgumentError
    from aesearch.figures.plots import eval_report
    from aesearch.quality.evaluate import evaluate
    from aesearch.search.engine import SearchEngine

    if feedback_rounds is not None:
        if baselines or index_types is not None or report or near_duplicates is not None:
            raise InvalidArgumentError(
                "--feedback measures feedback alone: drop --baselines, --index-types, --report, "
                "--exclude-near-duplicates"
            )
        from aesearch.quality.feedback import evaluate_feedback

        result = evaluate_feedback(SearchEngine.load(index_dir), feedback_rounds, protocol=protocol)
        click.echo(json.dumps(result.to_dict()) if as_json else tables.feedback_table(result))
        return

    types = None
    if index_types is not None:
        types = ["hnsw", "ivf", "sq8"] if index_types == "all" else [t.strip() for t in index_types.split(",")]
        if not all(types):
            raise InvalidArgumentError(
                f"--index-types {index_types!r} has an empty name: give types separated by commas "
                "(e.g. hnsw,ivf,sq8), or all"
            )
    from aesearch.figures.render import figure_format

    notes: list[str] = []
    report_path = report or _beside_bundle(index_dir, "eval")
    figure_format(report_path)
    # Unwritable where given: an error; beside the bundle (a read-only folder): the figures, and a note.
    report_path = _unless_unwritable(report_path, report is not None, notes, "--report PATH", "report")
    engine = SearchEngine.load(index_dir)
    _check_not_an_input(report_path, [], engine.manifest, "--report")
    if near_duplicates is not None and near_duplicates < 0:
        from aesearch.quality.duplicates import DEFAULT_THRESHOLD

        near_duplicates = DEFAULT_THRESHOLD
    result = evaluate(
        engine, protocol=protocol, baselines=baselines, index_types=types, exclude_near_duplicates=near_duplicates
    )
    if report_path is not None:
        eval_report(result, engine.image, report_path)
    if as_json:
        click.echo(json.dumps({**result.to_dict(), "report": None if report_path is None else str(report_path)}))
    else:
        click.echo(tables.eval_table(result))
        if report_path is not None:
            click.echo(f"Report picture: {report_path}")
    for note in notes:
        click.echo(note, err=True)


@cli.command()
@INDEX_DIR_OPTION
@click.option(
    "--threshold",
    type=FiniteRange(0, 4),
    default=None,
    help=f"Largest distance (as `query` reports it) between near duplicates [{defaults.DUPLICATE_THRESHOLD}]; "
    "0: exact copies only.",
)
@click.option("--across-splits", is_flag=True, help="Only pairs in different splits (train/test leakage).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: threshold, pairs, groups.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV: one row per image in a group.")
@click.option(
    "--out",
    type=NonEmptyPath(dir_okay=False),
    help="Picture of the largest groups [default: INDEX_DIR-duplicates.png beside the bundle].",
)
@click.option("--no-picture", is_flag=True, help="Do not write the picture of the groups.")
@WHERE_OPTION
@click.option("--decisions", is_flag=True, help="Print which copy of each group to keep and why (with --json/--csv).")
@click.option("--keep", "keep_ids", type=Integer(), multiple=True, help="Keep this image in its group. Repeatable.")
@click.option(
    "--move-to",
    type=NonEmptyPath(file_okay=False),
    help="Move every copy not kept into this folder (outside the collection), with a journal; then sync.",
)
@click.option("--undo", "journal", type=NonEmptyPath(dir_okay=False), help="Undo a --move-to journal.")
@click.option("--dry-run", is_flag=True, help="With --move-to or --undo: show the plan, move nothing.")
def duplicates(
    index_dir,
    threshold,
    across_splits,
    as_json,
    as_csv,
    out,
    no_picture,
    where,
    decisions,
    keep_ids,
    move_to,
    journal,
    dry_run,
) -> None:
    """Find groups of exact and near-duplicate images (range search + connected components).

    Nothing moves without --move-to: then the copies not kept (the rule: most pixels, most bytes,
    earliest modified, shortest path; --keep overrides) move into that folder, keeping their paths,
    and the journal it prints undoes it: `aesearch duplicates --undo JOURNAL`.
    """
    from aesearch.errors import InvalidArgumentError
    from aesearch.figures.groups import render_groups
    from aesearch.figures.render import picture_format
    from aesearch.quality.duplicates import DEFAULT_THRESHOLD, find_duplicates
    from aesearch.search.engine import SearchEngine
    from aesearch.store.paths import shown

    if as_json and as_csv:
        raise InvalidArgumentError("give --json or --csv, not both")
    if journal is not None:
        if move_to or decisions or keep_ids or as_csv:
            raise InvalidArgumentError("--undo JOURNAL takes only --json and --dry-run")
        return _undo_moves(journal, dry_run, as_json)
    if dry_run and move_to is None:
        raise InvalidArgumentError("--dry-run goes with --move-to DIR or --undo JOURNAL")
    if move_to is not None and as_csv:
        raise InvalidArgumentError("--move-to prints a summary, or --json: not --csv")
    if out is not None and no_picture:  # which one was meant? it wrote nothing, without a word
        raise InvalidArgumentError("--out names the picture to write, --no-picture writes none: give one of them")
    notes: list[str] = []
    if not no_picture:
        given = out is not None
        out = out or _beside_bundle(index_dir, "duplicates")
        picture_format(out)
        out = _unless_unwritable(out, given, notes, "--out PATH or --no-picture")
    engine = SearchEngine.load(index_dir)
    if not no_picture:
        _check_not_an_input(out, [], engine.manifest)
    where = _checked_where(engine, where)
    threshold = DEFAULT_THRESHOLD if threshold is None else threshold
    report = find_duplicates(engine, threshold=threshold, across_splits=across_splits, where=where)
    if move_to is not None or decisions or keep_ids:
        return _decide_and_move(engine, report, keep_ids, move_to, dry_run, as_json, as_csv)
    scope = " across splits" if across_splits else ""
    if out is not None and not no_picture:
        render_groups(out, report.groups, engine.image, title=f"Duplicates{scope} at distance <= {threshold:g}")
    else:
        out = None
    for note in notes:
        click.echo(note, err=True)
    if as_json:
        click.echo(json.dumps({**report.to_dict(), "picture": str(out) if out else None}))
    elif as_csv:
        click.echo("group,id,split,path,exact,max_distance")
        for n, group in enumerate(report.groups, start=1):
            for id_, split, path in zip(group.ids, group.splits, group.paths, strict=True):
                click.echo(f"{n},{id_},{split},{_csv_field(shown(path))},{int(group.exact)},{group.max_distance}")
    else:
        click.echo(tables.duplicates_table(report))
        if where is not None and not report.n_images:
            click.echo(f"Within: {where} (no indexed image matches it: loosen the filter)")
        if out is not None:
            click.echo(f"Picture: {out}")


def _decide_and_move(engine, report, keep_ids, move_to, dry_run, as_json, as_csv) -> None:
    """`duplicates --decisions` / `--move-to`: the review's decisions, and the move when asked."""
    from aesearch.pipelines.moves import move_duplicates
    from aesearch.quality.duplicate_review import decide

    review = decide(engine.bundle, report.groups, threshold=report.threshold, keep=keep_ids)
    if move_to is None:
        if as_csv:
            click.echo(review.to_csv(), nl=False)
        elif as_json:
            click.echo(json.dumps(review.to_dict()))
        else:
            click.echo(tables.decisions_table(review))
        return
    moved = move_duplicates(review, move_to, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps(moved.to_dict()))
        return
    click.echo(tables.moves_table(moved, undo=False))


def _undo_moves(journal, dry_run: bool, as_json: bool) -> None:
    from aesearch.pipelines.moves import undo

    moved = undo(journal, dry_run=dry_run)
    click.echo(json.dumps(moved.to_dict()) if as_json else tables.moves_table(moved, undo=True))


def _csv_field(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n\r') else text


@cli.command("map")
@INDEX_DIR_OPTION
@click.option("--query", "image", type=NonEmptyPath(), help="Mark this image and its hits on the map.")
@click.option("--id", "query_id", type=Integer(), help="Mark this indexed image and its hits instead.")
@click.option("-k", "k", type=ANY_INTEGER, default=defaults.K, show_default=True, help="Hits to mark.")
@click.option(
    "--method",
    type=click.Choice(["pca", "tsne"]),
    default="pca",
    show_default=True,
    help="pca: every image, exact positions; tsne: a 10,000-image sample (needs scikit-learn).",
)
@click.option(
    "--out",
    type=NonEmptyPath(dir_okay=False),
    help="PNG to write [default: INDEX_DIR-map-METHOD.png beside the bundle].",
)
def map_command(index_dir, image, query_id, k, method, out) -> None:
    """Draw the indexed latents in 2-D by class, with a query and its hits marked."""
    from aesearch.errors import InvalidArgumentError
    from aesearch.quality.latent_map import latent_map
    from aesearch.search.engine import SearchEngine

    if image is not None and query_id is not None:
        raise InvalidArgumentError("give --query IMAGE or --id N, not both")
    from aesearch.figures.render import figure_format

    given = out is not None
    out = out or _beside_bundle(index_dir, f"map-{method}")
    figure_format(out)
    try:
        _check_output(out, "out")
    except InvalidArgumentError as exc:  # the map is the picture: without a place for it, nothing to do
        if given:
            raise
        raise InvalidArgumentError(f"{exc.in_words(option_name)}: give --out PATH") from None
    engine = SearchEngine.load(index_dir)
    _check_not_an_input(out, [image], engine.manifest)
    result, label = None, None
    if image is not None:
        result, label = engine.query(image, k), f"query {image.name}"
    elif query_id is not None:
        result, label = engine.query_id(query_id, k), f"query id {query_id}"
    projection, path = latent_map(engine, out, method=method, query=result, query_label=label or "query")
    cached = " (projection from cache)" if projection.from_cache else ""
    click.echo(f"Map of {len(projection.ids):,} images{cached}: {path}")


@cli.command()
@INDEX_DIR_OPTION
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Interface to listen on (localhost only by default)."
)
@click.option("--port", type=click.IntRange(0, 65535), default=defaults.SERVER_PORT, show_default=True)
@click.option(
    "--max-upload-mb",
    type=FiniteRange(0.01, 1024),
    default=defaults.SERVER_MAX_UPLOAD_BYTES / 2**20,
    show_default=True,
    help="Refuse larger uploads (HTTP 413).",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(1, 1_000_000_000),
    default=defaults.SERVER_MAX_PIXELS,
    show_default=True,
    help="Refuse uploads with more pixels, before decoding (each decode takes up to ~5 bytes a pixel).",
)
@click.option(
    "--decode-slots",
    type=click.IntRange(1, 256),
    default=defaults.SERVER_DECODE_SLOTS,
    show_default=True,
    help="Uploads decoded at once; with --max-pixels this bounds the server's memory.",
)
@click.option(
    "--allowed-host",
    multiple=True,
    help="Answer requests for this Host name too (localhost names always; '*' for any). Repeatable.",
)
@click.option(
    "--cors-origin",
    multiple=True,
    help="Let pages from this origin (scheme://host[:port], e.g. https://app.example) read the API (none by default).",
)
@click.option(
    "--allow-moves", is_flag=True, help="Let the page's duplicate review move files out of the collection (journaled)."
)
@click.option(
    "--workers",
    default="auto",
    show_default=True,
    help="Server processes on the one port, sharing the bundle's memory (auto: one per core, at most "
    f"{defaults.SERVER_MAX_AUTO_WORKERS}); the limits are divided among them.",
)
@click.option(
    "--cluster",
    help="Search the bundle's segments on a Dask cluster: its scheduler address (tcp://HOST:8786), or `local` "
    "for two local workers; the same answers (docs/cluster.md).",
)
@click.option(
    "--allow-partial",
    is_flag=True,
    help="With --cluster: when shards do not answer, answer from the others, flagged (missing_shards), not 503.",
)
@click.option(
    "--replicas",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="With --cluster: copies of each segment on different workers; queries take turns, and fail over.",
)
def serve(
    index_dir,
    host,
    port,
    max_upload_mb,
    max_pixels,
    decode_slots,
    allowed_host,
    cors_origin,
    allow_moves,
    workers,
    cluster,
    allow_partial,
    replicas,
) -> None:
    """Serve the search page and its HTTP API.

    POST /api/search?k=8 (multipart field `image`, or ?id=N; a `where` filter), POST /api/refine,
    GET /api/images/ID.png, GET /api/health, /api/map... (the page's map), /api/duplicates... (its
    duplicate review), GET / (docs/server.md).
    A connection must send its request line and headers within 5 s; one client address may keep 32
    connections open (behind a reverse proxy, every client shares the proxy's address).
    """
    import logging

    import uvicorn

    from aesearch.errors import InvalidArgumentError
    from aesearch.interfaces.security import GuardedH11Protocol
    from aesearch.interfaces.server import create_app
    from aesearch.interfaces.workers import parse_workers, run_workers, split_limits

    engine = None
    if cluster is not None and not cluster.strip():  # an unset $SCHEDULER: served without a cluster, silently
        raise InvalidArgumentError("--cluster is empty: give a Dask scheduler's address (HOST:PORT), or `local`")
    if cluster:
        from aesearch.search.cluster import Cluster
        from aesearch.search.engine import SearchEngine

        if workers.strip().lower() != "auto" and parse_workers(workers) > 1:
            raise InvalidArgumentError("--cluster serves from one process (its workers search): leave out --workers")
        workers = "1"  # a Dask client does not survive a fork
        engine = SearchEngine.load(index_dir, cluster=Cluster(cluster, allow_partial=allow_partial, replicas=replicas))
    elif allow_partial or replicas > 1:
        flag = "--allow-partial" if allow_partial else "--replicas"
        raise InvalidArgumentError(f"{flag} is for --cluster: give a Dask scheduler address, or `local`")
    workers = parse_workers(workers)

    # The address served on is a name clients use; 0.0.0.0 and :: are not.
    hosts = [*allowed_host, *([host] if host not in ("0.0.0.0", "::", "") else [])]
    limits = split_limits(  # each worker's share: the totals stay those of one process
        workers,
        decode_slots=decode_slots,
        max_in_flight=defaults.SERVER_MAX_REQUESTS_IN_FLIGHT,
        max_per_address=defaults.SERVER_MAX_CONNECTIONS_PER_ADDRESS,
        max_connections=defaults.SERVER_MAX_CONNECTIONS,
    )
    app = create_app(
        index_dir,
        engine=engine,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        max_pixels=max_pixels,
        decode_slots=limits["decode_slots"],
        allowed_hosts=hosts,
        cors_origins=cors_origin,
        allow_moves=allow_moves,
        max_in_flight=limits["max_in_flight"],
    )
    sock = _listening_socket(host, port)
    app.state.engine.warm_up()  # a cold page cache (a reboot): fast first answers, warm ones soon after
    processes = f", {workers} worker processes" if workers > 1 else ""
    processes += f", shards on the Dask cluster at {engine.cluster.address}" if cluster else ""
    if cluster and replicas > 1:  # a copy a worker: more copies than workers are not made
        held = len(engine.cluster.shards)
        processes += f", {min(replicas, held)} copies of each segment" + (
            f" (asked {replicas}: {held} workers; start more with `dask worker`)" if replicas > held else ""
        )
    # The port bound, which --port 0 leaves to the system; an IPv6 address in brackets, as a URL needs.
    address = f"[{host}]" if ":" in host else host
    url = f"http://{address}:{sock.getsockname()[1]}/"
    click.echo(f"Serving {index_dir} ({len(app.state.engine):,} images{processes}) on {url}  (Ctrl-C stops)")
    # The request line and headers must come within 5 s of connecting (or of the last answer, which
    # closes an idle keep-alive connection too); an answer unread for 15 s is dropped; 32 connections
    # per client address, 512 in all; past 64 requests being answered, 503 at once (security.py).
    protocol = GuardedH11Protocol.with_limits(
        max_per_address=limits["max_per_address"], max_connections=limits["max_connections"]
    )
    # A malformed multipart body is answered 400; the parser would also log each one, for anyone to fill the log.
    logging.getLogger("python_multipart").setLevel(logging.ERROR)
    config = uvicorn.Config(
        app, http=protocol, ws="none", log_level="warning", timeout_keep_alive=defaults.SERVER_HEADER_TIMEOUT_S
    )
    if workers == 1:
        if engine is not None:  # uvicorn raises SIGTERM again once stopped: exit through the finally
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            uvicorn.Server(config).run(sockets=[sock])
        finally:
            if engine is not None:  # the workers drop their shards' files
                engine.cluster.close()
    elif status := run_workers(lambda: uvicorn.Server(config).run(sockets=[sock]), workers):
        sys.exit(status)


def _listening_socket(host: str, port: int):
    """Bind before announcing anything, so a busy port is one clear error, not a server that dies."""
    import socket

    from aesearch.errors import InvalidArgumentError

    if not host.strip():  # bind() reads "" as every interface: a server on the network nobody asked for
        raise InvalidArgumentError(
            "--host is empty: give an address (127.0.0.1 for this machine only, 0.0.0.0 for every interface)"
        )
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        raise InvalidArgumentError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}): choose another --port or --host"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _need_torch(what: str) -> None:
    """One line, not an ImportError, when the lean install (no PyTorch) is asked to train."""
    try:
        import torch  # noqa: F401  (needed right after anyway)
    except ImportError:
        from aesearch.errors import InvalidArgumentError, torch_install_advice

        raise InvalidArgumentError(
            f"{what} needs PyTorch, which this install leaves out: {torch_install_advice()} "
            "(or pass --model CHECKPOINT to build-index)"
        ) from None


def main() -> None:
    # A file name that is not valid UTF-8 reaches Python as lone surrogates (store/paths.py); what the
    # commands print goes through shown(), and this is the net under it: never a UnicodeEncodeError.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):  # not a TextIOWrapper (a test's capture)
            stream.reconfigure(errors="backslashreplace")
    cli(prog_name="aesearch")
