"""How results look in a notebook: self-contained HTML (Jupyter's `_repr_html_`) and short text.

Every picture is an inline PNG data URL of the image at its own size (28x28: a few hundred bytes),
enlarged by the browser with `image-rendering: pixelated`, so an output needs no file, no server,
no script and no network, and a saved notebook shows it anywhere. Styles are inline attributes:
Jupyter front ends drop `<style>` blocks from untrusted outputs, and `width`/`height` keep the
sizes even where styles are dropped too.

Everything a user or a file system named (paths, class names, errors) is escaped, paths first shown
as one printable line (store/paths.py `shown`). A grid shows at most `defaults.NOTEBOOK_MAX_TILES`
images and says how many more there are: 100 thumbnails render in milliseconds, 70,000 would freeze
the browser. Images come through an `images_of(ids) -> (n, h, w) uint8` callable (the engine's
bundle, or a server's fetcher), read once per grid; when there is none, or it fails, the grid is
drawn without thumbnails and says why, since a representation that raises shows nothing at all.

The signed difference maps use the colours of the explanation picture (figures/explain.py, which
this layer may not import; a test holds the two equal).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np
from PIL import Image

from aesearch import defaults
from aesearch.colours import grey, signed_colours
from aesearch.integers import check_int
from aesearch.store.paths import shown

if TYPE_CHECKING:
    from aesearch.search.engine import QueryResult
    from aesearch.search.explain import Explanation

ImagesOf = Callable[[Sequence[int]], np.ndarray]


class Group(Protocol):
    """What a duplicate group (quality/duplicates.py, a layer above) shows itself with."""

    ids: list[int]
    exact: bool
    splits: list[str]
    paths: list[str]
    max_distance: float
    images_of: ImagesOf | None


MUTED = "#6e6e6e"
WARNING = "#b03a00"
_BOX = "font-family:system-ui,-apple-system,'Segoe UI',sans-serif;font-size:12px;line-height:1.35;color:#1e1e1e"
_ROW = "display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start;margin:6px 0"
_PIXELATED = "image-rendering:pixelated;image-rendering:crisp-edges;display:block;background:#000"
_CAPTION = "margin-top:2px;font-size:11px"
_BREAKING = "overflow-wrap:anywhere;word-break:break-all"  # a path breaks anywhere: it may have no spaces


# --- pictures ---


def png_data_url(image: np.ndarray) -> str:
    """An (H, W) greyscale or (H, W, 3) RGB image (uint8, or floats in [0, 1]) as a PNG data URL."""
    array = np.ascontiguousarray(grey(image))
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)  # tiny images: speed over bytes
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(image: np.ndarray, size: int, alt: str) -> str:
    h, w = np.asarray(image).shape[:2]
    width, height = (size, max(1, round(size * h / w))) if w >= h else (max(1, round(size * w / h)), size)
    return (
        f'<img src="{png_data_url(image)}" width="{width}" height="{height}" alt="{_e(alt)}" '
        f'style="{_PIXELATED};width:{width}px;height:{height}px">'
    )


def _e(text: object) -> str:
    """Any text (a path, a folder's class name, an error) as HTML text or attribute value: one printable
    line, undecodable bytes as \\xff (a lone surrogate would make the output unencodable), escaped."""
    return html.escape(shown(str(text)), quote=True)


# --- one tile, one grid ---


def _tile(image: np.ndarray | None, lines: list[str], *, size: int, alt: str, kind: str, title: str = "") -> str:
    """A figure: the image (or an empty frame of its size) and caption lines (already escaped HTML)."""
    picture = (
        _img(image, size, alt)
        if image is not None
        else f'<div style="width:{size}px;height:{size}px;background:#eee" title="no image"></div>'
    )
    caption = "".join(f"<div>{line}</div>" for line in lines)
    attributes = f' title="{title}"' if title else ""
    return (
        f'<figure class="aesearch-{kind}"{attributes} style="margin:0;width:{max(size, 96)}px">'
        f'{picture}<figcaption style="{_CAPTION}">{caption}</figcaption></figure>'
    )


def _thumbnails(images_of: ImagesOf | None, ids: Sequence[int]) -> tuple[list[np.ndarray | None], str | None]:
    """The images of these ids, or Nones and a line saying why there are none."""
    if images_of is None or not len(ids):
        return [None] * len(ids), None if images_of is not None else "no image source: shown without thumbnails"
    try:
        images = np.asarray(images_of(list(ids)))
    except Exception as exc:  # any source (a bundle, a server's fetcher) may fail: the grid still shows
        return [None] * len(ids), f"thumbnails unavailable ({type(exc).__name__}: {exc!s:.200})"
    if images.ndim not in (3, 4) or len(images) != len(ids) or 0 in images.shape:
        return [None] * len(ids), f"thumbnails unavailable (the image source returned shape {images.shape})"
    return list(images), None


def _grid(tiles: list[str], total: int, noun: str) -> str:
    more = total - len(tiles)
    rest = f'<div class="aesearch-more" style="color:{MUTED}">and {more:,} more {noun}</div>' if more > 0 else ""
    return f'<div class="aesearch-grid" style="{_ROW}">{"".join(tiles)}</div>{rest}'


def _note(text: str | None, colour: str = MUTED) -> str:
    return f'<div class="aesearch-note" style="color:{colour}">{_e(text)}</div>' if text else ""


def _limit(limit: int) -> int:
    return check_int(limit, "limit", low=1)


def _field(record: object, name: str, default: object = None) -> object:
    """A field of a record given as a mapping (JSON) or an object (Hit)."""
    if isinstance(record, Mapping):
        return record.get(name, default)
    return getattr(record, name, default)


def _record_lines(record: object, id: int) -> list[str]:
    label = _field(record, "label_name")
    split = _field(record, "split")
    path = str(_field(record, "path") or "")
    lines = [f"<b>{_e(label)}</b>" if label else f'<span style="color:{MUTED}">unlabelled</span>']
    lines.append(f'<span style="color:{MUTED}">id {id}{f" · {_e(split)}" if split else ""}</span>')
    if path:
        lines.append(f'<span class="aesearch-path" style="{_BREAKING}">{_e(path)}</span>')
    return lines


# --- the views ---


def result_html(result: QueryResult, *, limit: int = defaults.NOTEBOOK_MAX_TILES) -> str:
    """A query result: the searched image and its reconstruction, then the hits in rank order."""
    hits = result.hits[: _limit(limit)]
    images, note = _thumbnails(result.images_of, [h.id for h in hits])
    big, small = defaults.NOTEBOOK_LARGE_PX, defaults.NOTEBOOK_TILE_PX
    header = [
        _tile(result.query, ["query (searched)"], size=big, alt="query", kind="query"),
        _tile(result.reconstruction, ["its reconstruction"], size=big, alt="reconstruction", kind="reconstruction"),
    ]
    t = result.trust
    summary = [
        f"<b>{len(result.hits):,} hit{'s' if len(result.hits) != 1 else ''}</b>",
        f"reconstruction MSE {result.reconstruction_mse:.4f} "
        f"(percentile {t.reconstruction_percentile:.1f} of indexed images)",
        f"nearest distance at percentile {t.neighbour_percentile:.1f}",
    ]
    if result.feedback:
        summary.append(f"feedback: {len(result.feedback.more)} more like, {len(result.feedback.less)} less like")
    warning = t.warning()
    if warning:
        summary.append(f'<span style="color:{WARNING}">{_e(warning)}</span>')
    tiles = []
    for hit, image in zip(hits, images, strict=True):
        mark = result.feedback.mark(hit.id) if result.feedback else None
        lines = [f"<b>#{hit.rank}</b> · {hit.distance:.4f}" + (f" · {mark} like" if mark else "")]
        lines += _record_lines(hit, hit.id)
        tiles.append(_tile(image, lines, size=small, alt=f"hit {hit.rank}", kind="hit", title=_e(hit.name)))
    return (
        f'<div class="aesearch-result" style="{_BOX}">'
        f'<div style="{_ROW}">{"".join(header)}<div class="aesearch-summary">'
        f"{''.join(f'<div>{line}</div>' for line in summary)}</div></div>"
        f"{_note(note)}{_grid(tiles, len(result.hits), 'hits')}</div>"
    )


def explanation_html(explanation: Explanation) -> str:
    """Why a hit matched: the two images and their reconstructions, the signed differences, the path in z."""
    e, size = explanation, defaults.NOTEBOOK_TILE_PX
    hit = e.hit
    pairs = [
        (e.query, "query"),
        (e.image, "hit"),
        (e.query_reconstruction, "query reconstructed"),
        (e.hit_reconstruction, "hit reconstructed"),
        (signed_colours(e.pixel_difference), "pixels: hit - query"),
        (signed_colours(e.reconstruction_difference), "reconstructions: hit - query"),
    ]
    images = [_tile(image, [_e(caption)], size=size, alt=caption, kind="image") for image, caption in pairs]
    key = signed_colours(np.linspace(-1, 1, 65, dtype=np.float32)[None])
    legend = (
        f'<div class="aesearch-key"><img src="{png_data_url(key)}" width="160" height="12" alt="colour key" '
        'style="width:160px;height:12px;display:block">'
        '<div><span style="color:rgb(30,80,210)">-1: query has more ink</span> · 0: same · '
        '<span style="color:rgb(200,30,30)">+1: hit has more ink</span></div></div>'
    )
    frames = [
        _tile(frame, [f"{t:.2f}"], size=size, alt=f"z at {t:.2f}", kind="frame")
        for frame, t in zip(e.interpolation, e.fractions, strict=True)
    ]
    title = [f"<b>#{hit.rank}</b> · distance {hit.distance:.4f}", *_record_lines(hit, hit.id)]
    return (
        f'<div class="aesearch-explanation" style="{_BOX}">'
        f"<div>{' · '.join(title)}</div>"
        f'<div style="{_ROW}">{"".join(images)}</div>{legend}'
        f'<div style="margin-top:6px">decoder along z: query -> hit ({len(frames)} steps)</div>'
        f'<div class="aesearch-strip" style="{_ROW}">{"".join(frames)}</div></div>'
    )


def group_html(group: Group, *, limit: int = defaults.NOTEBOOK_MAX_TILES) -> str:
    """A duplicate group: every member's thumbnail with its id, split and path."""
    ids, paths, splits = group.ids, group.paths, group.splits
    shown_ids = list(ids[: _limit(limit)])
    images, note = _thumbnails(group.images_of, shown_ids)
    kind = "exact copies" if group.exact else f"near duplicates, joined at distances <= {group.max_distance:.4f}"
    tiles = []
    for n, (id, image) in enumerate(zip(shown_ids, images, strict=True)):
        lines = [f"<b>id {int(id)}</b> · {_e(splits[n])}" if n < len(splits) else f"<b>id {int(id)}</b>"]
        path = paths[n] if n < len(paths) else ""
        if path:
            lines.append(f'<span class="aesearch-path" style="{_BREAKING}">{_e(path)}</span>')
        tiles.append(_tile(image, lines, size=defaults.NOTEBOOK_TILE_PX, alt=f"id {id}", kind="member", title=_e(path)))
    return (
        f'<div class="aesearch-group" style="{_BOX}"><div><b>{len(ids):,} images</b> · {_e(kind)}</div>'
        f"{_note(note)}{_grid(tiles, len(ids), 'images')}</div>"
    )


def selection_html(
    ids: Sequence[int],
    images_of: ImagesOf | None,
    records: Sequence[object],
    *,
    limit: int = defaults.NOTEBOOK_MAX_TILES,
) -> str:
    """A selection of indexed images: the first `limit` as thumbnails with class, id, split and path.

    records: one per id, in order, as mappings (Hit.to_dict(), a server's JSON) or objects with the
    same attribute names (Hit); only the first `limit` are read, so it may be that long only.
    """
    shown_ids = [int(i) for i in ids[: _limit(limit)]]
    images, note = _thumbnails(images_of, shown_ids)
    tiles = []
    for n, (id, image) in enumerate(zip(shown_ids, images, strict=True)):
        record = records[n] if n < len(records) else {}
        path = str(_field(record, "path") or "")
        lines = _record_lines(record, id)
        tiles.append(_tile(image, lines, size=defaults.NOTEBOOK_TILE_PX, alt=f"id {id}", kind="item", title=_e(path)))
    return (
        f'<div class="aesearch-selection" style="{_BOX}"><div><b>{len(ids):,} images selected</b></div>'
        f"{_note(note)}{_grid(tiles, len(ids), 'images')}</div>"
    )


# --- text, for consoles and for IPython's text/plain ---


def result_text(result: QueryResult, *, limit: int = 10) -> str:
    """A few lines: the query's numbers and the first hits."""
    n = len(result.hits)
    head = (
        f"QueryResult({n} hit{'s' if n != 1 else ''}, reconstruction MSE {result.reconstruction_mse:.4f}, "
        f"{'in distribution' if result.in_distribution else 'OUT OF DISTRIBUTION'}"
        f"{', ' + str(len(result.feedback.more) + len(result.feedback.less)) + ' marks' if result.feedback else ''})"
    )
    lines = [head]
    for hit in result.hits[:limit]:
        lines.append(f"  #{hit.rank:<3} id {hit.id:<8} {hit.distance:.4f}  {shown(hit.name)}")
    if n > limit:
        lines.append(f"  ... and {n - limit:,} more")
    return "\n".join(lines)


def explanation_text(explanation: Explanation) -> str:
    e = explanation
    return (
        f"Explanation(hit #{e.hit.rank}, id {e.hit.id}, {shown(e.hit.name)}, distance {e.hit.distance:.4f}: "
        f"mean |pixel difference| {float(np.abs(e.pixel_difference).mean()):.3f}, "
        f"mean |reconstruction difference| {float(np.abs(e.reconstruction_difference).mean()):.3f}, "
        f"{len(e.fractions)} interpolation steps)"
    )
