"""Folder sources: what is found, what is read, what is skipped and why; pool equals inline."""

from __future__ import annotations

import os

import numpy as np
import pytest
from image_folders import write_image_folder

from aesearch.errors import InvalidArgumentError
from aesearch.sources.folders import collection_roots, content_hash, folder_label, read_files, scan
from aesearch.sources.preprocess import preprocess


@pytest.fixture
def folder(tmp_path):
    return write_image_folder(tmp_path / "pictures")


def read_all(roots, files, **kwargs):
    chunks = list(read_files(roots, files, **kwargs))
    images = np.concatenate([c.images for c in chunks]) if chunks else np.zeros((0, 28, 28), np.uint8)
    return [f for c in chunks for f in c.files], images, [s for c in chunks for s in c.skipped], chunks


def test_scan_finds_images_by_name_recursively(folder):
    found = scan(collection_roots([folder.root]))
    paths = [f.path for f in found.files]
    assert sorted(paths) == sorted([*folder.images, *folder.broken]) == paths
    assert all(f.size == (folder.root / f.path).stat().st_size for f in found.files)
    assert "notes.txt" not in paths and ".hidden.png" not in paths


def test_read_gives_preprocessed_images_hashes_and_reasons(folder):
    roots = collection_roots([folder.root])
    files, images, skipped, _ = read_all(roots, scan(roots).files, workers=1)
    assert sorted(s.path for s in skipped) == folder.broken
    reasons = {s.path: s.reason for s in skipped}
    assert "empty" in reasons["broken/empty.png"] and "not an image" in reasons["broken/text.png"]
    assert "truncated or damaged" in reasons["broken/truncated.png"]
    assert all("\n" not in r for r in reasons.values())
    for file, image in zip(files, images, strict=True):
        data = (folder.root / file.path).read_bytes()
        expected = np.round(preprocess(folder.root / file.path) * 255).astype(np.uint8)
        assert np.array_equal(image, expected), file.path
        assert file.size == len(data)
    by_path = dict(zip([f.path for f in files], images, strict=True))
    assert np.array_equal(by_path["ellipse/e-000.png"], folder.images["ellipse/e-000.png"]), "28x28 PNG unchanged"


def test_worker_pool_equals_inline(folder, monkeypatch):
    from aesearch.sources import folders

    monkeypatch.setattr(folders, "_INLINE_BELOW", 0)
    roots = collection_roots([folder.root])
    files = scan(roots).files
    inline = read_all(roots, files, workers=1, batch=5)
    pooled = read_all(roots, files, workers=2, batch=5)
    assert inline[0] == pooled[0] and np.array_equal(inline[1], pooled[1]) and inline[2] == pooled[2]
    assert np.array_equal(np.concatenate([c.hashes for c in inline[3]]), np.concatenate([c.hashes for c in pooled[3]]))
    assert len(pooled[3]) == -(-len(files) // 5), "one chunk per batch, in order"


def test_vanished_and_unreadable_files_are_skipped(folder):
    roots = collection_roots([folder.root])
    files = scan(roots).files
    (folder.root / "ellipse/e-000.png").unlink()  # vanished between the scan and the read
    _, _, skipped, _ = read_all(roots, files, workers=1)
    assert ("ellipse/e-000.png", "vanished during the scan") in [(s.path, s.reason) for s in skipped]
    if os.geteuid() != 0:  # root reads everything
        (folder.root / "ring/r-002.png").chmod(0)
        _, _, skipped, _ = read_all(roots, scan(roots).files, workers=1)
        assert "permission denied" in {s.reason for s in skipped}


def test_images_from_list_and_labels(tmp_path, folder):
    listing = tmp_path / "list.txt"
    listing.write_text(
        "# two files and a missing one\npictures/ellipse/e-000.png\n\npictures/missing.png\n"
        f"{folder.root / 'ring/r-002.png'}\n"
    )
    found = scan(collection_roots(images_from=listing))
    assert [f.path for f in found.files] == ["pictures/ellipse/e-000.png", "pictures/ring/r-002.png"]
    assert [(s.path, s.reason) for s in found.skipped] == [("pictures/missing.png", "no such file")]
    assert folder_label("ring/deep/r-003.jpg") == "ring" and folder_label("loose-000.png") is None


@pytest.mark.parametrize(
    ("images", "images_from", "message"),
    [
        (["nowhere"], None, "no such folder"),
        ([""], None, "an `images` folder is empty text"),
        (["pics", "pics/ring/"], None, r"pics/ring is inside .*pics, whose images it already holds: give `images` "),
        (["pics/ring", "pics"], None, r"pics/ring is inside .*pics, whose images it already holds"),
        ([], None, "give at least one `images` FOLDER or an `images_from` LIST"),
        ([], "nowhere.txt", "no such list"),
    ],
)
def test_bad_roots_get_one_line(tmp_path, monkeypatch, images, images_from, message):
    (tmp_path / "pics/ring").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidArgumentError, match=message):
        collection_roots(images, images_from)


def test_content_hash_is_of_the_bytes():
    assert content_hash(b"abc") == content_hash(b"abc") != content_hash(b"abd")
    assert len(content_hash(b"")) == 16
