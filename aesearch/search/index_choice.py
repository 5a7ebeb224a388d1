"""`--index-type auto`: which FAISS index for how many vectors under a memory budget. No torch.

The tiers follow FAISS's guidelines ("Guidelines to choose an index") and autofaiss's heuristics,
cut to what serves this project on a small machine:

  * exact (flat) while a full scan stays under EXACT_MAX_SCAN floats (20,000 vectors of 192
    dimensions): about 1 ms on one core here, no tuning, and every answer is the true one. Beyond
    that the scan is most of a query: 70,000 x 192 took 3.4 ms quiet and 7-8 ms beside one busy
    process per core, where an IVF-Flat tuned to recall@10 0.995 took 0.4 ms
    (scripts/bench_query.py --load), so a single query's p50 under load fits 8 ms only with IVF;
  * IVF-Flat in the middle, while the full vectors fit the budget: k-means on a sample trains in
    seconds, recall is tuned with nprobe, and its inverted lists are memory-mapped on load
    (faiss.IO_FLAG_MMAP), so query and serve start in about a second. HNSW is as fast to query
    but cannot be memory-mapped and builds slowly on two cores, so auto leaves it to explicit
    `--index-type hnsw`;
  * IVF + PQ above: each vector becomes a code of m/2 bytes (m sub-quantizers of 4 bits, the
    largest m of PQ_SUBQUANTIZERS that fits the budget, with its 8-byte id; fast scan stores each
    list in blocks of 32 codes, so up to a block per list is padding), searched with FAISS's
    fast-scan kernels (IVFnlist,PQmx4fs: the distance tables fit SIMD registers), and the
    candidates it finds are re-ranked exactly against the full vectors, which stay on disk
    (memory-mapped embeddings), so the index in RAM costs tens of bytes per vector while the final
    order is exact. Against 8-bit PQ (IVF4096,PQ64) on 1 M Fashion-MNIST vectors, 4-bit fast-scan
    trained in 25 s instead of 117 s and added 200,000 vectors in 4 s instead of 16 s, for the same
    recall after re-ranking (0.954 against 0.954 at nprobe 32); the recall is set by nprobe, not by
    the codes, once candidates are re-ranked. OPQ's rotation (autofaiss's default) is left out:
    training it took about 1.4 s per iteration on just 2,000 vectors here, and the exact re-ranking
    already recovers what the rotation would add. `--index-type "OPQ32_192,IVF4096,PQ32"` still
    builds one.

The default budget is 256 MiB, or 64 bytes a vector where that is more (above 4.2 M vectors): enough
for the largest code, PQ96x4fs (56.6 bytes a vector at 10 M). At 10 M, 256 MiB left 16-byte codes
(PQ32x4fs) that needed 800 candidates re-ranked a query for the target recall, and batch search
missed 1,000 queries/s (944); PQ96x4fs needed 100 and made 1,038 (docs/scale.md).

nlist is about 4 sqrt(n) lists rounded to a power of two (FAISS: 4-16 sqrt(n)), capped at
MAX_NLIST: k-means cost grows with nlist times its 39-points-per-list sample, and 4,096 lists
already keep a scan to a few thousand codes per probed list at ten million vectors.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

from aesearch.errors import InvalidArgumentError

EXACT_MAX_SCAN = 4_000_000  # floats scanned per query by an exact index (16 MB: ~1 ms on one core)
DEFAULT_MAX_INDEX_MEMORY = 256 * 2**20  # bytes: the default budget (`--max-index-memory` changes it) ...
DEFAULT_BYTES_PER_VECTOR = 64  # ... or this much a vector, where that is more (see above)
MAX_NLIST = 4096
PQ_SUBQUANTIZERS = (96, 64, 48, 32, 24, 16)  # of 4 bits each: m/2 bytes per vector
ID_BYTES = 8  # an IVF list keeps each vector's int64 id beside its code
FAST_SCAN_BLOCK = 32  # codes per block of a fast-scan list: each list is padded to whole blocks
RERANK_FACTOR = 10  # candidates re-ranked per result wanted, before tuning
# Compressed indexes are tuned to this recall@10 against exact search (after re-ranking); the
# uncompressed ones keep aesearch.search.index.TARGET_RECALL. It aims above the 0.95 promised
# because the probes are indexed vectors and new images come out lower: at 1 M, tuned to 0.95 on
# the probes (nprobe 16), 1,000 held-out Fashion-MNIST test images reached 0.916.
COMPRESSED_TARGET_RECALL = 0.97
_UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "M": 2**20, "MB": 2**20, "G": 2**30, "GB": 2**30, "T": 2**40}


@dataclass(frozen=True)
class IndexChoice:
    """What auto picked, with the parameters to build it and why (recorded in the manifest)."""

    index_type: str  # "flat", "ivf", or a FAISS factory string such as "IVF4096,PQ32"
    params: dict = field(default_factory=dict)  # nlist, rerank_factor, target_recall ...
    bytes_per_vector: float = 0.0  # estimated RAM of the loaded index, per vector
    reason: str = ""

    @property
    def compressed(self) -> bool:
        return "rerank_factor" in self.params

    def to_dict(self) -> dict:
        return asdict(self)


def default_max_index_memory(n: int) -> int:
    """The budget auto works to when none is given, for n vectors."""
    return max(DEFAULT_MAX_INDEX_MEMORY, DEFAULT_BYTES_PER_VECTOR * n)


def choose_index(n: int, dim: int, max_memory: int | None = None) -> IndexChoice:
    """The index for n vectors of dim floats (the search space's dimension) within max_memory bytes
    (default: default_max_index_memory(n))."""
    max_memory = default_max_index_memory(n) if max_memory is None else max_memory
    if n < 0 or dim < 1:
        raise InvalidArgumentError(f"cannot choose an index for {n} vectors of {dim} dimensions")
    if max_memory <= 0:
        raise InvalidArgumentError(f"max_index_memory must be positive, got {max_memory}", parameter="max_index_memory")
    full = 4 * dim  # bytes of one float32 vector
    budget = max_memory / max(n, 1)  # bytes per vector allowed
    budget_text = format_bytes(max_memory)
    if n * dim <= EXACT_MAX_SCAN and full <= budget:
        return IndexChoice("flat", {}, full, f"{n:,} vectors: exact search is fast enough and needs no tuning")
    nlist = ivf_lists(n)
    centroids = nlist * full / max(n, 1)
    if full + ID_BYTES + centroids <= budget:
        return IndexChoice(
            "ivf",
            {"nlist": nlist},
            round(full + ID_BYTES + centroids, 1),
            f"{n:,} vectors of {full} bytes fit {budget_text}: IVF-Flat, memory-mapped, tuned nprobe",
        )
    # PQ splits the vector into m equal parts of 2 or more dimensions
    fitting = [m for m in PQ_SUBQUANTIZERS if dim % m == 0 and dim // m >= 2]
    for m in fitting:
        cost = m / 2 + ID_BYTES + centroids + nlist * FAST_SCAN_BLOCK * m / 2 / max(n, 1)  # codes, ids, padding
        if cost <= budget:
            return IndexChoice(
                f"IVF{nlist},PQ{m}x4fs",
                {
                    "nlist": nlist,
                    "pq_subquantizers": m,
                    "rerank_factor": RERANK_FACTOR,
                    "target_recall": COMPRESSED_TARGET_RECALL,
                },
                round(cost, 1),
                f"{n:,} full vectors ({format_bytes(n * full)}) exceed {budget_text}: IVF + 4-bit PQ codes of "
                f"{m // 2} bytes (fast scan), candidates re-ranked exactly from their full vectors on disk",
            )
    if not fitting:
        raise InvalidArgumentError(
            f"max_index_memory {budget_text} is too small for {n:,} full vectors of {dim} dimensions, and no PQ "
            f"code of {', '.join(map(str, PQ_SUBQUANTIZERS))} parts divides {dim}: give at least "
            f"{format_bytes((full + ID_BYTES + centroids) * n * 1.1)}, or whiten_dims that one of them divides",
            parameter="max_index_memory",
        )
    smallest = fitting[-1] / 2 + ID_BYTES
    raise InvalidArgumentError(
        f"max_index_memory {budget_text} is too small for {n:,} vectors (at least {smallest:g} bytes each): "
        f"give at least {format_bytes(n * smallest * 1.1)}",
        parameter="max_index_memory",
    )


def ivf_lists(n: int) -> int:
    """About 4 sqrt(n) inverted lists as a power of two, at least 39 training points each, <= MAX_NLIST."""
    if n < 2 * 39:
        return 1
    target = max(1, min(4 * math.sqrt(n), n / 39, MAX_NLIST))
    return min(MAX_NLIST, 2 ** round(math.log2(target)))


def parse_memory(text: str | int) -> int:
    """ "512M", "2G", "1.5GB", "300000" (bytes) -> bytes; one-line error otherwise."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?B?)\s*", str(text).upper())
    if not match:
        raise InvalidArgumentError(f"cannot read memory size {text!r}: give bytes or a size such as 512M or 2G")
    if float(match.group(1)) <= 0:
        raise InvalidArgumentError(f"a memory size of {text!r} holds nothing: give more than 0, such as 512M or 2G")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def format_bytes(size: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size:.0f} B"
