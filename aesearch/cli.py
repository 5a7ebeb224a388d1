"""The `aesearch` command: each subcommand parses options, calls one library function, formats.

Heavy imports (torch, faiss, matplotlib) happen inside the commands that need them, so
`aesearch --help` and `aesearch query` stay fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ._version import __version__
from .errors import AesearchError


class _Group(click.Group):
    """Turns every AesearchError into one line on stderr and exit status 1, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except AesearchError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("Interrupted: nothing was replaced.", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="aesearch")
def cli() -> None:
    """Search images by the latent vectors of a convolutional AutoEncoder (Fashion-MNIST)."""


@cli.command()
@click.option(
    "--recipe",
    type=click.Choice(["default", "seed"]),
    default="default",
    show_default=True,
    help="default: ours (one-cycle, lower MSE); seed: the article's recipe exactly.",
)
@click.option("--epochs", type=click.IntRange(1, 10_000), help="Epochs to run [recipe's: 15].")
@click.option("--batch-size", type=click.IntRange(1, 60_000), help="Batch size [recipe's].")
@click.option("--lr", type=click.FloatRange(0, 1, min_open=True), help="Learning rate (peak for one-cycle) [recipe's].")
@click.option("--z-size", type=click.IntRange(1, 100_000), default=314, show_default=True, help="Latent size.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (init and shuffling).")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda or cuda:N.")
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16"]),
    default="auto",
    show_default=True,
    help="auto: bfloat16 matmuls where the hardware has them, else float32.",
)
@click.option("--data-dir", type=click.Path(path_type=Path), help="Folder holding Fashion-MNIST (else searched).")
@click.option("--limit", type=click.IntRange(1, 60_000), help="Train on the first N training images only.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("runs/model.safetensors"),
    show_default=True,
    help="Checkpoint to write; its training curve goes beside it.",
)
def train(recipe, epochs, batch_size, lr, z_size, seed, device, precision, data_dir, limit, out) -> None:
    """Train the AutoEncoder and write a self-describing checkpoint plus a training-curve PNG."""
    from .train import TrainConfig, curve_path, train_model

    config = TrainConfig.for_recipe(
        recipe, epochs=epochs, batch_size=batch_size, lr=lr, z_size=z_size, seed=seed, device=device,
        precision=precision,
    )  # fmt: skip
    result = train_model(config, out=out, data_dir=data_dir, limit=limit, log=click.echo)
    click.echo(
        f"Checkpoint: {out}  (test MSE {result.test_mse:.5f}, {result.seconds:.0f} s on {result.device}, "
        f"{result.precision})"
    )
    click.echo(f"Training curve: {curve_path(out)}")


def main() -> None:
    cli(prog_name="aesearch")
