"""A colour member's prior (model/prior.py, training/prior.py): its search space in parts, its
neighbours, its framing of transparent images, and a training that fills its fixed parts."""

import numpy as np
import pytest

from aesearch.model.architecture import ModelConfig
from aesearch.search.index import AffineTransform, to_search_space

LAYOUT = ((5, 1.0, False), (4, 0.5, False), (6, 0.5, True))


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_a_vector_in_parts_is_searched_as_each_part_unit_length_and_weighted():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 15)).astype(np.float32)
    transform = AffineTransform.whitening(x, dims=3, shrinkage=0.03, layout=LAYOUT)
    plain = AffineTransform.whitening(x[:, 9:], dims=3, shrinkage=0.03)  # the whitened part alone
    np.testing.assert_allclose(transform.mean, plain.mean, rtol=1e-6)
    np.testing.assert_allclose(np.abs(transform.matrix), np.abs(plain.matrix), rtol=1e-5)
    assert (transform.in_dims, transform.out_dims) == (15, 5 + 4 + 3)
    expected = np.concatenate(
        [_unit(x[:, :5]), 0.5 * _unit(x[:, 5:9]), 0.5 * _unit((x[:, 9:] - plain.mean) @ plain.matrix)], 1
    )
    got = transform(x)
    np.testing.assert_allclose(np.abs(got), np.abs(expected), rtol=1e-4, atol=1e-6)
    # cosine: the whole vector then has length sqrt(1.5) before the index's own normalisation
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), np.sqrt(1.5), rtol=1e-5)
    searched = to_search_space(x, "cosine", transform)
    np.testing.assert_allclose(searched, got / np.sqrt(1.5), rtol=1e-5, atol=1e-7)
    # streamed moments of the whole vector learn the same whitening
    centred = x.astype(np.float64) - x.mean(0)
    again = AffineTransform.from_moments(
        x.mean(0), np.cov(centred, rowvar=False), dims=3, shrinkage=0.03, layout=LAYOUT
    )
    np.testing.assert_allclose(again.matrix, transform.matrix, rtol=1e-4, atol=1e-6)


def test_a_transform_in_parts_round_trips_through_its_arrays_and_is_checked():
    rng = np.random.default_rng(1)
    transform = AffineTransform.whitening(rng.normal(size=(50, 15)), dims=4, layout=LAYOUT)
    arrays = transform.to_arrays()
    back = AffineTransform.checked(arrays["mean"], arrays["matrix"], 15, arrays["layout"])
    assert back.layout == LAYOUT
    x = rng.normal(size=(3, 15)).astype(np.float32)
    np.testing.assert_array_equal(back(x), transform(x))
    with pytest.raises(ValueError, match="does not fit"):
        AffineTransform.checked(arrays["mean"], arrays["matrix"], 16, arrays["layout"])
    unwhitened = AffineTransform.parts_only(LAYOUT)
    np.testing.assert_allclose(unwhitened(x)[:, 9:], 0.5 * _unit(x[:, 9:]), rtol=1e-5)


def test_each_training_image_gets_its_nearest_other_images():
    from aesearch.training.prior import nearest_others

    rng = np.random.default_rng(2)
    space = _unit(rng.normal(size=(200, 8))).astype(np.float32)
    space[7] = space[3]  # a duplicate: its twin is its nearest, and it is never its own neighbour
    found = nearest_others(space, 5)
    distances = ((space[:, None] - space[None]) ** 2).sum(-1)
    np.fill_diagonal(distances, np.inf)
    expected = np.argsort(distances, axis=1, kind="stable")[:, :5]
    assert (found != np.arange(200)[:, None]).all()
    assert found[3, 0] == 7 and found[7, 0] == 3
    same = [set(a) == set(b) for a, b in zip(found, expected, strict=True)]
    assert np.mean(same) > 0.97  # ties at float32 rounding may swap the fifth


