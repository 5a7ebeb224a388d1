"""SearchEngine: the query path end to end, against the NumPy runtime and brute force (oracles)."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from aesearch.errors import InvalidArgumentError
from aesearch.model.network import AutoEncoder
from aesearch.search.engine import SearchEngine


@pytest.fixture(scope="module")
def engine(tiny_bundle):
    return SearchEngine.load(tiny_bundle)


def test_len_image_and_hit_metadata(engine):
    assert len(engine) == 120
    image = engine.image(100)
    assert image.dtype == np.uint8 and image.shape == (28, 28)
    hit = engine.hit(100)
    assert (hit.split, hit.position, hit.label, hit.label_name) == ("test", 10, 1, "rectangle")


def test_indexed_image_finds_itself_first_at_distance_zero(engine):
    for id in (0, 57, 119):
        result = engine.query(engine.image(id), k=5)
        assert result.hits[0].id == id and result.hits[0].distance == 0.0
        assert [h.rank for h in result.hits] == [1, 2, 3, 4, 5]
        assert all(a.distance <= b.distance for a, b in zip(result.hits, result.hits[1:], strict=False))
        assert engine.query_id(id, k=5).hits == result.hits


def test_every_input_type_gives_the_same_answer(engine, tmp_path):
    image = engine.image(33)
    path = tmp_path / "q.png"
    Image.fromarray(image).save(path)
    sources = [
        path,
        str(path),
        path.read_bytes(),
        Image.fromarray(image),
        image,
        torch.from_numpy(image),
        image.astype(np.float32) / 255,
    ]
    answers = [[h.id for h in engine.query(s, k=4).hits] for s in sources]
    assert all(a == answers[0] for a in answers)


def test_search_equals_brute_force_over_the_stored_images(engine):
    """Oracle: encode every stored image, rank by Euclidean distance with numpy."""
    everything = engine.encode(engine.bundle.images(engine.bundle.live_ids()))
    queries = everything[[3, 40, 90]] + 0.05
    distances, ids = engine.search(queries, 6)
    brute = np.sqrt(((queries[:, None] - everything[None]) ** 2).sum(-1))
    np.testing.assert_array_equal(ids, np.argsort(brute, axis=1)[:, :6])
    np.testing.assert_allclose(distances, np.sort(brute, axis=1)[:, :6], rtol=1e-4, atol=1e-5)


def test_encode_reconstruct_decode_match_the_torch_model(engine):
    """Oracle: the PyTorch model; encode() is its z averaged over the bundle's grid-phase shifts."""
    assert engine.shifts == [(0, 0), (1, 1)]
    model = AutoEncoder.from_weights(engine.bundle.checkpoint.weights, engine.bundle.checkpoint.model_config)
    images = engine.bundle.images(np.arange(10)).astype(np.float32) / 255
    moved = np.zeros_like(images)
    moved[:, 1:, 1:] = images[:, :-1, :-1]  # one pixel down and right, black filling in
    with torch.no_grad():
        z = model.encode(torch.from_numpy(images)[:, None]).numpy()
        z_moved = model.encode(torch.from_numpy(moved)[:, None]).numpy()
        x = model.decode(torch.from_numpy(z))[:, 0].numpy()
    np.testing.assert_allclose(engine.encode(images), (z + z_moved) / 2, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(engine.decode(z), x, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(engine.reconstruct(images), x, rtol=1e-4, atol=1e-5)


def test_result_holds_query_reconstruction_and_error(engine):
    result = engine.query(engine.image(7), k=3)
    assert result.query.shape == result.reconstruction.shape == (28, 28)
    assert (
        result.reconstruction.dtype == np.float32
        and 0 <= result.reconstruction.min() <= result.reconstruction.max() <= 1
    )
    assert result.reconstruction_mse == pytest.approx(float(((result.query - result.reconstruction) ** 2).mean()))
    assert set(result.to_dict()) >= {"k", "reconstruction_mse", "hits"}
    assert result.to_dict()["hits"][0] == result.hits[0].to_dict()


def test_batch_equals_single_queries(engine):
    images = [engine.image(i) for i in (1, 2, 3)] + [255 - engine.image(4)]
    batch = engine.query_batch(np.stack(images), k=4)
    singles = [engine.query(im, k=4) for im in images]
    for b, s in zip(batch, singles, strict=True):
        assert [h.id for h in b.hits] == [h.id for h in s.hits]
        np.testing.assert_array_equal(b.query, s.query)
    files = [io.BytesIO() for _ in images]
    for f, im in zip(files, images, strict=True):
        Image.fromarray(im).save(f, format="PNG")
    assert [r.hits for r in engine.query_batch([f.getvalue() for f in files], k=4)] == [r.hits for r in singles]


@pytest.mark.parametrize("k", [0, -3, 121, 2.5, True])
def test_bad_k(engine, k):
    with pytest.raises(InvalidArgumentError, match="k must be an integer from 1 to 120"):
        engine.query(engine.image(0), k=k)


@pytest.mark.parametrize("id", [-1, 120, 3.0])
def test_bad_id(engine, id):
    message = r"no image with id -?\d+ in .*ids run from 0 to 119|image id must be an integer"
    with pytest.raises(InvalidArgumentError, match=message):
        engine.image(id)


def test_bad_vectors(engine):
    with pytest.raises(InvalidArgumentError, match="vectors must have shape"):
        engine.search(np.zeros((2, 5), np.float32), 3)


def test_unusable_sources_and_repr(engine):
    from aesearch.errors import ImageError

    with pytest.raises(ImageError, match="cannot use a NoneType as an image"):
        engine.query(None)
    assert repr(engine).startswith("SearchEngine(") and "120 images" in repr(engine)


def test_hits_of_a_query_are_those_looked_up_one_by_one_across_segments(bundle_copy):
    """query() locates all its hits in one lookup; each must equal hit() for its id (the oracle), also
    for ids in a delta segment and with one removed."""
    from conftest import synthetic_images

    from aesearch.pipelines.writer import Collection

    collection = Collection.open(bundle_copy)
    added = collection.add(synthetic_images(6, seed=3), paths=[f"new/{i}.png" for i in range(6)])
    collection.remove([int(added[0]), 5])
    engine = SearchEngine.load(bundle_copy)
    for query in (engine.image(int(added[1])), engine.image(7)):
        result = engine.query(query, k=12)
        assert [h.rank for h in result.hits] == list(range(1, 13))
        assert not {int(added[0]), 5} & {h.id for h in result.hits}
        for h in result.hits:
            assert h == engine.hit(h.id, rank=h.rank, distance=h.distance)
    assert engine.query(engine.image(int(added[1])), k=1).hits[0].path == "new/1.png"
