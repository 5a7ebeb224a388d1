"""Duplicate review: groups from cached pairs equal find_duplicates; the keep rule; move and undo
leave the collection byte-identical (hashes of every file, mtimes); every refusal moves nothing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_bundle
from image_folders import write_image_folder
from test_duplicates import planted_images

from aesearch.errors import InvalidArgumentError
from aesearch.interfaces.cli import cli
from aesearch.pipelines import moves
from aesearch.pipelines.collection import build_from_folders
from aesearch.pipelines.moves import MoveRefusedError, move_duplicates, undo
from aesearch.quality.duplicate_review import Member, decide, duplicate_pairs, suggest_keep
from aesearch.quality.duplicates import find_duplicates
from aesearch.search.engine import SearchEngine
from aesearch.search.index import IndexSpec

COPIES = ["ring/r-002.png", "ring/sub/r-002-again.png", "ellipse/copy-of-r-002.png"]


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under root: its SHA-256 and mtime_ns (a rename keeps both)."""
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def folder_bundle(tmp_path: Path, model: Path) -> tuple[Path, Path]:
    """A folder of 20 images plus two copies of ring/r-002.png (made later: newer mtimes), built."""
    folder = write_image_folder(tmp_path / "pics", n=20)
    (folder.root / "ring/sub").mkdir()
    for copy in COPIES[1:]:
        shutil.copy(folder.root / COPIES[0], folder.root / copy)
        os.utime(folder.root / copy, ns=(2_000_000_000_000_000_000, 2_000_000_000_000_000_000))
    index = tmp_path / "idx"
    build_from_folders(
        index,
        images=[folder.root],
        labels="folders",
        model=model,
        spec=IndexSpec("flat", "cosine", {}, "none"),
        shifts=((0, 0), (1, 1)),
        workers=1,
        log=None,
    )
    return folder.root, index


def review_of(index: Path, threshold: float = 0.0, keep=()):
    engine = SearchEngine.load(index)
    groups = duplicate_pairs(engine, cache=False).groups(engine.bundle, threshold)
    return decide(engine.bundle, groups, threshold=threshold, keep=keep)


# --- groups from cached pairs ---


def test_groups_from_the_cached_pairs_equal_find_duplicates_at_every_threshold(tmp_path):
    images, _ = planted_images()
    bundle = make_bundle(tmp_path / "b", images=images, metric="cosine")
    engine = SearchEngine.load(bundle)
    pairs = duplicate_pairs(engine, max_threshold=0.05)
    assert not pairs.from_cache
    for threshold in (0.0, 0.0005, 0.002, 0.01, 0.03, 0.05):
        oracle = find_duplicates(engine, threshold=threshold).groups
        found = pairs.groups(engine.bundle, threshold)
        assert [g.to_dict() for g in found] == [g.to_dict() for g in oracle], threshold
    again = duplicate_pairs(engine, max_threshold=0.05)  # the cache file beside the bundle
    assert again.from_cache
    for name in ("ids", "exact_class", "near_a", "near_b", "near_d"):
        assert np.array_equal(getattr(again, name), getattr(pairs, name))
    with pytest.raises(Exception, match=r"from 0 to 0\.05"):
        pairs.groups(engine.bundle, 0.06)


def test_a_damaged_cache_file_is_computed_again(tmp_path):
    from aesearch.quality.latent_map import cache_dir

    images, _ = planted_images()
    bundle = make_bundle(tmp_path / "b", images=images, metric="cosine")
    engine = SearchEngine.load(bundle)
    first = duplicate_pairs(engine)
    (cached,) = cache_dir(bundle).glob("duplicates-*.npz")
    with np.load(cached) as data:
        arrays = dict(data)
    arrays["near_b"] = arrays["near_b"] + 10_000  # rows that are not there
    np.savez(cached, **arrays)
    again = duplicate_pairs(engine)
    assert not again.from_cache and np.array_equal(again.near_b, first.near_b)
    cached.write_bytes(b"not a zip")
    assert not duplicate_pairs(engine).from_cache


# --- the keep rule ---


def member(id_, *, w=28, h=28, size=100, mtime=5, path="a/x.png") -> Member:
    return Member(id_, path, "/f/" + path, size, mtime, w, h)


