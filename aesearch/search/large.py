"""Indexes built and searched without all vectors in memory: streamed add, exact re-ranking, tuning.

The streaming build (aesearch.pipelines.stream) hands this module the search-space vectors a chunk
at a time, read from the segment's memory-mapped embeddings. What it adds to index.py:
  * build_streamed: an index of index_choice's kind, trained once on a sample, filled chunk by chunk;
  * RerankingIndex: a compressed (PQ) index whose candidates are re-ranked with exact distances to
    the full vectors, fetched from disk (only the candidates' rows are read), so the order of the
    answers is exact and only recall depends on the codes;
  * exact_knn: the true neighbours of probe queries by a streamed scan, the oracle for tuning;
  * tune_streamed: nprobe (and, for re-ranking, the candidate count) raised until recall@10 against
    exact search reaches the target.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Iterable
from pathlib import Path

import faiss
import numpy as np

from aesearch import defaults
from aesearch.errors import BundleError
from aesearch.memory import read_unmapped
from aesearch.search.gather import gather_rows
from aesearch.search.index import AffineTransform, IndexSpec, VectorIndex, new_faiss_index, search_threads
from aesearch.search.index_choice import IndexChoice

VectorsOf = Callable[[np.ndarray], np.ndarray]  # rows -> (len(rows), d) search-space float32 vectors

# A compressed segment keeps its vectors as the index compares them (transformed, unit length for
# cosine) beside its embeddings: re-ranking reads a candidate's 768 bytes and compares, instead of
# reading 1,256 and transforming (12 MFLOP a query at 100 candidates: half of a batch's time at 1 M).
SEARCH_VECTORS_FILE = "search_vectors.npy"
_MAX_NPROBE = 256  # tuning stops here: past it a probe costs more than an exact scan of a slice saves
_MAX_RERANK_FACTOR = 100
_CANDIDATE_ROWS = 1 << 16  # candidates re-ranked at a time: 256 MB of 1,024-dimensional vectors


class RerankingIndex:
    """A FAISS index that proposes factor x k candidates and returns the k exactly nearest of them.

    Duck-types the part of faiss.Index that VectorIndex uses (search, ntotal, d), so the rest of
    the query path treats it as any other index. Labels are the rows of `vectors_of`.
    """

    def __init__(self, index: faiss.Index, vectors_of: VectorsOf, factor: int) -> None:
        self.index, self.vectors_of, self.factor = index, vectors_of, int(factor)

    @property
    def ntotal(self) -> int:
        return self.index.ntotal

    @property
    def d(self) -> int:
        return self.index.d

    def search(
        self, queries: np.ndarray, k: int, params=None, factor: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(n, d) prepared queries -> (squared L2 (n, k), rows (n, k)), -1 / inf where fewer exist.

        factor: candidates re-ranked per result, instead of the tuned self.factor (a wide search).
        Queries are answered a batch at a time, so that their candidates' vectors in memory stay within
        _CANDIDATE_ROWS rows whatever the batch and factor (tuning 500 probes at factor 160 gathered
        880,000 vectors: 3.6 GB at 1,024 dimensions)."""
        wanted = min(self.ntotal, max(k, k * (self.factor if factor is None else factor)))
        step = max(1, _CANDIDATE_ROWS // max(wanted, 1))
        if len(queries) <= step:
            return self._search(queries, k, params, wanted)
        answers = []
        for start in range(0, len(queries), step):  # each query's answer is its own: the same in any batch
            answers.append(self._search(queries[start : start + step], k, params, wanted))
        return np.concatenate([a[0] for a in answers]), np.concatenate([a[1] for a in answers])

    def _search(self, queries: np.ndarray, k: int, params, wanted: int) -> tuple[np.ndarray, np.ndarray]:
        _, candidates = self.index.search(queries, wanted, params=params)
        found = candidates >= 0
        unique, where = np.unique(candidates[found], return_inverse=True)  # sorted rows: sequential reads
        full = np.ascontiguousarray(self.vectors_of(unique), dtype=np.float32)
        slots = np.full(candidates.shape, -1, dtype=np.int64)
        slots[found] = where
        # Each query against its own candidates, in FAISS's C++ (no gathered copy of their vectors: 7x
        # faster than NumPy at 100 candidates a query); every distance is one pair's sum, whatever the batch.
        exact = np.empty(candidates.shape, dtype=np.float32)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if len(full):
            faiss.fvec_L2sqr_by_idx(
                faiss.swig_ptr(exact),
                faiss.swig_ptr(queries),
                faiss.swig_ptr(full),
                faiss.swig_ptr(slots),
                queries.shape[1],
                len(queries),
                slots.shape[1],
            )
        exact[~found] = np.finfo(np.float32).max
        best = np.argsort(exact, axis=1, kind="stable")[:, :k]
        squared = np.take_along_axis(exact, best, axis=1)
        rows = np.where(np.take_along_axis(found, best, axis=1), np.take_along_axis(candidates, best, axis=1), -1)
        if squared.shape[1] < k:  # fewer vectors than k
            pad = ((0, 0), (0, k - squared.shape[1]))
            squared = np.pad(squared, pad, constant_values=np.finfo(np.float32).max)
            rows = np.pad(rows, pad, constant_values=-1)
        return squared, rows


class RerankedVectorIndex(VectorIndex):
    """A VectorIndex whose FAISS index is a RerankingIndex over a segment's memory-mapped vectors."""

    def __init__(self, inner: VectorIndex, vectors_of: VectorsOf, factor: int) -> None:
        self._inner = inner
        self.spec, self.transform = inner.spec, inner.transform
        self.index = RerankingIndex(inner.index, vectors_of, factor)

    def search_parameters(self) -> faiss.SearchParameters:
        return self._inner.search_parameters()

    def exhaustive_parameters(self) -> faiss.SearchParameters:
        return self._inner.exhaustive_parameters()

    def wide_parameters(self, factor: int | None = None) -> faiss.SearchParameters | None:
        return self._inner.wide_parameters(defaults.WIDE_SEARCH_COMPRESSED if factor is None else factor)

    def wide_rerank(self, factor: int | None = None) -> int:
        return defaults.WIDE_RERANK if factor is None else factor

    def search_prepared(
        self, prepared: np.ndarray, k: int, *, params: faiss.SearchParameters | None = None, rerank: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        with search_threads(len(prepared)):
            return self.index.search(prepared, k, params=params, factor=self.index.factor * rerank)


def read_segment_index(segment, spec: IndexSpec, transform: AffineTransform | None) -> VectorIndex:
    """A segment's index as the query path uses it: IVF kinds memory-mapped (query and serve start in
    about a second whatever the size), compressed ones re-ranked against the segment's search
    vectors (bundles built before those were kept: its embeddings, transformed per query)."""
    path = segment.file("index.faiss")
    index = VectorIndex(read_index(path, mmap="IVF" in spec.index_type.upper()), spec, transform)
    factor = spec.params.get("rerank_factor")
    if not factor:
        return index
    stored = segment.file(SEARCH_VECTORS_FILE)
    if not stored.exists():
        embeddings = segment.embeddings
        return RerankedVectorIndex(index, lambda rows: index.search_space(embeddings[rows]), int(factor))
    vectors = StoredVectors(stored)
    if vectors.dtype != np.float32 or vectors.shape != (segment.count, index.index.d):
        raise BundleError(
            f"{stored} holds {vectors.dtype} {vectors.shape}, not ({segment.count}, {index.index.d}) float32: "
            "rebuild the index"
        )
    return RerankedVectorIndex(index, vectors, int(factor))


class StoredVectors:
    """A segment's search vectors on disk, read for re-ranking: vectors(rows) -> their rows.

    Two maps of the one file, sharing the page cache. A few rows (one query's candidates) are read
    through a map advised MADV_RANDOM, so that a page not in the cache costs one 4 KB read: through a
    plain map each such fault reads the device's read-ahead window around it (8 MB here), and the
    first query after a reboot took 0.27-0.43 s at 1 M for its 100 candidates, almost all of it
    waiting for those windows. Many rows (a batch) are copied by defaults.GATHER_READERS threads, so
    that many reads are in flight: through the plain map when they are at least
    defaults.DENSE_GATHER_SHARE of the file (its windows then hold mostly wanted rows), else through
    the MADV_RANDOM one.
    """

    def __init__(self, path: Path) -> None:
        self.plain = np.load(path, mmap_mode="r", allow_pickle=False)
        self.scattered = np.load(path, mmap_mode="r", allow_pickle=False)
        mapped = getattr(self.scattered, "_mmap", None)
        if mapped is not None and hasattr(mmap, "MADV_RANDOM"):
            mapped.madvise(mmap.MADV_RANDOM)
        self.dtype, self.shape = self.plain.dtype, self.plain.shape

    def unmapped(self, rows: np.ndarray) -> np.ndarray:
        """The same rows read from the file (pread, memory.read_unmapped), leaving nothing mapped."""
        found = read_unmapped(self.plain, rows)
        return self.plain[rows] if found is None else found

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        if len(rows) <= defaults.SCATTERED_ROWS:
            return self.scattered[rows]
        # A batch's rows, copied by several threads at once: through the plain map when they are dense
        # enough that its read-ahead windows are mostly wanted rows, else a page at a time.
        dense = len(rows) >= defaults.DENSE_GATHER_SHARE * self.shape[0]
        return gather_rows(self.plain if dense else self.scattered, rows)


def read_candidates_unmapped(index) -> None:
    """Have a segment's re-ranking read its candidates from the file from now on, not through the maps.

    For a build's own measures (quality/recall.py): through a map each candidate's fault maps the
    page-cache folio around it (up to 2 MB on Linux 6), and a 1 M build's recall measure held the
    search-vector file in its resident set twice over (7.6 GiB, both of StoredVectors' maps). Warm,
    a read from the file costs about 1.7x a read through the map (scripts/bench_unmapped_reads.py), so
    queries keep the maps. index: a SegmentedIndex part's VectorIndex; others are left as they are.
    """
    inner = getattr(index, "index", None)
    if isinstance(inner, RerankingIndex) and isinstance(inner.vectors_of, StoredVectors):
        inner.vectors_of = inner.vectors_of.unmapped


def build_streamed(
    choice: IndexChoice,
    dim: int,
    n: int,
    sample: np.ndarray,
    chunks: Iterable[np.ndarray],
    *,
    seed: int = 0,
    fill: Callable[[faiss.Index], faiss.Index | None] | None = None,
) -> faiss.Index:
    """choice's index for n dim-dimensional vectors: trained on sample, then the chunks added in order.

    fill: given the trained index, returns it filled elsewhere (a cluster), or None to add here.
    """
    # flat, hnsw, ivf, sq8 or a factory string, with the parameters sized as the in-memory build does
    index = new_faiss_index(choice.index_type, dim, n, choice.params)
    if not index.is_trained:
        _limit_opq_training(index)
        try:
            ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
        except RuntimeError:  # a scalar quantizer: trained, but not an IVF
            ivf = None
        if ivf is not None:
            ivf.cp.seed = seed  # k-means starts from the same centroids every build
        if ivf is not None and hasattr(ivf, "do_polysemous_training"):
            # The factory turns on polysemous training (an annealing over code orders, minutes on two
            # cores) for a Hamming filter we never use: the candidates are re-ranked exactly instead.
            ivf.do_polysemous_training = False
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
    filled = fill(index) if fill is not None else None
    if filled is not None:
        return filled
    for chunk in chunks:
        index.add(np.ascontiguousarray(chunk, dtype=np.float32))
    return index


def _limit_opq_training(index: faiss.Index) -> None:
    """OPQ's rotation: 10 alternations on at most 65,536 points, not FAISS's 50 (minutes on 2 cores).

    Its gain over plain PQ comes in the first few iterations; re-ranking makes up the rest.
    """
    if isinstance(index, faiss.IndexPreTransform):
        for i in range(index.chain.size()):
            opq = faiss.downcast_VectorTransform(index.chain.at(i))
            if isinstance(opq, faiss.OPQMatrix):
                opq.niter, opq.max_train_points = 10, 65_536


def exact_knn(queries: np.ndarray, chunks: Iterable[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """True k nearest rows (squared L2) of each query over vectors given chunk by chunk, in row order."""
    neighbours = ExactNeighbours(queries, k)
    for chunk in chunks:
        neighbours.add(chunk)
    return neighbours.result()


class ExactNeighbours:
    """exact_knn fed one chunk at a time, so that a pass over the vectors made for another reason (adding
    them to an index) also finds the probes' true neighbours."""

    def __init__(self, queries: np.ndarray, k: int) -> None:
        self.queries, self.k, self.rows = queries, k, 0
        self._heap = faiss.ResultHeap(len(queries), k)

    def add(self, chunk: np.ndarray) -> None:
        chunk = np.ascontiguousarray(chunk, dtype=np.float32)
        squared, rows = faiss.knn(self.queries, chunk, min(self.k, len(chunk)))
        if rows.shape[1] < self.k:  # a chunk smaller than k: pad so the heap sees k columns
            pad = self.k - rows.shape[1]
            squared = np.pad(squared, ((0, 0), (0, pad)), constant_values=np.finfo(np.float32).max)
            rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=-1)
        self._heap.add_result(squared, np.where(rows >= 0, rows + self.rows, -1))
        self.rows += len(chunk)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        self._heap.finalize()
        return self._heap.D, self._heap.I


def tune_streamed(
    index: faiss.Index | RerankingIndex,
    queries: np.ndarray,
    own_rows: np.ndarray,
    truth: np.ndarray,
    target: float,
    *,
    k: int = 10,
) -> dict:
    """Raise nprobe (then the re-ranking factor) until recall@k reaches target; the values reached.

    queries are indexed vectors (own_rows) left out of both answers, so they behave like new images
    near the collection; truth is exact_knn's answer for k + 1 without them.
    """
    from aesearch.search.index import recall_at_k

    base = index.index if isinstance(index, RerankingIndex) else index
    try:
        ivf = faiss.extract_index_ivf(base)
    except RuntimeError:
        ivf = None

    def recall() -> float:
        found = index.search(queries, k + 1)[1]
        return recall_at_k(without_own(found, own_rows, k), without_own(truth, own_rows, k))

    reached = recall()
    hnsw = getattr(faiss.downcast_index(base), "hnsw", None) if not isinstance(base, RerankingIndex) else None
    if hnsw is not None:
        hnsw.efSearch = 16
        while (reached := recall()) < target and hnsw.efSearch < 4096:
            hnsw.efSearch *= 2
    if ivf is not None and isinstance(index, RerankingIndex):
        reached = _tune_reranking(index, ivf, recall, target)
    elif ivf is not None:
        ivf.nprobe = 1
        while (reached := recall()) < target and ivf.nprobe < min(ivf.nlist, _MAX_NPROBE):
            ivf.nprobe = min(ivf.nlist, ivf.nprobe * 2)
    params = {"tuned_recall_at_10": round(reached, 4)}
    if hnsw is not None:
        params["ef_search"] = int(hnsw.efSearch)
    if ivf is not None:
        params["nprobe"] = int(ivf.nprobe)
    if isinstance(index, RerankingIndex):
        params["rerank_factor"] = index.factor
    return params


def _tune_reranking(index: RerankingIndex, ivf, recall: Callable[[], float], target: float) -> float:
    """Candidates first, then lists: the fewest of each that reach target; the recall reached.

    With compact codes the candidates bound the recall, not the lists: at 10 M with 16-byte codes,
    recall stopped growing past nprobe 64 while the factor was 10, so raising nprobe first ran it to
    the cap (256) before the factor rose, and every query scanned four times the lists it needed.
    So: the factor is raised with every list the search may probe, then nprobe is halved for as
    long as the target still holds. Decided by recall alone (no timing): the same build, the same
    parameters.
    """
    ivf.nprobe = min(ivf.nlist, _MAX_NPROBE)
    reached = recall()
    while reached < target and index.factor < _MAX_RERANK_FACTOR:
        index.factor *= 2
        reached = recall()
    while ivf.nprobe > 1:
        ivf.nprobe //= 2
        fewer = recall()
        if fewer < target:
            ivf.nprobe *= 2
            break
        reached = fewer
    return reached


def write_index(index: faiss.Index | RerankingIndex, path: Path) -> None:
    """Write a FAISS index (a RerankingIndex's inner index: its vectors are the segment's search vectors)."""
    faiss.write_index(getattr(index, "index", index), str(path))


def read_index(path: str | Path, *, mmap: bool) -> faiss.Index:
    """Read an index file; IVF indexes memory-mapped (their lists stay on disk until probed)."""
    flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
    index = faiss.read_index(str(path), flags)
    if mmap:
        _no_prefetch_threads(index)
    return index


def _no_prefetch_threads(index: faiss.Index) -> None:
    """Memory-mapped lists (OnDiskInvertedLists) start prefetch threads on every search, to touch the
    probed lists in parallel: ~2.2 ms per single query here, ten times the search itself (70,000
    vectors, nprobe 64: 2.4 ms against 0.16 ms with none). The page cache serves the lists as well."""
    try:
        lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index).invlists)
    except RuntimeError:  # not an IVF
        return
    if hasattr(lists, "prefetch_nthread"):
        lists.prefetch_nthread = 0


def without_own(rows: np.ndarray, own: np.ndarray, k: int) -> np.ndarray:
    """Each row's first k ids (or rows) other than its query's own (own -1: none to leave out)."""
    out = np.full((len(rows), k), -1, dtype=np.int64)
    for i, (row, me) in enumerate(zip(rows, own, strict=True)):
        kept = row[(row != me) & (row >= 0)][:k]
        out[i, : len(kept)] = kept
    return out
