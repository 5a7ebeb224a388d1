"""Seeded fuzzing of the image decoder: every damaged file gives a result or the one-line ImageError.

Byte flips, truncations and insertions for every format, and for PNG chunk-level mutations with
valid CRCs (so Pillow gets past the checksum into the chunk parsers: zero-length or truncated
sRGB, cHRM, pHYs, tRNS, IHDR..., text and ICC chunks that inflate too far).
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from aesearch.errors import ImageError
from aesearch.sources.preprocess import preprocess

PER_FORMAT = 200
SEED = 20261130


def _picture(mode: str) -> Image.Image:
    rng = np.random.default_rng(0)
    grey = np.zeros((18, 22), np.uint8)
    grey[4:14, 6:17] = rng.integers(120, 255, size=(10, 11))
    if mode == "RGBA":
        return Image.fromarray(np.dstack([grey, grey, grey, (grey > 0).astype(np.uint8) * 255]), "RGBA")
    if mode == "RGB":
        return Image.fromarray(np.dstack([grey, grey // 2, grey]), "RGB")
    if mode == "F":
        return Image.fromarray(grey.astype(np.float32) / 255, "F")
    if mode == "I;16":
        return Image.fromarray(grey.astype(np.uint16) * 257)
    if mode == "I":
        return Image.fromarray(grey.astype(np.int32) * 1000, "I")
    return Image.fromarray(grey).convert(mode)


def _encoded(fmt: str, mode: str, **options) -> bytes:
    out = io.BytesIO()
    _picture(mode).save(out, format=fmt, **options)
    return out.getvalue()


SEEDS = {
    "PNG": [
        _encoded("PNG", "L"),
        _encoded("PNG", "RGBA"),
        _encoded("PNG", "P", transparency=0),
        _encoded("PNG", "I;16"),
    ],
    "JPEG": [_encoded("JPEG", "L"), _encoded("JPEG", "RGB", progressive=True)],
    "GIF": [_encoded("GIF", "P")],
    "BMP": [_encoded("BMP", "RGB"), _encoded("BMP", "L")],
    "TIFF": [_encoded("TIFF", "F"), _encoded("TIFF", "I"), _encoded("TIFF", "RGB", compression="tiff_deflate")],
    "WEBP": [_encoded("WEBP", "RGB"), _encoded("WEBP", "RGBA", lossless=True)],
}


def _chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    chunks, at = [], 8
    while at + 8 <= len(png):
        (length,), kind = struct.unpack(">I", png[at : at + 4]), png[at + 4 : at + 8]
        chunks.append((kind, png[at + 8 : at + 8 + length]))
        at += 12 + length
    return chunks


def _png(chunks: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data)) for kind, data in chunks
    )
    return b"\x89PNG\r\n\x1a\n" + body


ANCILLARY = [b"sRGB", b"cHRM", b"pHYs", b"tRNS", b"gAMA", b"bKGD", b"sBIT", b"tIME", b"eXIf", b"hIST", b"sPLT"]


def _mutate_chunks(png: bytes, rng: np.random.Generator) -> bytes:
    """One chunk-level change, every CRC valid."""
    chunks = _chunks(png)
    choice = rng.integers(7)
    i = int(rng.integers(len(chunks)))
    kind, data = chunks[i]
    if choice == 0:  # an ancillary chunk, empty or short or random, before the image data
        extra = (ANCILLARY[rng.integers(len(ANCILLARY))], rng.bytes(int(rng.choice([0, 1, 3, 7, 9, 33]))))
        chunks.insert(1, extra)
    elif choice == 1:  # a chunk cut short
        chunks[i] = (kind, data[: int(rng.integers(len(data) + 1))])
    elif choice == 2:  # a chunk's data replaced
        chunks[i] = (kind, rng.bytes(max(1, len(data))))
    elif choice == 3:  # IHDR with random fields
        chunks[0] = (b"IHDR", struct.pack(">IIBBBBB", *rng.integers(0, 70000, 2), *rng.integers(0, 20, 5)))
    elif choice == 4:  # a text or ICC chunk that inflates far (a small "zip bomb")
        bomb = zlib.compress(b"\0" * int(rng.choice([1 << 10, 1 << 21, 1 << 24])), 9)
        kind = [b"zTXt", b"iCCP", b"iTXt"][rng.integers(3)]
        payload = b"k\0\0" + bomb if kind != b"iTXt" else b"k\0\1\0\0\0" + bomb
        chunks.insert(1, (kind, payload))
    elif choice == 5:  # a chunk repeated
        chunks.insert(i, chunks[i])
    else:  # a chunk dropped
        del chunks[i]
    return _png(chunks)


def _mutate_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    raw = bytearray(data)
    choice = rng.integers(3)
    if choice == 0:  # flip a few bytes anywhere
        for at in rng.integers(0, len(raw), size=int(rng.integers(1, 9))):
            raw[at] ^= int(rng.integers(1, 256))
        return bytes(raw)
    if choice == 1:  # truncated
        return bytes(raw[: int(rng.integers(1, len(raw)))])
    at = int(rng.integers(len(raw)))  # junk inserted
    return bytes(raw[:at] + rng.bytes(int(rng.integers(1, 64))) + raw[at:])


def _check(data: bytes, outcomes: dict[str, int]) -> None:
    try:
        result = preprocess(data, name="fuzzed.img")
    except ImageError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith(("fuzzed.img", "cannot read fuzzed.img")), message
        outcomes["refused"] += 1
        return
    assert result.shape == (28, 28) and result.dtype == np.float32
    assert np.all(np.isfinite(result)) and 0 <= result.min() <= result.max() <= 1
    outcomes["read"] += 1


@pytest.mark.parametrize("fmt", list(SEEDS))
def test_mutated_files_give_a_result_or_the_image_error(fmt):
    rng = np.random.default_rng([SEED, list(SEEDS).index(fmt)])
    outcomes = {"read": 0, "refused": 0}
    for n in range(PER_FORMAT):
        seed = SEEDS[fmt][n % len(SEEDS[fmt])]
        data = _mutate_chunks(seed, rng) if fmt == "PNG" and n % 2 else _mutate_bytes(seed, rng)
        _check(data, outcomes)
    assert sum(outcomes.values()) == PER_FORMAT
    assert outcomes["refused"] > 0  # the mutations do damage: the test exercises the error paths


def test_every_seed_file_reads():
    for files in SEEDS.values():
        for data in files:
            assert preprocess(data).max() > 0
