"""Duplicates: range search + connected components against brute-force oracles, on planted copies."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_bundle, synthetic_images, synthetic_labels

from aesearch.errors import InvalidArgumentError
from aesearch.interfaces.cli import cli
from aesearch.quality import duplicates
from aesearch.quality.duplicates import connected_components, exact_classes, find_duplicates, near_pairs
from aesearch.search.engine import SearchEngine


def planted_images() -> tuple[np.ndarray, dict[str, list[int]]]:
    """120 synthetic images with planted copies (ids 0-89 train, 90-119 test in make_bundle)."""
    images = synthetic_images(120, seed=3)
    images[10] = images[4]  # exact copy within train
    images[95] = images[7]  # exact copy across splits
    images[96] = images[7]  # ... a third member
    images[20] = images[5]
    images[20, 14, 14] = min(255, int(images[20, 14, 14]) + 3)  # near copy: one pixel a little brighter
    return images, {"exact_train": [4, 10], "exact_across": [7, 95, 96], "near": [5, 20]}


@pytest.fixture(scope="module")
def planted_bundle(tmp_path_factory):
    images, planted = planted_images()
    path = make_bundle(tmp_path_factory.mktemp("dups") / "b", images=images, metric="cosine")
    return path, planted


def test_connected_components_match_scipy():
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as oracle

    rng = np.random.default_rng(0)
    n = 500
    a, b = rng.integers(0, n, 300), rng.integers(0, n, 300)
    roots = connected_components(n, a, b)
    _, labels = oracle(coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n)), directed=False)
    # Same partition: two nodes share a root exactly when scipy gives them the same label.
    assert len(np.unique(roots)) == len(np.unique(labels))
    assert len(np.unique(np.stack([roots, labels]), axis=1)[0]) == len(np.unique(labels))
    assert np.all(roots[roots] == roots), "every root is its own parent"


@pytest.mark.parametrize("exact_limit", [10_000, 0], ids=["flat", "ivf"])
@pytest.mark.parametrize("small_steps", [False, True], ids=["whole", "small blocks and chunks"])
def test_near_pairs_equal_brute_force(exact_limit, small_steps, monkeypatch):
    if small_steps:  # what a threshold that pairs many images gets: the same pairs, a bit at a time
        monkeypatch.setattr("aesearch.quality.duplicates._RESULTS_PER_BLOCK", 10)
        monkeypatch.setattr("aesearch.quality.duplicates._PAIRS_PER_CHUNK", 7)
    rng = np.random.default_rng(1)
    base = rng.standard_normal((1200, 16)).astype(np.float32)
    x = np.concatenate([base, base[:60] + 0.01 * rng.standard_normal((60, 16)).astype(np.float32)])
    radius = 0.05
    squared = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    truth = {(i, j) for i, j in zip(*np.nonzero(squared < radius), strict=True) if i < j}
    a, b, d, method, recall = near_pairs(x, radius, exact_limit=exact_limit)
    found = set(zip(a.tolist(), b.tolist(), strict=True))
    assert np.all(a < b) and len(found) == len(a), "each pair once, lower id first"
    if exact_limit:
        assert found == truth and recall is None and method == "exact range search"
    else:
        assert len(found & truth) >= 0.99 * len(truth) and found <= truth and recall >= 0.99
    assert np.allclose(d, squared[a, b], atol=1e-4)


def test_near_pairs_keep_pairs_at_the_radius_despite_float16_codes():
    """The IVF stores float16 vectors (rounding moves a vector by up to 2^-11 of its norm): pairs just
    inside the radius are still found, pairs just outside are not, among vectors of norm ~40."""
    rng = np.random.default_rng(2)
    base = 10 * rng.standard_normal((1500, 16)).astype(np.float32)
    step = rng.standard_normal((40, 16))
    step /= np.linalg.norm(step, axis=1, keepdims=True)
    radius = 0.04
    lengths = np.sqrt(radius) * np.where(np.arange(40) % 2, 0.999, 1.001)  # inside, outside, inside...
    x = np.concatenate([base, (base[:40] + lengths[:, None] * step).astype(np.float32)])
    a, b, d, _, _ = near_pairs(x, radius, exact_limit=0)
    squared = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    truth = {(int(i), int(j)) for i, j in zip(*np.nonzero(squared <= radius), strict=True) if i < j}
    assert set(zip(a.tolist(), b.tolist(), strict=True)) == truth and len(truth) == 20
    assert np.allclose(d, squared[a, b], rtol=1e-5)


def test_a_threshold_that_pairs_nearly_everything_is_refused_before_the_search(monkeypatch):
    x = np.random.default_rng(2).standard_normal((3000, 8)).astype(np.float32)
    monkeypatch.setattr("aesearch.quality.duplicates.MAX_PAIRS", 100_000)  # 3,000 images: 4.5 M pairs at most
    searched = []
    real = faiss.IndexFlatL2.range_search
    monkeypatch.setattr(
        faiss.IndexFlatL2, "range_search", lambda self, q, r: searched.append(len(q)) or real(self, q, r)
    )
    with pytest.raises(InvalidArgumentError, match=r"about [\d,]+ pairs are within this threshold .*lower `threshold`"):
        near_pairs(x, radius=1e6)  # every image within range of every other
    assert set(searched) == {1}, "only the sample, one image a call: never a block whose answer is everything"


def test_exact_classes_stay_exact_when_hashes_collide(monkeypatch):
    images, _ = planted_images()
    expected = exact_classes(images)
    monkeypatch.setattr(duplicates, "_row_hashes", lambda rows: np.zeros(len(rows), np.uint64))
    collided = exact_classes(images)  # every row shares one hash: the full comparison must notice
    assert len(np.unique(collided)) == len(np.unique(expected)) == 117
    assert len(np.unique(np.stack([expected, collided]), axis=1)[0]) == 117, "the same partition"


def test_exact_classes_group_equal_pixels():
    images, _ = planted_images()
    classes = exact_classes(images)
    assert classes[4] == classes[10] and classes[7] == classes[95] == classes[96]
    assert classes[5] != classes[20]
    assert len(np.unique(classes)) == 120 - 3


def test_planted_copies_are_grouped(planted_bundle):
    path, _ = planted_bundle
    engine = SearchEngine.load(path)
    report = find_duplicates(engine, threshold=0.001)
    groups = {tuple(g.ids): g for g in report.groups}
    assert groups[(7, 95, 96)].exact and groups[(4, 10)].exact
    assert not groups[(5, 20)].exact and 0 < groups[(5, 20)].max_distance <= 0.001
    assert [len(g.ids) for g in report.groups] == sorted((len(g.ids) for g in report.groups), reverse=True)
    assert report.pairs["train/train"] == {"exact": 1, "near": 1}
    assert report.pairs["train/test"]["exact"] == 2 and report.pairs["test/test"]["exact"] == 1

    exact_only = find_duplicates(engine, threshold=0)
    assert {tuple(g.ids) for g in exact_only.groups} == {(4, 10), (7, 95, 96)}

    across = find_duplicates(engine, threshold=0.001, across_splits=True)
    assert [g.ids for g in across.groups] == [[7, 95, 96]]
    assert set(across.pairs) == {"train/test"}


def test_duplicates_cli_json_csv_and_errors(planted_bundle, tmp_path):
    path, _ = planted_bundle
    runner = CliRunner()
    out = tmp_path / "dups.png"
    result = runner.invoke(
        cli, ["duplicates", "--index-dir", str(path), "--threshold", "0.001", "--json", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["threshold"] == 0.001 and data["groups"][0]["ids"] == [7, 95, 96]
    assert data["groups"][0]["paths"] == ["", "", ""] and out.stat().st_size > 1000
    result = runner.invoke(cli, ["duplicates", "--index-dir", str(path), "--csv", "--out", str(out)])
    assert result.exit_code == 0 and result.output.splitlines()[0] == "group,id,split,path,exact,max_distance"
    assert "1,7,train,,1,0.0" in result.output
    for args, message in [
        (["--json", "--csv"], "give --json or --csv, not both"),
        (["--threshold", "-1"], "-1"),
        (["--out", str(tmp_path / "x.gif")], "name it .png, .jpg or .webp"),
    ]:
        result = runner.invoke(cli, ["duplicates", "--index-dir", str(path), *args])
        assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output
    # a filter that matches nothing: an empty report that says so (was: a reshape traceback)
    result = runner.invoke(cli, ["duplicates", "--index-dir", str(path), "--where", "id > 99999", "--no-picture"])
    assert result.exit_code == 0 and "no indexed image matches it" in result.output, result.output
    result = runner.invoke(cli, ["duplicates", "--index-dir", str(path), "--where", "id > 99999", "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["n_images"] == 0, result.output


def test_eval_excludes_cross_split_copies(tmp_path):
    from aesearch.quality.evaluate import evaluate

    images = synthetic_images(120, seed=4)
    labels = synthetic_labels(120)
    images[90:100] = images[0:10]  # ten test images are copies of training images
    labels[90:100] = labels[0:10]
    engine = SearchEngine.load(make_bundle(tmp_path / "b", images=images, labels=labels, metric="cosine"))
    plain = evaluate(engine)
    cleaned = evaluate(engine, exclude_near_duplicates=0.0001)
    assert plain.queries_with_near_duplicates == 0 and cleaned.queries_with_near_duplicates == 10
    assert cleaned.near_duplicate_threshold == 0.0001
    hits = {e["query_id"]: [h["id"] for h in e["hits"]] for e in cleaned.examples}
    for query, found in hits.items():
        if 90 <= query < 100:
            assert query - 90 not in found, "a query's own copy is left out of its neighbours"
    from aesearch.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match='use `protocol` "test"'):  # the library names its parameter
        evaluate(engine, protocol="validation", exclude_near_duplicates=0.01)
    args = ["--protocol", "validation", "--exclude-near-duplicates", "0.01", "--report", str(tmp_path / "e.png")]
    refused = CliRunner().invoke(cli, ["eval", "--index-dir", str(tmp_path / "b"), *args])
    assert refused.exit_code == 1 and 'use --protocol "test"' in refused.output, "the CLI names its option"


def test_find_duplicates_refuses_what_is_not_an_engine_or_a_distance(tmp_path):
    """A path for the engine, or a threshold of "0.01" or None, raised AttributeError or numpy's
    TypeError (second new-user trial)."""
    engine = SearchEngine.load(make_bundle(tmp_path / "b", n=20))
    with pytest.raises(InvalidArgumentError, match=r"takes a SearchEngine, got str: find_duplicates\(SearchEngine"):
        find_duplicates(str(tmp_path / "b"))
    for threshold in ("0.01", None, True, float("nan"), -1):
        with pytest.raises(InvalidArgumentError, match="`threshold` must be a distance of 0 or more"):
            find_duplicates(engine, threshold=threshold)
