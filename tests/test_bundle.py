"""Index bundles: round trip, integrity checks, and atomic replacement (old bundle never lost)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aesearch.errors import BundleError
from aesearch.model.checkpoint import save_checkpoint
from aesearch.store.bundle import load_bundle, read_manifest
from aesearch.store.manifest import MANIFEST, manifest_digest
from tests.conftest import folder_digest, make_bundle, tiny_checkpoint


def test_round_trip(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    manifest = bundle.manifest
    assert manifest["count"] == len(bundle) == 120
    assert manifest["z_size"] == 314 and manifest["metric"] == "l2" and manifest["index_type"] == "flat"
    assert manifest["encoder_sha256"] == bundle.checkpoint.encoder_sha256
    segment = {
        f"segments/base/{name}"
        for name in ("records.npy", "images.npy", "embeddings.npy", "paths.bin", "path_offsets.npy", "index.faiss")
    }
    assert set(manifest["files"]) == {"model.safetensors", "space/1/trust.json"} | segment
    assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())
    assert {"format_version", "package_version", "created", "model", "generation", "next_id"} <= set(manifest)
    images = bundle.images(bundle.live_ids())
    assert images.shape == (120, 28, 28) and images.dtype == np.uint8
    np.testing.assert_array_equal(bundle.live_ids(), np.arange(120))


def corrupt(bundle: Path, how: str) -> None:
    target = bundle / "segments" / "base" / "index.faiss"
    if how == "missing file":
        target.unlink()
    elif how == "truncated file":
        target.write_bytes(target.read_bytes()[:-10])
    elif how == "altered byte":
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    elif how == "no manifest":
        (bundle / MANIFEST).unlink()
    elif how == "garbage manifest":
        (bundle / MANIFEST).write_text("{not json")
    elif how in ("newer format", "not ours", "no checksums"):
        manifest = json.loads((bundle / MANIFEST).read_text())
        if how == "newer format":
            manifest["format_version"] = 99
        elif how == "not ours":
            manifest["format"] = "something-else"
        else:
            del manifest["files"]
            manifest["manifest_sha256"] = manifest_digest(manifest)  # consistent, so deeper checks run
        (bundle / MANIFEST).write_text(json.dumps(manifest))
    elif how in ("edited metric", "file outside the bundle"):
        manifest = json.loads((bundle / MANIFEST).read_text())
        if how == "edited metric":
            manifest["metric"] = "cosine"  # a plausible hand edit that would silently change results
        else:
            manifest["files"]["../../etc/passwd"] = {"sha256": "0" * 64, "bytes": 1}
            manifest["manifest_sha256"] = manifest_digest(manifest)
        (bundle / MANIFEST).write_text(json.dumps(manifest))
    elif how == "garbage model, checksum updated":  # past the checksum: the checkpoint's own checks
        from aesearch.store.bundle import file_checksum

        model = bundle / "model.safetensors"
        model.write_bytes(b"\0" * model.stat().st_size)
        manifest = json.loads((bundle / MANIFEST).read_text())
        manifest["files"]["model.safetensors"] = {"sha256": file_checksum(model), "bytes": model.stat().st_size}
        manifest["manifest_sha256"] = manifest_digest(manifest)
        (bundle / MANIFEST).write_text(json.dumps(manifest))
    elif how == "other encoder":
        # A valid checkpoint of another model, with the manifest's checksum updated to match it:
        # only the encoder check can catch this one.
        save_checkpoint(bundle / "model.safetensors", tiny_checkpoint(seed=9))
        manifest = json.loads((bundle / MANIFEST).read_text())
        from aesearch.store.bundle import file_checksum

        model = bundle / "model.safetensors"
        manifest["files"]["model.safetensors"] = {"sha256": file_checksum(model), "bytes": model.stat().st_size}
        manifest["manifest_sha256"] = manifest_digest(manifest)
        (bundle / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("missing file", "index.faiss is missing: rebuild"),
        ("truncated file", "index.faiss is damaged .* bytes"),
        ("altered byte", "index.faiss is damaged \\(its SHA-256"),
        ("no manifest", "has no manifest.json"),
        ("garbage manifest", "manifest.json is damaged"),
        ("newer format", "newer than this aesearch"),
        ("not ours", "not an aesearch index manifest"),
        ("no checksums", r"is invalid \(files: Field required\)"),
        ("other encoder", "does not match the index"),
        # the bundle's own model: rebuild the index, not "retrain with `aesearch train`" (new-user trial)
        ("garbage model, checksum updated", r"is not an aesearch checkpoint \(.*\): rebuild with `aesearch build"),
        ("edited metric", "manifest.json was edited or damaged"),
        ("file outside the bundle", "lists '../../etc/passwd', which is not a file of the bundle"),
    ],
)
def test_damaged_bundles_are_refused_in_one_line(bundle_copy, how, message):
    corrupt(bundle_copy, how)
    with pytest.raises(BundleError, match=message) as info:
        load_bundle(bundle_copy)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("cores", [1, 2, 3])
def test_checksums_on_several_cores_come_back_in_order(tmp_path, monkeypatch, cores):
    import hashlib

    from aesearch.store import bundle as store

    monkeypatch.setattr(store, "CORES", cores)
    paths = []
    for n, size in enumerate([10, 5_000_000, 0, 70_000, 3]):  # the biggest is hashed first, returned second
        paths.append(tmp_path / f"f{n}")
        paths[-1].write_bytes(np.random.default_rng(n).integers(0, 256, size, dtype=np.uint8).tobytes())
    assert store._sha256_many(paths) == [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


def test_missing_and_wrong_paths(tmp_path):
    with pytest.raises(BundleError, match=r"no index at .*run `aesearch build-index"):
        load_bundle(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(BundleError, match="is a file, not an index folder"):
        read_manifest(tmp_path / "file")
    # a folder of other files is not "rebuilt" there (a build would refuse to replace them)
    with pytest.raises(BundleError, match=r"not an aesearch index: pass the folder .* --index-dir NEW_FOLDER"):
        read_manifest(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match=r"not an aesearch index: rebuild with `aesearch build-index --index-dir"):
        read_manifest(tmp_path / "empty")
    # a manifest that cannot be read cannot name the folders it indexed: the advice says to add them
    (tmp_path / "empty" / "manifest.json").write_text("{")
    with pytest.raises(BundleError, match=r"is damaged .*rebuild with .* \(add --images DIR if it indexed your own"):
        read_manifest(tmp_path / "empty")


def test_a_checkpoint_that_does_not_match_is_refused(tiny_bundle, tmp_path):
    other = save_checkpoint(tmp_path / "other.safetensors", tiny_checkpoint(seed=5))
    with pytest.raises(BundleError, match=r"other\.safetensors does not match the index"):
        load_bundle(tiny_bundle, model=other)
    same = save_checkpoint(tmp_path / "same.safetensors", tiny_checkpoint(seed=0))
    assert load_bundle(tiny_bundle, model=same).checkpoint.encoder_sha256 == tiny_checkpoint().encoder_sha256


def test_rebuild_replaces_whole_and_leaves_nothing_behind(bundle_copy):
    make_bundle(bundle_copy, n=60, metric="cosine")
    assert load_bundle(bundle_copy).manifest["count"] == 60
    assert siblings(bundle_copy) == [bundle_copy.name]


def siblings(bundle: Path) -> list[str]:
    """What lies beside a bundle, but for its writer-lock file (kept: deleting lock files is racy)."""
    return sorted(p.name for p in bundle.parent.iterdir() if p.name != f".{bundle.name}.lock")


def test_failed_build_leaves_the_old_bundle_unchanged(bundle_copy, monkeypatch):
    before = folder_digest(bundle_copy)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("aesearch.store.segment.np.save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        make_bundle(bundle_copy, n=60)
    assert folder_digest(bundle_copy) == before
    assert siblings(bundle_copy) == [bundle_copy.name]
    load_bundle(bundle_copy)


KILLED_BUILD = """
import sys, time
import numpy as np
import aesearch.store.segment
from tests.conftest import make_bundle

