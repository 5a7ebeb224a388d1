"""`serve --cluster ADDRESS | local`: a bundle's segments held by Dask workers, searched as one index.

Each worker holds one ShardActor; a shard is the whole segments placed on it (the one with the
fewest images takes the next). The client opens the bundle as usual (records, images, the model:
encoding stays here, torch-free) but reads no index: a query's search-space vectors go to every
shard at once, each searches each of its segments exactly as a single process does
(SegmentedIndex._merged over that one segment) and sends back its top k, and the client ranks the
segments' answers in segment order with the same stable sort. So the answers are the single
process's, ties included (tests/test_cluster_serving.py checks plain, batch and filtered queries
and removed rows against SearchEngine.load without a cluster). Why whole segments and not row
ranges: a re-ranked IVF+PQ proposes k x factor candidates per index searched; split in two, it
would re-rank twice as many and answer differently (better, but not the same), and an HNSW graph
cannot be split at all. The price: a bundle of one segment is served by one worker; a build with
`--segments N` (pipelines/builder.py's index_base) writes its base as N segments to spread.

Writes: SearchEngine.load(..., cluster=) asks Cluster.index() for the bundle's state; segments a
worker already holds are not sent again (a segment never changes once written), an add ships its
new segment, a remove ships only the removed rows' numbers. LiveEngine (search/live.py) does this
when the manifest changes, so the server follows `aesearch add`, `remove` and `sync`. A shard keeps
the parts of the last two states, so queries still answering from the old state are not cut off.

With replicas=N each segment is held by N shards: a query asks each segment of one of them (taking
turns), and of another if that one fails.

A shard that does not answer within defaults.CLUSTER_SHARD_TIMEOUT_S (its worker died or stalled),
holding segments no other copy answered for, makes the query fail with ShardsMissingError in one
line, or, for a Cluster made with allow_partial=True, answer from the others with
QueryResult.missing_shards naming what was left out: never a silent partial answer. The next
query ships the lost shard's segments to a live worker.

Nothing here imports Dask until a Cluster is made (dask_cluster.connect).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import shutil
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aesearch import defaults
from aesearch.dask_cluster import connect, workers
from aesearch.errors import AesearchError, ShardsMissingError, reason
from aesearch.integers import check_int
from aesearch.search.index import AffineTransform, IndexSpec, to_search_space
from aesearch.search.large import SEARCH_VECTORS_FILE
from aesearch.search.segments import INDEX_FILE, SegmentedIndex, Subset, index_spec, load_transform, read_part
from aesearch.store.bundle import Bundle

_IDS_FILE = "ids.npy"
_FAR = np.float32(np.finfo(np.float32).max)

# Within noting_missing_shards(): the shards a partial answer left out (None: partial answers are refused).
_missing: ContextVar[set[str] | None] = ContextVar("aesearch_missing_shards", default=None)
# Within one ShardedIndex search: each query row's missing shards, as the last search of that row left
# them (a row searched again, wider or exhaustively, keeps the answer of the later search).
_row_missing: ContextVar[list[set[str]] | None] = ContextVar("aesearch_row_missing_shards", default=None)


@contextlib.contextmanager
def noting_missing_shards() -> Iterator[set[str]]:
    """Searches inside may answer without shards that failed, if their Cluster allows partial answers;
    the set names those shards. Outside, a failed shard always raises ShardsMissingError."""
    found: set[str] = set()
    token = _missing.set(found)
    try:
        yield found
    finally:
        _missing.reset(token)


# --- on the workers ---


@dataclass
class _Received:
    """A segment as shipped to a worker: what read_part reads of a Segment."""

    folder: Path
    meta: dict
    ids: np.ndarray

    @property
    def count(self) -> int:
        return len(self.ids)

    @property
    def embeddings(self) -> np.ndarray:
        return np.load(self.folder / "embeddings.npy", mmap_mode="r", allow_pickle=False)

    def file(self, name: str) -> Path:
        return self.folder / name


class ShardActor:
    """Lives on a worker: the segments shipped to it, each searchable alone with its removed rows skipped."""

    def __init__(self) -> None:
        from distributed import get_worker

        # In the worker's own folder: Dask removes it when the worker stops, and a killed worker's
        # is purged when the next one starts there.
        self.root = Path(tempfile.mkdtemp(prefix="aesearch-shard-", dir=get_worker().local_directory))
        weakref.finalize(self, shutil.rmtree, self.root, True)
        self.folders: dict[str, Path] = {}  # segment key -> its received files
        self.parts: dict[str, SegmentedIndex] = {}  # part key (segment key # removed rows) -> one-part index
        self.plans: OrderedDict[tuple[str, str], Subset] = OrderedDict()  # (part, mask digest) -> plan

    def receive(self, segment: str, name: str, data: bytes, append: bool) -> None:
        folder = self.folders.get(segment)
        if folder is None:
            folder = self.folders[segment] = self.root / hashlib.sha1(segment.encode()).hexdigest()[:16]
            folder.mkdir(exist_ok=True)
        with open(folder / name, "ab" if append else "wb") as f:
            f.write(data)

    def open(self, part: str, segment: str, meta: dict, spec: dict, transform: tuple | None, removed) -> bool:
        """Make a received segment searchable with these rows skipped; True if its index can look wider."""
        if part not in self.parts:
            folder = self.folders[segment]
            received = _Received(folder, meta, np.load(folder / _IDS_FILE, allow_pickle=False))
            spec_, transform_ = IndexSpec(**spec), AffineTransform(*transform) if transform else None
            one = read_part(received, 0, spec_, transform_, np.asarray(removed, np.int64))
            self.parts[part] = SegmentedIndex([one], spec_, transform_, received.count - len(removed))
        return self.parts[part]._widens

    def keep(self, parts: list[str]) -> None:
        """Forget every part not named, and the files of segments no kept part reads."""
        self.parts = {key: index for key, index in self.parts.items() if key in set(parts)}
        used = {key.rsplit("#", 1)[0] for key in self.parts}
        for segment in [s for s in self.folders if s not in used]:
            shutil.rmtree(self.folders.pop(segment), ignore_errors=True)
        self.plans = OrderedDict((key, plan) for key, plan in self.plans.items() if key[0] in self.parts)

    def release(self) -> None:
        """Drop everything: the server is closing."""
        self.keep([])
        shutil.rmtree(self.root, ignore_errors=True)

    def plan(self, plans: list[tuple[str, str, np.ndarray, int]]) -> None:
        """Filter plans: (part, digest, mask packed little-endian, rows) each (SegmentedIndex.subset)."""
        for part, digest, packed, rows in plans:
            mask = np.unpackbits(packed, count=rows, bitorder="little").astype(bool)
            self.plans[(part, digest)] = self.parts[part].subset([mask])
        while len(self.plans) > max(defaults.CLUSTER_FILTER_PLANS, len(plans)):  # never the ones just sent
            self.plans.popitem(last=False)

    def search(self, jobs: list[tuple[str, str | None]], prepared: np.ndarray, k: int, options: dict) -> dict:
        """Each (part, filter digest or None) searched alone: {"answers": [(squared, ids) (n, k)],
        "replan": the jobs whose filter plan this shard no longer has, "seconds": time spent}."""
        started = time.perf_counter()
        answers, replan = [], []
        for number, (part, digest) in enumerate(jobs):
            subset = None
            if digest is not None:
                subset = self.plans.get((part, digest))
                if subset is None:
                    replan.append(number)
                    continue
                self.plans.move_to_end((part, digest))
            answers.append(self.parts[part]._merged(prepared, k, subset=subset, **options))
        return {"answers": answers, "replan": replan, "seconds": time.perf_counter() - started}


# --- on the client ---


@dataclass
class _Held:
    """A segment of the served state, as the client knows it (select() reads ids and number)."""

    number: int  # the bundle segment
    ids: np.ndarray
    key: str  # the part's key on the shards that hold it
    shards: tuple[int, ...]  # its holders: one, or --replicas of them


@dataclass
class _RemotePlan:
    """A filter's matches in one segment; the shard builds the plan itself from the mask."""

    rows: np.ndarray
    digest: str
    packed: np.ndarray
    length: int


