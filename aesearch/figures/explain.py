"""Pictures of explanations (search/explain.py), drawn with Pillow alone like render.py.

    query | its reconstruction | colour key
    #1 class  [hit] [pixels: hit - query] [reconstructions: hit - query] [z path: query ... hit]
    ...
Signed differences use one fixed scale for every map (-1 to +1 of full ink): red where the hit
has more ink than the query, blue where the query has more, white where they agree, so maps of
different hits can be compared by eye. For colour images a pixel's difference is drawn by how far
its colour moved (the length of the RGB difference, divided by sqrt 3 so that black to white is 1),
red where the hit is lighter there (by luma) and blue where it is darker: a change of hue at the
same lightness shows too. Tiles shrink as k grows so a k = 50 picture stays a page
one scrolls, with every pixel at least 2x2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from aesearch.atomic import atomic_path
from aesearch.colours import grey, signed_colours
from aesearch.figures.render import BACKGROUND, GAP, INK, MUTED, load_font, picture_format

FORMATS = {".png": "PNG", ".gif": "GIF"}


def strip(frames: np.ndarray) -> np.ndarray:
    """(steps, h, w[, 3]) -> (h, steps * w + steps - 1[, 3]) uint8, frames side by side with 1-pixel gaps."""
    steps, h, w = frames.shape[:3]
    out = np.full((h, steps * w + steps - 1, *frames.shape[3:]), 128, np.uint8)
    for n, frame in enumerate(frames):
        out[:, n * (w + 1) : n * (w + 1) + w] = grey(frame)
    return out


def render_explanations(path: str | Path, explanations: list, *, title: str) -> Path:
    """Write one picture explaining every hit (rows in rank order) atomically; .png, .jpg or .webp."""
    fmt = picture_format(path)
    scale = 4 if len(explanations) <= 12 else 3 if len(explanations) <= 25 else 2
    side = explanations[0].image.shape[0] if explanations else 1
    tile = side * max(1, min(scale, 160 // side))  # whole pixels of the model's size; 64 px images twice

    font, small, bold = load_font(15), load_font(13), load_font(17)
    steps = len(explanations[0].fractions) if explanations else 0
    label_width, column, big = 150, max(tile, 112), 96  # columns wide enough for their captions
    columns_x = [GAP + label_width + n * (column + GAP) for n in range(3)]
    strip_x = columns_x[2] + column + GAP
    width = max(strip_x + steps * (tile + 2) + GAP, 720)
    header = 40 + big + 30
    row_height = tile + GAP
    height = header + 24 + len(explanations) * row_height + GAP
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.text((GAP, 8), title, fill=INK, font=bold)
    if explanations:
        first = explanations[0]
        for n, (image, caption) in enumerate(
            [(first.query, "query (searched)"), (first.query_reconstruction, "its reconstruction")]
        ):
            x = GAP + n * (column + GAP)
            canvas.paste(_tile(grey(image), big), (x, 36))
            draw.text((x, 36 + big + 4), caption, fill=INK, font=small)
        key = np.linspace(-1, 1, 200)[None].repeat(14, 0)
        key_x = GAP + 2 * (column + GAP) + GAP
        canvas.paste(Image.fromarray(signed_colours(key)), (key_x, 50))
        colour = first.query.ndim == 3  # a colour change is drawn by its size, signed by lightness
        more, less = ("lighter", "darker") if colour else ("has more ink", "has less ink")
        draw.text(
            (key_x, 68), f"-1: hit {less}" if colour else "-1: query has more ink", fill=(30, 80, 210), font=small
        )
        draw.text((key_x, 86), f"+1: hit {more}", fill=(200, 30, 30), font=small)
        draw.text((key_x, 104), "0: same colour" if colour else "0: same", fill=MUTED, font=small)
    y = header
    captions = ["hit", "pixels: hit - query", "reconstructions", f"decoder along z: query -> hit ({steps} steps)"]
    for x, caption in zip([*columns_x, strip_x], captions, strict=True):
        draw.text((x, y), caption, fill=INK, font=small)
    y += 24
    for e in explanations:
        draw.text((GAP, y + 4), f"#{e.hit.rank} {e.hit.label_name}", fill=INK, font=font)
        draw.text((GAP, y + 24), f"id {e.hit.id}", fill=MUTED, font=small)
        draw.text((GAP, y + 40), f"distance {e.hit.distance:.3f}", fill=MUTED, font=small)
        canvas.paste(_tile(grey(e.image), tile), (columns_x[0], y))
        canvas.paste(_tile(signed_colours(e.pixel_difference), tile), (columns_x[1], y))
        canvas.paste(_tile(signed_colours(e.reconstruction_difference), tile), (columns_x[2], y))
        for n, frame in enumerate(e.interpolation):
            canvas.paste(_tile(grey(frame), tile), (strip_x + n * (tile + 2), y))
        y += row_height
    return _save(canvas, path, fmt)


def render_interpolation(path: str | Path, frames: np.ndarray, fractions: np.ndarray, *, title: str) -> Path:
    """The path between two images: a labelled strip (.png) or an animation there and back (.gif)."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        from aesearch.errors import InvalidArgumentError

        raise InvalidArgumentError(f"cannot write an interpolation as {path}: name it .png or .gif")
    if suffix == ".gif":
        images = [_tile(grey(f), 280).convert("P", palette=Image.Palette.ADAPTIVE) for f in frames]
        cycle = images + images[-2:0:-1]  # there and back
        path = Path(path)
        with atomic_path(path) as tmp:
            cycle[0].save(tmp, format="GIF", save_all=True, append_images=cycle[1:], duration=150, loop=0)
        return path
    tile = 112
    width = max(GAP + len(frames) * (tile + GAP), 480)
    canvas = Image.new("RGB", (width, 36 + tile + 28), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.text((GAP, 8), title, fill=INK, font=load_font(17))
    for n, (frame, t) in enumerate(zip(frames, fractions, strict=True)):
        x = GAP + n * (tile + GAP)
        canvas.paste(_tile(grey(frame), tile), (x, 36))
        draw.text((x, 36 + tile + 4), f"{t:.2f}", fill=MUTED, font=load_font(13))
    return _save(canvas, path, "PNG")


def _tile(array: np.ndarray, size: int) -> Image.Image:
    return Image.fromarray(array).resize((size, size), Image.Resampling.NEAREST).convert("RGB")


def _save(canvas: Image.Image, path: str | Path, fmt: str) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format=fmt)
    return path
