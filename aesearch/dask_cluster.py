"""How aesearch reaches a Dask cluster: a scheduler's address, `local`, or a Client the caller made.

Shared by the build's encoding (pipelines/distributed.py) and serving from shards
(search/cluster.py), so both accept the same addresses and say the same one line when there is
no cluster. Dask is imported only here, inside connect(): nothing else pays for it.
"""

from __future__ import annotations

import contextlib

from aesearch import defaults
from aesearch.errors import InvalidArgumentError, reason


def connect(address: object, stack: contextlib.ExitStack, *, instead: str = "leave cluster unset"):
    """A dask.distributed Client of the cluster at address, closed with stack; one line when there is none.

    address: "local" (a throwaway cluster of defaults.CLUSTER_LOCAL_WORKERS worker processes here),
    a scheduler's "HOST:PORT" / "tcp://HOST:PORT", or a Client (used as it is, not closed).
    instead: what the caller can do without a cluster, for the message when Dask is missing.
    """
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise InvalidArgumentError(
            f"cluster needs Dask: pip install 'aesearch[distributed]' (or {instead})", parameter="cluster"
        ) from None
    if isinstance(address, Client):
        client = address
    elif address == "local":
        cluster = stack.enter_context(
            LocalCluster(
                n_workers=defaults.CLUSTER_LOCAL_WORKERS, threads_per_worker=1, processes=True, dashboard_address=":0"
            )
        )
        client = stack.enter_context(Client(cluster))
    else:
        client = stack.enter_context(_connect(Client, address))
    if not workers(client):
        raise InvalidArgumentError(
            f"the Dask cluster at {client.scheduler.address} has no workers: start some with `dask worker`",
            parameter="cluster",
        )
    return client


def workers(client) -> list[str]:
    """The addresses of the cluster's workers, sorted.

    Asked of the scheduler each time (its `ncores` call): Client.scheduler_info() falls back, when the
    scheduler is slow to answer, to a cached summary whose "workers" is empty, which read as a
    cluster with no workers on a loaded machine."""
    return sorted(client.nthreads())


def _connect(client_class, address: object):
    """A Client of the scheduler at address, or one line saying why there is none."""
    if not isinstance(address, str) or ("://" not in address and ":" not in address):
        raise InvalidArgumentError(
            f"cluster {address!r} is not a scheduler address: give HOST:PORT (e.g. tcp://10.0.0.5:8786) or `local`",
            parameter="cluster",
        )
    try:
        return client_class(address, timeout=defaults.CLUSTER_CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as exc:
        raise InvalidArgumentError(
            f"cannot reach a Dask scheduler at {address} ({reason(exc)}): start one with `dask scheduler`, "
            "or pass cluster `local`",
            parameter="cluster",
        ) from None
