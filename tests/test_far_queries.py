"""Queries unlike the collection search again with more IVF lists (defaults.WIDE_SEARCH)."""

from __future__ import annotations

import numpy as np
import pytest

from aesearch import Collection, SearchEngine
from tests.conftest import make_bundle


@pytest.fixture(scope="module")
def ivf_bundle(tmp_path_factory):
    return make_bundle(
        tmp_path_factory.mktemp("far") / "ivf",
        n=2000,
        index_type="ivf",
        metric="cosine",
        transform="whiten",
        params={"whiten_dims": 32, "whiten_shrinkage": 0.03},
    )


def far_vectors(engine: SearchEngine, n: int = 40) -> np.ndarray:
    """z vectors in directions the collection does not take: queries unlike any indexed image."""
    z = engine.bundle.embeddings(engine.bundle.live_ids()[:10])
    rng = np.random.default_rng(0)
    return (rng.standard_normal((n, z.shape[1])) * z.std() * 3).astype(np.float32)


def test_the_threshold_is_the_trust_calibrations(ivf_bundle):
    engine = SearchEngine.load(ivf_bundle)
    expected = 2 * engine.trust.neighbour_distance_at(97.5)  # cosine: squared = 2 (1 - cos)
    assert engine.index.far_squared == pytest.approx(expected)


def test_a_far_query_searched_wide_enough_is_exact(ivf_bundle, monkeypatch):
    engine = SearchEngine.load(ivf_bundle)
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


def test_near_queries_are_not_searched_again(ivf_bundle, monkeypatch):
    engine = SearchEngine.load(ivf_bundle)
    calls = []
    merged = engine.index._merged
    monkeypatch.setattr(engine.index, "_merged", lambda *a, **kw: calls.append(kw.get("wide")) or merged(*a, **kw))
    engine.search(engine.bundle.embeddings(np.arange(50)), 10)  # indexed images: as near as queries get
    assert len(calls) == 1 and not calls[0]  # one search, not widened


def test_the_wide_search_skips_removed_images(ivf_bundle, tmp_path, monkeypatch):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(ivf_bundle, copy)
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