@dataclass
class _Shard:
    number: int
    worker: str
    actor: object
    segments: dict[str, int] = field(default_factory=dict)  # segment key -> images
    lost: str | None = None  # why it stopped answering (None: it answers)


class Cluster:
    """The Dask workers a bundle is served from: one ShardActor per worker, each holding whole segments.

    >>> engine = SearchEngine.load("indexes/fm", cluster=Cluster("tcp://10.0.0.5:8786"))

    address: a scheduler's address, "local" (two worker processes here), or a dask Client.
    allow_partial: a query some shards cannot answer answers from the others, flagged
        (QueryResult.missing_shards), instead of failing.
    replicas: copies of each segment, on different workers (at most one a worker): a query takes
        each segment from one of them, turn about, and from another if that one fails.
    """

    def __init__(self, address: object, *, allow_partial: bool = False, replicas: int = 1) -> None:
        self.replicas = check_int(replicas, "replicas", low=1)
        self._stack = contextlib.ExitStack()
        self.client = connect(address, self._stack, instead="serve without a cluster")
        self.allow_partial = bool(allow_partial)
        self._turns = itertools.count()  # which replica answers: taking turns spreads concurrent queries
        self._lock = threading.RLock()
        self._segments: dict[str, object] = {}  # segment key -> the Segment to ship it from again
        self._opened: dict[str, tuple] = {}  # part key -> ShardActor.open's arguments
        self._states: list[list[str]] = []  # part keys of the last two states served
        self._healed_at = 0.0
        self.last_seconds: dict[int, float] = {}  # each shard's own time on the last search (bench_cluster.py)
        try:
            self.shards = [_Shard(n, w, self._actor(w)) for n, w in enumerate(workers(self.client))]
        except Exception as exc:
            self.close()
            raise ShardsMissingError(
                f"cannot start shards on the Dask cluster at {address} ({reason(exc)}): check its workers "
                "(`dask worker SCHEDULER`), or serve without a cluster"
            ) from None

    @property
    def address(self) -> str:
        return self.client.scheduler.address

    def close(self) -> None:
        """The workers drop their shards (and files), then the connection (and a local cluster) closes."""
        for shard in getattr(self, "shards", []):
            with contextlib.suppress(Exception):  # a dead worker has nothing left to drop
                if not shard.lost:
                    shard.actor.release().result(timeout=defaults.CLUSTER_SHARD_TIMEOUT_S)
        self._stack.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Cluster({self.address!r}: {len(self.shards)} shards)"

    def status(self) -> dict:
        """The scheduler, and each shard's worker, images and state (what `/api/health` shows)."""
        shards = [
            {"worker": s.worker, "images": sum(s.segments.values()), "segments": len(s.segments), "lost": s.lost}
            for s in self.shards
        ]
        return {"scheduler": self.address, "allow_partial": self.allow_partial, "shards": shards}

    def index(self, bundle: Bundle) -> ShardedIndex:
        """The bundle's live images as one index: segments no shard holds yet are shipped first."""
        spec, transform = index_spec(bundle.manifest), load_transform(bundle)
        arrays = (transform.mean, transform.matrix, transform.layout) if transform is not None else None
        # A part is a segment searched in this space with these rows removed: any of them new, a new part.
        space = _digest(repr(spec.to_dict()).encode(), *(np.asarray(a).tobytes() for a in arrays or ()))
        with self._lock:
            self._heal()
            held, widens = [], False
            for number, segment in enumerate(bundle.segments):
                if not segment.count:
                    continue
                key = _segment_key(segment)
                holders = [s for s in self.shards if key in s.segments and not s.lost]
                while len(holders) < min(self.replicas, sum(not s.lost for s in self.shards)):
                    holders.append(self._ship(segment, key, exclude=holders))
                if not holders:
                    raise ShardsMissingError(self.describe({s.number: s.lost or "" for s in self.shards}))
                removed = bundle.dead_rows(number)
                part = f"{key}#{_digest(space, removed.tobytes())}"
                self._opened[part] = (part, key, segment.meta, spec.to_dict(), arrays, removed)
                for shard in holders:
                    widens |= self._call(shard, "open", *self._opened[part])
                held.append(_Held(number, np.asarray(segment.ids), part, tuple(h.number for h in holders)))
            self._states = [*self._states[-1:], [h.key for h in held]]
            kept = {key for state in self._states for key in state}
            used = {key.rsplit("#", 1)[0] for key in kept}  # the segments they read
            self._opened = {key: args for key, args in self._opened.items() if key in kept}
            for shard in self.shards:
                if not shard.lost:
                    self._call(shard, "keep", [key for key in kept if key.rsplit("#", 1)[0] in shard.segments])
                    shard.segments = {s: n for s, n in shard.segments.items() if s in used}
            self._segments = {key: segment for key, segment in self._segments.items() if key in used}
        dim = bundle.manifest["z_size"]
        return ShardedIndex(self, held, spec, transform, len(bundle), widens=widens, dim=dim)

    def search(self, index: ShardedIndex, prepared: np.ndarray, k: int, subset: Subset | None, options: dict):
        """Every part's answer ({position in index.parts: (squared, ids)}), and the shards whose parts
        no shard answered ({shard number: why}). Each part is asked of one of its holders (taking turns
        between queries); a part whose holder fails is asked of the next replica, in the same time."""
        if any(s.lost for s in self.shards):
            self._heal()
        wanted = [at for at in range(len(index.parts)) if subset is None or subset.plans[at] is not None]
        deadline = time.monotonic() + defaults.CLUSTER_SHARD_TIMEOUT_S
        deadline += len(prepared) * defaults.CLUSTER_SHARD_TIMEOUT_PER_QUERY_S
        turn, count = next(self._turns), len(self.shards)
        answers: dict[int, tuple] = {}
        seconds: dict[int, float] = {}
        waves = max((len(part.shards) for part in index.parts), default=0)
        for wave in range(waves):
            jobs: dict[int, list[int]] = {}
            for at in wanted:
                live = [h for h in index.parts[at].shards if not self.shards[h].lost]
                if at not in answers and live:  # the same turn for every part: whole queries on one shard
                    jobs.setdefault(min(live, key=lambda h: (h - turn) % count), []).append(at)
            if not jobs:
                break
            # A stalled copy may take only its share of the time: the next copy gets the rest.
            until = time.monotonic() + (deadline - time.monotonic()) / (waves - wave)
            self._ask(jobs, index, prepared, k, subset, options, until, answers, seconds)
        self.last_seconds = seconds
        missing = {
            h: self.shards[h].lost or "lost" for at in wanted if at not in answers for h in index.parts[at].shards
        }
        return answers, missing

    def _ask(self, jobs, index, prepared, k, subset, options, deadline, answers, seconds) -> None:
        """Each shard its parts (jobs: shard -> positions in index.parts), at once; answers and
        seconds filled in, a shard that fails marked lost."""

        def requests(ats: list[int]) -> list:
            return [(index.parts[at].key, subset.plans[at].digest if subset else None) for at in ats]

        def left() -> float:
            return max(0.001, deadline - time.monotonic())

        def collected(future):
            # An answer already here is only handed over by Dask's event loop, which a loaded machine
            # can keep busy for longer than the deadline leaves (once a stalled shard has used it up):
            # it gets a shard's whole time, so an answer in time is never counted as missing.
            return future.result(timeout=defaults.CLUSTER_SHARD_TIMEOUT_S if future.done() else left())

        wait = left()

        pending = {}
        for number, ats in jobs.items():
            shard = self.shards[number]
            try:
                pending[number] = shard.actor.search(requests(ats), prepared, k, options)
            except Exception as exc:  # Dask knows the worker is gone
                shard.lost = reason(exc)
        for number, future in pending.items():
            shard, ats = self.shards[number], jobs[number]
            try:
                reply = collected(future)
                if reply["replan"]:  # a filter new to this shard, or one it dropped: send it, ask again
                    plans = [subset.plans[ats[i]] for i in reply["replan"]]
                    keys = [index.parts[ats[i]].key for i in reply["replan"]]
                    packed = [(key, p.digest, p.packed, p.length) for key, p in zip(keys, plans, strict=True)]
                    shard.actor.plan(packed).result(timeout=left())
                    reply = shard.actor.search(requests(ats), prepared, k, options).result(timeout=left())
                    assert not reply["replan"], "a plan just sent was dropped"
            except Exception as exc:  # whatever Dask raises for a dead or silent worker: the shard is lost
                late = deadline - time.monotonic() <= 0.01
                shard.lost = f"no answer in {wait:.1f} s" if late else reason(exc)
                continue
            seconds[number] = reply["seconds"]
            answers.update(zip(ats, reply["answers"], strict=True))

    def describe(self, missing: dict[int, str]) -> str:
        """One line: which shards did not answer, why, and what to do."""
        shards = "; ".join(
            f"shard {n} on {self.shards[n].worker}, {sum(self.shards[n].segments.values()):,} images: {why}"
            for n, why in sorted(missing.items())
        )
        return (
            f"{len(missing)} of {len(self.shards)} shards did not answer ({shards}): their worker died or stalled; "
            "the next query ships their segments to a live worker; start more with `dask worker "
            f"{self.address}`, or allow partial answers (--allow-partial) to answer from the other shards"
        )

    # --- placement ---

    def _actor(self, worker: str, timeout: float = defaults.CLUSTER_SHARD_TIMEOUT_S * 10):
        return self.client.submit(ShardActor, actor=True, workers=[worker], pure=False).result(timeout=timeout)

    def _ship(self, segment, key: str, shard: _Shard | None = None, *, exclude: Sequence[_Shard] = ()) -> _Shard:
        """Send a segment's files to a shard (default: the live one holding the fewest images, not excluded)."""
        if shard is None:
            live = [s for s in self.shards if not s.lost and s not in exclude]
            shard = min(live, key=lambda s: (sum(s.segments.values()), s.number))
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(segment.ids, np.int64))
        names = [INDEX_FILE, SEARCH_VECTORS_FILE if segment.file(SEARCH_VECTORS_FILE).exists() else "embeddings.npy"]
        for name, source in [(_IDS_FILE, None), *((n, segment.file(n)) for n in names)]:
            with open(source, "rb") if source else contextlib.nullcontext(io.BytesIO(buffer.getvalue())) as f:
                append = False
                while chunk := f.read(defaults.CLUSTER_SHIP_CHUNK_BYTES):
                    self._call(shard, "receive", key, name, chunk, append)
                    append = True
        shard.segments[key] = segment.count
        self._segments[key] = segment
        return shard

    def _heal(self) -> None:
        """Lost shards' segments shipped again, to a new actor on a live worker (at most once a second)."""
        with self._lock:
            if time.monotonic() - self._healed_at < 1.0 or not any(s.lost for s in self.shards):
                return
            self._healed_at = time.monotonic()
            live = workers(self.client)
            for shard in [s for s in self.shards if s.lost]:
                answering = {s.worker for s in self.shards if not s.lost}
                # Not its own worker (dead, or stalled: it may still be listed); a fresh one, or, when
                # some of its segments have no other copy, one that answers (two shards there).
                others = [s for s in self.shards if not s.lost and s is not shard]
                covered = all(any(key in s.segments for s in others) for key in shard.segments)
                choices = [w for w in live if w != shard.worker and w not in answering]
                choices = choices or ([] if covered else [w for w in live if w != shard.worker])
                if not choices:
                    continue
                current = set(self._states[-1]) if self._states else set()  # the state served now
                try:
                    # Filled aside, swapped in whole: a query meanwhile still finds it lost, not half-filled.
                    fresh = _Shard(shard.number, choices[0], self._actor(choices[0], defaults.CLUSTER_SHARD_TIMEOUT_S))
                    for key in shard.segments:
                        if any(part.rsplit("#", 1)[0] == key for part in current):
                            self._ship(self._segments[key], key, fresh)
                    for part, args in self._opened.items():
                        if part in current and args[1] in fresh.segments:
                            self._call(fresh, "open", *args)
                except Exception as exc:  # the new worker failed too: try again at a later query
                    shard.lost = reason(exc)
                    continue
                shard.actor, shard.worker, shard.segments, shard.lost = fresh.actor, fresh.worker, fresh.segments, None

    def _call(self, shard: _Shard, method: str, *args):
        """One call to a shard's actor, waited for (placement and shipping, not queries); a shard that
        fails is lost (the next query or reload moves it) and the caller gets one line."""
        try:
            return getattr(shard.actor, method)(*args).result(timeout=defaults.CLUSTER_SHARD_TIMEOUT_S * 20)
        except AesearchError:
            raise  # the shard's own one line (a shipped file FAISS cannot read, say)
        except Exception as exc:  # whatever Dask raises for a dead or silent worker
            shard.lost = reason(exc)
            raise ShardsMissingError(self.describe({shard.number: shard.lost})) from None


