"""Selection: a set of indexed images (a filter's matches, a lasso on the map), to show, export or
search within (`where=selection`).

    >>> shirts = engine.select("label = Shirt and size < 10KB")
    >>> len(shirts), shirts.ids[:3]
    >>> open("shirts.csv", "w").write(shirts.to_csv())
    >>> engine.query("shoe.png", where=shirts)
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import numpy as np

from aesearch.store.paths import shown

if TYPE_CHECKING:
    from aesearch.search.engine import SearchEngine

_COLUMNS = ("id", "path", "label_name", "split", "bytes", "mtime")


@dataclass(frozen=True)
class Selection:
    """Indexed images by id (sorted int64, unique), with the engine whose bundle they are in."""

    ids: np.ndarray
    engine: SearchEngine = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        assert self.ids.dtype == np.int64 and self.ids.ndim == 1, f"ids must be 1-D int64, got {self.ids.dtype}"

    def __len__(self) -> int:
        return len(self.ids)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Selection) and np.array_equal(self.ids, other.ids)

    def __hash__(self) -> int:
        return hash(self.ids.tobytes())

    def __repr__(self) -> str:
        shown_ids = ", ".join(map(str, self.ids[:8].tolist())) + (", ..." if len(self.ids) > 8 else "")
        return f"Selection({len(self):,} images: {shown_ids})"

    def _repr_html_(self) -> str:  # Jupyter: the first images as a grid, with their records
        from aesearch import defaults
        from aesearch.search.notebook import selection_html

        shown_ids = self.ids[: defaults.NOTEBOOK_MAX_TILES]
        head = Selection(shown_ids, self.engine).records()
        return selection_html(self.ids, self.engine.pictures_of, head)

    def records(self) -> list[dict]:
        """One dict per image, in id order: id, path (as shown, "" for dataset images), label_name
        (None: unlabelled), split, bytes, mtime (ISO 8601 UTC; None where the store has no time)."""
        if not len(self.ids):
            return []
        bundle = self.engine.bundle
        records = bundle.records(self.ids)
        paths = bundle.paths_of(self.ids)
        names, splits = bundle.class_names, bundle.split_names
        out = []
        for id, record, path in zip(self.ids.tolist(), records, paths, strict=True):
            label, mtime = int(record["label"]), int(record["mtime_ns"])
            out.append(
                {
                    "id": id,
                    "path": shown(path),
                    "label_name": names[label] if label >= 0 else None,
                    "split": splits[int(record["split"])],
                    "bytes": int(record["bytes"]),
                    "mtime": datetime.fromtimestamp(mtime / 1e9, timezone.utc).isoformat() if mtime else None,
                }
            )
        return out

    def to_json(self) -> str:
        """The records as one JSON array."""
        return json.dumps(self.records())

    def to_csv(self) -> str:
        """The records as CSV with a header row (empty cells for None)."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.records())
        return buffer.getvalue()
