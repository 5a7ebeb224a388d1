"""Search over a bundle's segments as one index: the base (possibly approximate) and the deltas
that updates added (exact), minus the tombstoned ids, merged into one ranking of global ids.

Why not FAISS's IndexShards: segments may be of different types, ids are global (not positions),
and removed ids are skipped inside each search with a FAISS selector (SearchParameters(sel=...)),
which works for every index type without rewriting it; HNSW, which cannot delete, is served the
same way until a compaction rebuilds it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import faiss
import numpy as np

from aesearch import defaults
from aesearch.errors import BundleError
from aesearch.search.index import AffineTransform, IndexSpec, VectorIndex, exact_search, in_space, to_distance
from aesearch.search.large import RerankingIndex, read_segment_index
from aesearch.search.probing import ListProbe, centroids_of, list_numbers
from aesearch.store.bundle import Bundle

INDEX_FILE = "index.faiss"


@dataclass
class _Part:
    index: VectorIndex
    ids: np.ndarray  # (n,) global id of each position
    removed: np.ndarray  # sorted positions whose ids are tombstoned or superseded
    params: faiss.SearchParameters | None  # the selector that skips them (None: nothing removed)
    selectors: tuple = ()  # SWIG does not own the selectors params point to: keep them alive here
    vectors_of: Callable[[np.ndarray], np.ndarray] | None = None  # positions -> search-space vectors
    number: int = 0  # the bundle segment this part searches
    lists: tuple | None = None  # an IVF's (list of each position, centroids), read at its first filter


@dataclass
class _Plan:
    """How a filtered search searches one part: an exact scan of the matching rows' vectors (few
    matches), or the part's index behind a bitmap selector with its knobs raised by the selectivity."""

    rows: np.ndarray  # sorted live positions that match
    vectors: np.ndarray | None = None  # (len(rows), d) search-space vectors: the scan
    params: faiss.SearchParameters | None = None  # the index's, with the selector
    exhaustive: faiss.SearchParameters | None = None  # every list / the whole graph, with the selector
    probe: ListProbe | None = None  # an IVF's lists to probe, per query (search/probing.py)
    # Results asked of a re-ranked index per result wanted: more candidates from its codes. Behind a
    # filter of a class, the query is often far from every match, where 4-bit codes order worst:
    # recall@10 of `label = Sneaker` at 1 M went from 0.79 to 0.91 with 4 times the candidates, for
    # ~0.1 ms (scripts/bench_filter.py).
    more: int = 1
    keep: tuple = field(default=(), repr=False)  # the bitmap and selector SWIG points to


@dataclass
class Subset:
    """The live images a filter matched, as a filtered search uses them (SegmentedIndex.subset)."""

    plans: list[_Plan | None]  # per part; None: nothing matches there
    count: int  # live matching images


