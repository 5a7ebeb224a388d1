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

from dataclasses import dataclass

import numpy as np

from aesearch import defaults
from aesearch.search.engine import SearchEngine
from aesearch.search.large import without_own

KINDS = ("near", "transformed", "foreign")
CHUNK = 65_536  # stored vectors scanned at a time (48 MiB of 192-d float32)


@dataclass
class Probes:
    """Each kind's query vectors, their exact neighbours, and the near queries' own ids."""

    vectors: dict[str, np.ndarray]
    truth: dict[str, np.ndarray]  # (n, k) ids, the query's own id left out
    own: dict[str, np.ndarray]  # (n,) ids to leave out of an answer (-1: none)
    k: int

    def recall(self, engine: SearchEngine, kinds=KINDS) -> dict[str, float]:
        """recall@k of engine's search as it is set now, for each of these kinds."""
        result = {}
        for kind in kinds:
            found = without_own(engine.search(self.vectors[kind], self.k + 1)[1], self.own[kind], self.k)
            shared = [len(np.intersect1d(f, t)) for f, t in zip(found, self.truth[kind], strict=True)]
            result[kind] = round(float(np.mean(shared)) / self.k, 4)
        return result


def probes(
    engine: SearchEngine, *, queries: int = defaults.RECALL_QUERIES, k: int = 10, seed: int = 0
) -> Probes | None:
    """queries of each kind (fewer when the collection is smaller) and their exact k nearest; None
    when the bundle has fewer than two images."""
    bundle = engine.bundle
    live = bundle.live_ids()
    n = min(queries, len(live))
    k = min(k, len(live) - 1)
    if k < 1:
        return None
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
    own = {"near": ids, "transformed": np.full(n, -1), "foreign": np.full(n, -1)}  # near ones leave themselves out
    truth = exact_neighbours(engine, engine.search_space(np.concatenate(list(vectors.values()))), k + 1)
    by_kind = {kind: truth[i * n : (i + 1) * n] for i, kind in enumerate(vectors)}
    return Probes(vectors, {kind: without_own(by_kind[kind], own[kind], k) for kind in KINDS}, own, k)


def recall_by_kind(engine: SearchEngine, *, queries: int = defaults.RECALL_QUERIES, k: int = 10, seed: int = 0) -> dict:
    """{"near": r, "transformed": r, "foreign": r, "queries": n, "k": k} for this engine's bundle,
    searched as it is set now."""
    found = probes(engine, queries=queries, k=k, seed=seed)
    if found is None:
        return {}
    return {**found.recall(engine), "queries": len(found.own["near"]), "k": found.k}


def choose_far_search(engine: SearchEngine, found: Probes) -> tuple[int, int] | None:
    """The cheapest (lists, candidates) widening, from defaults.FAR_SEARCH_LADDER (for an index of
    full vectors, FAR_SEARCH_LADDER_FULL_VECTORS), whose recall for transformed
    and foreign queries reaches defaults.FAR_TARGET_RECALL (the last if none does); None when the
    index cannot look wider (exact). Sets it on engine.index."""
    index = engine.index
    if not getattr(index, "_widens", False) or index.far_squared is None:
        return None
    reranked = any(part.index.wide_rerank() > 1 for part in index.parts)
    ladder = defaults.FAR_SEARCH_LADDER if reranked else defaults.FAR_SEARCH_LADDER_FULL_VECTORS
    for setting in ladder:
        index.wide_search = setting
        reached = found.recall(engine, ("transformed", "foreign"))
        if min(reached.values()) >= defaults.FAR_TARGET_RECALL:
            break
    return index.wide_search


def record_recall(index_dir, log=print) -> dict:
    """Choose how much wider far queries search (choose_far_search), then measure the bundle's
    recall@10 for each kind of query, and record both in its manifest (a build and a compaction end
    here); returns the manifest. The bundle is complete and searchable before this: one interrupted
    here has lost only the choice (far queries get the defaults) and the figures."""
    from aesearch.search.large import read_candidates_unmapped
    from aesearch.store.bundle import BundleWriter, read_manifest

    engine = SearchEngine.load(index_dir)
    for part in engine.index.parts:  # its measures leave none of the search vectors' pages resident
        read_candidates_unmapped(part.index)
    found = probes(engine)
    if found is None:  # fewer than two images: nothing to measure
        return read_manifest(index_dir)
    chosen = choose_far_search(engine, found)
    figures = {**found.recall(engine), "queries": len(found.own["near"]), "k": found.k}
    with BundleWriter.update(index_dir) as writer:
        measured = {**figures, "count": len(engine), "generation": writer.next_generation}
        fields = {"recall_at_10": measured, "far_search": None}  # None: an exact index, nothing to widen
        if chosen is not None:
            fields["far_search"] = {
                "lists": chosen[0],
                "candidates": chosen[1],
                "target_recall": defaults.FAR_TARGET_RECALL,
            }
        manifest = writer.commit(fields)
    if log:
        far = f"; far queries search {far_search_summary(*chosen, manifest.get('index_type'))}" if chosen else ""
        log("Recall@10 against an exact scan: " + recall_summary(measured) + far)
    return manifest


def far_search_summary(lists: object, candidates: object, index_type: object = "ivf") -> str:
    """How far queries search, in words: 8x the lists, 4x the candidates (or 4x the lists alone: an
    index of full vectors re-ranks nothing). An HNSW graph has no lists: its breadth (efSearch)
    is what widens."""
    breadth = "the graph's search breadth (efSearch)" if "hnsw" in str(index_type).lower() else "the lists"
    return f"{lists}x {breadth}" + (f", {candidates}x the candidates" if candidates != 1 else "")


def recall_summary(measured: dict) -> str:
    """A manifest's recall_at_10 in one line: near 0.990, transformed 0.970, foreign 0.955 (200 queries each)."""

    def number(value: object, form: str) -> str:  # a hand-edited manifest may hold anything
        return format(value, form) if isinstance(value, int | float) and not isinstance(value, bool) else "?"

    kinds = ", ".join(f"{kind} {number(measured[kind], '.3f')}" for kind in KINDS if kind in measured)
    return f"{kinds} ({number(measured.get('queries'), 'd')} queries each)"


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


def exact_neighbours(engine: SearchEngine, queries: np.ndarray, k: int) -> np.ndarray:
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
