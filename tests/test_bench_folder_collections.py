"""scripts/bench_folder_collections.py: picking each class's files, naming icon classes, writing once."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_folder_collections.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_folder_collections", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def files(root: Path, label: str, contents: list[bytes]) -> list[Path]:
    (root / label).mkdir(parents=True, exist_ok=True)
    paths = []
    for n, content in enumerate(contents):
        path = root / label / f"{n:03d}.png"
        path.write_bytes(content)
        paths.append(path)
    return paths


def test_pick_drops_copies_small_classes_and_caps_evenly(bench, tmp_path):
    groups = {
        "a": files(tmp_path, "a", [b"a%d" % n for n in range(10)] + [b"a0"]),  # one copy within the class
        "b": files(tmp_path, "b", [b"a1", b"b0", b"b1", b"b2"]),  # a copy of a's file: stays in a only
        "c": files(tmp_path, "c", [b"c0", b"c1"]),  # too few
    }
    kept = bench.pick(groups, per_class=4, minimum=3)
    assert sorted(kept) == ["a", "b"]
    assert [p.read_bytes() for p in kept["a"]] == [b"a0", b"a3", b"a6", b"a9"]  # first and last kept, evenly between
    assert [p.read_bytes() for p in kept["b"]] == [b"b0", b"b1", b"b2"]


def test_pick_is_deterministic_whatever_the_order_given(bench, tmp_path):
    paths = files(tmp_path, "a", [b"%d" % n for n in range(20)])
    assert bench.pick({"a": paths}, per_class=5, minimum=5) == bench.pick({"a": paths[::-1]}, per_class=5, minimum=5)


@pytest.mark.parametrize(
    ("context", "stem", "label"),
    [
        ("places", "folder-music", "folder"),
        ("legacy", "folder", "folder"),
        ("emotes", "face-smile", "face"),
        ("mimetypes", "text-x-python", "document"),
        ("apps", "text-editor", None),  # a text editor's icon is not a page
        ("status", "weather-storm", "weather"),
        ("status", "stock_weather-snow", "weather"),
        ("actions", "go-next", "arrow"),
        ("actions", "go-home", None),  # a house, not an arrow
        ("devices", "drive-harddisk", None),
    ],
)
def test_icon_classes(bench, context, stem, label):
    assert bench.icon_class(context, stem) == label


def test_a_collection_is_written_once_and_again_when_its_cap_changes(bench, tmp_path):
    calls = []

    def write(folder: Path, per_class: int) -> dict[str, int]:
        calls.append(per_class)
        files(folder, "x", [b"x"] * per_class)
        return {"x": per_class}

    collection = bench.Collection("fake", "a test", write)
    assert bench.materialise(collection, tmp_path, 2) == (tmp_path / "fake", {"x": 2})
    assert bench.materialise(collection, tmp_path, 2) == (tmp_path / "fake", {"x": 2})
    assert calls == [2]
    assert bench.materialise(collection, tmp_path, 3)[1] == {"x": 3}
    assert calls == [2, 3]
    assert len(list((tmp_path / "fake" / "x").iterdir())) == 3  # the old folder was replaced, not added to


def test_a_half_written_collection_is_written_again(bench, tmp_path):
    files(tmp_path / "fake", "stale", [b"s"])  # a folder without its record: an interrupted run
    collection = bench.Collection("fake", "a test", lambda folder, n: {"x": len(files(folder, "x", [b"x"]))})
    bench.materialise(collection, tmp_path, 1)
    assert sorted(p.name for p in (tmp_path / "fake").iterdir()) == ["x"]


def test_models_by_name(bench, tmp_path):
    old, new = tmp_path / "old.safetensors", tmp_path / "new.safetensors"
    old.write_bytes(b"o")
    new.write_bytes(b"n")
    assert bench.parse_models([f"before={old}", str(new)]) == {"before": old, "new": new}
    with pytest.raises(SystemExit, match="given twice"):
        bench.parse_models([f"a={old}", f"a={new}"])
    with pytest.raises(SystemExit, match="no checkpoint"):
        bench.parse_models([f"a={tmp_path / 'missing.safetensors'}"])
