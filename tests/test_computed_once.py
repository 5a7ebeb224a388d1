"""computed_once: processes that share a cache compute each thing once (a server's workers)."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from aesearch.atomic import computed_once


def compute_if_missing(folder: str, start) -> None:
    folder_path = Path(folder)
    start.wait()  # both arrive together
    with computed_once(folder_path / ".thing.lock"):
        if (folder_path / "thing").exists():
            return
        with open(folder_path / "computations", "a") as log:
            log.write("computed\n")
        time.sleep(0.3)  # long enough for the other process to arrive while this one computes
        (folder_path / "thing").write_text("done")


def test_two_processes_compute_once(tmp_path):
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    processes = [context.Process(target=compute_if_missing, args=(str(tmp_path), start)) for _ in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(30)
    assert [p.exitcode for p in processes] == [0, 0]
    assert (tmp_path / "computations").read_text() == "computed\n"
    assert (tmp_path / "thing").read_text() == "done"


def test_a_failed_computation_releases_the_lock(tmp_path):
    try:
        with computed_once(tmp_path / ".thing.lock"):
            raise RuntimeError("failed")
    except RuntimeError:
        pass
    with computed_once(tmp_path / ".thing.lock"):  # would wait forever if the lock were still held
        pass


def test_without_a_writable_folder_nothing_waits(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with computed_once(blocker / "sub" / ".thing.lock"):  # its folder cannot be made: computes unlocked
        pass
