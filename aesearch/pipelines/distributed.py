"""`build-index --cluster ADDRESS | local`: the streaming build's encoding on a Dask cluster.

Why Dask, not Ray or Spark: measured here in local mode on the shared 2-core machine (README,
"Past one machine"), Dask's wheel set is ~24 MB against Ray's ~240 MB and PySpark's ~490 MB plus a
JVM, and a two-worker local cluster starts in about 2 s against Ray's ~5 s; and Dask's actors give
exactly the stateful encoder workers this needs. Nothing else changes: the same chunks, the same
encode_chunk, the same order, so the vectors (and the answers) are identical to a plain local run.

Each worker holds one EncoderActor: the model is shipped once and kept warm, and chunks stream to
the actors round-robin with a bounded number in flight (memory stays bounded by the chunk size).
Chunks travel to the workers and vectors back through Dask, so on a real cluster the collection
need not be on the workers' disks; the bundle is written by the client, as in a local build.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from aesearch.errors import InvalidArgumentError, reason
from aesearch.model.checkpoint import Checkpoint

LOCAL_WORKERS = 2
_IN_FLIGHT = 2  # chunks queued per worker: one computing, one arriving


class EncoderActor:
    """Lives on a worker: the NumpyAutoEncoder, built once from the checkpoint's weights."""

    def __init__(self, weights: dict, z_size: int, negative_slope: float, shifts: Sequence[Sequence[int]]) -> None:
        from aesearch.model.architecture import ModelConfig
        from aesearch.model.runtime import NumpyAutoEncoder

        self.autoencoder = NumpyAutoEncoder(weights, ModelConfig(z_size=z_size, negative_slope=negative_slope))
        self.shifts = [tuple(s) for s in shifts]

    def encode(self, images: np.ndarray, want: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from aesearch.pipelines.stream import encode_chunk

        return encode_chunk(self.autoencoder, images, want, self.shifts)


@contextlib.contextmanager
def cluster_encoder(
    address: str, checkpoint: Checkpoint, shifts: Sequence[Sequence[int]], *, log: Callable[[str], None] | None = None
) -> Iterator[Callable[[Iterator], Iterator]]:
    """A map over (chunk, want) pairs yielding (chunk, vectors, errors) in order, computed on the cluster."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise InvalidArgumentError(
            "--cluster needs Dask: pip install 'aesearch[distributed]' (or leave --cluster out to build here)"
        ) from None
    with contextlib.ExitStack() as stack:
        if address == "local":
            cluster = stack.enter_context(
                LocalCluster(n_workers=LOCAL_WORKERS, threads_per_worker=1, processes=True, dashboard_address=None)
            )
            client = stack.enter_context(Client(cluster))
        else:
            client = stack.enter_context(_connect(Client, address))
        workers = sorted(client.scheduler_info()["workers"])
        if not workers:
            raise InvalidArgumentError(f"the Dask cluster at {address} has no workers: start some with `dask worker`")
        if log:
            log(f"Encoding on the Dask cluster at {client.scheduler.address} ({len(workers)} workers)")
        config = checkpoint.model_config
        weights = {k: np.ascontiguousarray(v) for k, v in checkpoint.weights.items()}
        actors = [
            client.submit(EncoderActor, weights, config.z_size, config.negative_slope, [list(s) for s in shifts],
                          actor=True, workers=[w], pure=False).result()
            for w in workers
        ]  # fmt: skip

        def encoded(pairs: Iterator) -> Iterator:
            waiting: deque = deque()
            for number, (chunk, want) in enumerate(pairs):
                waiting.append((chunk, actors[number % len(actors)].encode(chunk.images, want)))
                if len(waiting) >= _IN_FLIGHT * len(actors):
                    done, future = waiting.popleft()
                    yield (done, *future.result())
            while waiting:
                done, future = waiting.popleft()
                yield (done, *future.result())

        yield encoded


def _connect(client_class, address: str):
    """A Client of the scheduler at address, or one line saying why there is none."""
    if "://" not in address and ":" not in address:
        raise InvalidArgumentError(
            f"--cluster {address!r} is not a scheduler address: give HOST:PORT (e.g. tcp://10.0.0.5:8786) or `local`"
        )
    try:
        return client_class(address, timeout="5s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise InvalidArgumentError(
            f"cannot reach a Dask scheduler at {address} ({reason(exc)}): start one with `dask scheduler`, "
            "or use --cluster local"
        ) from None