@pytest.mark.parametrize(
    ("group", "kept", "why"),
    [
        ([member(1), member(2, w=56, h=56)], 2, "the largest image (56x56)"),
        ([member(1, size=90), member(2, size=120)], 2, "the largest file (120 bytes)"),
        ([member(1, mtime=9), member(2, mtime=3)], 2, "the earliest modified"),
        ([member(1, path="copies/of/x.png"), member(2, path="x.png")], 2, "the shortest path"),
        ([member(7), member(3)], 3, "the lowest id"),
        ([member(1, w=56, h=56, size=10, mtime=99), member(2, size=999, mtime=0)], 1, "the largest image (56x56)"),
        ([member(1, w=None, h=None, size=999), member(2)], 2, "the largest image (28x28)"),
    ],
)
def test_the_keep_rule_and_its_reason(group, kept, why):
    chosen, reason = suggest_keep(group)
    assert chosen.id == kept and reason == why


def test_decisions_of_a_dataset_bundle_are_exported_not_moved(tmp_path):
    images, _ = planted_images()
    bundle = make_bundle(tmp_path / "b", images=images, metric="cosine")
    review = review_of(bundle, 0.0, keep=[10])
    by_ids = {tuple(d.members[i].id for i in range(len(d.members))): d for d in review.decisions}
    assert by_ids[(4, 10)].keep == 10 and by_ids[(4, 10)].reason == "your choice"
    assert by_ids[(7, 95, 96)].keep == 7 and by_ids[(7, 95, 96)].reason == "the lowest id"
    assert not review.has_files and all(m.width == 28 and m.file is None for d in review.decisions for m in d.members)
    rows = review.to_csv().splitlines()
    assert rows[0].startswith("group,action,id,path") and len(rows) == 1 + 5
    assert json.loads(json.dumps(review.to_dict()))["decisions"][0]["keep"] in (7, 4)
    with pytest.raises(MoveRefusedError, match=r"built from a dataset.*reviewed and exported"):
        move_duplicates(review, tmp_path / "out")
    with pytest.raises(InvalidArgumentError, match="`keep` names 11, 99999999, in no group of duplicates"):
        review_of(bundle, 0.0, keep=[10, 99999999, 11])  # a typo, and an image in no group
    result = CliRunner().invoke(cli, ["duplicates", "--index-dir", str(bundle), "--threshold", "0", "--keep", "9999"])
    assert result.exit_code == 1 and "--keep names 9999, in no group" in result.output


# --- move and undo ---


def test_move_then_undo_leaves_the_collection_byte_identical(tmp_path, model):
    root, index = folder_bundle(tmp_path, model)
    before, count = snapshot(root), len(SearchEngine.load(index))
    review = review_of(index)
    (decision,) = review.decisions
    assert decision.reason == "the earliest modified"
    kept = next(m for m in decision.members if m.id == decision.keep)
    assert kept.path == COPIES[0] and (kept.width, kept.height) == (28, 28)

    plan = move_duplicates(review, tmp_path / "dups", dry_run=True, workers=1)
    assert sorted(Path(m.destination).relative_to(tmp_path / "dups").as_posix() for m in plan.moves) == sorted(
        COPIES[1:]
    )
    assert snapshot(root) == before and not (tmp_path / "dups").exists(), "a dry run moves nothing"

    report = move_duplicates(review, tmp_path / "dups", workers=1)
    assert report.sync is not None and len(report.sync.removed) == 2
    assert len(SearchEngine.load(index)) == count - 2
    moved = {k: v for k, v in before.items() if k not in COPIES[1:]}
    assert snapshot(root) == moved
    journal = json.loads(Path(report.journal).read_text())
    assert journal["status"] == "moved" and len(journal["moves"]) == 2
    for entry in journal["moves"]:
        assert entry["state"] == "moved" and entry["bytes"] == (root / COPIES[0]).stat().st_size
        assert Path(entry["destination"]).is_file() and not Path(entry["source"]).exists()
    assert find_duplicates(SearchEngine.load(index), threshold=0).groups == []

    restored = undo(report.journal, workers=1)
    assert len(restored.moves) == 2 and len(restored.sync.added) == 2
    assert snapshot(root) == before, "every file back, same bytes, same mtime"
    assert len(SearchEngine.load(index)) == count
    assert json.loads(Path(report.journal).read_text())["status"] == "undone"
    again = undo(report.journal, workers=1)  # undone twice: nothing left to move back
    assert again.moves == [] and snapshot(root) == before
    from aesearch.interfaces.tables import moves_table

    assert moves_table(again, undo=True) == "Moved back no files: nothing is left to move back"


