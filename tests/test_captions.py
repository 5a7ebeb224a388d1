"""Captions name a hit so that a person can find it: paths cut in the middle, never from the left."""

import types

import pytest

from aesearch.figures.render import fitted, load_font
from aesearch.interfaces.tables import query_table


class Chars:
    """A font whose every character is 1 pixel wide: widths are lengths (an oracle for the cuts)."""

    @staticmethod
    def getlength(text: str) -> float:
        return len(text)


@pytest.mark.parametrize(
    ("text", "width", "expected"),
    [
        ("products/shoes/boot-0042.png", 40, "products/shoes/boot-0042.png"),  # fits: untouched
        ("products/shoes/boot-0042.png", 22, "product…/boot-0042.png"),
        ("products/shoes/boot-0042.png", 16, "p…/boot-0042.png"),
        ("products/shoes/boot-0042.png", 14, "…boot-0042.png"),  # no room for "…/": the name, marked as cut
        ("products/shoes/boot-0042.png", 9, "boot….png"),  # the name itself cut in its middle
        ("a-very-long-file-name.png", 9, "a-ve….png"),
        ("x", 0, "…"),
    ],
)
def test_a_path_keeps_its_file_name_and_its_start(text, width, expected):
    assert fitted(text, Chars, width) == expected
    assert len(fitted(text, Chars, width)) <= max(width, 1)


def test_real_font_captions_fit_the_tile():
    font = load_font(13)
    caption = fitted("#1 products/shoes/winter/boot-0042.png", font, 140)
    assert font.getlength(caption) <= 140 and caption.endswith("/boot-0042.png") and caption.startswith("#1 pr")


def hit(rank, split, path=""):
    return types.SimpleNamespace(rank=rank, id=rank, split=split, distance=0.5, path=path, name=path or "Bag")


def result(*hits):
    trust = types.SimpleNamespace(reconstruction_percentile=50.0)
    return types.SimpleNamespace(hits=list(hits), feedback=(), reconstruction_mse=0.01, trust=trust)


def test_a_collection_table_has_no_split_column_and_fashion_mnist_keeps_it():
    lines = query_table(result(hit(1, "collection", "a/b.png"), hit(2, "collection", "c.png")), "q.png").splitlines()
    assert lines[1].split() == ["rank", "id", "path", "distance"] and lines[2].split()[2] == "a/b.png"
    lines = query_table(result(hit(1, "train"), hit(2, "test")), "q.png").splitlines()
    assert lines[1].split() == ["rank", "id", "class", "split", "distance"] and lines[3].split()[3] == "test"
