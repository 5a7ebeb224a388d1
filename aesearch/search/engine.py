"""The search engine: the query path, wired in one place.

    image -> preprocess (preprocess.py) -> encode (model/runtime.py) -> search (index.py) -> decode

No torch anywhere on this path: a cold `aesearch query` pays for NumPy, FAISS and Pillow only.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from aesearch import defaults
from aesearch.errors import BundleError, EmptyIndexError, InvalidArgumentError
from aesearch.integers import check_int, check_ints
from aesearch.model.runtime import NumpyAutoEncoder
from aesearch.rowwise import per_image_mean
from aesearch.search import notebook
from aesearch.search.cluster import Cluster, noting_missing_shards
from aesearch.search.feedback import Feedback
from aesearch.search.filters import Filter, sorted_unique
from aesearch.search.index import to_squared
from aesearch.search.segments import SegmentedIndex, Subset, load_trust_dict
from aesearch.search.selection import Selection
from aesearch.search.trust import Trust, TrustCalibration
from aesearch.sources.preprocess import DEFAULT_MAX_PIXELS, ImageSource, preprocess_batch, preprocess_keeping_originals
from aesearch.store.bundle import Bundle, load_bundle, records_problem
from aesearch.store.manifest import rebuild_advice

if TYPE_CHECKING:
    from PIL import Image

    from aesearch.search.explain import Explanation

DEFAULT_INDEX_DIR = defaults.INDEX_DIR
# What `where=` takes: filter text, a parsed Filter, a Selection, or ids (None: every image).
Where = str | Filter | Selection | Sequence[int] | np.ndarray | None


@dataclass(frozen=True)
class Hit:
    """One neighbour. distance: Euclidean for metric "l2", 1 - cosine similarity for "cosine"."""

    rank: int
    id: int
    label: int  # -1: the image has no label
    label_name: str | None
    split: str
    position: int  # index within its split of the original dataset
    distance: float
    path: str = ""  # relative to its collection root; "" for dataset images

    def to_dict(self) -> dict:
        data = {
            "rank": self.rank,
            "id": self.id,
            "label": self.label,
            "label_name": self.label_name,
            "split": self.split,
            "position": self.position,
            "distance": self.distance,
        }
        if self.path:
            data["path"] = self.path
        return data

    @property
    def name(self) -> str:
        """How to show the hit: its path for a collection image, else its class."""
        return self.path or self.label_name or "unlabelled"


@dataclass(frozen=True)
class QueryResult:
    hits: list[Hit]
    query: np.ndarray  # (28, 28) float32: the preprocessed image that was searched
    reconstruction: np.ndarray  # (28, 28) float32 in [0, 1]: what the decoder made of the query
    reconstruction_mse: float
    trust: Trust  # percentiles of the query's reconstruction error and nearest distance; in_distribution
    latent: np.ndarray = field(repr=False)  # (z_size,) float32: the vector that was searched
    feedback: Feedback = field(default_factory=Feedback)  # marks behind these hits (engine.refine)
    # The query as given, decoded once by the preprocessing (keep_original=True; None for an array):
    # a result picture shows it without reading the file again.
    original: Image.Image | None = field(default=None, repr=False, compare=False)
    # Where the hits' indexed images come from (ids -> (n, *image_shape) uint8): the engine's bundle,
    # or a server for aesearch.Client. Pictures of a result (a notebook's grid) read them through it.
    images_of: Callable[[Sequence[int]], np.ndarray] | None = field(default=None, repr=False, compare=False)
    where: Filter | None = None  # the filter the hits were narrowed to; refine() keeps narrowing within it
    # Served by a Cluster that allows partial answers: the shards that did not answer (their images
    # are missing from the hits). Empty: every image was searched.
    missing_shards: tuple[str, ...] = ()

    @property
    def in_distribution(self) -> bool:
        return self.trust.in_distribution

    def __repr__(self) -> str:  # the arrays' own repr would bury the hits
        return notebook.result_text(self)

    def _repr_html_(self) -> str:
        return notebook.result_html(self)

    def to_dict(self) -> dict:
        hits = [hit.to_dict() for hit in self.hits]
        if self.feedback:
            for hit in hits:
                hit["mark"] = self.feedback.mark(hit["id"])
        return {
            "k": len(self.hits),
            "reconstruction_mse": self.reconstruction_mse,
            **self.trust.to_dict(),
            "hits": hits,
            **(self.feedback.to_dict() if self.feedback else {}),
            **({"where": self.where.summary} if self.where is not None else {}),
            **({"missing_shards": list(self.missing_shards)} if self.missing_shards else {}),
        }


class SearchEngine:
    """Similarity search over an index bundle.

    >>> engine = SearchEngine.load("indexes/fashion-mnist")
    >>> result = engine.query("shoe.jpg", k=8)
    """

    def __init__(self, bundle: Bundle, *, cluster: Cluster | None = None) -> None:
        """cluster: search the bundle's segments on these Dask workers (search/cluster.py), not here."""
        self.bundle, self.cluster = bundle, cluster
        self.autoencoder = NumpyAutoEncoder.from_checkpoint(bundle.checkpoint)
        self.index = SegmentedIndex.from_bundle(bundle) if cluster is None else cluster.index(bundle)
        try:
            self.trust = TrustCalibration.from_dict(load_trust_dict(bundle))
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(
                f"{bundle.path} has a damaged trust calibration ({exc!s:.80}): rebuild the index"
            ) from None
        far = self.trust.neighbour_distance_at(defaults.FAR_QUERY_PERCENTILE)
        self.index.far_squared = to_squared(far, bundle.manifest["metric"])
        self.index.wide_search = far_search(bundle.manifest)
        # The index holds each image's z averaged over these translations (see NumpyAutoEncoder.embed).
        self.shifts = [tuple(shift) for shift in bundle.manifest.get("embedding_shifts", [[0, 0]])]
        self._check_stored_vectors()
        self._subsets: OrderedDict[tuple[str, int], tuple[Filter, Subset]] = OrderedDict()  # defaults.FILTER_CACHE
        self._subsets_lock = threading.Lock()

    @classmethod
    def load(
        cls, index_dir: str | Path = DEFAULT_INDEX_DIR, *, model: str | Path | None = None, cluster: object = None
    ) -> SearchEngine:
        """Load and verify a bundle (see store/bundle.py); model overrides its checkpoint if it matches.

        cluster: serve its segments from Dask workers: a Cluster, or an address for one (a scheduler's
            "tcp://HOST:8786", or "local"); the answers are the same (search/cluster.py).
        """
        if cluster is not None and not isinstance(cluster, Cluster):
            cluster = Cluster(cluster)
            try:
                return cls.load(index_dir, model=model, cluster=cluster)
            except BaseException:
                cluster.close()
                raise
        for attempt in range(3):
            bundle = load_bundle(index_dir, model=model)
            try:
                return cls(bundle, cluster=cluster)
            except BundleError:
                # A writer published (a compaction) and removed the index files of the state we had
                # loaded before we read them: load the new state.
                if attempt < 2 and bundle.changed():
                    continue
                raise
        raise AssertionError("unreachable")

    def __len__(self) -> int:
        return len(self.bundle)

    def __repr__(self) -> str:
        m = self.manifest
        return (
            f"SearchEngine({str(self.bundle.path)!r}: {len(self):,} images, z {m['z_size']}, "
            f"{m['index_type']}, {m['metric']}, transform {m.get('transform', 'none')})"
        )

    @property
    def manifest(self) -> dict:
        return self.bundle.manifest

    # --- building blocks ---

    def encode(self, images: np.ndarray | Sequence[ImageSource]) -> np.ndarray:
        """Images -> (n, z_size) float32: the latent vectors as the index holds them, for search().

        Each is the encoder's z averaged over the bundle's grid-phase translations of the image
        (manifest "embedding_shifts"). Images: anything the preprocessing contract takes.
        """
        return self.autoencoder.embed(self.prepare(images), self.shifts)[1]

    def reconstruct(self, images: np.ndarray | Sequence[ImageSource]) -> np.ndarray:
        """Images -> (n, *picture_shape) float32: the decoder's output for each image's z."""
        return self.autoencoder.decode(self.autoencoder.encode(self.prepare(images)))

    def prepare(self, images: np.ndarray | Sequence[ImageSource], **options) -> np.ndarray:
        """Images -> (n, *image_shape) float32, framed by the bundle's model's contract (preprocess_batch's options)."""
        return preprocess_batch(images, model_config=self.autoencoder.config, **options)

    def decode(self, z: np.ndarray) -> np.ndarray:
        """(n, z_size) encoder outputs -> (n, *picture_shape) float32 images in [0, 1]."""
        return self.autoencoder.decode(self._check_vectors(z, "z"))

    def search(self, vectors: np.ndarray, k: int, *, where: Where = None) -> tuple[np.ndarray, np.ndarray]:
        """(n, z_size) vectors -> (distances, ids), each (n, k), FAISS's convention (-1: no result).

        where: only images that match (filter text, a Filter, a Selection or ids; see search/filters.py).
        """
        k = self._check_k(k)
        return self.index.search(self._check_vectors(vectors, "vectors"), k, self.subset(where)[1])

    def search_space(self, vectors: np.ndarray) -> np.ndarray:
        """(n, z_size) vectors from encode() -> the vectors the index compares (whitened, unit for cosine)."""
        return self.index.search_space(np.asarray(vectors, dtype=np.float32))

    def search_in_space(self, vectors: np.ndarray, k: int, *, where: Where = None) -> tuple[np.ndarray, np.ndarray]:
        """Like search(), for vectors made in the search space (a refined query); see feedback.py."""
        k = self._check_k(k)
        vectors = self._check_vectors(vectors, "vectors", self.index.search_dim)
        return self.index.search_in_space(vectors, k, self.subset(where)[1])

    def select(self, where: Where) -> Selection:
        """The live images that match, as a Selection (ids, records, JSON / CSV export)."""
        if isinstance(where, Selection):
            return where
        subset = self.subset(where)[1]
        if subset is None:
            return Selection(np.asarray(self.bundle.live_ids(), dtype=np.int64), self)
        ids = [self.index.parts[n].ids[plan.rows] for n, plan in enumerate(subset.plans) if plan is not None]
        return Selection(sorted_unique(np.concatenate(ids)) if ids else np.zeros(0, np.int64), self)

    def subset(self, where: Where) -> tuple[Filter | None, Subset | None]:
        """where as a parsed Filter and the plan its searches follow (None, None: no filter), cached
        per (filter text, bundle generation) for the last defaults.FILTER_CACHE filters."""
        if where is None or (isinstance(where, str) and not where.strip()):
            return None, None
        if isinstance(where, Selection):
            where = where.ids
        if isinstance(where, str | Filter):
            text = where.text if isinstance(where, Filter) else where.strip()
        else:
            where = Filter.of_ids(_checked_ids(where))
            text = where.text
        key = (text, self.bundle.generation)
        with self._subsets_lock:
            if key in self._subsets:
                self._subsets.move_to_end(key)
                return self._subsets[key]
        parsed = Filter.parse(where)
        found = parsed, self.index.subset(parsed.masks(self.bundle))
        with self._subsets_lock:
            self._subsets[key] = found
            while len(self._subsets) > defaults.FILTER_CACHE:
                self._subsets.popitem(last=False)
        return found

    def pictures_of(self, ids: Sequence[int]) -> np.ndarray:
        """(n, *picture_shape) uint8: these indexed images as pictures show them (bundle.images: as stored)."""
        return self.bundle.pictures(ids)

    def input_of(self, id: int) -> np.ndarray:
        """The indexed image with this id as the model takes it, as stored: (*image_shape) float32 in [0, 1]."""
        return self.bundle.image(self._check_id(id)).astype(np.float32) / np.float32(255)

    def image(self, id: int) -> np.ndarray:
        """The indexed image with this id, as pictures show it: (*picture_shape) uint8 (28 x 28 for the seed)."""
        return self.pictures_of([self._check_id(id)])[0]

    def hit(self, id: int, *, rank: int = 0, distance: float = 0.0) -> Hit:
        number, row = self._locate(id)  # one lookup serves the record and the path
        segment = self.bundle.segments[number]
        if isinstance(distance, bool) or not isinstance(distance, int | float | np.number):
            raise InvalidArgumentError(f"distance must be a number, got {type(distance).__name__}")
        return self._hit(id, check_int(rank, "rank"), distance, segment.records[row], segment.path(row))

    def _hits(self, ids: np.ndarray, distances: np.ndarray) -> list[list[Hit]]:
        """Each row of a search's answer as Hits (-1: no result), every id located in one lookup and
        every field read as a column: per-hit lookups and record fields cost ~15 us a hit, most of a
        batch's bookkeeping."""
        found = ids >= 0
        numbers, rows = self.bundle.locate(ids[found]) if found.any() else (np.zeros(0, int), np.zeros(0, int))
        segments = self.bundle.segments
        records = np.empty(len(rows), dtype=segments[0].records.dtype) if segments else None
        paths = [""] * len(rows)
        for number in np.unique(numbers).tolist():
            mine = np.nonzero(numbers == number)[0]
            records[mine] = segments[number].records[rows[mine]]
            if segments[number].has_paths:
                for at, path in zip(mine.tolist(), segments[number].paths(rows[mine]), strict=True):
                    paths[at] = path
        self._check_records(records)
        labels = records["label"].tolist() if records is not None else []
        splits = records["split"].tolist() if records is not None else []
        positions = records["position"].tolist() if records is not None else []
        names, split_names = self.bundle.class_names, self.bundle.split_names
        at = iter(range(len(rows)))
        results = []
        for row_ids, row_distances, row_found in zip(ids.tolist(), distances.tolist(), found.tolist(), strict=True):
            hits = []
            for rank, (i, d, ok) in enumerate(zip(row_ids, row_distances, row_found, strict=True), start=1):
                if ok:
                    w = next(at)
                    label = labels[w]
                    hits.append(
                        Hit(
                            rank,
                            i,
                            label,
                            names[label] if label >= 0 else None,
                            split_names[splits[w]],
                            positions[w],
                            d,
                            paths[w],
                        )
                    )
            results.append(hits)
        return results

    def _hit(self, id: int, rank: int, distance: float, record: np.void, path: str) -> Hit:
        self._check_records(np.array([record], dtype=record.dtype))
        label = int(record["label"])
        return Hit(
            rank=rank,
            id=int(id),
            label=label,
            label_name=self.bundle.class_names[label] if label >= 0 else None,
            split=self.bundle.split_names[int(record["split"])],
            position=int(record["position"]),
            distance=float(distance),
            path=path,
        )

    # --- the query path ---

    def query(
        self,
        image: ImageSource,
        k: int = 8,
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        name: str | None = None,
        keep_original: bool = False,
        where: Where = None,
    ) -> QueryResult:
        """Preprocess one image, encode it, find its k nearest neighbours, and decode it.

        image: a path, the file's bytes, a PIL image, a numpy array or a torch tensor.
        name: how to call the image in error messages (default: its path, or "the image data").
        keep_original: keep the image as decoded in result.original (to show it; it may be large).
        where: only images that match: filter text (`label in (Shirt, Coat) and size < 10KB`, see
            search/filters.py), a Filter, a Selection or ids. The hits are exact for the filter:
            k of them whenever k images match.
        """
        options = {"max_pixels": max_pixels, "name": name, "keep_original": keep_original, "where": where}
        return self.query_batch([image], k, **options)[0]

    def query_id(self, id: int, k: int = 8, *, where: Where = None) -> QueryResult:
        """Query with an indexed image (it finds itself first, at distance 0, if it matches where).

        The stored image is the model's input already: framing it again is not always the identity
        (a silhouette whose framing leaves a light background would be negated), so it is searched as
        stored."""
        return self.query_prepared(self.input_of(id)[None], k, where=where)[0]

    def query_prepared(self, images: np.ndarray, k: int = 8, *, where: Where = None) -> list[QueryResult]:
        """Like query_batch, for images in the model's input form already (what prepare() returns:
        (n, *image_shape) float32 in [0, 1]), searched as they are, not framed again. aesearch.Client
        frames on its side and the server searches what it sent this way."""
        shape = self.autoencoder.config.image_shape
        queries = np.asarray(images, dtype=np.float32)
        if queries.ndim != len(shape) + 1 or queries.shape[1:] != shape:
            raise InvalidArgumentError(
                f"prepared images must have shape (n, {', '.join(map(str, shape))}), got {queries.shape}: "
                "pass what prepare() returns"
            )
        if not np.isfinite(queries).all() or queries.min(initial=0) < 0 or queries.max(initial=0) > 1:
            raise InvalidArgumentError("prepared images hold values outside [0, 1]: pass what prepare() returns")
        k = self._check_k(k)
        parsed, subset = self.subset(where)
        if not len(queries):
            return []
        return self._answer(queries, [None] * len(queries), k, parsed, subset)

    def query_batch(
        self,
        images: np.ndarray | Sequence[ImageSource],
        k: int = 8,
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        name: str | None = None,
        keep_original: bool = False,
        where: Where = None,
    ) -> list[QueryResult]:
        """Many queries at once: one batched encode, search and decode (keep_original, where: see query())."""
        k = self._check_k(k)
        max_pixels = check_int(max_pixels, "max_pixels", low=1)
        parsed, subset = self.subset(where)  # a bad filter fails before any image is decoded
        if isinstance(images, Sequence | np.ndarray) and not isinstance(images, str | bytes) and not len(images):
            return []  # no image, no result (and no zero-row arrays through the encoder)
        if keep_original:  # off by default: a batch of photos would keep every one decoded
            queries, originals = preprocess_keeping_originals(
                images, max_pixels=max_pixels, name=name, model_config=self.autoencoder.config
            )
        else:
            queries = self.prepare(images, max_pixels=max_pixels, name=name)
            originals = [None] * len(queries)
        return self._answer(queries, originals, k, parsed, subset)

    def _answer(self, queries: np.ndarray, originals: list, k: int, parsed, subset) -> list[QueryResult]:
        """Prepared queries -> their results: one batched encode, search and decode."""
        z, latents = self.autoencoder.embed(queries, self.shifts)
        reconstructions = self.autoencoder.decode(z)
        queries = self.autoencoder.pictures(queries)  # from here on, as pictures show them (RGBA onto white)
        errors = per_image_mean((reconstructions - queries) ** 2)
        with noting_missing_shards() as missing:  # a cluster's partial answer is flagged, not silent
            if subset is None:
                distances, ids = self.index.search(latents, k)
                nearest = distances[:, 0]
            else:
                distances, ids = self.index.search(latents, k, subset)
                # Trust compares the query with the whole collection: behind a filter, the nearest match
                # may be far although the query is like many indexed images (a shoe searched among
                # shirts). (Searched beside the filtered search on a second thread, it saved 0.1 ms at a
                # 10% filter and cost 0.25 ms at 0.1%: the hand-off and the GIL.)
                nearest = self.index.search(latents, 1)[0][:, 0]
        trusts = self.trust.assess_many(errors, nearest, queries)
        return [
            QueryResult(
                hits,
                queries[n],
                reconstructions[n],
                float(errors[n]),
                trusts[n],
                latents[n],
                original=originals[n],
                images_of=self.pictures_of,
                where=parsed,
                missing_shards=tuple(sorted(missing)),
            )
            for n, hits in enumerate(self._hits(ids, distances))
        ]

    def refine(
        self,
        result: QueryResult,
        more: Sequence[int] = (),
        less: Sequence[int] = (),
        *,
        k: int | None = None,
        where: Where = None,
    ) -> QueryResult:
        """Search again with relevance feedback: these ids marked "more like this" / "less like this".

        Marks add up over rounds (pass the refined result back in). Hits marked "less like" are left
        out of the new hits and listed in result.feedback; see search/feedback.py for the method.
        where: narrow to these images (default: the filter result was made with, result.where).
        """
        from aesearch.search.feedback import refine

        self._check_result(result)
        parsed = self.subset(where)[0] if where is not None else result.where
        return refine(self, result, more, less, k=None if k is None else self._check_k(k), where=parsed)

    def explain(self, result: QueryResult, hit: Hit | int, *, steps: int = 8) -> Explanation:
        """Why a hit matched: signed difference maps and a latent interpolation strip (search/explain.py).

        hit: one of result.hits, or any indexed image's id.
        """
        from aesearch.search.explain import explain_hits

        self._check_result(result)
        if not isinstance(hit, Hit):
            hit = next((h for h in result.hits if h.id == hit), None) or self.hit(hit)
        return explain_hits(self, result, [hit], steps=steps)[0]

    def interpolate(self, start: ImageSource | int, end: ImageSource | int, *, steps: int = 8) -> np.ndarray:
        """(steps, 28, 28): the decoder's images on the line from start's z to end's (ids or images)."""
        from aesearch.search.explain import interpolate

        return interpolate(self, start, end, steps=steps)[0]

    # --- helpers ---

    def _check_k(self, k: int) -> int:
        self.require_images()
        return check_int(k, "k", low=1, high=len(self))  # at most the number of indexed images

    def _check_stored_vectors(self, sample: int = 4) -> None:
        """The first stored vectors are what this model makes of the stored images with the manifest's
        embedding shifts. Checksums cannot tell an edited manifest whose digests were recomputed; this
        can: another `embedding_shifts` would otherwise change every query's answers without a word.
        Costs one encode of `sample` images (~1 ms)."""
        segment = next((s for s in self.bundle.segments if s.count), None)
        if segment is None:
            return
        rows = slice(0, min(sample, segment.count))
        made = self.autoencoder.embed(segment.images[rows].astype(np.float32) / np.float32(255), self.shifts)[1]
        if not np.allclose(made, segment.embeddings[rows], rtol=1e-3, atol=1e-5):
            raise BundleError(
                f"{self.bundle.path} is inconsistent (its stored vectors are not what its model makes of its stored "
                f"images with embedding shifts {self.shifts}: the manifest was edited): "
                f"{rebuild_advice(self.bundle.path, self.manifest)}"
            )

    def _check_records(self, records: np.ndarray | None) -> None:
        """The records of hits fit the manifest (large bundles' records are not all checked at load)."""
        problem = records_problem(self.manifest, records) if records is not None else None
        if problem:
            raise BundleError(
                f"{self.bundle.path} is inconsistent ({problem}): {rebuild_advice(self.bundle.path, self.manifest)}"
            )

    @staticmethod
    def _check_result(result: object) -> None:
        if not isinstance(result, QueryResult):
            raise InvalidArgumentError(
                f"result must be what a query returned (a QueryResult), got {type(result).__name__}"
            )

    def warm_up(self) -> threading.Thread | None:
        """Read the files every query reads (each segment's index, records and search vectors) once,
        in a background thread, so that a server started with a cold page cache (after a reboot)
        answers at warm speed once they are in; queries meanwhile read what they need themselves.
        Returns the daemon thread (None when the segments are on a Dask cluster's workers)."""
        if self.cluster is not None:
            return None
        from aesearch.search.large import SEARCH_VECTORS_FILE

        files = [s.file(name) for name in ("index.faiss", "records.npy") for s in self.bundle.segments]
        files += [s.file(SEARCH_VECTORS_FILE) for s in self.bundle.segments]  # the largest, last
        thread = threading.Thread(target=read_through, args=(files,), name="aesearch-warm-up", daemon=True)
        thread.start()
        return thread

    def require_images(self) -> None:
        """EmptyIndexError, in one line, when every image has been removed."""
        if not len(self):
            raise EmptyIndexError(
                f"the index at {self.bundle.path} is empty (every image was removed): add images with "
                "`aesearch sync` or `aesearch add` (Collection.add in Python), or build it again"
            )

    def _check_vectors(self, vectors: np.ndarray, what: str, width: int | None = None) -> np.ndarray:
        """(n, width) finite float32 (width: z_size by default), or InvalidArgumentError saying what is wrong."""
        z = width or self.autoencoder.z_size
        try:
            array = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError):
            kind = type(vectors).__name__
            raise InvalidArgumentError(f"{what} must be numbers of shape (n, {z}), got a {kind}") from None
        if array.ndim != 2 or array.shape[1] != z:
            raise InvalidArgumentError(f"{what} must have shape (n, {z}), got {array.shape}")
        if not np.all(np.isfinite(array)):
            raise InvalidArgumentError(f"{what} hold NaN or infinite values: pass finite vectors")
        return array

    def _check_id(self, id: int) -> int:
        self._locate(id)
        return int(id)

    def _locate(self, id: int) -> tuple[int, int]:
        """(segment number, row) of a live id; one line naming the id if it is not in the bundle."""
        (number,), (row,) = self.bundle.locate([check_int(id, "an image id")])
        return int(number), int(row)


