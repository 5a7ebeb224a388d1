"""Recall@10 for near, transformed and foreign queries, measured by every build (quality/recall.py)."""

from __future__ import annotations

import shutil

import numpy as np
from click.testing import CliRunner

from aesearch import Collection, SearchEngine
from aesearch.interfaces.cli import cli
from aesearch.pipelines.stream import StreamOptions, stream_build
from aesearch.quality.recall import KINDS, exact_neighbours, foreign_images, recall_by_kind
from aesearch.sources.arrays import ArraySource
from aesearch.store.bundle import read_manifest
from tests.conftest import synthetic_images, tiny_checkpoint


def brute_force(engine: SearchEngine, queries: np.ndarray, k: int) -> np.ndarray:
    """The oracle: numpy over every live image's vector in the search space."""
    live = engine.bundle.live_ids()
    vectors = engine.search_space(engine.bundle.embeddings(live))
    squared = ((queries[:, None, :] - vectors[None]) ** 2).sum(-1)
    return live[np.argsort(squared, axis=1, kind="stable")[:, :k]]


def test_the_exact_scan_equals_numpy_and_skips_removed_images(far_ivf_bundle, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(far_ivf_bundle, copy)
    Collection.open(copy).remove(list(range(0, 2000, 3)))
    engine = SearchEngine.load(copy)
    queries = engine.search_space(engine.encode(synthetic_images(30, seed=7)))
    found = exact_neighbours(engine, queries, 10)
    np.testing.assert_array_equal(found, brute_force(engine, queries, 10))
    assert not np.isin(found, np.arange(0, 2000, 3)).any()


def test_an_exact_index_has_recall_one_and_a_crippled_one_less(far_ivf_bundle):
    engine = SearchEngine.load(far_ivf_bundle)
    (part,) = engine.index.parts
    wide = recall_by_kind(engine, queries=60)
    assert set(wide) == {*KINDS, "queries", "k"} and wide["queries"] == 60 and wide["k"] == 10
    part.index.index.nprobe = 1  # one list of many: misses neighbours, and the test can tell
    engine.index.far_squared = None  # no second, wider search either
    narrow = recall_by_kind(engine, queries=60)
    assert all(narrow[kind] < wide[kind] for kind in KINDS)
    part.index.index.nprobe = part.index.index.nlist  # every list: exact
    assert all(recall_by_kind(engine, queries=60)[kind] == 1.0 for kind in KINDS)


def test_foreign_drawings_are_deterministic_and_unlike_one_another():
    a, b = foreign_images(6, (28, 28), seed=0), foreign_images(6, (28, 28), seed=0)
    assert a.shape == (6, 56, 56, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert len({image.tobytes() for image in a}) == 6


def test_a_build_records_recall_in_its_manifest_and_info_shows_it(tmp_path, monkeypatch):
    images = synthetic_images(300, seed=2)
    manifest = stream_build(
        tmp_path / "b", ArraySource(images), tiny_checkpoint(), StreamOptions(shifts=((0, 0),)), log=None
    )
    measured = manifest["recall_at_10"]
    assert measured == read_manifest(tmp_path / "b")["recall_at_10"]
    assert [measured[kind] for kind in KINDS] == [1.0, 1.0, 1.0]  # a flat index is exact
    assert measured["generation"] == manifest["generation"] and measured["count"] == 300
    out = CliRunner().invoke(cli, ["info", "--index-dir", str(tmp_path / "b")]).output
    assert "recall@10       near 1.000, transformed 1.000, foreign 1.000 (200 queries each)" in out

    # A later change that rebuilds no index: the figure says when it was measured.
    monkeypatch.setattr("aesearch.pipelines.drift.RELEARN_EVERY_SYNC_MAX", 0)
    monkeypatch.setattr("aesearch.pipelines.update.COMPACT_FRACTION", float("inf"))
    Collection.open(tmp_path / "b").remove([0, 1])
    out = CliRunner().invoke(cli, ["info", "--index-dir", str(tmp_path / "b")]).output
    assert f"measured at generation {measured['generation']} over 300 images" in out
    # A compaction builds the index again and measures again.
    compacted = Collection.open(tmp_path / "b").compact()
    assert compacted["recall_at_10"]["generation"] == compacted["generation"]
    assert compacted["recall_at_10"]["count"] == 298


def test_the_far_search_chosen_is_the_cheapest_rung_that_reaches_the_target(far_ivf_bundle, monkeypatch):
    from aesearch.quality.recall import choose_far_search, probes

    engine = SearchEngine.load(far_ivf_bundle)
    (part,) = engine.index.parts
    part.index.index.nprobe = 1  # so that the rungs differ
    found = probes(engine, queries=60)
    ladder = ((1, 1), (2, 1), (4, 1), (8, 1), (16, 1))
    monkeypatch.setattr("aesearch.defaults.FAR_SEARCH_LADDER_FULL_VECTORS", ladder)
    engine.index.far_squared = 0.0  # every query far: each rung is what every query gets

    def worst(setting):
        engine.index.wide_search = setting
        return min(found.recall(engine, ("transformed", "foreign")).values())

    reached = [worst(setting) for setting in ladder]
    assert reached[0] < reached[-1]  # the rungs differ: the test can tell them apart
    for target in (0.0, (reached[0] + reached[-1]) / 2, 1.1):
        monkeypatch.setattr("aesearch.defaults.FAR_TARGET_RECALL", target)
        chosen = choose_far_search(engine, found)
        expected = next((s for s, r in zip(ladder, reached, strict=True) if r >= target), ladder[-1])
        assert chosen == expected == engine.index.wide_search


def test_an_exact_bundle_records_no_far_search_and_a_damaged_entry_falls_back(tmp_path):
    from aesearch.search.engine import far_search

    manifest = stream_build(
        tmp_path / "b", ArraySource(synthetic_images(100)), tiny_checkpoint(), StreamOptions(shifts=((0, 0),)), log=None
    )
    assert manifest["far_search"] is None and SearchEngine.load(tmp_path / "b").index.wide_search is None
    assert far_search({"far_search": {"lists": 8, "candidates": 4}}) == (8, 4)
    for damaged in ({"lists": 0, "candidates": 4}, {"lists": True, "candidates": 4}, {"lists": 8}, [8, 4], "8x4"):
        assert far_search({"far_search": damaged}) is None


def test_info_reads_a_hand_edited_recall_or_far_search_without_a_traceback(tmp_path):
    import json

    from aesearch.store.manifest import write_manifest

    stream_build(
        tmp_path / "b", ArraySource(synthetic_images(100)), tiny_checkpoint(), StreamOptions(shifts=((0, 0),)), log=None
    )
    for recall, far, shown in [
        ("garbage", None, "unreadable in the manifest: build the index again"),
        ({"near": "x", "queries": None}, {"lists": "x"}, "near ? (? queries each); far search unreadable"),
        ({"near": 0.5, "count": "q"}, {"lists": 8, "candidates": 4}, "far queries search 8x the lists, 4x the"),
    ]:
        manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
        write_manifest(tmp_path / "b", {**manifest, "recall_at_10": recall, "far_search": far})  # checksum redone
        result = CliRunner().invoke(cli, ["info", "--index-dir", str(tmp_path / "b")])
        assert result.exit_code == 0 and shown in result.output, result.output


def test_far_search_words_fit_the_index():
    """An HNSW build said its far queries search '4x the lists' (a graph has none: new-user trial)."""
    from aesearch.quality.recall import far_search_summary

    assert far_search_summary(8, 4, "IVF4096,PQ96x4fs") == "8x the lists, 4x the candidates"
    assert far_search_summary(4, 1, "hnsw") == "4x the graph's search breadth (efSearch)"
