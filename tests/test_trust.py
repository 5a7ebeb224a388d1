"""The trust score: percentiles against the indexed distribution, and the out-of-distribution flag."""

import numpy as np
import pytest
from click.testing import CliRunner
from matplotlib import cbook
from PIL import Image

from aesearch.interfaces.cli import cli
from aesearch.search.engine import SearchEngine
from aesearch.search.trust import JOINT_PERCENTILE, THRESHOLD_PERCENTILE, calibrate


def half_full(n):
    """n images whose left half (or a bit more, varying) is content: coverage 0.5 to 0.6."""
    images = np.zeros((n, 28, 28), np.float32)
    for i in range(n):
        images[i, :, : 14 + i % 3] = 1.0
    return images


@pytest.fixture(scope="module")
def calibration():
    # Reconstruction errors uniform on 0..1, neighbour distances uniform on 0..10.
    return calibrate(np.arange(1001) / 1000, np.arange(1001) / 100, half_full(1001))


def test_percentiles_by_hand(calibration):
    typical = half_full(1)[0]
    trust = calibration.assess(0.25, 5.0, typical)
    assert trust.reconstruction_percentile == pytest.approx(25.0)
    assert trust.neighbour_percentile == pytest.approx(50.0)
    assert trust.in_distribution and trust.warning() is None
    assert (THRESHOLD_PERCENTILE, JOINT_PERCENTILE) == (99.5, 97.5)
    assert calibration.assess(0.99, 1.0, typical).in_distribution  # 99th percentile alone: still in
    assert not calibration.assess(0.999, 1.0, typical).in_distribution  # 99.9th alone: out
    assert calibration.assess(0.98, 9.7, typical).in_distribution  # 98th and 97th: in
    assert not calibration.assess(0.98, 9.8, typical).in_distribution  # both past the 97.5th: out
    flagged = calibration.assess(2.0, 10.5, typical)
    assert flagged.reconstruction_percentile == flagged.neighbour_percentile == 100.0
    assert "reconstruction error" in flagged.warning() and "\n" not in flagged.warning()
    assert "nearest match than 100.0%" in flagged.warning()
    # The warning names the signals that flagged the query, never one that did not (it said "farther
    # from its nearest match than 0.0% of them" of an indexed image found at distance 0).
    alone = calibration.assess(0.999, 0.0, typical).warning()
    assert "reconstruction error is above 99.9%" in alone and "nearest match" not in alone
    alone = calibration.assess(0.1, 9.99, typical).warning()
    assert "nearest match than 99.9%" in alone and "reconstruction" not in alone


def test_a_batch_is_assessed_as_each_query_alone(calibration):
    """assess_many against the scalar formula (np.interp on one value, 100 above the maximum)."""
    from aesearch.search.trust import _LEVELS

    rng = np.random.default_rng(0)
    errors, distances = rng.uniform(0, 1.2, 50), rng.uniform(0, 12, 50)
    errors[:3] = [0.0, 1.0, np.inf]
    images = np.concatenate([half_full(25), np.zeros((25, 28, 28), np.float32)])
    many = calibration.assess_many(errors, distances, images)
    for trust, error, distance in zip(many, errors, distances, strict=True):
        expected = 100.0 if error > 1.0 else float(np.interp(error, np.arange(1001) / 1000, _LEVELS))
        assert trust.reconstruction_percentile == pytest.approx(expected)
        expected = 100.0 if distance > 10.0 else float(np.interp(distance, np.arange(1001) / 100, _LEVELS))
        assert trust.neighbour_percentile == pytest.approx(expected)
    assert many == [calibration.assess(e, d, i) for e, d, i in zip(errors, distances, images, strict=True)]
    assert [t.in_distribution for t in many[25:]] == [False] * 25  # empty images: flagged


def test_an_empty_query_is_flagged_whatever_else(calibration):
    empty = calibration.assess(0.1, 1.0, np.zeros((28, 28), np.float32))
    assert empty.content_percentile == 0.0 and not empty.in_distribution
    assert "almost empty" in empty.warning()


def test_round_trip_through_dict(calibration):
    again = type(calibration).from_dict(calibration.to_dict())
    for name in ("reconstruction_quantiles", "neighbour_quantiles", "content_quantiles"):
        np.testing.assert_array_equal(getattr(again, name), getattr(calibration, name))


@pytest.fixture(scope="module")
def engine(trained_bundle):
    return SearchEngine.load(trained_bundle)


def out_of_distribution(photo: bool = False):
    """Inputs unlike any indexed image. The photo only counts against a model of real garments
    (tests/test_realdata.py): to a model of blobs and bars, a portrait framed to 28x28 is a blob."""
    rng = np.random.default_rng(0)
    inputs = {
        "random noise": (rng.random((28, 28)) * 255).astype(np.uint8),
        "blank": np.zeros((28, 28), np.uint8),
        "checkerboard": (np.indices((28, 28)).sum(0) % 2 * 255).astype(np.uint8),
    }
    if photo:
        with cbook.get_sample_data("grace_hopper.jpg") as f:
            inputs["photo of a person"] = np.asarray(Image.open(f).convert("RGB"))
    return inputs


