"""`aesearch duplicates`: groups of exact and near-duplicate images, never an N x N matrix.

Two images are near duplicates when their distance in the bundle's search space (the metric and
whitening every query uses) is at most a threshold; exact duplicates have the same 28x28 pixels
after preprocessing and are always grouped, whatever the threshold. Groups are the connected
components of the graph of duplicate pairs.

Why it stays small and fast (imagededup's users hit memory errors and hangs at 60k-127k images
because it compares every pair in one matrix):
  * exact copies are found by sorting the pixel rows, O(n log n);
  * near pairs come from a FAISS range search, in blocks of queries, keeping each pair once:
    exact (flat) up to EXACT_LIMIT images, an IVF index above, whose nprobe is raised until it finds
    the true nearest other image (recall >= TARGET_RECALL) of the sample images that have one within
    a few times the radius: the pairs searched for are that close, and close pairs share an IVF
    list far more often than typical neighbours do;
  * components come from a vectorised union-find over the pairs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import faiss
import numpy as np

from aesearch import defaults
from aesearch.errors import InvalidArgumentError
from aesearch.search.notebook import group_html

DEFAULT_THRESHOLD = defaults.DUPLICATE_THRESHOLD
EXACT_LIMIT = 20_000  # flat range search costs n^2 d: 2 s at 20,000 images, 25 s at 70,000 here (IVF: 1.9 s)
PROBES = 2000  # sample images whose exact nearest neighbour is computed to tune the IVF (~1,000 of
# them close at 70,000 Fashion-MNIST images at 0.05: recall judged to +-0.003; 4,000 cost 0.3 s more)
NEAR_PROBE_FACTOR = 4  # ... judged on those with a neighbour within 4x the (squared) radius
MIN_NEAR_PROBES = 20  # fewer than this: judged on all probes
TARGET_RECALL = 0.99
TRAIN_PER_LIST = 16  # k-means training points per IVF list
FLOAT16_LARGEST = 60_000.0  # float16 holds up to 65,504
MAX_PAIRS = 20_000_000  # 320 MB of pairs: beyond that the threshold groups everything with everything
_BLOCK = 4096  # queries per range search call at most
_RESULTS_PER_BLOCK = 2_000_000  # and about this many results a call (24 MB): fewer queries where each finds many
_SAMPLE = 64  # images searched alone first, to estimate how many pairs a threshold makes
_PAIRS_PER_CHUNK = 1 << 18  # pairs whose distance is computed again at once (2 x 200 MB at 192 floats)


@dataclass
class DuplicateGroup:
    ids: list[int]
    exact: bool  # every member has the same pixels
    splits: list[str]
    paths: list[str]
    max_distance: float  # largest distance of a pair that joined the group (0 for exact copies)
    # Where the members' images come from (ids -> (n, *image_shape) uint8; the bundle), for pictures
    # of the group (a notebook's grid). Not part of the group's data: to_dict leaves it out.
    images_of: Callable[[Sequence[int]], np.ndarray] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        return {
            "ids": list(self.ids),
            "exact": self.exact,
            "splits": list(self.splits),
            "paths": list(self.paths),
            "max_distance": self.max_distance,
        }

    def _repr_html_(self) -> str:
        return group_html(self)


@dataclass
class DuplicateReport:
    threshold: float
    metric: str
    n_images: int
    across_splits: bool
    method: str  # how the pairs were searched
    probe_recall: float | None  # the IVF's nearest-neighbour recall on probes (None: exact search)
    pairs: dict[str, dict[str, int]]  # "train/test" -> {"exact": n, "near": n}: near counts the non-exact
    groups: list[DuplicateGroup]
    seconds: float = 0.0
    where: str | None = None  # the filter both images of every pair match (None: all images)
    images_in_groups: int = field(init=False)

    def __post_init__(self) -> None:
        self.images_in_groups = sum(len(g.ids) for g in self.groups)

    def to_dict(self) -> dict:
        return {
            "threshold": self.threshold,
            "metric": self.metric,
            "n_images": self.n_images,
            "across_splits": self.across_splits,
            "method": self.method,
            "probe_recall": self.probe_recall,
            "pairs": self.pairs,
            "images_in_groups": self.images_in_groups,
            "seconds": self.seconds,
            **({"where": self.where} if self.where is not None else {}),
            "groups": [g.to_dict() for g in self.groups],
        }


def find_duplicates(
    engine, *, threshold: float = DEFAULT_THRESHOLD, across_splits: bool = False, where=None
) -> DuplicateReport:
    """Exact and near-duplicate groups among a bundle's images, largest groups first.

    Args:
        threshold: the largest distance (as `query` reports it) at which two images count as
            near duplicates; 0 groups exact copies only.
        where: only images that match (filter text, a Filter, a Selection or ids): pairs whose
            images both match.
        across_splits: keep only pairs whose images are in different splits (Fashion-MNIST:
            training images that reappear in the test split).
    """
    from aesearch.search.engine import SearchEngine

    if not isinstance(engine, SearchEngine):  # a path, say: an AttributeError three calls down otherwise
        raise InvalidArgumentError(
            f"find_duplicates takes a SearchEngine, got {type(engine).__name__}: "
            "find_duplicates(SearchEngine.load(index_dir))"
        )
    real = isinstance(threshold, int | float | np.integer | np.floating) and not isinstance(threshold, bool)
    if not real or not np.isfinite(threshold) or threshold < 0:
        raise InvalidArgumentError(
            f"`threshold` must be a distance of 0 or more, got {threshold!r}", parameter="threshold"
        )
    engine.require_images()
    if across_splits and len(engine.bundle.split_names) == 1:  # the answer would be "none", for no reason
        raise InvalidArgumentError(
            "this bundle has one split (a folder collection): leave out `across_splits` (it keeps only pairs "
            "between a train and a test split)",
            parameter="across_splits",
        )
    start = time.perf_counter()
    parsed = engine.subset(where)[0]  # a bad filter: one line, before any work
    view = _View.of(engine, None if parsed is None else engine.select(parsed).ids)
    n = len(view.ids)
    exact_class = exact_classes(view.images)
    if threshold > 0 and n > 1:
        near_a, near_b, squared, method, recall = near_pairs(view.vectors, view.radius(threshold))
        near_d = view.to_distance(squared)
    else:
        near_a, near_b, near_d = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
        method, recall = "pixels only (threshold 0)", None
    # Exact copies: chain the members of each class (first-last links suffice for components).
    order = np.argsort(exact_class, kind="stable")
    same = exact_class[order[1:]] == exact_class[order[:-1]]
    chain_a, chain_b = order[:-1][same], order[1:][same]
    keep = exact_class[near_a] != exact_class[near_b]  # pixel-identical pairs are counted as exact
    near_a, near_b, near_d = near_a[keep], near_b[keep], near_d[keep]
    if across_splits:
        near_cross = view.split[near_a] != view.split[near_b]
        near_a, near_b, near_d = near_a[near_cross], near_b[near_cross], near_d[near_cross]
        chain_a, chain_b = _cross_split_chains(exact_class, view.split)
    pairs = _pair_counts(view, exact_class, near_a, near_b, across_splits)
    edges_a = np.concatenate([chain_a, near_a])
    edges_b = np.concatenate([chain_b, near_b])
    weights = np.concatenate([np.zeros(len(chain_a), np.float32), near_d])
    roots = connected_components(n, edges_a, edges_b)
    groups = _groups(view, roots, edges_a, weights, exact_class)
    return DuplicateReport(
        threshold=float(threshold),
        metric=view.metric,
        n_images=n,
        across_splits=across_splits,
        method=method,
        probe_recall=recall,
        pairs=pairs,
        groups=groups,
        seconds=round(time.perf_counter() - start, 2),
        where=None if parsed is None else parsed.summary,
    )


@dataclass
class _View:
    """What duplicate search needs from a bundle, row-aligned: ids, pixels, splits, vectors."""

    ids: np.ndarray  # (n,) int64
    images: np.ndarray  # (n, *picture_shape) uint8: as pictures show them (engine.pictures_of)
    split: np.ndarray  # (n,) int64 index into split_names
    split_names: list[str]
    bundle: object  # where paths are looked up, for the images that end in a group
    vectors: np.ndarray  # (n, d) float32 in the search space: transformed, unit length for cosine
    metric: str
    pictures_of: Callable[[Sequence[int]], np.ndarray]  # ids -> their pictures: a group's images_of

    @classmethod
    def of(cls, engine, ids: np.ndarray | None = None) -> _View:
        """ids: the images to compare (default: every live one)."""
        bundle = engine.bundle
        ids = bundle.live_ids() if ids is None else ids
        # The stored embeddings, in the search space every query uses: no image is encoded again.
        vectors = engine.index.search_space(bundle.embeddings(ids))
        return cls(
            ids=ids,
            images=engine.pictures_of(ids),
            split=bundle.records(ids)["split"].astype(np.int64),
            split_names=list(bundle.split_names),
            bundle=bundle,
            vectors=vectors,
            metric=engine.index.spec.metric,
            pictures_of=engine.pictures_of,
        )

    def radius(self, threshold: float) -> float:
        """The squared-L2 range search radius for a distance threshold (inclusive)."""
        squared = 2 * threshold if self.metric == "cosine" else threshold**2  # 1 - cos = |a - b|^2 / 2
        return float(np.nextafter(np.float32(squared), np.float32(np.inf)))

    def to_distance(self, squared: np.ndarray) -> np.ndarray:
        squared = np.maximum(squared, 0)
        return (squared / 2 if self.metric == "cosine" else np.sqrt(squared)).astype(np.float32)

    def path(self, row: int) -> str:
        """The image's path relative to its collection root ("" for dataset images)."""
        return self.bundle.path_of(int(self.ids[row]))


