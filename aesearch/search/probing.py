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
# against brute force, unfiltered 0.974; the whole query's p50 against the unfiltered query's, warm,
# quiet): `label = Shirt` 1x: 0.958, 1.78x; 1.3x: 0.966, 1.86x (nprobe in steps of 2^(1/4); in
# powers of two, 1x reached 0.966 at 1.84x by probing up to twice the lists it needed).
SEEN = 1.3
# nprobe is rounded up to the base times a power of 2^(1/STEPS), so that a batch's queries fall in a
# few groups of one FAISS call each; powers of two (STEPS = 1) probed up to 2x the lists needed.
STEPS = 4


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
        self.ntotal_seen = int(self.counts.sum())  # matches in all lists

    def nprobe(self, prepared: np.ndarray) -> np.ndarray:
        """(n, d) prepared queries -> (n,) lists to probe: the base times a power of 2^(1/4), at most
        those holding a match."""
        scores = prepared @ self.centroids.T - self.half_norms  # larger is nearer: -|q - c|^2 / 2 + |q|^2 / 2
        # Only the nearest lists are walked: order the nearest `reach` (a few times what an even
        # spread of matches needs), and every list only for the rows those do not satisfy.
        reach = min(self.nlist, 64 + 4 * self.nlist * self.wanted // max(1, self.ntotal_seen))
        needed = self._needed(scores, reach)
        if reach < self.nlist:
            unmet = np.flatnonzero(needed < 0)
            if len(unmet):
                needed[unmet] = self._needed(scores[unmet], self.nlist)
        rounded = self.base * 2 ** (np.ceil(STEPS * np.log2(np.maximum(needed, self.base) / self.base)) / STEPS)
        return np.minimum(np.ceil(rounded - 1e-9).astype(np.int64), self.holding)

    def _needed(self, scores: np.ndarray, reach: int) -> np.ndarray:
        """Lists holding a match that each row walks, nearest first, to see `wanted` matches (-1: the
        nearest `reach` lists hold too few)."""
        if reach < self.nlist:
            nearest = np.argpartition(-scores, reach - 1, axis=1)[:, :reach]
            order = np.take_along_axis(nearest, np.argsort(-np.take_along_axis(scores, nearest, 1), axis=1), 1)
        else:
            order = np.argsort(-scores, axis=1)
        counts = self.counts[order]
        seen = np.cumsum(counts, axis=1)
        last = (seen < self.wanted).sum(axis=1)  # lists until the count is reached
        holding = np.cumsum(counts > 0, axis=1)[np.arange(len(order)), np.minimum(last, reach - 1)]
        return np.where(last < reach, holding, -1) if reach < self.nlist else holding


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
