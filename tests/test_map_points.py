"""What the page's map is sent: categories, the stratified sample and the binary, against oracles."""

import numpy as np
import pytest

from aesearch.errors import InvalidArgumentError
from aesearch.quality import map_points
from aesearch.quality.map_points import MAX_CATEGORIES, OTHER, pack, stratified_sample, unpack
from aesearch.search.engine import SearchEngine


@pytest.mark.parametrize(
    ("sizes", "limit"),
    [((500, 300, 200), 100), ((9000, 900, 90, 9, 1), 1000), ((5, 5), 3), ((1, 1, 1, 1), 2), ((40, 2), 41)],
)
def test_the_sample_keeps_every_category_share(sizes, limit):
    codes = np.random.default_rng(1).permutation(np.repeat(np.arange(len(sizes)), sizes)).astype(np.uint16)
    keep = stratified_sample(codes, limit)
    assert len(keep) == limit and len(np.unique(keep)) == limit and (np.diff(keep) > 0).all()
    got = np.bincount(codes[keep], minlength=len(sizes))
    share = np.asarray(sizes) * limit / len(codes)
    if len(sizes) <= limit:
        assert (got >= 1).all(), "every category keeps a point"
    else:
        assert (got <= 1).all() and got[np.argsort(-np.asarray(sizes))[:limit]].all(), "the largest ones"
    assert (np.abs(got - share) <= np.maximum(1, len(sizes))).all(), (got, share)
    assert np.array_equal(keep, stratified_sample(codes, limit)), "the same sample every time"


def test_with_room_for_all_every_point_is_sent():
    codes = np.zeros(10, np.uint16)
    assert np.array_equal(stratified_sample(codes, 10), np.arange(10))
    with pytest.raises(InvalidArgumentError, match="at least one point"):
        stratified_sample(codes, 0)


def test_pack_round_trips_in_a_shuffled_order():
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(1001, 2)).astype(np.float32)
    ids, codes = np.arange(1001, dtype=np.int64) * 7, (np.arange(1001) % 5).astype(np.uint16)
    data = pack(coords, ids, codes)
    assert len(data) == 1001 * 14
    got_coords, got_ids, got_codes = unpack(data)
    assert not np.array_equal(got_ids, ids), "shuffled: no category is always drawn last"
    order = np.argsort(got_ids)
    assert np.array_equal(got_ids[order], ids) and np.array_equal(got_codes[order], codes)
    assert np.array_equal(got_coords[order], coords)
    with pytest.raises(InvalidArgumentError, match="cannot be sent"):
        pack(coords[:1], np.array([2**32]), codes[:1])


def test_classes_are_the_categories_of_a_labelled_bundle(tiny_bundle):
    engine = SearchEngine.load(tiny_bundle)
    ids = engine.bundle.live_ids()
    found = map_points.categories(engine, ids)
    labels = engine.bundle.records(ids)["label"]
    assert found.kind == "class" and found.names == engine.bundle.class_names[: len(found.names)]
    assert [found.names[c] for c in found.codes] == [engine.bundle.class_names[label] for label in labels]


def test_past_the_cap_the_rarest_categories_are_other():
    names = [f"folder-{i}" for i in range(MAX_CATEGORIES + 10)]
    keys = np.repeat(np.arange(len(names)), np.arange(len(names), 0, -1))  # folder-0 the largest
    found = map_points._capped("folder", names, keys)
    assert len(found.names) == MAX_CATEGORIES and found.names[-1] == OTHER
    assert found.names[:-1] == names[: MAX_CATEGORIES - 1]
    assert found.counts()[-1] == int((keys >= MAX_CATEGORIES - 1).sum())


def test_folders_are_the_categories_of_an_unlabelled_collection(tmp_path, model):
    from image_folders import write_image_folder

    from aesearch.pipelines.collection import build_from_folders
    from aesearch.search.index import IndexSpec

    folder = write_image_folder(tmp_path / "pics", n=30)
    spec = IndexSpec("flat", "cosine", {}, "none")
    build_from_folders(tmp_path / "idx", images=[folder.root], model=model, spec=spec, shifts=((0, 0),), log=None)
    engine = SearchEngine.load(tmp_path / "idx")
    ids = engine.bundle.live_ids()
    found = map_points.categories(engine, ids)
    expected = [p.split("/")[0] if "/" in p else "." for p in engine.bundle.paths_of(ids)]
    assert found.kind == "folder" and [found.names[c] for c in found.codes] == expected
    assert {"ellipse", "rectangle", "ring", "."} <= set(found.names)
