"""The notebook views (search/notebook.py): parsed with html.parser, thumbnails decoded and compared
with the bundle's images, hostile paths and class names shown as text and never as markup."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import replace

import numpy as np
import pytest
from html_tree import parse
from PIL import Image

from aesearch import defaults
from aesearch.colours import signed_colours as picture_colours
from aesearch.quality.duplicates import DuplicateGroup, find_duplicates
from aesearch.search import notebook
from aesearch.search.engine import SearchEngine
from aesearch.store.paths import shown

HOSTILE = [
    "<script>alert(1)</script>.png",
    "a\"b'<img src=x onerror=alert(1)>.png",
    "bytes/x\udcff\udcfe.png",  # not UTF-8 on disk: PEP 383 surrogates
    "new\nline &amp; tab\t.png",
    "long/" * 60 + "name.png",
]


@pytest.fixture(scope="module")
def engine(tiny_bundle):
    return SearchEngine.load(tiny_bundle)


def decoded(img) -> np.ndarray:
    src = img.attrs["src"]
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src[len(prefix) :]))))


def test_a_result_shows_the_query_its_reconstruction_and_every_hit(engine):
    result = engine.query(engine.image(7), k=5)
    root = parse(result._repr_html_())
    view = root.find("div", "aesearch-result")
    assert np.array_equal(decoded(view.find("figure", "aesearch-query").find("img")), notebook.grey(result.query))
    reconstruction = view.find("figure", "aesearch-reconstruction").find("img")
    assert np.array_equal(decoded(reconstruction), notebook.grey(result.reconstruction))
    tiles = view.find("div", "aesearch-grid").find_all("figure", "aesearch-hit")
    assert len(tiles) == 5
    for tile, hit in zip(tiles, result.hits, strict=True):
        (img,) = tile.find_all("img")
        assert np.array_equal(decoded(img), engine.image(hit.id)), "each thumbnail is its hit's indexed image"
        lines = [div.text() for div in tile.find("figcaption").find_all("div")]
        assert lines == [f"#{hit.rank} · {hit.distance:.4f}", hit.label_name, f"id {hit.id} · {hit.split}"]
    assert not root.find_all(cls="aesearch-more") and not root.find_all(cls="aesearch-note")
    assert "5 hits" in view.find("div", "aesearch-summary").text()
    assert not root.find_all("script") and not root.find_all("style"), "no script, no style block: inline only"


def test_the_grid_stops_at_the_limit_and_says_how_many_more(engine):
    result = engine.query(engine.image(0), k=len(engine))
    root = parse(notebook.result_html(result))
    assert len(root.find_all("figure", "aesearch-hit")) == defaults.NOTEBOOK_MAX_TILES
    assert root.find("div", "aesearch-more").text() == f"and {len(engine) - defaults.NOTEBOOK_MAX_TILES} more hits"
    assert len(parse(notebook.result_html(result, limit=3)).find_all("figure", "aesearch-hit")) == 3
    calls = []
    counted = replace(result, images_of=lambda ids: calls.append(len(ids)) or engine.bundle.images(ids))
    counted._repr_html_()
    assert calls == [defaults.NOTEBOOK_MAX_TILES], "the shown hits' images are read once, and only those"


def test_hostile_paths_and_class_names_are_text_never_markup(engine):
    result = engine.query(engine.image(1), k=len(HOSTILE))
    hits = [
        replace(hit, path=path, label_name=f"<b>{path}</b>") for hit, path in zip(result.hits, HOSTILE, strict=True)
    ]
    page = replace(result, hits=hits)._repr_html_()
    page.encode("utf-8")  # what Jupyter sends: no lone surrogate left over from a non-UTF-8 name
    root = parse(page)
    assert not root.find_all("script")
    tiles = root.find_all("figure", "aesearch-hit")
    assert [len(t.find_all("img")) for t in tiles] == [1] * len(HOSTILE), "no injected <img>"
    for tile, hit in zip(tiles, hits, strict=True):
        assert tile.find("span", "aesearch-path").text() == shown(hit.path)
        assert tile.attrs["title"] == shown(hit.path)
        rank, label = tile.find_all("b")  # the class name's own <b> is text inside the second
        assert rank.text() == f"#{hit.rank}" and label.text() == shown(hit.label_name)
    assert "\\xff\\xfe" in tiles[2].find("span", "aesearch-path").text(), "undecodable bytes shown as \\xff"
    assert "\\n" in tiles[3].find("span", "aesearch-path").text() and "&amp;" in tiles[3].text()
    text = repr(replace(result, hits=hits))
    assert len(text.splitlines()) == 1 + len(HOSTILE), "one line a hit, whatever the path holds"


def test_a_result_without_an_image_source_shows_the_grid_without_thumbnails(engine):
    result = replace(engine.query(engine.image(2), k=4), images_of=None)
    root = parse(result._repr_html_())
    tiles = root.find_all("figure", "aesearch-hit")
    assert len(tiles) == 4 and not any(t.find_all("img") for t in tiles)
    assert [t.find("figcaption").find("div").text() for t in tiles] == [
        f"#{h.rank} · {h.distance:.4f}" for h in result.hits
    ]
    assert "without thumbnails" in root.find("div", "aesearch-note").text()
    assert len(root.find_all("img")) == 2, "the query and its reconstruction are in the result itself"


def test_an_image_source_that_fails_or_answers_wrongly_still_shows_the_grid(engine):
    result = engine.query(engine.image(2), k=3)

    def down(ids):
        raise ConnectionError("server <gone>")

    for source, said in [(down, "ConnectionError: server <gone>"), (lambda ids: np.zeros((1, 28, 28)), "shape")]:
        root = parse(replace(result, images_of=source)._repr_html_())
        assert len(root.find_all("figure", "aesearch-hit")) == 3
        assert not any(t.find_all("img") for t in root.find_all("figure", "aesearch-hit"))
        assert said in root.find("div", "aesearch-note").text()


def test_feedback_marks_show_under_their_hits(engine):
    result = engine.query(engine.image(5), k=6)
    refined = engine.refine(result, more=[result.hits[1].id])
    root = parse(refined._repr_html_())
    marked = [t for t in root.find_all("figure", "aesearch-hit") if "more like" in t.text()]
    assert [t.find("b", None).text() for t in marked] == [
        f"#{h.rank}" for h in refined.hits if h.id == result.hits[1].id
    ]
    assert "1 more like, 0 less like" in root.find("div", "aesearch-summary").text()


def test_an_out_of_distribution_query_says_so(engine):
    result = engine.query(np.zeros((28, 28), np.uint8), k=2)
    assert not result.in_distribution
    assert "unlike the indexed images" in parse(result._repr_html_()).find("div", "aesearch-summary").text()
    assert "OUT OF DISTRIBUTION" in repr(result)


def test_the_text_repr_is_short_and_names_the_hits(engine):
    result = engine.query(engine.image(3), k=30)
    lines = repr(result).splitlines()
    assert lines[0].startswith("QueryResult(30 hits") and len(lines) == 12 and lines[-1] == "  ... and 20 more"
    assert lines[1].split()[:3] == ["#1", "id", str(result.hits[0].id)]
    assert "array" not in repr(result)


def test_an_explanation_shows_both_images_their_differences_and_the_path(engine):
    result = engine.query(engine.image(9), k=3)
    e = engine.explain(result, result.hits[2], steps=5)
    root = parse(e._repr_html_())
    view = root.find("div", "aesearch-explanation")
    images = [decoded(f.find("img")) for f in view.find_all("figure", "aesearch-image")]
    expected = [
        notebook.grey(e.query),
        engine.image(e.hit.id),
        notebook.grey(e.query_reconstruction),
        notebook.grey(e.hit_reconstruction),
        picture_colours(e.pixel_difference),  # the explanation picture's colours (figures/explain.py)
        picture_colours(e.reconstruction_difference),
    ]
    assert len(images) == len(expected)
    for got, want in zip(images, expected, strict=True):
        assert np.array_equal(got, want)
    frames = view.find("div", "aesearch-strip").find_all("figure", "aesearch-frame")
    assert [f.text() for f in frames] == [f"{t:.2f}" for t in e.fractions]
    assert all(
        np.array_equal(decoded(f.find("img")), notebook.grey(x)) for f, x in zip(frames, e.interpolation, strict=True)
    )
    assert f"#{e.hit.rank}" in view.find("div").text() and f"id {e.hit.id}" in view.find("div").text()
    assert repr(e).startswith(f"Explanation(hit #{e.hit.rank}, id {e.hit.id}") and "\n" not in repr(e)


@pytest.fixture(scope="module")
def copies_engine(tmp_path_factory):
    from conftest import make_bundle, synthetic_images

    images = synthetic_images(60, seed=4)
    images[40], images[50] = images[3], images[3]
    return SearchEngine.load(make_bundle(tmp_path_factory.mktemp("copies") / "b", images=images))


def test_a_duplicate_group_shows_its_members_and_keeps_its_json(copies_engine):
    report = find_duplicates(copies_engine, threshold=0)
    (group,) = report.groups
    root = parse(group._repr_html_())
    members = root.find("div", "aesearch-group").find_all("figure", "aesearch-member")
    assert [m.find("b").text() for m in members] == ["id 3", "id 40", "id 50"]
    for member, id in zip(members, group.ids, strict=True):
        assert np.array_equal(decoded(member.find("img")), copies_engine.image(id))
    assert "3 images" in root.text() and "exact copies" in root.text()
    assert group.to_dict() == {
        "ids": [3, 40, 50],
        "exact": True,
        "splits": ["train", "train", "test"],
        "paths": [""] * 3,
        "max_distance": 0.0,
    }
    assert json.loads(json.dumps(report.to_dict()))["groups"][0] == group.to_dict()
    assert "images_of" not in repr(group)


def test_a_group_with_hostile_paths_and_no_images(copies_engine):
    paths = HOSTILE[:3]
    group = DuplicateGroup([1, 2, 3], False, ["train", "test", "train"], paths, 0.0042)
    root = parse(group._repr_html_())
    members = root.find_all("figure", "aesearch-member")
    assert [m.find("span", "aesearch-path").text() for m in members] == [shown(p) for p in paths]
    assert not root.find_all("script") and not any(m.find_all("img") for m in members)
    assert "<= 0.0042" in root.text()
    big = DuplicateGroup(list(range(60)), True, ["train"] * 60, [""] * 60, 0.0, copies_engine.bundle.images)
    assert len(parse(notebook.group_html(big, limit=10)).find_all("figure", "aesearch-member")) == 10
    assert "and 50 more images" in parse(notebook.group_html(big, limit=10)).text()


def test_a_selection_shows_its_first_images_with_their_records(engine):
    ids = list(range(110))
    records = [engine.hit(i).to_dict() for i in ids[: defaults.NOTEBOOK_MAX_TILES]]
    records[0]["path"] = HOSTILE[0]
    root = parse(notebook.selection_html(ids, engine.bundle.images, records))
    items = root.find("div", "aesearch-selection").find_all("figure", "aesearch-item")
    assert len(items) == defaults.NOTEBOOK_MAX_TILES and "and 10 more images" in root.text()
    assert "110 images selected" in root.text()
    for item, record in zip(items, records, strict=True):
        assert np.array_equal(decoded(item.find("img")), engine.image(record["id"]))
        assert item.find("b").text() == record["label_name"] and f"id {record['id']}" in item.text()
    assert items[0].find("span", "aesearch-path").text() == shown(HOSTILE[0]) and not root.find_all("script")
    hits = [engine.hit(4), engine.hit(5)]  # Hit objects work too
    items = parse(notebook.selection_html([4, 5], None, hits)).find_all("figure", "aesearch-item")
    assert [i.find("b").text() for i in items] == [h.label_name for h in hits]


def test_limits_are_checked(engine):
    from aesearch.errors import InvalidArgumentError

    result = engine.query(engine.image(0), k=2)
    for bad in (0, -1, 2.5, "3"):
        with pytest.raises(InvalidArgumentError, match="limit"):
            notebook.result_html(result, limit=bad)
