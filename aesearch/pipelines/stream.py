"""The streaming build: any ChunkSource -> a bundle, in memory bounded by the chunk size, resumable.

    pass 1  each chunk is encoded and written straight into the segment's memory-mapped records,
            images and embeddings; the whitening's moments (sum and sum of outer products) are
            accumulated, and the reconstruction error of the trust calibration's sample is kept.
            After every chunk the maps are flushed and a small state file is replaced atomically:
            kill -9 loses at most the chunk in flight, and the same command resumes after the
            last finished one (BundleWriter.create(resume_key=...) keeps the staging folder).
    pass 2  the whitening is solved from the moments; the index (`--index-type auto`:
            index_choice.py) is trained on a sample and filled chunk by chunk from the embeddings
            on disk, tuned to a target recall@10 against an exact streamed scan, and written.
Only chunks, the sample and the index itself are ever in memory. The encoder runs wherever
`encode` says: in this process (the default), or on a Dask cluster (pipelines/distributed.py),
with identical vectors.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aesearch.errors import InvalidArgumentError
from aesearch.model.checkpoint import Checkpoint
from aesearch.search.index import IndexSpec
from aesearch.search.index_choice import IndexChoice, choose_index, default_max_index_memory
from aesearch.sources.chunks import ChunkSource
from aesearch.store.bundle import BundleWriter
from aesearch.store.records import NO_LABEL, new_records, pixel_hashes

DEFAULT_CHUNK = 16_384  # images per chunk: ~150 MB of working arrays while encoding with two phases
_CALIBRATION_SAMPLE = 20_000  # images whose reconstruction error calibrates the trust score
_TRAIN_SAMPLE = 100_000  # vectors the index is trained on (k-means and PQ gain little beyond)
_PROBES = 500  # probe queries for tuning
_EXACT_FIT = 100_000  # up to this many vectors the whitening is fitted on them directly (<= 126 MB)
_SEGMENT = "base"
_ENCODE_SLICE = 2048  # images encoded at once: working arrays of at most 13 MB (keep_freed_memory)
_READ_BLOCK = 2048  # scattered rows read from a memory map between releases (<= 128 MB mapped)

# encode(images uint8 (n,28,28), want rows) -> (vectors (n, z) float32, reconstruction MSE of want rows)
Encoder = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class StreamOptions:
    """How to build: the search space (as build-index's options) and the streaming knobs."""

    index_type: str = "auto"
    metric: str = "cosine"
    transform: str = "whiten"
    whiten_shrinkage: float = 0.03
    whiten_dims: int | None = 192
    shifts: tuple = ((0, 0), (1, 1))
    max_index_memory: int | None = None  # bytes; None: default_max_index_memory(n)
    chunk_size: int = DEFAULT_CHUNK
    seed: int = 0
    cluster: str | None = None  # a Dask scheduler address, "local" (two throwaway workers), or None: here


def local_encoder(checkpoint: Checkpoint, shifts: Sequence[Sequence[int]]) -> Encoder:
    """The encoder of this process (NumpyAutoEncoder on every core)."""
    from aesearch.model.runtime import NumpyAutoEncoder

    autoencoder = NumpyAutoEncoder.from_checkpoint(checkpoint)
    keep_freed_memory()
    return lambda images, want: encode_chunk(autoencoder, images, want, shifts)


def encode_chunk(autoencoder, images: np.ndarray, want: np.ndarray, shifts) -> tuple[np.ndarray, np.ndarray]:
    """Vectors of a chunk, and the reconstruction MSE of its rows `want` (the trust sample, sorted).

    Encoded _ENCODE_SLICE images at a time (a row's vector does not depend on its batch:
    aesearch/rowwise.py), so that every working array comes from the heap and is reused.
    """
    vectors = np.empty((len(images), autoencoder.z_size), np.float32)
    errors = np.zeros(len(want))
    for start in range(0, len(images), _ENCODE_SLICE):
        pixels = images[start : start + _ENCODE_SLICE].astype(np.float32) / np.float32(255)
        z, vectors[start : start + len(pixels)] = autoencoder.embed(pixels, shifts)
        lo, hi = np.searchsorted(want, [start, start + len(pixels)])
        if hi > lo:
            rows = want[lo:hi] - start
            errors[lo:hi] = ((autoencoder.decode(z[rows]) - pixels[rows]) ** 2).mean(axis=(1, 2))
    return vectors, errors


def keep_freed_memory() -> None:
    """Let freed working arrays of up to 32 MB be reused from the heap, in this process (glibc only).

    Arrays above glibc's mmap threshold are mapped afresh on every allocation, and NumPy asks for
    transparent huge pages on them, so the kernel zeroes 2 MB pages for every working array:
    clearing pages was 35% of a folder build's encoding process (perf), and a Dask worker, whose
    nanny sets MALLOC_TRIM_THRESHOLD_=65536, encoded a chunk 1.6x slower than a plain process. With
    the mmap threshold at 32 MB and 64 MB of freed heap kept, the encoder's per-slice arrays
    (_ENCODE_SLICE images: at most 13 MB each) are allocated once and reused. A no-op elsewhere.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_trim_threshold, 64 << 20)


def stream_build(
    index_dir: str | Path,
    source: ChunkSource,
    checkpoint: Checkpoint,
    options: StreamOptions = StreamOptions(),
    *,
    encoder: Encoder | None = None,
    encoded: Callable[[Iterator], Iterator] | None = None,
    info: dict | None = None,
    log: Callable[[str], None] | None = print,
    skipped: Callable[[list], None] | None = None,
) -> dict:
    """Build the bundle at index_dir from source; resumes a build of the same source killed earlier.

    encoded: optional map over (chunk, want) pairs yielding (chunk, vectors, errors) in order (the
    distributed path); default: encoder (default: local_encoder) applied chunk by chunk.
    skipped: called once, before the index is built, with every item the source could not use
    (chunks' `skipped`, those found before a resume included).
    Returns the new bundle's manifest.
    """
    if options.chunk_size < 1:
        raise InvalidArgumentError(f"chunk_size must be positive, got {options.chunk_size}", parameter="chunk_size")
    if source.count < 2:
        raise InvalidArgumentError(f"{source.describe()}: an index needs at least 2 images")
    IndexSpec(options.index_type, options.metric, {}, options.transform)  # refuses a bad metric or transform
    _refuse_impossible_index(source.count, checkpoint.model_config.z_size, options)
    shifts = tuple(tuple(s) for s in options.shifts)
    key = hashlib.sha256(json.dumps([source.fingerprint, checkpoint.encoder_sha256, shifts]).encode()).hexdigest()
    with contextlib.ExitStack() as stack:
        if options.cluster is not None and encoded is None:
            from aesearch.pipelines.distributed import cluster_encoder

            encoded = stack.enter_context(
                cluster_encoder(options.cluster, checkpoint, shifts, log=log)
            )  # encodes; .fill
        writer = stack.enter_context(BundleWriter.create(index_dir, resume_key=key[:16]))
        try:
            return _build(writer, index_dir, source, checkpoint, options, shifts, encoder, encoded, info, log, skipped)
        except Exception:
            # An error (disk full, bad data) leaves nothing behind; an interruption (kill -9, Ctrl-C)
            # leaves the staging folder for the same command to resume.
            shutil.rmtree(writer.root, ignore_errors=True)
            raise


def _build(writer, index_dir, source, checkpoint, options, shifts, encoder, encoded, info, log, report) -> dict:
    writer.set_model(checkpoint)
    state = _State.load(writer.scratch("state.npz"), source.count, checkpoint.model_config.z_size, options.seed)
    # Sized for every item; cut to the images there are once the pass is done (here, or before a kill).
    segment = writer.new_segment(state.rows if state.done(source.count) else source.count, name=_SEGMENT)
    if state.rows + state.skipped and log:
        log(f"Resuming: {state.rows + state.skipped:,} of {source.count:,} items already read")
    if log:
        log(f"Encoding {source.describe()} in chunks of {options.chunk_size:,}")
    paths, skipped = _encode_pass(source, segment, state, writer, options,
                                  encoder or local_encoder(checkpoint, shifts), encoded)  # fmt: skip
    rows = state.rows
    if not state.done(source.count):
        read = rows + state.skipped
        raise InvalidArgumentError(f"{source.describe()} yielded {read:,} items, fewer than it announced")
    if report is not None:
        report(skipped)
    if rows < 2:
        example = f", e.g. {skipped[0].path}: {skipped[0].reason}" if skipped else ""
        raise InvalidArgumentError(
            f"{source.describe()}: {rows} could be used ({len(skipped):,} could not{example}): an index needs at "
            "least 2 readable images"
        )
    if segment.count > rows:
        segment.close()
        segment = writer.new_segment(rows, name=_SEGMENT)
    if paths is not None:
        segment.set_paths(paths)
    class_names = _prune_classes(segment, source) if getattr(source, "prune_classes", False) else None
    transform = _whitening(segment, source, state, options) if options.transform == "whiten" else None
    fill = getattr(encoded, "fill", None)
    index, choice, params = _index_pass(segment.embeddings, segment.file, transform, options, log, fill)
    trust = _trust(segment, state, index, transform, options)
    if transform is not None:
        np.savez(writer.space_file("transform.npz"), mean=transform.mean, matrix=transform.matrix)
    writer.space_file("trust.json").write_text(json.dumps(trust.to_dict()) + "\n")
    meta = {"index_type": choice.index_type, "index_params": params}
    writer.add_segment(segment, meta=meta)
    fields = {
        **source.info(),
        **({"class_names": class_names} if class_names is not None else {}),
        **(info or {}),
        "embedding_shifts": [list(s) for s in shifts],
        "metric": options.metric,
        "index_type": choice.index_type,
        "index_params": params,
        "index_choice": {
            "asked_for": options.index_type,  # "auto": a compaction chooses again for the size it finds
            "reason": choice.reason,
            "bytes_per_vector": params.get("bytes_per_vector"),
            "max_index_memory": options.max_index_memory or default_max_index_memory(rows),
        },
        "transform": options.transform,
        "model": {k: checkpoint.info.get(k) for k in ("recipe", "test_mse", "train_config", "data_fingerprint")},
    }
    manifest = writer.commit(fields)
    if log:
        log(
            f"Index written to {index_dir} ({manifest['count']:,} images, {choice.index_type}, {options.metric}, "
            f"{options.transform})"
        )
    return manifest


def _prune_classes(segment, source) -> list[str]:
    """The source's class names that label at least one image, the labels renumbered to match (in place)."""
    names = list(source.class_names or [])
    labels = segment.records["label"]
    used = np.zeros(len(names) + 1, dtype=bool)  # the last slot counts NO_LABEL (-1)
    for start in range(0, len(labels), _READ_BLOCK * 64):
        used[np.asarray(labels[start : start + _READ_BLOCK * 64])] = True
    kept = np.flatnonzero(used[:-1])
    if len(kept) < len(names):
        number = np.full(len(names) + 1, NO_LABEL, dtype=labels.dtype)
        number[kept] = np.arange(len(kept))
        for start in range(0, len(labels), _READ_BLOCK * 64):
            block = slice(start, start + _READ_BLOCK * 64)
            segment.records["label"][block] = number[np.asarray(labels[block])]
        segment.records.flush()
    release(segment.records)
    return [names[i] for i in kept]


def _refuse_impossible_index(n: int, z: int, options: StreamOptions) -> None:
    """The index's errors (a budget auto cannot meet, a factory string FAISS refuses for the search
    space) before the encoding pass, not after it: the count and the dimension are known already."""
    from aesearch.search.index import _new_index

    dim = min(options.whiten_dims or z, z) if options.transform == "whiten" else z
    if options.index_type == "auto":
        choose_index(n, dim, options.max_index_memory)
    else:
        _new_index(options.index_type, dim, n, {})


def _whitening(segment, source, state, options):
    """Up to _EXACT_FIT vectors to fit: AffineTransform.whitening on them, read back from disk (the very
    computation an in-memory build and a compaction make: the same space to the last bit); more: the
    streamed moments, which need no second pass and no memory beyond a z x z matrix."""
    from aesearch.search.index import AffineTransform

    if state.fitted > _EXACT_FIT:
        return state.whitening(options)
    split = np.asarray(segment.records["split"])
    rows = np.nonzero(split == source.fit_split)[0] if source.fit_split is not None else slice(None)
    vectors = np.asarray(segment.embeddings[rows])
    return AffineTransform.whitening(vectors, dims=options.whiten_dims, shrinkage=options.whiten_shrinkage)


def build_from_shards(
    index_dir: str | Path,
    folder: str | Path,
    *,
    model: str | Path | None,
    options: StreamOptions = StreamOptions(),
    log: Callable[[str], None] | None = print,
) -> dict:
    """`build-index --images DIR` for a shard folder (scripts/make_collection.py): streamed, with a given model."""
    from aesearch.model.checkpoint import load_checkpoint
    from aesearch.sources.shards import ShardSource

    if model is None:
        raise InvalidArgumentError(
            f"{folder} is a shard collection: pass --model CKPT (e.g. the Fashion-MNIST model); training on "
            "millions of images is not part of build-index"
        )
    return stream_build(index_dir, ShardSource(folder), load_checkpoint(model), options, log=log)


def faiss_write(index, path: Path) -> None:
    import faiss

    faiss.write_index(getattr(index, "index", index), str(path))


def _encode_pass(source, segment, state, writer, options, encoder, encoded) -> tuple[list | None, list]:
    """Every chunk encoded and written; returns the images' paths (None: none has one) and the items the
    source could not use (those of a resumed build's earlier run too)."""
    from tqdm.auto import tqdm

    def pending() -> Iterator:
        row = state.rows
        for chunk in source.chunks(options.chunk_size, start=state.cursor):
            want = state.calibration_rows(row, len(chunk))
            yield chunk, want
            row += len(chunk)

    results = encoded(pending()) if encoded else _one_ahead((c, *encoder(c.images, w)) for c, w in pending())
    paths = _LineLog(writer.scratch("paths.txt"), state.rows)
    skipped = _LineLog(writer.scratch("skipped.txt"), state.skipped)
    done = state.rows + state.skipped
    with tqdm(total=source.count, initial=done, desc="encoding", unit="img", disable=None, leave=False) as bar:
        for chunk, vectors, errors in results:
            rows = slice(state.rows, state.rows + len(chunk))
            records = new_records(len(chunk))
            records["id"] = np.arange(rows.start, rows.stop)
            for column, values in (("label", chunk.labels), ("split", chunk.split), ("position", chunk.positions),
                                   ("bytes", chunk.sizes), ("mtime_ns", chunk.mtimes_ns)):  # fmt: skip
                if values is not None:
                    records[column] = values
            records["content_hash"] = chunk.hashes if chunk.hashes is not None else pixel_hashes(chunk.images)
            segment.records[rows], segment.images[rows], segment.embeddings[rows] = records, chunk.images, vectors
            for array in (segment.records, segment.images, segment.embeddings):
                array.flush()  # on disk before the state says the chunk is done
                release(array)
            paths.append(chunk.paths or [""] * len(chunk))
            skipped.append(chunk.skipped or [])
            fit = (records["split"] == source.fit_split) if source.fit_split is not None else slice(None)
            state.add(vectors[fit], errors, chunk.cursor, len(chunk), len(chunk.skipped or []))
            state.save(writer.scratch("state.npz"))
            bar.update(len(chunk) + len(chunk.skipped or []))
    writer.manifest["next_id"] = state.rows  # ids 0..n-1, as allocate_ids would have given them
    return (paths.read(state.rows) if paths.any else None), skipped.read(state.skipped)


def _one_ahead(items: Iterator) -> Iterator:
    """items, with the next one computed on a helper thread while the caller handles this one.

    The encoder keeps every core busy only while it runs; writing a chunk, hashing its pixels and adding
    it to the whitening moments run on this thread in between (about a tenth of the encoding pass), and
    reading the next chunk from the source: with one chunk in flight the cores stay busy throughout.
    """
    done = object()
    with ThreadPoolExecutor(1, thread_name_prefix="encode-ahead") as helper:
        pending = helper.submit(next, items, done)
        while (item := pending.result()) is not done:
            pending = helper.submit(next, items, done)
            yield item


def _index_pass(embeddings: np.ndarray, segment_file, transform, options: StreamOptions, log, fill=None):
    """The index over the embeddings on disk: chosen, trained on a sample, filled, tuned.

    segment_file(name): where the segment's files go (the search vectors of a compressed index).
    """
    from aesearch.search import large
    from aesearch.search.index import TARGET_RECALL

    n = len(embeddings)

    def prepared(rows) -> np.ndarray:
        return _prepare(read_rows(embeddings, rows), options.metric, transform)

    dim = transform.matrix.shape[1] if transform is not None else embeddings.shape[1]
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
    trained_on = min(n, max(_TRAIN_SAMPLE, 39 * int(choice.params.get("nlist", 0))))
    sample = np.sort(rng.choice(n, size=trained_on, replace=False))
    # Probe queries for tuning, and their true neighbours, found in the same pass that adds the vectors:
    # preparing (whitening) every vector is a third of the index's cost, so it is done once.
    tuned = choice.index_type != "flat"
    own = np.sort(rng.choice(n, size=min(n, _PROBES), replace=False)) if tuned else None
    queries = prepared(own) if tuned else None
    truth = large.ExactNeighbours(queries, 11) if tuned else None

    # A compressed index re-ranks its candidates with their search-space vectors, kept on disk.
    kept = _open_search_vectors(segment_file(large.SEARCH_VECTORS_FILE), n, dim) if choice.compressed else None

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

    index = large.build_streamed(choice, dim, n, prepared(sample), chunks(), seed=options.seed, fill=add)
    params = {k: v for k, v in choice.params.items() if k != "target_recall"}  # _new_index adds its sizes
    if transform is not None:  # recorded as the in-memory build does: a compaction relearns the same space
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
    faiss_write(index, segment_file("index.faiss"))
    params["bytes_per_vector"] = round(segment_file("index.faiss").stat().st_size / n, 1)
    return index, choice, params


def release(array: np.ndarray) -> None:
    """Drop a memory map's pages from this process (they stay in the file and the page cache).

    Without it every page written or read stays mapped, and the build's resident set grows with the
    collection (20 GB of images and embeddings at ten million) although the kernel could drop them.
    """
    mapped = getattr(array, "_mmap", None) or getattr(getattr(array, "base", None), "_mmap", None)
    if mapped is not None and hasattr(mmap, "MADV_DONTNEED"):
        mapped.madvise(mmap.MADV_DONTNEED)


def _open_search_vectors(path: Path, n: int, dim: int) -> np.ndarray:
    return np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))


