"""A picture of duplicate groups: one row per group, its images side by side (Pillow only).

    group 1 · 5 images · exact      [img] [img] [img] ...
    group 2 · 2 images · <= 0.013   [img] [img]
Each image is labelled with its id and split, or the end of its path for a collection.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from aesearch.atomic import atomic_path
from aesearch.figures.render import BACKGROUND, GAP, INK, MUTED, fitted, load_font, picture_format

TILE = 84  # every image enlarged to this (3x a 28x28 one)
LABEL = 34
MAX_GROUPS = 12
MAX_MEMBERS = 10


def render_groups(path: str | Path, groups: list, image: Callable[[int], object], *, title: str) -> Path:
    """Write the largest groups (up to MAX_GROUPS rows of MAX_MEMBERS images) as a picture.

    Args:
        groups: DuplicateGroup objects, largest first.
        image: id -> its indexed uint8 image.
    """
    font, small, bold = load_font(13), load_font(11), load_font(16)
    shown = groups[:MAX_GROUPS]
    caption_width = 150
    columns = min(MAX_MEMBERS, max((len(g.ids) for g in shown), default=1))
    width = max(560, GAP + caption_width + columns * (TILE + GAP))
    height = 36 + max(1, len(shown)) * (TILE + LABEL + GAP) + GAP
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    more = f" · largest {len(shown)} of {len(groups):,} groups" if len(groups) > len(shown) else ""
    draw.text((GAP, 8), title + more, fill=INK, font=bold)
    if not shown:
        draw.text((GAP, 40), "no duplicates at this threshold", fill=MUTED, font=font)
    for row, group in enumerate(shown):
        y = 36 + row * (TILE + LABEL + GAP)
        kind = "exact copies" if group.exact else f"distance <= {group.max_distance:.3f}"
        draw.text((GAP, y + 4), f"group {row + 1}", fill=INK, font=font)
        draw.text((GAP, y + 22), f"{len(group.ids)} images", fill=MUTED, font=small)
        draw.text((GAP, y + 38), kind, fill=MUTED, font=small)
        for col, (id_, split, item_path) in enumerate(zip(group.ids, group.splits, group.paths, strict=True)):
            if col == MAX_MEMBERS - 1 and len(group.ids) > MAX_MEMBERS:
                x = GAP + caption_width + col * (TILE + GAP)
                draw.text((x, y + TILE // 2), f"+{len(group.ids) - col} more", fill=MUTED, font=font)
                break
            x = GAP + caption_width + col * (TILE + GAP)
            canvas.paste(_tile(image(id_)), (x, y))
            name = fitted(item_path, small, TILE) if item_path else split
            draw.text((x, y + TILE + 2), f"id {id_}", fill=INK, font=small)
            draw.text((x, y + TILE + 17), name, fill=MUTED, font=small)
    path = Path(path)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format=picture_format(path))
    return path


def _tile(image) -> Image.Image:
    return Image.fromarray(np.asarray(image, dtype=np.uint8)).resize((TILE, TILE), Image.Resampling.NEAREST)
