"""The preprocessing contract: every format and oddity a user's file may have, and its errors."""

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from aesearch.errors import ImageError
from aesearch.model.framing import fit_and_centre
from aesearch.sources.preprocess import preprocess, preprocess_batch
from tests.conftest import synthetic_images


@pytest.fixture(scope="module")
def dataset_like():
    """Synthetic images framed the way Fashion-MNIST's are (longest edge 28, centred, brightest
    pixel white), uint8."""
    framed = [fit_and_centre(im.astype(np.float32) / im.max()) for im in synthetic_images(6, seed=7)]
    return [(np.clip(f, 0, 1) * 255).round().astype(np.uint8) for f in framed]


def png_bytes(image: Image.Image, fmt="PNG", **save) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **save)
    return buf.getvalue()


def as_unit(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) / np.float32(255)


def test_dataset_image_passes_through_exactly(dataset_like):
    """A 28x28 image on black is what the encoder was trained on: it must not change at all."""
    for image in dataset_like:
        expected = as_unit(image)
        for source in (
            image,
            Image.fromarray(image),
            png_bytes(Image.fromarray(image)),
            png_bytes(Image.fromarray(image).convert("RGB")),
            png_bytes(Image.fromarray(image.astype(np.uint16) * 257)),  # 16-bit PNG
            png_bytes(Image.fromarray(image).convert("P")),
            torch.from_numpy(image),
        ):
            out = preprocess(source)
            assert out.dtype == np.float32 and out.shape == (28, 28)
            np.testing.assert_array_equal(out, expected)


def variants(image: np.ndarray) -> dict[str, bytes]:
    pil = Image.fromarray(image)
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = 255, image  # a white object whose shape is its alpha: on transparency
    big_canvas = np.full((70, 110), 255, np.uint8)
    big_canvas[20:48, 60:88] = 255 - image
    return {
        "inverted": png_bytes(Image.fromarray(255 - image)),
        "enlarged 4x": png_bytes(pil.resize((112, 112), Image.Resampling.NEAREST)),
        "inverted, enlarged 3x": png_bytes(Image.fromarray(255 - image).resize((84, 84), Image.Resampling.NEAREST)),
        "RGBA on transparency": png_bytes(Image.fromarray(rgba, "RGBA")),
        "16-bit enlarged": png_bytes(Image.fromarray(image.astype(np.uint16) * 257).resize((56, 56), Image.NEAREST)),
        "palette, enlarged": png_bytes(pil.convert("P").resize((56, 56), Image.Resampling.NEAREST)),
        "off-centre on white": png_bytes(Image.fromarray(big_canvas)),
        "GIF": png_bytes(pil.resize((56, 56), Image.Resampling.NEAREST), "GIF"),
        "BMP": png_bytes(pil, "BMP"),
        "TIFF": png_bytes(Image.fromarray(255 - image), "TIFF"),
        "WebP lossless": png_bytes(pil.resize((84, 84), Image.Resampling.NEAREST), "WEBP", lossless=True),
        "JPEG": png_bytes(Image.fromarray(255 - image).resize((112, 112), Image.NEAREST), "JPEG", quality=95),
    }


def test_variants_preprocess_to_nearly_the_same_image(dataset_like):
    for image in dataset_like:
        expected = as_unit(image)
        for name, data in variants(image).items():
            out = preprocess(data, name=name)
            tolerance = 0.03 if name == "JPEG" else 0.01
            assert np.abs(out - expected).mean() < tolerance, name


def test_exif_orientation_is_applied(dataset_like):
    image = Image.fromarray(255 - dataset_like[0]).resize((112, 112), Image.Resampling.NEAREST)
    rotated = image.transpose(Image.Transpose.ROTATE_90)  # stored turned 90 degrees anticlockwise ...
    exif = Image.Exif()
    exif[0x0112] = 6  # ... with "rotate 90 clockwise to display" in EXIF, as phone cameras do
    jpeg = png_bytes(rotated, "JPEG", quality=95, exif=exif)
    np.testing.assert_allclose(preprocess(jpeg), preprocess(png_bytes(image, "JPEG", quality=95)), atol=0.08)