def test_journal_after_a_crash_midway_still_undoes_everything(tmp_path, model, monkeypatch):
    root, index = folder_bundle(tmp_path, model)
    before = snapshot(root)
    review = review_of(index)
    real, done = moves._rename, []

    def crash_after_one(source, destination):
        if done:
            raise KeyboardInterrupt  # killed between two renames
        real(source, destination)
        done.append(destination)

    monkeypatch.setattr(moves, "_rename", crash_after_one)
    monkeypatch.setattr(moves, "_JOURNAL_EVERY_S", 3600.0)  # the journal still says "planned" for the one moved
    with pytest.raises(KeyboardInterrupt):
        move_duplicates(review, tmp_path / "dups", workers=1)
    (journal,) = (tmp_path / "dups").glob("aesearch-moves-*.json")
    data = json.loads(journal.read_text())
    assert data["status"] == "moving" and {m["state"] for m in data["moves"]} == {"planned"}
    assert len(snapshot(root)) == len(before) - 1
    monkeypatch.setattr(moves, "_rename", real)
    undo(journal, workers=1)
    assert snapshot(root) == before


def test_refusals_move_nothing(tmp_path, model, monkeypatch):
    root, index = folder_bundle(tmp_path, model)
    before = snapshot(root)
    review = review_of(index)
    cases = [
        (root / "inside", "inside the collection's folder"),
        (root.parent, "inside the collection's folder .* \\(or holds it\\)"),
        (tmp_path / "link" / "new", "inside the collection's folder"),  # a link into the collection
        # a rebuild replaces the bundle's folder whole, the moved images with it (new-user trial)
        (index, "inside the index at .*: choose a folder outside it"),
        (index / "moved", "inside the index at .*: choose a folder outside it"),
    ]
    (tmp_path / "link").symlink_to(root / "ring")
    for target, message in cases:
        with pytest.raises(MoveRefusedError, match=message):
            move_duplicates(review, target, workers=1)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(MoveRefusedError, match="is a file"):
        move_duplicates(review, tmp_path / "a-file", workers=1)

    target = tmp_path / "out" / "dups"
    (target / "ring/sub").mkdir(parents=True)
    (target / "ring/sub/r-002-again.png").write_bytes(b"someone else's")
    with pytest.raises(MoveRefusedError, match="already exists: nothing is overwritten"):
        move_duplicates(review, target, workers=1)
    assert (target / "ring/sub/r-002-again.png").read_bytes() == b"someone else's"

    real_device = moves._device
    monkeypatch.setattr(moves, "_device", lambda p: real_device(p) + (1 if str(p).startswith(str(target)) else 0))
    with pytest.raises(MoveRefusedError, match=r"another file system.*not an atomic rename"):
        move_duplicates(review, target / "sub", workers=1)
    monkeypatch.setattr(moves, "_device", real_device)

    changed = root / COPIES[2]
    data = changed.read_bytes()
    changed.write_bytes(data + b"\0")
    with pytest.raises(MoveRefusedError, match="changed since it was indexed"):
        move_duplicates(review, tmp_path / "elsewhere", workers=1)
    changed.write_bytes(data)
    os.utime(changed, ns=(before[COPIES[2]][1], before[COPIES[2]][1]))
    assert snapshot(root) == before and not (tmp_path / "elsewhere").exists()


def test_a_fifo_in_a_files_place_is_refused_not_read(tmp_path, model):
    root, index = folder_bundle(tmp_path, model)
    review = review_of(index)
    fifo = root / COPIES[1]
    fifo.unlink()
    os.mkfifo(fifo)  # opening it to read would block forever
    (again,) = review_of(index).decisions
    assert next(m for m in again.members if m.path == COPIES[1]).width is None  # not opened: no hang
    with pytest.raises(MoveRefusedError, match="not a regular file"):
        move_duplicates(review, tmp_path / "dups", workers=1)


