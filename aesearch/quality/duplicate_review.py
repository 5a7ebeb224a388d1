"""Duplicate review: the pairs found once, groups at any threshold below, and which copy to keep.

`find_duplicates` answers one threshold in ~6 s at 70,000 images, nearly all of it the range
search. A review moves a threshold slider, so the pairs are found once, up to the slider's largest
threshold, and cached (in memory by the caller, and in the bundle's `.NAME.cache/` folder beside
the latent map's, keyed by the bundle's checksums, so the next `serve` opens at once); the groups
at any smaller threshold are then a filter of the cached pairs and one vectorised union-find,
milliseconds at 70,000 images.

Which copy to keep (KEEP_RULE): the most pixels (a larger image holds more than its copies), then
the most bytes (at the same size, the less compressed), then the earliest modification time (the
original, the copies came later), then the shortest path (the one not buried in "copy of"
folders), then the lowest id. Images without files (a dataset bundle) tie on all but the id.
"""

from __future__ import annotations

import csv
import io
import os
import stat
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from aesearch import defaults
from aesearch.atomic import atomic_path, computed_once
from aesearch.errors import InvalidArgumentError
from aesearch.quality.duplicates import DuplicateGroup, _groups, _View, connected_components, exact_classes, near_pairs
from aesearch.quality.latent_map import _bundle_key, cache_dir
from aesearch.store.records import PINNED, ROOT

KEEP_RULE = "most pixels, then most bytes, then earliest modified, then shortest path, then lowest id"
_CRITERIA = ("the largest image", "the largest file", "the earliest modified", "the shortest path", "the lowest id")
_CACHE_VERSION = 1


@dataclass
class DuplicatePairs:
    """Every duplicate pair of a bundle up to max_threshold, row-aligned with ids."""

    ids: np.ndarray  # (n,) int64: the live ids, sorted
    exact_class: np.ndarray  # (n,) int64: equal where the pixels are equal
    split: np.ndarray  # (n,) int64
    near_a: np.ndarray  # (p,) int64 rows, a < b, pixel-different pairs
    near_b: np.ndarray
    near_d: np.ndarray  # (p,) float32 distances, as `query` reports them
    max_threshold: float
    metric: str
    method: str
    generation: int
    seconds: float = 0.0
    from_cache: bool = False

    def groups(self, bundle, threshold: float) -> list[DuplicateGroup]:
        """The groups at threshold (<= max_threshold), largest first, as find_duplicates gives them."""
        if not np.isfinite(threshold) or not 0 <= threshold <= self.max_threshold:
            raise InvalidArgumentError(
                f"`threshold` must be a distance from 0 to {self.max_threshold:g} (the review's largest), "
                f"got {threshold}",
                parameter="threshold",
            )
        n = len(self.ids)
        near = self.near_d <= threshold
        order = np.argsort(self.exact_class, kind="stable")
        same = self.exact_class[order[1:]] == self.exact_class[order[:-1]]
        edges_a = np.concatenate([order[:-1][same], self.near_a[near]])
        edges_b = np.concatenate([order[1:][same], self.near_b[near]])
        weights = np.concatenate([np.zeros(int(same.sum()), np.float32), self.near_d[near]])
        roots = connected_components(n, edges_a, edges_b)
        view = _View(
            ids=self.ids,
            images=None,
            split=self.split,
            split_names=list(bundle.split_names),
            bundle=bundle,
            vectors=None,
            metric=self.metric,
            pictures_of=bundle.pictures,
        )
        return _groups(view, roots, edges_a, weights, self.exact_class)


def duplicate_pairs(
    engine, *, max_threshold: float = defaults.DUPLICATE_REVIEW_MAX_THRESHOLD, cache: bool = True
) -> DuplicatePairs:
    """The bundle's duplicate pairs up to max_threshold (from the cache file when it fits)."""
    start = time.perf_counter()
    path = cache_dir(engine.bundle.path) / f"duplicates-{_bundle_key(engine)}-{max_threshold:g}.npz"
    if not cache:
        return _found_pairs(engine, max_threshold, start)
    # server workers (or a server and `aesearch duplicates`) find them once
    with computed_once(path.parent / ".duplicates.lock"):
        found = _load(path, engine, max_threshold) if path.is_file() else None
        if found is not None:
            found.seconds = round(time.perf_counter() - start, 3)
            return found
        pairs = _found_pairs(engine, max_threshold, start)
        _save(pairs, path)
        return pairs


