"""The preprocessing contracts: any image a user has -> the float32 array a model's encoder sees.

Each model carries its contract in its ModelConfig (framing, image_size, channels; recorded in its
checkpoint and so in every bundle built with it), and the CLI, the Python API and the server all
prepare an image by the contract of the model that will encode it.

**Photo framing** (colour or grey models trained on a user's collection): the whole image, as a
person sees it. Decoded as below, in sRGB (palette, CMYK, 16-bit and the rest converted; EXIF
orientation applied), transparency composited onto white, greyscale by luma for one-channel
models; the longest edge resized to the model's size (area average when shrinking), aspect kept,
centred and padded with the image's own background colour (the median of its border pixels):
nothing is trimmed, negated or stretched. An image already at the model's size is taken as it is.

**Silhouette framing** (the seed model's, Fashion-MNIST's): it mirrors how Fashion-MNIST itself
was made from product photos (trim the background, fit the longest edge to 28, centre on a 28x28
canvas, negate so the object is light on black, greyscale):

1. Decode: PNG (8/16-bit, palette, grey, RGB, RGBA), JPEG (EXIF orientation applied), GIF and
   WebP (first frame), BMP, TIFF. The pixel count is checked against a limit before decoding.
2. Greyscale by ITU-R 601 luma (PIL's "L"); 16-bit images keep their full range.
3. Transparency is composited onto black or white, whichever contrasts with the opaque object,
   so transparent pixels become background.
4. The background level is the median of the four corner patches. If it is light, the image is
   negated; then the background level is mapped to 0 (black) and the brightest pixel to 1
   (white), as in every Fashion-MNIST image.
5. Except for 28x28 inputs (taken as already framed): trim to the box of pixels more than 5%
   above the background, resize the longest edge to 28 (area average when shrinking), centre on a black 28x28 canvas.

An image that already looks like a dataset image (28x28, dark background) is returned unchanged,
so a dataset image is found again at distance 0. Torch-free: the query path must stay light.
"""

from __future__ import annotations

import io
import re
import stat
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from aesearch import defaults
from aesearch.errors import ImageError, ImageTooLargeError, describe_pixels, reason
from aesearch.model.architecture import ModelConfig
from aesearch.model.framing import frame
from aesearch.store.paths import shown

SEED = ModelConfig()  # whose contract applies when none is given: Fashion-MNIST's silhouettes
SIZE = SEED.image_size
DEFAULT_MAX_PIXELS = defaults.MAX_PIXELS  # decompression bombs are refused before decoding
_WORKING_SIZE = 1024  # larger images are shrunk to this before the float work; SIZE px is the goal

ImageSource = Any  # str | Path | bytes | PIL.Image.Image | numpy array | torch tensor


def preprocess(
    source: ImageSource,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
    model_config: ModelConfig = SEED,
) -> np.ndarray:
    """Any supported image -> (*model_config.image_shape) float32 in [0, 1], framed by its contract.

    For the seed model (the default): (28, 28), light object on black.

    Args:
        source: a file path, the file's bytes, a PIL image, or an array: (H, W), (H, W, C) or
            (C, H, W) with C in 1, 3, 4; uint8, uint16, bool or float in [0, 1]. Torch tensors
            are taken as arrays.
        max_pixels: refuse images with more pixels than this, before decoding them.
        name: how to call the image in error messages (defaults to the path, or "image").
        model_config: the model the image is prepared for: its framing, size and channels.
    """
    return _preprocess(source, max_pixels, name, model_config)[0]


def _preprocess(
    source: ImageSource, max_pixels: int, name: str | None, config: ModelConfig = SEED
) -> tuple[np.ndarray, Image.Image | None]:
    """preprocess(), and the image as decoded (None for an array): the query as given, for a picture."""
    if config.framing == "photo":
        (colour, alpha), image = _decoded(source, max_pixels, name, _array_to_colour_alpha, _pil_to_colour_alpha, "RGB")
        return _photo(colour, alpha, config), image
    (grey, alpha), image = _decoded(source, max_pixels, name, _array_to_grey_alpha, _pil_to_grey_alpha, "greyscale")
    if image is not None and not np.all(np.isfinite(grey)):
        raise ImageError(
            f"{name or _name_of(source) or 'the image'} holds NaN or infinite pixel values: pass finite pixel values"
        )
    return frame(grey, alpha, config.image_size), image


