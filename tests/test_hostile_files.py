"""Hostile files in a user's folders: what is found, what is read, and that nothing hangs or leaks.

Named pipes, devices and sockets named like images; links to them, to nothing, to themselves;
files that grow, change, vanish or turn into folders between the scan and the read; reads that
block; names that are not UTF-8 or hold a newline; a writer killed with its worker pool mid-read.
Each is indexed or skipped with a one-line reason; none blocks, reads without bound, or prints a
traceback. A hang is a failure, not a stuck run: subprocesses have a timeout, and in-process tests
dump their stacks and exit after 60 s (the `guard` fixture).
"""

from __future__ import annotations

import faulthandler
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from image_folders import png_bytes

from aesearch.errors import AesearchError, BundleError, InvalidArgumentError
from aesearch.interfaces.cli import cli
from aesearch.pipelines.collection import build_from_folders
from aesearch.pipelines.writer import Collection
from aesearch.search.engine import SearchEngine
from aesearch.search.index import IndexSpec
from aesearch.sources import folders
from aesearch.sources.folders import collection_roots, image_file_problem, read_files, scan
from aesearch.store.bundle import load_bundle
from aesearch.store.lock import writer_lock
from aesearch.store.paths import shown
from tests.conftest import synthetic_images

REPO = Path(__file__).resolve().parents[1]
# A UTF-8 terminal that refuses what is not UTF-8 (strict), as a user's is: printing a lone
# surrogate there raises UnicodeEncodeError.
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONIOENCODING": "utf-8:strict", "LC_ALL": "C.UTF-8"}
PIPE = "is a named pipe (FIFO): only regular files are read as images"