def exact_classes(images: np.ndarray) -> np.ndarray:
    """(n, 28, 28) uint8 -> (n,) int64: equal numbers exactly where the pixels are equal."""
    if len(images) == 0:  # a filter that matches nothing (reshape cannot infer a width from no rows)
        return np.zeros(0, np.int64)
    rows = np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), -1)
    # Sorting 70,000 rows of 784 bytes compares bytes (0.4 s); a 64-bit hash of each row sorts as
    # integers (0.03 s). Rows that share a hash are then compared in full, so the classes stay exact.
    _, inverse = np.unique(_row_hashes(rows), return_inverse=True)
    inverse = inverse.ravel()
    first = np.full(inverse.max() + 1, -1, np.int64)
    first[inverse[::-1]] = np.arange(len(rows) - 1, -1, -1)  # each class's first row
    shared = np.flatnonzero(np.bincount(inverse)[inverse] > 1)  # rows whose hash another row has
    if (rows[shared] != rows[first[inverse[shared]]]).any():  # a hash collision (never seen): sort bytes
        _, inverse = np.unique(rows.view(np.dtype((np.void, rows.shape[1]))).ravel(), return_inverse=True)
    return inverse.ravel().astype(np.int64)


def _row_hashes(rows: np.ndarray) -> np.ndarray:
    """(n, m) uint8 -> (n,) uint64: a multiplicative hash of each row's bytes (wrapping arithmetic)."""
    if rows.shape[1] % 8:
        rows = np.pad(rows, ((0, 0), (0, -rows.shape[1] % 8)))
    words = np.ascontiguousarray(rows).view(np.uint64)
    multipliers = np.random.default_rng(0).integers(1, 2**62, size=words.shape[1], dtype=np.uint64) * 2 + 1
    hashes = np.zeros(len(words), np.uint64)
    with np.errstate(over="ignore"):
        for column, multiplier in enumerate(multipliers):  # a column at a time: no (n, m) temporary
            hashes += (words[:, column] ^ (words[:, column] >> np.uint64(29))) * multiplier
    return hashes


