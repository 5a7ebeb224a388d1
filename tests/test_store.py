"""The segmented store: updates in place, against a fresh build of the same images (the oracle)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aesearch.errors import BundleError, InvalidArgumentError
from aesearch.pipelines.update import compact
from aesearch.pipelines.writer import Collection
from aesearch.search.engine import SearchEngine
from aesearch.search.index import recall_at_k
from aesearch.store.bundle import BundleWriter, load_bundle
from aesearch.store.manifest import MANIFEST, manifest_digest
from tests.conftest import folder_digest, make_bundle, synthetic_images, tiny_checkpoint

CHECKPOINT = tiny_checkpoint()


@pytest.fixture
def deltas_only(monkeypatch):
    """Updates write deltas and tombstones and never compact: the store's own machinery under test."""
    monkeypatch.setattr("aesearch.pipelines.drift.RELEARN_EVERY_SYNC_MAX", 0)
    monkeypatch.setattr("aesearch.pipelines.update.COMPACT_FRACTION", float("inf"))


def add_images(bundle: Path, images: np.ndarray) -> np.ndarray:
    return Collection.open(bundle).add(images)


def remove_images(bundle: Path, ids) -> list[int]:
    return Collection.open(bundle).remove(ids)


def neighbours(index_dir: Path, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    engine = SearchEngine.load(index_dir)
    return engine.search(engine.encode(queries), k)


def fresh_equivalent(tmp_path: Path, bundle_dir: Path, **kwargs) -> tuple[Path, np.ndarray]:
    """A fresh build of exactly the bundle's live images, and the map from its ids to the bundle's."""
    from aesearch.pipelines.build import assemble_bundle
    from aesearch.search.index import IndexSpec

    bundle = load_bundle(bundle_dir)
    ids = bundle.live_ids()
    info = {k: bundle.manifest[k] for k in ("dataset", "class_names", "split_names")}
    assemble_bundle(
        tmp_path / "fresh",
        checkpoint=CHECKPOINT,
        images=bundle.images(ids),
        records=bundle.records(ids),
        info=info,
        spec=IndexSpec(**kwargs),
    )
    return tmp_path / "fresh", ids


def assert_same_neighbours(updated: Path, fresh: Path, fresh_to_updated: np.ndarray, queries: np.ndarray) -> None:
    d_updated, i_updated = neighbours(updated, queries)
    d_fresh, i_fresh = neighbours(fresh, queries)
    np.testing.assert_allclose(d_updated, d_fresh, rtol=1e-4, atol=1e-5)
    # Embeddings computed in other batches differ in the last float bits, so images at (nearly)
    # equal distances may swap ranks; every other rank must hold the same image.
    gaps = np.diff(d_fresh, axis=1)
    tied = np.zeros_like(d_fresh, dtype=bool)
    tied[:, 1:] |= gaps < 1e-4
    tied[:, :-1] |= gaps < 1e-4
    tied[:, -1] = True  # the image just beyond rank k is unknown
    same = i_updated == fresh_to_updated[i_fresh]
    assert (same | tied).all(), f"{(~same & ~tied).sum()} neighbours differ beyond rounding"


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_adds_and_removes_equal_a_fresh_build_of_the_final_images(tmp_path, index_type, deltas_only):
    bundle = make_bundle(tmp_path / "b", n=80, checkpoint=CHECKPOINT, index_type=index_type)
    extra = synthetic_images(50, seed=7)
    first = add_images(bundle, extra[:30])
    np.testing.assert_array_equal(first, np.arange(80, 110))
    remove_images(bundle, [3, 50, 81, 109])
    second = add_images(bundle, extra[30:])
    np.testing.assert_array_equal(second, np.arange(110, 130))  # ids are never reused
    remove_images(bundle, [0, 115])
    loaded = load_bundle(bundle)
    assert len(loaded) == 80 + 50 - 6 and loaded.generation == 6  # the build, its recall figures, four updates
    assert not loaded.is_live(np.array([0, 3, 50, 81, 109, 115])).any()
    fresh, ids = fresh_equivalent(tmp_path, bundle, index_type=index_type, metric="l2")
    queries = np.concatenate([synthetic_images(20, seed=11), extra[:5], loaded.images(ids[:5])])
    if index_type == "flat":
        assert_same_neighbours(bundle, fresh, ids, queries)
    else:  # two HNSW graphs of the same vectors differ a little: both must agree with exact search
        _, found = neighbours(bundle, queries)
        _, fresh_found = neighbours(fresh, queries)
        assert not np.isin(found, [0, 3, 50, 81, 109, 115]).any()
        assert recall_at_k(found, ids[fresh_found]) >= 0.95


def test_compaction_relearns_the_whitening_and_equals_a_fresh_build(tmp_path):
    # Whitening as the default bundle does it: shrunk, and fewer axes than training images.
    whiten = {"whiten_shrinkage": 0.03, "whiten_dims": 24}
    bundle = make_bundle(
        tmp_path / "b", n=100, checkpoint=CHECKPOINT, transform="whiten", metric="cosine", params=whiten
    )
    before = json.loads((bundle / MANIFEST).read_text())["space"]
    add_images(bundle, synthetic_images(40, seed=3))
    remove_images(bundle, np.arange(0, 100, 7))
    manifest = compact(bundle)
    assert len(manifest["segments"]) == 1 and manifest["tombstones"] is None and manifest["space"] != before
    assert len(list((bundle / "segments").iterdir())) == 1  # the old segments are gone
    fresh, ids = fresh_equivalent(
        tmp_path, bundle, transform="whiten", metric="cosine", index_type="flat", params=whiten
    )
    assert_same_neighbours(bundle, fresh, ids, synthetic_images(25, seed=12))


def test_a_removed_image_is_never_found_and_cannot_be_removed_twice(tmp_path):
    bundle = make_bundle(tmp_path / "b", n=40, checkpoint=CHECKPOINT)
    engine = SearchEngine.load(bundle)
    target = engine.image(17)
    remove_images(bundle, [17])
    result = SearchEngine.load(bundle).query(target, k=39)
    assert 17 not in [h.id for h in result.hits] and len(result.hits) == 39
    with pytest.raises(
        InvalidArgumentError, match=r"the image with id 17 was removed from .*gaps where images were removed"
    ):
        remove_images(bundle, [17])
    with pytest.raises(InvalidArgumentError, match="the image with id 17 was removed"):
        SearchEngine.load(bundle).image(17)


def test_a_second_writer_is_refused_in_one_line(tmp_path):
    bundle = make_bundle(tmp_path / "b", n=20, checkpoint=CHECKPOINT)
    with BundleWriter.update(bundle):
        with pytest.raises(BundleError, match=r"is being updated by process \d+: wait") as info:
            remove_images(bundle, [1])
        assert "\n" not in str(info.value)
    remove_images(bundle, [1])  # released with the first writer


def test_a_reader_keeps_its_snapshot_while_a_writer_publishes(tmp_path):
    bundle = make_bundle(tmp_path / "b", n=30, checkpoint=CHECKPOINT)
    reader = SearchEngine.load(bundle)
    query = reader.image(5)
    before = reader.query(query, k=5)
    remove_images(bundle, [5])
    compact(bundle)  # the segments the reader maps are now deleted from the folder
    assert reader.bundle.changed()
    again = reader.query(query, k=5)
    assert [h.id for h in again.hits] == [h.id for h in before.hits] and again.hits[0].id == 5
    assert 5 not in [h.id for h in SearchEngine.load(bundle).query(query, k=5).hits]


KILLED_UPDATE = """
import sys, time
from pathlib import Path
import numpy as np
import aesearch.store.bundle as store
from aesearch import Collection
from tests.conftest import synthetic_images

real_write = store.write_manifest
def stalled(*args, **kwargs):
    print("segment written", flush=True)
    time.sleep(60)  # killed here: the new segment is on disk, the manifest not yet replaced
store.write_manifest = stalled
Collection.open(Path(sys.argv[1])).add(synthetic_images(10, seed=4))
"""


def test_killed_update_leaves_the_bundle_loadable_and_the_next_writer_cleans_up(tmp_path, deltas_only):
    bundle = make_bundle(tmp_path / "b", n=30, checkpoint=CHECKPOINT)
    manifest_before = (bundle / MANIFEST).read_bytes()
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_UPDATE, str(bundle)], cwd=root, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "segment written"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert (bundle / MANIFEST).read_bytes() == manifest_before
    assert len(list((bundle / "segments").iterdir())) == 2  # the orphan, unnamed by any manifest
    assert len(SearchEngine.load(bundle)) == 30
    ids = add_images(bundle, synthetic_images(10, seed=4))  # running it again finishes the job
    np.testing.assert_array_equal(ids, np.arange(30, 40))
    assert len(list((bundle / "segments").iterdir())) == 2 and len(load_bundle(bundle)) == 40


