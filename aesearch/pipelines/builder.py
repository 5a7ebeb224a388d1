"""The one builder: every step a bundle's base segment goes through, whoever asks for it.

A full build, a resumed one and a cluster build (pipelines/stream.py, fed by any ChunkSource) and a
compaction (pipelines/update.py, fed from the stored embeddings) take the same steps, each one
function here, so a compacted bundle holds what a fresh build of the same images holds:

    encode_chunk      images -> pooled vectors, and the trust sample's reconstruction errors
    learn_whitening   the PCA whitening: fitted on the vectors, or solved from streamed Moments
    index_pass        the index chosen (index_choice.py), trained on a sample, filled from disk, tuned
    calibrate_trust   the trust score's quantiles: reconstruction errors and nearest-other distances
    index_base        the three above over a build's written base segments (one, or --segments of
                      contiguous id ranges): one space learned on all of them, an index each
    index_exactly     a delta's index: exact, in the space the bundle already has (index_pass, flat)
    write_segment     rows -> one segment, indexed (index_exactly for a delta, index_base for a base)

Only chunks, the samples and the index itself are ever in memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np

from aesearch import defaults
from aesearch.memory import new_float_rows, read_rows, release
from aesearch.rowwise import per_image_mean
from aesearch.search.index import AffineTransform, to_search_space
from aesearch.search.index_choice import IndexChoice, choose_index, default_max_index_memory
from aesearch.search.trust import TrustCalibration
from aesearch.store.bundle import BundleWriter
from aesearch.store.segment import SegmentBuilder

CALIBRATION_SAMPLE = 20_000  # images whose reconstruction error calibrates the trust score
TRUST_PROBES = 3000  # images whose nearest other image calibrates the trust score's distance
TRAIN_SAMPLE = 100_000  # vectors the index is trained on (k-means and PQ gain little beyond)
TUNING_PROBES = 500  # probe queries for tuning
EXACT_FIT = 100_000  # up to this many vectors the whitening is fitted on them directly (<= 126 MB)
ENCODE_SLICE = 2048  # images encoded at once: working arrays of at most 13 MB (memory.keep_freed_memory)

# encode(images uint8 (n, size, size), want rows) -> (vectors (n, z) float32, reconstruction MSE of want rows)
Encoder = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class StreamOptions:
    """How to build: the search space (as build-index's options) and the streaming knobs.

    Every default is aesearch/defaults.py's; a compaction makes one from the bundle's manifest.
    """

    index_type: str = defaults.INDEX_TYPE
    metric: str = defaults.METRIC
    transform: str = defaults.TRANSFORM
    whiten_shrinkage: float = defaults.WHITEN_SHRINKAGE
    whiten_dims: int | None = defaults.WHITEN_DIMS
    shifts: tuple[tuple[int, int], ...] | None = None  # None: the model's (ModelConfig.default_shifts)
    max_index_memory: int | None = None  # bytes; None: index_choice.default_max_index_memory(n)
    chunk_size: int = defaults.CHUNK_SIZE
    seed: int = 0
    cluster: str | None = None  # a Dask scheduler address, "local" (two throwaway workers), or None: here
    segments: int = defaults.BASE_SEGMENTS  # base segments of contiguous id ranges, each indexed alone
    layout: tuple = ()  # the model's ModelConfig.search_layout: how its vectors' parts are searched


def encode_chunk(autoencoder, images: np.ndarray, want: np.ndarray, shifts) -> tuple[np.ndarray, np.ndarray]:
    """Vectors of a chunk, and the reconstruction MSE of its rows `want` (the trust sample, sorted).

    Encoded ENCODE_SLICE images at a time (a row's vector does not depend on its batch:
    aesearch/rowwise.py), so that every working array comes from the heap and is reused.
    """
    vectors = np.empty((len(images), autoencoder.z_size), np.float32)
    errors = np.zeros(len(want))
    for start in range(0, len(images), ENCODE_SLICE):
        pixels = images[start : start + ENCODE_SLICE].astype(np.float32) / np.float32(255)
        z, vectors[start : start + len(pixels)] = autoencoder.embed(pixels, shifts)
        lo, hi = np.searchsorted(want, [start, start + len(pixels)])
        if hi > lo:
            rows = want[lo:hi] - start
            shown = autoencoder.pictures(pixels[rows])  # what the decoder gives back: without transparency
            errors[lo:hi] = per_image_mean((autoencoder.decode(z[rows]) - shown) ** 2)
    return vectors, errors


def calibration_sample(count: int, seed: int) -> np.ndarray:
    """The sorted rows (of count items) whose reconstruction error calibrates the trust score."""
    rng = np.random.default_rng(seed + 3)
    return np.sort(rng.choice(count, size=min(count, CALIBRATION_SAMPLE), replace=False))


class Moments:
    """The whitening's moments, accumulated a chunk at a time: no second pass, a z x z matrix of memory.

    Taken about the first chunk's mean (`reference`), so that large means do not cancel.
    """

    def __init__(self, z: int) -> None:
        self.fitted = 0
        self.reference = np.zeros(z)
        self.total = np.zeros(z)
        self.outer = np.zeros((z, z))

    def add(self, vectors: np.ndarray) -> None:
        x = vectors.astype(np.float64)
        if self.fitted == 0 and len(x):
            self.reference = x.mean(axis=0)
        x -= self.reference
        self.total += x.sum(axis=0)
        self.outer += x.T @ x
        self.fitted += len(x)

    @classmethod
    def over(cls, embeddings: np.ndarray, fit: np.ndarray | None, chunk_size: int) -> Moments:
        """The moments a streamed build accumulates over these stored rows (fit: a row mask; None: all)."""
        moments = cls(embeddings.shape[1])
        for start in range(0, len(embeddings), chunk_size):
            chunk = read_rows(embeddings, slice(start, start + chunk_size))
            moments.add(chunk if fit is None else chunk[fit[start : start + chunk_size]])
        return moments

    def whitening(self, options: StreamOptions) -> AffineTransform:
        n = self.fitted
        shifted = self.total / n
        covariance = (self.outer - n * np.outer(shifted, shifted)) / max(n - 1, 1)
        return AffineTransform.from_moments(
            shifted + self.reference,
            covariance,
            dims=options.whiten_dims,
            shrinkage=options.whiten_shrinkage,
            layout=options.layout,
        )


def learn_whitening(
    embeddings: np.ndarray, fit: np.ndarray | None, options: StreamOptions, moments: Moments | None = None
) -> AffineTransform:
    """The whitening learned on embeddings[fit] (fit: a row mask; None: every row).

    Up to EXACT_FIT vectors: fitted on them directly, read back from disk; more: from the moments a
    streamed pass accumulated (given, or taken here over the same chunks), so a build and a
    compaction of the same rows learn the same space to the last bit.
    """
    fitted = len(embeddings) if fit is None else int(np.count_nonzero(fit))
    if fitted > EXACT_FIT:
        if moments is None or moments.fitted != fitted:
            moments = Moments.over(embeddings, fit, options.chunk_size)
        return moments.whitening(options)
    rows = slice(None) if fit is None else np.flatnonzero(fit)
    vectors = read_rows(embeddings, rows)
    return AffineTransform.whitening(
        vectors, dims=options.whiten_dims, shrinkage=options.whiten_shrinkage, layout=options.layout
    )


def index_pass(embeddings: np.ndarray, segment_file, transform, options: StreamOptions, log=None, fill=None):
    """The index over the embeddings on disk: chosen, trained on a sample, filled, tuned, written.

    segment_file(name): where the segment's files go (index.faiss; the search vectors of a compressed
    index). fill: a cluster's ClusterSession.fill (None: filled here). Returns (index, choice, params).
    """
    from aesearch.search import large
    from aesearch.search.index import TARGET_RECALL

    n = len(embeddings)

    def prepared(rows) -> np.ndarray:
        return to_search_space(read_rows(embeddings, rows), options.metric, transform)

    dim = transform.out_dims if transform is not None else embeddings.shape[1]
    if options.index_type == "auto":
        choice = choose_index(n, dim, options.max_index_memory)
    else:
        choice = IndexChoice(options.index_type, {}, 0.0, "asked for with --index-type")
        if options.index_type == "hnsw":
            choice.params["M"] = 32
    if log:
        log(f"Index: {choice.index_type} ({choice.reason})")
    rng = np.random.default_rng(options.seed)
    # k-means wants 39 points per list (FAISS warns below that); PQ and small IVFs gain little beyond 100,000
    trained_on = min(n, max(TRAIN_SAMPLE, 39 * int(choice.params.get("nlist", 0))))
    sample = np.sort(rng.choice(n, size=trained_on, replace=False))
    # Probe queries for tuning, and their true neighbours, found in the same pass that adds the vectors:
    # preparing (whitening) every vector is a third of the index's cost, so it is done once.
    tuned = choice.index_type != "flat"
    own = np.sort(rng.choice(n, size=min(n, TUNING_PROBES), replace=False)) if tuned else None
    queries = prepared(own) if tuned else None
    truth = large.ExactNeighbours(queries, 11) if tuned else None

    # A compressed index re-ranks its candidates with their search-space vectors, kept on disk.
    kept = new_float_rows(segment_file(large.SEARCH_VECTORS_FILE), n, dim) if choice.compressed else None

    def chunks() -> Iterator[np.ndarray]:
        for start in range(0, n, options.chunk_size):
            chunk = prepared(slice(start, start + options.chunk_size))
            if truth is not None:
                truth.add(chunk)
            if kept is not None:
                kept[start : start + len(chunk)] = chunk
                kept.flush()
                release(kept)
            yield chunk

    def add(trained):  # on the cluster when there is one and the index is an IVF, else here chunk by chunk
        return fill(trained, n, prepared, options.chunk_size) if fill is not None else None

    trained = prepared(sample) if choice.index_type != "flat" else np.zeros((0, dim), np.float32)  # flat: none
    index = large.build_streamed(choice, dim, n, trained, chunks(), seed=options.seed, fill=add)
    params = {k: v for k, v in choice.params.items() if k != "target_recall"}  # new_faiss_index adds its sizes
    if options.transform == "whiten":  # recorded with the index: a compaction relearns the same space
        params.update(whiten_shrinkage=options.whiten_shrinkage, whiten_dims=options.whiten_dims)
    if tuned and truth.rows == 0:  # the cluster added the vectors: one pass here for the true neighbours
        for _ in chunks():
            pass
    if choice.compressed:
        index = large.RerankingIndex(index, lambda rows: read_rows(kept, rows), choice.params["rerank_factor"])
    if tuned:
        assert truth.rows == n, f"true neighbours over {truth.rows} of {n} vectors"
        target = choice.params.get("target_recall", TARGET_RECALL)
        params.update(large.tune_streamed(index, queries, own, truth.result()[1], target))
        params["target_recall"] = target
    # What a loaded index holds is what its file holds (codes, ids, centroids); measured on the file, as
    # serializing it into memory to count would double the index in the resident set.
    large.write_index(index, segment_file("index.faiss"))
    params["bytes_per_vector"] = round(segment_file("index.faiss").stat().st_size / n, 1)
    return index, choice, params


def calibrate_trust(
    embeddings: np.ndarray,
    images: np.ndarray,
    sample: np.ndarray,
    errors: np.ndarray,
    index,
    transform: AffineTransform | None,
    options: StreamOptions,
    framing: str,
) -> TrustCalibration:
    """The trust calibration: the sample's reconstruction errors, nearest-other distances of probes.

    sample: calibration_sample's rows, errors their reconstruction MSE (rows past the images there
    are, items a source could not read, are left out); index: index_pass's, over the embeddings;
    framing: the model's (how the images' content is measured: trust.content_measure_for).
    """
    from aesearch.search.index import to_distance
    from aesearch.search.trust import calibrate, content_measure_for

    n = len(embeddings)
    rng = np.random.default_rng(options.seed + 2)
    probe = np.sort(rng.choice(n, size=min(TRUST_PROBES, n), replace=False))
    queries = to_search_space(read_rows(embeddings, probe), options.metric, transform)
    # A few hundred at a time: IVF fast scan builds every query's lookup tables at once (nprobe x m x 16
    # bytes each: 1.2 GB for 3,000 queries at nprobe 256, m 96).
    answers = [index.search(queries[start : start + 500], 2) for start in range(0, len(queries), 500)]
    squared, rows = np.concatenate([a[0] for a in answers]), np.concatenate([a[1] for a in answers])
    distances = to_distance(squared, options.metric)
    nearest_other = np.where(rows[:, 0] == probe, distances[:, -1], distances[:, 0])
    encoded = sample < n
    images = read_rows(images, sample[encoded])
    return calibrate(errors[encoded], nearest_other, images, measure=content_measure_for(framing))


def index_base(
    writer: BundleWriter,
    segments: Sequence[SegmentBuilder],
    options: StreamOptions,
    *,
    framing: str,
    fit: np.ndarray | None,
    trust_sample: np.ndarray,
    trust_errors: np.ndarray,
    moments: Moments | None = None,
    log: Callable[[str], None] | None = None,
    fill=None,
) -> list[tuple[IndexChoice, dict]]:
    """A new search space over a build's written base segments: whitening, index files, trust.

    The segments hold consecutive rows of one collection (rows numbered across them in order; fit,
    trust_sample: over those rows). The whitening and the trust calibration are learned once on all
    of them, as for one segment; each segment gets an index of its own (index_pass), chosen, trained
    and tuned on its rows alone (auto: for its size, within its share of the memory budget:
    segment_options). The space's files (transform.npz, trust.json) replace the bundle's. Returns
    each segment's (choice, params).
    """
    one = len(segments) == 1
    embeddings = segments[0].embeddings if one else StackedRows([s.embeddings for s in segments])
    if options.transform == "whiten":
        transform = learn_whitening(embeddings, fit, options, moments)
    else:  # a model searched in parts still weighs them (transform.npz holds the layout); others: none
        transform = AffineTransform.parts_only(options.layout) if options.layout else None
    each = segment_options(options, len(embeddings), len(segments))
    indexes, chosen = [], []
    for number, segment in enumerate(segments):
        if log and not one:
            log(f"Base segment {number + 1} of {len(segments)}: {segment.count:,} images")
        index, choice, params = index_pass(segment.embeddings, segment.file, transform, each, log, fill)
        indexes.append(index)
        chosen.append((choice, params))
    index = indexes[0] if one else _MergedSearch(indexes, [s.count for s in segments])
    images = segments[0].images if one else StackedRows([s.images for s in segments])
    trust = calibrate_trust(embeddings, images, trust_sample, trust_errors, index, transform, options, framing)
    if transform is not None:
        np.savez(writer.space_file("transform.npz"), **transform.to_arrays())
    writer.space_file("trust.json").write_text(json.dumps(trust.to_dict()) + "\n")
    return chosen


def segment_options(options: StreamOptions, n: int, segments: int) -> StreamOptions:
    """The options each of `segments` base segments of n images in all is indexed with.

    auto chooses for a segment's size within its share of the budget (the bundle's, given or
    default for n, divided evenly): one process serving the bundle holds every segment's index, so
    the budget stays the whole bundle's; a cluster worker holding one segment needs its share.
    """
    if segments == 1 or options.index_type != "auto":
        return options
    budget = options.max_index_memory or default_max_index_memory(n)
    return replace(options, max_index_memory=max(1, budget // segments))


def split_bounds(n: int, segments: int) -> list[int]:
    """Row bounds of `segments` contiguous ranges of n rows, as even as can be (the first ones shorter)."""
    return [n * i // segments for i in range(segments + 1)]


class StackedRows:
    """Rows of several arrays (the base segments' embeddings or images, in order) read as one array."""

    def __init__(self, arrays: Sequence[np.ndarray]) -> None:
        self.arrays = list(arrays)
        self.bounds = np.cumsum([0] + [len(a) for a in self.arrays])
        self.shape = (int(self.bounds[-1]), *self.arrays[0].shape[1:])
        self.dtype = self.arrays[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows) -> np.ndarray:
        if isinstance(rows, slice):
            start, stop, step = rows.indices(len(self))
            if step == 1:  # each array's part read straight through
                parts = [
                    read_rows(a, slice(max(start - lo, 0), max(min(stop - lo, len(a)), 0)))
                    for a, lo in zip(self.arrays, self.bounds[:-1].tolist(), strict=True)
                ]
                return np.concatenate(parts) if parts else np.zeros((0, *self.shape[1:]), self.dtype)
            rows = np.arange(start, stop, step)
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        which = np.searchsorted(self.bounds, rows, side="right") - 1
        for number in np.unique(which).tolist():
            mine = which == number
            out[mine] = read_rows(self.arrays[number], rows[mine] - self.bounds[number])
        return out


class _MergedSearch:
    """The base segments' indexes searched as one over rows numbered across them (the trust
    calibration's nearest-other search): each answer ranked with the stable sort SegmentedIndex uses."""

    def __init__(self, indexes: list, counts: list[int]) -> None:
        self.indexes, self.counts = indexes, counts
        self.offsets = np.cumsum([0, *counts[:-1]])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        all_squared, all_rows = [], []
        for index, count, offset in zip(self.indexes, self.counts, self.offsets.tolist(), strict=True):
            squared, rows = index.search(queries, min(k, count))
            all_squared.append(squared)
            all_rows.append(np.where(rows >= 0, rows + offset, -1))
        squared, rows = np.concatenate(all_squared, axis=1), np.concatenate(all_rows, axis=1)
        squared = np.where(rows >= 0, squared, np.finfo(np.float32).max)
        order = np.argsort(squared, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(squared, order, 1), np.take_along_axis(rows, order, 1)


def index_exactly(segment: SegmentBuilder, metric: str, transform: AffineTransform | None) -> dict:
    """An exact (flat) index of a written segment in a space learned before (a delta's); returns its meta.

    index_pass with index_type "flat": the same vectors, prepared the same way, as a base's would be.
    """
    options = StreamOptions(index_type="flat", metric=metric, transform="none" if transform is None else "whiten")
    index_pass(segment.embeddings, segment.file, transform, options)
    return {"index_type": "flat", "index_params": {}}


def write_segment(
    writer: BundleWriter,
    records: np.ndarray,
    images: np.ndarray,
    embeddings: np.ndarray,
    paths: Sequence[str] | None,
    index: Callable[[SegmentBuilder], dict],
) -> SegmentBuilder:
    """One new segment of these rows (ids set; sorted here, as a segment's ids must be), indexed and listed.

    index(segment): writes the segment's index files from its rows on disk and returns the meta the
    manifest records with it ({"index_type", "index_params", ...}): an exact index for a delta, or
    index_base's choice for a base. paths: one per row (None: the rows have none).
    """
    segment = filled_segment(writer, records, images, embeddings, paths)
    meta = index(segment)
    writer.add_segment(segment, meta=meta)
    return segment


def filled_segment(
    writer: BundleWriter,
    records: np.ndarray,
    images: np.ndarray,
    embeddings: np.ndarray,
    paths: Sequence[str] | None,
) -> SegmentBuilder:
    """A new segment holding these rows, sorted by id; not indexed nor listed yet."""
    order = np.argsort(records["id"], kind="stable")
    segment = writer.new_segment(len(records))
    segment.records[:] = records[order]
    segment.images[:] = images[order]
    segment.embeddings[:] = embeddings[order]
    if paths is not None:
        segment.set_paths([paths[i] for i in order])
    return segment