def _found_pairs(engine, max_threshold: float, start: float) -> DuplicatePairs:
    view = _View.of(engine)
    exact = exact_classes(view.images)
    if len(view.ids) > 1 and max_threshold > 0:
        a, b, squared, method, _ = near_pairs(view.vectors, view.radius(max_threshold))
        d = view.to_distance(squared)
        differ = exact[a] != exact[b]
        a, b, d = a[differ], b[differ], d[differ]
    else:
        a, b, d, method = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), "pixels only"
    return DuplicatePairs(
        ids=view.ids,
        exact_class=exact,
        split=view.split,
        near_a=a.astype(np.int64),
        near_b=b.astype(np.int64),
        near_d=d.astype(np.float32),
        max_threshold=float(max_threshold),
        metric=view.metric,
        method=method,
        generation=engine.bundle.generation,
        seconds=round(time.perf_counter() - start, 3),
    )


def _save(pairs: DuplicatePairs, path: Path) -> None:
    arrays = {name: getattr(pairs, name) for name in ("ids", "exact_class", "split", "near_a", "near_b", "near_d")}
    try:
        with atomic_path(path) as tmp:
            np.savez(tmp, version=_CACHE_VERSION, method=pairs.method, **arrays)
        for stale in path.parent.glob("duplicates-*.npz"):  # earlier states of the bundle
            if stale != path:
                stale.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only place: the review still works, only not cached


def _load(path: Path, engine, max_threshold: float) -> DuplicatePairs | None:
    """The cached pairs if the file is whole and right for this bundle (it is checked like any
    input: the manifest's checksums do not cover it), else None (it is computed again)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in ("ids", "exact_class", "split", "near_a", "near_b", "near_d")}
            version, method = int(data["version"]), str(data["method"])
    except (OSError, ValueError, KeyError):
        return None
    ids, n = arrays["ids"], len(arrays["ids"])
    p = len(arrays["near_a"])
    ok = (
        version == _CACHE_VERSION
        and np.array_equal(ids, engine.bundle.live_ids())
        and all(arrays[k].shape == (n,) and arrays[k].dtype == np.int64 for k in ("exact_class", "split"))
        and all(arrays[k].shape == (p,) and arrays[k].dtype == np.int64 for k in ("near_a", "near_b"))
        and arrays["near_d"].shape == (p,)
        and arrays["near_d"].dtype == np.float32
        and bool(np.isfinite(arrays["near_d"]).all())
        and (p == 0 or (arrays["near_a"].min() >= 0 and arrays["near_b"].max() < n))
    )
    if not ok:
        return None
    return DuplicatePairs(
        **arrays,
        max_threshold=float(max_threshold),
        metric=engine.index.spec.metric,
        method=method,
        generation=engine.bundle.generation,
        from_cache=True,
    )


# --- which copy to keep ---


@dataclass
class Member:
    """One image of a group, with what the keep rule looks at."""

    id: int
    path: str  # as listed: relative to its collection root ("" for a dataset image)
    file: str | None  # the file's absolute path (None: no file behind the image)
    bytes: int
    mtime_ns: int
    width: int | None  # of the original file (None: unreadable)
    height: int | None

    @property
    def pixels(self) -> int:
        return (self.width or 0) * (self.height or 0)


@dataclass
class Decision:
    """One group: the copy kept, the others to move, and why that one."""

    group: int  # 1-based, in the order of the groups (largest first)
    keep: int
    move: list[int]
    members: list[Member]
    reason: str
    chosen_by: str  # "rule" or "you"
    exact: bool
    max_distance: float


@dataclass
class Review:
    """The decisions for a bundle's duplicate groups at one threshold."""

    bundle: str  # the bundle's folder
    threshold: float
    has_files: bool  # False: a dataset bundle, reviewed and exported but not moved
    decisions: list[Decision] = field(default_factory=list)
    rule: str = KEEP_RULE

    def to_dict(self) -> dict:
        return asdict(self)

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["group", "action", "id", "path", "file", "width", "height", "bytes", "mtime_ns", "reason"])
        for d in self.decisions:
            for m in d.members:
                action = "keep" if m.id == d.keep else "move"
                writer.writerow(
                    [d.group, action, m.id, m.path, m.file or "", m.width, m.height, m.bytes, m.mtime_ns, d.reason]
                )
        return out.getvalue()


