"""ListProbe: per-query nprobe for a filtered IVF search, against a plain reading of its rule."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from aesearch.search.probing import STEPS, ListProbe, centroids_of, list_numbers


def reference_nprobe(probe: ListProbe, prepared: np.ndarray) -> np.ndarray:
    """Walk every list nearest first until `wanted` matches are seen; count the lists holding one."""
    out = []
    for query in prepared:
        order = np.argsort(((probe.centroids - query) ** 2).sum(axis=1), kind="stable")
        seen = holding = 0
        for number in order:
            holding += probe.counts[number] > 0
            seen += probe.counts[number]
            if seen >= probe.wanted:
                break
        steps = np.ceil(STEPS * np.log2(max(holding, probe.base) / probe.base))
        out.append(min(int(np.ceil(probe.base * 2 ** (steps / STEPS) - 1e-9)), probe.holding))
    return np.array(out)


@pytest.mark.parametrize("clustered", [False, True], ids=["spread", "clustered"])
def test_nprobe_walks_the_nearest_lists_as_a_full_sort_would(clustered):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20_000, 4)).astype(np.float32)
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(4), 4, 512)
    ivf.cp.seed = 0
    ivf.train(x)
    ivf.add(x)
    ivf.nprobe = 2
    # Spread: every query finds its matches among the nearest lists it orders (~100 of 512).
    # Clustered: the matches lie on one side (x0 > 1.5), so a quarter of the queries walk past
    # those lists (the fallback that orders every list).
    mask = x[:, 0] > 1.5 if clustered else rng.random(len(x)) < 0.3
    probe = ListProbe(ivf, list_numbers(ivf), centroids_of(ivf), mask)
    queries = rng.standard_normal((200, 4)).astype(np.float32)
    found = probe.nprobe(queries)
    assert np.array_equal(found, reference_nprobe(probe, queries))
    assert found.min() >= probe.base and found.max() <= probe.holding