@pytest.fixture
def guard():
    faulthandler.dump_traceback_later(60, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def pngs(n: int, seed: int) -> list[bytes]:
    return [png_bytes(image) for image in synthetic_images(n, seed=seed)]


def write(path: Path | bytes, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def build(root: Path, index: Path, model: Path, workers: int = 1) -> list:
    _, skipped = build_from_folders(
        index,
        images=[root],
        model=model,
        spec=IndexSpec("flat", "cosine", {}, "none"),
        shifts=((0, 0),),
        workers=workers,
        log=None,
    )
    return skipped


def reasons(skipped, root: Path) -> dict[str, str]:
    """path relative to root -> reason (a scan lists full paths, a read relative ones)."""
    return {os.path.relpath(s.path, root) if os.path.isabs(s.path) else s.path: s.reason for s in skipped}


def read(root: Path, files=None, **kwargs):
    roots = collection_roots([root])
    chunks = list(read_files(roots, scan(roots).files if files is None else files, **kwargs))
    return [f.path for c in chunks for f in c.files], reasons([s for c in chunks for s in c.skipped], root)


def cli_run(*args, timeout: float = 60) -> subprocess.CompletedProcess:
    """The real command line, in a process of its own: a hang is a timeout, not a stuck test run."""
    return subprocess.run([sys.executable, "-m", "aesearch", *args], capture_output=True, env=ENV, timeout=timeout)


def text(result: subprocess.CompletedProcess) -> str:
    out = result.stdout.decode("utf-8") + result.stderr.decode("utf-8")  # strict: the output is UTF-8
    assert "Traceback" not in out, out
    return out


# --- 1. only regular files are read ---

API_SYNC = """
import json, sys
from aesearch.sources import folders
from aesearch import Collection
folders._INLINE_BELOW = 0  # the worker pool, however few files
report = Collection.open(sys.argv[1], workers=2).sync()
print(json.dumps([sorted(report.added), sorted(s.reason for s in report.skipped)]))
"""


def test_pipes_devices_and_sockets_named_as_images_are_skipped_and_block_nothing(tmp_path, model, monkeypatch):
    root = tmp_path / "pics"
    for name, data in zip(["a.png", "b.png", "sub/c.png"], pngs(3, seed=1), strict=True):
        write(root / name, data)
    os.mkfifo(root / "fifo.png")
    os.mkfifo(root / "sub/fifo2.png")
    (root / "zero.png").symlink_to("/dev/zero")  # endless: read until memory ran out
    (root / "to-fifo.png").symlink_to(root / "fifo.png")
    monkeypatch.chdir(root)  # a socket's path is at most 108 bytes: bound by a relative name
    server = socket.socket(socket.AF_UNIX)
    server.bind("sock.png")
    only = "only regular files are read as images"
    expected = {
        "fifo.png": PIPE,
        "sub/fifo2.png": PIPE,
        "sock.png": f"is a socket: {only}",
        "zero.png": f"links to a character device: {only}",
        "to-fifo.png": f"links to a named pipe (FIFO): {only}",
    }
    index = tmp_path / "idx"
    try:
        built = cli_run("build-index", "--images", str(root), "--model", str(model), "--index-dir", str(index))
        assert built.returncode == 0 and "Done: 3 images" in text(built)
        for name, why in expected.items():
            assert f"{root / name}: {why}\n" in text(built)
        for args in (["sync"], ["sync", "--dry-run"], ["add", str(root / "sub")], ["add", str(root)]):
            result = cli_run(*args, "--index-dir", str(index))
            assert result.returncode == 0 and "0 added, 0 changed, 0 moved, 0 removed" in text(result), args
            assert PIPE in text(result), args
        write(root / "sub/d.png", pngs(1, seed=2)[0])
        api = subprocess.run(
            [sys.executable, "-c", API_SYNC, str(index)], capture_output=True, text=True, env=ENV, timeout=60
        )
        assert api.returncode == 0, api.stderr
        assert json.loads(api.stdout) == [["sub/d.png"], sorted(expected.values())]
    finally:
        server.close()
    assert sorted(load_bundle(index).path_of(int(i)) for i in load_bundle(index).live_ids()) == [
        "a.png",
        "b.png",
        "sub/c.png",
        "sub/d.png",
    ]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_file_replaced_after_the_scan_is_checked_again_when_it_is_read(tmp_path, monkeypatch, guard, workers):
    monkeypatch.setattr(folders, "_INLINE_BELOW", 0)
    monkeypatch.setattr(folders, "MAX_FILE_BYTES", 16 * 1024)
    root = tmp_path / "pics"
    for name, data in zip("abcdefg", pngs(7, seed=3), strict=True):
        write(root / f"{name}.png", data)
    files = scan(collection_roots([root])).files
    for name in "bcdef":
        (root / f"{name}.png").unlink()
    os.mkfifo(root / "b.png")  # opened blocking, this waited for a writer forever
    (root / "c.png").mkdir()
    (root / "d.png").symlink_to("/dev/zero")
    (root / "e.png").write_bytes(b"\0" * 40 * 1024)  # grew past the limit after the scan
    # f.png vanished
    paths, why = read(root, files, workers=workers, batch=2)
    assert paths == ["a.png", "g.png"]
    assert why == {
        "b.png": PIPE,
        "c.png": "is a folder: only regular files are read as images",
        "d.png": "is a character device: only regular files are read as images",
        "e.png": "is 40 KiB, over the 16 KiB an image file may have: not read",
        "f.png": "vanished during the scan",
    }


def test_a_list_of_paths_holds_the_file_systems_bytes_and_its_pipes_are_skipped(tmp_path):
    root = tmp_path / "pics"
    for name, data in zip([b"a.png", b"w\xff.png"], pngs(2, seed=20), strict=True):
        write(bytes(root) + b"/" + name, data)
    os.mkfifo(root / "fifo.png")
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"pics/a.png\npics/w\xff.png\npics/fifo.png\npics\n")
    found = scan(collection_roots(images_from=listing))
    assert [f.path for f in found.files] == ["pics/a.png", os.fsdecode(b"pics/w\xff.png")]
    folder = "is a folder: only regular files are read as images"
    assert reasons(found.skipped, tmp_path) == {"pics/fifo.png": PIPE, "pics": folder}
    os.mkfifo(tmp_path / "fifo-list.txt")  # never opened: it would wait for a writer
    with pytest.raises(InvalidArgumentError, match=r"fifo-list\.txt is not a file: give `images_from` a text file"):
        collection_roots(images_from=tmp_path / "fifo-list.txt")


# --- 2. every read is bounded in bytes and in time ---


def test_a_file_over_the_size_limit_is_never_read(tmp_path, monkeypatch):
    root = tmp_path / "pics"
    for name, data in zip(["a.png", "b.png"], pngs(2, seed=4), strict=True):
        write(root / name, data)
    with open(root / "sparse.png", "wb") as f:
        f.truncate(10 * 1024**3)  # 10 GiB that take no disk: a sparse file with an image's name
    monkeypatch.setattr(folders, "_read_regular", None)  # the scan alone must leave it out: nothing is read
    found = scan(collection_roots([root]))
    assert [f.path for f in found.files] == ["a.png", "b.png"]
    limit = "is 10 GiB, over the 256 MiB an image file may have: not read"
    assert reasons(found.skipped, root) == {"sparse.png": limit}


def test_a_file_that_changes_while_it_is_read_is_skipped(tmp_path, guard, monkeypatch):
    root = tmp_path / "pics"
    for name, data in zip(["a.png", "grows.png"], pngs(2, seed=5), strict=True):
        write(root / name, data)
    (root / "status.png").symlink_to("/proc/self/status")  # says 0 bytes, holds more: read 1 byte, not all
    original = folders._read_at_most

    def written_meanwhile(fd, n):
        data = original(fd, n)
        if os.readlink(f"/proc/self/fd/{fd}").endswith("grows.png"):
            with open(f"/proc/self/fd/{fd}", "ab") as f:  # another program appends, as a copy in progress does
                f.write(b"more")
        return data

    monkeypatch.setattr(folders, "_read_at_most", written_meanwhile)
    paths, why = read(root, workers=1)
    changed = "changed while being read (still being written?): sync again once it is complete"
    assert paths == ["a.png"] and why == {"grows.png": changed, "status.png": changed}


@pytest.mark.parametrize("workers", [1, 2])
def test_a_read_that_blocks_is_given_up_after_the_time_limit(tmp_path, monkeypatch, guard, workers):
    monkeypatch.setattr(folders, "_INLINE_BELOW", 0)
    monkeypatch.setattr(folders, "MAX_READ_SECONDS", 0.2)
    root = tmp_path / "pics"
    for name, data in zip(["a.png", "hung.png", "z.png"], pngs(3, seed=6), strict=True):
        write(root / name, data)
    original = folders._read_regular

    def hanging(full, limit):
        if full.endswith("hung.png"):
            time.sleep(60)  # a read on a dead network disk: interrupted by the alarm, never returns by itself
        return original(full, limit)

    monkeypatch.setattr(folders, "_read_regular", hanging)
    handler = signal.getsignal(signal.SIGALRM)
    paths, why = read(root, workers=workers)
    assert paths == ["a.png", "z.png"]
    assert why == {"hung.png": "took longer than 0.2 s to read (a hung or very slow disk?): not read"}
    assert signal.getsignal(signal.SIGALRM) is handler and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


# --- 3. no worker outlives its parent or keeps the writer lock ---

_REAL_READ_BATCH = folders._read_batch


def _killed_on_crash_png(base, items, config):
    """A worker's batch that dies as one killed by the OOM killer, or a decoder crash, would."""
    if any(path.endswith("crash.png") for _, path in items):
        os.kill(os.getpid(), signal.SIGKILL)
    return _REAL_READ_BATCH(base, items, config)


def test_a_worker_that_dies_stops_the_sync_in_one_line_and_changes_nothing(tmp_path, model, monkeypatch, guard):
    root, index = tmp_path / "pics", tmp_path / "idx"
    for name, data in zip(["a.png", "b.png", "crash.png"], pngs(3, seed=18), strict=True):
        write(root / name, data)
    build(root, index, model)
    manifest = (index / "manifest.json").read_bytes()
    for name, data in zip(["a.png", "crash.png"], pngs(5, seed=19)[3:], strict=True):
        write(root / name, data)
    monkeypatch.setattr(folders, "_INLINE_BELOW", 0)
    monkeypatch.setattr(folders, "_read_batch", _killed_on_crash_png)
    with pytest.raises(AesearchError, match="a process reading images died") as error:
        Collection.open(index, workers=2).sync()
    assert "from a.png on" in str(error.value), "the batch the dead worker may have been reading, by its first file"
    assert (index / "manifest.json").read_bytes() == manifest, "nothing published"
    monkeypatch.setattr(folders, "_read_batch", _REAL_READ_BATCH)
    assert sorted(Collection.open(index, workers=2).sync().changed) == ["a.png", "crash.png"]


KILLED_WRITER = """
import os, sys, time
from pathlib import Path
from aesearch.sources import folders
from aesearch.store.lock import writer_lock

index, root, pids = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
folders._INLINE_BELOW = 0
folders.MAX_READ_SECONDS = 0  # no time limit: the reads below block for as long as their process lives

def blocked(base, items, config):  # a worker's batch
    (pids / str(os.getpid())).touch()
    open(root / "fifo", "rb")  # a plain open of a pipe without a writer: blocks, as every read once did
folders._read_batch = blocked
with writer_lock(index):
    files = folders.scan([root]).files
    list(folders.read_files([root], files, workers=2, batch=1))
"""


def _alive(pid: int) -> bool:
    """pid is a process that runs (a zombie, dead but not yet reaped by whoever adopted it, is not)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return status.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc to see which workers live")
def test_a_writer_killed_mid_read_leaves_no_worker_and_no_lock(tmp_path):
    root, pids, index = tmp_path / "pics", tmp_path / "pids", tmp_path / "idx"
    for name, data in zip(["a.png", "b.png", "c.png"], pngs(3, seed=7), strict=True):
        write(root / name, data)
    os.mkfifo(root / "fifo")
    pids.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(index), str(root), str(pids)], env=ENV, stderr=subprocess.PIPE
    )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(workers) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
            workers = [int(p.name) for p in pids.iterdir()]
        assert len(workers) == 2, proc.stderr.read().decode() if proc.poll() is not None else "no worker started"
        with pytest.raises(BundleError, match=f"being updated by process {proc.pid}"), writer_lock(index):
            pass
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    stray = [pid for pid in workers if _alive(pid)]
    for pid in stray:  # not left behind by a failing run
        os.kill(pid, signal.SIGKILL)
    assert not stray, "workers outlived the writer"
    with writer_lock(index):  # at once: no worker holds the dead writer's lock
        pass


def test_a_process_forked_by_a_writer_never_holds_its_lock(tmp_path):
    index = tmp_path / "idx"
    started, ready = os.pipe()
    with writer_lock(index):
        child = os.fork()
        if child == 0:  # the child lives on after its parent let the lock go
            try:
                os.write(ready, b"1")  # the fork is complete (its handlers have run)
                time.sleep(30)
            finally:
                os._exit(0)
        assert os.read(started, 1) == b"1"
    os.close(started)
    os.close(ready)
    try:
        with writer_lock(index):  # the lock is free though the child that shared it lives
            pass
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


# --- 4. any file name a file system allows ---

NAMES = [
    os.fsdecode(b"x\xff.png"),
    "new\nline.png",
    "n" * 251 + ".png",
    "with  spaces .png",
    "emoji 🙂 ünï.png",
    "plain.png",
]


def test_names_that_are_not_utf8_or_hold_a_newline_are_indexed_found_moved_and_removed(tmp_path, model):
    root, index = tmp_path / "pics", tmp_path / "idx"
    for name, data in zip(NAMES, pngs(len(NAMES), seed=8), strict=True):
        write(root / name, data)
    assert build(root, index, model) == []
    ids = {load_bundle(index).path_of(int(i)): int(i) for i in load_bundle(index).live_ids()}
    assert sorted(ids) == sorted(NAMES)
    report = Collection.open(index, workers=1).sync()
    assert report.changes == 0 and report.unchanged == len(NAMES) and report.skipped == []

    engine = SearchEngine.load(index)
    for name in NAMES:
        hit = engine.query((root / name).read_bytes(), k=1).hits[0]
        assert hit.path == name and hit.id == ids[name] and os.path.exists(os.path.join(root, hit.path))

    moved = os.fsdecode(b"folder \xfe/x\xff\n.png")
    os.makedirs(root / os.path.dirname(moved))
    os.rename(root / NAMES[0], root / moved)
    report = Collection.open(index, workers=1).sync()
    assert report.moved == [(NAMES[0], moved)] and report.changes == 1
    assert load_bundle(index).path_of(ids[NAMES[0]]) == moved, "a moved file keeps its id"

    assert Collection.open(index).remove([NAMES[1]]) == [ids[NAMES[1]]]  # by its path, newline and all
    # or as a table lists it (undecodable bytes as \xff, a newline as \n): copied from the screen
    assert Collection.open(index).remove(["folder \\xfe/x\\xff\\n.png"]) == [ids[NAMES[0]]]
    os.unlink(root / NAMES[1])
    os.unlink(root / moved)
    report = Collection.open(index, workers=1).sync()
    assert report.removed == [] and report.changes == 0  # both removed by name already
    assert sorted(load_bundle(index).path_of(int(i)) for i in load_bundle(index).live_ids()) == sorted(NAMES[2:])


def test_the_command_line_prints_any_name_on_one_line_and_its_json_is_json(tmp_path, model):
    root, index = tmp_path / "pics", tmp_path / "idx"
    for name, data in zip(["a.png", "b.png"], pngs(2, seed=9), strict=True):
        write(root / name, data)
    build(root, index, model)
    new = pngs(2, seed=10)
    write(bytes(root) + b"/added \xfe.png", new[0])
    write(bytes(root) + b"/bad\xff\nname.png", b"not an image")
    result = cli_run("sync", "--index-dir", str(index), "--json")
    assert result.returncode == 0, text(result)
    report = json.loads(result.stdout)
    assert report["added"] == [os.fsdecode(b"added \xfe.png")]
    assert report["skipped"][0]["path"] == os.fsdecode(b"bad\xff\nname.png")

    result = cli_run("sync", "--index-dir", str(index))
    assert result.returncode == 0
    (line,) = [line for line in text(result).splitlines() if "bad" in line]
    assert line.startswith("  bad\\xff\\nname.png: is not an image this tool can read")

    write(bytes(root) + b"/later\xff.png", new[1])
    result = cli_run("add", bytes(root) + b"/later\xff.png", "--index-dir", str(index))
    assert result.returncode == 0 and "1 added" in text(result)
    result = cli_run("add", bytes(root) + b"/bad\xff\nname.png", "--index-dir", str(index))
    assert result.returncode == 1 and "bad\\xff\\nname.png: it is not an image" in text(result)
    assert len(text(result).strip().splitlines()) == 1
    result = cli_run("add", bytes(root) + b"/gone\xff.png", "--index-dir", str(index))
    assert result.returncode == 1 and "no such file: " + shown(os.fsdecode(bytes(root) + b"/gone\xff.png")) in text(
        result
    )


# --- 5. one definition of an image file ---


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("a.png", None),
        ("deep/er/A.JPEG", None),
        ("x.tiff", None),
        (".hidden.png", "is a hidden file"),
        ("photo.png.bak", "is not named as an image file"),
        ("noext", "is not named as an image file"),
        ("png", "is not named as an image file"),
        ("ok/.trash/in.png", "is in a hidden folder (.trash)"),
        (os.fsdecode(b"ok/.t\xff/in.png"), "is in a hidden folder (.t\\xff)"),
    ],
)
def test_image_file_problem(path, problem):
    found = image_file_problem(path)
    assert found is None if problem is None else found.startswith(problem)


def test_add_indexes_only_what_sync_would_keep(tmp_path, model, guard):
    root, index = tmp_path / "pics", tmp_path / "idx"
    data = pngs(8, seed=11)
    for name, image in zip(["a.png", "b.png"], data[:2], strict=True):
        write(root / name, image)
    build(root, index, model)
    unnamed = "is not named as an image file"
    others = {
        ".hidden.png": "is a hidden file",
        "photo.png.bak": unnamed,
        "noext": unnamed,
        ".secret/in.png": "is in a hidden folder (.secret)",
    }
    for name, image in zip([*others, "ok.png", "new/n.png"], data[2:], strict=True):
        write(root / name, image)
    os.mkfifo(root / "new/fifo.png")
    (root / "loop.png").symlink_to("loop.png")
    (root / "dangling.png").symlink_to("nothing.png")
    runner = CliRunner()
    refusals = {
        **others,
        ".secret": "is a hidden folder",
        "loop.png": "is a symbolic link loop",
        "dangling.png": "is a symbolic link to a file that does not exist",
        "new/fifo.png": PIPE,
    }
    for name, problem in refusals.items():
        result = runner.invoke(cli, ["add", str(root / name), "--index-dir", str(index)])
        assert result.exit_code == 1 and f"cannot add {root / name}: it {problem}" in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    report = Collection.open(index, workers=1).add_files([root / name for name in [*others, "ok.png", "loop.png"]])
    assert report.added == ["ok.png"] and report.changes == 1
    assert {s.path: s.reason.split(":")[0].split(" (")[0] for s in report.skipped} == {
        **{name: problem.split(" (")[0] for name, problem in others.items()},
        "loop.png": "is a symbolic link loop",
    }
    # A file given twice (itself and in its folder): added once.
    report = Collection.open(index, workers=1).add_files([root / "new", root / "new/n.png"])
    assert report.added == ["new/n.png"] and reasons(report.skipped, root) == {"new/fifo.png": PIPE}
    report = Collection.open(index, workers=1).sync()
    assert report.changes == 0 and report.unchanged == 4, "sync keeps what add added, and adds nothing add refused"


# --- 6. more hostile cases ---


def test_empty_and_zero_pixel_images_are_skipped_with_a_reason(tmp_path):
    root = tmp_path / "pics"
    write(root / "a.png", pngs(1, seed=12)[0])
    write(root / "empty.png", b"")
    header = bytearray(pngs(1, seed=12)[0][:33])  # signature and IHDR of a real PNG
    header[16:24] = bytes(8)  # width and height 0 (the CRC no longer matches either)
    write(root / "zero-pixels.png", bytes(header) + b"\0\0\0\0IEND\xae\x42\x60\x82")
    paths, why = read(root, workers=1)
    assert paths == ["a.png"] and set(why) == {"empty.png", "zero-pixels.png"}
    assert why["empty.png"].startswith("is empty (0 bytes)")
    assert all("\n" not in r and "Traceback" not in r for r in why.values())


def test_an_image_over_the_pixel_limit_is_skipped_with_advice_a_collection_can_follow(tmp_path):
    """The reason said "raise the limit (`max_pixels`)": no command that reads a collection has such
    an option (new-user trial)."""
    from test_preprocess import huge_png_header

    root = tmp_path / "pics"
    write(root / "a.png", pngs(1, seed=12)[0])
    write(root / "big.png", huge_png_header(10_000, 8_000))
    paths, why = read(root, workers=1)
    assert paths == ["a.png"]
    reason = "is 10000x8000 = 80.0 megapixels, over the limit of 50.0 megapixels: downscale it to index it"
    assert why == {"big.png": reason}


def test_a_root_through_links_and_with_a_trailing_slash_is_one_root(tmp_path, model):
    real = tmp_path / "real"
    for name, data in zip(["a.png", "b.png"], pngs(2, seed=13), strict=True):
        write(real / name, data)
    (tmp_path / "link1").symlink_to(real)
    (tmp_path / "link2").symlink_to(tmp_path / "link1")  # a link to a link
    index = tmp_path / "idx"
    build_from_folders(
        index,
        images=[f"{tmp_path / 'link2'}/"],
        model=model,
        spec=IndexSpec("flat", "cosine", {}),
        shifts=((0, 0),),
        workers=1,
        log=None,
    )
    assert load_bundle(index).manifest["collection"]["roots"] == [str(real)]
    with pytest.raises(InvalidArgumentError, match="the same folder is given twice"):
        collection_roots([tmp_path / "link2", f"{real}/"])
    write(real / "c.png", pngs(3, seed=13)[2])
    assert Collection.open(index, workers=1).add_files([f"{tmp_path / 'link2'}/"]).added == ["c.png"]
    assert Collection.open(index, workers=1).sync().changes == 0


def test_names_and_paths_at_the_file_systems_limits(tmp_path, model):
    """A 255-byte name is indexed; a folder past Linux's 4096-byte path limit cannot even be listed:
    it is skipped with a reason, and its indexed files are kept rather than read as deleted."""
    root, index = tmp_path / "pics", tmp_path / "idx"
    for name, data in zip(["a.png", "n" * 251 + ".png"], pngs(2, seed=14), strict=True):
        write(root / name, data)
    build(root, index, model)
    fd = os.open(root, os.O_RDONLY)
    depth = 0
    try:
        while len(str(root)) + depth * 201 < 4200:  # mkdir at a dir_fd: no path is ever spelled out whole
            os.mkdir("d" * 200, dir_fd=fd)
            next_fd = os.open("d" * 200, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd, depth = next_fd, depth + 1
        with open(os.open("deep.png", os.O_WRONLY | os.O_CREAT, dir_fd=fd), "wb") as f:
            f.write(pngs(3, seed=14)[2])
    finally:
        os.close(fd)
    report = Collection.open(index, workers=1).sync()
    assert report.changes == 0 and report.unchanged == 2
    (too_long,) = report.skipped
    assert "cannot list this folder" in too_long.reason and "\n" not in too_long.reason


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file whatever its permissions")
def test_a_file_whose_permissions_drop_between_scan_and_read_is_kept_in_the_index(tmp_path, model):
    root, index = tmp_path / "pics", tmp_path / "idx"
    for name, data in zip(["a.png", "b.png"], pngs(2, seed=15), strict=True):
        write(root / name, data)
    build(root, index, model)
    (root / "b.png").write_bytes(pngs(3, seed=15)[2])
    (root / "b.png").chmod(0)
    try:
        report = Collection.open(index, workers=1).sync()
    finally:
        (root / "b.png").chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert report.changes == 0 and reasons(report.skipped, root) == {"b.png": "permission denied"}
    assert sorted(load_bundle(index).path_of(int(i)) for i in load_bundle(index).live_ids()) == ["a.png", "b.png"]


def test_a_read_refused_mid_sync_keeps_the_file_and_the_bundle(tmp_path, model, monkeypatch):
    """The same as above, for any user: the open itself is refused, as it is once permissions drop."""
    root, index = tmp_path / "pics", tmp_path / "idx"
    for name, data in zip(["a.png", "b.png"], pngs(2, seed=16), strict=True):
        write(root / name, data)
    build(root, index, model)
    manifest = (index / "manifest.json").read_bytes()
    (root / "b.png").write_bytes(pngs(3, seed=16)[2])
    real_open = os.open

    def refusing(path, flags, *args, **kwargs):
        if str(path).endswith("b.png") and not flags & os.O_WRONLY:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing)
    report = Collection.open(index, workers=1).sync()
    assert report.changes == 0 and reasons(report.skipped, root) == {"b.png": "permission denied"}
    assert (index / "manifest.json").read_bytes() == manifest, "nothing published"


def test_a_folder_named_as_an_image_is_looked_into_and_a_looping_link_to_a_folder_is_not(tmp_path, guard):
    root = tmp_path / "pics"
    write(root / "a.png", pngs(1, seed=17)[0])
    (root / "loop").symlink_to("loop")  # a link to a folder is not followed, a looping one neither
    (root / "dir.png").mkdir()  # a folder named like an image: looked into, not read
    write(root / "dir.png/b.png", pngs(2, seed=17)[1])
    found = scan(collection_roots([root]))
    assert [f.path for f in found.files] == ["a.png", "dir.png/b.png"] and found.skipped == []
    shutil.rmtree(root / "dir.png")
    paths, why = read(root, found.files, workers=1)
    assert paths == ["a.png"] and why == {"dir.png/b.png": "vanished during the scan"}