def _checked_ids(ids: object) -> np.ndarray:
    """ids given as a list or array, as sorted unique int64; one line for anything else."""
    if isinstance(ids, np.ndarray) and np.issubdtype(ids.dtype, np.integer) and ids.ndim == 1:
        if len(ids) and ids.min() < 0:
            raise InvalidArgumentError("where: ids must be 0 or more", parameter="where")
        return sorted_unique(ids.astype(np.int64))
    return sorted_unique(np.array(check_ints(ids, "where"), dtype=np.int64))


def read_through(paths: Sequence[Path]) -> None:
    """Read files once, in order, into the page cache (the reads release the GIL; missing files are
    skipped: a bundle without search vectors has none to read)."""
    buffer = bytearray(16 << 20)
    for path in paths:
        try:
            with open(path, "rb", buffering=0) as f:
                while f.readinto(buffer):
                    pass
        except OSError:
            continue


def far_search(manifest: dict) -> tuple[int, int] | None:
    """The (lists, candidates) factors the build chose for far queries (quality/recall.py), or None
    (a bundle built before they were chosen, or a damaged entry: each index kind's default)."""
    chosen = manifest.get("far_search")
    if not isinstance(chosen, dict):
        return None
    lists, candidates = chosen.get("lists"), chosen.get("candidates")
    valid = all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1024 for v in (lists, candidates))
    return (lists, candidates) if valid else None