def read_rows(array: np.ndarray, rows: slice | np.ndarray) -> np.ndarray:
    """array[rows] of a memory map, a block at a time, each block's pages released after.

    Scattered rows (the training sample, re-ranking candidates while tuning) map the pages around
    each one that the page cache holds (64 KB): read at once, 160,000 sample rows mapped the whole
    file into the resident set (1.2 GB at a million, 12 GB at ten million).
    """
    if isinstance(rows, slice):
        found = np.array(array[rows])
        release(array)
        return found
    rows = np.asarray(rows)
    blocks = []
    for start in range(0, len(rows), _READ_BLOCK):
        blocks.append(np.asarray(array[rows[start : start + _READ_BLOCK]]))
        release(array)
    return np.concatenate(blocks) if blocks else np.asarray(array[rows])


def _trust(segment, state, index, transform, options):
    """The trust calibration: the sample's reconstruction errors, nearest-other distances of probes."""
    from aesearch.search.index import to_distance
    from aesearch.search.trust import calibrate

    n = len(segment.embeddings)
    rng = np.random.default_rng(options.seed + 2)
    probe = np.sort(rng.choice(n, size=min(3000, n), replace=False))
    queries = _prepare(read_rows(segment.embeddings, probe), options.metric, transform)
    # A few hundred at a time: IVF fast scan builds every query's lookup tables at once (nprobe x m x 16
    # bytes each: 1.2 GB for 3,000 queries at nprobe 256, m 96).
    answers = [index.search(queries[start : start + 500], 2) for start in range(0, len(queries), 500)]
    squared, rows = np.concatenate([a[0] for a in answers]), np.concatenate([a[1] for a in answers])
    distances = to_distance(squared, options.metric)
    nearest_other = np.where(rows[:, 0] == probe, distances[:, -1], distances[:, 0])
    encoded = state.sample < n  # the sample is drawn from the items: rows past the images it holds are not
    return calibrate(state.errors[encoded], nearest_other, read_rows(segment.images, state.sample[encoded]))