class SegmentedIndex:
    """Every live image of a bundle, searchable as one index with global ids."""

    def __init__(self, parts: list[_Part], spec: IndexSpec, transform: AffineTransform | None, count: int) -> None:
        self.parts, self.spec, self.transform, self.count = parts, spec, transform, count
        # Squared distance past which an unfiltered query's nearest hit makes it search again, wider
        # (SearchEngine sets it from the trust calibration; None: never).
        self.far_squared: float | None = None
        # How much wider a far query looks: (times the IVF lists or HNSW beam, times the candidates a
        # compressed part re-ranks), as the build chose it (quality/recall.py, the manifest's
        # far_search); None: each kind of index's default (defaults.WIDE_SEARCH...).
        self.wide_search: tuple[int, int] | None = None
        # Only an approximate part (IVF, HNSW) can look further: an exact one would search twice for nothing.
        self._widens = any(part.index.wide_parameters() is not None for part in parts)

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> SegmentedIndex:
        spec, transform = index_spec(bundle.manifest), load_transform(bundle)
        parts = []
        for number, segment in enumerate(bundle.segments):
            if segment.count:
                removed = bundle.dead_rows(number)  # tombstoned, or superseded by a newer copy
                parts.append(read_part(segment, number, spec, transform, removed))
        return cls(parts, spec, transform, len(bundle))

    def __len__(self) -> int:
        return self.count

    @property
    def dim(self) -> int:
        """Dimension of the vectors search() takes (before the transform)."""
        if self.transform is not None:
            return self.transform.in_dims
        return self.parts[0].index.dim if self.parts else 0

    @property
    def search_dim(self) -> int:
        """Dimension of the vectors as compared (after the transform)."""
        return self.transform.out_dims if self.transform is not None else self.dim

    def search_space(self, vectors: np.ndarray) -> np.ndarray:
        """Vectors as the index compares them: transformed, and unit length for cosine."""
        return self.parts[0].index.search_space(vectors) if self.parts else np.asarray(vectors, np.float32)

    def search(self, vectors: np.ndarray, k: int, subset: Subset | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(n, dim) float32 -> (distances, ids), each (n, k); smaller is closer; -1 / inf where
        fewer than k images are live (subset: only those images, see subset())."""
        return self._search_prepared(self.search_space(vectors), k, subset)

    def search_in_space(
        self, vectors: np.ndarray, k: int, subset: Subset | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like search(), for vectors made in the search space (a refined query, search/feedback.py)."""
        return self._search_prepared(in_space(vectors, self.spec.metric), k, subset)

    def subset(self, masks: list[np.ndarray]) -> Subset:
        """The plan of a filtered search over the rows masks marks (one boolean mask per bundle
        segment, dead rows False: Filter.masks), made once per filter and reused by every query.

        A part with few matches is scanned exactly; one with many is searched through its index
        behind a bitmap selector, probing as many IVF lists per query as it takes to see as many
        matches as the tuned unfiltered search sees images (search/probing.py), or with efSearch
        divided by the share of its live images that match (HNSW), so recall stays at the tuned level.
        """
        plans, count = [], 0
        for part in self.parts:
            mask = masks[part.number]
            rows = np.flatnonzero(mask)
            count += len(rows)
            if not len(rows):
                plans.append(None)
            elif len(rows) * self.search_dim <= defaults.FILTER_SCAN_MAX_FLOATS:
                plans.append(_Plan(rows, vectors=np.ascontiguousarray(part.vectors_of(rows), dtype=np.float32)))
            else:
                share = len(rows) / max(1, len(part.ids) - len(part.removed))
                bitmap = np.packbits(mask, bitorder="little")
                selector = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bitmap))
                params, exhaustive = part.index.search_parameters(), part.index.exhaustive_parameters()
                ivf, probe = _plain_ivf(part.index), None
                if ivf is not None:
                    part.lists = part.lists or (list_numbers(ivf), centroids_of(ivf))
                    probe = ListProbe(ivf, *part.lists, mask)
                    exhaustive.nprobe = probe.holding  # every list that holds a match, and no other
                    exhaustive.quantizer_params = probe.quantizer_params
                else:
                    _widen(params, share, exhaustive)
                params.sel = exhaustive.sel = selector
                more = math.ceil(math.sqrt(1 / share)) if isinstance(part.index.index, RerankingIndex) else 1
                plans.append(
                    _Plan(rows, params=params, exhaustive=exhaustive, probe=probe, more=more, keep=(bitmap, selector))
                )
        return Subset(plans, count)

    def _search_prepared(
        self, prepared: np.ndarray, k: int, subset: Subset | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exactly k results a row whenever k images are live (and match): an approximate index that
        finds fewer (IVF lists probed hold fewer than k live vectors) searches those rows again
        exhaustively."""
        squared, ids = self._merged_rows(prepared, None, k, exhaustive=False, subset=subset)
        if subset is None and self.far_squared is not None and self._widens:
            far = np.flatnonzero(squared[:, 0] > self.far_squared)
            if len(far):  # unlike the probes the index was tuned on: look further (defaults.WIDE_SEARCH...)
                wide = self.wide_search or True
                squared[far], ids[far] = self._merged_rows(prepared, far, k, exhaustive=False, wide=wide)
        available = min(k, self.count if subset is None else subset.count)
        short = np.flatnonzero((ids[:, :available] < 0).any(axis=1))
        if len(short):
            squared[short], ids[short] = self._merged_rows(prepared, short, k, exhaustive=True, subset=subset)
        ids = np.where(squared >= np.finfo(np.float32).max / 2, -1, ids)
        return to_distance(squared, self.spec.metric), ids

    def _merged_rows(self, prepared: np.ndarray, rows: np.ndarray | None, k: int, **options):
        """_merged() of prepared[rows] (None: every row); a cluster's index notes which shards answered
        each row (ShardedIndex)."""
        return self._merged(prepared if rows is None else prepared[rows], k, **options)

    def _merged(
        self,
        prepared: np.ndarray,
        k: int,
        *,
        exhaustive: bool,
        subset: Subset | None = None,
        wide: bool | tuple[int, int] = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every part's answer merged into one ranking of global ids: (squared distances, ids), (n, k).

        wide: search wider than tuned (a far query): True, each index kind's default; (lists,
        candidates), those factors (SegmentedIndex.wide_search)."""
        lists, candidates = wide if isinstance(wide, tuple) else (None, None)
        n = len(prepared)
        all_squared, all_ids = [], []
        for number, part in enumerate(self.parts):
            if subset is not None:
                plan = subset.plans[number]
                if plan is None:
                    continue
                if plan.vectors is not None:
                    squared, found = exact_search(prepared, plan.vectors, min(k, len(plan.rows)))
                    positions = np.where(found >= 0, plan.rows[np.maximum(found, 0)], -1)
                elif plan.probe is not None and not exhaustive:
                    squared, positions = _probed(part.index, plan, prepared, min(k * plan.more, len(plan.rows)))
                else:
                    params = plan.exhaustive if exhaustive else plan.params
                    wanted = min(k * plan.more, len(plan.rows))
                    squared, positions = part.index.search_prepared(prepared, wanted, params=params)
            else:
                params = part.params
                widened = part.index.wide_parameters(lists) if wide and not exhaustive else None
                if exhaustive or widened is not None:
                    params = part.index.exhaustive_parameters() if exhaustive else widened
                    if part.selectors:
                        params.sel = part.selectors[-1]  # the removed positions stay skipped
                rerank = part.index.wide_rerank(candidates) if widened is not None else 1
                squared, positions = part.index.search_prepared(
                    prepared, min(k, len(part.ids)), params=params, rerank=rerank
                )
            all_squared.append(squared)
            all_ids.append(np.where(positions >= 0, part.ids[np.maximum(positions, 0)], -1))
        if not all_squared:
            return np.full((n, k), np.finfo(np.float32).max, np.float32), np.full((n, k), -1, np.int64)
        squared, ids = np.concatenate(all_squared, axis=1), np.concatenate(all_ids, axis=1)
        if len(all_squared) > 1 or squared.shape[1] != k:
            order = np.argsort(squared, axis=1, kind="stable")[:, :k]
            squared, ids = np.take_along_axis(squared, order, 1), np.take_along_axis(ids, order, 1)
            if squared.shape[1] < k:
                pad = k - squared.shape[1]
                squared = np.pad(squared, ((0, 0), (0, pad)), constant_values=np.float32(np.finfo(np.float32).max))
                ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        return squared, ids


def read_part(segment, number: int, spec: IndexSpec, transform: AffineTransform | None, removed: np.ndarray) -> _Part:
    """One segment as a part of a SegmentedIndex: its index read and checked, its removed rows skipped.
    (A shard of a cluster reads the copy shipped to its worker the same way: search/cluster.py.)"""
    meta = segment.meta
    segment_spec = IndexSpec(
        meta.get("index_type", "flat"), spec.metric, dict(meta.get("index_params") or {}), spec.transform
    )
    try:
        index = read_segment_index(segment, segment_spec, transform)
    except RuntimeError as exc:
        raise BundleError(
            f"{segment.file(INDEX_FILE)} cannot be read by FAISS ({exc!s:.120}): rebuild the index"
        ) from None
    if len(index) != segment.count:
        raise BundleError(
            f"{segment.file(INDEX_FILE)} holds {len(index)} vectors, its segment {segment.count}: rebuild the index"
        )
    ids = np.asarray(segment.ids)
    return _Part(index, ids, removed, *_skipping(index, removed), _vectors_of(index, segment), number)


def index_spec(manifest: dict) -> IndexSpec:
    """The bundle's index kind, metric and transform, as its manifest records them."""
    m = manifest
    return IndexSpec(m["index_type"], m["metric"], dict(m.get("index_params") or {}), m.get("transform", "none"))


def load_transform(bundle: Bundle) -> AffineTransform | None:
    path = bundle.space_file("transform.npz")
    if path is None:
        if bundle.manifest.get("transform", "none") != "none":
            raise BundleError(
                f"{bundle.path} has no transform.npz although its space says {bundle.manifest['transform']}"
            )
        return None
    try:
        with np.load(path, allow_pickle=False) as arrays:
            layout = arrays.get("layout", ())
            return AffineTransform.checked(arrays["mean"], arrays["matrix"], bundle.manifest["z_size"], layout)
    except (OSError, ValueError, KeyError) as exc:
        raise BundleError(f"{path} cannot be read ({exc!s:.120}): rebuild the index") from None


def load_trust_dict(bundle: Bundle) -> dict:
    path = bundle.space_file("trust.json")
    if path is None:
        raise BundleError(f"{bundle.path} has no trust.json: rebuild the index")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise BundleError(f"{path} cannot be read ({exc!s:.120}): rebuild the index") from None


def _vectors_of(index: VectorIndex, segment) -> Callable[[np.ndarray], np.ndarray]:
    """Positions -> the search-space vectors a filtered scan compares: a re-ranked segment's stored
    ones, else its embeddings transformed (what every index was built from; lossy codes are not)."""
    if isinstance(index.index, RerankingIndex):
        return index.index.vectors_of
    embeddings = segment.embeddings
    return lambda rows: index.search_space(embeddings[rows])


def _plain_ivf(index: VectorIndex) -> faiss.IndexIVF | None:
    """The IVF a part searches, where its lists see the prepared vectors as they are (no OPQ in front)."""
    inner = index.index.index if isinstance(index.index, RerankingIndex) else index.index
    if isinstance(faiss.downcast_index(inner), faiss.IndexPreTransform):
        return None
    try:
        return faiss.extract_index_ivf(inner)
    except RuntimeError:
        return None


def _probed(index: VectorIndex, plan: _Plan, prepared: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each query with its own number of lists (ListProbe), queries that need as many searched together."""
    nprobe = plan.probe.nprobe(prepared)
    squared = np.empty((len(prepared), k), np.float32)
    positions = np.empty((len(prepared), k), np.int64)
    for value in np.unique(nprobe).tolist():
        rows = np.flatnonzero(nprobe == value)
        params = index.search_parameters()  # fresh: concurrent queries never share a changed one
        params.nprobe, params.sel = value, plan.params.sel
        params.quantizer_params = plan.probe.quantizer_params  # lists without a match are never probed
        squared[rows], positions[rows] = index.search_prepared(prepared[rows], k, params=params)
    return squared, positions


def _widen(params: faiss.SearchParameters, share: float, bound: faiss.SearchParameters) -> None:
    """nprobe / efSearch divided by the share of images that match, up to the exhaustive bound."""
    for knob in ("nprobe", "efSearch"):
        if hasattr(params, knob):
            setattr(params, knob, int(min(getattr(bound, knob), math.ceil(getattr(params, knob) / share))))


def _skipping(index: VectorIndex, removed: np.ndarray) -> tuple[faiss.SearchParameters | None, tuple]:
    """Search parameters whose selector skips the removed positions (keeping the tuned knobs)."""
    if not len(removed):
        return None, ()
    batch = faiss.IDSelectorBatch(removed.astype(np.int64))
    selector = faiss.IDSelectorNot(batch)
    params = index.search_parameters()
    params.sel = selector
    return params, (batch, selector)