def _decoded(source: ImageSource, max_pixels: int, name: str | None, from_array, from_pil, kind: str) -> tuple:
    """((pixels, alpha or None), the PIL image or None for an array) of any image source, or one ImageError line."""
    if _is_array(source):
        return from_array(np.asarray(_as_numpy(source)), name or "the array", max_pixels), None
    if not isinstance(source, str | Path | bytes | bytearray | memoryview | Image.Image):
        raise ImageError(
            f"cannot use a {type(source).__name__} as an image: pass a file path, the file's bytes, "
            "a PIL image or an array"
        )
    image = open_image(source, max_pixels=max_pixels, name=name)
    try:
        return from_pil(image), image
    except Exception as exc:  # a mode Pillow cannot convert, a palette that does not match...
        label = name or _name_of(source) or "the image"
        raise ImageError(f"{label} cannot be converted to {kind} ({reason(exc)}): re-export it as PNG") from None


def _photo(colour: np.ndarray, alpha: np.ndarray | None, config: ModelConfig) -> np.ndarray:
    """The photo contract (module docstring) on decoded (H, W, 3) pixels: whole image, colour and aspect kept."""
    if config.prior:
        # A member searched beside the grey model keeps transparency (model/prior.py): premultiplied RGBA,
        # so that its grey part frames a transparent object as the silhouette contract frames the file.
        # The canvas of an image with transparency is transparent (nothing there, as in its file); an
        # opaque one's is its own background colour, as for every photo member.
        transparent = alpha is not None and float(alpha.min()) < 1
        alpha = np.ones(colour.shape[:2], np.float32) if alpha is None else alpha
        rgba = np.concatenate([colour * alpha[..., None], alpha[..., None]], axis=-1).astype(np.float32)
        canvas = np.zeros(4, np.float32) if transparent else None
        return _fit_and_pad(rgba, config.image_size, canvas).reshape(config.image_shape)
    if alpha is not None:  # transparent means "nothing there": white, as a page shows it
        colour = colour * alpha[..., None] + (1 - alpha[..., None])
    if config.channels == 1:
        colour = (colour[..., 0] * 0.299 + colour[..., 1] * 0.587 + colour[..., 2] * 0.114)[..., None]
    return _fit_and_pad(colour.astype(np.float32), config.image_size).reshape(config.image_shape)