def near_pairs(
    vectors: np.ndarray, radius: float, *, exact_limit: int = EXACT_LIMIT, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str, float | None]:
    """Every pair (i < j) of rows closer than radius in squared L2, by FAISS range search.

    Returns (i, j, squared distance, a description of the search, the IVF's probe recall or None).
    """
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = x.shape
    recall = None
    if n <= exact_limit:
        index: faiss.Index = faiss.IndexFlatL2(d)
        index.add(x)
        method = "exact range search"
    else:
        index, recall = _tuned_ivf(x, seed, radius)
        ivf = faiss.extract_index_ivf(index)
        method = f"IVF range search ({ivf.nlist} lists, nprobe {ivf.nprobe})"
    # The IVF holds float16 vectors: each stored vector moves by at most 2^-11 of its norm, so pairs
    # are searched within a radius widened by that much and their distances computed again exactly.
    wide = radius if n <= exact_limit else _widened(radius, float(np.sqrt((x**2).sum(axis=1).max())))
    block = _block_for(index, x, wide, seed)
    found_a, found_b, found_d, total = [], [], [], 0
    for start in range(0, n, block):
        limits, dist, ids = index.range_search(x[start : start + block], wide)
        rows = np.repeat(np.arange(start, start + len(limits) - 1), np.diff(limits.astype(np.int64)))
        keep = ids != rows  # no image with itself; a pair found from either side counts (an IVF
        found_a.append(np.minimum(rows[keep], ids[keep]))  # may miss it from one side only)
        found_b.append(np.maximum(rows[keep], ids[keep]))
        found_d.append(dist[keep])
        total += int(keep.sum())
        if total > 2 * MAX_PAIRS:
            raise InvalidArgumentError(
                f"more than {MAX_PAIRS:,} pairs are within this threshold: it groups nearly everything; "
                "lower `threshold`",
                parameter="threshold",
            )
    a, b, d = np.concatenate(found_a), np.concatenate(found_b), np.concatenate(found_d)
    _, first = np.unique(a * n + b, return_index=True)  # each pair once, lower id first
    a, b, d = a[first], b[first], d[first]
    if wide != radius:  # exact distances, a chunk of pairs at a time (16 M pairs at once took 23 GB)
        d = np.concatenate(
            [
                ((x[a[i : i + _PAIRS_PER_CHUNK]] - x[b[i : i + _PAIRS_PER_CHUNK]]) ** 2).sum(axis=1, dtype=np.float32)
                for i in range(0, len(a), _PAIRS_PER_CHUNK)
            ]
            or [np.zeros(0, np.float32)]
        )
        within = d <= radius
        a, b, d = a[within], b[within], d[within]
    return a, b, d, method, recall


