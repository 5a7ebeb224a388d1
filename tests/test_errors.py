"""Errors in the caller's words: the library names its parameters, the CLI and the server rephrase
them; each situation has its own class, and every one reaches the user as one line."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from conftest import folder_digest

from aesearch.errors import (
    AesearchError,
    BundleError,
    BundleLockedError,
    ImageError,
    InvalidArgumentError,
    MissingRootError,
    ShortSourceError,
)
from aesearch.interfaces.cli import cli, option_name

IN_WORDS = [
    ("`chunk_size` must be positive", "chunk_size", "--chunk-size", "--chunk-size must be positive"),
    # several parameters, named by a mapping
    (
        "lower `batch_size` or raise `limit`",
        ("batch_size", "limit"),
        {"batch_size": "--batch-size", "limit": "--limit"},
        "lower --batch-size or raise --limit",
    ),
    # backticked: only those, never the same word in a quoted path or name
    ("no folder: images/images: check `images`", "images", "--images", "no folder: images/images: check --images"),
    ("no folder: images: check `images`", "images", "--images", "no folder: images: check --images"),
    (
        "use `aesearch x --limit 3`, or lower `limit`",
        "limit",
        option_name,
        "use `aesearch x --limit 3`, or lower --limit",
    ),
    ("a parameter left out keeps its `name`", "name", {}, "a parameter left out keeps its `name`"),
    # bare (no backticked name): whole words outside paths; "k" is not in "rank", "/k/" or "--k-max"
    (
        "k is over the rank of /k/x and k.png; see --k-max",
        "k",
        {"k": "-k"},
        "-k is over the rank of /k/x and k.png; see --k-max",
    ),
    ("no parameter: unchanged", None, "--anything", "no parameter: unchanged"),
]


@pytest.mark.parametrize(("message", "parameter", "words", "expected"), IN_WORDS)
def test_in_words_rephrases_the_parameters_it_names(message, parameter, words, expected):
    assert InvalidArgumentError(message, parameter=parameter).in_words(words) == expected


def test_any_error_may_name_a_parameter_and_stays_one_line():
    exc = ImageError("big.png\nforged line is over the limit: raise `max_pixels`", parameter="max_pixels")
    assert exc.in_words("--max-pixels") == "big.png\\nforged line is over the limit: raise --max-pixels"
    assert exc.parameters == ("max_pixels",) and AesearchError("plain").parameters == ()


def test_cli_options_for_library_parameters():
    assert [option_name(p) for p in ("chunk_size", "k", "max_pixels", "images_from")] == [
        "--chunk-size",
        "-k",
        "--max-pixels",
        "--images-from",
    ]


def test_the_situations_have_their_own_classes():
    # Callers that caught the old classes still catch these.
    assert issubclass(BundleLockedError, BundleError) and issubclass(MissingRootError, InvalidArgumentError)
    assert issubclass(ShortSourceError, AesearchError) and not issubclass(ShortSourceError, InvalidArgumentError)


def test_a_locked_bundle_is_bundle_locked_error_and_one_line_in_the_cli(bundle_copy):
    from aesearch.store.lock import writer_lock

    before = folder_digest(bundle_copy)
    with writer_lock(bundle_copy):
        with pytest.raises(BundleLockedError, match=r"is being updated by process \d+: wait"), writer_lock(bundle_copy):
            pass
        result = CliRunner().invoke(cli, ["remove", "3", "--index-dir", str(bundle_copy)])
    assert result.exit_code == 1 and "is being updated by process" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert folder_digest(bundle_copy) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["build-index", "--model", "{model}", "--images", "{tmp}/nowhere"],
            "no such folder: {tmp}/nowhere: check the path given to --images",
        ),
        (
            ["build-index", "--model", "{model}", "--images", "{tmp}/file.txt"],
            "file.txt is a file, not a folder: give --images a folder$",
        ),
        (
            ["build-index", "--model", "{model}", "--images", "images"],
            "no such folder: images: check the path given to --images$",
        ),
        (
            ["build-index", "--model", "{model}", "--images-from", "{tmp}/none.txt"],
            "no such list: .*none.txt: give --images-from a text file",
        ),
        (
            ["build-index", "--model", "{model}", "--images", "{tmp}/a", "--images", "{tmp}/a"],
            "given twice: give each --images folder once",
        ),
        (["map", "--method", "tsne", "--index-dir", "{tmp}/none"], "no index at .*, or pass --index-dir"),
    ],
)
def test_the_cli_speaks_in_options(tmp_path, monkeypatch, model, args, message):
    import re

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "file.txt").write_text("x")
    argv = [a.format(tmp=tmp_path, model=model) for a in args]
    if "--index-dir" not in argv:
        argv += ["--index-dir", str(tmp_path / "idx")]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 1, result.output
    assert re.search(message.format(tmp=tmp_path), result.output), result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
