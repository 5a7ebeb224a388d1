"""The streaming build: any ChunkSource -> a bundle, in memory bounded by the chunk size, resumable.

    pass 1  each chunk is encoded and written straight into the segment's memory-mapped records,
            images and embeddings; the whitening's moments (sum and sum of outer products) are
            accumulated, and the reconstruction error of the trust calibration's sample is kept.
            After every chunk the maps are flushed and a small state file is replaced atomically:
            kill -9 loses at most the chunk in flight, and the same command resumes after the
            last finished one (BundleWriter.create(resume_key=...) keeps the staging folder).
    split   with options.segments > 1: the segment's last rows are moved, a range at a time from the
            end, into segments of their own (contiguous id ranges, as even as can be), the state
            file recording each step before the rows are cut from the first, so a kill resumes
            there; the disk holds at most one range twice
    pass 2  pipelines/builder.py's index_base, as a compaction's: the whitening (fitted on the
            vectors, or solved from the moments past builder.EXACT_FIT), the index (index_type
            auto: index_choice.py) trained on a sample and filled chunk by chunk from the
            embeddings on disk, tuned to a target recall@10 against an exact streamed scan, and
            the trust calibration.
Only chunks, the sample and the index itself are ever in memory. The encoder runs wherever
`encoded` says: in this process (the default), or on a Dask cluster (pipelines/distributed.py),
with identical vectors.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from aesearch import defaults
from aesearch.errors import InvalidArgumentError, ShortSourceError
from aesearch.memory import keep_freed_memory, release
from aesearch.model.architecture import ModelConfig
from aesearch.model.checkpoint import Checkpoint
from aesearch.pipelines.builder import (
    Encoder,
    Moments,
    StreamOptions,
    calibration_sample,
    encode_chunk,
    index_base,
    segment_options,
    split_bounds,
)
from aesearch.search.index import IndexSpec, check_index_type
from aesearch.search.index_choice import choose_index, default_max_index_memory
from aesearch.sources.chunks import ChunkSource
from aesearch.store.bundle import BundleWriter, builds_bundle
from aesearch.store.records import NO_LABEL, new_records, pixel_hashes

_SEGMENT = "base"
_LABEL_BLOCK = 1 << 17  # labels read and renumbered at a time (1 MB of records)


def local_encoder(checkpoint: Checkpoint, shifts: Sequence[Sequence[int]]) -> Encoder:
    """The encoder of this process (NumpyAutoEncoder on every core)."""
    from aesearch.model.runtime import NumpyAutoEncoder

    autoencoder = NumpyAutoEncoder.from_checkpoint(checkpoint)
    keep_freed_memory()
    return lambda images, want: encode_chunk(autoencoder, images, want, shifts)


@builds_bundle
def stream_build(
    index_dir: str | Path,
    source: ChunkSource,
    checkpoint: Checkpoint,
    options: StreamOptions | None = None,
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
    options: default StreamOptions(). Returns the new bundle's manifest.
    """
    options = options_for_model(options or StreamOptions(), checkpoint.model_config)
    if options.chunk_size < 1:
        raise InvalidArgumentError(f"chunk_size must be positive, got {options.chunk_size}", parameter="chunk_size")
    if source.count < 2:
        raise InvalidArgumentError(f"{source.describe()}: an index needs at least 2 images")
    check_build_options(source.count, checkpoint.model_config, options)
    shifts = tuple(tuple(s) for s in options.shifts)
    # A build split otherwise is another build (its split state differs); one base segment keeps the key it had.
    split = [options.segments] if options.segments != 1 else []
    key = [source.fingerprint, checkpoint.encoder_sha256, shifts, *split]
    key = hashlib.sha256(json.dumps(key).encode()).hexdigest()
    with contextlib.ExitStack() as stack:
        if options.cluster is not None and encoded is None:
            from aesearch.pipelines.distributed import cluster_encoder

            encoded = stack.enter_context(
                cluster_encoder(options.cluster, checkpoint, shifts, log=log)
            )  # encodes; .fill
        writer = stack.enter_context(BundleWriter.create(index_dir, resume_key=key[:16]))
        try:
            _build(writer, index_dir, source, checkpoint, options, shifts, encoder, encoded, info, log, skipped)
        except Exception:
            # An error (disk full, bad data) leaves nothing behind; an interruption (kill -9, Ctrl-C)
            # leaves the staging folder for the same command to resume.
            shutil.rmtree(writer.root, ignore_errors=True)
            raise
    from aesearch.quality.recall import record_recall

    return record_recall(index_dir, log)


