"""The photo contract: colour kept, aspect kept, padded with the background; every file kind decoded."""

import io

import numpy as np
import pytest
from PIL import Image

from aesearch.errors import ImageError
from aesearch.model.architecture import ModelConfig
from aesearch.sources.preprocess import preprocess, preprocess_batch, preprocess_keeping_originals

COLOUR = ModelConfig(image_size=32, channels=3, widths=(8, 16, 16), z_size=16, framing="photo")
GREY = ModelConfig(image_size=32, channels=1, widths=(8, 16, 16), z_size=16, framing="photo")
RED, GREEN, WHITE = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (1.0, 1.0, 1.0)


def _png(image: Image.Image, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, format=params.pop("format", "PNG"), **params)
    return out.getvalue()


def _banner() -> Image.Image:
    """64 x 32: a red square in the middle of a green band (aspect 2:1)."""
    array = np.zeros((32, 64, 3), np.uint8)
    array[:] = (0, 255, 0)
    array[8:24, 24:40] = (255, 0, 0)
    return Image.fromarray(array)


def test_colour_and_aspect_are_kept_and_the_rest_is_padded_with_the_background():
    framed = preprocess(_png(_banner()), model_config=COLOUR)
    assert framed.shape == (32, 32, 3) and framed.dtype == np.float32
    # 64 x 32 -> 32 x 16, centred: rows 8-23 hold the image, the pad above and below is its green
    np.testing.assert_allclose(framed[0, 0], GREEN)
    np.testing.assert_allclose(framed[31, 16], GREEN)
    np.testing.assert_allclose(framed[16, 16], RED)  # the square, not stretched: 8 x 8 at the centre
    red = np.all(np.isclose(framed, RED, atol=0.05), axis=-1)
    rows, cols = np.nonzero(red)
    assert rows.max() - rows.min() + 1 == cols.max() - cols.min() + 1 == 8


def test_an_image_at_the_model_s_size_is_taken_as_it_is():
    array = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    one_by_one = np.stack([preprocess(_png(Image.fromarray(a)), model_config=COLOUR) for a in array])
    np.testing.assert_array_equal(one_by_one, array.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(preprocess_batch(array, model_config=COLOUR), one_by_one)  # the bulk path
    framed, originals = preprocess_keeping_originals([_png(Image.fromarray(array[0]))], model_config=COLOUR)
    np.testing.assert_array_equal(framed[0], one_by_one[0])
    assert originals[0].size == (32, 32)


def test_transparency_is_white_and_a_grey_model_sees_luma():
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[8:24, 8:24] = (255, 0, 0, 255)  # an opaque red square on nothing
    framed = preprocess(_png(Image.fromarray(rgba)), model_config=COLOUR)
    np.testing.assert_allclose(framed[0, 0], WHITE)
    np.testing.assert_allclose(framed[16, 16], RED)
    grey = preprocess(_png(Image.fromarray(rgba)), model_config=GREY)
    assert grey.shape == (32, 32)
    np.testing.assert_allclose([grey[0, 0], grey[16, 16]], [1.0, 0.299], atol=1e-6)


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda im: _png(im.convert("P", palette=Image.Palette.ADAPTIVE)), id="palette"),
        pytest.param(lambda im: _png(im.convert("CMYK"), format="JPEG", quality=100), id="cmyk-jpeg"),
        pytest.param(lambda im: _png(im, format="WEBP", lossless=True), id="webp"),
        pytest.param(lambda im: _png(im, format="TIFF"), id="tiff"),
    ],
)
def test_every_kind_of_file_gives_the_same_colours(encode):
    expected = preprocess(_png(_banner()), model_config=COLOUR)
    np.testing.assert_allclose(preprocess(encode(_banner()), model_config=COLOUR), expected, atol=0.06)


def test_sixteen_bit_images_keep_their_range_and_exif_orientation_is_applied():
    ramp = (np.arange(32 * 32, dtype=np.uint32).reshape(32, 32) * 64).astype(np.uint16)
    framed = preprocess(_png(Image.fromarray(ramp)), model_config=COLOUR)
    np.testing.assert_allclose(framed[..., 0], ramp / 65535, atol=1e-6)  # not clipped to 8 bits' 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    sideways = _png(_banner(), format="JPEG", quality=100, exif=exif)
    tall = preprocess(sideways, model_config=COLOUR)  # displayed 32 wide, 64 high: padded left and right
    np.testing.assert_allclose(tall[16, 0], GREEN, atol=0.05)
    np.testing.assert_allclose(tall[0, 16], GREEN, atol=0.05)
    assert np.isclose(tall[16, 16], RED, atol=0.1).all()


def test_arrays_in_any_layout_are_framed_like_files():
    banner = np.asarray(_banner())
    from_file = preprocess(_png(_banner()), model_config=COLOUR)
    np.testing.assert_allclose(preprocess(banner, model_config=COLOUR), from_file, atol=1e-6)
    np.testing.assert_allclose(preprocess(np.moveaxis(banner, -1, 0), model_config=COLOUR), from_file, atol=1e-6)


def test_a_damaged_file_is_one_line_under_the_photo_contract_too():
    with pytest.raises(ImageError, match="truncated or damaged"):
        noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        data = _png(Image.fromarray(noise))
        preprocess(data[: len(data) // 2], model_config=COLOUR)
    with pytest.raises(ImageError, match="not an image"):
        preprocess(b"not an image at all", model_config=COLOUR)
