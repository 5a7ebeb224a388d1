"""What the server adds to a search for steering it: feedback marks in, explanations out.

Kept beside server.py so the route stays a few lines: the page sends its marks with every search
(the server keeps no state between requests: marks live in the page), and asks for explanations
when the user has switched them on.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from aesearch.errors import InvalidArgumentError
from aesearch.figures.explain import grey, signed_colours, strip
from aesearch.integers import parse_int_list
from aesearch.search.engine import QueryResult, SearchEngine
from aesearch.search.explain import explain_hits

MAX_MARKS = 1000  # more marks than anyone clicks; bounds the work one request can ask for


def parse_ids(text: str | None, name: str) -> list[int]:
    """The `more`/`less` query parameter: ids separated by commas (empty: none), by aesearch.integers."""
    if not text:
        return []
    if text.count(",") >= MAX_MARKS:  # counted before parsing, so a huge list costs nothing
        raise InvalidArgumentError(f"{name} takes up to {MAX_MARKS} indexed image ids, got {text.count(',') + 1}")
    return parse_int_list(text, name)


def steer(engine: SearchEngine, result: QueryResult, *, more: str | None, less: str | None) -> QueryResult:
    """The result refined by the page's marks (unchanged when there are none)."""
    more_ids, less_ids = parse_ids(more, "more"), parse_ids(less, "less")
    if not (more_ids or less_ids):
        return result
    return engine.refine(result, more_ids, less_ids)


def explanations(engine: SearchEngine, result: QueryResult) -> list[dict]:
    """Per hit: the two signed difference maps and the interpolation strip, as small PNG data URLs.

    The PNGs are 28 pixels high; the page enlarges them with `image-rendering: pixelated`.
    """
    out = []
    for e in explain_hits(engine, result, result.hits):
        out.append(
            {
                "id": e.hit.id,
                "pixel_difference_png": _data_url(signed_colours(e.pixel_difference)),
                "reconstruction_difference_png": _data_url(signed_colours(e.reconstruction_difference)),
                "interpolation_png": _data_url(strip(e.interpolation)),
                "steps": len(e.fractions),
            }
        )
    return out


def marked_hits(engine: SearchEngine, result: QueryResult) -> list[dict]:
    """Every marked image with its class, so the page can show marks that are not among the hits."""
    return [
        {**engine.hit(i).to_dict(), "mark": result.feedback.mark(i)}
        for i in (*result.feedback.more, *result.feedback.less)
    ]


def _data_url(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(grey(pixels) if pixels.ndim == 2 else pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