def _build(writer, index_dir, source, checkpoint, options, shifts, encoder, encoded, info, log, report_skipped) -> dict:
    writer.set_model(checkpoint)
    state = _State.load(writer.scratch("state.npz"), source.count, checkpoint.model_config.vector_size, options.seed)
    # Sized for every item; cut to the images there are once the pass is done (here, or before a kill),
    # and to the first range once the split has moved the others out.
    first = state.first if state.first >= 0 else (state.rows if state.done(source.count) else source.count)
    segment = writer.new_segment(first, name=_SEGMENT)
    if state.rows + state.skipped and log:
        log(f"Resuming: {state.rows + state.skipped:,} of {source.count:,} items already read")
    if log:
        log(f"Encoding {source.describe()} in chunks of {options.chunk_size:,}")
    paths, skipped = _encode_pass(
        source, segment, state, writer, options, encoder or local_encoder(checkpoint, shifts), encoded
    )
    rows = state.rows
    if not state.done(source.count):
        read = rows + state.skipped
        raise ShortSourceError(
            f"{source.describe()} yielded {read:,} items, fewer than it announced: its files changed during the "
            "build; run it again"
        )
    if report_skipped is not None:
        report_skipped(skipped)
    if rows < 2:
        example = f", e.g. {skipped[0].path}: {skipped[0].reason}" if skipped else ""
        raise InvalidArgumentError(
            f"{source.describe()}: {rows} could be used ({len(skipped):,} could not{example}): an index needs at "
            "least 2 readable images"
        )
    if state.first < 0 and segment.count > rows:
        segment.close()
        segment = writer.new_segment(rows, name=_SEGMENT)
    count = min(options.segments, rows // defaults.MIN_IMAGES_PER_SEGMENT)
    if count < options.segments and log:
        log(f"{rows:,} images could be read: {count} base segments of at least {defaults.MIN_IMAGES_PER_SEGMENT}")
    bounds = split_bounds(rows, count)
    segments = _split(writer, segment, state, bounds, options.chunk_size, log)
    if paths is not None:
        for part, (lo, hi) in zip(segments, itertools.pairwise(bounds), strict=True):
            part.set_paths(paths[lo:hi])
    class_names = _prune_classes(segments, source) if getattr(source, "prune_classes", False) else None
    fit = None
    if source.fit_split is not None:
        fit = np.concatenate([np.asarray(part.records["split"]) == source.fit_split for part in segments])
        for part in segments:
            release(part.records)
    chosen = index_base(
        writer,
        segments,
        options,
        framing=checkpoint.model_config.framing,
        fit=fit,
        trust_sample=state.sample,
        trust_errors=state.errors,
        moments=state.moments,
        log=log,
        fill=getattr(encoded, "fill", None),
    )
    for part, (choice, params) in zip(segments, chosen, strict=True):
        # "base": a segment past the first that is no update's delta (pipelines/update.py's delta_numbers)
        base = {"base": True} if count > 1 else {}
        writer.add_segment(part, meta={"index_type": choice.index_type, "index_params": params, **base})
    choice, params = chosen[0]  # the bundle's: the first segment's (each records its own)
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
        **({"base_segments": options.segments} if options.segments != 1 else {}),  # a compaction keeps it
        "transform": options.transform,
        "model": {
            **{k: checkpoint.info.get(k) for k in ("recipe", "test_mse", "train_config", "data_fingerprint")},
            "config": checkpoint.model_config.to_dict(),  # its input and preprocessing contract, for a reader
        },
    }
    manifest = writer.commit(fields)
    if log:
        log(
            f"Index written to {index_dir} ({manifest['count']:,} images, {choice.index_type}, {options.metric}, "
            f"{options.transform})"
        )
    return manifest


def _prune_classes(segments, source) -> list[str]:
    """The source's class names that label at least one image, the labels renumbered to match (in place)."""
    names = list(source.class_names or [])
    used = np.zeros(len(names) + 1, dtype=bool)  # the last slot counts NO_LABEL (-1)
    for segment in segments:
        labels = segment.records["label"]
        for start in range(0, len(labels), _LABEL_BLOCK):
            used[np.asarray(labels[start : start + _LABEL_BLOCK])] = True
        release(segment.records)
    kept = np.flatnonzero(used[:-1])
    if len(kept) < len(names):
        number = np.full(len(names) + 1, NO_LABEL, dtype=np.int64)
        number[kept] = np.arange(len(kept))
        for segment in segments:
            labels = segment.records["label"]
            for start in range(0, len(labels), _LABEL_BLOCK):
                block = slice(start, start + _LABEL_BLOCK)
                segment.records["label"][block] = number[np.asarray(labels[block])]
            segment.records.flush()
            release(segment.records)
    return [names[i] for i in kept]


