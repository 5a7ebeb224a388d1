"""The distributed path on a local Dask cluster of two workers: the same vectors as a plain run."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from conftest import synthetic_images, tiny_checkpoint

from aesearch.errors import InvalidArgumentError
from aesearch.pipelines.stream import StreamOptions, stream_build
from aesearch.sources.arrays import ArraySource
from aesearch.store.bundle import load_bundle

pytest.importorskip("dask.distributed")


def test_local_two_worker_cluster_gives_identical_vectors_and_answers(tmp_path):
    """Encoding on the workers, and the IVF+PQ filled by both workers and merged: the same bundle."""
    from aesearch.search.engine import SearchEngine

    images = np.resize(synthetic_images(400, seed=5), (1200, 28, 28))
    noisy = images.astype(int) + np.random.default_rng(1).integers(0, 40, images.shape)
    source = ArraySource(np.clip(noisy, 0, 255).astype(np.uint8))
    # A budget too small for full vectors: auto picks IVF+PQ, which the cluster fills in two shards.
    options = StreamOptions(whiten_dims=32, shifts=((0, 0),), chunk_size=100, max_index_memory=1200 * 100)
    stream_build(tmp_path / "plain", source, tiny_checkpoint(), options, log=None)
    on_cluster = StreamOptions(**{**options.__dict__, "cluster": "local"})
    stream_build(tmp_path / "cluster", source, tiny_checkpoint(), on_cluster, log=None)
    (a,), (b,) = load_bundle(tmp_path / "plain").segments, load_bundle(tmp_path / "cluster").segments
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    np.testing.assert_array_equal(a.records, b.records)
    assert "PQ" in a.meta["index_type"]
    # The same index: every inverted list holds the same ids in the same order, and an exhaustive search
    # (all lists probed) gives the same distances. (Not the same bytes: fast-scan packs codes in blocks of
    # 32, and the unused slots of a list's last block keep whatever the merge or the appends left there.)
    index_a, index_b = faiss.read_index(str(a.file("index.faiss"))), faiss.read_index(str(b.file("index.faiss")))
    lists_a, lists_b = faiss.extract_index_ivf(index_a).invlists, faiss.extract_index_ivf(index_b).invlists
    assert lists_a.nlist == lists_b.nlist
    for i in range(lists_a.nlist):
        size = lists_a.list_size(i)
        assert size == lists_b.list_size(i)
        ids_a = faiss.rev_swig_ptr(lists_a.get_ids(i), size).copy() if size else []
        ids_b = faiss.rev_swig_ptr(lists_b.get_ids(i), size).copy() if size else []
        assert list(ids_a) == list(ids_b)
    for index in (index_a, index_b):
        faiss.extract_index_ivf(index).nprobe = lists_a.nlist
    probes = np.asarray(a.embeddings[:50])
    prepared = SearchEngine.load(tmp_path / "plain").index.search_space(probes)
    found_a, found_b = index_a.search(prepared, 10), index_b.search(prepared, 10)
    np.testing.assert_array_equal(found_a[0], found_b[0])
    np.testing.assert_array_equal(found_a[1], found_b[1])
    queries = synthetic_images(20, seed=9)
    plain, cluster = SearchEngine.load(tmp_path / "plain"), SearchEngine.load(tmp_path / "cluster")
    assert (plain.search(plain.encode(queries), 5)[1] == cluster.search(cluster.encode(queries), 5)[1]).all()


@pytest.mark.parametrize("address", ["nonsense", "tcp://127.0.0.1:9"])
def test_bad_cluster_address_is_one_line(tmp_path, address):
    options = StreamOptions(index_type="flat", chunk_size=64, cluster=address)
    with pytest.raises(InvalidArgumentError, match="scheduler") as error:
        stream_build(tmp_path / "b", ArraySource(synthetic_images(10)), tiny_checkpoint(), options, log=None)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "b").exists()


def test_a_folder_of_image_files_builds_on_the_cluster_as_here(tmp_path):
    """`build-index --images FOLDER --cluster local`: files read here, encoded on the workers, unreadable
    ones listed; the same bundle as a plain build."""
    from click.testing import CliRunner
    from image_folders import write_image_folder

    from aesearch.interfaces.cli import cli
    from aesearch.model.checkpoint import save_checkpoint

    folder = write_image_folder(tmp_path / "pics")
    save_checkpoint(tmp_path / "model.safetensors", tiny_checkpoint())
    built = {}
    for name, extra in (("plain", []), ("cluster", ["--cluster", "local"])):
        args = [
            "build-index",
            "--images",
            str(folder.root),
            "--labels",
            "folders",
            "--chunk-size",
            "8",
            "--model",
            str(tmp_path / "model.safetensors"),
            "--whiten-dims",
            "32",
        ]
        result = CliRunner().invoke(cli, [*args, "--index-dir", str(tmp_path / name), *extra])
        assert result.exit_code == 0, result.output
        assert "Skipped 3 file(s)" in result.output
        built[name] = load_bundle(tmp_path / name)
    (a,), (b,) = built["plain"].segments, built["cluster"].segments
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    np.testing.assert_array_equal(a.records, b.records)
    assert a.paths() == b.paths() and built["plain"].class_names == built["cluster"].class_names


def test_a_colour_member_encodes_on_the_cluster_as_here(tmp_path):
    """A family member other than the seed (64x64 RGB, four stages) travels to the workers by its
    config and encodes there to the same vectors."""
    import torch

    from aesearch.model.checkpoint import Checkpoint
    from aesearch.model.network import AutoEncoder, ModelConfig

    torch.manual_seed(0)
    member = ModelConfig(image_size=64, channels=3, widths=(8, 8, 16, 16), z_size=24, framing="photo")
    checkpoint = Checkpoint(AutoEncoder(member).weights(), member, {"recipe": "untrained", "test_mse": 0.1})
    images = np.random.default_rng(2).integers(0, 256, (300, 64, 64, 3), dtype=np.uint8)
    options = StreamOptions(index_type="flat", shifts=((0, 0),), transform="none", chunk_size=64)
    stream_build(tmp_path / "plain", ArraySource(images), checkpoint, options, log=None)
    on_cluster = StreamOptions(**{**options.__dict__, "cluster": "local"})
    stream_build(tmp_path / "cluster", ArraySource(images), checkpoint, on_cluster, log=None)
    (a,), (b,) = load_bundle(tmp_path / "plain").segments, load_bundle(tmp_path / "cluster").segments
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    np.testing.assert_array_equal(a.images, images)