def _rewrite(bundle: Path, edit) -> None:
    manifest = json.loads((bundle / MANIFEST).read_text())
    edit(manifest)
    manifest["manifest_sha256"] = manifest_digest(manifest)
    (bundle / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(count=999), r"inconsistent \(segments hold 20 images and 0 are removed, but the count"),
        (lambda m: m.update(format_version="2"), r"invalid \(format_version: not an integer"),
        (lambda m: m.update(format_version=True), r"invalid \(format_version: not an integer"),
        (lambda m: m.update(class_names=[]), r"inconsistent \(a record has label 2, but there are 0 class names"),
        (lambda m: m.update(split_names=["x"]), r"inconsistent \(a record has split 1, but there are 1 split names"),
        (lambda m: m.update(split_names=["x", "x"]), r"invalid \(split_names: Value error, a name is listed twice"),
        (lambda m: m.update(index_params="str"), r"invalid \(index_params: Input should be a valid dictionary"),
        (lambda m: m.update(index_params={"nprobe": 0}), r"invalid \(index_params\.nprobe: Input should be greater"),
        (lambda m: m.update(model="x"), r"invalid \(model: Input should be a valid dictionary"),
        (lambda m: m.update(metric="ip"), r"invalid \(metric: Input should be 'l2' or 'cosine'"),
        (lambda m: m.update(transform="pca"), r"invalid \(transform: Input should be 'none' or 'whiten'"),
        (lambda m: m.update(collection={"roots": ["photos"]}), r"invalid \(collection\.roots: Value error"),
        (lambda m: m.update(decoder_sha256="0" * 64), r"has another decoder than the index"),
        (lambda m: m["segments"][0]["meta"].update(index_params={"nprobe": "a"}), r"invalid \(segments\.0\.meta"),
        (lambda m: m.update(z_size=-4), r"invalid \(z_size: Input should be greater than or equal to 1"),
        (lambda m: m["segments"][0].update(name="../x"), r"invalid \(segments\.0\.name: Value error, not a segment"),
        (lambda m: m["segments"][0].update(last_id=50), r"segment base holds ids 0-50, next id is 20"),
        (lambda m: m.update(split_names=[]), r"invalid \(split_names: List should have at least 1 item"),
        (lambda m: m.update(class_names=[1, 2]), r"invalid \(class_names\.0: Input should be a valid string"),
        (lambda m: m.update(tombstones={"file": "t.npy", "count": 1}), r"tombstone file t\.npy is not listed"),
    ],
)
def test_a_manifest_with_consistent_checksums_is_still_checked_whole(tmp_path, edit, message):
    bundle = make_bundle(tmp_path / "b", n=20, checkpoint=CHECKPOINT)
    _rewrite(bundle, edit)
    with pytest.raises(BundleError, match=message) as info:
        load_bundle(bundle)
    assert "\n" not in str(info.value)


