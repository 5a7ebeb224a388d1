"""Explain a hit: difference maps and the latent path, against the decoder itself (the oracle)."""

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from aesearch.colours import BLUE, RED, signed_colours
from aesearch.errors import InvalidArgumentError
from aesearch.figures.explain import strip
from aesearch.interfaces.cli import cli
from aesearch.search.engine import SearchEngine
from aesearch.search.explain import explain_hits


@pytest.fixture(scope="module")
def engine(tiny_bundle):
    return SearchEngine.load(tiny_bundle)


def test_explanation_against_the_decoder(engine):
    result = engine.query_id(40, k=5)
    hit = result.hits[2]
    e = engine.explain(result, hit, steps=5)
    image = engine.image(hit.id).astype(np.float32) / 255
    np.testing.assert_array_equal(e.pixel_difference, image - result.query)
    z = engine.autoencoder.encode(np.stack([result.query, image]))
    for frame, t in zip(e.interpolation, [0, 0.25, 0.5, 0.75, 1], strict=True):
        np.testing.assert_allclose(frame, engine.decode(((1 - t) * z[0] + t * z[1])[None])[0], atol=1e-5)
    np.testing.assert_allclose(e.interpolation[0], result.reconstruction, atol=1e-5)
    np.testing.assert_allclose(e.hit_reconstruction, engine.reconstruct(engine.image(hit.id)[None])[0], atol=1e-5)
    np.testing.assert_allclose(e.reconstruction_difference, e.hit_reconstruction - result.reconstruction, atol=1e-6)
    assert e.hit == hit and list(e.fractions) == [0, 0.25, 0.5, 0.75, 1]


def test_explaining_many_hits_at_once_equals_one_at_a_time(engine):
    result = engine.query_id(3, k=6)
    together = explain_hits(engine, result, result.hits)
    for e in together:
        alone = engine.explain(result, e.hit)
        np.testing.assert_allclose(e.interpolation, alone.interpolation, atol=1e-5)


def test_any_indexed_id_can_be_explained(engine):
    result = engine.query_id(3, k=2)
    e = engine.explain(result, 77)
    assert e.hit.id == 77 and e.hit.rank == 0
    assert engine.explain(result, result.hits[1].id).hit == result.hits[1]


def test_interpolate_images_or_ids(engine):
    frames = engine.interpolate(10, engine.image(20), steps=3)
    z = engine.autoencoder.encode(np.stack([engine.image(10), engine.image(20)]).astype(np.float32) / 255)
    np.testing.assert_allclose(frames[1], engine.decode(z.mean(0, keepdims=True))[0], atol=1e-5)


@pytest.mark.parametrize("steps", [1, 65, 2.5, True])
def test_bad_steps_are_refused(engine, steps):
    with pytest.raises(InvalidArgumentError, match="steps must be an integer from 2 to 64"):
        engine.interpolate(1, 2, steps=steps)


def test_colour_scale_and_strip():
    colours = signed_colours(np.array([[0.0, 1.0, -1.0, 3.0]]))
    assert colours[0, 0].tolist() == [255, 255, 255]
    assert colours[0, 1].tolist() == RED.astype(int).tolist() == colours[0, 3].tolist()  # clipped at +1
    assert colours[0, 2].tolist() == BLUE.astype(int).tolist()
    frames = np.stack([np.zeros((28, 28)), np.ones((28, 28))])
    out = strip(frames)
    assert out.shape == (28, 57) and out[:, :28].max() == 0 and out[:, 29:].min() == 255


def test_cli_query_explain_and_interpolate(tiny_bundle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    out = runner.invoke(cli, ["query", "--id", "4", "-k", "50", "--explain", "--index-dir", str(tiny_bundle)])
    assert out.exit_code == 0, out.output
    assert "Explanation picture: query-id-4.explain.png" in out.output
    k50 = Image.open(tmp_path / "query-id-4.explain.png")
    runner.invoke(cli, ["query", "--id", "4", "-k", "8", "--explain", "--index-dir", str(tiny_bundle)])
    k8 = Image.open(tmp_path / "query-id-4.explain.png")
    assert k50.height > 4 * k8.height / 2 and k8.width >= 720

    out = runner.invoke(cli, ["interpolate", "3", "9", "--steps", "5", "--index-dir", str(tiny_bundle)])
    assert out.exit_code == 0 and (tmp_path / "id3-id9.interpolation.png").exists(), out.output
    Image.fromarray(np.zeros((40, 30), np.uint8)).save(tmp_path / "a.png")
    out = runner.invoke(cli, ["interpolate", "a.png", "9", "--out", "path.gif", "--index-dir", str(tiny_bundle)])
    assert out.exit_code == 0, out.output
    gif = Image.open(tmp_path / "path.gif")
    assert gif.n_frames == 2 * 8 - 2  # there and back


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["interpolate", "nofile.png", "3"], "nofile.png is neither an image file nor an indexed id"),
        (["interpolate", "1", "500"], "no image with id 500"),
        (["interpolate", "1", "2", "--steps", "1"], "steps must be an integer from 2 to 64"),
        (["interpolate", "1", "2", "--out", "x.jpg"], "name it .png or .gif"),
    ],
)
def test_cli_interpolate_bad_input_is_one_line(tiny_bundle, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(cli, [*args, "--index-dir", str(tiny_bundle)])
    assert out.exit_code == 1 and message in out.output and len(out.output.strip().splitlines()) == 1, out.output
