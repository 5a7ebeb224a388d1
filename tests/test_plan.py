"""plan_sync decides a sync from records alone: a table of small cases, no disk.

The oracle is the rule written out by hand for each case: which files are touched, changed, moved,
added and removed, and whether the plan is refused.
"""

from __future__ import annotations

import pytest

from aesearch.pipelines.plan import Found, IndexedFile, plan_sync
from aesearch.store.records import PINNED

A, B, C = b"a" * 16, b"b" * 16, b"c" * 16
INDEXED = {
    (0, "x.png"): IndexedFile(1, 100, 10, A),
    (0, "y.png"): IndexedFile(2, 100, 10, B),
    (0, "sub/z.png"): IndexedFile(3, 100, 10, C),
    (0, "w.png"): IndexedFile(4, 100, 10, B),  # y and w hold the same content
}
ALL = set(INDEXED)


def found(listed=ALL, read=None, **kwargs) -> Found:
    return Found(roots=["/photos"], listed=set(listed), read=read or {}, **kwargs)


def summary(plan) -> dict:
    return {
        "added": [k[1] for k in plan.added],
        "changed": [(k[1], i) for k, i in plan.changed],
        "touched": [(k[1], i) for k, i in plan.touched],
        "moved": [(a[1], b[1], i) for a, b, i in plan.moved],
        "removed": [(k[1], i) for k, i in plan.removed],
        "refused": bool(plan.refused),
    }


def expect(**lists) -> dict:
    return {"added": [], "changed": [], "touched": [], "moved": [], "removed": [], "refused": False, **lists}


CASES = {
    "unchanged: nothing read, nothing to do": (INDEXED, found(), expect()),
    "touched mtime: same content, same id": (INDEXED, found(read={(0, "x.png"): A}), expect(touched=[("x.png", 1)])),
    "changed content: same id, encoded again": (
        INDEXED,
        found(read={(0, "x.png"): C}),
        expect(changed=[("x.png", 1)]),
    ),
    "moved: the vanished file's id": (
        INDEXED,
        found(ALL - {(0, "x.png")} | {(0, "new/x.png")}, {(0, "new/x.png"): A}),
        expect(moved=[("x.png", "new/x.png", 1)]),
    ),
    "moved twice with the same content: paired in path order": (
        INDEXED,
        found(
            ALL - {(0, "y.png"), (0, "w.png")} | {(0, "m1.png"), (0, "m2.png")}, {(0, "m1.png"): B, (0, "m2.png"): B}
        ),
        expect(moved=[("w.png", "m1.png", 4), ("y.png", "m2.png", 2)]),
    ),
    "added: new content at a new path": (
        INDEXED,
        found(ALL | {(0, "n.png")}, {(0, "n.png"): b"n" * 16}),
        expect(added=["n.png"]),
    ),
    "removed: no longer listed": (INDEXED, found(ALL - {(0, "x.png")}), expect(removed=[("x.png", 1)])),
    "pinned kept: images added in Python have no file": (
        {**INDEXED, (PINNED, "api/p.png"): IndexedFile(9, 0, 0, A)},
        found(),
        expect(),
    ),
    "unlisted folder kept: what a scan cannot see is not deleted": (
        INDEXED,
        found(ALL - {(0, "sub/z.png")}, unlisted=[(0, "sub/")]),
        expect(),
    ),
    "explicit add: nothing vanishes": (INDEXED, found(set(), {(0, "n.png"): C}, only=True), expect(added=["n.png"])),
    "mass removal refused: most of the index gone": (
        INDEXED,
        found({(0, "x.png")}),
        expect(removed=[("sub/z.png", 3), ("w.png", 4), ("y.png", 2)], refused=True),
    ),
    "mass removal refused: a root emptied": (
        {**INDEXED, (1, "other.png"): IndexedFile(5, 1, 1, A)},
        Found(roots=["/photos", "/disk"], listed=ALL, read={}),
        expect(removed=[("other.png", 5)], refused=True),
    ),
}


@pytest.mark.parametrize(("indexed", "seen", "expected"), CASES.values(), ids=CASES.keys())
def test_plan(indexed, seen, expected):
    assert summary(plan_sync(indexed, seen)) == expected


def test_mass_removal_allowed_plans_the_same_removals_unrefused():
    refused = plan_sync(INDEXED, found({(0, "x.png")}))
    allowed = plan_sync(INDEXED, found({(0, "x.png")}), allow_mass_removal=True)
    assert refused.refused and "would remove 3 of 4 indexed images" in refused.refused
    assert allowed.refused is None and allowed.removed == refused.removed


def test_ids_and_copies_say_what_each_file_read_is_published_as():
    seen = found(
        ALL - {(0, "x.png")} | {(0, "m.png"), (0, "n.png")},
        {(0, "y.png"): B, (0, "sub/z.png"): A, (0, "m.png"): A, (0, "n.png"): C},
    )
    plan = plan_sync(INDEXED, seen)
    assert plan.ids() == {(0, "y.png"): 2, (0, "sub/z.png"): 3, (0, "m.png"): 1, (0, "n.png"): -1}
    assert plan.copies() == {(0, "y.png"): 2, (0, "m.png"): 1}, "touched and moved reuse the stored vector"
