"""The vector index: FAISS behind one small class. Never imports torch.

FAISS's contract is kept at this boundary: float32 C-contiguous (n, d) in, (D, I) out, -1 where
fewer than k results exist. What this layer adds:
  * a metric recorded with the index and applied to every query the same way: "l2" (Euclidean
    distance between vectors) or "cosine" (1 - cosine similarity, computed as L2 on unit vectors
    so every FAISS index type serves it);
  * an optional affine transform (a whitening learned at build time) applied before the metric;
  * distances reported so that smaller is closer, whatever the metric;
  * OpenMP threads chosen per call: one thread for a handful of queries (a single 70k x 314 flat
    scan took 3.5 ms with 1 thread and 9.5 ms with 2 on the reference machine), all for batches.
    OpenMP keeps this setting per calling thread, so concurrent queries do not disturb each other;
  * a row's result that does not depend on the batch it came in (aesearch/rowwise.py);
  * approximate indexes tuned at build time to a target recall@10 against exact search.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import faiss
import numpy as np

from aesearch import defaults
from aesearch.errors import InvalidArgumentError
from aesearch.rowwise import map_blocks, matmul, threads_for

INDEX_TYPES = ("flat", "hnsw", "ivf", "sq8")
METRICS = ("l2", "cosine")
TRANSFORMS = ("none", "whiten")
# Tuning aims above the promised 0.99 so that queries other than the probes stay above it too.
TARGET_RECALL = 0.995
# Rows from which a transform runs on every core: below, handing out the work costs more than it saves
# (a query's 100 re-ranking candidates took 1.5 ms on two threads, 0.3 ms on one).
_BULK_ROWS = 4096


@dataclass(frozen=True)
class IndexSpec:
    """What kind of index, under which metric, with which parameters (recorded in the manifest).

    index_type is one of INDEX_TYPES or any FAISS factory string (e.g. "IVF256,PQ32"); transform
    is "none" or "whiten" (PCA whitening learned when the index is built, see AffineTransform).
    """

    index_type: str = "flat"
    metric: str = "l2"
    params: dict = field(default_factory=dict)
    transform: str = "none"

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise InvalidArgumentError(f"unknown metric {self.metric!r}: choose one of {', '.join(METRICS)}")
        if self.transform not in TRANSFORMS:
            raise InvalidArgumentError(f"unknown transform {self.transform!r}: choose one of {', '.join(TRANSFORMS)}")
        if not self.index_type or not isinstance(self.index_type, str):
            raise InvalidArgumentError(f"index type must be one of {', '.join(INDEX_TYPES)} or a FAISS factory string")
        shrinkage = self.params.get("whiten_shrinkage")
        if shrinkage is not None and not (isinstance(shrinkage, int | float) and 0 <= shrinkage <= 10):  # NaN too
            # checked here, not when the manifest is written after every image was encoded
            raise InvalidArgumentError(
                f"`whiten_shrinkage` must be from 0 to 10, got {shrinkage}", parameter="whiten_shrinkage"
            )

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def exact(self) -> bool:
        return self.index_type == "flat"


Layout = tuple[tuple[int, float, bool], ...]  # ModelConfig.search_layout: per part (width, weight, whitened)


@dataclass(frozen=True)
class AffineTransform:
    """x -> (x - mean) @ matrix: a whitening or projection learned on the indexed vectors.

    With a layout (a member whose vector is made of parts: architecture.ModelConfig.search_layout),
    mean and matrix whiten the one part marked whitened, and every part is then made unit length and
    multiplied by its weight, side by side: the search space of [grey z, histogram, z].
    """

    mean: np.ndarray  # (d_in,), or the whitened part's width with a layout
    matrix: np.ndarray  # (d_in, d_out), the same
    layout: Layout = ()

    @property
    def in_dims(self) -> int:
        """The width of the vectors it takes."""
        return sum(width for width, _, _ in self.layout) if self.layout else self.mean.shape[0]

    @property
    def out_dims(self) -> int:
        """The width of the vectors it gives."""
        if not self.layout:
            return self.matrix.shape[1]
        return sum(self.matrix.shape[1] if whitened else width for width, _, whitened in self.layout)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(n, d_in) -> (n, d_out) float32; a few rows on this thread, many on every core (rowwise)."""
        x = np.asarray(x, dtype=np.float32)
        threads = None if len(x) >= _BULK_ROWS else 1
        compute = self._in_parts if self.layout else lambda rows: matmul(rows - self.mean, self.matrix)
        return map_blocks(compute, x, (self.out_dims,), threads)

    def _in_parts(self, rows: np.ndarray) -> np.ndarray:
        parts, start = [], 0
        for width, weight, whitened in self.layout:
            part = rows[:, start : start + width]
            start += width
            if whitened:
                part = matmul(part - self.mean, self.matrix)
            norms = np.linalg.norm(part, axis=1, keepdims=True)
            parts.append(part * (np.float32(weight) / np.maximum(norms, np.float32(1e-12))))
        return np.concatenate(parts, axis=1).astype(np.float32, copy=False)

    @staticmethod
    def whitened_columns(layout: Layout) -> slice:
        """Where a layout's whitened part sits in a vector (the whole vector without a layout)."""
        start = 0
        for width, _, whitened in layout:
            if whitened:
                return slice(start, start + width)
            start += width
        return slice(None)

    @classmethod
    def checked(cls, mean: np.ndarray, matrix: np.ndarray, dims: int, layout: Layout = ()) -> AffineTransform:
        """A transform read from disk: right shapes for dims-dimensional vectors, finite numbers."""
        mean, matrix = np.asarray(mean), np.asarray(matrix)
        layout = tuple((int(w), float(weight), bool(white)) for w, weight, white in layout)
        if layout and (sum(w for w, _, _ in layout) != dims or sum(white for _, _, white in layout) != 1):
            raise ValueError(f"transform layout {layout} does not fit {dims}-d vectors")
        part = cls.whitened_columns(layout)
        width = len(range(dims)[part])
        if mean.shape != (width,) or matrix.ndim != 2 or matrix.shape[0] != width or not 1 <= matrix.shape[1] <= width:
            raise ValueError(f"transform of shape {mean.shape}, {matrix.shape} does not fit {dims}-d vectors")
        if not (np.isfinite(mean).all() and np.isfinite(matrix).all()):
            raise ValueError("transform holds NaN or infinity")
        return cls(mean.astype(np.float32), np.ascontiguousarray(matrix, dtype=np.float32), layout)

    @classmethod
    def whitening(
        cls, vectors: np.ndarray, *, dims: int | None = None, shrinkage: float = 0.0, layout: Layout = ()
    ) -> AffineTransform:
        """PCA whitening learned on vectors: centre, rotate onto the principal axes, divide each
        axis by sqrt(variance + shrinkage * largest variance), keep the top dims axes. With a
        layout, of its whitened part.

        Shrinkage stops the low-variance (mostly noise) axes from being blown up to the same
        weight as the informative ones.
        """
        x = np.asarray(vectors, dtype=np.float64)[:, cls.whitened_columns(layout)]
        mean = x.mean(axis=0)
        return cls.from_moments(mean, np.cov(x - mean, rowvar=False), dims=dims, shrinkage=shrinkage, layout=layout)

    @classmethod
    def from_moments(
        cls,
        mean: np.ndarray,
        covariance: np.ndarray,
        *,
        dims: int | None = None,
        shrinkage: float = 0.0,
        layout: Layout = (),
    ) -> AffineTransform:
        """The whitening of vectors with this mean and covariance (float64): the one formula, whether
        the moments come from the vectors in memory (whitening()) or streamed (pipelines/builder.py).
        With a layout, mean and covariance may be the whole vector's or the whitened part's alone."""
        part = cls.whitened_columns(layout)
        if layout and len(mean) == sum(w for w, _, _ in layout):
            mean, covariance = np.asarray(mean)[part], np.asarray(covariance)[part, part]
        variances, axes = np.linalg.eigh(np.atleast_2d(covariance))
        order = np.argsort(variances)[::-1][:dims]
        variances, axes = np.maximum(variances[order], 0), axes[:, order]
        scale = 1 / np.sqrt(variances + shrinkage * variances[0] + 1e-12)
        return cls(
            np.asarray(mean).astype(np.float32), np.ascontiguousarray(axes * scale, dtype=np.float32), tuple(layout)
        )

    @classmethod
    def parts_only(cls, layout: Layout) -> AffineTransform:
        """A layout's parts made unit length and weighted, its whitened part left unwhitened (transform none)."""
        width = len(range(sum(w for w, _, _ in layout))[cls.whitened_columns(layout)])
        return cls(np.zeros(width, np.float32), np.eye(width, dtype=np.float32), tuple(layout))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """What transform.npz holds (and a cluster's workers are sent): mean, matrix, and any layout."""
        arrays = {"mean": self.mean, "matrix": self.matrix}
        if self.layout:
            arrays["layout"] = np.asarray(self.layout, dtype=np.float64)
        return arrays


