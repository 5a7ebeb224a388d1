"""A collection never shrinks by accident, an emptied bundle stays a bundle, and k means k.

The oracles: the folder's bytes before and after a refused sync, a fresh build of the same files,
and the set of live ids (a search for every image returns every image).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from image_folders import write_image_folder

from aesearch.errors import AesearchError, EmptyIndexError
from aesearch.interfaces.cli import cli
from aesearch.pipelines.collection import build_from_folders
from aesearch.pipelines.sync import MassRemovalError
from aesearch.pipelines.update import compact
from aesearch.pipelines.writer import Collection
from aesearch.search.engine import SearchEngine
from aesearch.search.index import IndexSpec
from aesearch.store.bundle import load_bundle
from aesearch.store.records import new_records
from tests.conftest import folder_digest, make_bundle, synthetic_images, synthetic_labels, tiny_checkpoint


@pytest.fixture
def collection(tmp_path, model) -> tuple[Path, Path]:
    """(folder of 38 readable images, its bundle)."""
    folder, index = tmp_path / "photos", tmp_path / "index"
    write_image_folder(folder, 36)
    build_from_folders(
        index,
        images=[folder],
        labels="folders",
        model=model,
        spec=IndexSpec("flat", "cosine"),
        shifts=((0, 0),),
        workers=1,
        log=None,
    )
    return folder, index


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_an_emptied_root_is_refused_until_allowed_and_images_that_return_get_new_ids(collection, tmp_path):
    folder, index = collection
    ids_before = set(load_bundle(index).live_ids().tolist())
    folder.rename(tmp_path / "photos.away")  # what an unmounted disk looks like: the mount point stays, empty
    folder.mkdir()
    before = folder_digest(index)
    refused = run("sync", "--index-dir", str(index))
    assert refused.exit_code == 1 and "holds no image files now" in refused.output, refused.output
    assert "--allow-mass-removal" in refused.output and len(refused.output.strip().splitlines()) == 1
    assert folder_digest(index) == before, "a refused sync writes nothing"
    dry = Collection.open(index).sync(dry_run=True)
    assert dry.refused and len(dry.removed) == len(ids_before) and folder_digest(index) == before

    allowed = Collection.open(index).sync(allow_mass_removal=True)
    assert len(allowed.removed) == len(ids_before) and len(load_bundle(index)) == 0
    folder.rmdir()
    (tmp_path / "photos.away").rename(folder)
    back = Collection.open(index).sync()
    live = set(load_bundle(index).live_ids().tolist())
    assert len(back.added) == len(ids_before) and not live & ids_before, "ids are never reused"


def test_removing_more_than_half_is_refused(collection):
    folder, index = collection
    files = sorted(p for p in folder.rglob("*.png") if "broken" not in p.parts and not p.name.startswith("."))
    for path in files[: len(files) * 2 // 3]:
        path.unlink()
    before = folder_digest(index)
    with pytest.raises(MassRemovalError, match=r"would remove \d+ of 38 indexed images"):
        Collection.open(index).sync()
    assert folder_digest(index) == before
    assert len(Collection.open(index).sync(allow_mass_removal=True).removed) == len(files) * 2 // 3


def test_an_emptied_list_file_is_refused(tmp_path, model):
    folder = tmp_path / "photos"
    write_image_folder(folder, 12)
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(str(p) for p in sorted(folder.rglob("*.png")) if "broken" not in p.parts))
    index = tmp_path / "index"
    build_from_folders(
        index, images_from=listing, model=model, spec=IndexSpec("flat", "cosine"), shifts=((0, 0),), workers=1, log=None
    )
    listing.write_text("")
    with pytest.raises(MassRemovalError, match="holds no image files now"):
        Collection.open(index).sync()


def test_a_bundle_with_every_image_removed_loads_says_so_and_takes_adds(collection):
    _, index = collection
    Collection.open(index).remove(load_bundle(index).live_ids().tolist())
    engine = SearchEngine.load(index)  # a valid bundle: it loads
    assert len(engine) == 0
    for call in (lambda: engine.query(synthetic_images(1)[0]), lambda: engine.query_batch(synthetic_images(2))):
        with pytest.raises(EmptyIndexError, match="is empty"):
            call()
    for command in (["duplicates"], ["map"], ["eval"], ["query", "--id", "3"], ["info"]):
        out = run(*command, "--index-dir", str(index))
        if command == ["info"]:
            assert out.exit_code == 0 and "0 (folders" in out.output, out.output
        else:
            assert out.exit_code == 1 and len(out.output.strip().splitlines()) == 1, out.output
    images = synthetic_images(3, seed=9)
    first = Collection.open(index).add(images[:1])  # one image: too few to learn a space from, the last one is kept
    assert SearchEngine.load(index).query(images[0], k=1).hits[0].id == first[0]
    Collection.open(index).add(images[1:])
    hits = SearchEngine.load(index).query(images[2], k=3).hits
    assert hits[0].id == first[0] + 2 and len(hits) == 3
    assert Collection.open(index).sync().count == 3 + 38, "the folder's files come back beside the added images"


def test_images_added_through_the_api_survive_sync(collection):
    _, index = collection
    (added,) = Collection.open(index).add(synthetic_images(1, seed=4), paths=["made/up/name.png"])
    report = Collection.open(index).sync()
    assert report.removed == [] and SearchEngine.load(index).hit(int(added)).path == "made/up/name.png"
    assert SearchEngine.load(index).hit(int(added)).position == -1


def test_compaction_of_a_shrunken_auto_bundle_chooses_again(tmp_path, monkeypatch):
    monkeypatch.setattr("aesearch.search.index_choice.EXACT_MAX_SCAN", 100_000)  # IVF from 319 vectors on
    index = make_bundle(tmp_path / "ivf", n=3000, index_type="auto")
    assert load_bundle(index).manifest["index_type"] == "ivf"
    Collection.open(index).remove(list(range(50, 3000)))  # 50 left: an IVF of 50 lists' worth would not even train
    bundle = load_bundle(index)
    assert len(bundle) == 50 and bundle.manifest["index_type"] == "flat"
    compact(index)
    assert len(SearchEngine.load(index).query_id(3, k=50).hits) == 50


@pytest.mark.parametrize("index_type", ["flat", "ivf", "hnsw", "sq8", "IVF16,PQ2"])
def test_k_hits_whenever_k_images_are_live(tmp_path, index_type):
    index = make_bundle(tmp_path / index_type, n=800, index_type=index_type, metric="cosine")
    Collection.open(index).remove(list(range(0, 800, 3)))
    engine = SearchEngine.load(index)
    live = engine.bundle.live_ids()
    if index_type == "ivf":
        nprobe = engine.index.parts[0].index.search_parameters().nprobe
        assert nprobe < engine.manifest["index_params"]["nlist"], "the tuned search alone sees only some lists"
    for k in (len(live), len(live) - 7, 40):
        results = engine.query_batch(engine.bundle.images(live[:5]), k=k)
        for result in results:
            assert len(result.hits) == k, f"{index_type}: {len(result.hits)} hits for k={k}"
            distances = [h.distance for h in result.hits]
            assert distances == sorted(distances)
        if k == len(live):
            assert {h.id for h in results[0].hits} == set(live.tolist())


def test_an_ivf_bundle_answers_k_near_its_size(tmp_path):
    """The case found by hand: -k 5000 on a 70,000-image IVF bundle returned 4,118 hits."""
    index = make_bundle(
        tmp_path / "ivf",
        n=2000,
        index_type="ivf",
        metric="cosine",
        transform="whiten",
        params={"whiten_dims": 32, "whiten_shrinkage": 0.03},
    )
    engine = SearchEngine.load(index)
    assert engine.index.parts[0].index.search_parameters().nprobe < engine.index.parts[0].index.index.nlist
    assert len(engine.query_id(7, k=1900).hits) == 1900


def test_a_compressed_reranked_bundle_answers_k_near_its_size(tmp_path, monkeypatch):
    from aesearch.pipelines.build import assemble_bundle
    from aesearch.store.records import new_records

    monkeypatch.setattr("aesearch.search.index_choice.EXACT_MAX_SCAN", 10_000)
    n = 3000
    spec = IndexSpec("auto", "cosine", {"whiten_dims": 32, "whiten_shrinkage": 0.03}, "whiten")
    assemble_bundle(
        tmp_path / "pq",
        checkpoint=tiny_checkpoint(),
        images=synthetic_images(n),
        records=new_records(n),
        info={"dataset": "synthetic"},
        shifts=((0, 0),),
        max_index_memory=40 * n,
        spec=spec,
    )
    engine = SearchEngine.load(tmp_path / "pq")
    params = engine.manifest["index_params"]
    assert "PQ" in engine.manifest["index_type"] and "rerank_factor" in params
    assert params["nprobe"] < params["nlist"], "the tuned search alone cannot see every vector"
    Collection.open(tmp_path / "pq").remove(list(range(0, n, 4)))
    engine = SearchEngine.load(tmp_path / "pq")
    live = engine.bundle.live_ids()
    hits = engine.query_id(int(live[3]), k=len(live)).hits
    assert len(hits) == len(live) and {h.id for h in hits} == set(live.tolist())


def test_compacting_a_compressed_bundle_writes_what_a_fresh_build_writes(tmp_path, monkeypatch):
    """The oracle: a fresh build of the live images. Compaction goes through the build's own steps, so
    the rows, the whitening, the search vectors and the trust agree file by file, and the answers
    (IVF-PQ, re-ranked exactly) agree rank by rank."""
    from aesearch.pipelines.build import assemble_bundle
    from aesearch.pipelines.writer import Collection
    from aesearch.search.large import SEARCH_VECTORS_FILE

    monkeypatch.setattr("aesearch.search.index_choice.EXACT_MAX_SCAN", 10_000)
    n, checkpoint = 3000, tiny_checkpoint()
    spec = IndexSpec("auto", "cosine", {"whiten_dims": 32, "whiten_shrinkage": 0.03}, "whiten")
    records = new_records(n)
    records["split"][n * 3 // 4 :] = 1  # the whitening is learned on the "train" split alone
    records["label"] = synthetic_labels(n)
    info = {"dataset": "synthetic", "class_names": ["ellipse", "rectangle", "ring"], "split_names": ["train", "test"]}

    def build(path, images, records):
        assemble_bundle(
            path,
            checkpoint=checkpoint,
            images=images,
            records=records,
            info=info,
            spec=spec,
            shifts=((0, 0),),
            max_index_memory=40 * n,
        )

    build(tmp_path / "compacted", synthetic_images(n), records)
    Collection.open(tmp_path / "compacted").add(synthetic_images(300, seed=9))
    Collection.open(tmp_path / "compacted").remove(list(range(0, n + 300, 5)))
    manifest = compact(tmp_path / "compacted")
    compacted = load_bundle(tmp_path / "compacted")
    live = compacted.live_ids()
    build(tmp_path / "fresh", compacted.images(live), compacted.records(live))
    fresh = load_bundle(tmp_path / "fresh")

    assert "PQ" in manifest["index_type"] and manifest["index_type"] == fresh.manifest["index_type"]
    assert manifest["index_params"] == fresh.manifest["index_params"]
    assert manifest["index_choice"] == fresh.manifest["index_choice"]
    (a,), (b,) = compacted.segments, fresh.segments
    for column in ("split", "position", "label", "bytes", "mtime_ns", "content_hash"):  # ids: kept, not 0..n-1
        np.testing.assert_array_equal(a.records[column], b.records[column])
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    assert a.file(SEARCH_VECTORS_FILE).read_bytes() == b.file(SEARCH_VECTORS_FILE).read_bytes()
    for name in ("transform.npz", "trust.json"):
        if name.endswith(".npz"):
            with np.load(compacted.space_file(name)) as x, np.load(fresh.space_file(name)) as y:
                for key in ("mean", "matrix"):
                    np.testing.assert_array_equal(x[key], y[key])
        else:
            assert compacted.space_file(name).read_text() == fresh.space_file(name).read_text()
    old, new = SearchEngine.load(tmp_path / "compacted"), SearchEngine.load(tmp_path / "fresh")
    for row in range(0, len(live), 97):
        hits, expected = old.query_id(int(live[row]), k=10).hits, new.query_id(row, k=10).hits
        assert [int(np.searchsorted(live, h.id)) for h in hits] == [h.id for h in expected]
        np.testing.assert_allclose([h.distance for h in hits], [h.distance for h in expected], rtol=1e-6)


def test_sync_on_a_copy_of_a_missing_root_names_it(collection, tmp_path):
    folder, index = collection
    shutil.rmtree(folder)
    with pytest.raises(AesearchError, match="is missing: reconnect or restore it"):
        Collection.open(index).sync()
    assert len(load_bundle(index)) == 38 and np.all(load_bundle(index).live_ids() >= 0)


def test_sync_compact_compacts_even_when_nothing_changed(collection):
    _, index = collection
    Collection.open(index).add(synthetic_images(1, seed=3))
    report = Collection.open(index).sync(compact=True)
    assert report.maintenance == "compacted" and len(load_bundle(index).segments) == 1 and report.count == 39


def test_a_query_file_named_with_a_newline_stays_on_one_line(collection, tmp_path):
    folder, index = collection
    odd = tmp_path / "new\nline.png"
    odd.write_bytes((folder / "ellipse/e-000.png").read_bytes())
    out = run("query", str(odd), "-k", "2", "--no-picture", "--index-dir", str(index))
    assert out.exit_code == 0, out.output
    first = out.output.splitlines()[0]
    assert first.startswith("Query: ") and "new\\nline.png" in first


@pytest.fixture
def full_disk(tmp_path):
    """A 16 MB tmpfs (root only): a bundle copied onto it, the rest filled but for 20 kB."""
    import subprocess

    mount = tmp_path / "tiny"
    mount.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=16M", "tmpfs", str(mount)], capture_output=True
        ).returncode
    ):
        pytest.skip("needs root and tmpfs to fill a disk")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("args", [["sync"], ["sync", "--compact"], ["remove", "0", "1", "2"]])
def test_a_full_disk_fails_in_one_line_and_keeps_the_bundle(collection, full_disk, args):
    folder, index = collection
    on_disk = Path(shutil.copytree(index, full_disk / "index"))
    for i in range(12):  # new files for the sync to write
        (folder / "new").mkdir(exist_ok=True)
        (folder / "new" / f"n{i}.png").write_bytes((folder / "ellipse/e-000.png").read_bytes() + bytes([i]) * (i + 1))
    free = os.statvfs(full_disk).f_bavail * os.statvfs(full_disk).f_frsize
    (full_disk / "filler").write_bytes(b"\0" * (free - 20_000))
    before = folder_digest(on_disk)
    out = run(*args, "--index-dir", str(on_disk))
    if out.exit_code == 0:  # it fitted (a tombstone file is a few bytes): then it must be right
        assert "Removed 3 image(s)" in out.output
        return
    assert out.exit_code == 1 and "the disk is full" in out.output and len(out.output.strip().splitlines()) == 1
    assert folder_digest(on_disk) == before
    (full_disk / "filler").unlink()
    assert run(*args, "--index-dir", str(on_disk)).exit_code == 0, "with space again, the same command works"


def _damage_a_vector(index: Path) -> Path:
    """One byte of the first segment's stored vectors changed (the checksum in the manifest kept)."""
    target = sorted((index / "segments").glob("*/embeddings.npy"))[0]
    data = bytearray(target.read_bytes())
    data[-5] ^= 0xFF
    target.write_bytes(bytes(data))
    return target


