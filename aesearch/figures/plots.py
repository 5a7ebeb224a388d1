"""Matplotlib figures for the slow paths (training, evaluation, maps); never imported by a query.

Every figure is written atomically with the Agg backend, so no display is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from aesearch.atomic import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    from aesearch.figures.render import figure_format

    path = Path(path)
    kind = figure_format(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=kind)
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
    losses = [h["loss"] for h in history] + [h["last_batch_loss"] for h in history]
    if max(losses) > 3 * min(losses):  # a log scale only where there is a range to show
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
    ax_lr.set_xlim(0.5, max(epochs) + 0.5)
    ax_lr.grid(alpha=0.3, which="both")
    return save_figure(fig, path)


def eval_report(report, image, path: str | Path) -> Path:
    """Per-class P@10 bars (the bundle beside its baselines) and a few test queries with their hits.

    Args:
        report: an evaluate.EvalReport.
        image: id -> the indexed uint8 image, to draw the example queries and hits.
    """
    plt = _pyplot()
    import numpy as np

    classes = report.class_names
    examples = report.examples
    hits_per_row = max((len(e["hits"]) for e in examples), default=0)
    fig = plt.figure(figsize=(13, 4.2 + 1.6 * len(examples)))
    grid = fig.add_gridspec(1 + len(examples), hits_per_row + 1, height_ratios=[2.6] + [1] * len(examples))
    bars = fig.add_subplot(grid[0, :])
    x = np.arange(len(classes))
    width = 0.8 / len(report.retrieval)
    for n, row in enumerate(report.retrieval):
        bars.bar(
            x + (n - (len(report.retrieval) - 1) / 2) * width,
            row.per_class_p_at_10,
            width,
            label=f"{row.name}: P@10 {row.p_at_10:.3f}, mAP@100 {row.map_at_100:.3f}",
        )
    bars.set_xticks(x, classes, rotation=20)
    bars.set_ylim(0, 1.05)
    bars.set_ylabel("precision@10")
    bars.grid(axis="y", alpha=0.3)
    bars.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=len(report.retrieval), fontsize=9, frameon=False)
    bars.set_title(
        f"{report.bundle}: {report.n_queries:,} {report.protocol}-protocol queries against "
        f"{report.n_database:,} training images (reconstruction MSE on the queries {report.reconstruction_mse:.5f})"
    )
    for r, example in enumerate(examples, start=1):
        ax = fig.add_subplot(grid[r, 0])
        ax.imshow(image(example["query_id"]), cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"query: {classes[example['label']]}", fontsize=8)
        ax.axis("off")
        for c, hit in enumerate(example["hits"], start=1):
            ax = fig.add_subplot(grid[r, c])
            ax.imshow(image(hit["id"]), cmap="gray", vmin=0, vmax=255)
            good = hit["label"] == example["label"]
            ax.set_title(classes[hit["label"]], fontsize=7, color="tab:green" if good else "tab:red")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor("tab:green" if good else "tab:red")
                spine.set_linewidth(2)
    fig.tight_layout()
    return save_figure(fig, path)


def latent_map_figure(coords, labels, class_names, path: str | Path, *, title: str, marks: dict | None = None) -> Path:
    """Scatter of 2-D positions coloured by class; marks: the query and its hits, if any."""
    plt = _pyplot()
    import numpy as np

    fig, ax = plt.subplots(figsize=(10, 8.5))
    colours = plt.get_cmap("tab10")
    size = 2 if len(coords) > 20_000 else 6
    present = 0  # classes drawn: one whose images were all removed (a renamed folder) has no legend entry
    for c, name in enumerate(class_names):
        mask = labels == c
        if not mask.any():
            continue
        present += 1
        ax.scatter(
            coords[mask, 0],
            coords[mask, 1],
            s=size,
            alpha=0.35,
            color=colours(c % 10),
            label=name,
            linewidths=0,
            rasterized=True,
        )
    unlabelled = (labels < 0) | (labels >= len(class_names))  # a collection without --labels: every image
    if unlabelled.any():
        ax.scatter(
            coords[unlabelled, 0],
            coords[unlabelled, 1],
            s=size,
            alpha=0.35,
            color="grey",
            label="unlabelled",
            linewidths=0,
            rasterized=True,
        )
    if marks is not None:
        hits = np.asarray(marks["hits"])
        ax.scatter(
            hits[:, 0],
            hits[:, 1],
            s=90,
            facecolors=[colours(h % 10) if 0 <= h < len(class_names) else "grey" for h in marks["hit_labels"]],
            edgecolors="black",
            linewidths=1.2,
            zorder=3,
        )
        ax.scatter(
            [],
            [],
            s=90,
            facecolors="white",
            edgecolors="black",
            linewidths=1.2,
            label="its hits, by rank (filled with their class colour)",
        )
        for rank, (x, y) in enumerate(hits, start=1):  # above the star, which may sit on a hit
            ax.annotate(
                str(rank),
                (x, y),
                textcoords="offset points",
                xytext=(6, 6),
                fontsize=9,
                zorder=6,
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
            )
        ax.scatter(
            *marks["query"],
            s=420,
            marker="*",
            color="gold",
            edgecolors="black",
            linewidths=1.5,
            zorder=5,
            label=marks["label"],
        )
    ax.set_title(title, fontsize=11)
    ax.set_xticks([])
    ax.set_yticks([])
    legend = ax.legend(
        loc="center left", bbox_to_anchor=(1.01, 0.5), markerscale=3 if marks is None else 1, frameon=False
    )
    for handle in legend.legend_handles[:present]:
        handle.set_alpha(1)
        handle.set_sizes([40])
    return save_figure(fig, path)
