"""The streaming build: equal to the in-memory build, resumable after kill -9, bounded by a chunk."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import make_bundle, synthetic_images, synthetic_labels, tiny_checkpoint

from aesearch.pipelines.stream import StreamOptions, stream_build
from aesearch.search.engine import SearchEngine
from aesearch.search.large import SEARCH_VECTORS_FILE
from aesearch.sources.arrays import ArraySource
from aesearch.sources.shards import ShardSource, write_shard
from aesearch.sources.shards import write_manifest as write_collection_manifest
from aesearch.store.bundle import load_bundle
from aesearch.store.manifest import write_manifest

N = 300


def source(n: int = N) -> ArraySource:
    images, n_train = synthetic_images(n), n * 3 // 4
    split = np.repeat(np.array([0, 1], np.uint8), [n_train, n - n_train])
    positions = np.concatenate([np.arange(n_train), np.arange(n - n_train)])
    return ArraySource(
        images,
        synthetic_labels(n).astype(np.int16),
        split,
        positions,
        split_names=["train", "test"],
        class_names=["ellipse", "rectangle", "ring"],
        fit_split=0,
        name="synthetic",
    )


def test_streamed_bundle_equals_in_memory_build(tmp_path):
    checkpoint = tiny_checkpoint()
    memory = make_bundle(
        tmp_path / "memory",
        n=N,
        checkpoint=checkpoint,
        metric="cosine",
        transform="whiten",
        params={"whiten_dims": 64, "whiten_shrinkage": 0.03},
    )
    options = StreamOptions(index_type="flat", whiten_dims=64, chunk_size=37)
    stream_build(tmp_path / "stream", source(), checkpoint, options, log=None)
    a, b = load_bundle(memory), load_bundle(tmp_path / "stream")
    (sa,), (sb,) = a.segments, b.segments
    np.testing.assert_array_equal(sa.images, sb.images)
    # The same vectors, chunked or not, to float32 rounding: BLAS rounds a row differently in blocks of
    # different shapes (37-image chunks here, 4096 in memory).
    np.testing.assert_allclose(sa.embeddings, sb.embeddings, rtol=1e-5, atol=1e-7)
    for column in ("id", "split", "position", "label", "content_hash"):
        np.testing.assert_array_equal(sa.records[column], sb.records[column])
    ea, eb = SearchEngine(a), SearchEngine(b)
    queries = np.asarray(sa.embeddings[::7])
    da, ia = ea.index.search(queries, 10)
    db, ib = eb.index.search(queries, 10)
    assert (ia == ib).mean() > 0.99  # whitening from streamed moments: same neighbours
    np.testing.assert_allclose(da, db, atol=1e-4)


def test_auto_builds_compressed_index_with_exact_reranking(tmp_path):
    """A budget too small for full vectors: IVF+PQ, re-ranked from the memory-mapped embeddings."""
    n = 2000
    images = np.resize(synthetic_images(400), (n, 28, 28))
    images = np.clip(images.astype(int) + np.random.default_rng(0).integers(0, 40, images.shape), 0, 255)
    options = StreamOptions(whiten_dims=32, shifts=((0, 0),), chunk_size=500, max_index_memory=n * 100)
    manifest = stream_build(tmp_path / "b", ArraySource(images.astype(np.uint8)), tiny_checkpoint(), options, log=None)
    assert (
        manifest["index_type"].startswith("IVF")
        and "PQ" in manifest["index_type"]
        and manifest["index_params"]["rerank_factor"] >= 10
    )
    assert manifest["index_params"]["bytes_per_vector"] <= 100
    assert manifest["index_params"]["tuned_recall_at_10"] >= 0.95
    engine = SearchEngine(load_bundle(tmp_path / "b"))
    queries = np.asarray(engine.bundle.segments[0].embeddings[:20])
    prepared = engine.index.search_space(queries)
    everything = engine.index.search_space(np.asarray(engine.bundle.segments[0].embeddings))
    distances, ids = engine.index.search(queries, 5)
    exact = ((prepared[:, None] - everything[ids]) ** 2).sum(-1) / 2  # cosine distance of what was returned
    np.testing.assert_allclose(distances, exact, atol=1e-5)  # re-ranked: exact distances, in order
    assert (np.diff(distances, axis=1) >= 0).all()
    # Re-ranking reads the search vectors kept beside the index: the embeddings as compared, row for row.
    kept = np.load(engine.bundle.segments[0].file(SEARCH_VECTORS_FILE))
    np.testing.assert_allclose(kept, everything, atol=1e-6)
    batch = engine.query_batch(images[:40].astype(np.uint8), k=5)
    singles = [engine.query(image.astype(np.uint8), k=5) for image in images[:40]]
    assert [[h.id for h in r.hits] for r in batch] == [[h.id for h in r.hits] for r in singles]
    # A bundle built before they were kept transforms the embeddings per query instead: same answers.
    older = tmp_path / "older"
    shutil.copytree(tmp_path / "b", older)
    (segment,) = load_bundle(older).segments
    segment.file(SEARCH_VECTORS_FILE).unlink()
    manifest = json.loads((older / "manifest.json").read_text())
    manifest["segments"][0]["files"].remove(SEARCH_VECTORS_FILE)
    del manifest["files"][f"segments/{segment.name}/{SEARCH_VECTORS_FILE}"]
    write_manifest(older, manifest)
    old_distances, old_ids = SearchEngine(load_bundle(older)).index.search(queries, 5)
    np.testing.assert_array_equal(old_ids, ids)
    np.testing.assert_allclose(old_distances, distances, atol=1e-6)


def write_shards(folder: Path, n: int, per_shard: int) -> Path:
    folder.mkdir()
    images, labels = synthetic_images(n, seed=3), synthetic_labels(n)
    shards = [
        write_shard(folder, i, images[s : s + per_shard], labels[s : s + per_shard])
        for i, s in enumerate(range(0, n, per_shard))
    ]
    write_collection_manifest(folder, shards, name="test", class_names=["a", "b", "c"])
    return folder


def test_shard_source_chunks_cover_every_row_and_resume_from_a_cursor(tmp_path):
    folder = write_shards(tmp_path / "shards", 250, 100)
    shards = ShardSource(folder)
    chunks = list(shards.chunks(64))
    assert [len(c) for c in chunks] == [64, 36, 64, 36, 50]  # never across a shard
    np.testing.assert_array_equal(np.concatenate([c.images for c in chunks]), synthetic_images(250, seed=3))
    later = list(shards.chunks(64, start=chunks[1].cursor))
    np.testing.assert_array_equal(later[0].images, chunks[2].images)


KILLED_BUILD = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, "tests")
    from conftest import tiny_checkpoint
    from aesearch.pipelines import stream
    from aesearch.pipelines.stream import StreamOptions, stream_build
    from aesearch.sources.shards import ShardSource
    done = []
    original = stream._State.save
    def save(self, path):
        original(self, path)
        done.append(self.rows)
        print(self.rows, flush=True)
        if len(done) == int(sys.argv[3]):
            os.kill(os.getpid(), signal.SIGKILL)  # kill -9 right after a chunk is recorded
    stream._State.save = save
    stream_build(sys.argv[2], ShardSource(sys.argv[1]), tiny_checkpoint(),
                 StreamOptions(index_type="flat", whiten_dims=32, chunk_size=40), log=None)
""")