def test_large_photo_is_framed_and_light_background_negated():
    photo = np.full((1500, 900, 3), 240, np.uint8)  # light grey studio background
    photo[300:1200, 200:700] = (40, 60, 200)  # a dark blue garment, 900 x 500
    out = preprocess(png_bytes(Image.fromarray(photo), "JPEG", quality=90))
    rows, cols = np.nonzero(out > 0.5)
    assert rows.min() == 0 and rows.max() == 27  # longest edge fills the canvas
    assert 5 <= cols.min() <= 7 and 20 <= cols.max() <= 22  # 500/900 * 28 = 15.6 wide, centred
    assert out[0, 0] == 0  # background -> black


def test_blank_and_fully_transparent_images_give_black():
    assert not preprocess(png_bytes(Image.new("L", (50, 40), 255))).any()
    assert not preprocess(png_bytes(Image.new("RGBA", (50, 40), (0, 0, 0, 0)))).any()


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((28, 28, 3), np.uint8),
        np.zeros((3, 28, 28), np.float32),
        np.zeros((28, 28), bool),
        np.zeros((1, 28, 28), np.uint16),
        np.zeros((40, 30, 4), np.float64),
    ],
)
def test_array_layouts(array):
    assert preprocess(array).shape == (28, 28)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((5,)), "has shape"),
        (np.zeros((28, 28, 7)), "has shape"),
        (np.zeros((0, 28)), "has shape"),
        (np.full((28, 28), np.nan), "NaN"),
        (np.zeros((28, 28), dtype=complex), "dtype"),
    ],
)
def test_bad_arrays(array, message):
    with pytest.raises(ImageError, match=message):
        preprocess(array)


def huge_png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge size; the pixel data is never there to decode."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 100))


BAD_FILES = {
    "missing.png": None,
    "empty.png": b"",
    "notes.png": b"not an image, just text\n",
    "cut.png": png_bytes(Image.new("L", (300, 300), 9))[:300],
    "bomb.png": huge_png_header(100_000, 100_000),  # 10 gigapixels: beyond Pillow's own limit too
    "big.png": huge_png_header(10_000, 8_000),  # 80 megapixels: beyond ours only
}


def write_bad_file(folder, name):
    """Write one of BAD_FILES into folder and return its path ("folder" returns the folder itself)."""
    if name == "folder":
        return folder
    if BAD_FILES[name] is not None:
        (folder / name).write_bytes(BAD_FILES[name])
    return folder / name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing.png", "no such file"),
        ("folder", "is a folder"),
        ("empty.png", "is empty"),
        ("notes.png", "not an image"),
        ("cut.png", "truncated or damaged"),
        ("bomb.png", "10,000.0 megapixels, over the limit of 50.0 megapixels"),
        ("big.png", "80.0 megapixels, over the limit of 50.0 megapixels"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path, name, message):
    with pytest.raises(ImageError, match=message) as info:
        preprocess(write_bad_file(tmp_path, name))
    assert "\n" not in str(info.value)


def test_pixel_limit_is_adjustable():
    data = png_bytes(Image.new("L", (100, 100)))
    with pytest.raises(ImageError, match="10,000 pixels, over the limit of 5,000 pixels"):
        preprocess(data, max_pixels=5000)
    assert preprocess(data, max_pixels=10_000).shape == (28, 28)


def test_batch_matches_one_by_one(dataset_like):
    stack = np.stack([*dataset_like, 255 - dataset_like[0]])  # the last one has a light background
    np.testing.assert_array_equal(preprocess_batch(stack), np.stack([preprocess(im) for im in stack]))
    files = [png_bytes(Image.fromarray(im)) for im in dataset_like]
    np.testing.assert_array_equal(preprocess_batch(files), np.stack([preprocess(f) for f in files]))
    assert preprocess_batch([]).shape == (0, 28, 28)


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x1c", "PNG"),
        (b"\xff\xd8\xff", "JPEG"),
        (b"GIF89a\x01", "GIF"),
        (b"RIFF\x00\x00\x00\x00WEBP", "WebP"),
    ],
)
def test_a_file_cut_after_its_header_says_so(head, kind):
    """A PNG cut after its first bytes was called "not an image ... use PNG" (new-user trial)."""
    from aesearch.errors import ImageError
    from aesearch.sources.preprocess import open_image

    with pytest.raises(ImageError, match=rf"starts as a {kind} file but is truncated or damaged"):
        open_image(head)
    with pytest.raises(ImageError, match="is not an image this tool can read"):
        open_image(b"hello, not an image")