def _block_for(index: faiss.Index, x: np.ndarray, radius: float, seed: int) -> int:
    """Queries per range search call, so that one call's results stay near _RESULTS_PER_BLOCK; or one
    line when the threshold would pair nearly everything (estimated from a sample of images, each
    searched alone: a call's results can be the whole collection, 0.5 paired Fashion-MNIST's
    70,000 images with most of the others and took 23 GB before this)."""
    n = len(x)
    sample = np.random.default_rng(seed).choice(n, size=min(n, _SAMPLE), replace=False)
    found = [int(index.range_search(x[row : row + 1], radius)[0][-1]) - 1 for row in sample]  # less itself
    per_image = max(0.0, float(np.mean(found)))
    if per_image * n / 2 > MAX_PAIRS:
        raise InvalidArgumentError(
            f"about {per_image * n / 2:,.0f} pairs are within this threshold (each image has about "
            f"{per_image:,.0f} others that close, in a sample of {len(sample)}): it groups nearly everything; "
            "lower `threshold`",
            parameter="threshold",
        )
    return int(max(1, min(_BLOCK, _RESULTS_PER_BLOCK // max(per_image, 1.0))))


def _widened(radius: float, largest_norm: float) -> float:
    """The squared radius that a float16 copy of the vectors needs to find every pair within radius."""
    return float((np.sqrt(radius) + 2.0**-10 * largest_norm) ** 2)


def _tuned_ivf(x: np.ndarray, seed: int, radius: float) -> tuple[faiss.Index, float]:
    """An IVF index of float16 vectors over x with nprobe raised until it finds the nearest other image of the
    probe images that have one within NEAR_PROBE_FACTOR x the radius (all probes if too few do)."""
    n, d = x.shape
    rng = np.random.default_rng(seed)
    # Many small lists: the tuned nprobe is about the same (8 at 70,000 with 529 or 1,024 lists), so
    # smaller lists scan fewer vectors (range search 1.4 s -> 1.0 s at 70,000).
    nlist = int(min(2 * np.sqrt(n), n // TRAIN_PER_LIST))
    # float16 codes: the range search reads half the bytes (1.4 s -> 1.0 s at 70,000 images)
    index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatL2(d), d, nlist, faiss.ScalarQuantizer.QT_fp16)
    if np.abs(x).max() > FLOAT16_LARGEST:  # (never in a whitened space) float16 would overflow
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
    # Rough k-means is enough (nprobe is tuned below): 5 iterations on 16 points a list, where
    # FAISS's defaults (10 iterations, 39-256 points a list) cost 1 s more at 70,000 images.
    index.cp.niter = 5
    index.cp.min_points_per_centroid = index.cp.max_points_per_centroid = TRAIN_PER_LIST
    index.cp.seed = seed
    sample = rng.choice(n, size=min(n, nlist * TRAIN_PER_LIST), replace=False)
    index.train(x[np.sort(sample)])
    index.add(x)
    probes = np.sort(rng.choice(n, size=min(n, PROBES), replace=False))
    exact = faiss.IndexFlatL2(d)
    exact.add(x)
    distances, ids = exact.search(x[probes], 2)
    truth = _nearest_other(ids, probes)
    # Pairs within the radius are what is searched for: judge recall on the probes that have a
    # neighbour that close (a few times the radius, so there are enough of them). Close pairs
    # share a list far more often than typical neighbours do, so this needs a smaller nprobe.
    close = np.where(ids[:, 0] == probes, distances[:, 1], distances[:, 0]) <= NEAR_PROBE_FACTOR * radius
    if close.sum() >= MIN_NEAR_PROBES:
        probes, truth = probes[close], truth[close]
    ivf = faiss.extract_index_ivf(index)
    ivf.nprobe = 2  # the floor: a neighbour just across a list boundary is common even for close pairs
    while True:
        recall = float(np.mean(_nearest_other(index.search(x[probes], 2)[1], probes) == truth))
        if recall >= TARGET_RECALL or ivf.nprobe >= nlist:
            return index, recall
        ivf.nprobe = min(nlist, (ivf.nprobe * 3 + 1) // 2)  # 2, 3, 5, 8, 12, 18: each step costs less than overshooting


def _nearest_other(ids: np.ndarray, own: np.ndarray) -> np.ndarray:
    return np.where(ids[:, 0] == own, ids[:, 1], ids[:, 0])


def connected_components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n,) root of each node's component, for the undirected edges a[i]-b[i] (vectorised union-find).

    Each round hooks every edge's larger root under its smaller one, then flattens the trees by
    pointer jumping; it ends when every edge joins two nodes of the same root.
    """
    parent = np.arange(n, dtype=np.int64)
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    while len(a):
        ra, rb = parent[a], parent[b]
        differ = ra != rb
        if not differ.any():
            break
        lo, hi = np.minimum(ra[differ], rb[differ]), np.maximum(ra[differ], rb[differ])
        np.minimum.at(parent, hi, lo)
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
        a, b = a[differ], b[differ]
    return parent


def _cross_split_chains(exact_class: np.ndarray, split: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges joining, in each class of identical images, every member to one member of another split."""
    chain_a, chain_b = [], []
    order = np.lexsort((split, exact_class))
    cls, spl = exact_class[order], split[order]
    boundaries = np.flatnonzero(np.diff(cls)) + 1
    for members, splits in zip(np.split(order, boundaries), np.split(spl, boundaries), strict=True):
        if len(members) > 1 and splits[0] != splits[-1]:
            other = members[splits != splits[0]][0]
            own = members[splits == splits[0]]
            chain_a += [own, members[splits != splits[0]]]
            chain_b += [np.full(len(own), other), np.full(int((splits != splits[0]).sum()), own[0])]
    if not chain_a:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(chain_a), np.concatenate(chain_b)


def _pair_counts(
    view: _View, exact_class: np.ndarray, near_a: np.ndarray, near_b: np.ndarray, across_splits: bool
) -> dict[str, dict[str, int]]:
    """Pairs by split pair: exact (counted from class sizes, never listed) and near (not exact)."""
    names = view.split_names
    counts: dict[str, dict[str, int]] = {}

    def key(s: int, t: int) -> str:
        s, t = min(s, t), max(s, t)
        return f"{names[s]}/{names[t]}"

    n_splits = len(names)
    per_class = np.zeros((int(exact_class.max(initial=-1)) + 1, n_splits), np.int64)
    np.add.at(per_class, (exact_class, view.split), 1)
    for s in range(n_splits):
        for t in range(s, n_splits):
            if across_splits and s == t:
                continue
            if s == t:
                exact = int((per_class[:, s] * (per_class[:, s] - 1) // 2).sum())
            else:
                exact = int((per_class[:, s] * per_class[:, t]).sum())
            counts[key(s, t)] = {"exact": exact, "near": 0}
    low = np.minimum(view.split[near_a], view.split[near_b])
    high = np.maximum(view.split[near_a], view.split[near_b])
    codes, found = np.unique(low * n_splits + high, return_counts=True)
    for code, count in zip(codes, found, strict=True):
        counts[key(int(code) // n_splits, int(code) % n_splits)]["near"] = int(count)
    return counts


def _groups(
    view: _View, roots: np.ndarray, edges_a: np.ndarray, weights: np.ndarray, exact_class: np.ndarray
) -> list[DuplicateGroup]:
    sizes = np.bincount(roots, minlength=len(roots))
    grouped = np.flatnonzero(sizes[roots] > 1)
    if len(grouped) == 0:
        return []
    worst = np.zeros(len(roots), np.float32)
    np.maximum.at(worst, roots[edges_a], weights)
    order = grouped[np.lexsort((grouped, roots[grouped]))]
    boundaries = np.flatnonzero(np.diff(roots[order])) + 1
    groups = []
    for members in np.split(order, boundaries):
        root = roots[members[0]]
        groups.append(
            DuplicateGroup(
                ids=[int(i) for i in view.ids[members]],
                exact=bool(np.all(exact_class[members] == exact_class[members[0]])),
                splits=[view.split_names[s] for s in view.split[members]],
                paths=[view.path(i) for i in members],
                max_distance=round(float(worst[root]), 6),
                images_of=view.pictures_of,
            )
        )
    groups.sort(key=lambda g: (-len(g.ids), g.ids[0]))
    return groups
