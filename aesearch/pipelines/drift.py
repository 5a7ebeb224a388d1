"""When an update must relearn the search space: synced equals fresh, within a stated bound.

Between compactions a bundle keeps the whitening (and trust calibration, and index) learned at
its last build or compaction, while a fresh build of the same images would learn them from the
images there are now. The writer (writer.py) decides by cost after every change:

  * at most RELEARN_EVERY_SYNC_MAX live images: every update that changes something compacts
    (update.compact: whitening, index and trust learned again from the stored vectors; nothing is
    encoded again). Measured on 2 cores, flat index: 1,000 images 0.2 s, 5,000 0.55 s, 10,000 1.0 s,
    20,000 2.1 s, so below this size a synced bundle is a fresh build for under ~0.6 s.
  * above it, the drift is measured instead: the whitening a fresh build would learn now is learned
    from every live vector (one covariance), and the top-10 neighbours of DRIFT_QUERIES sampled
    images among DRIFT_SAMPLE sampled images are found in both spaces; when they overlap by less
    than MIN_OVERLAP the update compacts.

The bound: after any sequence of updates, the top-10 hits of a synced bundle overlap a fresh
build's by at least MIN_OVERLAP (0.97) as estimated on the sample, which the tests check as at
least 0.95 against a real fresh build (the margin covers the sample's error). Bundles without a
learned transform ("none") have no drift to measure: their neighbours equal a fresh build's
exactly, and the size-based compaction (update.needs_compaction) relearns their trust calibration.
"""

from __future__ import annotations

import numpy as np

from aesearch.search.index import AffineTransform, in_space

RELEARN_EVERY_SYNC_MAX = 5_000  # live images up to which every changing update compacts (~0.55 s here)
MIN_OVERLAP = 0.97  # estimated top-10 overlap with a fresh build's space below which an update compacts
DRIFT_SAMPLE = 16_384  # images the neighbour check searches among (the covariance uses every live vector)
DRIFT_QUERIES = 256  # sampled images whose neighbours are compared
K = 10


def estimated_overlap(vectors: np.ndarray, kept: AffineTransform, metric: str, *, dims: int | None,
                      shrinkage: float, fit_rows: np.ndarray | None = None, seed: int = 0) -> float:  # fmt: skip
    """Mean top-K overlap of sampled neighbours in the kept whitening and in one learned now.

    vectors: (n, z) every live embedding after the update; fit_rows: those a build learns from
    (its "train" split; default all), as update.compact chooses them.
    """
    n = len(vectors)
    if n <= K + 1:
        return 1.0  # every image is every image's neighbour in any space
    fresh = AffineTransform.whitening(vectors if fit_rows is None else vectors[fit_rows], dims=dims,
                                      shrinkage=shrinkage)  # fmt: skip
    rng = np.random.default_rng(seed)
    base = np.sort(rng.choice(n, size=min(n, DRIFT_SAMPLE), replace=False))
    queries = rng.choice(len(base), size=min(len(base), DRIFT_QUERIES), replace=False)
    found = [_neighbours(in_space(space(vectors[base]), metric), queries) for space in (kept, fresh)]
    return float(np.mean([len(np.intersect1d(a, b)) / K for a, b in zip(*found, strict=True)]))


def _neighbours(x: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """(q, K) rows of x nearest each x[query] (itself left out), by squared Euclidean distance,
    which on unit vectors (cosine) ranks as cosine does."""
    scores = 2 * x[queries] @ x.T - np.einsum("ij,ij->i", x, x)[None]  # -|q - x|^2 + |q|^2: same order
    scores[np.arange(len(queries)), queries] = -np.inf
    return np.argpartition(-scores, K, axis=1)[:, :K]