def test_a_member_with_a_prior_keeps_transparency_and_its_grey_part_frames_it_as_the_file_is_framed():
    from aesearch.model import prior
    from aesearch.sources.preprocess import preprocess

    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[10:30, 10:30] = (250, 250, 240, 255)  # a white page, transparent around it
    rgba[14:26, 18:22, :3] = 40  # a dark mark on it
    plain = ModelConfig(image_size=32, channels=3, widths=(8, 16), z_size=8, framing="photo")
    with_prior = ModelConfig(**{**plain.to_dict(), "widths": (8, 16), "prior": "grey-histogram"})
    shown = preprocess(rgba, model_config=plain)
    assert shown.shape == (32, 32, 3) and shown[0, 0].tolist() == [1, 1, 1]  # as a page shows it
    kept = preprocess(rgba, model_config=with_prior)
    assert kept.shape == (32, 32, 4) and kept[0, 0].tolist() == [0, 0, 0, 0] and kept[16, 16, 3] == 1
    np.testing.assert_allclose(prior.pictures(kept[None])[0], shown, atol=2 / 255)  # the same picture
    # The grey part: the page light on black, as the grey contract frames the file; from the picture
    # (white onto white) it would be the dark mark alone, negated.
    from_file = preprocess(rgba)
    from_input = prior.silhouettes(kept[None])[0]
    assert np.abs(from_input - from_file).mean() < 0.06  # resampled from 32 px, not from 40
    assert from_file[2, 2] > 0.8 and from_file[14, 14] < 0.3  # the page light (on black, trimmed), its mark dark
    from_picture = preprocess((shown * 255).astype(np.uint8))
    assert np.abs(from_picture - from_file).mean() > 0.2


def test_training_a_prior_member_fills_its_fixed_parts_from_the_shipped_model():
    import torch

    from aesearch.model.checkpoint import load_checkpoint
    from aesearch.model.runtime import NumpyAutoEncoder
    from aesearch.model.shipped import shipped_model
    from aesearch.sources.fashion_mnist import FashionMNIST, Split
    from aesearch.training.train import TrainConfig, fit

    config = ModelConfig(
        image_size=32, channels=3, widths=(8, 16, 16), z_size=20, framing="photo", prior="grey-histogram"
    )
    rng = np.random.default_rng(3)
    images = np.zeros((48, 32, 32, 4), np.uint8)  # premultiplied RGBA: shapes on a transparent background
    for i, image in enumerate(images):
        top, side = rng.integers(2, 12), rng.integers(8, 18)
        image[top : top + side, top : top + side] = (200, 30, 30, 255) if i % 2 else (30, 30, 200, 255)
    x = torch.from_numpy(images)
    labels = torch.zeros(48, dtype=torch.int64)
    data = FashionMNIST(Split("train", x[:40], labels[:40]), Split("test", x[40:], labels[40:]), None)
    train = TrainConfig.for_recipe("retrieval", epochs=2, batch_size=16, neighbours=3).with_z_size(20)
    result = fit(train, data, model_config=config, progress=False, log=None)
    weights = result.model.weights()
    shipped = load_checkpoint(shipped_model()).weights
    for name, value in shipped.items():
        np.testing.assert_array_equal(weights[f"prior.grey.{name}"], value)  # not trained
    assert np.abs(weights["prior.condition_matrix"]).sum() > 0
    assert np.isfinite(result.test_mse) and result.test_mse < 0.5
    runtime = NumpyAutoEncoder(weights, config)
    vectors = runtime.encode(images[:4].astype(np.float32) / 255)
    assert vectors.shape == (4, 314 + 512 + 20) and np.isfinite(runtime.decode(vectors)).all()


def test_a_prior_members_search_vector_is_1024_wide_so_a_million_get_a_pq_index():
    from aesearch.model.architecture import member_for
    from aesearch.pipelines.builder import StreamOptions
    from aesearch.pipelines.stream import check_build_options, options_for_model
    from aesearch.search.index_choice import choose_index

    member = member_for(64, 3, 256, prior="grey-histogram")
    options = options_for_model(StreamOptions(), member)
    assert options.whiten_dims == 198 and options.layout == member.search_layout
    assert member.prior_size + options.whiten_dims == 1024
    check_build_options(1_000_000, member, StreamOptions())  # 826 + 192 = 1,018 would have no PQ code size
    assert "PQ" in choose_index(1_000_000, 1024).index_type
    asked = options_for_model(StreamOptions(whiten_dims=100), member)
    assert asked.whiten_dims == 100  # a width the user gives is kept


def test_a_colour_invariant_member_searches_without_the_hue_telling_histogram():
    from aesearch.model.architecture import member_for
    from aesearch.pipelines.collection import _check_colour_invariant

    member = member_for(32, 3, 64, prior="grey-histogram")
    assert _check_colour_invariant(member, True).prior == ""
    assert _check_colour_invariant(member, False).prior == "grey-histogram"
