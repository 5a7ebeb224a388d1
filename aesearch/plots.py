"""Matplotlib figures for the slow paths (training, evaluation, maps); never imported by a query.

Every figure is written atomically with the Agg backend, so no display is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .atomic import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    _pyplot().close(fig)
    return path


def training_curve(history: Sequence[dict], path: str | Path, title: str = "") -> Path:
    """Loss (log scale) and learning rate per epoch, one above the other."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(6.4, 5.6), sharex=True, height_ratios=(2, 1))
    ax_loss.plot(epochs, [h["loss"] for h in history], marker="o", label="mean training loss")
    ax_loss.plot(epochs, [h["last_batch_loss"] for h in history], marker=".", alpha=0.6, label="last batch loss")
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("MSE")
    ax_loss.grid(alpha=0.3, which="both")
    ax_loss.legend()
    ax_loss.set_title(title or "Training")
    ax_lr.plot(epochs, [h["lr"] for h in history], marker="o", color="tab:orange")
    ax_lr.set_yscale("log")
    ax_lr.set_ylabel("learning rate (end of epoch)")
    ax_lr.set_xlabel("epoch")
    ax_lr.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_lr.grid(alpha=0.3, which="both")
    return save_figure(fig, path)