@pytest.mark.parametrize("how", ["sync --compact", "remove", "a moved file"])
def test_a_writer_never_publishes_damaged_rows_under_a_fresh_checksum(collection, how):
    """A remove or sync --compact on a bundle with a damaged byte wrote a new generation with fresh
    checksums over the damaged rows: the damage could no longer be told, and every command blamed an
    edited manifest. Rows copied into new files are checked first."""
    from aesearch.errors import BundleError

    folder, index = collection
    damaged = _damage_a_vector(index)
    if how == "sync --compact":
        out = run("sync", "--compact", "--index-dir", str(index))
    elif how == "remove":
        out = run("remove", "3", "--index-dir", str(index))
    else:
        (folder / "ellipse/e-000.png").rename(folder / "ellipse/e-000-moved.png")
        out = run("sync", "--index-dir", str(index))
    if how != "remove":  # a remove copies nothing (a tombstone), unless it makes a compaction due
        assert out.exit_code == 1 and "is damaged (its SHA-256 differs" in out.output, out.output
        assert "Traceback" not in out.output
    with pytest.raises(BundleError, match=r"is damaged \(its SHA-256 differs"):
        load_bundle(index, verify="full")
    assert damaged.exists()


def test_a_build_replaces_only_a_rebuild_of_the_same_source_and_never_images_added_in_python(
    collection, tmp_path, model, fake_data_dir
):
    """build-index --images B over an index of folder A, or of Fashion-MNIST, replaced it silently (images
    added in Python included, which no file brings back); a rebuild of A dropped those images."""
    folder, index = collection
    other = tmp_path / "other"
    write_image_folder(other, 6)
    fashion = make_bundle(tmp_path / "fashion", n=30)

    def build(target: Path, *images: Path):
        args = ["build-index", "--index-dir", str(target), "--model", str(model), "--index-type", "flat"]
        return run(*args, *[a for image in images for a in ("--images", str(image))])

    for target, images, message in [
        (index, [other], "is an index of other folders"),
        (index, [folder, other], "is an index of other folders"),
        (fashion, [folder], "is an index of Fashion-MNIST (30 images)"),
    ]:
        before = folder_digest(target)
        out = build(target, *images)
        assert out.exit_code == 1 and message in out.output and "Traceback" not in out.output, out.output
        assert folder_digest(target) == before

    assert build(index, folder).exit_code == 0  # the same folders: a rebuild
    Collection.open(index).add(synthetic_images(2, seed=4))
    before = folder_digest(index)
    out = build(index, folder)
    assert out.exit_code == 1 and "holds 2 images added in Python" in out.output, out.output
    assert folder_digest(index) == before

    (index / "manifest.json").unlink()  # damaged: Fashion-MNIST over it is still a forgotten --images
    out = run("build-index", "--index-dir", str(index), "--data-dir", str(fake_data_dir), "--model", str(model))
    assert out.exit_code == 1 and "is a damaged index of your folders" in out.output, out.output


