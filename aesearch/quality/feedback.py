"""`aesearch eval --feedback N`: relevance feedback measured with simulated users.

Same protocols as evaluate.py (test: the test images query the training images; validation: the
last 10,000 training images query the other 50,000; a labelled collection: every 5th image queries
the rest). Each query is one simulated user:

  round 0  the plain search;
  round r  the user marks the ten hits shown in round r-1 by their class (same class as the
           query: "more like this", another class: "less like this"; marks add up over rounds),
           and the search is refined with search/feedback.py, the code SearchEngine.refine runs.

Each round reports, over the ranking the user is shown (shown_ranking, as SearchEngine.refine shows
it: images marked "more like" first, those marked "less like" left out):
  * P@10 and mAP@100 (metrics.py);
  * new P@10: precision of the ten best-ranked images the user has not marked yet, which says
    whether feedback finds *new* relevant images rather than re-ranking the ones already marked.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from aesearch.errors import InvalidArgumentError
from aesearch.quality.evaluate import DEPTH, protocol_rows
from aesearch.quality.metrics import mean_average_precision_at_k, precision_at_k, relevance
from aesearch.search.engine import SearchEngine
from aesearch.search.feedback import (
    DEFAULT_SETTINGS,
    FeedbackSettings,
    background_ids,
    distances_to,
    refined_queries,
    shown_ranking,
)
from aesearch.search.index import IndexSpec, VectorIndex, in_space

SHOWN = 10  # hits the simulated user sees and marks each round
CHUNK = 1000  # queries refined together (bounds the padded arrays' memory)
MAX_ROUNDS = 20


@dataclass
class FeedbackRound:
    round: int
    p_at_10: float
    map_at_100: float
    new_p_at_10: float  # precision of the 10 best images not yet marked
    marks: float  # mean marks per query given before this round's search


@dataclass
class FeedbackReport:
    bundle: str
    protocol: str
    n_queries: int
    n_database: int
    metric: str
    settings: dict
    rounds: list[FeedbackRound] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate_feedback(
    engine: SearchEngine,
    rounds: int = 2,
    *,
    protocol: str = "test",
    settings: FeedbackSettings = DEFAULT_SETTINGS,
    limit: int | None = None,
) -> FeedbackReport:
    """Simulate `rounds` rounds of feedback for every query of the protocol.

    Args:
        limit: use only the first `limit` queries (quick looks; docs/quality.md's figures use all).
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= MAX_ROUNDS:
        raise InvalidArgumentError(f"feedback rounds must be an integer from 1 to {MAX_ROUNDS}, got {rounds}")
    ids, database_ids, query_ids, labels, protocol = protocol_rows(engine, protocol)  # rows of ids
    query_ids = query_ids[:limit]
    metric = engine.manifest["metric"]
    both = ids[np.concatenate([database_ids, query_ids])]
    vectors = engine.search_space(engine.bundle.embeddings(both))  # what the index holds, as it compares them
    database, queries = vectors[: len(database_ids)], vectors[len(database_ids) :]
    database_labels, query_labels = labels[database_ids], labels[query_ids]
    index = VectorIndex.build(database, IndexSpec("flat", metric))  # exact, on the search-space vectors
    background = database[background_ids(len(database), settings)]

    more: list[list[int]] = [[] for _ in query_ids]  # rows of `database`, per query
    less: list[list[int]] = [[] for _ in query_ids]
    report = FeedbackReport(
        bundle=str(engine.bundle.path),
        protocol=protocol,
        n_queries=len(query_ids),
        n_database=len(database_ids),
        metric=metric,
        settings=asdict(settings),
    )
    depth = min(DEPTH, len(database))
    for r in range(rounds + 1):
        marks = float(np.mean([len(m) + len(n) for m, n in zip(more, less, strict=True)]))
        shown = np.full((len(query_ids), depth), -1)
        fresh = np.full((len(query_ids), SHOWN), -1)
        for start in range(0, len(query_ids), CHUNK):
            rows = range(start, min(start + CHUNK, len(query_ids)))
            chunk = queries[rows.start : rows.stop]
            extra = max(len(more[i]) + len(less[i]) for i in rows)
            if r:

                def best_unmarked(
                    refined: np.ndarray, count: int, rows: range = rows, extra: int = extra
                ) -> list[np.ndarray]:
                    found = index.search_in_space(refined, min(len(database), count + extra))[1]
                    return [
                        database[row[(row >= 0) & ~np.isin(row, more[i] + less[i])][:count]]
                        for i, row in zip(rows, found, strict=True)
                    ]

                chunk = refined_queries(
                    chunk,
                    [database[more[i]] for i in rows],
                    [database[less[i]] for i in rows],
                    background,
                    metric=metric,
                    settings=settings,
                    best_unmarked=best_unmarked,
                )
            distances, found = index.search_in_space(chunk, min(len(database), depth + extra))
            prepared = in_space(chunk, metric)
            for i, row, row_distances, query in zip(rows, found, distances, prepared, strict=True):
                liked = np.asarray(more[i], dtype=np.int64)
                liked_distances = distances_to(query, database[liked], metric)
                kept, _ = shown_ranking(row, row_distances, liked, liked_distances, less[i])
                shown[i, : min(depth, len(kept))] = kept[:depth]
                unseen = row[(row >= 0) & ~np.isin(row, more[i] + less[i])][:SHOWN]
                fresh[i, : len(unseen)] = unseen
        relevant = relevance(np.where(shown >= 0, database_labels[shown], -1), query_labels)
        new_relevant = relevance(np.where(fresh >= 0, database_labels[fresh], -1), query_labels)
        report.rounds.append(
            FeedbackRound(
                round=r,
                p_at_10=precision_at_k(relevant, min(10, depth)),
                map_at_100=mean_average_precision_at_k(relevant, depth),
                new_p_at_10=precision_at_k(new_relevant, min(SHOWN, new_relevant.shape[1])),
                marks=marks,
            )
        )
        for i, row in enumerate(shown[:, :SHOWN]):  # the simulated user marks what it was shown
            for j in row[row >= 0]:
                target, other = (more[i], less[i]) if database_labels[j] == query_labels[i] else (less[i], more[i])
                if j not in target and j not in other:
                    target.append(int(j))
    return report