class ShardedIndex(SegmentedIndex):
    """A SegmentedIndex whose segments are searched by a Cluster's shards: the same answers, computed there."""

    def __init__(
        self,
        cluster: Cluster,
        held: list[_Held],
        spec: IndexSpec,
        transform: AffineTransform | None,
        count: int,
        *,
        widens: bool,
        dim: int,
    ) -> None:
        super().__init__([], spec, transform, count)
        self.parts = held  # each with the ids and bundle segment number engine.select() reads
        self.cluster, self._widens, self._dim = cluster, widens, dim

    @property
    def dim(self) -> int:
        return self._dim

    def search_space(self, vectors: np.ndarray) -> np.ndarray:
        return to_search_space(vectors, self.spec.metric, self.transform)

    def subset(self, masks: list[np.ndarray]) -> Subset:
        """A filter's matches per segment; each shard makes its plans from the masks (at the first query)."""
        plans, count = [], 0
        for part in self.parts:
            mask = masks[part.number]
            rows = np.flatnonzero(mask)
            count += len(rows)
            if not len(rows):
                plans.append(None)
                continue
            packed = np.packbits(mask, bitorder="little")
            digest = hashlib.blake2b(packed.tobytes(), digest_size=12).hexdigest()
            plans.append(_RemotePlan(rows, digest, packed, len(mask)))
        return Subset(plans, count)

    def _search_prepared(self, prepared: np.ndarray, k: int, subset: Subset | None = None):
        """SegmentedIndex's search; where partial answers are allowed, the shards flagged missing are
        those missing from the searches whose answers the rows keep: a first search without a lost
        shard, searched again once its segments moved, is complete (it was flagged all the same)."""
        flags = _missing.get()
        if flags is None:
            return super()._search_prepared(prepared, k, subset)
        rows = [set() for _ in range(len(prepared))]
        token = _row_missing.set(rows)
        try:
            answer = super()._search_prepared(prepared, k, subset)
        finally:
            _row_missing.reset(token)
        flags.update(*rows)
        return answer

    def _merged_rows(self, prepared: np.ndarray, rows: np.ndarray | None, k: int, **options):
        noted = _row_missing.get()
        if noted is None:
            return super()._merged_rows(prepared, rows, k, **options)
        with noting_missing_shards() as missing:  # this search's own
            answer = super()._merged_rows(prepared, rows, k, **options)
        for row in range(len(noted)) if rows is None else rows:
            noted[row] = set(missing)
        return answer

    def _merged(self, prepared: np.ndarray, k: int, *, subset: Subset | None = None, **options):
        """The segments' answers from the shards, ranked as SegmentedIndex._merged ranks its parts'."""
        answers, missing = self.cluster.search(self, prepared, k, subset, options)
        if missing:
            flags = _missing.get()
            if flags is None or not self.cluster.allow_partial:
                raise ShardsMissingError(self.cluster.describe(missing))
            flags.update(f"shard {n} ({self.cluster.shards[n].worker})" for n in missing)
        return ranked([answers[at] for at in sorted(answers)], len(prepared), k)


def ranked(answers: list[tuple[np.ndarray, np.ndarray]], n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Answers of segments, in segment order, as one ranking: (squared, ids) (n, k). A stable sort of
    their concatenation, as SegmentedIndex._merged's, so equal distances keep the same order."""
    if not answers:
        return np.full((n, k), _FAR, np.float32), np.full((n, k), -1, np.int64)
    squared = np.concatenate([a[0] for a in answers], axis=1)
    ids = np.concatenate([a[1] for a in answers], axis=1)
    order = np.argsort(squared, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(squared, order, 1), np.take_along_axis(ids, order, 1)


def _digest(*chunks: bytes | str) -> str:
    h = hashlib.blake2b(digest_size=8)
    for chunk in chunks:
        h.update(chunk.encode() if isinstance(chunk, str) else chunk)
    return h.hexdigest()


def _segment_key(segment) -> str:
    """A segment never changes once written; its folder and index file's identity name this state of it."""
    stat = segment.file(INDEX_FILE).stat()
    return f"{segment.folder}:{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}"
