"""Folder collections: build, sync, add, remove, against a fresh build of the final folder (the oracle)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from image_folders import png_bytes, write_image_folder

from aesearch.errors import AesearchError, BundleError
from aesearch.interfaces.cli import cli
from aesearch.pipelines.collection import build_from_folders
from aesearch.pipelines.writer import Collection
from aesearch.search.engine import SearchEngine
from aesearch.search.index import IndexSpec
from aesearch.store.bundle import load_bundle
from aesearch.store.lock import writer_lock
from tests.conftest import folder_digest, synthetic_images
from tests.test_store import assert_same_neighbours

WHITEN = {"whiten_dims": 32, "whiten_shrinkage": 0.03}


def build(folder: Path, index: Path, model: Path, transform: str = "none") -> list:
    spec = IndexSpec("flat", "cosine", WHITEN if transform == "whiten" else {}, transform)
    _, skipped = build_from_folders(
        index, images=[folder], labels="folders", model=model, spec=spec, shifts=((0, 0), (1, 1)), workers=1, log=None
    )
    return skipped


def paths_by_id(index: Path) -> dict[int, str]:
    bundle = load_bundle(index)
    return {int(i): bundle.path_of(int(i)) for i in bundle.live_ids()}


def change_folder(root: Path) -> dict:
    """Two new files, one removed, one moved to another class folder, one rewritten with new content."""
    new = synthetic_images(3, seed=21)
    (root / "ring/new-a.png").write_bytes(png_bytes(new[0]))
    (root / "fresh/new-b.png").parent.mkdir()
    (root / "fresh/new-b.png").write_bytes(png_bytes(new[1]))
    (root / "ellipse/e-000.png").unlink()
    (root / "rectangle/r-001.png").rename(root / "ring/was-r-001.png")
    (root / "ring/r-002.png").write_bytes(png_bytes(new[2]))
    return {
        "added": ["fresh/new-b.png", "ring/new-a.png"],
        "removed": ["ellipse/e-000.png"],
        "moved": [("rectangle/r-001.png", "ring/was-r-001.png")],
        "changed": ["ring/r-002.png"],
    }


def compare_with_fresh(tmp_path: Path, index: Path, folder: Path, model: Path, transform: str) -> None:
    fresh = tmp_path / "fresh-index"
    build(folder, fresh, model, transform)
    by_path = {p: i for i, p in paths_by_id(index).items()}
    fresh_paths = paths_by_id(fresh)
    assert sorted(by_path) == sorted(fresh_paths.values()), "the same files are indexed"
    mapping = np.full(max(fresh_paths) + 1, -1)
    for i, p in fresh_paths.items():
        mapping[i] = by_path[p]
    queries = load_bundle(fresh).images(np.array(sorted(fresh_paths)))
    assert_same_neighbours(index, fresh, mapping, queries)


def test_build_keeps_paths_labels_sizes_hashes_and_lists_unreadable_files(tmp_path, model):
    folder = write_image_folder(tmp_path / "pics")
    skipped = build(folder.root, tmp_path / "idx", model)
    assert sorted(s.path for s in skipped) == folder.broken
    bundle = load_bundle(tmp_path / "idx")
    assert bundle.split_names == ["collection"] and bundle.class_names == ["ellipse", "rectangle", "ring"]
    records = bundle.records(bundle.live_ids())
    for record in records:
        path = bundle.path_of(int(record["id"]))
        data = (folder.root / path).read_bytes()
        assert record["bytes"] == len(data) and record["content_hash"] == hashlib.blake2b(data, digest_size=16).digest()
        label = folder.labels[path]
        assert record["label"] == (bundle.class_names.index(label) if label else -1)
    assert sorted(paths_by_id(tmp_path / "idx").values()) == sorted(folder.images)

    result = CliRunner().invoke(
        cli,
        [
            "query",
            str(folder.root / "ring/r-002.png"),
            "--index-dir",
            str(tmp_path / "idx"),
            "--json",
            "--no-picture",
            "-k",
            "2",
        ],
    )
    hit = json.loads(result.output)["hits"][0]
    assert hit["path"] == "ring/r-002.png" and hit["label_name"] == "ring" and hit["distance"] < 1e-4


@pytest.mark.parametrize("transform", ["none", "whiten"])
def test_sync_after_adds_removes_moves_and_changes_equals_a_fresh_build(tmp_path, model, transform):
    folder = write_image_folder(tmp_path / "pics")
    index = tmp_path / "idx"
    build(folder.root, index, model, transform)
    before = {p: i for i, p in paths_by_id(index).items()}
    expected = change_folder(folder.root)
    report = Collection.open(index, workers=1).sync(compact=transform == "whiten")
    assert (sorted(report.added), report.removed, report.moved, report.changed) == (
        expected["added"],
        expected["removed"],
        expected["moved"],
        expected["changed"],
    )
    after = {p: i for i, p in paths_by_id(index).items()}
    assert after["ring/was-r-001.png"] == before["rectangle/r-001.png"], "a moved file keeps its id"
    assert after["ring/r-002.png"] == before["ring/r-002.png"], "a changed file keeps its id"
    assert min(after["ring/new-a.png"], after["fresh/new-b.png"]) > max(before.values()), "new ids are new"
    bundle = load_bundle(index)
    assert bundle.class_names[-1] == "fresh", "a new class folder is appended"
    assert bundle.records([after["ring/was-r-001.png"]])["label"][0] == bundle.class_names.index("ring")
    compare_with_fresh(tmp_path, index, folder.root, model, transform)
    assert Collection.open(index, workers=1).sync().changes == 0


def test_unchanged_sync_writes_nothing_and_a_second_writer_is_refused(tmp_path, model):
    folder = write_image_folder(tmp_path / "pics")
    index = tmp_path / "idx"
    build(folder.root, index, model)
    digest = folder_digest(index)
    report = Collection.open(index, workers=1).sync()
    assert report.changes == 0 and report.unchanged == len(folder.images) and len(report.skipped) == 3
    assert folder_digest(index) == digest
    with writer_lock(index), pytest.raises(BundleError, match="is being updated by process"):
        Collection.open(index).sync()
    result = CliRunner().invoke(cli, ["sync", "--index-dir", str(index)])
    assert result.exit_code == 0 and "0 added, 0 changed, 0 moved, 0 removed, 3 skipped" in result.output


KILLED_SYNC = """
import sys, time
from pathlib import Path
import aesearch.store.bundle as store
from aesearch import Collection