class VectorIndex:
    """A FAISS index plus the metric, transform and tuned parameters it was built with."""

    def __init__(self, index: faiss.Index, spec: IndexSpec, transform: AffineTransform | None = None) -> None:
        self.index, self.spec, self.transform = index, spec, transform
        self._apply_search_params()

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        spec: IndexSpec,
        transform: AffineTransform | None = None,
        *,
        fit_rows: np.ndarray | None = None,
        seed: int = 0,
    ) -> VectorIndex:
        """Index vectors; approximate types get parameters sized for n and tuned for recall.

        Args:
            transform: apply this learned transform; if None and spec.transform asks for one, it
                is learned here, on vectors[fit_rows] (default: all vectors).
        """
        params = dict(spec.params)
        if transform is None and spec.transform == "whiten":
            params.setdefault("whiten_dims", None)
            params.setdefault("whiten_shrinkage", 0.0)
            sample = vectors if fit_rows is None else vectors[fit_rows]
            transform = AffineTransform.whitening(
                sample, dims=params["whiten_dims"], shrinkage=params["whiten_shrinkage"]
            )
        prepared = to_search_space(vectors, spec.metric, transform)
        n, d = prepared.shape
        index = new_faiss_index(spec.index_type, d, n, params)
        if not index.is_trained:
            rng = np.random.default_rng(seed)
            # k-means wants at least 39 points per list; more than 100,000 adds little but time.
            size = min(n, 100_000)
            index.train(prepared[rng.choice(n, size=size, replace=False)] if size < n else prepared)
        with search_threads(n):
            index.add(prepared)
        built = cls(index, IndexSpec(spec.index_type, spec.metric, params, spec.transform), transform)
        if not spec.exact:
            built._tune(prepared, seed=seed)
        return built

    @classmethod
    def read(cls, path: str | Path, spec: IndexSpec, transform: AffineTransform | None = None) -> VectorIndex:
        return cls(faiss.read_index(str(path)), spec, transform)

    def write(self, path: str | Path) -> None:
        faiss.write_index(self.index, str(path))

    def __len__(self) -> int:
        return self.index.ntotal

    @property
    def dim(self) -> int:
        """Dimension of the vectors given to search() (before any transform)."""
        return self.transform.in_dims if self.transform is not None else self.index.d

    def search_space(self, vectors: np.ndarray) -> np.ndarray:
        """Vectors as the index compares them: transformed, and unit length for cosine."""
        return to_search_space(vectors, self.spec.metric, self.transform)

    def search_prepared(
        self, prepared: np.ndarray, k: int, *, params: faiss.SearchParameters | None = None, rerank: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """Vectors already in the search space -> (squared L2 distances, positions), FAISS's raw answer.

        rerank: a re-ranked index (large.RerankedVectorIndex) re-ranks this many times its tuned
        candidates; an index that compares full vectors has nothing to re-rank and ignores it."""
        with search_threads(len(prepared)):
            return self.index.search(prepared, k, params=params)

    def search_parameters(self) -> faiss.SearchParameters:
        """Fresh search parameters of this index's kind, carrying its tuned efSearch / nprobe."""
        return self._parameters(exhaustive=False)

    def exhaustive_parameters(self) -> faiss.SearchParameters:
        """Search parameters that make the index consider every vector: all of an IVF's lists, an HNSW
        beam as wide as the index. The fallback for a query the tuned parameters answer with fewer
        than k results (k near the collection's size, or most of a list removed)."""
        return self._parameters(exhaustive=True)

    def wide_parameters(self, factor: int | None = None) -> faiss.SearchParameters | None:
        """Search parameters that look `factor` (default defaults.WIDE_SEARCH) times as far as the
        tuned ones (IVF lists, HNSW beam), for a query far from the collection; None when the index
        is exact (nothing to widen)."""
        if _hnsw(self.index) is None and _ivf(self.index) is None:
            return None
        return self._parameters(exhaustive=False, widen=defaults.WIDE_SEARCH if factor is None else factor)

    def wide_rerank(self, factor: int | None = None) -> int:
        """How many times its tuned candidates a wide search re-ranks: 1, nothing is re-ranked here."""
        return 1

    def _parameters(self, *, exhaustive: bool, widen: int = 1) -> faiss.SearchParameters:
        hnsw, ivf = _hnsw(self.index), _ivf(self.index)
        if hnsw is not None:
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(hnsw.efSearch, self.index.ntotal) if exhaustive else hnsw.efSearch * widen
        elif ivf is not None:
            params = faiss.SearchParametersIVF()
            params.nprobe = ivf.nlist if exhaustive else min(ivf.nlist, ivf.nprobe * widen)
        else:
            params = faiss.SearchParameters()
        return params

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, dim) float32 -> (distances (n, k) float32, ids (n, k) int64); smaller is closer."""
        if k < 1:
            raise InvalidArgumentError(f"k must be at least 1, got {k}")
        prepared = to_search_space(vectors, self.spec.metric, self.transform)
        with search_threads(len(prepared)):
            squared, ids = self.index.search(prepared, k)
        return to_distance(squared, self.spec.metric), ids

    def search_in_space(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Like search(), for vectors already in the search space (a refined query made there).

        No transform is applied; for cosine they are scaled to unit length, so any direction works.
        """
        if k < 1:
            raise InvalidArgumentError(f"k must be at least 1, got {k}")
        prepared = in_space(vectors, self.spec.metric)
        with search_threads(len(prepared)):
            squared, ids = self.index.search(prepared, k)
        return to_distance(squared, self.spec.metric), ids

    def _apply_search_params(self) -> None:
        params = self.spec.params
        if "ef_search" in params:
            _hnsw(self.index).efSearch = int(params["ef_search"])
        if "nprobe" in params:
            faiss.extract_index_ivf(self.index).nprobe = int(params["nprobe"])

    def _tune(self, prepared: np.ndarray, *, seed: int, queries: int = 500, k: int = 10) -> None:
        """Raise efSearch / nprobe until recall@k against exact search reaches TARGET_RECALL.

        The probe queries are indexed vectors with themselves left out of both answers, so they
        behave like new images near the collection (a vector finding itself is too easy).
        """
        rng = np.random.default_rng(seed + 1)
        sample_ids = rng.choice(len(prepared), size=min(queries, len(prepared)), replace=False)
        sample = prepared[sample_ids]
        k = min(k, len(prepared) - 1)
        if k < 1:
            return
        exact = faiss.IndexFlatL2(prepared.shape[1])
        exact.add(prepared)
        with search_threads(len(sample)):
            truth = _without_self(exact.search(sample, k + 1)[1], sample_ids, k)
        knob = "ef_search" if _hnsw(self.index) is not None else "nprobe" if _ivf(self.index) is not None else None
        params = self.spec.params

        def recall() -> float:
            return recall_at_k(_without_self(self._raw_search(sample, k + 1), sample_ids, k), truth)

        if knob is not None:
            limit = 4096 if knob == "ef_search" else _ivf(self.index).nlist
            value = 16 if knob == "ef_search" else 1
            while True:
                params[knob] = value
                self._apply_search_params()
                if recall() >= TARGET_RECALL or value >= limit:
                    break
                value = min(limit, value * 2)
        params["tuned_recall_at_10"] = round(recall(), 4)

    def _raw_search(self, prepared: np.ndarray, k: int) -> np.ndarray:
        with search_threads(len(prepared)):
            return self.index.search(prepared, k)[1]


