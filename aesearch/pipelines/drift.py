"""When an update must relearn the search space: synced equals fresh, within a stated bound.

Between compactions a bundle keeps the whitening (and trust calibration, and index) learned at
its last build or compaction, while a fresh build of the same images would learn them from the
images there are now. The writer (writer.py) decides by cost after every change:

  * at most RELEARN_EVERY_SYNC_MAX live images: every update that changes something compacts
    (update.compact: whitening, index and trust learned again from the stored vectors; nothing is
    encoded again), which costs well under a second at this size (docs/collections.md has the
    figures), so below it a synced bundle simply is a fresh build.
  * above it, the drift is measured instead: the whitening a fresh build would learn now is learned
    from DRIFT_FIT sampled live vectors (one covariance), and the top-10 neighbours of DRIFT_QUERIES
    sampled images among DRIFT_SAMPLE sampled images are found in both spaces; when they overlap by
    less than MIN_OVERLAP the update compacts. The check costs a fraction of a second at 70,000
    images, far less than the compaction it may save (docs/collections.md has the figures).

The bound: after any sequence of updates, the top-10 hits of a synced bundle overlap a fresh
build's by at least MIN_OVERLAP (0.97) as estimated on the sample, which the tests check as at
least 0.95 against a real fresh build (the margin covers the sample's error; the sampled fit errs
towards compacting early, never late). Bundles without a
learned transform ("none") have no drift to measure: their neighbours equal a fresh build's
exactly, and the size-based compaction (update.needs_compaction) relearns their trust calibration.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from aesearch.search.index import AffineTransform, in_space

RELEARN_EVERY_SYNC_MAX = 5_000  # live images up to which every changing update compacts (cheaper than the check)
MIN_OVERLAP = 0.97  # estimated top-10 overlap with a fresh build's space below which an update compacts
DRIFT_SAMPLE = 16_384  # images the neighbour check searches among
# Vectors the fresh whitening is learned from. All 60,000 of the Fashion-MNIST bundle's took 2.0 s in a
# new process (the float64 copies' page faults), 32,768 sampled 0.5 s, and the sample alone reads as
# drift of 0.008 (an unchanged bundle's estimate: 0.992, against 0.986 from 16,384).
DRIFT_FIT = 32_768
DRIFT_QUERIES = 256  # sampled images whose neighbours are compared
K = 10


def estimated_overlap(
    vectors: Callable[[np.ndarray], np.ndarray],
    n: int,
    kept: AffineTransform,
    metric: str,
    *,
    dims: int | None,
    shrinkage: float,
    fit_rows: np.ndarray | None = None,
    seed: int = 0,
) -> float:
    """Mean top-K overlap of sampled neighbours in the kept whitening and in one learned now.

    vectors: rows (sorted positions among the n live images after the update) -> their (len, z)
    embeddings; only the sampled rows are read. fit_rows: the positions a build learns from (its
    "train" split; default all), as update.compact chooses them.
    """
    if n <= K + 1:
        return 1.0  # every image is every image's neighbour in any space
    rng = np.random.default_rng(seed)
    fit = np.arange(n) if fit_rows is None else np.asarray(fit_rows)
    if len(fit) > DRIFT_FIT:
        fit = np.sort(rng.choice(fit, size=DRIFT_FIT, replace=False))
    fresh = _whitening_estimate(vectors(fit), dims=dims, shrinkage=shrinkage, layout=kept.layout)
    base = vectors(np.sort(rng.choice(n, size=min(n, DRIFT_SAMPLE), replace=False)))
    queries = rng.choice(len(base), size=min(len(base), DRIFT_QUERIES), replace=False)
    found = [_neighbours(in_space(space(base), metric), queries) for space in (kept, fresh)]
    return float(np.mean([len(np.intersect1d(a, b)) / K for a, b in zip(*found, strict=True)]))


def _whitening_estimate(x: np.ndarray, *, dims: int | None, shrinkage: float, layout=()) -> AffineTransform:
    """The whitening of x with its covariance summed in float32 (one BLAS product, a tenth of the
    float64 np.cov a build uses). This is an estimate's input: float32 sums move it far less than
    the sampling does."""
    x = np.asarray(x, dtype=np.float32)[:, AffineTransform.whitened_columns(layout)]
    mean = x.mean(axis=0, dtype=np.float64)
    centred = x - mean.astype(np.float32)
    covariance = (centred.T @ centred).astype(np.float64) / max(len(x) - 1, 1)
    return AffineTransform.from_moments(mean, covariance, dims=dims, shrinkage=shrinkage, layout=layout)


def _neighbours(x: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """(q, K) rows of x nearest each x[query] (itself left out), by squared Euclidean distance,
    which on unit vectors (cosine) ranks as cosine does."""
    scores = 2 * x[queries] @ x.T - np.einsum("ij,ij->i", x, x)[None]  # -|q - x|^2 + |q|^2: same order
    scores[np.arange(len(queries)), queries] = -np.inf
    return np.argpartition(-scores, K, axis=1)[:, :K]