def test_query_id_finds_an_image_whose_framing_is_not_idempotent_at_distance_0(collection):
    """A stored image is the model's input already: query_id framed it again, which negates a
    silhouette that fills its frame with a light grey (a new user's icons), so it missed itself."""
    from aesearch.sources.preprocess import preprocess

    _, index = collection
    square = np.full((70, 70), 255, np.uint8)
    square[5:65, 5:65], square[33:37, 10:14] = 60, 255
    framed = preprocess(square)
    assert not np.array_equal(preprocess(framed), framed)  # the case: framing it again changes it
    (new,) = Collection.open(index).add(square[None])
    engine = SearchEngine.load(index)
    hit = engine.query_id(new, k=1).hits[0]
    assert hit.id == new and hit.distance == pytest.approx(0, abs=1e-6)
    with pytest.raises(AesearchError, match=r"outside \[0, 1\]"):
        engine.query_prepared(np.full((1, 28, 28), 2.0, np.float32))
    with pytest.raises(AesearchError, match="must have shape"):
        engine.query_prepared(np.zeros((1, 32, 32), np.float32))


def test_a_dry_run_sync_takes_no_lock_and_writes_nothing(collection):
    """sync --dry-run took the writer lock, so it failed on a read-only bundle folder (new-user
    trial); it reads and plans only, while a writer holds the lock too."""
    from aesearch.errors import BundleLockedError
    from aesearch.store.lock import writer_lock

    folder, index = collection
    (folder / "ellipse/e-000.png").unlink()
    before = folder_digest(index)
    with writer_lock(index):
        report = Collection.open(index).sync(dry_run=True)
        assert report.dry_run and report.count == 38
        with pytest.raises(BundleLockedError):
            Collection.open(index).sync()
    assert folder_digest(index) == before