def _without_self(ids: np.ndarray, own: np.ndarray, k: int) -> np.ndarray:
    """Each row's ids minus the row's own id, cut to k (padded with -1)."""
    rows = [row[row != me][:k] for row, me in zip(ids, own, strict=True)]
    return np.array([np.pad(r, (0, k - len(r)), constant_values=-1) for r in rows])


def check_index_type(index_type: str, dim: int, n: int | None = None) -> None:
    """Fail early (before any training) on an index type FAISS would refuse: for dim-dimensional
    vectors, and, where n (how many) is known, too few of them to train its lists or codebooks."""
    if index_type in (*INDEX_TYPES, "auto"):  # auto: aesearch.search.index_choice
        return
    index = new_faiss_index(index_type, dim, 100_000, {})
    if isinstance(faiss.downcast_index(index), faiss.IndexIDMap | faiss.IndexIDMap2):
        raise InvalidArgumentError(
            f"index type {index_type!r} maps ids itself, and aesearch keeps its own ids beside the index: "
            "drop IDMap from --index-type"
        )
    needed = _training_points_needed(index)
    if n is not None and n < needed:
        raise InvalidArgumentError(
            f"index type {index_type!r} needs at least {needed:,} vectors to train (its lists or codebooks), "
            f"and there are {n:,}: use --index-type auto, or fewer lists (e.g. IVF{max(1, n // 39)},Flat)"
        )