def check_segments(segments: object, count: int) -> int:
    """The number of base segments asked for, checked against the images there are: one line if wrong."""
    from aesearch.integers import check_int

    segments = check_int(segments, "segments", low=1, high=defaults.MAX_BASE_SEGMENTS)
    least = defaults.MIN_IMAGES_PER_SEGMENT
    if segments * least > count:
        raise InvalidArgumentError(
            f"segments {segments} is more than {count:,} images can fill ({least} at least each): give at most "
            f"{max(1, count // least)}",
            parameter="segments",
        )
    return segments


def _split(writer, segment, state, bounds: list[int], chunk_size: int, log) -> list:
    """The encoded rows as len(bounds) - 1 segments of rows bounds[i] to bounds[i + 1]: the last ranges
    copied out of the first segment one at a time from the end, each then cut from it (state.first
    saved before the cut, so a resumed build opens the first segment at the length it has left); a
    chunk of rows in memory at a time."""
    segments = [segment]
    for number in range(len(bounds) - 2, 0, -1):
        lo, hi = bounds[number], bounds[number + 1]
        part = writer.new_segment(hi - lo, name=f"{_SEGMENT}-{number}")
        if state.first < 0 or state.first > lo:  # not moved yet (or moved but not yet cut: moved again)
            if log and number == len(bounds) - 2:
                log(f"Splitting {bounds[-1]:,} images into {len(bounds) - 1} base segments")
            for start in range(lo, hi, chunk_size):
                rows = slice(start, min(hi, start + chunk_size))
                into = slice(rows.start - lo, rows.stop - lo)
                for name in ("records", "images", "embeddings"):
                    target = getattr(part, name)
                    target[into] = getattr(segment, name)[rows]
                    target.flush()  # on disk before the state says the range is moved
                    release(target)
                    release(getattr(segment, name))
            state.first = lo
            state.save(writer.scratch("state.npz"))
            segment.close()
            segment = writer.new_segment(lo, name=_SEGMENT)  # cut: the file keeps its first lo rows
        segments.insert(1, part)
    segments[0] = segment
    return segments


def options_for_model(options: StreamOptions, model_config: ModelConfig) -> StreamOptions:
    """The options as a build with this model applies them: its search layout, its embedding shifts
    unless given, and for a member with a prior the whitening's default width that makes the search
    vector 1,024 wide (826 prior numbers + 198: every PQ code size divides 1,024, none divides
    826 + 192 = 1,018)."""
    options = replace(options, layout=model_config.search_layout)
    if options.shifts is None:
        options = replace(options, shifts=model_config.default_shifts)
    if model_config.prior and options.whiten_dims == defaults.WHITEN_DIMS:
        options = replace(options, whiten_dims=min(model_config.z_size, 1024 - model_config.prior_size))
    return options


