"""Hostile inputs to the Python API: each gives the library's own one-line error, or a right answer."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from aesearch.errors import ImageError, InvalidArgumentError
from aesearch.search.engine import SearchEngine
from aesearch.sources.preprocess import preprocess, preprocess_batch


@pytest.fixture(scope="module")
def engine(tiny_bundle):
    return SearchEngine.load(tiny_bundle)


def _png(array: np.ndarray, **info) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG", **info)
    return out.getvalue()


def _tiff(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="TIFF")
    return out.getvalue()


def test_a_lazily_opened_damaged_pil_image_gives_the_image_error():
    data = _png(np.full((30, 30), 200, np.uint8))
    lazy = Image.open(io.BytesIO(data[: len(data) - 30]))  # opens (header only); decoding would fail
    with pytest.raises(ImageError, match="truncated or damaged"):
        preprocess(lazy)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_images_are_refused(bad):
    values = np.zeros((20, 20), np.float32)
    values[5, 5] = bad
    for source in (values, torch.from_numpy(values), _tiff(Image.fromarray(values, "F"))):
        with pytest.raises(ImageError, match="NaN or infinite"):
            preprocess(source)
    with pytest.raises(ImageError, match="NaN or infinite"):
        preprocess_batch(np.pad(values, 4)[None])


def test_odd_torch_tensors():
    image = torch.zeros((28, 28))
    image[8:20, 8:20] = 1
    expected = preprocess(image.numpy())
    np.testing.assert_array_equal(preprocess(image.to(torch.bfloat16)), expected)  # exact: 0 and 1
    np.testing.assert_array_equal(preprocess(image.half()), expected)
    for odd in (image.to_sparse(), torch.empty((28, 28), device="meta"), image.to(torch.complex64)):
        with pytest.raises(ImageError, match="cannot use a torch tensor"):
            preprocess(odd)


@pytest.mark.parametrize(
    "source",
    [np.zeros((0, 28), np.uint8), np.zeros((28, 0, 3), np.uint8), np.zeros(0), np.zeros((3, 3, 3, 3)), np.zeros(())],
)
def test_empty_or_misshapen_arrays(source):
    with pytest.raises(ImageError, match="has shape"):
        preprocess(source)


def test_zero_sized_pil_image():
    with pytest.raises(ImageError, match="has no pixels"):
        preprocess(Image.new("L", (0, 5)))


def test_32_bit_integer_tiff_reads_like_its_8_bit_form():
    grey = np.zeros((28, 28), np.uint8)
    grey[6:22, 9:19] = 180
    wide = Image.fromarray(grey.astype(np.int32) * 257, "I")  # the 16-bit range in a 32-bit TIFF
    np.testing.assert_allclose(preprocess(_tiff(wide)), preprocess(grey), atol=1e-6)


def test_huge_arrays_are_refused_before_any_work():
    big = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), shape=(100_000, 100_000), strides=(0, 0))
    with pytest.raises(ImageError, match="over the limit"):
        preprocess(big)


def test_batch_scales_floats_above_1_as_the_single_path_does():
    images = np.zeros((3, 28, 28), np.float32)
    images[:, 8:20, 8:20] = [[[100.0]], [[0.5]], [[3000.0]]]
    batch = preprocess_batch(images)
    for image, row in zip(images, batch, strict=True):
        np.testing.assert_array_equal(preprocess(image), row)


def test_things_that_are_not_images():
    for source in (None, 5, 3.5, {"a": 1}, object()):
        with pytest.raises(ImageError, match="cannot use a"):
            preprocess_batch(source)


def test_numpy_integer_k_works(engine):
    hits = engine.query(engine.image(3), k=np.int64(4)).hits
    assert [h.id for h in hits] == [h.id for h in engine.query(engine.image(3), k=4).hits]
    assert engine.search(engine.encode(engine.image(3)[None]), np.int32(2))[1].shape == (1, 2)


@pytest.mark.parametrize(
    ("vectors", "message"),
    [
        (np.zeros(314, np.float32), "must have shape"),
        (np.zeros((2, 313), np.float32), "must have shape"),
        (np.zeros((1, 2, 314), np.float32), "must have shape"),
        (np.full((1, 314), np.nan, np.float32), "NaN or infinite"),
        ([["a"] * 314], "must be numbers"),
    ],
)
def test_wrong_vectors_for_search_and_decode(engine, vectors, message):
    with pytest.raises(InvalidArgumentError, match=message):
        engine.search(vectors, 3)
    with pytest.raises(InvalidArgumentError, match=message):
        engine.decode(vectors)


def test_file_system_trouble_gives_one_line(tmp_path):
    with pytest.raises(ImageError, match="File name too long"):
        preprocess(tmp_path / ("x" * 300 + ".png"))  # a name over 255 bytes
    with pytest.raises(ImageError, match="no such file"):
        preprocess(tmp_path / "file.png" / "below-a-file.png")
    odd = tmp_path / "two\nlines.png"
    odd.write_bytes(b"not an image")
    with pytest.raises(ImageError) as caught:
        preprocess(odd)
    assert "\n" not in str(caught.value) and "two\\nlines.png" in str(caught.value)


def test_unreadable_file_gives_one_line(tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    locked = tmp_path / "locked.png"
    locked.write_bytes(_png(np.zeros((5, 5), np.uint8)))
    locked.chmod(0)
    with pytest.raises(ImageError, match="permission denied"):
        preprocess(locked)


# --- files and the operating system: checked before the work, one line each ---


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("/proc/aesearch-test.png", "cannot write"),
        ("/proc/none/x.png", "cannot write"),
        ("{file}/inside.png", "is a file, not a folder"),
        ("{tmp}/" + "y" * 300 + ".png", "over 255 bytes"),
        ("{tmp}/new/deeper/x.png", "outside the current folder"),
        ("{tmp}", "is a folder"),
    ],
)
def test_unwritable_targets_are_refused_before_any_work(tmp_path, target, message):
    from aesearch.atomic import check_writable

    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(InvalidArgumentError, match=message) as caught:
        check_writable(target.format(file=afile, tmp=tmp_path))
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "new").exists()


def test_writable_targets_pass_and_free_space_is_checked(tmp_path, monkeypatch):
    from aesearch.atomic import check_writable

    monkeypatch.chdir(tmp_path)
    check_writable(tmp_path / "x.png")
    check_writable("runs/deeper/x.png")  # inside the current folder: created when written
    check_writable(tmp_path / "bundle" / "manifest.json", own_folder=True)
    with pytest.raises(InvalidArgumentError, match="MB free there"):
        check_writable(tmp_path / "x.png", need_bytes=1 << 60)


def test_cli_writes_to_impossible_places_give_one_line(tiny_bundle, tmp_path):
    from click.testing import CliRunner

    from aesearch.interfaces.cli import cli

    runner = CliRunner()
    model = next(tiny_bundle.rglob("model.safetensors"))
    for args in (
        ["query", "--id", "1", "--index-dir", str(tiny_bundle), "--out", "/proc/x.png"],
        ["build-index", "--index-dir", "/proc/aesearch-index", "--model", str(model)],
        ["map", "--index-dir", str(tiny_bundle), "--out", str(tmp_path / ("z" * 300) / "m.png")],
    ):
        result = runner.invoke(cli, args)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit | None)
        assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output, result.output


def test_os_errors_during_a_command_are_one_line(tiny_bundle, monkeypatch):
    import errno

    from click.testing import CliRunner

    import aesearch.figures.render as render
    from aesearch.interfaces.cli import cli

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "/some/where\nodd.png")

    monkeypatch.setattr(render, "atomic_path", disk_full)
    result = CliRunner().invoke(cli, ["query", "--id", "1", "--index-dir", str(tiny_bundle), "--out", "q.png"])
    assert result.exit_code == 1 and "No space left on device" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "odd.png" in result.output


def test_index_type_is_checked_on_the_whitened_dimension(tiny_bundle, tmp_path, monkeypatch):
    """PQ157 divides 314 but not the 192 whitened axes the index holds; PQ32 the other way round."""
    from aesearch.errors import DataNotFoundError
    from aesearch.pipelines.build import build_index
    from aesearch.sources import fashion_mnist

    monkeypatch.setattr(fashion_mnist, "_download", lambda target: False)
    model = next(tiny_bundle.rglob("model.safetensors"))
    with pytest.raises(InvalidArgumentError, match="FAISS refuses index type 'PQ157' for 192-dimensional"):
        build_index(
            tmp_path / "a",
            model=model,
            index_type="PQ157",
            transform="whiten",
            whiten_dims=192,
            data_dir=tmp_path / "none",
            log=None,
        )
    with pytest.raises(DataNotFoundError):  # accepted: the build goes on to look for the data
        build_index(
            tmp_path / "b",
            model=model,
            index_type="PQ32",
            transform="whiten",
            whiten_dims=192,
            data_dir=tmp_path / "none",
            log=None,
        )
