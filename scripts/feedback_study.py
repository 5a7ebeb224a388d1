"""Choose the relevance-feedback method and its weights on the validation protocol.

Runs `evaluate_feedback` (the code behind `aesearch eval --feedback`, which runs the code behind
SearchEngine.refine) for Rocchio and for the query-anchored logistic-regression classifier with
several weights, on the validation protocol only: the last 10,000 training images query the other
50,000. The test split is never looked at here; confirm the chosen settings with
`aesearch eval --feedback 2` afterwards.

    python scripts/feedback_study.py --index-dir indexes/fashion-mnist --queries 2000
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from aesearch import SearchEngine
from aesearch.quality.feedback import evaluate_feedback
from aesearch.search.feedback import FeedbackSettings


# The classifier's weights, one fit each (chosen before pseudo-positives were added).
def one_fit(method: str = "classifier", **weights) -> FeedbackSettings:
    return FeedbackSettings(method=method, pseudo_positives=0, **weights)


CANDIDATES = [
    ("Rocchio a=1 b=1 c=0.5", one_fit(method="rocchio", rocchio_more=1.0, rocchio_less=0.5)),
    ("Rocchio a=1 b=2 c=1", one_fit(method="rocchio", rocchio_more=2.0, rocchio_less=1.0)),
    ("classifier, no pseudo-negatives", one_fit(pseudo_negatives=0, pseudo_weight=0)),
    (
        "classifier lambda=1, 256 pseudo x1",
        one_fit(regularisation=1.0, pseudo_negatives=256, pseudo_weight=1.0, prior=4.0),
    ),
    (
        "classifier lambda=0.3, 256 pseudo x3",
        one_fit(regularisation=0.3, pseudo_negatives=256, pseudo_weight=3.0, prior=4.0),
    ),
    ("classifier lambda=0.1, 1024 pseudo x5 (the default's weights)", one_fit()),
    ("classifier lambda=0.1, 1024 pseudo x5, prior 1", one_fit(prior=1.0)),
    ("classifier lambda=0.1, 2048 pseudo x10", one_fit(pseudo_negatives=2048, pseudo_weight=10.0)),
    ("classifier lambda=0.03, 1024 pseudo x5", one_fit(regularisation=0.03)),
    ("classifier lambda=0.1, 1024 pseudo x5, prior 4", one_fit(prior=4.0)),
    ("classifier lambda=0.1, 1024 pseudo x5, query x2", one_fit(query_weight=2.0)),
    (
        "classifier lambda=0.03, 2048 pseudo x10",
        one_fit(regularisation=0.03, pseudo_negatives=2048, pseudo_weight=10.0),
    ),
]

# Pseudo-relevance feedback (--candidates pseudo-positives): the first fit's best unmarked images
# taken as positives and the classifier fitted again; each weighing a mark, or a mark times the share
# of the marks that are "more like" (the default: 2 of them).
ONE_FIT = one_fit()
PSEUDO_POSITIVES = (
    [("classifier, one fit (the default before)", ONE_FIT)]
    + [
        (
            f"+ {count} pseudo-positives x{weight:g}",
            replace(ONE_FIT, pseudo_positives=count, pseudo_positive_weight=weight, pseudo_positives_by_share=False),
        )
        for count, weight in [(1, 1.0), (2, 0.5), (2, 1.0), (3, 1.0), (5, 0.5), (5, 1.0)]
    ]
    + [
        (
            f"+ {count} x{weight:g} x share of more-like",
            replace(ONE_FIT, pseudo_positives=count, pseudo_positive_weight=weight),
        )
        for count, weight in [(2, 1.0), (3, 1.0), (5, 0.5), (5, 1.0)]
    ]
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index-dir", default="indexes/fashion-mnist")
    parser.add_argument("--queries", type=int, default=2000, help="validation queries used (of 10,000)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--candidates", choices=["weights", "pseudo-positives"], default="weights", help="which study to run"
    )
    args = parser.parse_args()
    engine = SearchEngine.load(args.index_dir)
    rounds = range(args.rounds + 1)
    print(f"validation protocol, first {args.queries:,} held-out queries; P@10 / mAP@100 / new P@10 per round")
    print(f"{'method':<50}" + "".join(f"{'round ' + str(r):>24}" for r in rounds) + f"{'s':>6}")
    for name, settings in CANDIDATES if args.candidates == "weights" else PSEUDO_POSITIVES:
        start = time.perf_counter()
        report = evaluate_feedback(engine, args.rounds, protocol="validation", settings=settings, limit=args.queries)
        cells = "".join(f"{r.p_at_10:>8.4f}{r.map_at_100:>8.4f}{r.new_p_at_10:>8.4f}" for r in report.rounds)
        print(f"{name:<50}{cells}{time.perf_counter() - start:>6.0f}", flush=True)


if __name__ == "__main__":
    main()
