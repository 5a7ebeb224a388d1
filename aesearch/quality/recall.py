"""Recall@10 of a bundle's search for three kinds of query, measured when it is built (issue 22).

An approximate index is tuned on probes drawn from the collection, so its tuned recall says how it
answers queries like the collection. Users also query with images unlike it. Each build measures,
against an exact scan of every live vector in the search space, the recall of the search as it
runs (tuned parameters, and far queries searched again wider: search/segments.py):

  * near: indexed images, each asking for its neighbours but itself (as the tuning does);
  * transformed: the same images mirrored left-right and turned upside down, encoded again;
  * foreign: drawings of a kind no collection is made of (random strokes, rings and boxes in random
    colours on a random background), prepared by the bundle's own preprocessing like any file.

The figures go into the manifest ("recall_at_10", with the generation and count they were measured
at) and `aesearch info` shows them. A measure, not a tuning: a kind below its target is reported
as it is.
"""

from __future__ import annotations

import numpy as np

from aesearch import defaults
from aesearch.search.engine import SearchEngine

KINDS = ("near", "transformed", "foreign")
CHUNK = 65_536  # stored vectors scanned at a time (48 MiB of 192-d float32)


def recall_by_kind(engine: SearchEngine, *, queries: int = defaults.RECALL_QUERIES, k: int = 10, seed: int = 0) -> dict:
    """{"near": r, "transformed": r, "foreign": r, "queries": n, "k": k} for this engine's bundle.

    queries: images of each kind (fewer when the collection is smaller)."""
    bundle = engine.bundle
    live = bundle.live_ids()
    n = min(queries, len(live))
    k = min(k, len(live) - 1)
    if k < 1:
        return {}
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(live, size=n, replace=False))
    images = bundle.images(ids)
    half = n // 2
    turned = np.concatenate([images[:half, :, ::-1], images[half:, ::-1, :]])  # mirrored, upside down
    vectors = {
        "near": bundle.embeddings(ids),
        "transformed": engine.encode(turned),
        "foreign": engine.encode(foreign_images(n, bundle.image_shape, seed)),
    }
    everything = engine.search_space(np.concatenate(list(vectors.values())))
    own = np.concatenate([ids, np.full(2 * n, -1)])  # the near queries leave themselves out
    truth = _exact(engine, everything, k + 1)
    truth = _without(truth, own, k)
    result, start = {}, 0
    for kind, v in vectors.items():
        found = engine.search(v, k + 1)[1]
        found = _without(found, own[start : start + n], k)
        true = truth[start : start + n]
        result[kind] = round(
            float(np.mean([len(np.intersect1d(f, t)) for f, t in zip(found, true, strict=True)])) / k, 4
        )
        start += n
    return {**result, "queries": n, "k": k}


def record_recall(index_dir, log=print) -> dict:
    """Measure the published bundle's recall@10 for each kind of query and record it in its manifest
    (a build and a compaction end here); returns the manifest. The bundle is complete and
    searchable before this: one interrupted here has lost only the figures."""
    from aesearch.store.bundle import BundleWriter, read_manifest

    engine = SearchEngine.load(index_dir)
    figures = recall_by_kind(engine)
    if not figures:  # fewer than two images: nothing to measure
        return read_manifest(index_dir)
    with BundleWriter.update(index_dir) as writer:
        measured = {**figures, "count": len(engine), "generation": writer.next_generation}
        manifest = writer.commit({"recall_at_10": measured})
    if log:
        log("Recall@10 against an exact scan: " + recall_summary(measured))
    return manifest


def recall_summary(measured: dict) -> str:
    """A manifest's recall_at_10 in one line: near 0.990, transformed 0.970, foreign 0.955 (200 queries each)."""
    kinds = ", ".join(f"{kind} {measured[kind]:.3f}" for kind in KINDS if kind in measured)
    return f"{kinds} ({measured.get('queries', '?')} queries each)"


def foreign_images(n: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """n drawings unlike any collection, twice the model's size, in colour (a grey model's
    preprocessing makes them grey): a few random strokes, rings and boxes on a random background."""
    from PIL import Image, ImageDraw

    size = 2 * shape[0]
    rng = np.random.default_rng(seed + 1)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        background = tuple(int(c) for c in rng.integers(0, 256, 3))
        image = Image.new("RGB", (size, size), background)
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(2, 6))):
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            box = np.sort(rng.integers(0, size, (2, 2)), axis=0).ravel().tolist()  # x0, y0 <= x1, y1
            width = int(rng.integers(1, max(2, size // 8)))
            shape_kind = rng.integers(0, 3)
            if shape_kind == 0:
                points = rng.integers(0, size, (int(rng.integers(2, 6)), 2)).tolist()
                draw.line([tuple(p) for p in points], colour, width)
            elif shape_kind == 1:
                draw.ellipse(box, outline=colour, width=width)
            else:
                draw.rectangle(box, fill=colour)
        out[i] = np.asarray(image)
    return out


def _exact(engine: SearchEngine, queries: np.ndarray, k: int) -> np.ndarray:
    """(n, k) ids of the exactly nearest live images in the search space (squared L2, which ranks as
    the index does for both metrics: cosine vectors are unit length there)."""
    from aesearch.memory import read_rows
    from aesearch.search.large import SEARCH_VECTORS_FILE, exact_knn

    bundle = engine.bundle
    best_squared = np.full((len(queries), 0), np.inf, np.float32)
    best_ids = np.zeros((len(queries), 0), np.int64)
    for number, segment in enumerate(bundle.segments):
        rows = bundle.live_rows(number)
        if not len(rows):
            continue
        stored = segment.file(SEARCH_VECTORS_FILE)
        source = np.load(stored, mmap_mode="r") if stored.exists() else segment.embeddings
        in_space = stored.exists()

        def chunks(source=source, rows=rows, in_space=in_space):
            for start in range(0, len(rows), CHUNK):
                part = rows[start : start + CHUNK]
                if part[-1] - part[0] == len(part) - 1:  # no removed row in it: one slice, read in order
                    part = slice(int(part[0]), int(part[-1]) + 1)
                # read_rows releases the pages it mapped: a build's resident set stays its own (the
                # search vectors are 7.7 GB at 10 M)
                block = np.asarray(read_rows(source, part), dtype=np.float32)
                yield block if in_space else engine.search_space(block)

        squared, found = exact_knn(queries, chunks(), min(k, len(rows)))
        ids = np.where(found >= 0, segment.ids[rows[np.maximum(found, 0)]], -1)
        best_squared = np.concatenate([best_squared, np.where(found >= 0, squared, np.inf)], axis=1)
        best_ids = np.concatenate([best_ids, ids], axis=1)
    order = np.argsort(best_squared, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(best_ids, order, axis=1)


def _without(found: np.ndarray, own: np.ndarray, k: int) -> np.ndarray:
    """Each row's first k ids other than its own (own -1: none to leave out)."""
    out = np.full((len(found), k), -1, np.int64)
    for i, (row, self_id) in enumerate(zip(found, own, strict=True)):
        kept = row[(row != self_id) & (row >= 0)][:k]
        out[i, : len(kept)] = kept
    return out