def test_an_edited_embedding_shift_is_caught_by_the_stored_vectors(tmp_path):
    """Checksums recomputed after the edit: only the data can tell (the vectors were made with (0, 0), (1, 1))."""
    bundle = make_bundle(tmp_path / "b", n=20, checkpoint=CHECKPOINT)
    load_bundle(bundle)
    _rewrite(bundle, lambda m: m.update(embedding_shifts=[[0, 0]]))
    with pytest.raises(BundleError, match="stored vectors are not what its model makes"):
        SearchEngine.load(bundle)


def test_a_swapped_decoder_is_refused_even_with_recomputed_checksums(tmp_path):
    from aesearch.model.checkpoint import Checkpoint, save_checkpoint
    from aesearch.store.bundle import file_checksum

    bundle = make_bundle(tmp_path / "b", n=20, checkpoint=CHECKPOINT)
    other = tiny_checkpoint(seed=7)
    weights = {k: (other.weights[k] if k.startswith("decoder.") else v) for k, v in CHECKPOINT.weights.items()}
    save_checkpoint(bundle / "model.safetensors", Checkpoint(weights, CHECKPOINT.model_config, CHECKPOINT.info))
    model = bundle / "model.safetensors"
    _rewrite(
        bundle,
        lambda m: m["files"]["model.safetensors"].update(sha256=file_checksum(model), bytes=model.stat().st_size),
    )
    with pytest.raises(BundleError, match="has another decoder than the index"):
        load_bundle(bundle)


def test_deeply_nested_or_huge_manifests_are_one_line(tmp_path):
    bundle = make_bundle(tmp_path / "b", n=20, checkpoint=CHECKPOINT)
    (bundle / MANIFEST).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BundleError, match="damaged"):
        load_bundle(bundle)
    (bundle / MANIFEST).write_text('{"format": "aesearch-index", "count": ' + "9" * 5000 + "}")
    with pytest.raises(BundleError, match="damaged"):
        load_bundle(bundle)