def stalled(*args, **kwargs):
    print("segment written", flush=True)
    time.sleep(60)  # killed here: the delta segment and tombstones are on disk, the manifest not replaced
store.write_manifest = stalled
Collection.open(Path(sys.argv[1]), workers=1).sync()
"""


def test_kill_9_during_sync_then_sync_again_loses_nothing_and_indexes_nothing_twice(tmp_path, model):
    folder = write_image_folder(tmp_path / "pics")
    index = tmp_path / "idx"
    build(folder.root, index, model)
    expected = change_folder(folder.root)
    manifest = (index / "manifest.json").read_bytes()
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_SYNC, str(index)],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert proc.stdout.readline().strip() == "segment written"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert (index / "manifest.json").read_bytes() == manifest
    assert len(SearchEngine.load(index)) == len(folder.images)
    report = Collection.open(index, workers=1).sync()
    assert sorted(report.added) == expected["added"] and report.moved == expected["moved"]
    paths = list(paths_by_id(index).values())
    assert len(paths) == len(set(paths)) == len(folder.images) + 1
    assert Collection.open(index, workers=1).sync().changes == 0


def test_a_reader_during_syncs_sees_a_whole_state(tmp_path, model):
    folder = write_image_folder(tmp_path / "pics")
    index = tmp_path / "idx"
    build(folder.root, index, model)
    query = load_bundle(index).images([0])
    counts, errors, done = set(), [], threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                engine = SearchEngine.load(index)
                result = engine.query(query[0], k=len(engine))
                assert len(result.hits) == len(engine) == len({h.id for h in result.hits})
                counts.add(len(engine))
            except AesearchError as exc:  # never a half state; a load racing a publish retries
                errors.append(str(exc))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        extra = synthetic_images(6, seed=33)
        for n in range(3):
            (folder.root / f"ring/extra-{n}.png").write_bytes(png_bytes(extra[n]))
            Collection.open(index, workers=1).sync()
    finally:
        done.set()
        reader.join()
    assert not errors and counts <= {len(folder.images) + n for n in range(4)}


def test_labelled_folder_eval_and_planted_duplicates(tmp_path, model):
    from aesearch.quality.duplicates import find_duplicates
    from aesearch.quality.evaluate import evaluate

    folder = write_image_folder(tmp_path / "pics", n=45)
    shutil.copy(folder.root / "ring/r-002.png", folder.root / "ellipse/copy-of-r-002.png")
    shutil.copy(folder.root / "ring/r-002.png", folder.root / "ring/r-002-again.png")
    build(folder.root, tmp_path / "idx", model)
    engine = SearchEngine.load(tmp_path / "idx")
    groups = find_duplicates(engine, threshold=0).groups
    assert [sorted(g.paths) for g in groups] == [
        ["ellipse/copy-of-r-002.png", "ring/r-002-again.png", "ring/r-002.png"]
    ]

    report = evaluate(engine)
    labelled = int((engine.bundle.records(engine.bundle.live_ids())["label"] >= 0).sum())
    assert report.protocol == "collection" and report.n_queries + report.n_database == labelled
    assert report.n_queries == -(-labelled // 5)
    result = CliRunner().invoke(
        cli, ["eval", "--index-dir", str(tmp_path / "idx"), "--report", str(tmp_path / "e.png")]
    )
    assert result.exit_code == 0 and "held-out (1 in 5) queries" in result.output
    for extra in ([], ["--feedback", "1"]):  # ignored before, with a table that seemed to answer it (new-user trial)
        result = CliRunner().invoke(
            cli, ["eval", "--index-dir", str(tmp_path / "idx"), "--protocol", "validation", *extra]
        )
        assert result.exit_code == 1 and "--protocol validation holds out part of a train split" in result.output


def test_the_server_serves_an_update_without_a_restart(tmp_path, model):
    from fastapi.testclient import TestClient

    from aesearch.interfaces.server import create_app

    folder = write_image_folder(tmp_path / "pics")
    index = tmp_path / "idx"
    build(folder.root, index, model)
    client = TestClient(create_app(index), base_url="http://localhost")
    health = client.get("/api/health").json()
    assert health["count"] == len(folder.images)
    new = png_bytes(synthetic_images(1, seed=44)[0])
    (folder.root / "ring/served.png").write_bytes(new)
    Collection.open(index, workers=1).sync()
    after = client.get("/api/health").json()
    assert after["count"] == len(folder.images) + 1 and after["generation"] > health["generation"]
    hits = client.post("/api/search?k=1", files={"image": ("q.png", new, "image/png")}).json()["hits"]
    assert hits[0]["path"] == "ring/served.png"


def test_engine_add_and_remove_and_explicit_cli_changes(tmp_path, model):
    folder = write_image_folder(tmp_path / "pics")
    index = tmp_path / "idx"
    build(folder.root, index, model)
    n = len(SearchEngine.load(index))
    collection = Collection.open(index)
    ids = collection.add(synthetic_images(2, seed=50), paths=["api/a.png", "api/b.png"], labels=[2, -1])
    engine = SearchEngine.load(index)
    assert len(engine) == n + 2 and engine.hit(int(ids[0])).path == "api/a.png"
    assert engine.hit(int(ids[0])).label_name == "ring" and engine.hit(int(ids[1])).label is -1
    assert collection.remove(["api/b.png"]) == [int(ids[1])]
    assert len(SearchEngine.load(index)) == n + 1
    named = collection.add(synthetic_images(2, seed=52), paths=["api/c.png", "api/d.png"], labels=["ellipse", -1])
    assert SearchEngine.load(index).hit(int(named[0])).label_name == "ellipse"  # a class by its name
    with pytest.raises(AesearchError, match=r"no class 'circle' in .*: choose one of ellipse, rectangle, ring"):
        collection.add(synthetic_images(1, seed=53), labels=["circle"])
    collection.remove(["api/c.png", "api/d.png"])

    runner = CliRunner()
    (folder.root / "ring/added.png").write_bytes(png_bytes(synthetic_images(1, seed=51)[0]))
    result = runner.invoke(cli, ["add", str(folder.root / "ring/added.png"), "--index-dir", str(index)])
    assert result.exit_code == 0 and "1 added" in result.output
    result = runner.invoke(cli, ["remove", "ring/added.png", "ellipse/e-000.png", "--index-dir", str(index)])
    assert result.exit_code == 0 and "Removed 2 image(s)" in result.output
    assert len(SearchEngine.load(index)) == n  # +2 -1 by the API, +1 -2 by the CLI
    for args, message in [
        (["remove", "no/such.png"], "no indexed image has the path no/such.png"),
        (["remove", "999999"], "no image with id 999999"),
        (["remove", str(ids[1])], f"the image with id {ids[1]} was removed from"),
        (["add", str(tmp_path)], "is not inside the collection's folders"),
    ]:
        result = runner.invoke(cli, [*args, "--index-dir", str(index)])
        assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


def test_sync_refuses_a_dataset_bundle_in_one_line(tiny_bundle):
    result = CliRunner().invoke(cli, ["sync", "--index-dir", str(tiny_bundle)])
    assert result.exit_code == 1 and "was not built from folders of images" in result.output


def test_many_small_syncs_are_merged_and_still_equal_a_fresh_build(tmp_path, model):
    from aesearch.pipelines.update import MAX_DELTAS

    folder = write_image_folder(tmp_path / "pics")
    index = tmp_path / "idx"
    build(folder.root, index, model)
    extra = synthetic_images(MAX_DELTAS + 2, seed=60)
    for n, image in enumerate(extra):
        (folder.root / f"ring/more-{n}.png").write_bytes(png_bytes(image))
        if n == 2:
            (folder.root / "ring/more-0.png").unlink()  # a delta's image removed: its tombstone goes with the merge
        Collection.open(index, workers=1).sync()
    assert len(load_bundle(index).segments) <= 1 + MAX_DELTAS
    compare_with_fresh(tmp_path, index, folder.root, model, "none")


def test_without_a_model_one_is_trained_on_the_collection_with_a_warning(tmp_path):
    from aesearch.training.train import TrainConfig

    folder = write_image_folder(tmp_path / "pics", n=30)
    lines: list[str] = []
    spec = IndexSpec("flat", "cosine", {}, "none")
    config = TrainConfig.for_recipe("default", epochs=1, batch_size=16)
    manifest, _ = build_from_folders(
        tmp_path / "idx",
        images=[folder.root],
        spec=spec,
        shifts=((0, 0),),
        train_config=config,
        workers=1,
        log=lines.append,
    )
    assert manifest["count"] == len(folder.images) and manifest["model"]["recipe"] == "reconstruction"
    assert any(line.startswith("Warning: 32 images are too few") and "--model" in line for line in lines)


def test_a_missing_root_or_an_unlistable_folder_never_reads_as_deleted_files(tmp_path, model, monkeypatch):
    folder = write_image_folder(tmp_path / "pics")
    index = tmp_path / "idx"
    build(folder.root, index, model)
    digest = folder_digest(index)
    real_scandir = os.scandir

    def refusing(path):
        if str(path).endswith("/ring"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    report = Collection.open(index, workers=1).sync()
    assert report.removed == [] and any("cannot list this folder" in s.reason for s in report.skipped)
    assert folder_digest(index) == digest
    monkeypatch.setattr(os, "scandir", real_scandir)
    folder.root.rename(tmp_path / "unplugged")
    result = CliRunner().invoke(cli, ["sync", "--index-dir", str(index)])
    assert result.exit_code == 1 and "is missing: reconnect or restore it" in result.output
    assert folder_digest(index) == digest


def test_streamed_folder_build_equals_the_whole_folder_read_into_memory(tmp_path, model):
    """Files read a few at a time (chunks of 5, unreadable ones between them) give the bundle that the
    same files read at once and encoded whole give (the in-memory build: the oracle)."""
    from aesearch.model.checkpoint import load_checkpoint
    from aesearch.pipelines.build import assemble_bundle
    from aesearch.pipelines.collection import read_collection
    from aesearch.sources.folders import FolderSource, scan

    folder = write_image_folder(tmp_path / "pics")
    _write_bytes(folder.root / "zz-only-broken/bad.png", b"not an image")  # a class folder of unreadable files only
    spec = IndexSpec("flat", "cosine", WHITEN, "whiten")
    _, skipped = build_from_folders(
        tmp_path / "stream",
        images=[folder.root],
        labels="folders",
        model=model,
        spec=spec,
        shifts=((0, 0),),
        workers=1,
        chunk_size=5,
        log=None,
    )
    source = FolderSource(scan([folder.root]), "folders", workers=1)
    assert all(len(chunk) <= 5 for chunk in source.chunks(5)), "a chunk never holds more than chunk_size images"
    pixels, records, paths, unread = read_collection(source)
    assemble_bundle(
        tmp_path / "memory",
        checkpoint=load_checkpoint(model),
        images=pixels,
        records=records,
        paths=paths,
        info=source.info(),
        spec=spec,
        shifts=((0, 0),),
        prune_classes=True,
    )
    assert (
        sorted(s.path for s in skipped) == sorted(s.path for s in unread) == [*folder.broken, "zz-only-broken/bad.png"]
    )
    a, b = load_bundle(tmp_path / "stream"), load_bundle(tmp_path / "memory")
    assert a.class_names == b.class_names == ["ellipse", "rectangle", "ring"], "no class of unreadable files only"
    (sa,), (sb,) = a.segments, b.segments
    np.testing.assert_array_equal(sa.images, sb.images)
    np.testing.assert_array_equal(sa.records, sb.records)
    assert sa.paths() == sb.paths() == sorted(folder.images)
    np.testing.assert_allclose(sa.embeddings, sb.embeddings, rtol=1e-5, atol=1e-7)  # chunk shapes round differently
    queries = np.asarray(sa.embeddings)
    assert (SearchEngine(a).index.search(queries, 5)[1] == SearchEngine(b).index.search(queries, 5)[1]).mean() > 0.99


KILLED_FOLDER_BUILD = """
import os, signal, sys
from pathlib import Path
from aesearch.pipelines import stream
from aesearch.pipelines.collection import build_from_folders
from aesearch.search.index import IndexSpec
from aesearch.sources import folders