def check_build_options(n: int, model_config: ModelConfig, options: StreamOptions) -> None:
    """What a build of n images by this model refuses, before the encoding pass (and before a model
    is trained for them), not after it: the count and the dimension are known already."""
    IndexSpec(options.index_type, options.metric, {}, options.transform)  # refuses a bad metric or transform
    check_segments(options.segments, n)
    options = options_for_model(options, model_config)
    z_size = model_config.z_size  # what a whitening can keep: z, not a prior's parts
    asked = options.whiten_dims not in (None, defaults.WHITEN_DIMS)  # the default is a ceiling, for any z
    if options.transform == "whiten" and asked and options.whiten_dims > z_size:
        raise InvalidArgumentError(  # it kept all z_size axes silently, and recorded the number asked for
            f"`whiten_dims` {options.whiten_dims} is more than z's {z_size} components: give at most {z_size}",
            parameter="whiten_dims",
        )
    # The index's errors: a budget auto cannot meet, a factory string FAISS refuses for the search
    # space, or one with more lists or centroids than a base segment has vectors to train them.
    dim = min(options.whiten_dims or z_size, z_size) if options.transform == "whiten" else z_size
    dim += model_config.prior_size  # the prior's parts are searched as they are, beside z
    if options.index_type == "auto":  # the largest base segment, within its share of the budget
        each = segment_options(options, n, options.segments)
        choose_index(-(-n // options.segments), dim, each.max_index_memory)
    else:
        check_index_type(options.index_type, dim, n // options.segments)


@builds_bundle
def build_from_shards(
    index_dir: str | Path,
    folder: str | Path,
    *,
    model: str | Path | None,
    options: StreamOptions | None = None,
    log: Callable[[str], None] | None = print,
) -> dict:
    """`build-index --images DIR` for a shard folder (scripts/make_collection.py): streamed, with a given model."""
    from aesearch.model.checkpoint import load_checkpoint
    from aesearch.sources.shards import ShardSource

    if model is None:
        raise InvalidArgumentError(
            f"{folder} is a shard collection: pass model (a checkpoint, e.g. the Fashion-MNIST one); training on "
            "millions of images is not part of build-index",
            parameter="model",
        )
    return stream_build(index_dir, ShardSource(folder), load_checkpoint(model), options or StreamOptions(), log=log)


def _encode_pass(source, segment, state, writer, options, encoder, encoded) -> tuple[list | None, list]:
    """Every chunk encoded and written; returns the images' paths (None: none has one) and the items the
    source could not use (those of a resumed build's earlier run too)."""
    from tqdm.auto import tqdm

    def pending() -> Iterator:
        row = state.rows
        for chunk in source.chunks(options.chunk_size, start=state.cursor):
            if chunk.images.shape[1:] != segment.images.shape[1:]:  # before the encoder reads them wrongly
                raise InvalidArgumentError(
                    f"{source.describe()} holds images of {chunk.images.shape[1:]} pixels; the model reads "
                    f"{segment.images.shape[1:]}: preprocess them to its size, or use a model made for theirs"
                )
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
            for column, values in (
                ("label", chunk.labels),
                ("split", chunk.split),
                ("position", chunk.positions),
                ("bytes", chunk.sizes),
                ("mtime_ns", chunk.mtimes_ns),
            ):
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
        self.sample = calibration_sample(count, seed)
        self.errors = np.full(len(self.sample), np.nan)
        self.cursor = self.rows = self.skipped = 0
        self.first = -1  # rows the first segment keeps once the split has begun (-1: not split)
        self.moments = Moments(z)

    @classmethod
    def load(cls, path: Path, count: int, z: int, seed: int) -> _State:
        state = cls(count, z, seed)
        if path.exists():
            with np.load(path) as saved:
                state.cursor, state.rows, state.moments.fitted = (int(saved[k]) for k in ("cursor", "rows", "fitted"))
                state.moments.total, state.moments.outer = saved["total"], saved["outer"]
                state.moments.reference, state.errors = saved["reference"], saved["errors"]
                state.skipped = int(saved["skipped"]) if "skipped" in saved else 0
                state.first = int(saved["first"]) if "first" in saved else -1
        return state

    def calibration_rows(self, start: int, n: int) -> np.ndarray:
        """Rows of a chunk starting at row `start` that belong to the trust sample (chunk-relative)."""
        lo, hi = np.searchsorted(self.sample, [start, start + n])
        return self.sample[lo:hi] - start

    def done(self, count: int) -> bool:
        """Every one of the source's count items read: encoded, or skipped as unusable."""
        return self.rows + self.skipped >= count

    def add(self, vectors: np.ndarray, errors: np.ndarray, cursor: int, n: int, skipped: int = 0) -> None:
        self.moments.add(vectors)
        lo, hi = np.searchsorted(self.sample, [self.rows, self.rows + n])
        self.errors[lo:hi] = errors
        self.cursor, self.rows, self.skipped = cursor, self.rows + n, self.skipped + skipped

    def save(self, path: Path) -> None:
        partial = path.with_suffix(".partial.npz")
        m = self.moments
        np.savez(
            partial,
            cursor=self.cursor,
            rows=self.rows,
            fitted=m.fitted,
            skipped=self.skipped,
            first=self.first,
            total=m.total,
            outer=m.outer,
            errors=self.errors,
            reference=m.reference,
        )
        os.replace(partial, path)


__all__ = ["NO_LABEL", "StreamOptions", "build_from_shards", "encode_chunk", "local_encoder", "stream_build"]