def test_indexed_images_are_in_distribution(engine):
    results = engine.query_batch(engine.bundle.images(np.arange(600, len(engine))), k=3)
    assert np.mean([r.in_distribution for r in results]) >= 0.98


@pytest.mark.parametrize("name", list(out_of_distribution()))
def test_unlike_inputs_are_flagged(engine, name):
    result = engine.query(out_of_distribution()[name], k=3)
    assert not result.in_distribution, result.trust
    assert result.to_dict()["in_distribution"] is False


def test_cli_warns_in_one_line(trained_bundle, tmp_path):
    path = tmp_path / "noise.png"
    Image.fromarray(out_of_distribution()["random noise"]).save(path)
    result = CliRunner().invoke(cli, ["query", str(path), "--index-dir", str(trained_bundle), "--no-picture"])
    assert result.exit_code == 0
    warnings = [line for line in result.output.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 1 and "looks unlike the indexed images" in warnings[0]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_calibration_with_non_finite_or_unordered_quantiles_is_refused(bad):
    from aesearch.search.trust import TrustCalibration

    levels = list(np.linspace(0, 1, 1001))
    good = {
        name: levels for name in ("reconstruction_mse_quantiles", "neighbour_distance_quantiles", "content_quantiles")
    }
    TrustCalibration.from_dict(good)
    with pytest.raises(ValueError, match="NaN or infinity"):
        TrustCalibration.from_dict({**good, "content_quantiles": [*levels[:-1], bad]})
    with pytest.raises(ValueError, match="must not decrease"):
        TrustCalibration.from_dict({**good, "neighbour_distance_quantiles": levels[::-1]})


def test_content_of_a_photo_is_what_differs_from_its_own_background():
    """A blank white image on a colour bundle was in distribution, at content percentile 100: the
    silhouettes' measure (pixels above 5%) counts every pixel of white as content (new-user trial)."""
    from aesearch.search.trust import content

    white = np.full((2, 10, 10, 3), 255, np.uint8)
    white[1, 2:7, 3:8] = (220, 30, 30)  # a red square of 25 pixels on white
    assert content(white, "level").tolist() == [1.0, 1.0]
    assert content(white, "border").tolist() == [0.0, 0.25]
    grey = np.zeros((1, 10, 10), np.float32)  # photo framing of a grey member: (n, H, W) floats
    grey[0, 3:5, 3:8] = 0.5  # 10 pixels on black
    assert content(grey, "border").tolist() == [0.1]
    assert content(np.float32(0.03) + grey * 0, "border").tolist() == [0.0]  # uniform: empty, whatever its level
    calibration = calibrate(np.arange(11) / 10, np.arange(11), white[[1] * 11], measure="border")
    again = type(calibration).from_dict(calibration.to_dict())
    assert again.content_measure == "border" and np.array_equal(again.content_quantiles, calibration.content_quantiles)
    blank = again.assess(0.5, 5, white[0])
    assert not blank.in_distribution and "almost empty" in blank.warning()
    older = calibration.to_dict()
    del older["content_measure"]  # a bundle written before the measure was recorded measured by level
    assert type(calibration).from_dict(older).content_measure == "level"


def test_a_blank_query_on_a_colour_bundle_is_flagged(tmp_path):
    from test_colour_collection import SPEC, write_colour_folder

    from aesearch.pipelines.collection import build_from_folders

    folder, index = tmp_path / "images", tmp_path / "colour"
    write_colour_folder(folder, per_class=6)
    build_from_folders(index, images=[folder], spec=SPEC, shifts=((0, 0),), epochs=1, log=None)
    engine = SearchEngine.load(index)
    assert engine.trust.content_measure == "border"
    blank = engine.query(np.full((40, 30, 3), 255, np.uint8), 3).trust
    assert not blank.in_distribution and blank.content_percentile == 0.0
    assert engine.query(folder / "red" / "red-01.png", 3).trust.content_percentile > 0


@pytest.mark.parametrize("measure", ["level", "border"])
def test_content_of_many_images_is_measured_a_block_at_a_time_as_one_by_one(monkeypatch, measure):
    from aesearch.search import trust

    images = np.random.default_rng(0).integers(0, 256, (23, 8, 8, 4), np.uint8)
    images[..., :3] = np.minimum(images[..., :3], images[..., 3:])  # premultiplied RGBA
    one_by_one = [trust.content(images[i : i + 1], measure)[0] for i in range(len(images))]
    monkeypatch.setattr(trust, "_CONTENT_BLOCK", 5)
    assert trust.content(images, measure).tolist() == one_by_one
