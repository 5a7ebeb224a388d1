"""Integers are parsed once (aesearch/integers.py), for the API and the CLI alike; every bad value is
one line naming what was wrong, never a raw exception or a quietly different id."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
from click.testing import CliRunner

from aesearch.errors import AesearchError, InvalidArgumentError, os_error_message
from aesearch.integers import check_int, check_ints, parse_int, parse_int_list
from aesearch.interfaces.cli import cli
from aesearch.pipelines.writer import Collection
from aesearch.search.engine import SearchEngine
from tests.conftest import folder_digest, synthetic_images

HUGE = 10**30


@pytest.mark.parametrize("value", [True, np.bool_(True), 1.0, 1.5, "3", b"3", None, [1], HUGE, -1, 2**63])
def test_check_int_refuses_what_is_not_an_integer_in_range(value):
    with pytest.raises(InvalidArgumentError, match="id must be an integer from 0 to 2\\^63-1"):
        check_int(value, "id")


@pytest.mark.parametrize("value", [0, 7, np.int64(7), np.uint8(7), 2**63 - 1])
def test_check_int_takes_integers(value):
    assert check_int(value, "id") == int(value) and type(check_int(value, "id")) is int


@pytest.mark.parametrize("text", ["²", "٣", "1e3", "1_000", "0x10", "1.0", "", " ", "-0", "+4", "4 4", "9" * 25])
def test_parse_int_takes_ascii_digits_only(text):
    with pytest.raises(InvalidArgumentError, match="--id must be an integer"):
        parse_int(text, "--id")


def test_parse_int_and_lists():
    assert parse_int(" 42 ", "k") == 42 and parse_int("-3", "x", low=-5) == -3
    assert parse_int_list("1, 2,3", "--more-like") == [1, 2, 3] and parse_int_list("", "--more-like") == []
    with pytest.raises(InvalidArgumentError, match="--more-like takes integers"):
        parse_int_list("1,,2", "--more-like")
    with pytest.raises(InvalidArgumentError, match="ids must be a list of integers, got str"):
        check_ints("123", "ids")
    assert check_ints({3, 1}, "ids") in ([1, 3], [3, 1]) and check_ints(np.array([4, 5]), "ids") == [4, 5]


@pytest.fixture
def engine(bundle_copy):
    return SearchEngine.load(bundle_copy)


API_CASES = {
    "refine(more=None)": lambda e, r: e.refine(r, more=None),
    "refine(more=5)": lambda e, r: e.refine(r, more=5),
    "refine(more=[10**30])": lambda e, r: e.refine(r, more=[HUGE]),
    "refine(more=[True])": lambda e, r: e.refine(r, more=[True]),
    "refine(k='5')": lambda e, r: e.refine(r, more=[1], k="5"),
    "refine(k=10**9)": lambda e, r: e.refine(r, more=[1], k=10**9),
    "refine(None)": lambda e, r: e.refine(None, more=[1]),
    "explain(10**30)": lambda e, r: e.explain(r, HUGE),
    "explain(None, 1)": lambda e, r: e.explain(None, 1),
    "interpolate(10**30, 1)": lambda e, r: e.interpolate(HUGE, 1),
    "interpolate(steps=True)": lambda e, r: e.interpolate(1, 2, steps=True),
    "query_id(10**30)": lambda e, r: e.query_id(HUGE),
    "query_id(True)": lambda e, r: e.query_id(True),
    "image(10**30)": lambda e, r: e.image(HUGE),
    "image(-1)": lambda e, r: e.image(-1),
    "hit('3')": lambda e, r: e.hit("3"),
    "query(k=2.0)": lambda e, r: e.query(synthetic_images(1)[0], k=2.0),
    "query(max_pixels='x')": lambda e, r: e.query(synthetic_images(1)[0], max_pixels="x"),
    "query(max_pixels=-1)": lambda e, r: e.query(synthetic_images(1)[0], max_pixels=-1),
    "search_in_space(wrong width)": lambda e, r: e.search_in_space(np.zeros((1, 5), np.float32), 3),
    "hit(rank='a')": lambda e, r: e.hit(3, rank="a"),
    "load(123)": lambda e, r: SearchEngine.load(123),
    "load(None)": lambda e, r: SearchEngine.load(None),
    "load(model=5)": lambda e, r: SearchEngine.load(e.bundle.path, model=5),
}


WRITE_CASES = {
    "add_files('one string')": lambda c: c.add_files("x.png"),
    "add_files([])": lambda c: c.add_files([]),
    "remove(None)": lambda c: c.remove(None),
    "remove('abc')": lambda c: c.remove("abc"),
    "remove([[1, 2]])": lambda c: c.remove([[1, 2]]),
    "remove([nan])": lambda c: c.remove([float("nan")]),
    "remove([10**30])": lambda c: c.remove([HUGE]),
    "remove([True])": lambda c: c.remove([True]),
    "remove([1.5])": lambda c: c.remove([1.5]),
    "remove(['3'])": lambda c: c.remove(["3"]),
    "remove([4.999])": lambda c: c.remove([4.999]),
    "remove([])": lambda c: c.remove([]),
    "add(zero images)": lambda c: c.add(np.zeros((0, 28, 28))),
    "add(paths=[1])": lambda c: c.add(synthetic_images(1), paths=[1]),
    "add(paths=lone surrogate)": lambda c: c.add(synthetic_images(1), paths=["\ud800x"]),
    "add(paths=NUL)": lambda c: c.add(synthetic_images(1), paths=["a\0b"]),
    "add(paths='one string')": lambda c: c.add(synthetic_images(1), paths="x.png"),
    "add(labels=['abc'])": lambda c: c.add(synthetic_images(1), labels=["abc"]),
    "add(labels=[None])": lambda c: c.add(synthetic_images(1), labels=[None]),
    "add(labels=[1.5])": lambda c: c.add(synthetic_images(1), labels=[1.5]),
    "add(labels=['1'])": lambda c: c.add(synthetic_images(1), labels=["1"]),
    "add(labels=[99])": lambda c: c.add(synthetic_images(1), labels=[99]),
}


@pytest.mark.parametrize("call", API_CASES.values(), ids=API_CASES.keys())
def test_bad_api_input_is_one_line_and_changes_nothing(engine, call):
    result = engine.query_id(3, k=5)
    before = folder_digest(engine.bundle.path)
    with pytest.raises(AesearchError) as info:
        call(engine, result)
    assert "\n" not in str(info.value)
    assert folder_digest(engine.bundle.path) == before


@pytest.mark.parametrize("call", WRITE_CASES.values(), ids=WRITE_CASES.keys())
def test_bad_writer_input_is_one_line_and_changes_nothing(bundle_copy, call):
    before = folder_digest(bundle_copy)
    with pytest.raises(AesearchError) as info:
        call(Collection.open(bundle_copy))
    assert "\n" not in str(info.value)
    assert folder_digest(bundle_copy) == before


def test_queries_of_no_image_are_no_results(engine):
    assert engine.query_batch([]) == [] and engine.query_batch(np.zeros((0, 28, 28), np.uint8)) == []


CLI_CASES = [
    (["query", "--id", "²"], "written in digits 0-9"),
    (["query", "--id", "٣"], "written in digits 0-9"),
    (["query", "--id", "9" * 30], "from 0 to 2^63-1"),
    (["query", "--id", "3", "-k", "1_0"], "written in digits 0-9"),
    (["query", "--id", "3", "--more-like", "²"], "--more-like takes integers"),
    (["query", "--id", "3", "--less-like", "9" * 30], "--less-like takes integers"),
    (["query", "--id", "3", "--max-pixels", "0"], "from 1 to 2^63-1"),
    (["remove", "9" * 30], "an id to remove must be an integer from 0 to 2^63-1"),
    (["remove", "²"], "no indexed image has the path ²"),
    (["interpolate", "9" * 30, "3"], "an indexed id must be an integer"),
    (["interpolate", "²", "3"], "is neither an image file nor an indexed id"),
    (["interpolate", "1", "2", "--steps", "٣"], "written in digits 0-9"),
    (["map", "--id", "9" * 30], "from 0 to 2^63-1"),
    (["map", "--out", "map.txt"], "name it .png, .jpg, .webp, .pdf or .svg"),
    (["eval", "--report", "report.txt"], "name it .png, .jpg, .webp, .pdf or .svg"),
    # an empty path is the current folder to click: a script's unset $DIR moved copies there
    (["query", ""], "Invalid value for '[IMAGE]': it is empty"),
    (["query", "--id", "3", "--out", ""], "Invalid value for '--out': it is empty"),
    (["query", "--id", "3", "--model", ""], "Invalid value for '--model': it is empty"),
    (["map", "--query", ""], "Invalid value for '--query': it is empty"),
    (["interpolate", "", "1"], "an interpolation end is empty"),
    (["add", ""], "Invalid value for 'PATHS...': it is empty"),
    (["duplicates", "--move-to", "", "--dry-run"], "Invalid value for '--move-to': it is empty"),
    (["duplicates", "--undo", ""], "Invalid value for '--undo': it is empty"),
    (["eval", "--report", ""], "Invalid value for '--report': it is empty"),
    # `--model shipped` names the packaged model in query as in build-index (was: "no checkpoint at shipped")
    (["query", "--id", "3", "--model", "shipped"], "does not match the index"),
    (["add", "photo.png"], "was not built from folders of images: add works on"),  # not "sync works on"
    (["build-index", "--images", ".", "--data-dir", "/nowhere"], "--data-dir says where Fashion-MNIST is"),
]


@pytest.mark.parametrize(("args", "message"), CLI_CASES)
def test_bad_cli_integers_are_one_line(bundle_copy, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    before = folder_digest(bundle_copy)
    out = CliRunner().invoke(cli, [*args, "--index-dir", str(bundle_copy)])
    assert out.exit_code in (1, 2) and message in out.output, out.output
    assert len(out.output.strip().splitlines()) == 1 and "Traceback" not in out.output
    assert folder_digest(bundle_copy) == before


@pytest.mark.parametrize(
    ("code", "advice"),
    [
        (errno.ENOSPC, "the disk is full"),
        (errno.EACCES, "fix the permissions"),
        (errno.EROFS, "read-only"),
        (errno.EIO, "input/output error"),
        (errno.ENOENT, "vanished"),
        (errno.EXDEV, "fix the cause"),
    ],
)
def test_os_errors_get_advice_that_fits(code, advice):
    message = os_error_message(OSError(code, os.strerror(code), "/some/file"))
    assert advice in message and "/some/file" in message and "\n" not in message


def test_a_query_through_a_link_loop_or_of_a_fifo_is_one_line(engine, tmp_path):
    (tmp_path / "a.png").symlink_to(tmp_path / "b.png")
    (tmp_path / "b.png").symlink_to(tmp_path / "a.png")
    with pytest.raises(AesearchError, match="symbolic links"):
        engine.query(tmp_path / "a.png")
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(AesearchError, match="not a regular file"):
        engine.query(tmp_path / "pipe.png")  # would block forever on open if it were read
    (tmp_path / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(AesearchError, match="links to a file that does not exist"):
        engine.query(tmp_path / "gone.png")
