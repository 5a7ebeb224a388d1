"""Queries unlike the collection search again wider: more IVF lists (defaults.WIDE_SEARCH), and for a
compressed index more lists and more candidates re-ranked (WIDE_SEARCH_COMPRESSED, WIDE_RERANK)."""

from __future__ import annotations

import numpy as np
import pytest

from aesearch import Collection, SearchEngine
from aesearch.search.engine import far_search
from tests.conftest import make_bundle


def far_vectors(engine: SearchEngine, n: int = 40) -> np.ndarray:
    """z vectors in directions the collection does not take: queries unlike any indexed image."""
    z = engine.bundle.embeddings(engine.bundle.live_ids()[:10])
    rng = np.random.default_rng(0)
    return (rng.standard_normal((n, z.shape[1])) * z.std() * 3).astype(np.float32)


def test_the_threshold_is_the_trust_calibrations(far_ivf_bundle):
    engine = SearchEngine.load(far_ivf_bundle)
    expected = 2 * engine.trust.neighbour_distance_at(97.5)  # cosine: squared = 2 (1 - cos)
    assert engine.index.far_squared == pytest.approx(expected)


def test_a_far_query_searched_wide_enough_is_exact(far_ivf_bundle, monkeypatch):
    engine = SearchEngine.load(far_ivf_bundle)
    (part,) = engine.index.parts
    assert part.index.search_parameters().nprobe < part.index.index.nlist  # a real approximation
    queries = engine.index.search_space(far_vectors(engine))
    exact = engine.index._merged(queries, 10, exhaustive=True)
    tuned = engine.index._merged(queries, 10, exhaustive=False)
    monkeypatch.setattr("aesearch.defaults.WIDE_SEARCH", 10**6)  # every list: the oracle
    engine.index.far_squared = 0.0  # every query counts as far
    wide = engine.index._search_prepared(queries, 10)
    np.testing.assert_array_equal(wide[1], exact[1])
    assert not np.array_equal(tuned[1], exact[1])  # the tuned nprobe alone misses some: the test can fail

    engine.index.far_squared = None  # never: the tuned search exactly
    np.testing.assert_array_equal(engine.index._search_prepared(queries, 10)[1], tuned[1])


def test_near_queries_are_not_searched_again(far_ivf_bundle, monkeypatch):
    engine = SearchEngine.load(far_ivf_bundle)
    calls = []
    merged = engine.index._merged
    monkeypatch.setattr(engine.index, "_merged", lambda *a, **kw: calls.append(kw.get("wide")) or merged(*a, **kw))
    engine.search(engine.bundle.embeddings(np.arange(50)), 10)  # indexed images: as near as queries get
    assert len(calls) == 1 and not calls[0]  # one search, not widened


def test_the_wide_search_skips_removed_images(far_ivf_bundle, tmp_path, monkeypatch):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(far_ivf_bundle, copy)
    removed = list(range(0, 2000, 3))
    Collection.open(copy).remove(removed)
    engine = SearchEngine.load(copy)
    monkeypatch.setattr("aesearch.defaults.WIDE_SEARCH", 10**6)
    engine.index.far_squared = 0.0
    _, ids = engine.search(far_vectors(engine), 50)
    assert not np.isin(ids, removed).any() and (ids >= 0).all()


def test_an_exact_bundle_never_searches_twice(tmp_path, monkeypatch):
    engine = SearchEngine.load(make_bundle(tmp_path / "flat", n=200))
    engine.index.far_squared = 0.0  # every query far: still nothing an exact index could add
    calls = []
    merged = engine.index._merged
    monkeypatch.setattr(engine.index, "_merged", lambda *a, **kw: calls.append(kw.get("wide")) or merged(*a, **kw))
    engine.search(far_vectors(engine), 5)
    assert len(calls) == 1


def test_a_reranked_bundle_widens_lists_and_candidates(tmp_path, monkeypatch):
    """A compressed index searched wide enough (every list, every candidate re-ranked) is exact; its wide
    search uses WIDE_SEARCH_COMPRESSED lists and WIDE_RERANK times the candidates, not WIDE_SEARCH."""
    from aesearch.pipelines.stream import StreamOptions, stream_build
    from aesearch.search.large import SEARCH_VECTORS_FILE
    from aesearch.sources.arrays import ArraySource
    from tests.conftest import synthetic_images, tiny_checkpoint

    images = np.resize(synthetic_images(400, seed=5), (1200, 28, 28))
    noisy = np.clip(images.astype(int) + np.random.default_rng(1).integers(0, 40, images.shape), 0, 255)
    options = StreamOptions(whiten_dims=32, shifts=((0, 0),), chunk_size=100, max_index_memory=1200 * 100)
    stream_build(tmp_path / "pq", ArraySource(noisy.astype(np.uint8)), tiny_checkpoint(), options, log=None)
    engine = SearchEngine.load(tmp_path / "pq")
    assert engine.index.wide_search == far_search(engine.manifest) and engine.index.wide_search is not None
    engine.index.wide_search = None  # as a bundle built before the build chose it: the defaults
    (part,) = engine.index.parts
    tuned_nprobe, factor = part.index.search_parameters().nprobe, part.index.index.factor
    assert factor > 1 and part.index.wide_rerank() == 4
    monkeypatch.setattr("aesearch.defaults.WIDE_SEARCH", 1)  # the full-vector setting: not this index's
    monkeypatch.setattr("aesearch.defaults.WIDE_SEARCH_COMPRESSED", 3)
    assert part.index.wide_parameters().nprobe == min(3 * tuned_nprobe, part.index.index.index.nlist)

    queries = engine.index.search_space(far_vectors(engine))
    stored = np.load(engine.bundle.segments[0].file(SEARCH_VECTORS_FILE))  # the oracle: numpy over every vector
    squared = ((queries[:, None, :] - stored[None]) ** 2).sum(-1)
    exact = part.ids[np.argsort(squared, axis=1, kind="stable")[:, :10]]
    tuned = engine.index._merged(queries, 10, exhaustive=False)[1]
    assert not np.array_equal(tuned, exact)  # the tuned search misses some: the test can fail
    monkeypatch.setattr("aesearch.defaults.WIDE_SEARCH_COMPRESSED", 10**6)  # every list ...
    monkeypatch.setattr("aesearch.defaults.WIDE_RERANK", 10**6)  # ... and every candidate
    engine.index.far_squared = 0.0  # every query counts as far
    np.testing.assert_array_equal(engine.index._search_prepared(queries, 10)[1], exact)


def test_warm_up_reads_every_file_a_query_reads(far_ivf_bundle, monkeypatch):
    read = []
    monkeypatch.setattr("aesearch.search.engine.read_through", lambda paths: read.extend(paths))
    engine = SearchEngine.load(far_ivf_bundle)
    engine.warm_up().join(timeout=10)
    names = {path.name for path in read}
    assert {"index.faiss", "records.npy", "search_vectors.npy"} <= names  # a flat/IVF bundle has none: skipped
    assert all(path.parent.parent.name == "segments" for path in read)


def test_read_through_skips_a_file_that_is_not_there(far_ivf_bundle, tmp_path):
    from aesearch.search.engine import read_through

    (tmp_path / "a").write_bytes(b"x" * 100)
    read_through([tmp_path / "missing", tmp_path / "a"])  # no error: a bundle without search vectors