def _prepare(vectors: np.ndarray, metric: str, transform) -> np.ndarray:
    from aesearch.search.index import _prepare as prepare

    return prepare(np.asarray(vectors, dtype=np.float32), metric, transform)


class _LineLog:
    """Items of every chunk (paths, skipped files), one JSON value a line, appended to a scratch file.

    A resumed build keeps the first `kept` lines, those of the chunks its state records as done.
    """

    def __init__(self, path: Path, kept: int) -> None:
        self.path = path
        lines = self._lines()[:kept]
        self.any = any(json.loads(line) for line in lines)
        path.write_text("".join(f"{line}\n" for line in lines))

    def append(self, items: list) -> None:
        self.any = self.any or any(items)
        with open(self.path, "a") as f:
            f.write("".join(f"{json.dumps(_plain(item))}\n" for item in items))

    def read(self, count: int) -> list:
        return [_revive(json.loads(line)) for line in self._lines()[:count]]

    def _lines(self) -> list[str]:
        return self.path.read_text().splitlines() if self.path.exists() else []


def _plain(item):
    """A Skipped as [path, reason]; paths as they are."""
    return [item.path, item.reason] if hasattr(item, "reason") else item


def _revive(value):
    from aesearch.sources.folders import Skipped

    return Skipped(*value) if isinstance(value, list) else value