def test_a_segment_reopened_with_fewer_rows_keeps_the_first_ones_in_place(tmp_path):
    """A streamed build sized for every file, cut to the images it got (here, or after a kill -9 between
    the end of encoding and the cut): the first rows survive, byte for byte, in files of the new size."""
    from aesearch.store.records import new_records
    from aesearch.store.segment import SegmentBuilder

    segment = SegmentBuilder(tmp_path / "seg", 10, 8, (28, 28))
    records = new_records(10)
    records["id"] = np.arange(10)
    images = synthetic_images(10)
    vectors = np.random.default_rng(0).standard_normal((10, 8)).astype(np.float32)
    segment.records[:], segment.images[:], segment.embeddings[:] = records, images, vectors
    segment.close()
    cut = SegmentBuilder(tmp_path / "seg", 7, 8, (28, 28))
    np.testing.assert_array_equal(cut.records, records[:7])
    np.testing.assert_array_equal(cut.images, images[:7])
    np.testing.assert_array_equal(cut.embeddings, vectors[:7])
    cut.close()
    assert np.load(tmp_path / "seg" / "embeddings.npy").shape == (7, 8)
    assert (tmp_path / "seg" / "images.npy").stat().st_size == 128 + 7 * 784  # header, then the rows only


def test_one_bundle_has_one_writer_lock_however_its_path_is_spelled(bundle_copy, monkeypatch):
    """`--index-dir .` from inside a bundle locked `./..lock`, inside it, so a writer naming the
    bundle another way was let in beside it (new-user trial)."""
    from aesearch.errors import BundleLockedError
    from aesearch.store.lock import writer_lock

    before = sorted(p.name for p in bundle_copy.iterdir())
    monkeypatch.chdir(bundle_copy / "segments")
    spellings = [bundle_copy, "..", "../segments/..", f"../../{bundle_copy.name}"]
    for held in spellings:
        with writer_lock(held):
            for other in spellings:
                with pytest.raises(BundleLockedError), writer_lock(other):
                    pass
    assert sorted(p.name for p in bundle_copy.iterdir()) == before, "no lock file inside the bundle"
    assert (bundle_copy.parent / f".{bundle_copy.name}.lock").is_file()


def test_figures_of_a_bundle_named_from_inside_it_go_beside_it(bundle_copy, monkeypatch):
    """`aesearch map --index-dir .` (and eval, duplicates) from inside a bundle: a traceback
    ("PosixPath('.') has an empty name") (new-user trial)."""
    from click.testing import CliRunner

    from aesearch.interfaces.cli import cli

    monkeypatch.chdir(bundle_copy)
    for command, picture in [("map", "map-pca"), ("eval", "eval"), ("duplicates", "duplicates")]:
        result = CliRunner().invoke(cli, [command, "--index-dir", "."])
        assert result.exit_code == 0, result.output
        assert (bundle_copy.parent / f"{bundle_copy.name}-{picture}.png").is_file()


def test_no_output_goes_inside_a_bundle(bundle_copy, tmp_path, monkeypatch):
    """`aesearch train --out idx/model.safetensors` overwrote the bundle's model (the bundle broken, the
    model trained for it lost), and every --out could write files into a bundle (new-user trial)."""
    from click.testing import CliRunner
    from PIL import Image

    from aesearch.interfaces.cli import cli

    before = folder_digest(bundle_copy)
    pictures = ["query", str(tmp_path / "q.png"), "--index-dir", str(bundle_copy)]
    Image.fromarray(load_bundle(bundle_copy).image(3)).save(tmp_path / "q.png")
    inside = bundle_copy / "segments"
    for args in [
        [*pictures, "--out", str(bundle_copy / "x.png")],
        [*pictures, "--out", str(inside / "x.png")],
        ["map", "--index-dir", str(bundle_copy), "--out", str(bundle_copy / "m.png")],
        ["eval", "--index-dir", str(bundle_copy), "--report", str(bundle_copy / "e.png")],
        ["duplicates", "--index-dir", str(bundle_copy), "--out", str(bundle_copy / "d.png")],
        ["interpolate", "3", "4", "--index-dir", str(bundle_copy), "--out", str(bundle_copy / "i.png")],
        ["train", "--out", str(bundle_copy / "model.safetensors"), "--epochs", "1"],
    ]:
        result = CliRunner().invoke(cli, args)
        option = "--report" if "--report" in args else "--out"
        assert result.exit_code == 1, (args, result.output)
        assert f"Error: {option} " in result.output and f"is inside the index at {bundle_copy}" in result.output
    assert folder_digest(bundle_copy) == before


@pytest.mark.parametrize("target", ["", " ", "\t"])
def test_removing_an_empty_path_removes_nothing(bundle_copy, target):
    """`aesearch remove ""` on a dataset bundle (its images have no path) removed the image last
    listed under the empty path (found by a new-user trial): refused in one line, nothing changed."""
    before = folder_digest(bundle_copy)
    with pytest.raises(InvalidArgumentError, match="a path to remove is empty"):
        Collection.open(bundle_copy).remove([target])
    assert folder_digest(bundle_copy) == before


def test_an_image_without_a_path_is_not_found_by_the_empty_path(bundle_copy):
    from aesearch.pipelines.sync import ids_by_path

    assert "" not in ids_by_path(load_bundle(bundle_copy))