def image_traits(source: str | Path | bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[float, int]:
    """(mean chroma in [0, 1], longest edge in pixels) of an image file: is it colour, how large is it.

    Chroma is max minus min of R, G and B per pixel, over the opaque pixels of a 64-pixel thumbnail.
    """
    image = open_image(source, max_pixels=max_pixels)
    longest = max(image.size)
    thumbnail = image.convert("RGBA") if image.mode not in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F") else None
    if thumbnail is None:
        return 0.0, longest
    thumbnail.thumbnail((64, 64), Image.Resampling.BOX)
    values = _unit(np.asarray(thumbnail))
    opaque = values[..., 3] > 0.5
    chroma = values[..., :3].max(axis=-1) - values[..., :3].min(axis=-1)
    return (float(chroma[opaque].mean()) if opaque.any() else 0.0), longest


def _fit_and_pad(colour: np.ndarray, size: int, canvas_colour: np.ndarray | None = None) -> np.ndarray:
    """(H, W, C) float -> (size, size, C): longest edge to size, aspect kept, padded with the background
    (the median of the resized image's border), or with canvas_colour when given."""
    h, w, channels = colour.shape
    if (h, w) == (size, size):
        return np.ascontiguousarray(np.clip(colour, 0, 1))
    scale = size / max(h, w)
    new_w, new_h = min(size, max(1, round(w * scale))), min(size, max(1, round(h * scale)))
    resample = Image.Resampling.BOX if scale <= 1 else Image.Resampling.LANCZOS
    resized = np.stack(
        [
            np.asarray(Image.fromarray(np.ascontiguousarray(colour[..., c]), mode="F").resize((new_w, new_h), resample))
            for c in range(channels)
        ],
        axis=-1,
    )
    resized = np.clip(resized, 0, 1)
    border = np.concatenate([resized[0], resized[-1], resized[:, 0], resized[:, -1]])
    canvas = np.empty((size, size, channels), dtype=np.float32)
    canvas[:] = np.median(border, axis=0) if canvas_colour is None else canvas_colour
    top, left = (size - new_h + 1) // 2, (size - new_w + 1) // 2
    canvas[top : top + new_h, left : left + new_w] = resized
    return canvas


def _pil_to_colour_alpha(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """A decoded image -> (H, W, 3) float sRGB in [0, 1] and its alpha (or None), shrunk to the working size."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):  # 16/32-bit grey, float: full range kept
        grey, _ = _pil_to_grey_alpha(image)
        return np.repeat(grey[..., None], 3, axis=-1), None
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    converted = image.convert("RGBA" if has_alpha else "RGB")  # palette, CMYK, YCbCr, LAB, 1-bit, grey
    if max(converted.size) > _WORKING_SIZE:
        if converted is image:  # thumbnail() works in place: the image as given may be kept (a query's original)
            converted = converted.copy()
        converted.thumbnail((_WORKING_SIZE, _WORKING_SIZE), Image.Resampling.BOX)
    values = _unit(np.asarray(converted))
    return values[..., :3], (values[..., 3] if has_alpha else None)


def _array_to_colour_alpha(array: np.ndarray, label: str, max_pixels: int) -> tuple[np.ndarray, np.ndarray | None]:
    """An array image -> (H, W, 3) float in [0, 1] and its alpha (or None); grey arrays repeat their one channel."""
    values = _array_values(array, label, max_pixels)
    if values.ndim == 2:
        return np.repeat(values[..., None], 3, axis=-1), None
    return values[..., :3], (values[..., 3] if values.shape[-1] == 4 else None)


def preprocess_batch(
    sources: np.ndarray | Sequence[ImageSource],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
    model_config: ModelConfig = SEED,
) -> np.ndarray:
    """preprocess() for many images -> (n, *model_config.image_shape) float32.

    An (n, *image_shape) uint8 or float array is handled in bulk (the same contract, vectorised):
    under the silhouette contract images with a dark background pass through and the others are
    framed one by one; under the photo contract an image already at the model's size is as it is.
    name: how to call the image(s) in error messages (default: the path, or "the image data").
    """
    if _framed_batch(sources, model_config):
        if sources.dtype == np.uint8:
            unit = _unit(sources)
        elif np.issubdtype(sources.dtype, np.floating) and np.all(np.isfinite(sources)) and sources.max(initial=0) <= 1:
            unit = np.clip(sources, 0, 1).astype(np.float32)  # as preprocess() treats each: negatives to 0
        else:  # other dtypes, NaN, or values above 1 (scaled per image): exactly the single-image path
            return _one_by_one(list(sources), max_pixels, name, model_config, keep=False)[0]
        if model_config.framing == "photo":
            return unit
        c = model_config.image_size // 14
        corners = np.concatenate(
            [unit[:, :c, :c], unit[:, :c, -c:], unit[:, -c:, :c], unit[:, -c:, -c:]], axis=1
        ).reshape(len(unit), -1)
        for i in np.nonzero(np.median(corners, axis=1) > 0.5)[0]:
            unit[i] = frame(unit[i], None, model_config.image_size)
        return unit
    return _one_by_one(sources, max_pixels, name, model_config, keep=False)[0]


def preprocess_keeping_originals(
    sources: np.ndarray | Sequence[ImageSource],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
    model_config: ModelConfig = SEED,
) -> tuple[np.ndarray, list[Image.Image | None]]:
    """preprocess_batch(), and each image as decoded (None for an array input).

    What a result picture shows as "the query, as given", without decoding the file again. Each
    decoded image is kept whole, so preprocess_batch() is the one for many images at once.
    """
    if _framed_batch(sources, model_config):
        framed = preprocess_batch(sources, max_pixels=max_pixels, name=name, model_config=model_config)
        return framed, [None] * len(sources)
    return _one_by_one(sources, max_pixels, name, model_config, keep=True)


def _framed_batch(sources: object, config: ModelConfig) -> bool:
    """Whether sources is an array of images already at the model's input shape."""
    shape = config.image_shape
    return isinstance(sources, np.ndarray) and sources.ndim == len(shape) + 1 and sources.shape[1:] == shape


def _one_by_one(
    sources: object, max_pixels: int, name: str | None, config: ModelConfig, *, keep: bool
) -> tuple[np.ndarray, list]:
    """(n, *image_shape) from one image or a list of them, and each as decoded where keep (else None)."""
    if _is_array(sources) and np.ndim(sources) == 4:  # (n, H, W, C) or (n, C, H, W): a batch of colour images
        sources = list(sources)
    elif isinstance(sources, str | Path | bytes | bytearray | memoryview | Image.Image) or _is_array(sources):
        sources = [sources]
    if not isinstance(sources, Sequence | np.ndarray):
        shape = ", ".join(map(str, config.image_shape))
        raise ImageError(
            f"cannot use a {type(sources).__name__} as images: pass a list of images or an (n, {shape}) array"
        )
    framed, originals = [], []
    for source in sources:
        array, image = _preprocess(source, max_pixels, name or _name_of(source), config)
        framed.append(array)
        originals.append(image if keep else None)
        del image  # unless kept, freed before the next is decoded: one decoded image in memory at a time
    return (np.stack(framed) if framed else np.zeros((0, *config.image_shape), np.float32)), originals


def open_image(
    source: str | Path | bytes | Image.Image, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | None = None
) -> Image.Image:
    """Open and fully decode an image, or raise ImageError saying what is wrong with it.

    A PIL image passed in is decoded here too (Image.open is lazy), so a damaged file opened by
    the caller fails here, with our message, not later inside the preprocessing.
    """
    if isinstance(source, Image.Image):
        label, image = name or "the PIL image", source
    else:
        label, stream = _stream(source, name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # our own pixel limit; damage gives our own error, not a warning
            try:
                image = Image.open(stream)
            except UnidentifiedImageError:
                kind = _signature(stream)
                if kind:  # the header of a format we read, too short or broken for Pillow to know it
                    raise ImageError(
                        f"{label} starts as a {kind} file but is truncated or damaged: re-export or re-download it"
                    ) from None
                raise ImageError(
                    f"{label} is not an image this tool can read: use PNG, JPEG, GIF, BMP, TIFF or WebP"
                ) from None
            except Image.DecompressionBombError as exc:  # Pillow's own, far larger, limit
                pixels = re.search(r"\((\d+) pixels\)", str(exc))
                size = f"{describe_pixels(int(pixels.group(1)))}, " if pixels else ""
                raise ImageError(
                    f"{label} is {size}over the limit of {describe_pixels(max_pixels)} (and Pillow's own): downscale it"
                ) from None
            except PermissionError:
                raise ImageError(f"cannot read {label}: permission denied: check the file's permissions") from None
            except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError... for damaged headers
                kind = _signature(stream)
                if kind:
                    raise ImageError(
                        f"{label} starts as a {kind} file but is truncated or damaged ({reason(exc)}): "
                        "re-export or re-download it"
                    ) from None
                raise ImageError(f"cannot read {label} ({reason(exc)}): check the file") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLargeError(label, width, height, max_pixels)
    if width == 0 or height == 0:
        raise ImageError(f"{label} has no pixels ({width}x{height}): pass a real image")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if image.format == "JPEG" and image is not source:
                image.draft(image.mode, (_WORKING_SIZE, _WORKING_SIZE))  # decode at 1/2..1/8 scale: fast
            image.load()
            return ImageOps.exif_transpose(image)
        except Exception as exc:  # damaged data: OSError, ValueError, SyntaxError, EOFError, struct.error...
            raise ImageError(f"{label} is truncated or damaged ({reason(exc)}): re-export or re-download it") from None


_SIGNATURES = {  # the first bytes of each format we read
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}


def _signature(stream: Any) -> str | None:
    """The format the first bytes of a path or a stream announce (None: none of ours)."""
    try:
        if isinstance(stream, Path):
            with open(stream, "rb") as file:
                head = file.read(16)
        else:
            stream.seek(0)
            head = stream.read(16)
    except (OSError, ValueError, AttributeError):
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return next((kind for magic, kind in _SIGNATURES.items() if head.startswith(magic)), None)


def _stream(source: str | Path | bytes, name: str | None) -> tuple[str, Any]:
    """(label for messages, what Image.open reads) for a path or the file's bytes."""
    if isinstance(source, bytes | bytearray | memoryview):
        label = name or "the image data"
        if len(source) == 0:
            raise ImageError(f"{label} is empty (0 bytes): pass the contents of an image file")
        return label, io.BytesIO(source)
    path = Path(source)
    label = name or str(path)
    label = shown(label)
    try:
        mode = path.stat().st_mode  # follows links: a loop of them is ELOOP, not "no such file"
    except FileNotFoundError:
        missing = "links to a file that does not exist" if path.is_symlink() else "does not exist"
        raise ImageError(f"no such file: {label} {missing}: check the path") from None
    except OSError as exc:  # a name too long, a path through a file, a loop of links...
        raise ImageError(f"cannot read {label} ({exc.strerror or reason(exc)}): check the path") from None
    if stat.S_ISDIR(mode):
        raise ImageError(f"{label} is a folder, not an image: pass an image file")
    if not stat.S_ISREG(mode):  # a FIFO would block the read, a device (/dev/zero) never end it
        raise ImageError(f"{label} is not a regular file (a pipe, socket or device): pass an image file")
    if path.stat().st_size == 0:
        raise ImageError(f"{label} is empty (0 bytes): pass an image file")
    return label, path


def _pil_to_grey_alpha(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    decoded = image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):  # 16/32-bit grey, float
        if max(image.size) > _WORKING_SIZE:
            image = image.convert("F")
            image.thumbnail((_WORKING_SIZE, _WORKING_SIZE), Image.Resampling.BOX)
        values = np.asarray(image, dtype=np.float32)
        if not np.all(np.isfinite(values)):
            return values, None  # refused by the caller
        top = 1.0 if image.mode == "F" and values.max(initial=0) <= 1 else 65535.0
        top = max(top, float(values.max(initial=0)))
        return np.clip(values / np.float32(top), 0, 1), None
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        image = image.convert("RGBA")
    elif image.mode != "L":
        image = image.convert("RGB") if image.mode in ("CMYK", "YCbCr", "LAB", "HSV") else image
        image = image.convert("L")  # palette and 1-bit included
    if max(image.size) > _WORKING_SIZE:
        if image is decoded:  # thumbnail() works in place: the image as given may be kept (a query's original)
            image = image.copy()
        image.thumbnail((_WORKING_SIZE, _WORKING_SIZE), Image.Resampling.BOX)
    if has_alpha:
        grey = _unit(np.asarray(image.convert("L")))
        return grey, _unit(np.asarray(image.getchannel("A")))
    return _unit(np.asarray(image)), None


def _array_to_grey_alpha(array: np.ndarray, label: str, max_pixels: int) -> tuple[np.ndarray, np.ndarray | None]:
    values = _array_values(array, label, max_pixels)
    if values.ndim == 2:
        return values, None
    luma = values[..., 0] * 0.299 + values[..., 1] * 0.587 + values[..., 2] * 0.114
    return luma.astype(np.float32), (values[..., 3] if values.shape[-1] == 4 else None)


def _array_values(array: np.ndarray, label: str, max_pixels: int) -> np.ndarray:
    """An array image, checked -> float32 in [0, 1]: (H, W), or (H, W, 3 or 4) channels-last."""
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # (C, H, W) -> (H, W, C), as torch stores images
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)) or min(array.shape[:2]) == 0:
        raise ImageError(
            f"{label} has shape {array.shape}: pass one image as (H, W), (H, W, C) or (C, H, W) with C in 1, 3, 4"
        )
    if array.shape[0] * array.shape[1] > max_pixels:
        raise ImageTooLargeError(label, array.shape[1], array.shape[0], max_pixels)
    if array.dtype == np.uint8:
        values = _unit(array)
    elif array.dtype == np.uint16:
        values = array.astype(np.float32) / np.float32(65535)
    elif array.dtype == bool or np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating):
        values = array.astype(np.float32)
        if not np.all(np.isfinite(values)):
            raise ImageError(f"{label} holds NaN or infinite values: pass pixel values in [0, 1]")
        if values.max(initial=0) > 1:  # integers in a wider type: assume 8-bit or 16-bit range
            values /= np.float32(255 if values.max() <= 255 else 65535)
        values = np.clip(values, 0, 1)
    else:
        raise ImageError(f"{label} has dtype {array.dtype}: pass uint8, uint16 or float pixel values")
    return values