def test_kill_9_then_same_command_resumes_after_last_finished_chunk(tmp_path):
    folder = write_shards(tmp_path / "shards", 200, 100)
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    run = [sys.executable, "-c", KILLED_BUILD, str(folder), str(tmp_path / "b")]
    killed = subprocess.run([*run, "2"], capture_output=True, text=True, env=env, timeout=120)
    assert killed.returncode == -signal.SIGKILL and killed.stdout.split() == ["40", "80"]
    assert not (tmp_path / "b").exists()  # nothing published
    resumed = subprocess.run([*run, "0"], capture_output=True, text=True, env=env, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.split() == ["100", "140", "180", "200"]  # finished chunks not redone (chunks end at shards)
    fresh = tmp_path / "fresh"
    stream_build(
        fresh,
        ShardSource(folder),
        tiny_checkpoint(),
        StreamOptions(index_type="flat", whiten_dims=32, chunk_size=40),
        log=None,
    )
    (a,), (b,) = load_bundle(tmp_path / "b").segments, load_bundle(fresh).segments
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    np.testing.assert_array_equal(a.records, b.records)


@pytest.mark.parametrize("bad", ["chunk", "tiny"])
def test_bad_stream_input_is_one_line(tmp_path, bad):
    from aesearch.errors import InvalidArgumentError

    options = StreamOptions(chunk_size=0 if bad == "chunk" else 10)
    with pytest.raises(InvalidArgumentError, match=r"chunk.size must be positive|at least 2 images"):
        stream_build(tmp_path / "b", source(300 if bad == "chunk" else 1), tiny_checkpoint(), options, log=None)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (StreamOptions(max_index_memory=1000), "max_index_memory 1000 B is too small for 300"),
        (StreamOptions(index_type="PQ157", whiten_dims=192), "FAISS refuses index type 'PQ157'"),
    ],
)
def test_impossible_index_is_refused_before_encoding(tmp_path, options, message):
    """The count and the search dimension are known up front: no hours of encoding before the error."""
    from aesearch.errors import InvalidArgumentError

    def encoder(images, want):
        raise AssertionError("encoded before the index was checked")

    with pytest.raises(InvalidArgumentError, match=message):
        stream_build(tmp_path / "b", source(), tiny_checkpoint(), options, encoder=encoder, log=None)
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--train"], "is a shard collection: pass --model"),
        (["--model", "{model}", "--cluster", "nonsense"], "is not a scheduler address"),
        (["--model", "{model}", "--max-index-memory", "lots"], "cannot read memory size"),
    ],
)
def test_build_index_from_shards_bad_input_is_one_line(tmp_path, extra, message):
    from click.testing import CliRunner

    from aesearch.interfaces.cli import cli
    from aesearch.model.checkpoint import save_checkpoint

    folder = write_shards(tmp_path / "shards", 50, 50)
    model = save_checkpoint(tmp_path / "m.safetensors", tiny_checkpoint())
    args = ["build-index", "--images", folder, "--index-dir", tmp_path / "b", *extra]
    result = CliRunner().invoke(cli, [str(a).format(model=model) for a in args])
    assert result.exit_code == 1 and message in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "b").exists()