def test_a_path_that_names_two_images_is_never_guessed(collection, tmp_path, model):
    """A name given in Python equal to a file's path made `remove PATH` remove the Python image; the
    same relative path under two roots removed one of the two without a word (new-user trial)."""
    _, index = collection
    taken = "ellipse/e-000.png"
    with pytest.raises(AesearchError, match=r"has the path ellipse/e-000.png already \(id "):
        Collection.open(index).add(synthetic_images(1, seed=5), paths=[taken])
    with pytest.raises(AesearchError, match="paths name two images alike"):
        Collection.open(index).add(synthetic_images(2, seed=5), paths=["a.png", "a.png"])

    first, second = tmp_path / "one", tmp_path / "two"
    for root in (first, second):
        write_image_folder(root, 4)
    both = tmp_path / "both"
    build_from_folders(both, images=[first, second], model=model, spec=IndexSpec("flat", "cosine"), log=None)
    twice = load_bundle(both).path_of(0)  # the first file of the first root: the second root has it too
    before = folder_digest(both)
    with pytest.raises(AesearchError, match=rf"2 indexed images have the path {twice} \(ids "):
        Collection.open(both).remove([twice])
    assert folder_digest(both) == before
    count = len(load_bundle(both))
    (removed,) = Collection.open(both).remove([str((second / twice).resolve())])  # the file's own path: one
    assert removed != 0 and load_bundle(both).is_live([0]).all() and len(load_bundle(both)) == count - 1