def test_undo_refuses_a_taken_place_or_a_changed_file(tmp_path, model):
    root, index = folder_bundle(tmp_path, model)
    before = snapshot(root)
    report = move_duplicates(review_of(index), tmp_path / "dups", workers=1)
    first = report.moves[0]
    Path(first.source).write_bytes(b"new file in the old place")
    with pytest.raises(MoveRefusedError, match=r"a file exists at .*nothing was moved back"):
        undo(report.journal, workers=1)
    Path(first.source).unlink()
    moved = Path(report.moves[1].destination)
    data = moved.read_bytes()
    moved.write_bytes(data[:-1])
    with pytest.raises(MoveRefusedError, match="changed after it was moved"):
        undo(report.journal, workers=1)
    moved.write_bytes(data)
    os.utime(moved, ns=(report.moves[1].mtime_ns, report.moves[1].mtime_ns))
    moved.unlink()
    with pytest.raises(MoveRefusedError, match="is missing"):
        undo(report.journal, workers=1)
    assert all(not Path(m.source).exists() for m in report.moves), "no refusal moved anything back"
    assert len(snapshot(root)) == len(before) - 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no journal at"),
        ("{", "cannot be read as JSON"),
        ('{"aesearch_journal": 9}', "not a journal"),
        ('{"aesearch_journal": 1, "bundle": "/b", "target": "/t", "threshold": 0, "moves": [{"x": 1}]}', "missing"),
    ],
)
def test_undo_of_a_bad_journal_is_one_line(tmp_path, content, message):
    path = tmp_path / "j.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(Exception, match=message):
        undo(path)


# --- the CLI ---


def test_cli_moves_only_with_move_to_and_undoes(tmp_path, model):
    root, index = folder_bundle(tmp_path, model)
    before = snapshot(root)
    runner = CliRunner()
    base = ["duplicates", "--index-dir", str(index), "--threshold", "0", "--out", str(tmp_path / "d.png")]
    shown = runner.invoke(cli, [*base, "--decisions"])
    assert shown.exit_code == 0, shown.output
    assert "keep rule: most pixels" in shown.output and "the earliest modified" in shown.output
    csv_out = runner.invoke(cli, [*base, "--decisions", "--csv"]).output.splitlines()
    assert csv_out[0].startswith("group,action,id") and len(csv_out) == 4
    dry = runner.invoke(cli, [*base, "--move-to", str(tmp_path / "dups"), "--dry-run"])
    assert dry.exit_code == 0 and "Dry run (nothing moved): would move 2 files of 1 groups" in dry.output
    assert snapshot(root) == before
    done = runner.invoke(cli, [*base, "--move-to", str(tmp_path / "dups")])
    assert done.exit_code == 0, done.output
    assert "Moved 2 files of 1 groups" in done.output and "Synced: " in done.output
    journal = done.output.split("Journal: ")[1].split()[0]
    back = runner.invoke(cli, ["duplicates", "--undo", journal, "--json"])
    assert back.exit_code == 0, back.output
    assert len(json.loads(back.output)["moves"]) == 2 and snapshot(root) == before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--undo", "j.json", "--move-to", "d"], "--undo JOURNAL takes only --json and --dry-run"),
        (["--dry-run"], "--dry-run goes with --move-to DIR or --undo JOURNAL"),
        (["--move-to", "d", "--csv"], "not --csv"),
        (["--move-to", "OUT"], "built from a dataset, not from files"),
        (["--undo", "missing.json"], "no journal at"),
    ],
)
def test_cli_duplicate_move_errors(tiny_bundle, tmp_path, extra, message):
    extra = [str(tmp_path / "out") if e == "OUT" else e for e in extra]
    args = ["duplicates", "--index-dir", str(tiny_bundle), "--out", str(tmp_path / "d.png"), *extra]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0 and message in result.output, result.output
    assert "Traceback" not in result.output
