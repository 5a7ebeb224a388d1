"""--index-type auto: the tier and parameters chosen across sizes and memory budgets."""

from __future__ import annotations

import pytest

from aesearch.errors import InvalidArgumentError
from aesearch.search.index_choice import (
    DEFAULT_MAX_INDEX_MEMORY,
    EXACT_MAX_SCAN,
    MAX_NLIST,
    choose_index,
    default_max_index_memory,
    ivf_lists,
    parse_memory,
)


@pytest.mark.parametrize(
    ("n", "budget", "kind"),
    [
        (10_000, DEFAULT_MAX_INDEX_MEMORY, "flat"),
        (EXACT_MAX_SCAN // 192, DEFAULT_MAX_INDEX_MEMORY, "flat"),
        (EXACT_MAX_SCAN // 192 + 1, DEFAULT_MAX_INDEX_MEMORY, "ivf"),
        (70_000, DEFAULT_MAX_INDEX_MEMORY, "ivf"),  # Fashion-MNIST: a full scan is most of a query
        (1_000_000, DEFAULT_MAX_INDEX_MEMORY, "IVF4096,PQ96x4fs"),
        (10_000_000, DEFAULT_MAX_INDEX_MEMORY, "IVF4096,PQ32x4fs"),
        (10_000_000, None, "IVF4096,PQ96x4fs"),  # the default budget grows to 64 B a vector past 4.2 M
        (10_000_000, parse_memory("1G"), "IVF4096,PQ96x4fs"),
        (1_000_000, parse_memory("2G"), "ivf"),
        (
            70_000,
            parse_memory("40M"),
            "IVF1024,PQ96x4fs",
        ),  # a budget too small for IVF-Flat gives PQ codes
    ],
)
def test_tier_follows_size_and_budget(n, budget, kind):
    choice = choose_index(n, 192, budget)
    assert choice.index_type == kind
    assert choice.bytes_per_vector * n <= (budget or default_max_index_memory(n))  # the estimate honours the budget
    assert choice.compressed == ("PQ" in kind)


def test_compressed_tier_stays_under_100_bytes_per_vector_at_scale():
    for n in (1_000_000, 10_000_000):
        assert choose_index(n, 192).bytes_per_vector <= 100


def test_default_budget_is_a_floor_or_64_bytes_a_vector():
    assert default_max_index_memory(1_000) == default_max_index_memory(4_000_000) == DEFAULT_MAX_INDEX_MEMORY
    assert default_max_index_memory(10_000_000) == 640_000_000
    assert choose_index(1_000_000, 192) == choose_index(1_000_000, 192, DEFAULT_MAX_INDEX_MEMORY)


def test_budget_too_small_is_one_line_with_advice():
    with pytest.raises(InvalidArgumentError, match=r"too small for 10,000,000 vectors.*give at least"):
        choose_index(10_000_000, 192, parse_memory("50M"))


def test_ivf_lists_power_of_two_with_enough_training_points():
    for n in (100, 5_000, 300_000, 10_000_000):
        nlist = ivf_lists(n)
        assert nlist & (nlist - 1) == 0 and nlist <= MAX_NLIST
        assert n / nlist >= 39 / 2  # rounding to a power of two may halve the points per list at most


@pytest.mark.parametrize(
    ("text", "value"), [("512M", 512 * 2**20), ("2G", 2 * 2**30), ("1.5GB", int(1.5 * 2**30)), ("300", 300)]
)
def test_parse_memory(text, value):
    assert parse_memory(text) == value


@pytest.mark.parametrize("text", ["", "lots", "-1G", "3X"])
def test_parse_memory_refuses_nonsense(text):
    with pytest.raises(InvalidArgumentError, match="cannot read memory size"):
        parse_memory(text)


@pytest.mark.parametrize("text", ["0", "0.0G", "0M"])
def test_parse_memory_says_a_zero_size_holds_nothing(text):  # it could be read: "cannot read" was wrong
    with pytest.raises(InvalidArgumentError, match="holds nothing: give more than 0"):
        parse_memory(text)


def test_exact_tier_is_bounded_by_the_floats_a_query_scans():
    assert choose_index(15_000, 192).index_type == "flat"  # 2.9 M floats
    assert choose_index(15_000, 314).index_type == "ivf"  # unwhitened z: 4.7 M floats per scan


def test_no_pq_code_fits_the_dimension_is_one_line_with_advice():
    with pytest.raises(InvalidArgumentError, match=r"no PQ code .* divides 7: give at least .*whiten_dims"):
        choose_index(10_000_000, 7, parse_memory("50M"))


def test_the_estimate_of_a_fast_scan_index_bounds_its_real_size():
    """Fast scan pads every list to blocks of 32 codes: the estimate counts a block per list, so an index
    auto chose within a budget holds no more than the budget (measured on the serialized index)."""
    import faiss
    import numpy as np

    n, dim = 20_000, 32
    vectors = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    choice = choose_index(n, dim, n * 30)
    assert choice.compressed
    index = faiss.index_factory(dim, choice.index_type)
    index.train(vectors)
    index.add(vectors)
    assert len(faiss.serialize_index(index)) / n <= choice.bytes_per_vector <= 30
