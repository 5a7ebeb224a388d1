"""Filtered search: the filter language, its matches against a records oracle, and filtered results
against a brute-force search over the matching images, for every index type."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import make_bundle, synthetic_images, tiny_checkpoint
from image_folders import write_image_folder

from aesearch import defaults
from aesearch.errors import InvalidArgumentError
from aesearch.pipelines.collection import build_from_folders
from aesearch.pipelines.writer import Collection
from aesearch.search.engine import SearchEngine
from aesearch.search.filters import Filter
from aesearch.search.index import IndexSpec, to_distance
from aesearch.search.selection import Selection

# --- the language ---


@pytest.mark.parametrize(
    "text",
    [
        "label = ellipse",
        "label in (ellipse, 'rectangle')",
        'label in (Shirt, T-shirt/top) and not path ~ "archive/**"',
        'not path ~ "archive/**" and (split = test or id < 10)',
        "label = none or label != ring",
        "size >= 2.5MB or size < 10KB or size in (0, 1)",
        "mtime >= 2026-01-01 and mtime < 2026-02-01T12:30:00",
        "id in (1, 2, 3,)",
        "LABEL = ring AND NOT id = 3",
    ],
)
def test_valid_filters_parse(text):
    assert Filter.parse(text).text == text.strip()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "it is empty"),
        ("colour = red", "unknown field 'colour': filter by one of label, path, root"),
        ("label", "ends where a comparison after label"),
        ("label < ring", "label takes =, !=, in, not <"),
        ("label in (ring", "it ends where `,` or `)` should follow"),
        ("label = ring)", "expected `and`, `or` or the end at character 13"),
        ("id = x", "id 'x' is not an image id"),
        ("id = 99999999999999999999", "is past the largest image id (2^63-1)"),
        ("id = " + "9" * 5000, "is past the largest image id (2^63-1)"),
        ("size < 10XB", "size '10XB' is not a size"),
        ("mtime > yesterday", "mtime 'yesterday' is not a date"),
        ("label = ring and", "it ends where a field"),
        ("path ~ 'a/**' or or", "expected a field"),
        ("(" * 10_000 + "id = 1" + ")" * 10_000, "nests deeper than 64 levels"),
        ("not " * 10_000 + "id = 1", "nests deeper than 64 levels"),
        ("x" * (defaults.FILTER_MAX_CHARS + 1), "more than 16,777,216"),
        ("label = ring drop", "found 'drop'"),
        ('label = "ring', "unexpected '\"' at character 9"),
    ],
)
def test_bad_filters_are_one_line(text, message):
    with pytest.raises(InvalidArgumentError) as error:
        Filter.parse(text)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_long_id_list_parses_as_numbers():
    ids = np.random.default_rng(0).choice(10**9, 100_000, replace=False)
    parsed = Filter.parse("id in (" + ", ".join(map(str, ids.tolist())) + ")")
    kind, name, op, value = parsed.tree
    assert (kind, name, op) == ("cmp", "id", "in") and np.array_equal(np.sort(value[1]), np.sort(ids))
    assert len(parsed.summary) < 400


@pytest.mark.parametrize(
    ("glob", "path", "matches"),
    [
        ("archive/**", "archive/a/b.png", True),
        ("archive/**", "archived/b.png", False),
        ("**/b.png", "b.png", True),
        ("**/b.png", "x/y/b.png", True),
        ("*.png", "x/b.png", False),
        ("x/?.png", "x/b.png", True),
        ("x/[a].png", "x/[a].png", True),
    ],
)
def test_globs(glob, path, matches):
    pattern = Filter.parse(f"path ~ {glob!r}").tree[3]
    assert (pattern.fullmatch(path) is not None) == matches


# --- matches against an oracle over the records ---


@pytest.fixture(scope="module")
def folder_engine(tmp_path_factory, model):
    """A two-root folder bundle with file times a day apart, one image removed."""
    base = tmp_path_factory.mktemp("filters")
    first, second = write_image_folder(base / "pics"), write_image_folder(base / "more", n=12, seed=3)
    for n, path in enumerate(sorted(p for p in (base / "pics").rglob("*.png"))):
        os.utime(path, ns=(0, 1_767_225_600_000_000_000 + n * 86_400 * 10**9))  # 2026-01-01 + n days
    spec = IndexSpec("flat", "cosine", {}, "none")
    build_from_folders(
        base / "idx",
        images=[first.root, second.root],
        labels="folders",
        model=model,
        spec=spec,
        shifts=((0, 0),),
        workers=1,
        log=None,
    )
    Collection.open(base / "idx").remove([3])
    return SearchEngine.load(base / "idx")


def _oracle(engine: SearchEngine, keep) -> np.ndarray:
    ids = engine.bundle.live_ids()
    records = engine.bundle.records(ids)
    paths = np.array(engine.bundle.paths_of(ids), dtype=object)
    return ids[keep(records, paths, engine.bundle)]


def _day(n: int) -> int:
    return 1_767_225_600_000_000_000 + n * 86_400 * 10**9


@pytest.mark.parametrize(
    ("text", "keep"),
    [
        ("label = ring", lambda r, p, b: r["label"] == 2),
        ("label = none", lambda r, p, b: r["label"] == -1),
        ("label in (ring, ellipse)", lambda r, p, b: np.isin(r["label"], [0, 2])),
        ("not label = ring", lambda r, p, b: r["label"] != 2),
        ('path ~ "rectangle/**"', lambda r, p, b: np.array([x.startswith("rectangle/") for x in p], bool)),
        ("path ~ '*.png'", lambda r, p, b: np.array(["/" not in x and x.endswith(".png") for x in p], bool)),
        ("root = 1", lambda r, p, b: r["position"] == 1),
        ("root != 0 or id < 5", lambda r, p, b: (r["position"] != 0) | (r["id"] < 5)),
        ("mtime >= 2026-01-20", lambda r, p, b: r["mtime_ns"] >= _day(19)),
        ("mtime = 2026-01-15", lambda r, p, b: (r["mtime_ns"] >= _day(14)) & (r["mtime_ns"] < _day(15))),
        ("size < 400 and size >= 0.2KB", lambda r, p, b: (r["bytes"] < 400) & (r["bytes"] >= 200)),
        ("id in (0, 3, 7, 9999)", lambda r, p, b: np.isin(r["id"], [0, 7])),
        ("id >= 10 and not (label = ring or split != collection)", lambda r, p, b: (r["id"] >= 10) & (r["label"] != 2)),
    ],
)
def test_matches_equal_the_records_oracle(folder_engine, text, keep):
    expected = _oracle(folder_engine, keep)
    assert len(expected) < len(folder_engine) or text.startswith("size")
    np.testing.assert_array_equal(folder_engine.select(text).ids, expected)


def test_root_by_its_path_and_bad_names_list_the_choices(folder_engine):
    roots = folder_engine.manifest["collection"]["roots"]
    assert np.array_equal(folder_engine.select(f"root = {roots[1]!r}").ids, folder_engine.select("root = 1").ids)
    name = Path(roots[1]).name  # from another folder than the build's: the root folder's name alone
    assert len({Path(r).name for r in roots}) == len(roots)
    assert np.array_equal(folder_engine.select(f"root = {name!r}").ids, folder_engine.select("root = 1").ids)
    for text, message in [
        ("label = Ring", "no class 'Ring' in"),
        ("label = Ring", "(did you mean 'ring'?): choose one of ellipse, rectangle, ring"),
        ("split = test", "no split 'test'"),
        ("root = /nowhere", "choose one of 0 = "),
    ]:
        with pytest.raises(InvalidArgumentError) as error:
            folder_engine.select(text)
        assert str(error.value).startswith("bad filter: ") and message in str(error.value)


def test_selection_records_json_and_csv(folder_engine):
    selection = folder_engine.select("label = ring")
    assert isinstance(selection, Selection) and selection.ids.dtype == np.int64
    records = selection.records()
    assert [r["id"] for r in records] == selection.ids.tolist() == sorted(selection.ids.tolist())
    assert all(r["label_name"] == "ring" and r["path"] and r["mtime"].startswith("2026-") for r in records)
    assert selection.to_csv().splitlines()[0] == "id,path,label_name,split,bytes,mtime"
    assert len(selection.to_csv().splitlines()) == len(selection) + 1 and '"id": ' in selection.to_json()
    # A selection, its ids and its filter narrow a search alike.
    query = folder_engine.image(int(selection.ids[0]))
    by_text = folder_engine.query(query, k=3, where="label = ring")
    for where in (selection, selection.ids.tolist(), selection.ids, Filter.parse("label = ring")):
        assert [h.id for h in folder_engine.query(query, k=3, where=where).hits] == [h.id for h in by_text.hits]
    assert by_text.to_dict()["where"] == "label = ring"


# --- exact filtered search, every index type ---


def _brute(engine: SearchEngine, queries: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The oracle: every matching image's vector compared with each query, numpy only."""
    prepared = engine.search_space(queries)
    vectors = engine.search_space(engine.bundle.embeddings(ids)) if len(ids) else np.zeros((0, prepared.shape[1]))
    squared = ((prepared[:, None, :] - vectors[None, :, :]) ** 2).sum(-1)
    order = np.argsort(squared, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(squared, order, 1), ids[order]


def _assert_exact(engine: SearchEngine, where, expected_ids: np.ndarray, k: int, *, exact: bool = True) -> None:
    """k hits (or every match), only matching images, in order; the oracle's ids where exact, else
    a recall at least about the unfiltered search's (filtering costs an approximate index no recall;
    lossy codes without re-ranking, sq8 and PQ, order by their own distances: not compared)."""
    live = engine.bundle.live_ids()
    queries = np.concatenate([engine.bundle.embeddings(live[:: max(1, len(engine) // 12)]), HELD_OUT(engine)])
    oracle_squared, oracle = _brute(engine, queries, expected_ids, k)
    distances, ids = engine.search(queries, k, where=where)
    want = min(k, len(expected_ids))
    assert (ids[:, :want] >= 0).all() and (ids[:, want:] == -1).all(), "k hits whenever k images match"
    assert np.isin(ids[:, :want], expected_ids).all() and (np.diff(distances[:, :want], axis=1) >= 0).all()
    if exact:  # the same ids in the same order; where two differ, they are a tie (float rounding)
        oracle_distances = to_distance(oracle_squared[:, :want].astype(np.float32), engine.index.spec.metric)
        np.testing.assert_allclose(distances[:, :want], oracle_distances, atol=1e-5)
        assert not want or np.mean(ids[:, :want] == oracle[:, :want]) > 0.99
    elif want and (
        not LOSSY.search(engine.manifest["index_type"]) or "rerank_factor" in engine.manifest.get("index_params", {})
    ):
        held_out = slice(len(queries) - 40, None)  # new images: an indexed one finds itself too easily
        unfiltered = _recall(engine.search(queries[held_out], k)[1], _brute(engine, queries[held_out], live, k)[1])
        assert _recall(ids[held_out, :want], oracle[held_out, :want]) >= min(0.95, unfiltered - 0.1)


LOSSY = re.compile(r"sq8|PQ")


def HELD_OUT(engine: SearchEngine) -> np.ndarray:
    return engine.encode(synthetic_images(40, seed=77))


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found.tolist(), truth.tolist(), strict=True)]))


INDEXES = {  # the kinds build-index makes; every filtered search through them is exact when it scans
    "flat": {},
    "ivf": {"nlist": 8, "nprobe": 1},
    "hnsw": {"M": 8, "ef_search": 16},
    "sq8": {},
    "IVF8,PQ2": {"nlist": 8, "nprobe": 2},  # ivf-pq
    "IVF8,PQ2x4fs": {"nlist": 8, "nprobe": 2},  # fast scan: honours the selector in faiss >= 1.8
}
EXACT_INDEXES = ("flat", "ivf")  # also through the index: exact distances, and every list probed at this size


@pytest.fixture(scope="module", params=list(INDEXES))
def typed_engine(request, tmp_path_factory):
    """A 400-image bundle of this index type, with a delta segment and tombstoned and superseded rows."""
    path = tmp_path_factory.mktemp("typed") / request.param.replace(",", "-")
    make_bundle(path, n=400, index_type=request.param, params=INDEXES[request.param], metric="cosine")
    collection = Collection.open(path)
    collection.add(synthetic_images(30, seed=9), paths=[f"new/{i}.png" for i in range(30)], labels=[1] * 30)
    collection.remove([0, 5, 17, 401])
    return SearchEngine.load(path)


FILTERS = [
    ("label = ring", lambda r: r["label"] == 2),
    ("label = ring or id >= 400", lambda r: (r["label"] == 2) | (r["id"] >= 400)),
    ("not (label = ring or split = test)", lambda r: (r["label"] != 2) & (r["split"] != 1)),
    ("id in (1, 2, 5, 7)", lambda r: np.isin(r["id"], [1, 2, 7])),
    ("id < 3", lambda r: r["id"] < 3),
    ("id > 100000", lambda r: r["id"] > 100000),
]


@pytest.mark.parametrize("scan", [True, False], ids=["scan", "index"])
@pytest.mark.parametrize(("text", "keep"), FILTERS)
def test_filtered_search_equals_brute_force_over_the_matches(typed_engine, monkeypatch, text, keep, scan):
    """Both strategies: an exact scan of few matches, the index behind a selector for many."""
    monkeypatch.setattr(defaults, "FILTER_SCAN_MAX_FLOATS", 10**12 if scan else 0)
    typed_engine._subsets.clear()
    live = typed_engine.bundle.live_ids()
    expected = live[keep(typed_engine.bundle.records(live))]
    exact = scan or typed_engine.manifest["index_type"] in EXACT_INDEXES
    for k in (1, 10, len(expected) + 5):
        _assert_exact(typed_engine, text, expected, k, exact=exact)


def test_query_refine_and_results_keep_the_filter(typed_engine):
    where = "label in (ring, ellipse) and not id in (2, 4)"
    result = typed_engine.query_id(6, k=5, where=where)
    matching = set(typed_engine.select(where).ids.tolist())
    assert {h.id for h in result.hits} <= matching and len(result.hits) == 5
    assert result.where == Filter.parse(where) and result.to_dict()["where"] == where
    refined = typed_engine.refine(result, more=[result.hits[1].id], less=[result.hits[2].id])
    assert refined.where == result.where and len(refined.hits) == 5
    assert {h.id for h in refined.hits} <= matching and result.hits[2].id not in {h.id for h in refined.hits}
    batch = typed_engine.query_batch(typed_engine.bundle.images([6, 7]), k=3, where=where)
    assert all({h.id for h in r.hits} <= matching for r in batch)
    assert typed_engine.query_id(6, k=5, where="id = 100000").hits == []
    # Trust speaks of the whole collection, filtered or not: no warning because the matches are far.
    assert typed_engine.query_id(6, k=5, where="id = 100000").trust == typed_engine.query_id(6, k=5).trust
    # ... for a batch as for one query.
    images = typed_engine.bundle.images(typed_engine.bundle.live_ids()[:20])
    plain = [r.trust for r in typed_engine.query_batch(images, k=3)]
    assert [r.trust for r in typed_engine.query_batch(images, k=3, where="id = 100000")] == plain
    assert [r.trust for r in typed_engine.query_batch(images[:3], k=3, where="id = 100000")] == plain[:3]


def test_a_compressed_reranked_index_filters_exactly(tmp_path, monkeypatch):
    """`auto` at scale: IVF + 4-bit PQ fast-scan codes re-ranked from the stored search vectors."""
    from aesearch.pipelines.stream import StreamOptions, stream_build
    from aesearch.sources.arrays import ArraySource

    n = 2000
    images = np.resize(synthetic_images(400), (n, 28, 28))
    images = np.clip(images.astype(int) + np.random.default_rng(0).integers(0, 40, images.shape), 0, 255)
    options = StreamOptions(whiten_dims=32, shifts=((0, 0),), chunk_size=500, max_index_memory=n * 100)
    stream_build(tmp_path / "b", ArraySource(images.astype(np.uint8)), tiny_checkpoint(), options, log=None)
    Collection.open(tmp_path / "b").remove([1, 2, 3])
    engine = SearchEngine.load(tmp_path / "b")
    assert "PQ" in engine.manifest["index_type"]
    live = engine.bundle.live_ids()
    for scan in (10**12, 0):
        monkeypatch.setattr(defaults, "FILTER_SCAN_MAX_FLOATS", scan)
        engine._subsets.clear()
        _assert_exact(engine, "id < 30 or id >= 1990", live[(live < 30) | (live >= 1990)], 10, exact=scan > 0)
        engine._subsets.clear()
        # Half the images, spread over every list: the widened probe keeps the tuned recall.
        _assert_exact(engine, "id < 1000", live[live < 1000], 10, exact=scan > 0)


def test_duplicates_within_a_filter_pair_only_matching_images(tmp_path):
    from aesearch.quality.duplicates import find_duplicates

    images = synthetic_images(60)
    images[30:40] = images[:10]  # ten exact copies
    path = make_bundle(tmp_path / "b", images=images)
    engine = SearchEngine.load(path)
    everything = find_duplicates(engine, threshold=0)
    within = find_duplicates(engine, threshold=0, where="id < 35")
    assert len(everything.groups) == 10 and len(within.groups) == 5 and within.where == "id < 35"
    assert all(all(i < 35 for i in group.ids) for group in within.groups)


def test_a_filter_sees_the_images_of_the_state_loaded(bundle_copy):
    engine = SearchEngine.load(bundle_copy)
    assert len(engine.select("id < 10")) == 10
    Collection.open(bundle_copy).remove([1])
    assert len(SearchEngine.load(bundle_copy).select("id < 10")) == 9


# --- the CLI and the HTTP API ---


def test_cli_query_and_duplicates_take_where(tiny_bundle, tmp_path):
    import json

    from click.testing import CliRunner

    from aesearch.interfaces.cli import cli

    runner = CliRunner()
    common = ["--index-dir", str(tiny_bundle)]
    result = runner.invoke(
        cli, ["query", "--id", "6", "-k", "4", "--where", "label = ring", "--json", "--no-picture", *common]
    )
    body = json.loads(result.output)
    assert result.exit_code == 0 and body["where"] == "label = ring"
    assert all(h["label_name"] == "ring" for h in body["hits"]) and len(body["hits"]) == 4
    result = runner.invoke(cli, ["query", "--id", "6", "--where", "id > 10000", "--no-picture", *common])
    assert result.exit_code == 0 and result.output.splitlines()[-1] == (
        "Within: id > 10000 (no indexed image matches it: loosen the filter)"
    )
    out = str(tmp_path / "d.png")
    result = runner.invoke(cli, ["duplicates", "--where", "id < 50", "--json", "--out", out, *common])
    assert result.exit_code == 0 and json.loads(result.output)["where"] == "id < 50"
    for command in (["query", "--id", "6", "--no-picture"], ["duplicates", "--out", out]):
        for bad, message in [("label = Ring", "did you mean 'ring'"), ("id in (1", "it ends where")]:
            result = runner.invoke(cli, [*command, "--where", bad, *common])
            assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1


def test_server_search_takes_where_as_a_form_field_or_a_query_parameter(tiny_bundle):
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from aesearch.interfaces.server import create_app

    client = TestClient(create_app(tiny_bundle), base_url="http://localhost")
    engine = SearchEngine.load(tiny_bundle)
    buffer = io.BytesIO()
    Image.fromarray(engine.image(9)).save(buffer, format="PNG")
    files = {"image": ("q.png", buffer.getvalue(), "image/png")}
    lasso = ", ".join(str(i) for i in range(0, 120, 3))
    expected = [h.id for h in engine.query(engine.image(9), k=5, where=f"id in ({lasso})").hits]
    by_form = client.post("/api/search?k=5", files=files, data={"where": f"id in ({lasso})"})
    by_query = client.post(f"/api/search?k=5&where=id in ({lasso})", files=files)
    for response in (by_form, by_query):
        assert response.status_code == 200 and [h["id"] for h in response.json()["hits"]] == expected
    assert by_form.json()["where"].startswith("id in (0, 3, 6")
    refined = client.post(f"/api/search?k=5&less={expected[1]}", files=files, data={"where": f"id in ({lasso})"})
    assert all(h["id"] % 3 == 0 for h in refined.json()["hits"]), "feedback stays within the filter"
    bad = client.post("/api/search?k=5", files=files, data={"where": "label = nope"})
    assert bad.status_code == 400 and bad.json()["detail"].startswith("bad filter: no class 'nope'")
