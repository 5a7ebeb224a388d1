"""The query result picture, drawn with Pillow alone (matplotlib costs ~0.8 s to import).

    [query as given] [preprocessed] [reconstruction]  |  #1 ... #k neighbours
Each neighbour is labelled with its class, distance, split and id.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from aesearch.atomic import atomic_path

TILE = 140  # every image is enlarged to this with nearest-neighbour (5x a 28x28 one), so pixels stay crisp
GAP = 14
LABEL_HEIGHT = 38
COLUMNS = 5  # neighbours per row
MAX_DRAWN = 50  # a picture of 70,000 neighbours helps nobody: the first 50 are drawn
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
BACKGROUND = (250, 250, 250)
INK = (30, 30, 30)
MUTED = (110, 110, 110)
WARNING = (176, 58, 0)


def render_result(
    path: str | Path,
    *,
    original: Image.Image | None,
    query: np.ndarray,
    reconstruction: np.ndarray,
    neighbours: list[tuple[np.ndarray, str, str]],
    title: str,
    warning: str | None = None,
) -> Path:
    """Write the result picture atomically as PNG.

    Args:
        original: the image as the user gave it (shown fitted into a tile), or None.
        query, reconstruction: (size, size) float arrays in [0, 1], as the model sees images.
        neighbours: (indexed uint8 image, first label line, second label line) per hit, in rank order.
        warning: one line shown in colour under the title (e.g. an out-of-distribution query).
    """
    font, small, bold = load_font(15), load_font(13), load_font(17)
    if len(neighbours) > MAX_DRAWN:
        title = f"{title} · first {MAX_DRAWN} of {len(neighbours)} drawn"
        neighbours = neighbours[:MAX_DRAWN]
    rows = max(1, -(-len(neighbours) // COLUMNS))
    left_width = 3 * TILE + 2 * GAP
    width = GAP + left_width + 2 * GAP + COLUMNS * TILE + (COLUMNS - 1) * GAP + GAP
    header = 34 + (22 if warning else 0)
    grid_height = rows * (TILE + LABEL_HEIGHT) + (rows - 1) * GAP
    height = header + max(TILE + LABEL_HEIGHT, grid_height) + GAP
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.text((GAP, 8), title, fill=INK, font=bold)
    if warning:
        draw.text((GAP, 32), warning, fill=WARNING, font=font)

    panels = [
        (_fit(original) if original is not None else _enlarge(query), "query, as given"),
        (_enlarge(query), f"preprocessed {query.shape[1]}x{query.shape[0]}"),
        (_enlarge(reconstruction), "reconstruction"),
    ]
    for n, (tile, caption) in enumerate(panels):
        x = GAP + n * (TILE + GAP)
        canvas.paste(tile, (x, header))
        draw.text((x, header + TILE + 4), caption, fill=INK, font=small)

    grid_x = GAP + left_width + 2 * GAP
    draw.line([(grid_x - GAP, header), (grid_x - GAP, height - GAP)], fill=(210, 210, 210), width=2)
    for n, (image, line1, line2) in enumerate(neighbours):
        row, col = divmod(n, COLUMNS)
        x, y = grid_x + col * (TILE + GAP), header + row * (TILE + LABEL_HEIGHT + GAP)
        canvas.paste(_enlarge(image), (x, y))
        draw.text((x, y + TILE + 3), fitted(line1, small, TILE), fill=INK, font=small)
        draw.text((x, y + TILE + 20), fitted(line2, small, TILE), fill=MUTED, font=small)

    path = Path(path)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format=picture_format(path))
    return path


def picture_format(path: str | Path) -> str:
    """The image format for a picture path, from its extension."""
    from aesearch.errors import InvalidArgumentError

    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise InvalidArgumentError(f"cannot write a picture as {path}: name it .png, .jpg or .webp")
    return FORMATS[suffix]


# What matplotlib figures (maps, evaluation reports) are written as: the raster formats above plus vectors.
FIGURE_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp", ".pdf": "pdf", ".svg": "svg"}


def figure_format(path: str | Path) -> str:
    """matplotlib's format name for a figure path, from its extension; one line for anything else."""
    from aesearch.errors import InvalidArgumentError

    suffix = Path(path).suffix.lower()
    if suffix not in FIGURE_FORMATS:
        raise InvalidArgumentError(f"cannot write a figure as {path}: name it .png, .jpg, .webp, .pdf or .svg")
    return FIGURE_FORMATS[suffix]


def _enlarge(image: np.ndarray) -> Image.Image:
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
    return Image.fromarray(array).resize((TILE, TILE), Image.Resampling.NEAREST).convert("RGB")  # grey or RGB


def _fit(original: Image.Image) -> Image.Image:
    """The user's image as they gave it, fitted into a tile; a checkerboard shows transparency."""
    transparent = original.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in original.info
    if original.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):  # 16-bit and float: scale to 8-bit
        values = np.asarray(original, dtype=np.float32)
        original = Image.fromarray((values / max(float(values.max()), 1e-6) * 255).astype(np.uint8))
    image = original.convert("RGBA")
    image.thumbnail((TILE, TILE), Image.Resampling.LANCZOS)
    tile = Image.new("RGBA", (TILE, TILE), (255, 255, 255, 255))
    if transparent:
        checker = ImageDraw.Draw(tile)
        for y in range(0, TILE, 10):
            for x in range(0, TILE, 10):
                if (x + y) // 10 % 2:
                    checker.rectangle([x, y, x + 9, y + 9], fill=(225, 225, 225, 255))
    tile.alpha_composite(image, ((TILE - image.width) // 2, (TILE - image.height) // 2))
    return tile.convert("RGB")


def fitted(text: str, font, width: float) -> str:
    """text cut to fit `width` pixels in `font`, so that a person can still find the file it names.

    A path keeps its file name whole and as much of its start as fits, the middle elided
    ("products/sh…/boot-0042.png"); a name too long for that keeps its start and its end
    ("boot-00…042.png"). Cutting from the left, as captions did, lost the folders that say where a
    hit is ("s/boot-0042.png").
    """

    def fits(candidate: str) -> bool:
        return font.getlength(candidate) <= width

    if fits(text):
        return text
    head, slash, name = text.rpartition("/")
    if slash:
        if fits(f"…/{name}"):
            cut = max(i for i in range(len(head) + 1) if fits(f"{head[:i]}…/{name}"))
            return f"{head[:cut]}…/{name}"
        if fits(f"…{name}"):
            return f"…{name}"
        text = name  # the file name is what finds the file: its middle goes rather than all of it
    for keep in range(len(text) - 1, 0, -1):
        left = (keep + 1) // 2
        candidate = f"{text[:left]}…{text[len(text) - (keep - left) :] if keep > left else ''}"
        if fits(candidate):
            return candidate
    return "…"


def load_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font at this size (every figure's text), the fixed bitmap one where it has no FreeType."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()
