"""A generated folder of a user's images: PNG and JPEG, dark and light backgrounds, nested, broken.

FOLDER/ellipse/e-000.png ...        class folders (labels with --labels folders)
FOLDER/rectangle/deep/r-001.jpg     nested one level further: still class "rectangle"
FOLDER/ring/light-002.png           dark object on a light, larger canvas: framed by preprocessing
FOLDER/loose-000.png                at the top: no label
FOLDER/broken/*.png                 corrupt: truncated, text named .png, empty (listed as skipped)
FOLDER/notes.txt, FOLDER/.hidden.png  ignored: not an image by name, hidden
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from conftest import synthetic_images
from PIL import Image

CLASSES = ("ellipse", "rectangle", "ring")


@dataclass
class ImageFolder:
    root: Path
    images: dict[str, np.ndarray] = field(default_factory=dict)  # readable path -> its 28x28 source pixels
    labels: dict[str, str | None] = field(default_factory=dict)  # readable path -> class folder
    broken: list[str] = field(default_factory=list)


def png_bytes(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def write_image_folder(root: Path, n: int = 36, *, seed: int = 0) -> ImageFolder:
    """n images (a third of them in each class folder), a few loose, light and nested ones, 3 broken."""
    folder = ImageFolder(root)
    images = synthetic_images(n + 2, seed=seed)
    for i in range(n):
        label = CLASSES[i % 3]
        if i % 7 == 3:  # nested, as JPEG (quality 100 keeps 28x28 pixels close, not equal)
            path, data = f"{label}/deep/{label[0]}-{i:03d}.jpg", _jpeg(images[i])
        elif i % 5 == 4:  # a dark object on a light background, 3x larger: preprocessing frames it
            light = 255 - np.kron(images[i], np.ones((3, 3), np.uint8))
            path, data = f"{label}/light-{i:03d}.png", png_bytes(light)
        else:
            path, data = f"{label}/{label[0]}-{i:03d}.png", png_bytes(images[i])
        _write(root / path, data)
        folder.images[path], folder.labels[path] = images[i], label
    for j in range(2):
        path = f"loose-{j:03d}.png"
        _write(root / path, png_bytes(images[n + j]))
        folder.images[path], folder.labels[path] = images[n + j], None
    _write(root / "broken/truncated.png", png_bytes(images[0])[:60])
    _write(root / "broken/text.png", b"this is not an image\n")
    _write(root / "broken/empty.png", b"")
    folder.broken = ["broken/empty.png", "broken/text.png", "broken/truncated.png"]
    _write(root / "notes.txt", b"not an image")
    _write(root / ".hidden.png", png_bytes(images[0]))
    return folder


def _jpeg(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="JPEG", quality=100)
    return out.getvalue()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