def test_one_chunk_ahead_keeps_order_and_passes_errors_on():
    from aesearch.pipelines.stream import _one_ahead

    assert list(_one_ahead(iter(range(7)))) == list(range(7))

    def failing():
        yield 1
        raise OSError("shard 3 unreadable")

    ahead = _one_ahead(failing())
    assert next(ahead) == 1
    with pytest.raises(OSError, match="shard 3 unreadable"):
        next(ahead)


def test_read_rows_equals_fancy_indexing_and_maps_nothing(tmp_path):
    """Scattered rows of a file's map are read from the file (pread, runs of rows at once): the same
    rows as indexing gives, in any order, from a map, a view of its rows or a map opened read-only,
    and none of the file's pages left in the resident set."""
    from aesearch.memory import read_rows, read_unmapped

    array = np.lib.format.open_memmap(tmp_path / "a.npy", mode="w+", dtype=np.float32, shape=(5000, 3))
    array[:] = np.arange(15000, dtype=np.float32).reshape(5000, 3)
    array.flush()
    rows = np.sort(np.random.default_rng(0).choice(5000, 4500, replace=False))
    np.testing.assert_array_equal(read_rows(array, rows), array[rows])
    np.testing.assert_array_equal(read_rows(array, rows[::-1]), array[rows[::-1]])  # any order
    np.testing.assert_array_equal(read_rows(array, slice(10, 20)), array[10:20])
    assert read_rows(array, np.zeros(0, dtype=np.int64)).shape == (0, 3)
    read_only = np.load(tmp_path / "a.npy", mmap_mode="r")
    view = read_only[1000:3000]  # a view of rows: read from where it starts in the file
    np.testing.assert_array_equal(read_unmapped(view, np.array([0, 1, 2, 1999, 7])), view[[0, 1, 2, 1999, 7]])
    assert read_unmapped(np.arange(6.0).reshape(3, 2), np.array([2])) is None  # not a map: indexed as it is
    with pytest.raises(IndexError):
        read_unmapped(read_only, np.array([5000]))

    big = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.float32, shape=(16_384, 1024))
    big[:] = 1
    big.flush()
    del big
    stored = np.load(tmp_path / "big.npy", mmap_mode="r")
    before = _resident_file_pages()
    assert read_rows(stored, np.arange(0, 16_384, 16)).sum() == 1024 * 1024  # 1,024 rows across 64 MB
    assert _resident_file_pages() - before < 4 << 20  # through the map: most of the 64 MB