real_save = np.save
def slow_save(*args, **kwargs):
    real_save(*args, **kwargs)
    print("writing", flush=True)
    time.sleep(60)  # killed here, half-way through writing the new bundle

aesearch.store.segment.np.save = slow_save
make_bundle(__import__("pathlib").Path(sys.argv[1]), n=60)
"""


def test_killed_build_leaves_the_old_bundle_loadable_and_unchanged(bundle_copy):
    before = folder_digest(bundle_copy)
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_BUILD, str(bundle_copy)], cwd=root, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert folder_digest(bundle_copy) == before
    assert load_bundle(bundle_copy).manifest["count"] == 120
    assert len(siblings(bundle_copy)) == 2, "the killed build's staging folder is expected beside the bundle"
    make_bundle(bundle_copy, n=60)  # the next build cleans up after the killed one
    assert siblings(bundle_copy) == [bundle_copy.name]


def test_a_build_never_replaces_a_folder_of_other_files_or_a_part_of_a_bundle(tmp_path, fake_data_dir):
    """--index-dir ~/Pictures emptied the folder, and --index-dir idx/segments broke idx: both refused."""
    from click.testing import CliRunner

    from aesearch.interfaces.cli import cli

    pictures = tmp_path / "pictures"
    pictures.mkdir()
    (pictures / "holiday.jpg").write_bytes(b"not to lose")
    bundle = make_bundle(tmp_path / "idx", n=40)
    before = folder_digest(bundle)
    common = ["--data-dir", str(fake_data_dir), "--model", str(bundle / "model.safetensors")]
    for target, message in [
        (pictures, "holds other files (holiday.jpg) and is not an aesearch index"),
        (bundle / "segments", f"is inside the index at {bundle}"),
        (bundle / "segments" / "new", f"is inside the index at {bundle}"),
    ]:
        result = CliRunner().invoke(cli, ["build-index", "--index-dir", str(target), *common])
        assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    assert (pictures / "holiday.jpg").read_bytes() == b"not to lose" and folder_digest(bundle) == before
