"""Serving from shards on a local two-worker Dask cluster: the answers of one process, writes followed,
and a worker that dies or stalls reported in one line (or flagged, when partial answers are allowed)."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import make_bundle, synthetic_images, tiny_checkpoint

from aesearch.dask_cluster import workers
from aesearch.errors import InvalidArgumentError, ShardsMissingError
from aesearch.pipelines.stream import StreamOptions, stream_build
from aesearch.pipelines.writer import Collection
from aesearch.search.engine import SearchEngine
from aesearch.sources.arrays import ArraySource
from aesearch.store.bundle import load_bundle

distributed = pytest.importorskip("dask.distributed")

from aesearch.search.cluster import Cluster, ShardActor  # noqa: E402  (needs Dask only to be used)

QUERIES = synthetic_images(24, seed=9)


@pytest.fixture(scope="module")
def client():
    """Two in-process workers (threads): starts in a fraction of a second; the actors run as on a real cluster."""
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as lc,
        distributed.Client(lc) as client,
    ):
        client.wait_for_workers(2, timeout=30)
        yield client


@pytest.fixture
def deltas_only(monkeypatch):
    """Updates write delta segments and tombstones, never a compaction: several segments to shard."""
    monkeypatch.setattr("aesearch.pipelines.drift.RELEARN_EVERY_SYNC_MAX", 0)
    monkeypatch.setattr("aesearch.pipelines.update.COMPACT_FRACTION", float("inf"))


def build_segmented(path, kind: str):
    """A base segment, two deltas and removed rows (some in the base, some in a delta)."""
    patch = pytest.MonkeyPatch()
    patch.setattr("aesearch.pipelines.drift.RELEARN_EVERY_SYNC_MAX", 0)
    patch.setattr("aesearch.pipelines.update.COMPACT_FRACTION", float("inf"))
    patch.setattr("aesearch.pipelines.drift.MIN_OVERLAP", 0.0)  # a whitened space would be relearned
    if kind == "ivf":
        make_bundle(path, n=400, index_type="ivf")
    elif kind == "reranked":  # the streamed build's IVF+PQ, re-ranked against stored search vectors
        images = np.resize(synthetic_images(400, seed=5), (1200, 28, 28))
        noisy = np.clip(images.astype(int) + np.random.default_rng(1).integers(0, 40, images.shape), 0, 255)
        options = StreamOptions(whiten_dims=32, shifts=((0, 0),), chunk_size=100, max_index_memory=1200 * 100)
        stream_build(path, ArraySource(noisy.astype(np.uint8)), tiny_checkpoint(), options, log=None)
        assert load_bundle(path).segments[0].meta["index_params"]["rerank_factor"] > 1
    else:
        make_bundle(path, n=300, metric="cosine", transform="whiten")
    collection = Collection.open(path)
    added = collection.add(synthetic_images(90, seed=3))
    collection.add(synthetic_images(60, seed=4))
    collection.remove([1, 5, 7, int(added[0]), int(added[10])])
    patch.undo()
    return path


@pytest.fixture(scope="module", params=["ivf", "flat-cosine-whiten", "reranked"])
def segmented(request, tmp_path_factory):
    return build_segmented(tmp_path_factory.mktemp("segmented") / request.param, request.param)


@pytest.fixture(scope="module")
def ivf_segmented(tmp_path_factory):
    return build_segmented(tmp_path_factory.mktemp("segmented") / "ivf", "ivf")


def assert_same(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> None:
    np.testing.assert_array_equal(a[1], b[1])  # ids, in the same order (ties included)
    np.testing.assert_array_equal(a[0], b[0])  # distances, bit for bit


def test_answers_equal_one_process(segmented, client):
    plain = SearchEngine.load(segmented)
    with Cluster(client) as cluster:
        sharded = SearchEngine.load(segmented, cluster=cluster)
        assert len({part.shards[0] for part in sharded.index.parts}) == 2, "both workers hold segments"
        vectors = plain.encode(QUERIES)
        for k in (1, 10, len(plain)):  # len: every live image, through the exhaustive fallback
            assert_same(plain.search(vectors, k), sharded.search(vectors, k))
        assert_same(plain.search(vectors[:1], 10), sharded.search(vectors[:1], 10))
        labels = ["label = ring", "label != ring"] if plain.bundle.class_names else []
        for where in [*labels, [0, 2, 3, 350, 402], "id < 3", "id >= 20", "id >= 1150"]:
            assert_same(plain.search(vectors, 5, where=where), sharded.search(vectors, 5, where=where))
        expected, got = plain.query_batch(QUERIES[:6], 8), sharded.query_batch(QUERIES[:6], 8)
        assert [r.to_dict() for r in expected] == [r.to_dict() for r in got]
        assert not any(r.missing_shards for r in got)
        assert plain.select("id >= 20").ids.tolist() == sharded.select("id >= 20").ids.tolist()


def test_a_shard_that_dropped_a_filter_plan_gets_it_again(segmented, client, monkeypatch):
    monkeypatch.setattr("aesearch.defaults.CLUSTER_FILTER_PLANS", 1)
    plain = SearchEngine.load(segmented)
    with Cluster(client) as cluster:
        sharded = SearchEngine.load(segmented, cluster=cluster)
        vectors = plain.encode(QUERIES[:4])
        for where in ("id < 100", "id >= 50", "id < 100"):
            assert_same(plain.search(vectors, 5, where=where), sharded.search(vectors, 5, where=where))


def test_adds_and_removes_reach_the_shards(bundle_copy, client, deltas_only):
    from aesearch.search.live import LiveEngine

    with Cluster(client) as cluster:
        live = LiveEngine(SearchEngine.load(bundle_copy, cluster=cluster))
        image = synthetic_images(1, seed=77)
        assert live.get().query(image[0], 1).hits[0].distance > 0
        (new,) = Collection.open(bundle_copy).add(image).tolist()
        engine = live.get()
        assert engine.cluster is cluster and len(engine.index.parts) == 2
        hit = engine.query(image[0], 1).hits[0]
        assert (hit.id, hit.distance) == (new, 0.0)
        Collection.open(bundle_copy).remove([new, 0])
        engine = live.get()
        assert new not in [h.id for h in engine.query(image[0], 5).hits]
        plain = SearchEngine.load(bundle_copy)
        vectors = plain.encode(QUERIES)
        assert_same(plain.search(vectors, 10), engine.search(vectors, 10))
        # The remove shipped the removed rows only: each segment went to a worker once.
        assert sum(len(shard.segments) for shard in cluster.shards) == 2


@pytest.fixture
def busy_event_loop(monkeypatch):
    """Dask's event loop hands an actor's answer over 50 ms late, as on a loaded machine (CI once
    counted an answer that was there as missing): a shorter wait times out, even for an answer
    already there."""
    from distributed.actor import ActorFuture

    result = ActorFuture.result

    def late(self, timeout=None):
        if timeout is not None and timeout < 0.05:
            time.sleep(timeout)
            raise TimeoutError
        return result(self, timeout)

    monkeypatch.setattr(ActorFuture, "result", late)


@pytest.fixture
def stalled(client, monkeypatch, busy_event_loop):
    """The actors on the first worker take 4 s a search (longer than a shard is waited for, 3 s) once
    they have answered one: a first, warm-up search, so that a loaded machine's slow first answer
    (the shard opening its files) is never what the test measures. The event loop is busy, too: the
    answers of the other worker, waited for after the stalled one used up the time, still count."""
    client.wait_for_workers(2, timeout=30)  # a loaded machine can be slow to (re)register a worker
    victim = sorted(workers(client))[0]
    search = ShardActor.search

    def slow(self, *args):
        if distributed.get_worker().address == victim:
            if getattr(self, "answered_once", False):  # on the actor itself: an id() can be reused
                time.sleep(4)
            self.answered_once = True
        return search(self, *args)

    monkeypatch.setattr(ShardActor, "search", slow)
    return victim


def test_a_stalled_worker_fails_the_query_in_one_line_then_its_shard_moves(ivf_segmented, client, stalled):
    plain = SearchEngine.load(ivf_segmented)
    with Cluster(client) as cluster:
        sharded = SearchEngine.load(ivf_segmented, cluster=cluster)
        vectors = plain.encode(QUERIES[:3])
        assert_same(plain.search(vectors, 5), sharded.search(vectors, 5))  # warm: every shard has answered once
        started = time.monotonic()
        with pytest.raises(ShardsMissingError, match=f"1 of 2 shards did not answer.*{stalled}") as error:
            sharded.search(vectors, 5)
        assert time.monotonic() - started < 5
        assert "\n" not in str(error.value) and "allow partial" in str(error.value)
        # The next query ships the lost shard's segments to the worker that answers: complete again.
        assert_same(plain.search(vectors, 5), sharded.search(vectors, 5))
        assert {shard.worker for shard in cluster.shards} == set(workers(client)) - {stalled}


def test_a_partial_answer_is_flagged_never_silent(ivf_segmented, client, stalled):
    plain = SearchEngine.load(ivf_segmented)
    with Cluster(client, allow_partial=True) as cluster:
        sharded = SearchEngine.load(ivf_segmented, cluster=cluster)
        (lost,) = [shard for shard in cluster.shards if shard.worker == stalled]
        assert not sharded.query(QUERIES[0], 5).missing_shards  # warm: every shard has answered once
        result = sharded.query(QUERIES[0], 5)
        assert result.missing_shards == (f"shard {lost.number} ({stalled})",)
        assert result.to_dict()["missing_shards"] == list(result.missing_shards)
        answering = {int(i) for p in sharded.index.parts if p.shards != (lost.number,) for i in p.ids}
        assert {hit.id for hit in result.hits} <= answering
        with pytest.raises(ShardsMissingError):  # the vectors API has no flag: it never answers partially
            cluster.shards[lost.number].lost = "stalled"
            cluster._healed_at = time.monotonic()
            sharded.search(plain.encode(QUERIES[:1]), 5)


def test_an_answer_completed_after_its_shard_moved_is_not_flagged(ivf_segmented, client, stalled):
    """k = every image: the first search misses the stalled shard's images, so every row is searched
    again, exhaustively, after its segments moved to the worker that answers. The answer is
    complete, and was flagged partial all the same (second new-user trial, with kill -9)."""
    plain = SearchEngine.load(ivf_segmented)
    with Cluster(client, allow_partial=True) as cluster:
        sharded = SearchEngine.load(ivf_segmented, cluster=cluster)
        assert not sharded.query(QUERIES[0], 5).missing_shards  # warm: every shard has answered once
        result = sharded.query(QUERIES[0], len(plain))
        expected = plain.query(QUERIES[0], len(plain))
        assert [h.id for h in result.hits] == [h.id for h in expected.hits]
        assert result.missing_shards == ()


def test_a_stalled_copy_is_answered_for_by_the_other_in_the_same_time(ivf_segmented, client, stalled):
    plain = SearchEngine.load(ivf_segmented)
    with Cluster(client, replicas=2) as cluster:
        sharded = SearchEngine.load(ivf_segmented, cluster=cluster)
        vectors = plain.encode(QUERIES[:3])
        for _ in range(2):  # warm: both copies of every shard have answered once
            assert_same(plain.search(vectors, 5), sharded.search(vectors, 5))
        for _ in range(2):  # one of the two turns asks the stalled copy first
            started = time.monotonic()
            assert_same(plain.search(vectors, 5), sharded.search(vectors, 5))
            assert time.monotonic() - started < 5
        assert [shard.lost is not None for shard in cluster.shards] == [s.worker == stalled for s in cluster.shards]


def test_a_killed_worker_fails_in_one_line_then_its_shard_moves(client, ivf_segmented):
    # A third worker, closed below (actor handles find their worker through the process's one Client, so
    # the test cannot start a second cluster of its own); the other tests keep the first two.
    before = set(workers(client))
    client.cluster.scale(3)
    client.wait_for_workers(3, timeout=30)
    plain = SearchEngine.load(ivf_segmented)
    with Cluster(client) as cluster:
        sharded = SearchEngine.load(ivf_segmented, cluster=cluster)
        assert len({part.shards[0] for part in sharded.index.parts}) == 3
        vectors = plain.encode(QUERIES[:3])
        (victim,) = set(workers(client)) - before
        (number,) = [shard.number for shard in cluster.shards if shard.worker == victim]
        client.sync(next(w for w in client.cluster.workers.values() if w.address == victim).close)
        started = time.monotonic()
        with pytest.raises(ShardsMissingError, match=f"1 of 3 shards did not answer .shard {number} on {victim},") as e:
            sharded.search(vectors, 5)
        assert time.monotonic() - started < 5 and "\n" not in str(e.value)
        assert_same(plain.search(vectors, 5), sharded.search(vectors, 5))
        assert victim not in {shard.worker for shard in cluster.shards}


def test_the_server_answers_as_one_process_503_for_a_missing_shard_or_flags_it(ivf_segmented, client, monkeypatch):
    from fastapi.testclient import TestClient

    from aesearch.interfaces.server import create_app

    with Cluster(client) as cluster:
        plain = TestClient(create_app(ivf_segmented, allowed_hosts=["testserver"]))
        engine = SearchEngine.load(ivf_segmented, cluster=cluster)
        sharded = TestClient(create_app(ivf_segmented, engine=engine, allowed_hosts=["testserver"]))
        for query in ("k=5&id=3", "k=4&id=8&where=label%20%3D%20ring"):
            expected, got = plain.post(f"/api/search?{query}"), sharded.post(f"/api/search?{query}")
            assert got.status_code == 200 and got.json() == expected.json()

        victim, search = cluster.shards[1].worker, ShardActor.search

        def fail(self, *args):
            if distributed.get_worker().address == victim:
                raise OSError("Unable to contact Actor's worker")
            return search(self, *args)

        monkeypatch.setattr(ShardActor, "search", fail)
        monkeypatch.setattr("aesearch.search.cluster.Cluster._heal", lambda self: None)
        answer = sharded.post("/api/search?k=5&id=3")
        assert answer.status_code == 503 and answer.json()["error"] == "ShardsMissingError"
        assert "Unable to contact" in answer.json()["detail"] and "\n" not in answer.json()["detail"]
        cluster.allow_partial = True
        answer = sharded.post("/api/search?k=5&id=3")
        assert answer.status_code == 200 and answer.json()["missing_shards"] == [f"shard 1 ({victim})"]
        shards = sharded.get("/api/health").json()["cluster"]["shards"]
        assert [shard["lost"] is not None for shard in shards] == [False, True]
        assert sum(shard["images"] for shard in shards) == sum(len(p.ids) for p in engine.index.parts)


def test_replicas_take_turns_and_answer_for_a_failed_worker(ivf_segmented, client, monkeypatch):
    plain = SearchEngine.load(ivf_segmented)
    with Cluster(client, replicas=2) as cluster:
        sharded = SearchEngine.load(ivf_segmented, cluster=cluster)
        assert all(len(part.shards) == 2 for part in sharded.index.parts), "every segment on both workers"
        vectors = plain.encode(QUERIES[:3])
        asked = []
        for _ in range(4):
            assert_same(plain.search(vectors, 5), sharded.search(vectors, 5))
            asked.append(tuple(cluster.last_seconds))
        assert sorted(asked) == [(0,), (0,), (1,), (1,)], "each query whole on one worker, taking turns"
        victim, search = cluster.shards[0].worker, ShardActor.search

        def fail(self, *args):
            if distributed.get_worker().address == victim:
                raise OSError("Unable to contact Actor's worker")
            return search(self, *args)

        monkeypatch.setattr(ShardActor, "search", fail)
        monkeypatch.setattr("aesearch.search.cluster.Cluster._heal", lambda self: None)
        for _ in range(2):  # the one that meets the failure asks the other replica, in the same query
            assert_same(plain.search(vectors, 5), sharded.search(vectors, 5))
        assert cluster.shards[0].lost and not cluster.shards[1].lost


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cluster", "nonsense"], "not a scheduler address"),
        (["--cluster", "local", "--workers", "2"], "--cluster serves from one process"),
        (["--allow-partial"], "--allow-partial is for --cluster"),
        (["--replicas", "2"], "--replicas is for --cluster"),
        (["--cluster", " "], "--cluster is empty"),  # an unset $SCHEDULER served without a cluster, silently
    ],
)
def test_serve_cluster_errors_are_one_line(tiny_bundle, args, message):
    from click.testing import CliRunner

    from aesearch.interfaces.cli import cli

    result = CliRunner().invoke(cli, ["serve", "--index-dir", str(tiny_bundle), *args])
    assert result.exit_code != 0 and message in result.output
    assert "Traceback" not in result.output and result.output.strip().count("\n") == 0


def test_a_bad_address_is_one_line_in_python(tiny_bundle):
    with pytest.raises(InvalidArgumentError, match="not a scheduler address"):
        SearchEngine.load(tiny_bundle, cluster="nonsense")


def test_the_query_path_imports_no_dask():
    code = "import sys, aesearch.search.engine, aesearch.search.live; assert 'dask' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
