"""Train the AutoEncoder on Fashion-MNIST held in memory, with the seed recipe or ours.

Speed comes from three choices, measured by scripts/bench_train.py:
  * the dataset sits on the training device as one uint8 tensor in patch layout and each batch
    is one gather plus a scale by 1/255 (the seed's ToTensor), with no DataLoader;
  * the seed-shaped members run in their matmul-only form (AutoEncoder.forward_layout: patch
    layout), the others on PyTorch's convolution layers;
  * matrix multiplies run in bfloat16 autocast where the hardware supports it (CUDA, or a CPU
    with AVX512-BF16/AMX); weights, optimiser state and the loss stay float32.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from aesearch import defaults
from aesearch.atomic import atomic_path, check_writable
from aesearch.errors import InvalidArgumentError
from aesearch.model.checkpoint import Checkpoint, save_checkpoint
from aesearch.model.network import AutoEncoder, ModelConfig
from aesearch.sources.fashion_mnist import FashionMNIST, Split, load_fashion_mnist
from aesearch.store.bundle import check_outside_bundles
from aesearch.training.views import PHOTO_VIEWS, ViewAugmentation, augment, nt_xent, projection_head

Precision = Literal["auto", "fp32", "bf16"]


@dataclass(frozen=True)
class TrainConfig:
    """A full training run: the recipe's settings plus run options. Stored in the checkpoint."""

    recipe: str = "reconstruction"
    epochs: int = 15
    batch_size: int = 256
    lr: float = 3e-3  # Adam's lr (seed) or the one-cycle peak (default)
    schedule: Literal["plateau", "onecycle"] = "onecycle"
    weight_decay: float = 0.0
    # Input corruption (denoising): the model sees a corrupted image and must rebuild the clean one.
    noise: float = 0.0  # std of Gaussian noise added to input pixels
    mask: float = 0.0  # fraction of input pixels set to 0
    shift: int = 0  # inputs translated by up to this many pixels (one random shift per batch)
    corrupt_until: float = 1.0  # corruption applies for this fraction of the epochs, then clean training
    # The view-consistency term (training/views.py): its weight beside the reconstruction loss
    # (0: reconstruction only), the leading components of z it acts on, NT-Xent's temperature.
    consistency: float = 0.0
    consistency_dims: int = 128
    temperature: float = 0.2
    hue: float = 0.0  # photo-framed colour models: views turn hue by up to this x 180 degrees (1: colour-blind)
    decoder_epochs: int = 0  # then the decoder alone, on the frozen encoder, for this many epochs
    # A member with a prior (model/prior.py): a view's positive is a view of one of the image's this
    # many nearest training images in the prior's space (training/prior.py); 0: of the image itself.
    neighbours: int = 0
    z_size: int = defaults.Z_SIZE
    seed: int = 0
    device: str = "auto"
    precision: Precision = "auto"

    def __post_init__(self) -> None:
        checks = [
            (1 <= self.epochs <= 10_000, f"epochs must be from 1 to 10000, got {self.epochs}"),
            (1 <= self.batch_size <= 60_000, f"batch size must be from 1 to 60000, got {self.batch_size}"),
            (0 < self.lr <= 1, f"learning rate must be in (0, 1], got {self.lr}"),
            (self.schedule in ("plateau", "onecycle"), f"unknown schedule {self.schedule!r}"),
            (0 <= self.weight_decay < 1, f"weight decay must be in [0, 1), got {self.weight_decay}"),
            (0 <= self.noise <= 1, f"noise must be in [0, 1], got {self.noise}"),
            (0 <= self.mask < 1, f"mask must be in [0, 1), got {self.mask}"),
            (0 <= self.shift <= 8, f"shift must be from 0 to 8 pixels, got {self.shift}"),
            (0 <= self.corrupt_until <= 1, f"corrupt_until must be in [0, 1], got {self.corrupt_until}"),
            (1 <= self.z_size <= 100_000, f"z size must be from 1 to 100000, got {self.z_size}"),
            (0 <= self.consistency <= 100, f"consistency weight must be from 0 to 100, got {self.consistency}"),
            (
                not self.consistency or 1 <= self.consistency_dims <= self.z_size,
                f"consistency dims must be from 1 to the z size {self.z_size}, got {self.consistency_dims}",
            ),
            (0 < self.temperature <= 10, f"temperature must be in (0, 10], got {self.temperature}"),
            (0 <= self.hue <= 1, f"hue must be in [0, 1] (1: any hue), got {self.hue}"),
            (0 <= self.decoder_epochs <= 10_000, f"decoder epochs must be from 0 to 10000, got {self.decoder_epochs}"),
            (self.precision in ("auto", "fp32", "bf16"), f"precision must be auto, fp32 or bf16: {self.precision!r}"),
            (0 <= self.neighbours <= 1000, f"neighbours must be from 0 to 1000, got {self.neighbours}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidArgumentError(message)

    @classmethod
    def for_recipe(cls, recipe: str = defaults.RECIPE, **overrides: object) -> TrainConfig:
        """The named recipe's settings, with any of them overridden (None means keep)."""
        recipe = RECIPE_ALIASES.get(recipe, recipe)
        if recipe not in RECIPES:
            raise InvalidArgumentError(f"unknown recipe {recipe!r}: choose one of {', '.join(RECIPES)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        base = RECIPES[recipe]
        if "z_size" in given and "consistency_dims" not in given and base.consistency:
            # A smaller z keeps the recipe's share of it for the term (128 of 314: two fifths).
            given["consistency_dims"] = min(base.consistency_dims, max(1, given["z_size"] * 2 // 5))
        return replace(base, **given)

    def with_z_size(self, z_size: int) -> TrainConfig:
        """The same run for another latent size, the consistency term keeping its share of z."""
        if z_size == self.z_size:
            return self
        base = RECIPES.get(self.recipe)
        dims = self.consistency_dims
        if self.consistency and base is not None and dims == base.consistency_dims:  # the recipe's, not the user's
            dims = min(dims, max(1, z_size * 2 // 5))
        return replace(self, z_size=z_size, consistency_dims=min(dims, z_size))

    def to_dict(self) -> dict:
        return asdict(self)


# The article's recipe ("seed"): Adam(1e-3), ReduceLROnPlateau(threshold=0.1, patience=1) stepped
# once an epoch with the last batch's loss, batch 1024, 15 epochs. "reconstruction" is ours for the
# same loss and epoch budget, tuned for reconstruction error (docs/training.md); it was called
# "default" until the retrieval recipes came. "retrieval" adds the view-consistency term on the first
# 128 components of z and retrains the decoder at the end (docs/retrieval-objective.md): the
# users' default, minutes on a CPU. "shipped" is the same trained longer: the model in the package.
RECIPES: dict[str, TrainConfig] = {
    "seed": TrainConfig(recipe="seed", batch_size=1024, lr=1e-3, schedule="plateau"),
    "reconstruction": TrainConfig(recipe="reconstruction", batch_size=256, lr=3e-3, schedule="onecycle"),
    "retrieval": TrainConfig(recipe="retrieval", epochs=30, consistency=0.3, decoder_epochs=5),
    "shipped": TrainConfig(recipe="shipped", epochs=80, consistency=0.3, decoder_epochs=5),
}
RECIPE_ALIASES = {"default": "reconstruction"}  # names older checkpoints and scripts use
DECODER_LR = 1e-3  # one-cycle peak of the decoder-only epochs


@dataclass
class EpochStats:
    epoch: int  # 1-based
    loss: float  # mean reconstruction loss (MSE) over the epoch
    last_batch_loss: float  # what the seed recipe's scheduler sees
    lr: float  # learning rate at the end of the epoch
    seconds: float
    images_per_second: float
    phase: str = "joint"  # "decoder": the decoder alone, on the frozen encoder
    consistency_loss: float | None = None  # the view-consistency term's mean (retrieval recipes)


@dataclass
class TrainResult:
    model: AutoEncoder
    config: TrainConfig
    history: list[EpochStats] = field(default_factory=list)
    test_mse: float = math.nan
    device: str = "cpu"
    precision: str = "fp32"
    data_fingerprint: str = ""
    seconds: float = 0.0


def to_checkpoint(result: TrainResult) -> Checkpoint:
    """Everything that describes a training run, beside its weights."""
    info = {
        "recipe": result.config.recipe,
        "train_config": result.config.to_dict(),
        "epochs_run": len(result.history),
        "history": [asdict(h) for h in result.history],
        "test_mse": result.test_mse,
        "data_fingerprint": result.data_fingerprint,
        "device": result.device,
        "precision": result.precision,
        "train_seconds": round(result.seconds, 2),
    }
    return Checkpoint(result.model.weights(), result.model.config, info)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise InvalidArgumentError(
            f"unknown `device` {device!r}: use auto, cpu, cuda or cuda:N", parameter="device"
        ) from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError(
            f'device {device!r} asked for, but no CUDA GPU is available: use `device` "cpu"', parameter="device"
        )
    return resolved


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bfloat16 matmuls run natively here (otherwise they are emulated and slower)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = torch.cpu
    return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()) or bool(
        getattr(cpu, "_is_amx_tile_supported", lambda: False)()
    )


def resolve_precision(precision: Precision, device: torch.device) -> str:
    if precision == "auto":
        return "bf16" if bf16_is_fast(device) else "fp32"
    return precision


def fit(
    config: TrainConfig,
    data: FashionMNIST,
    *,
    model_config: ModelConfig | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> TrainResult:
    """Train a fresh AutoEncoder on data.train and measure its MSE on data.test.

    With resume (a file path), the whole training state is saved there after every epoch, and a
    run that finds a state of the same run there (same settings, model and training images: an
    interrupted one) goes on after its last finished epoch, to the same weights an uninterrupted
    run reaches. The file is removed when training ends.

    Args:
        config: the recipe and run settings.
        model_config: the family member to train (its z_size must be config's); default the seed's
            shape with config's z size. The images are (N, *model_config.image_shape) uint8.
        data: both splits (see aesearch.sources.fashion_mnist.load_fashion_mnist); moved to the training device.
        progress: show a tqdm bar per epoch (loss, lr, images/s) on stderr.
        log: receives one summary line per epoch and the final test MSE; None for silence.
    """
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    torch.manual_seed(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    model_config = model_config or ModelConfig(z_size=config.z_size)
    if model_config.z_size != config.z_size:
        raise InvalidArgumentError(
            f"the model's z size {model_config.z_size} is not the training config's {config.z_size}: give both the same"
        )
    for split in (data.train, data.test):
        if tuple(split.images.shape[1:]) != model_config.image_shape:
            raise InvalidArgumentError(
                f"the {split.name} images are {tuple(split.images.shape[1:])}, not the model's input "
                f"{model_config.image_shape}: preprocess them for the model"
            )
    fingerprint = data.train.fingerprint()  # of the images as given (a prior member's: RGBA)
    model = AutoEncoder(model_config)
    setup = None
    if model_config.prior:  # its fixed parts, each image's condition and neighbours (training/prior.py)
        from aesearch.training.prior import set_up_prior

        setup = set_up_prior(model, data.train.arrays()[0], data.test.arrays()[0], config.neighbours)
        data = _as_pictures(data)  # the colour encoder and decoder see the images onto white
    model = model.to(device)
    train_conditions = setup.train_conditions.to(device) if setup is not None else None
    partners = setup.partners.to(device) if setup is not None and setup.partners is not None else None

    train_split = data.train.to(device)
    patches = model.to_layout(train_split.images)  # built once, uint8: patch layout for the seed's shape
    n = len(train_split)
    steps_per_epoch = n // config.batch_size  # drop_last, as in the seed
    if steps_per_epoch == 0:
        raise InvalidArgumentError(
            f"`batch_size` {config.batch_size} is larger than the {n} training images: lower `batch_size`",
            parameter="batch_size",
        )

    # Adam with no decay is the seed's optimiser exactly; AdamW only when decay is asked for.
    head = projection_head(config.consistency_dims).to(device) if config.consistency else None
    parameters = model.trainable_parameters() + (list(head.parameters()) if head is not None else [])
    optimizer_class = torch.optim.AdamW if config.weight_decay else torch.optim.Adam
    optimizer = optimizer_class(parameters, lr=config.lr, weight_decay=config.weight_decay)
    if config.schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch
        )
    else:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", threshold=0.1, patience=1)
    augmentation = replace(PHOTO_VIEWS, hue=config.hue) if model.config.framing == "photo" else ViewAugmentation()

    def decoder_phase() -> tuple:
        # The decoder alone on the frozen encoder: z is final, the decoder catches up with it.
        model.encoder.requires_grad_(False)
        optimizer = torch.optim.Adam(model.decoder.parameters(), lr=DECODER_LR)
        return optimizer, torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=DECODER_LR, total_steps=config.decoder_epochs * steps_per_epoch
        )

    result = TrainResult(model, config, device=str(device), precision=precision)
    result.data_fingerprint = fingerprint
    run = {"train_config": config.to_dict(), "model_config": model.config.to_dict(), "data": result.data_fingerprint}
    total_epochs = config.epochs + config.decoder_epochs
    first_epoch, seconds_before = 1, 0.0
    saved = _saved_state(resume, run, log)
    if saved is not None:
        first_epoch = saved["epoch"] + 1
        if first_epoch > config.epochs + 1:
            optimizer, scheduler = decoder_phase()
        _restore(saved, model, head, optimizer, scheduler, generator)
        result.history = [EpochStats(**h) for h in saved["history"]]
        seconds_before = saved["seconds"]
        if log:
            log(f"Resuming the interrupted training after epoch {saved['epoch']} of {total_epochs} ({resume})")
    elif resume is not None and log and total_epochs > 1:
        log(f"Training state saved after every epoch to {resume}: if interrupted, the same command goes on from there")
    started = time.perf_counter() - seconds_before
    try:
        for epoch in range(first_epoch, total_epochs + 1):
            decoder_only = epoch > config.epochs
            if epoch == config.epochs + 1:
                optimizer, scheduler = decoder_phase()
            model.train()
            epoch_start = time.perf_counter()
            order = torch.randperm(n, device=device, generator=generator)
            loss_sum = torch.zeros((), device=device)
            consistency_sum = torch.zeros((), device=device)
            phase = "decoder" if decoder_only else "joint"
            bar = _progress_bar(
                steps_per_epoch, f"epoch {epoch}/{total_epochs}" + (" (decoder)" * decoder_only), progress
            )
            for step in range(steps_per_epoch):
                chosen = order[step * config.batch_size : (step + 1) * config.batch_size]
                batch = patches[chosen]
                x = batch.float().div_(255.0)  # exactly ToTensor's scaling
                condition = train_conditions[chosen] if train_conditions is not None else None
                x_in = _corrupt(model, x, config, generator) if epoch <= config.corrupt_until * config.epochs else x
                consistency = None
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                    if decoder_only:
                        with torch.no_grad():
                            z = model.encode_layout(x_in)
                        out = model.decode_layout(z, condition)
                    else:
                        out = model.forward_layout(x_in, condition)
                        if head is not None:
                            other = x  # the positive: a view of the image itself, or of a neighbour
                            if partners is not None:
                                pick = torch.randint(
                                    partners.shape[1], (len(chosen),), generator=generator, device=device
                                )
                                other = patches[partners[chosen, pick]].float().div_(255.0)
                            consistency = _consistency_loss(model, head, x, config, augmentation, generator, other)
                loss = reconstruction = F.mse_loss(out.float(), x)
                if consistency is not None:
                    loss = loss + config.consistency * consistency
                    consistency_sum += consistency.detach()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if config.schedule == "onecycle" or decoder_only:
                    scheduler.step()
                loss_sum += reconstruction.detach()
                if bar is not None:
                    bar.update(1)
                    if step % 10 == 9 or step == steps_per_epoch - 1:  # .item() syncs a GPU: not every step
                        seen = (step + 1) * config.batch_size
                        bar.set_postfix_str(
                            f"loss {loss_sum.item() / (step + 1):.5f}  lr {optimizer.param_groups[0]['lr']:.2e}  "
                            f"{seen / (time.perf_counter() - epoch_start):,.0f} img/s"
                        )
            last_batch_loss = reconstruction.item()
            if config.schedule == "plateau" and not decoder_only:
                scheduler.step(last_batch_loss)  # the seed steps on the last batch's loss, not the mean
            if bar is not None:
                bar.close()
            seconds = time.perf_counter() - epoch_start
            stats = EpochStats(
                epoch=epoch,
                loss=loss_sum.item() / steps_per_epoch,
                last_batch_loss=last_batch_loss,
                lr=optimizer.param_groups[0]["lr"],
                seconds=seconds,
                images_per_second=steps_per_epoch * config.batch_size / seconds,
                phase=phase,
                consistency_loss=None if head is None or decoder_only else consistency_sum.item() / steps_per_epoch,
            )
            result.history.append(stats)
            if resume is not None and epoch < total_epochs:
                _save_state(
                    resume, run, epoch, time.perf_counter() - started, result, head, optimizer, scheduler, generator
                )
            if log:
                remaining = time_left(result.history, total_epochs)
                view_loss = "" if stats.consistency_loss is None else f", view loss {stats.consistency_loss:.3f}"
                log(
                    f"Epoch: {epoch}{' (decoder)' * decoder_only}, Loss: {stats.loss:.5f} (last batch "
                    f"{stats.last_batch_loss:.5f}){view_loss}, LR: {stats.lr:.2e}, {stats.seconds:.1f} s, "
                    f"{stats.images_per_second:,.0f} img/s, about {_duration(remaining)} left"
                )
    except KeyboardInterrupt:
        if resume is not None and log and result.history:  # what was saved, and how to go on
            done = result.history[-1].epoch
            log(f"Interrupted in epoch {done + 1}: saved after epoch {done} of {total_epochs}; run the same again")
        raise
    model.encoder.requires_grad_(True)
    if resume is not None:
        Path(resume).unlink(missing_ok=True)
    result.seconds = time.perf_counter() - started
    test_conditions = setup.test_conditions if setup is not None else None
    result.test_mse = reconstruction_mse(model, data.test, device=device, conditions=test_conditions)
    if log:
        log(f"Test MSE: {result.test_mse:.5f} ({len(data.test):,} test images, {result.seconds:.1f} s training)")
    return result


def _as_pictures(data: FashionMNIST) -> FashionMNIST:
    """A prior member's RGBA training images as its colour encoder takes them (model/prior.py)."""
    from aesearch.model.prior import pictures

    def shown(split: Split) -> Split:
        images, labels = split.arrays()
        return Split(split.name, torch.from_numpy(pictures(images)), torch.from_numpy(labels))

    return replace(data, train=shown(data.train), test=shown(data.test))


_STATE_VERSION = 1


def _saved_state(path: str | Path | None, run: dict, log: Callable[[str], None] | None) -> dict | None:
    """The state an interrupted run of this same training left at path, or None (none, or another run's)."""
    if path is None or not Path(path).exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("version") != _STATE_VERSION or state.get("run") != run:
            state = None
    except Exception:  # damaged (a crash while writing cannot do it: the save is atomic), or not ours
        state = None
    if state is None and log:
        log(f"{path} holds the state of another training run, or a damaged one: training from the start")
    return state


def _save_state(path, run, epoch, seconds, result, head, optimizer, scheduler, generator) -> None:
    """Everything the next epoch depends on, written atomically: a kill at any moment leaves a whole state."""
    state = {
        "version": _STATE_VERSION,
        "run": run,
        "epoch": epoch,
        "seconds": seconds,
        "history": [asdict(h) for h in result.history],
        "model": result.model.state_dict(),
        "head": head.state_dict() if head is not None else None,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "generator": generator.get_state(),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _restore(state: dict, model, head, optimizer, scheduler, generator) -> None:
    model.load_state_dict(state["model"])
    if head is not None:
        head.load_state_dict(state["head"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    generator.set_state(state["generator"])


def _consistency_loss(
    model: AutoEncoder,
    head: torch.nn.Module,
    x: torch.Tensor,
    config: TrainConfig,
    augmentation: ViewAugmentation,
    generator: torch.Generator,
    other: torch.Tensor | None = None,
) -> torch.Tensor:
    """NT-Xent between the head's outputs for a view of each (training-layout) image in x and a view
    of its positive in other (default: x itself)."""
    images = model.from_layout(x)
    positives = images if other is None else model.from_layout(other)
    views = torch.cat([augment(images, augmentation, generator), augment(positives, augmentation, generator)])
    projected = head(model.encode_layout(model.layout_of(views))[:, : config.consistency_dims])
    first, second = projected.float().chunk(2)
    return nt_xent(first, second, config.temperature)


def time_left(history: list[EpochStats], total_epochs: int) -> float:
    """Seconds the epochs still to run will take, at the pace of the last few (up to 5).

    Not the mean since the start: a slow first epoch (loading, another process on the cores) made
    the estimate 3-8x too long for the rest of a run."""
    recent = [past.seconds for past in history[-5:]]
    return (total_epochs - history[-1].epoch) * sum(recent) / len(recent) if recent else 0.0


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _corrupt(model: AutoEncoder, x: torch.Tensor, config: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    """The denoising inputs for a batch of training-layout images (x itself when none is asked for)."""
    if not (config.noise or config.mask or config.shift):
        return x
    if config.shift:
        dy, dx = (torch.randint(-config.shift, config.shift + 1, (2,), generator=generator, device=x.device)).tolist()
        x = model.layout_of(torch.roll(model.from_layout(x), shifts=(dy, dx), dims=(2, 3)))
    if config.mask:
        x = x * (torch.rand(x.shape, generator=generator, device=x.device) >= config.mask)
    if config.noise:  # zero-mean and unclipped: clipping would brighten the black background on average
        x = x + config.noise * torch.randn(x.shape, generator=generator, device=x.device)
    return x


@torch.no_grad()
def reconstruction_mse(
    model: AutoEncoder,
    split: Split,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 2048,
    conditions: torch.Tensor | None = None,
) -> float:
    """Mean squared error of model(x) against x over a split, in float32 (conditions: a prior
    member's decoder condition of each image, training/prior.py)."""
    model.eval()
    total = 0.0
    for start in range(0, len(split), batch_size):
        x = model.to_layout(torch.as_tensor(split.images[start : start + batch_size]).to(device)).float().div_(255.0)
        condition = None if conditions is None else conditions[start : start + batch_size].to(device)
        total += F.mse_loss(model.forward_layout(x, condition), x, reduction="sum").item()
    return total / (len(split) * math.prod(split.images.shape[1:]))  # per pixel, whatever the image size


def _progress_bar(total: int, description: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    # disable=None: no bar when stderr is not a terminal (a log file gets the summary lines only)
    return tqdm(total=total, desc=description, unit="batch", leave=False, dynamic_ncols=True, disable=None)


def curve_path(checkpoint_path: str | Path) -> Path:
    """Where the training-curve PNG of a checkpoint goes: beside it."""
    path = Path(checkpoint_path)
    return path.with_name(f"{path.stem}-curve.png")


def resume_path(target: str | Path) -> Path:
    """Where the training of a checkpoint or bundle at target keeps its state until it ends: beside it."""
    target = Path(target)
    return target.with_name(f"{target.name}.training.pt")


def train_model(
    config: TrainConfig,
    *,
    out: str | Path | None = None,
    data_dir: str | Path | None = None,
    limit: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> TrainResult:
    """Find the data, train, and (when out is given) save the checkpoint and its curve atomically.

    Args:
        limit: train on the first `limit` training images only (quick runs); the test MSE
            is still measured on the whole test split.
    """
    if out is not None:
        if Path(out).suffix != ".safetensors":
            raise InvalidArgumentError(
                f"a checkpoint is a .safetensors file: name it like {Path(out).stem}.safetensors"
            )
        check_outside_bundles(out, "out")
        check_writable(out)
    data = load_fashion_mnist(data_dir)
    if log:
        log(f"Fashion-MNIST from {data.source}")
    if limit is not None:
        data = replace(data, train=data.train.head(limit))
    try:
        resume = None if out is None else resume_path(out)
        result = fit(config, data, resume=resume, progress=progress, log=log)
    except InvalidArgumentError as exc:
        if limit is None or exc.parameter != "batch_size":
            raise
        # Too few images for one batch: fit() cannot know they were cut to `limit`, which helps too.
        raise InvalidArgumentError(f"{exc} or raise `limit`", parameter=("batch_size", "limit")) from None
    if out is not None:
        save_checkpoint(out, to_checkpoint(result))
        from aesearch.figures.plots import training_curve

        training_curve(
            [asdict(h) for h in result.history],
            curve_path(out),
            title=f"recipe {config.recipe}: test MSE {result.test_mse:.5f}",
        )
    return result