def _resident_file_pages() -> int:
    import re

    return int(re.search(r"RssFile:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) * 1024


def test_a_chunk_is_encoded_in_slices_with_the_vectors_of_one_batch():
    """encode_chunk works ENCODE_SLICE images at a time (working arrays reused from the heap): the
    vectors and the trust sample's errors are those of the whole chunk encoded at once, bit for bit."""
    from aesearch.model.runtime import NumpyAutoEncoder
    from aesearch.pipelines import builder

    autoencoder = NumpyAutoEncoder.from_checkpoint(tiny_checkpoint())
    images = synthetic_images(builder.ENCODE_SLICE + 300, seed=5)
    want = np.array([0, 7, builder.ENCODE_SLICE - 1, builder.ENCODE_SLICE, builder.ENCODE_SLICE + 299])
    vectors, errors = builder.encode_chunk(autoencoder, images, want, ((0, 0), (1, 1)))
    pixels = images.astype(np.float32) / np.float32(255)
    z, whole = autoencoder.embed(pixels, ((0, 0), (1, 1)))
    np.testing.assert_array_equal(vectors, whole)
    expected = ((autoencoder.decode(z[want]) - pixels[want]) ** 2).mean(axis=(1, 2))
    np.testing.assert_array_equal(errors, expected)


def test_a_model_of_another_size_builds_and_compacts_a_bundle_of_its_size(tmp_path):
    """The image shape is the model's: segments, loading and a compaction hold 32 x 32 images for a
    32 x 32 model, and images of another size are refused before the encoder sees them."""
    import torch

    from aesearch.errors import InvalidArgumentError
    from aesearch.model.checkpoint import Checkpoint
    from aesearch.model.network import AutoEncoder, ModelConfig
    from aesearch.pipelines.update import compact

    torch.manual_seed(0)
    model = AutoEncoder(ModelConfig(z_size=16, image_size=32))
    checkpoint = Checkpoint(model.weights(), model.config, {"recipe": "untrained"})
    images = np.pad(synthetic_images(60), ((0, 0), (2, 2), (2, 2)))  # (60, 32, 32)
    options = StreamOptions(index_type="flat", whiten_dims=8, chunk_size=25)
    stream_build(tmp_path / "b", ArraySource(images, name="big"), checkpoint, options, log=None)
    compact(tmp_path / "b")
    bundle = load_bundle(tmp_path / "b")
    assert bundle.image_shape == (32, 32) and bundle.segments[0].images.shape == (60, 32, 32)
    np.testing.assert_array_equal(bundle.images(np.arange(60)), images)
    with pytest.raises(InvalidArgumentError, match=r"images of \(28, 28\) pixels; the model reads \(32, 32\)"):
        stream_build(tmp_path / "c", ArraySource(synthetic_images(60)), checkpoint, options, log=None)


def test_an_unlabelled_shard_folder_builds(tmp_path):
    """Shards without labels (no labels files, no class names): a bundle with no classes, not an
    invalid manifest at the end of the build."""
    folder = tmp_path / "shards"
    folder.mkdir()
    images = synthetic_images(60, seed=5)
    shards = [write_shard(folder, i, images[s : s + 30], None) for i, s in enumerate((0, 30))]
    write_collection_manifest(folder, shards, name="unlabelled", class_names=[])
    options = StreamOptions(index_type="flat", shifts=((0, 0),), transform="none")
    manifest = stream_build(tmp_path / "b", ShardSource(folder), tiny_checkpoint(), options, log=None)
    assert manifest["count"] == 60 and manifest["class_names"] == []
    assert SearchEngine.load(tmp_path / "b").query(images[7], k=1).hits[0].id == 7


@pytest.mark.parametrize(("asked", "pooled"), [([], [[0, 0]]), (["--phase-pooling"], [[0, 0], [1, 1]])])
def test_a_photo_member_builds_shards_with_its_own_shifts_unless_asked(tmp_path, asked, pooled):
    """`build-index --images SHARDS --model` pools z as a folder build with that model does: not for a
    photo-framed member (it encoded every image twice, in a space its folder build never searched),
    over the grid phases when asked."""
    import torch
    from click.testing import CliRunner

    from aesearch.interfaces.cli import cli
    from aesearch.model.architecture import member_for
    from aesearch.model.checkpoint import Checkpoint, save_checkpoint
    from aesearch.model.network import AutoEncoder

    torch.manual_seed(0)
    model = AutoEncoder(member_for(32, 3, 16))
    path = save_checkpoint(tmp_path / "m.safetensors", Checkpoint(model.weights(), model.config, {"recipe": "x"}))
    folder = tmp_path / "shards"
    folder.mkdir()
    images = np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    write_collection_manifest(folder, [write_shard(folder, 0, images, None)], name="colour", class_names=[])
    args = ["build-index", "--images", folder, "--model", path, "--index-dir", tmp_path / "b", *asked]
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    engine = SearchEngine.load(tmp_path / "b")
    assert engine.bundle.manifest["embedding_shifts"] == pooled
    assert engine.query(images[7], k=1).hits[0].id == 7