def _unit(array: np.ndarray) -> np.ndarray:
    # float32 division, as torchvision's ToTensor does: a dataset image maps to the same floats.
    return array.astype(np.float32) / np.float32(255)


def _name_of(source: object) -> str | None:
    return str(source) if isinstance(source, str | Path) else None


def _is_array(source: object) -> bool:
    return isinstance(source, np.ndarray) or (hasattr(source, "detach") and hasattr(source, "numpy"))


def _as_numpy(source: Any) -> np.ndarray:
    if not hasattr(source, "detach"):
        return source
    # A torch tensor, without importing torch. bfloat16 and float16 become float32 (NumPy has no
    # bfloat16); sparse, meta, quantized and complex tensors are refused with our own message.
    try:
        tensor = source.detach()
        if getattr(tensor, "is_sparse", False) or getattr(tensor, "is_meta", False) or tensor.is_complex():
            raise TypeError
        tensor = tensor.cpu()
        if tensor.is_floating_point() and tensor.dtype.itemsize < 4:
            tensor = tensor.float()
        return np.asarray(tensor.numpy())
    except Exception:
        dtype, layout = getattr(source, "dtype", "?"), getattr(source, "layout", "?")
        raise ImageError(
            f"cannot use a torch tensor of dtype {dtype} ({layout}, on {getattr(source, 'device', '?')}) as an image: "
            "pass a dense CPU tensor of uint8 or float values, e.g. tensor.float()"
        ) from None
