"""`aesearch map`: the indexed latents in 2-D, coloured by class, with a query and its hits on it.

The map is drawn in the space the search uses (the bundle's transform and metric applied), so
what is near on the map is near for the search too, as far as two dimensions can show it.
  * pca (default): all images, projected linearly; a query is projected exactly the same way.
  * tsne (needs scikit-learn): a seeded sample of images; a query and its hits are placed at
    their nearest sampled neighbour, since t-SNE cannot place new points.
The projection is computed once per bundle and cached beside it, in `.NAME.cache/` (keyed by the
bundle's own checksums), so the next map only draws. Never inside the bundle: no command writes
into a bundle it reads. PCA reads the vectors a block at a time (two passes: the covariance, then
the coordinates), so a million images need no more memory than their 2-D coordinates, and the
server's map (interfaces/map_routes.py) can show how far it has got.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aesearch.atomic import atomic_path, computed_once
from aesearch.errors import InvalidArgumentError
from aesearch.search.engine import QueryResult, SearchEngine

METHODS = ("pca", "tsne")
TSNE_SAMPLE = 10_000
PCA_BLOCK = 65_536  # vectors read at a time: 50 MB at 192 dimensions


@dataclass
class Projection:
    method: str
    ids: np.ndarray  # (m,) ids of the projected images (all of them for pca, a sample for tsne)
    coords: np.ndarray  # (m, 2)
    mean: np.ndarray | None = None  # pca: x -> (x - mean) @ components
    components: np.ndarray | None = None  # (d, 2)
    vectors: np.ndarray | None = None  # tsne: the sampled search-space vectors, to place new points
    from_cache: bool = False

    def place(self, search_vectors: np.ndarray) -> np.ndarray:
        """(n, d) vectors in search space -> (n, 2) positions on the map."""
        if self.method == "pca":
            return (search_vectors - self.mean) @ self.components
        nearest = np.argmin(
            (search_vectors**2).sum(1)[:, None] - 2 * search_vectors @ self.vectors.T + (self.vectors**2).sum(1)[None],
            axis=1,
        )
        return self.coords[nearest]


def project(
    engine: SearchEngine,
    method: str = "pca",
    *,
    cache: bool = True,
    progress: Callable[[float], None] | None = None,
) -> Projection:
    """The 2-D projection of the bundle's latents (from the cache when there is one).

    progress: called with the fraction done (0 to 1) as the projection is computed.
    """
    if method not in METHODS:
        raise InvalidArgumentError(
            f"unknown map `method` {method!r}: choose one of {', '.join(METHODS)}", parameter="method"
        )
    engine.require_images()
    cache_path = cache_dir(engine.bundle.path) / f"map-{method}-{_bundle_key(engine)}.npz"
    if not cache:
        return _compute(engine, method, progress or (lambda fraction: None))
    # server workers (or a server and `aesearch map`) compute it once
    with computed_once(cache_path.parent / f".map-{method}.lock"):
        return _cached_or_computed(engine, method, cache_path, progress)


def _cached_or_computed(
    engine: SearchEngine, method: str, cache_path: Path, progress: Callable[[float], None] | None
) -> Projection:
    if cache_path.is_file():
        try:
            with np.load(cache_path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            cached = Projection(method, from_cache=True, **arrays)
            if _fits(cached, engine):
                return cached
        except (OSError, ValueError, TypeError, EOFError):
            pass  # a damaged or stale cache is recomputed (and rewritten)
    projection = _compute(engine, method, progress or (lambda fraction: None))
    _save(projection, cache_path)
    return projection


def latent_map(
    engine: SearchEngine,
    out: str | Path,
    *,
    method: str = "pca",
    query: QueryResult | None = None,
    query_label: str = "query",
    cache: bool = True,
) -> tuple[Projection, Path]:
    """Draw the map (and the query with its hits, if given) to out; return the projection too."""
    from aesearch.figures.plots import latent_map_figure

    projection = project(engine, method, cache=cache)
    labels = engine.bundle.records(projection.ids)["label"]
    marks = None
    if query is not None:
        hits = engine.bundle.embeddings(np.array([h.id for h in query.hits], dtype=np.int64))  # as the index holds them
        search_space = _search_space(engine, np.concatenate([query.latent[None], hits]))
        placed = projection.place(search_space)
        marks = {
            "query": placed[0],
            "hits": placed[1:],
            "hit_labels": [h.label for h in query.hits],
            "label": query_label,
        }
    path = latent_map_figure(
        projection.coords,
        labels,
        engine.bundle.class_names,
        out,
        title=f"{engine.bundle.path}: {len(projection.ids):,} images, {method.upper()} of the search space",
        marks=marks,
    )
    return projection, path


def _compute(engine: SearchEngine, method: str, progress: Callable[[float], None]) -> Projection:
    ids = engine.bundle.live_ids()
    if method == "pca":
        return _pca(engine, ids, progress)
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise InvalidArgumentError(
            'the t-SNE map needs scikit-learn: `pip install scikit-learn` (or use `method` "pca")', parameter="method"
        ) from None
    rng = np.random.default_rng(0)
    ids = np.sort(rng.choice(ids, size=min(TSNE_SAMPLE, len(ids)), replace=False))
    vectors = _search_space(engine, engine.bundle.embeddings(ids))
    perplexity = float(min(30, max(2, (len(ids) - 1) / 3)))
    coords = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=0).fit_transform(vectors)
    progress(1.0)
    return Projection("tsne", ids, coords.astype(np.float32), vectors=vectors)


def _pca(engine: SearchEngine, ids: np.ndarray, progress: Callable[[float], None]) -> Projection:
    """PCA by the covariance, accumulated in float64 a block at a time, then the coordinates."""
    blocks = [ids[start : start + PCA_BLOCK] for start in range(0, len(ids), PCA_BLOCK)]
    d = engine.index.search_dim
    total, gram = np.zeros(d), np.zeros((d, d))
    for done, block in enumerate(blocks):
        vectors = _search_space(engine, engine.bundle.embeddings(block)).astype(np.float64)
        total += vectors.sum(axis=0)
        gram += vectors.T @ vectors
        progress(0.5 * (done + 1) / len(blocks))
    mean = total / max(len(ids), 1)
    _, eigenvectors = np.linalg.eigh(gram / max(len(ids), 1) - np.outer(mean, mean))
    components = np.ascontiguousarray(eigenvectors[:, ::-1][:, :2], dtype=np.float32)  # the two largest
    mean = mean.astype(np.float32)
    coords = np.empty((len(ids), 2), dtype=np.float32)
    for done, block in enumerate(blocks):
        start = done * PCA_BLOCK
        vectors = _search_space(engine, engine.bundle.embeddings(block))
        coords[start : start + len(block)] = (vectors - mean) @ components
        progress(0.5 + 0.5 * (done + 1) / len(blocks))
    return Projection("pca", ids, coords, mean, components)


def cache_dir(bundle: Path) -> Path:
    """`.NAME.cache` beside the bundle (as its `.NAME.lock`): it outlives a rebuild's folder swap."""
    bundle = bundle.resolve()  # "." and ".." have no name of their own
    return bundle.parent / f".{bundle.name}.cache"