class _State:
    """What pass 1 has done: cursor, rows, whitening moments, the trust sample's errors."""

    def __init__(self, count: int, z: int, seed: int) -> None:
        rng = np.random.default_rng(seed + 3)
        self.sample = np.sort(rng.choice(count, size=min(count, _CALIBRATION_SAMPLE), replace=False))
        self.errors = np.full(len(self.sample), np.nan)
        self.cursor = self.rows = self.fitted = self.skipped = 0
        self.reference = np.zeros(z)  # moments are taken about the first chunk's mean: no cancellation
        self.total = np.zeros(z)
        self.outer = np.zeros((z, z))

    @classmethod
    def load(cls, path: Path, count: int, z: int, seed: int) -> _State:
        state = cls(count, z, seed)
        if path.exists():
            with np.load(path) as saved:
                state.cursor, state.rows, state.fitted = (int(saved[k]) for k in ("cursor", "rows", "fitted"))
                state.total, state.outer, state.errors = saved["total"], saved["outer"], saved["errors"]
                state.reference = saved["reference"]
                state.skipped = int(saved["skipped"]) if "skipped" in saved else 0
        return state

    def calibration_rows(self, start: int, n: int) -> np.ndarray:
        """Rows of a chunk starting at row `start` that belong to the trust sample (chunk-relative)."""
        lo, hi = np.searchsorted(self.sample, [start, start + n])
        return self.sample[lo:hi] - start

    def done(self, count: int) -> bool:
        """Every one of the source's count items read: encoded, or skipped as unusable."""
        return self.rows + self.skipped >= count

    def add(self, vectors: np.ndarray, errors: np.ndarray, cursor: int, n: int, skipped: int = 0) -> None:
        x = vectors.astype(np.float64)
        if self.fitted == 0 and len(x):
            self.reference = x.mean(axis=0)
        x -= self.reference
        self.total += x.sum(axis=0)
        self.outer += x.T @ x
        self.fitted += len(x)
        lo, hi = np.searchsorted(self.sample, [self.rows, self.rows + n])
        self.errors[lo:hi] = errors
        self.cursor, self.rows, self.skipped = cursor, self.rows + n, self.skipped + skipped

    def save(self, path: Path) -> None:
        partial = path.with_suffix(".partial.npz")
        np.savez(partial, cursor=self.cursor, rows=self.rows, fitted=self.fitted, skipped=self.skipped,
                 total=self.total, outer=self.outer, errors=self.errors, reference=self.reference)  # fmt: skip
        os.replace(partial, path)

    def whitening(self, options: StreamOptions):
        """PCA whitening from the moments: the same formula as AffineTransform.whitening."""
        from aesearch.search.index import AffineTransform

        n = self.fitted
        shifted = self.total / n
        covariance = (self.outer - n * np.outer(shifted, shifted)) / max(n - 1, 1)
        mean = shifted + self.reference
        variances, axes = np.linalg.eigh(covariance)
        order = np.argsort(variances)[::-1][: options.whiten_dims]
        variances, axes = np.maximum(variances[order], 0), axes[:, order]
        scale = 1 / np.sqrt(variances + options.whiten_shrinkage * variances[0] + 1e-12)
        return AffineTransform(mean.astype(np.float32), np.ascontiguousarray(axes * scale, dtype=np.float32))


__all__ = ["DEFAULT_CHUNK", "NO_LABEL", "StreamOptions", "encode_chunk", "local_encoder", "stream_build"]
