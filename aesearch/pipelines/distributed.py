"""`build-index --cluster ADDRESS | local`: the streaming build's encoding on a Dask cluster.

Why Dask, not Ray or Spark: measured here in local mode on the shared 2-core machine (docs/scale.md,
"Past one machine"), Dask's wheel set is ~24 MB against Ray's ~240 MB and PySpark's ~490 MB plus a
JVM, and a two-worker local cluster starts in about 2 s against Ray's ~5 s; and Dask's actors give
exactly the stateful encoder workers this needs. Nothing else changes: the same chunks, the same
encode_chunk, the same order, so the vectors (and the answers) are identical to a plain local run.

Each worker holds one EncoderActor: the model is shipped once and kept warm, and chunks stream to
the actors round-robin with a bounded number in flight (memory stays bounded by the chunk size).
Chunks travel to the workers and vectors back through Dask, so on a real cluster the collection
need not be on the workers' disks; the bundle is written by the client, as in a local build. The
IVF is trained once on a sample by the client; the workers then add one contiguous range of rows
each to copies of it, and the client merges the shards in row order (ClusterSession.fill).
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from aesearch.dask_cluster import connect
from aesearch.dask_cluster import workers as dask_workers
from aesearch.model.checkpoint import Checkpoint

_IN_FLIGHT = 2  # chunks queued per worker: one computing, one arriving


class EncoderActor:
    """Lives on a worker: the NumpyAutoEncoder, built once from the checkpoint's weights."""

    def __init__(self, weights: dict, config: dict, shifts: Sequence[Sequence[int]]) -> None:
        from aesearch.memory import keep_freed_memory
        from aesearch.model.architecture import ModelConfig
        from aesearch.model.runtime import NumpyAutoEncoder

        keep_freed_memory()  # also undoes the allocator setting Dask's nanny gives its workers
        self.autoencoder = NumpyAutoEncoder(weights, ModelConfig.from_dict(config))  # its input shape included
        self.shifts = [tuple(s) for s in shifts]

    def encode(self, images: np.ndarray, want: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from aesearch.pipelines.builder import encode_chunk

        return encode_chunk(self.autoencoder, images, want, self.shifts)

    # A shard of the index: a copy of the trained, empty IVF, filled with a contiguous range of rows.
    def start_shard(self, trained: np.ndarray, first: int) -> None:
        import faiss

        self.shard, self.next_row = faiss.deserialize_index(trained), first

    def add(self, vectors: np.ndarray) -> None:
        self.shard.add_with_ids(vectors, np.arange(self.next_row, self.next_row + len(vectors), dtype=np.int64))
        self.next_row += len(vectors)

    def finish_shard(self) -> np.ndarray:
        import faiss

        blob, self.shard = faiss.serialize_index(self.shard), None
        return blob


class ClusterSession:
    """What the streaming build does on the cluster: encode chunks (call it), fill an IVF (fill())."""

    def __init__(self, actors: list) -> None:
        self.actors = actors

    def __call__(self, pairs: Iterator) -> Iterator:
        """(chunk, want) pairs -> (chunk, vectors, errors), in order, chunks round-robin over the actors."""
        waiting: deque = deque()
        for number, (chunk, want) in enumerate(pairs):
            waiting.append((chunk, self.actors[number % len(self.actors)].encode(chunk.images, want)))
            if len(waiting) >= _IN_FLIGHT * len(self.actors):
                done, future = waiting.popleft()
                yield (done, *future.result())
        while waiting:
            done, future = waiting.popleft()
            yield (done, *future.result())

    def fill(self, index, n: int, vectors_of: Callable[[slice], np.ndarray], chunk_size: int):
        """FAISS's recipe for big IVFs: the trained index copied to every worker, each adds one contiguous
        range of rows, and the shards are merged in row order (so each list holds its vectors in the
        order a single add gives). None when index is not a plain IVF (the caller adds here)."""
        import faiss

        if not isinstance(faiss.downcast_index(index), faiss.IndexIVF) or len(self.actors) < 2:
            return None
        trained = faiss.serialize_index(index)
        bounds = np.linspace(0, n, len(self.actors) + 1).astype(int)

        def run(w: int) -> np.ndarray:
            actor, (lo, hi) = self.actors[w], bounds[w : w + 2]
            actor.start_shard(trained, int(lo)).result()
            for start in range(lo, hi, chunk_size):
                actor.add(vectors_of(slice(start, min(hi, start + chunk_size)))).result()
            return actor.finish_shard().result()

        with ThreadPoolExecutor(len(self.actors)) as pool:
            shards = list(pool.map(run, range(len(self.actors))))
        merged = faiss.deserialize_index(shards[0])  # not downcast: the downcast proxy would not own it
        for blob in shards[1:]:
            merged.merge_from(faiss.deserialize_index(blob), 0)  # ids were given at add: keep them
        return merged


@contextlib.contextmanager
def cluster_encoder(
    address: str, checkpoint: Checkpoint, shifts: Sequence[Sequence[int]], *, log: Callable[[str], None] | None = None
) -> Iterator[ClusterSession]:
    """A session on the cluster: encoding of the build's chunks, and filling of its IVF index."""
    with contextlib.ExitStack() as stack:
        client = connect(address, stack, instead="leave cluster unset to build here")
        workers = dask_workers(client)
        if log:
            log(f"Encoding on the Dask cluster at {client.scheduler.address} ({len(workers)} workers)")
        config = checkpoint.model_config
        weights = {k: np.ascontiguousarray(v) for k, v in checkpoint.weights.items()}
        actors = [
            client.submit(
                EncoderActor, weights, config.to_dict(), [list(s) for s in shifts], actor=True, workers=[w], pure=False
            ).result()
            for w in workers
        ]

        yield ClusterSession(actors)