def _fits(projection: Projection, engine: SearchEngine) -> bool:
    """Whether a cached projection is whole and right for this bundle: the cache is not covered by
    the manifest's checksums, so it is checked here like any input (shapes, dtypes, finite numbers,
    ids that are live in the bundle; for pca exactly the live ids)."""
    ids, coords = projection.ids, projection.coords
    d = engine.index.search_dim
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer) or coords.shape != (len(ids), 2):
        return False
    arrays = [coords]
    if projection.method == "pca":
        if projection.mean is None or projection.components is None or projection.vectors is not None:
            return False
        if projection.mean.shape != (d,) or projection.components.shape != (d, 2):
            return False
        if not np.array_equal(ids, engine.bundle.live_ids()):
            return False
        arrays += [projection.mean, projection.components]
    else:
        if projection.vectors is None or projection.vectors.shape != (len(ids), d) or projection.mean is not None:
            return False
        live = engine.bundle.live_ids()
        if len(ids) == 0 or not np.isin(ids, live).all():
            return False
        arrays.append(projection.vectors)
    return all(np.issubdtype(a.dtype, np.floating) and np.isfinite(a).all() for a in arrays)


def _search_space(engine: SearchEngine, latents: np.ndarray) -> np.ndarray:
    return engine.index.search_space(latents)


def _bundle_key(engine: SearchEngine) -> str:
    files = engine.manifest["files"]
    text = "".join(files[name]["sha256"] for name in sorted(files))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _save(projection: Projection, path: Path) -> None:
    arrays = {"ids": projection.ids, "coords": projection.coords}
    for name in ("mean", "components", "vectors"):
        if getattr(projection, name) is not None:
            arrays[name] = getattr(projection, name)
    try:
        with atomic_path(path) as tmp:
            np.savez(tmp, **arrays)
        # Projections of earlier states of this bundle (before a sync or a rebuild) are never read again.
        for stale in path.parent.glob(f"map-{projection.method}-*.npz"):
            if stale != path:
                stale.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only folder: the map is still drawn, only not cached