read = []
original_read = folders._read_batch
def counted(base, items, config):
    read.extend(path for _, path in items)
    return original_read(base, items, config)
folders._read_batch = counted
original_save = stream._State.save
def save(self, path):
    original_save(self, path)
    print("chunk", self.rows + self.skipped, flush=True)
    if self.rows + self.skipped >= int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9 right after a chunk is recorded
stream._State.save = save
_, skipped = build_from_folders(sys.argv[2], images=[sys.argv[1]], labels="folders", model=sys.argv[4],
                                spec=IndexSpec("flat", "cosine", {}, "none"), shifts=((0, 0),), workers=1,
                                chunk_size=8, log=None)
print("read", len(read), "skipped", len(skipped), flush=True)
"""


def test_kill_9_during_a_folder_build_then_the_same_command_reads_only_the_files_left(tmp_path, model):
    folder = write_image_folder(tmp_path / "pics")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    run = [sys.executable, "-c", KILLED_FOLDER_BUILD, str(folder.root), str(tmp_path / "idx")]
    killed = subprocess.run([*run, "16", str(model)], capture_output=True, text=True, env=env, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    done = int(killed.stdout.split()[-1])
    assert not (tmp_path / "idx").exists(), "nothing published by the killed build"
    resumed = subprocess.run([*run, "999", str(model)], capture_output=True, text=True, env=env, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    files = len(folder.images) + len(folder.broken)
    # Files read before the kill are not read again; the unreadable ones among them are still reported.
    assert resumed.stdout.split()[-4:] == ["read", str(files - done), "skipped", str(len(folder.broken))]
    fresh = tmp_path / "fresh"
    spec = IndexSpec("flat", "cosine", {}, "none")
    build_from_folders(
        fresh, images=[folder.root], labels="folders", model=model, spec=spec, shifts=((0, 0),), workers=1, log=None
    )
    a, b = load_bundle(tmp_path / "idx"), load_bundle(fresh)
    (sa,), (sb,) = a.segments, b.segments
    np.testing.assert_array_equal(sa.records, sb.records)
    assert sa.paths() == sb.paths() and a.class_names == b.class_names
    np.testing.assert_allclose(sa.embeddings, sb.embeddings, rtol=1e-5, atol=1e-7)


def test_folder_builds_take_the_streaming_options(tmp_path, model):
    folder = write_image_folder(tmp_path / "pics")
    result = CliRunner().invoke(
        cli,
        [
            "build-index",
            "--images",
            str(folder.root),
            "--model",
            str(model),
            "--index-dir",
            str(tmp_path / "idx"),
            "--max-index-memory",
            "1K",
        ],
    )
    assert result.exit_code != 0 and "--max-index-memory 1.0 KiB is too small" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "idx").exists()


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_each_update_loads_the_bundle_once(tmp_path, model, monkeypatch):
    """One load per sync, add or remove (the state it extends, under the lock); a compaction it makes
    due loads the bundle it rewrites once more, and the rewritten one to measure its recall."""
    import aesearch.store.bundle as store

    folder = write_image_folder(tmp_path / "pics")
    index = tmp_path / "idx"
    build(folder.root, index, model)
    loads = []
    real_load = store._load
    monkeypatch.setattr(store, "_load", lambda *args: loads.append(1) or real_load(*args))
    monkeypatch.setattr("aesearch.pipelines.drift.RELEARN_EVERY_SYNC_MAX", 0)  # no compaction: deltas only
    change_folder(folder.root)
    collection = Collection.open(index, workers=1)
    assert collection.sync().changes == 5 and len(loads) == 1
    (folder.root / "ring/one-more.png").write_bytes(png_bytes(synthetic_images(1, seed=70)[0]))
    assert collection.add_files([folder.root / "ring/one-more.png"]).added == ["ring/one-more.png"]
    ids = collection.add(synthetic_images(2, seed=71))
    collection.remove([int(ids[0]), "ring/one-more.png"])
    assert len(loads) == 4, "one load for each of sync, add_files, add and remove"
    monkeypatch.setattr("aesearch.pipelines.drift.RELEARN_EVERY_SYNC_MAX", 10_000)
    loads.clear()
    assert collection.remove([int(ids[1])]) and len(loads) == 3, "the update's load, the compaction's, its recall's"


@pytest.mark.parametrize(
    ("per_dim", "option", "expected"),
    [(10**6, [], "none"), (0, [], "whiten"), (10**6, ["--transform", "whiten"], "whiten")],
)
def test_a_small_collection_is_not_whitened_unless_asked(tmp_path, model, monkeypatch, per_dim, option, expected):
    monkeypatch.setattr("aesearch.defaults.WHITEN_MIN_IMAGES_PER_DIM", per_dim)
    folder = write_image_folder(tmp_path / "pics")
    index = tmp_path / "idx"
    args = ["build-index", "--images", str(folder.root), "--model", str(model), "--index-dir", str(index), *option]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert SearchEngine.load(index).index.spec.transform == expected
    assert ("too few to learn a whitening" in result.output) == (per_dim and not option)


def test_a_damaged_folder_bundle_says_to_rebuild_from_its_folders(tmp_path, model):
    """The advice repeats --images and --labels: without them build-index would put Fashion-MNIST there."""
    folder = write_image_folder(tmp_path / "my pics")
    build(folder.root, tmp_path / "idx", model)
    embeddings = next((tmp_path / "idx/segments").glob("*/embeddings.npy"))
    data = bytearray(embeddings.read_bytes())
    data[-1] ^= 0xFF
    embeddings.write_bytes(bytes(data))
    result = CliRunner().invoke(cli, ["info", "--index-dir", str(tmp_path / "idx")])
    assert result.exit_code != 0 and "Traceback" not in result.output
    root = str(folder.root.resolve())
    expected = f"aesearch build-index --index-dir {tmp_path / 'idx'} --images '{root}' --labels folders`"
    assert expected in " ".join(result.output.split()), result.output


def test_excluding_near_duplicates_on_a_one_split_collection_says_it_has_one_split(tmp_path, model):
    folder = write_image_folder(tmp_path / "pics")
    build(folder.root, tmp_path / "idx", model)
    result = CliRunner().invoke(
        cli, ["eval", "--index-dir", str(tmp_path / "idx"), "--exclude-near-duplicates", "0.01"]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "this bundle has one split (a folder collection): leave out --exclude-near-duplicates" in result.output
    # duplicates --across-splits answered "0 groups" there, as if none had been found (new-user trial)
    result = CliRunner().invoke(cli, ["duplicates", "--index-dir", str(tmp_path / "idx"), "--across-splits"])
    assert result.exit_code == 1 and "one split (a folder collection): leave out --across-splits" in result.output


def test_build_index_without_images_does_not_replace_an_index_of_folders(tmp_path, model, fake_data_dir):
    folder = write_image_folder(tmp_path / "pics")
    build(folder.root, tmp_path / "idx", model)
    before = folder_digest(tmp_path / "idx")
    result = CliRunner().invoke(
        cli,
        ["build-index", "--index-dir", str(tmp_path / "idx"), "--data-dir", str(fake_data_dir), "--model", str(model)],
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "is an index of your folders" in result.output and f"--images {folder.root.resolve()}" in result.output
    assert folder_digest(tmp_path / "idx") == before  # nothing replaced


def test_eval_leaves_out_a_query_whose_class_has_no_other_image_and_says_so(tmp_path, model):
    folder = write_image_folder(tmp_path / "pics")
    (folder.root / "aaa-alone").mkdir()
    (folder.root / "aaa-alone/only.png").write_bytes(png_bytes(synthetic_images(1, seed=60)[0]))  # id 0: a query
    build(folder.root, tmp_path / "idx", model)
    result = CliRunner().invoke(cli, ["eval", "--index-dir", str(tmp_path / "idx"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["queries_without_relevant"] == 1
    assert report["retrieval"][0]["per_class_p_at_10"][0] != report["retrieval"][0]["per_class_p_at_10"][0]  # NaN
    table = CliRunner().invoke(cli, ["eval", "--index-dir", str(tmp_path / "idx")]).stdout
    assert "Left out: 1 queries whose class has no other image to find" in table


def test_a_query_of_a_collection_image_leaves_its_pictures_out_of_the_next_sync(tmp_path, model, monkeypatch):
    """`aesearch query photos/x.png` writes photos/x.aesearch.png (and x.explain.png) beside it: the
    next sync indexed those pictures as images of the collection (found by a new-user trial)."""
    folder = write_image_folder(tmp_path / "pics")
    index = tmp_path / "idx"
    build(folder.root, index, model)
    runner = CliRunner()
    query = folder.root / "ring/r-002.png"
    result = runner.invoke(cli, ["query", str(query), "-k", "3", "--explain", "--index-dir", str(index)])
    assert result.exit_code == 0, result.output
    assert (folder.root / "ring/r-002.aesearch.png").is_file() and (folder.root / "ring/r-002.explain.png").is_file()
    result = runner.invoke(cli, ["sync", "--dry-run", "--json", "--index-dir", str(index)])
    report = json.loads(result.output)
    assert report["added"] == [], report
    result = runner.invoke(cli, ["add", str(folder.root / "ring/r-002.aesearch.png"), "--index-dir", str(index)])
    assert result.exit_code == 1 and "is a picture aesearch wrote" in result.output
    # interpolate's default picture, written where the user stands (here: in the collection)
    monkeypatch.chdir(folder.root / "ring")
    result = runner.invoke(cli, ["interpolate", "0", "1", "--index-dir", str(index)])
    assert result.exit_code == 0 and (folder.root / "ring/id0-id1.interpolation.png").is_file(), result.output
    (folder.root / "ring/kept.aesearch.jpg").write_bytes(png_bytes(synthetic_images(1, seed=9)[0]))
    result = runner.invoke(cli, ["sync", "--dry-run", "--json", "--index-dir", str(index)])
    assert json.loads(result.output)["added"] == ["ring/kept.aesearch.jpg"], "only the names query writes are left out"


def test_query_out_never_replaces_the_query_image_or_an_image_of_the_collection(tmp_path, model):
    """`aesearch query a.png --out photos/b.png` overwrote an indexed image with the result picture,
    and `--out a.png` the query itself (found by a new-user trial): both are refused, the files kept."""
    folder = write_image_folder(tmp_path / "pics")
    index = tmp_path / "idx"
    build(folder.root, index, model)
    runner = CliRunner()
    outside = tmp_path / "query.png"
    outside.write_bytes(png_bytes(synthetic_images(1, seed=70)[0]))
    indexed = folder.root / "ring/r-002.png"
    before = {path: path.read_bytes() for path in (outside, indexed)}
    for query, out in ((outside, indexed), (outside, outside), (indexed, indexed)):
        result = runner.invoke(cli, ["query", str(query), "-k", "2", "--index-dir", str(index), "--out", str(out)])
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        assert len(result.output.strip().splitlines()) == 1 and "--out" in result.output, result.output
    assert {path: path.read_bytes() for path in before} == before
    fresh = folder.root / "ring/r-002.aesearch.png"  # a result picture, written again: allowed
    for out in (tmp_path / "result.png", fresh, fresh):
        result = runner.invoke(cli, ["query", str(indexed), "-k", "2", "--index-dir", str(index), "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert out.is_file()


def test_no_picture_option_replaces_an_input_or_an_image_of_the_collection(tmp_path, model):
    """interpolate, map, duplicates and eval --report wrote their pictures over an indexed image or
    over their own input image (new-user trial), as query --out once did: refused, the files kept."""
    folder = write_image_folder(tmp_path / "pics")
    index = tmp_path / "idx"
    build(folder.root, index, model)
    outside = tmp_path / "query.png"
    outside.write_bytes(png_bytes(synthetic_images(1, seed=71)[0]))
    indexed = folder.root / "ring/r-002.png"
    before = {path: path.read_bytes() for path in (outside, indexed)}
    common = ["--index-dir", str(index)]
    for args in (
        ["interpolate", "0", "1", "--out", str(indexed)],
        ["interpolate", str(outside), "1", "--out", str(outside)],
        ["map", "--out", str(indexed)],
        ["map", "--query", str(outside), "--out", str(outside)],
        ["duplicates", "--out", str(indexed)],
        ["eval", "--report", str(indexed)],
    ):
        result = CliRunner().invoke(cli, [*args, *common])
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (args, result.output)
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
        assert "is a file of the indexed collection" in result.output or "is an input image" in result.output
    assert {path: path.read_bytes() for path in before} == before


def test_a_folder_build_checks_its_target_before_it_reads_or_trains(tmp_path, monkeypatch):
    """--index-dir naming a file, a folder of other files or "." was refused only when the build came
    to write, after minutes of training; --images "" trained on the current folder (new-user trial)."""
    from aesearch.pipelines import collection

    def never(*args, **kwargs):
        raise AssertionError("the target is checked before any file is read")

    monkeypatch.setattr(collection, "scan", never)
    folder = write_image_folder(tmp_path / "pics")
    (tmp_path / "file.png").write_bytes(b"keep me")
    bundle = tmp_path / "idx"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{}")
    (bundle / "segments").mkdir()
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for target, code, message in [
        (tmp_path / "file.png", 1, "is a file: give a folder for the index"),
        (folder.root, 1, "holds other files"),
        (bundle / "segments", 1, "is inside the index at"),
        (".", 1, "--index-dir '.' names no folder"),
        ("", 2, "Invalid value for '--index-dir': it is empty"),
    ]:
        result = runner.invoke(cli, ["build-index", "--images", str(folder.root), "--index-dir", str(target)])
        assert result.exit_code == code and message in result.output and "Traceback" not in result.output, (
            target,
            result.output,
        )
    result = runner.invoke(cli, ["build-index", "--images", "", "--index-dir", str(tmp_path / "new")])
    assert result.exit_code == 2 and "Invalid value for '--images': it is empty" in result.output
    assert (tmp_path / "file.png").read_bytes() == b"keep me" and not list(tmp_path.glob("*.training.pt"))


def test_remove_takes_a_files_path_from_the_current_folder_as_add_does(tmp_path, model, monkeypatch):
    """`aesearch add photos/x.png` worked from the folder above the collection; `aesearch remove
    photos/x.png` said no image had that path (new-user trial)."""
    folder = write_image_folder(tmp_path / "pics")
    index = tmp_path / "idx"
    build(folder.root, index, model)
    link = folder.root / "ring/linked.png"
    link.symlink_to(folder.root / "loose-000.png")
    runner = CliRunner()
    assert runner.invoke(cli, ["sync", "--index-dir", str(index)]).exit_code == 0
    by_path = {path: i for i, path in paths_by_id(index).items()}
    monkeypatch.chdir(tmp_path)
    targets = ["pics/ellipse/e-000.png", "./pics/../pics/ring/r-002.png", "pics/ring/linked.png", "loose-001.png"]
    result = runner.invoke(cli, ["remove", *targets, "--index-dir", str(index)])
    assert result.exit_code == 0, result.output
    expected = sorted(by_path[p] for p in ["ellipse/e-000.png", "ring/r-002.png", "ring/linked.png", "loose-001.png"])
    assert f"ids {', '.join(map(str, expected))}" in result.output
    assert by_path["loose-000.png"] in paths_by_id(index), "a link's target stays: the link's name was given"
    result = runner.invoke(cli, ["remove", "pics/ellipse/e-000.png", "--index-dir", str(index)])
    assert result.exit_code == 1 and "no indexed image has the path pics/ellipse/e-000.png" in result.output


def test_a_bundle_inside_its_own_folder_keeps_its_figures_out_of_the_next_sync(tmp_path, model):
    """--index-dir photos/index, then duplicates, map and eval wrote photos/index-*.png beside the
    bundle, and the next sync indexed the figures (new-user trial); an image of that kind of name
    beside an ordinary folder is still indexed."""
    folder = write_image_folder(tmp_path / "pics")
    index = folder.root / "index"
    build(folder.root, index, model)
    runner = CliRunner()
    for command in (["duplicates"], ["map"], ["map", "--method", "tsne"], ["eval"]):
        result = runner.invoke(cli, [*command, "--index-dir", str(index)])
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.root.glob("index-*.png")) == [
        "index-duplicates.png",
        "index-eval.png",
        "index-map-pca.png",
        "index-map-tsne.png",
    ]
    (folder.root / "ring-eval.png").write_bytes(png_bytes(synthetic_images(1, seed=8)[0]))  # ring/ is no bundle
    result = runner.invoke(cli, ["sync", "--dry-run", "--json", "--index-dir", str(index)])
    assert json.loads(result.output)["added"] == ["ring-eval.png"]


def test_remove_and_add_in_a_collection_built_from_a_list(tmp_path, model, monkeypatch):
    """A collection built with --images-from LIST: a file's own path named LIST.txt/... as if the
    list were a folder, so `remove /abs/path.png` found nothing (new-user trial)."""
    folder = write_image_folder(tmp_path / "pics")
    listing = tmp_path / "list.txt"
    listing.write_text("pics/ellipse/e-000.png\npics/ring/r-002.png\npics/loose-000.png\n")
    index = tmp_path / "idx"
    spec = IndexSpec("flat", "cosine", {}, "none")
    build_from_folders(index, images_from=listing, model=model, spec=spec, shifts=((0, 0),), workers=1, log=None)
    by_path = {path: i for i, path in paths_by_id(index).items()}
    monkeypatch.chdir(folder.root)
    removed = Collection.open(index).remove([str(folder.root / "ellipse/e-000.png"), "ring/r-002.png"])
    assert removed == sorted([by_path["pics/ellipse/e-000.png"], by_path["pics/ring/r-002.png"]])
    # `add` of a file beside the list said "move it into one (of the collection's folders)": a list
    # collection has none; its files come through the list (new-user trial)
    result = CliRunner().invoke(cli, ["add", "ring/r-005.png", "--index-dir", str(index)])
    assert result.exit_code == 1 and "add the path to the list, then run `aesearch sync`" in result.output