def members(bundle, ids) -> list[Member]:
    """What the keep rule needs about these images; dimensions from the file headers (no decoding)."""
    ids = np.asarray(ids, dtype=np.int64)
    records = bundle.records(ids)
    paths = bundle.paths_of(ids)
    roots = [Path(r) for r in (bundle.manifest.get("collection") or {}).get("roots") or []]
    bases = [r.parent if r.is_file() else r for r in roots]  # a root may be a list of paths
    shape = bundle.image_shape
    out = []
    for id_, record, path in zip(ids.tolist(), records, paths, strict=True):
        root = int(record[ROOT])
        file = str(bases[root] / path) if root != PINNED and 0 <= root < len(bases) else None
        width, height = _dimensions(file) if file else (int(shape[1]), int(shape[0]))
        out.append(Member(id_, path, file, int(record["bytes"]), int(record["mtime_ns"]), width, height))
    return out


def _dimensions(file: str) -> tuple[int | None, int | None]:
    try:
        if not stat.S_ISREG(os.stat(file).st_mode):  # a FIFO put in its place would block the open
            return None, None
        with Image.open(file) as image:  # reads the header only
            return int(image.width), int(image.height)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None, None


def _rank(m: Member) -> tuple:
    return (-m.pixels, -m.bytes, m.mtime_ns, len(m.path), m.id)


def suggest_keep(group: list[Member]) -> tuple[Member, str]:
    """The member KEEP_RULE keeps, and why in words (the first criterion that set it apart)."""
    ranked = sorted(group, key=_rank)
    best = ranked[0]
    if len(ranked) == 1:
        return best, "the only member"
    runner = _rank(ranked[1])
    at = next(i for i, (x, y) in enumerate(zip(_rank(best), runner, strict=True)) if x != y)
    detail = {0: f" ({best.width}x{best.height})", 1: f" ({best.bytes:,} bytes)"}.get(at, "")
    return best, _CRITERIA[at] + detail


def decide(bundle, groups: list[DuplicateGroup], *, threshold: float, keep=(), first: int = 1) -> Review:
    """A decision per group: keep what KEEP_RULE suggests, unless keep names a member (the user's
    choice; several in one group: the rule chooses among them). first: the number of groups[0]
    (a page of the groups keeps their numbers)."""
    chosen = {int(i) for i in keep}
    all_ids = [i for g in groups for i in g.ids]
    stray = sorted(chosen - set(all_ids))
    if stray:  # a typo would otherwise leave the rule's choice standing, silently
        shown = ", ".join(map(str, stray[:10])) + (f", ... ({len(stray)} ids)" if len(stray) > 10 else "")
        raise InvalidArgumentError(
            f"`keep` names {shown}, in no group of duplicates at this threshold: keep only ids a group lists",
            parameter="keep",
        )
    described = {m.id: m for m in members(bundle, all_ids)} if all_ids else {}
    decisions = []
    for number, group in enumerate(groups, start=first):
        group_members = [described[i] for i in group.ids]
        mine = [m for m in group_members if m.id in chosen]
        if mine:
            kept, _ = suggest_keep(mine)
            reason, by = "your choice", "you"
        else:
            kept, reason = suggest_keep(group_members)
            by = "rule"
        decisions.append(
            Decision(
                group=number,
                keep=kept.id,
                move=[m.id for m in group_members if m.id != kept.id],
                members=group_members,
                reason=reason,
                chosen_by=by,
                exact=group.exact,
                max_distance=group.max_distance,
            )
        )
    has_files = bool((bundle.manifest.get("collection") or {}).get("roots"))
    return Review(str(bundle.path), float(threshold), has_files, decisions)
