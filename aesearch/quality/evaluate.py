"""`aesearch eval`: how good the search is, measured on the labelled data, beside its baselines.

Protocol (the same for every row of the report): the 10,000 test images are the queries, the
60,000 training images the database, and a neighbour is relevant when it has the query's class.
The "validation" protocol instead queries the last 10,000 training images against the other
50,000: settings are chosen on it, so the test figures stay untouched by the choice. A collection
built from folders with `--labels folders` has one split: every 5th labelled image queries the others.
  * P@1, P@10, mAP@100 (metrics.py), per-class P@10, and the confusion of neighbour classes;
  * the test-set reconstruction MSE of the bundle's model;
  * for an approximate index: recall@10 against exact search on the same vectors, and the
    single-query latency of both;
  * baselines: raw pixels (784-d; in RGB for a colour model) and PCA to the z size, both with
    Euclidean distance, and for a colour model a colour histogram (colour_histograms).
The bundle's own vectors are searched exactly as queries are: its metric and stored transform.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from aesearch.errors import InvalidArgumentError
from aesearch.quality.metrics import (
    average_precision_at_r,
    mean_average_precision_at_k,
    neighbour_confusion,
    per_class_precision,
    precision_at_k,
    relevance,
)
from aesearch.search.engine import SearchEngine
from aesearch.search.index import AffineTransform, IndexSpec, VectorIndex, recall_at_k

DEPTH = 100  # neighbours retrieved per query: enough for mAP@100
HISTOGRAM_BINS = 8  # per channel: 512 colours
MAP_AT_R_BLOCK = 1000  # queries searched at once for mAP@R (R neighbours each: 6,000 on Fashion-MNIST, 48 MB)


@dataclass
class RetrievalScores:
    name: str
    dims: int
    metric: str
    p_at_1: float
    p_at_10: float
    map_at_100: float
    per_class_p_at_10: list[float]
    confusion: list[list[float]] = field(repr=False)
    map_at_r: float | None = None  # the whole ranking of each query's class (metrics.average_precision_at_r)


@dataclass
class IndexScores:
    index_type: str
    params: dict
    recall_at_10: float
    latency_ms_p50: float
    exact_latency_ms_p50: float

    @property
    def speedup(self) -> float:
        return self.exact_latency_ms_p50 / self.latency_ms_p50


@dataclass
class EvalReport:
    bundle: str
    protocol: str
    class_names: list[str]
    n_queries: int
    n_database: int
    reconstruction_mse: float
    retrieval: list[RetrievalScores]  # the bundle's first, then any baselines
    indexes: list[IndexScores]
    examples: list[dict] = field(default_factory=list, repr=False)  # a few queries and their hits
    near_duplicate_threshold: float | None = None  # neighbours this close across splits were left out
    queries_with_near_duplicates: int = 0
    queries_without_relevant: int = 0  # a collection's queries whose class has no other image: left out

    def to_dict(self) -> dict:
        data = asdict(self)
        for scores, index in zip(data["indexes"], self.indexes, strict=True):
            scores["speedup"] = index.speedup
        return data


PROTOCOLS = ("test", "validation")
VALIDATION_QUERIES = 10_000
COLLECTION_HOLD_OUT = 5  # a one-split collection: every 5th labelled image (in id order) queries the rest


def evaluate(
    engine: SearchEngine,
    *,
    protocol: str = "test",
    baselines: bool = False,
    index_types: list[str] | None = None,
    latency_queries: int = 200,
    examples: int = 6,
    exclude_near_duplicates: float | None = None,
) -> EvalReport:
    """Evaluate a bundle under the protocol above.

    Args:
        protocol: "test" (test split against training split) or "validation" (the last 10,000
            training images against the other training images).
        baselines: add raw pixels and PCA-to-z-size rows.
        index_types: approximate index types to measure against exact search on the training
            vectors (default: the bundle's own type when it is approximate).
        latency_queries: single queries timed per index.
        examples: test queries (with hits) kept for the report picture.
        exclude_near_duplicates: a distance threshold: each query's cross-split near duplicates
            (its group in `aesearch duplicates --across-splits`) are removed from its neighbours,
            so a test image is not rewarded for finding its own copy in the training split.
    """
    bundle = engine.bundle
    ids, train_ids, test_ids, labels, protocol = protocol_rows(engine, protocol)  # positions index into ids
    # A query whose class has no image among the others cannot find a relevant one: it measures
    # nothing but would count as P@10 0 (a folder holding one image, say). Left out, and said.
    answerable = np.isin(labels[test_ids], labels[train_ids])
    without_relevant = int((~answerable).sum())
    test_ids = test_ids[answerable]
    if not len(test_ids):
        raise InvalidArgumentError("no query has another image of its class to find: evaluation needs classes of 2+")
    n_classes = len(bundle.class_names)
    train_labels, test_labels = labels[train_ids], labels[test_ids]

    images = bundle.images(ids)  # as stored: the model's input
    latents = bundle.embeddings(ids)  # what the index holds: the encoder's pooled z of each image
    test_pixels = engine.autoencoder.pictures(images[test_ids]).astype(np.float32) / np.float32(255)  # as decoded
    reconstruction_mse = float(((engine.reconstruct(images[test_ids]) - test_pixels) ** 2).mean())

    spec = IndexSpec("flat", engine.index.spec.metric)
    exact = VectorIndex.build(latents[train_ids], spec, engine.index.transform)
    excluded = _cross_split_duplicates(engine, exclude_near_duplicates, ids[train_ids], ids[test_ids], protocol)
    extra = max((len(v) for v in excluded.values()), default=0)
    depth = min(DEPTH, len(train_ids) - extra)  # every query keeps as many neighbours
    _, neighbours = exact.search(latents[test_ids], depth + extra)
    neighbours = _without(neighbours, excluded, depth)
    rows = [_scores(_describe(engine), exact.index.d, spec.metric, train_labels[neighbours], test_labels, n_classes)]
    rows[0].map_at_r = _map_at_r(exact, latents[test_ids], train_labels, test_labels, excluded)

    if baselines:
        images = engine.autoencoder.pictures(images)  # what a user could compare: the pictures, RGB onto white
        pixels = images.reshape(len(images), -1).astype(np.float32) / np.float32(255)
        candidates = [
            ("raw pixels", pixels),
            (f"PCA-{latents.shape[1]} of pixels", _pca(pixels[train_ids], latents.shape[1])(pixels)),
        ]
        if images.ndim == 4:  # colour: what a user could have without any model
            candidates.append((f"colour histogram ({HISTOGRAM_BINS}^3 RGB, Hellinger)", colour_histograms(images)))
        for label, vectors in candidates:
            index = VectorIndex.build(vectors[train_ids], IndexSpec("flat", "l2"))
            _, found = index.search(vectors[test_ids], depth + extra)
            found = _without(found, excluded, depth)
            rows.append(_scores(label, vectors.shape[1], "l2", train_labels[found], test_labels, n_classes))
            rows[-1].map_at_r = _map_at_r(index, vectors[test_ids], train_labels, test_labels, excluded)

    types = (
        index_types if index_types is not None else ([] if engine.index.spec.exact else [engine.index.spec.index_type])
    )
    index_rows = [
        _index_scores(t, latents[train_ids], latents[test_ids], exact, engine.index, neighbours, latency_queries)
        for t in types
    ]

    rng = np.random.default_rng(0)
    kept = [
        {
            "query_id": int(ids[test_ids[q]]),
            "label": int(test_labels[q]),
            "hits": [{"id": int(ids[train_ids[h]]), "label": int(train_labels[h])} for h in neighbours[q, :8]],
        }
        for q in rng.choice(len(test_ids), size=min(examples, len(test_ids)), replace=False)
    ]
    return EvalReport(
        bundle=str(bundle.path),
        protocol=protocol,
        class_names=list(bundle.class_names),
        n_queries=len(test_ids),
        n_database=len(train_ids),
        reconstruction_mse=reconstruction_mse,
        retrieval=rows,
        indexes=index_rows,
        examples=kept,
        near_duplicate_threshold=exclude_near_duplicates,
        queries_with_near_duplicates=len(excluded),
        queries_without_relevant=without_relevant,
    )


def protocol_rows(engine: SearchEngine, protocol: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """(live ids, database rows, query rows, labels by row, protocol) under a protocol (module docstring).

    Rows are positions into the live ids; a one-split collection gets the "collection" protocol.
    """
    engine.require_images()
    bundle = engine.bundle
    ids = bundle.live_ids()
    records = bundle.records(ids)
    split = records["split"]
    labels = records["label"].astype(np.int64)
    if protocol not in PROTOCOLS:
        raise InvalidArgumentError(
            f"unknown `protocol` {protocol!r}: choose one of {', '.join(PROTOCOLS)}", parameter="protocol"
        )
    train_ids, test_ids = np.nonzero(split == 0)[0], np.nonzero(split == 1)[0]
    if len(bundle.split_names) == 1:  # a collection of files: hold out every 5th labelled image as a query
        if protocol == "validation":  # it was ignored, and the table looked like an answer to it
            raise InvalidArgumentError(
                f"{bundle.path} is a collection of files, one split: `protocol` validation holds out part of a "
                "train split, and it has none; leave it out (every 5th labelled image queries the rest)",
                parameter="protocol",
            )
        labelled = np.nonzero(labels >= 0)[0]
        if not len(labelled):
            raise InvalidArgumentError(
                f'{bundle.path} has no labels: build it with `labels` "folders" (one subfolder per class) to evaluate',
                parameter="labels",
            )
        test_ids, train_ids = labelled[::COLLECTION_HOLD_OUT], np.setdiff1d(labelled, labelled[::COLLECTION_HOLD_OUT])
        protocol = "collection"
    elif protocol == "validation":
        held_out = min(VALIDATION_QUERIES, len(train_ids) // 6)
        train_ids, test_ids = train_ids[:-held_out], train_ids[-held_out:]
    if not (len(train_ids) and len(test_ids)):
        raise InvalidArgumentError("evaluation needs labelled images in both a train and a test split")
    return ids, train_ids, test_ids, labels, protocol


def _cross_split_duplicates(
    engine: SearchEngine, threshold: float | None, train_ids: np.ndarray, test_ids: np.ndarray, split_protocol: str
) -> dict[int, np.ndarray]:
    """Query row -> database rows in its cross-split duplicate group (empty without a threshold).

    train_ids, test_ids: the bundle ids of the database and query rows.
    """
    if threshold is None:
        return {}
    if split_protocol == "collection":  # a folder collection: one split, nothing to exclude across
        raise InvalidArgumentError(
            "near duplicates are excluded across a bundle's train/test splits, and this bundle has one split "
            "(a folder collection): leave out `exclude_near_duplicates`",
            parameter="exclude_near_duplicates",
        )
    if split_protocol != "test":  # the validation protocol holds out training images: no second split
        raise InvalidArgumentError(
            'near duplicates are excluded across the train/test splits: use `protocol` "test"', parameter="protocol"
        )
    from aesearch.quality.duplicates import find_duplicates

    train_row = {int(i): r for r, i in enumerate(train_ids)}
    test_row = {int(i): r for r, i in enumerate(test_ids)}
    excluded: dict[int, np.ndarray] = {}
    for group in find_duplicates(engine, threshold=threshold, across_splits=True).groups:
        database = np.array([train_row[i] for i in group.ids if i in train_row], dtype=np.int64)
        for i in group.ids:
            if i in test_row and len(database):
                excluded[test_row[i]] = database
    return excluded


def _without(neighbours: np.ndarray, excluded: dict[int, np.ndarray], depth: int) -> np.ndarray:
    """Each row's neighbours minus its excluded ones, cut to depth."""
    out = neighbours[:, :depth].copy()
    for row, drop in excluded.items():
        kept = neighbours[row][~np.isin(neighbours[row], drop)]
        out[row] = kept[:depth]
    return out


def _map_at_r(
    index: VectorIndex,
    queries: np.ndarray,
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    excluded: dict[int, np.ndarray],
) -> float:
    """mAP@R over every query, exact; a query's R is its class's size in the database (less its
    excluded near duplicates of that class), so each block of queries asks for max(R) neighbours."""
    classes, sizes = np.unique(train_labels, return_counts=True)
    at = np.minimum(np.searchsorted(classes, test_labels), len(classes) - 1)
    r = np.where(classes[at] == test_labels, sizes[at], 0).astype(np.int64)
    for row, drop in excluded.items():
        r[row] -= int((train_labels[drop] == test_labels[row]).sum())
    extra = max((len(v) for v in excluded.values()), default=0)
    depth = int(min(r.max(initial=0), len(train_labels) - extra))
    if depth == 0:
        return 0.0
    total = 0.0
    for start in range(0, len(queries), MAP_AT_R_BLOCK):
        stop = min(start + MAP_AT_R_BLOCK, len(queries))
        _, found = index.search(queries[start:stop], depth + extra)
        mine = {row - start: drop for row, drop in excluded.items() if start <= row < stop}
        found = _without(found, mine, depth)
        relevant = relevance(train_labels[found], test_labels[start:stop])
        total += float(average_precision_at_r(relevant, np.minimum(r[start:stop], depth)).sum())
    return total / len(queries)


def _describe(engine: SearchEngine) -> str:
    """A short name for the bundle's search space, e.g. "aesearch (pooled z, whiten-192, cosine)"."""
    spec = engine.index.spec
    parts = ["pooled z" if len(engine.shifts) > 1 else "z"]
    if engine.autoencoder.config.prior:  # model/prior.py: the whitening is z's alone
        parts = ["grey model + 0.5 histogram + 0.5 whitened z"]
    elif spec.transform == "whiten":
        parts.append(f"whiten-{engine.index.search_dim}")
    parts.append(spec.metric)
    return f"aesearch ({', '.join(parts)})"


def _scores(
    name: str, dims: int, metric: str, neighbour_labels: np.ndarray, query_labels: np.ndarray, n_classes: int
) -> RetrievalScores:
    relevant = relevance(neighbour_labels, query_labels)
    return RetrievalScores(
        name=name,
        dims=dims,
        metric=metric,
        p_at_1=precision_at_k(relevant, 1),
        p_at_10=precision_at_k(relevant, 10),
        map_at_100=mean_average_precision_at_k(relevant, relevant.shape[1]),
        per_class_p_at_10=per_class_precision(relevant, query_labels, 10, n_classes).tolist(),
        confusion=neighbour_confusion(neighbour_labels, query_labels, 10, n_classes).tolist(),
    )


def colour_histograms(images: np.ndarray, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """(n, H, W, 3) uint8 -> (n, bins^3) float32: each image's joint RGB histogram, as Hellinger vectors.

    The square roots of the bin shares: Euclidean distance between them is the Hellinger distance
    between the histograms, the usual strong choice for comparing histograms by a vector index.
    """
    cells = (images.astype(np.int64) * bins) // 256  # (n, H, W, 3) bin per channel
    flat = (cells[..., 0] * bins + cells[..., 1]) * bins + cells[..., 2]
    flat = flat.reshape(len(images), -1)
    counts = np.zeros((len(images), bins**3), np.float32)
    np.add.at(counts, (np.arange(len(images))[:, None], flat), 1)
    return np.sqrt(counts / np.float32(flat.shape[1]))


def _pca(train: np.ndarray, dims: int) -> AffineTransform:
    """Projection on the top principal components of train (no whitening): the linear baseline."""
    mean = train.mean(axis=0)
    _, _, vt = np.linalg.svd(train - mean, full_matrices=False)
    return AffineTransform(mean.astype(np.float32), np.ascontiguousarray(vt[:dims].T, dtype=np.float32))


def _index_scores(
    index_type: str,
    database: np.ndarray,
    queries: np.ndarray,
    exact: VectorIndex,
    template,
    truth: np.ndarray,
    latency_queries: int,
) -> IndexScores:
    spec = IndexSpec(index_type, template.spec.metric)
    approximate = VectorIndex.build(database, spec, template.transform)
    _, found = approximate.search(queries, 10)
    recall = recall_at_k(found, truth[:, :10])
    probe = queries[:latency_queries]
    return IndexScores(
        index_type=index_type,
        params=approximate.spec.params,
        recall_at_10=recall,
        latency_ms_p50=_single_query_p50(approximate, probe),
        exact_latency_ms_p50=_single_query_p50(exact, probe),
    )


def _single_query_p50(index: VectorIndex, queries: np.ndarray) -> float:
    index.search(queries[:1], 10)  # warm-up
    samples = []
    for row in queries:
        start = time.perf_counter()
        index.search(row[None], 10)
        samples.append(time.perf_counter() - start)
    return float(np.median(samples) * 1e3)