def _training_points_needed(index: faiss.Index) -> int:
    """The fewest vectors FAISS trains this index on: one per IVF list and per PQ centroid (1 when
    it needs no training)."""
    ivf = faiss.try_extract_index_ivf(index)
    inner = faiss.downcast_index(ivf if ivf is not None else index)
    if isinstance(inner, faiss.IndexPreTransform):
        inner = faiss.downcast_index(inner.index)
    pq = getattr(inner, "pq", None)
    return max(1, ivf.nlist if ivf is not None else 1, pq.ksub if pq is not None else 1)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each row's true neighbours that were found (order ignored)."""
    if truth.size == 0:
        return 1.0
    hits = sum(len(np.intersect1d(f[f >= 0], t)) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def new_faiss_index(index_type: str, d: int, n: int, params: dict) -> faiss.Index:
    """An empty FAISS index of this type for n vectors of d floats; params gets the sizes chosen (nlist,
    M, ef_construction) where not given. A type FAISS refuses is one InvalidArgumentError line."""
    if index_type == "flat":
        return faiss.IndexFlatL2(d)
    if index_type == "hnsw":
        params.setdefault("M", 32)
        params.setdefault("ef_construction", 200 if n <= 1_000_000 else 100)
        index = faiss.IndexHNSWFlat(d, int(params["M"]))
        index.hnsw.efConstruction = int(params["ef_construction"])
        return index
    if index_type == "ivf":
        # ~4 sqrt(n) lists, with at least 39 training points per list as FAISS advises.
        params.setdefault("nlist", max(1, min(int(4 * math.sqrt(n)), n // 39)))
        return faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, int(params["nlist"]))
    if index_type == "sq8":
        return faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit)
    try:
        return faiss.index_factory(d, index_type, faiss.METRIC_L2)
    except RuntimeError as exc:
        reason = " ".join(str(exc).split())
        reason = re.sub(r"^Error in .*? at \S+:\d+: ", "", reason)  # C++ location: noise to a user
        reason = reason.split("failed: ", 1)[-1].split("Error: ", 1)[-1][:200]
        raise InvalidArgumentError(
            f"FAISS refuses index type {index_type!r} for {d}-dimensional vectors ({reason}): use one of "
            f"{', '.join(INDEX_TYPES)} or a valid FAISS factory string"
        ) from None


def _hnsw(index: faiss.Index):
    try:
        return faiss.downcast_index(index).hnsw
    except AttributeError:
        return None


def _ivf(index: faiss.Index):
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def in_space(vectors: np.ndarray, metric: str) -> np.ndarray:
    """Vectors made in the search space (a refined query) as the index takes them: unit length for cosine."""
    return to_search_space(vectors, metric, None)


def to_search_space(vectors: np.ndarray, metric: str, transform: AffineTransform | None) -> np.ndarray:
    """(n, d) vectors as an index of this metric and transform compares them: float32, C-contiguous,
    transformed, unit length for cosine."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise InvalidArgumentError(f"vectors must be a 2-D (n, d) array, got shape {x.shape}")
    if transform is not None:
        if x.shape[1] != transform.in_dims:
            raise InvalidArgumentError(f"vectors have {x.shape[1]} dimensions, the index expects {transform.in_dims}")
        x = transform(x)
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = np.ascontiguousarray(x / np.maximum(norms, np.float32(1e-12)), dtype=np.float32)
    return x


def exact_search(prepared: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest rows of vectors to each prepared query: (squared L2, rows), FAISS's convention."""
    with search_threads(len(prepared)):
        return faiss.knn(np.ascontiguousarray(prepared, np.float32), vectors, k)


def to_squared(distance: float, metric: str) -> float:
    """to_distance's inverse for one distance: what the index compares."""
    return 2 * distance if metric == "cosine" else distance * distance


def to_distance(squared: np.ndarray, metric: str) -> np.ndarray:
    missing = squared >= np.finfo(np.float32).max / 2  # FAISS pads absent results with +inf-like values
    squared = np.maximum(squared, 0)  # BLAS rounding can give -1e-7 for identical vectors
    distance = squared / 2 if metric == "cosine" else np.sqrt(squared)  # 1 - cos = |a - b|^2 / 2 on unit vectors
    distance[missing] = np.inf
    return distance.astype(np.float32)


@contextmanager
def search_threads(n_queries: int) -> Iterator[None]:
    """FAISS's OpenMP threads for one call over n_queries (one for a handful, else as configured),
    restored afterwards. OpenMP's thread count is a per-thread setting: this touches only the
    calling thread, so concurrent queries in other threads are not disturbed.
    """
    before = faiss.omp_get_max_threads()
    wanted = 1 if threads_for(n_queries) == 1 else before
    if wanted != before:
        faiss.omp_set_num_threads(wanted)
    try:
        yield
    finally:
        if wanted != before:
            faiss.omp_set_num_threads(before)
