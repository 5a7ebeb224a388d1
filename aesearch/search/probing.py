"""How many IVF lists a filtered query probes: enough to see as many matching vectors as the tuned
unfiltered search sees vectors.

A tuned IVF search probes the nprobe lists nearest the query and finds the true neighbours among
the ~nprobe x n / nlist vectors there with the tuned recall. Behind a filter, only the matching
vectors of those lists count. Dividing nprobe by the filter's overall share is right when the
matches are spread evenly (a random tenth of the ids), and wrong when they cluster: a filter on a
class keeps 10% of the images, but a query of a shoe probed with `label = Shirt` finds almost no
shirts in the lists nearest to it (recall@10 0.84 at 1 M, measured). So each query walks its lists
nearest first, counting the matches each holds (counted once per filter), and probes as many as
it takes to pass the unfiltered search's number of vectors; queries are grouped by that count
(rounded up to a power of two) so a batch is a few FAISS calls. Lists that hold no match are
never probed: the coarse quantizer searches only the others (quantizer_params.sel), so a query far
from every match skips the lists between (the nprobe counted here is of lists that hold matches).
"""

from __future__ import annotations

import faiss
import numpy as np

# Matches to see, as a multiple of the vectors the tuned unfiltered search sees. At 1 M (recall@10
# against brute force, unfiltered 0.976; the whole query's p50 against the unfiltered query's):
# `label = Shirt` 1x: 0.956, 1.86x; 1.25x: 0.966, 1.99x; 1.5x: 0.970, 2.08x. The bound is
# 2x for a filter of 10%: 1x keeps under it, a class filter's recall 0.02 below the unfiltered.
SEEN = 1.0


class ListProbe:
    """Per-query nprobe for one IVF index and one filter."""

    def __init__(self, ivf: faiss.IndexIVF, list_of: np.ndarray, centroids: np.ndarray, mask: np.ndarray) -> None:
        """list_of: (ntotal,) each position's list (list_numbers); mask: the positions that match."""
        self.nlist, self.base = ivf.nlist, max(1, ivf.nprobe)
        self.counts = np.bincount(list_of[mask], minlength=self.nlist)
        self.centroids = centroids
        # The coarse quantizer's selector: the lists that hold a match (kept alive with this object).
        self._lists = np.flatnonzero(self.counts).astype(np.int64)
        self.quantizer_params = faiss.SearchParameters()
        self._selector = faiss.IDSelectorBatch(self._lists)
        self.quantizer_params.sel = self._selector
        self.holding = len(self._lists)
        self.half_norms = 0.5 * (centroids**2).sum(axis=1)
        # what the tuned unfiltered search sees (SEEN times); never more than the filter holds
        self.wanted = min(int(self.counts.sum()), int(np.ceil(SEEN * self.base * ivf.ntotal / max(1, self.nlist))))

    def nprobe(self, prepared: np.ndarray) -> np.ndarray:
        """(n, d) prepared queries -> (n,) lists to probe: a power of two times the base, at most those
        holding a match."""
        scores = prepared @ self.centroids.T - self.half_norms  # larger is nearer: -|q - c|^2 / 2 + |q|^2 / 2
        order = np.argsort(-scores, axis=1)
        seen = np.cumsum(self.counts[order], axis=1)
        needed = np.minimum((seen < self.wanted).sum(axis=1), self.nlist - 1)  # lists until the count is reached
        needed = np.cumsum(self.counts[order] > 0, axis=1)[np.arange(len(order)), needed]  # of them, holding matches
        rounded = self.base * 2 ** np.ceil(np.log2(np.maximum(needed, self.base) / self.base))
        return np.minimum(rounded.astype(np.int64), self.holding)


def list_numbers(ivf: faiss.IndexIVF) -> np.ndarray:
    """(ntotal,) int32: the list each position's vector is in (read once per index from its lists)."""
    out = np.zeros(ivf.ntotal, np.int32)
    lists = ivf.invlists
    for number in range(ivf.nlist):
        size = lists.list_size(number)
        if size:
            out[faiss.rev_swig_ptr(lists.get_ids(number), size).copy()] = number
    return out


def centroids_of(ivf: faiss.IndexIVF) -> np.ndarray:
    """(nlist, d) float32: the coarse quantizer's centroids."""
    return np.ascontiguousarray(ivf.quantizer.reconstruct_n(0, ivf.nlist), dtype=np.float32)