def test_a_file_under_the_name_of_an_image_added_in_python_is_left_out_and_said(collection):
    """A name given in Python, then a file of that path in the folder: sync added the file, and
    `remove PATH` could tell the two apart no more (new-user trial)."""
    folder, index = collection
    (pinned,) = Collection.open(index).add(synthetic_images(1, seed=6), paths=["ellipse/e-new.png"])
    shutil.copy(folder / "ellipse/e-000.png", folder / "ellipse/e-new.png")
    try:
        report = Collection.open(index).sync()
    finally:
        (folder / "ellipse/e-new.png").unlink()
    assert report.added == [] and report.changes == 0
    [(path, reason)] = [(s.path, s.reason) for s in report.skipped if "added in Python" in s.reason]
    assert path == "ellipse/e-new.png" and f"`aesearch remove {pinned}` first" in reason
    (removed,) = Collection.open(index).remove(["ellipse/e-new.png"])  # one image has the name: no guess
    assert removed == pinned


def test_sync_flags_must_be_booleans(collection):
    """Collection.sync(dry_run="no") ran as a dry run (new-user trial)."""
    _, index = collection
    for flag in ("dry_run", "allow_mass_removal", "compact"):
        with pytest.raises(AesearchError, match=f"`{flag}` must be True or False, got 'no'"):
            Collection.open(index).sync(**{flag: "no"})
