"""How the trust score behaves: how many genuine images it flags, and which unlike inputs it catches.

Queries every test-split image of a bundle (genuine Fashion-MNIST: ideally none flagged), then a
set of inputs unlike any garment (noise, blank, a checkerboard, text, a portrait photo from
matplotlib's sample data), and prints each one's percentiles and verdict.

    python scripts/bench_trust.py [--index-dir indexes/fashion-mnist]
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np
from matplotlib import cbook
from PIL import Image, ImageDraw, ImageFont

from aesearch import SearchEngine
from aesearch.search import trust


def unlike_inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)

    def text(s: str) -> np.ndarray:
        image = Image.new("L", (220, 120), 255)
        ImageDraw.Draw(image).text((10, 10), s, fill=0, font=ImageFont.load_default(size=80))
        return np.asarray(image)

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        portrait = np.asarray(Image.open(f).convert("RGB"))
    return {
        "uniform noise 28x28": (rng.random((28, 28)) * 255).astype(np.uint8),
        "blank (black)": np.zeros((28, 28), np.uint8),
        "blank (white, 64x64)": np.full((64, 64), 255, np.uint8),
        "checkerboard": (np.indices((28, 28)).sum(0) % 2 * 255).astype(np.uint8),
        "the digit 7": text("7"),
        "the word CAT": text("CAT"),
        "portrait photo": portrait,
    }


RULES = ("reconstruction", "neighbour", "both", "content")


def broken_rules(t) -> dict[str, bool]:
    """Which of the trust score's rules (aesearch/search/trust.py) an assessment breaks."""
    r, n = t.reconstruction_percentile, t.neighbour_percentile
    return {
        "reconstruction": r > trust.THRESHOLD_PERCENTILE,
        "neighbour": n > trust.THRESHOLD_PERCENTILE,
        "both": min(r, n) > trust.JOINT_PERCENTILE,
        "content": t.content_percentile < trust.CONTENT_PERCENTILE,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index-dir", default="indexes/fashion-mnist")
    args = parser.parse_args()
    engine = SearchEngine.load(args.index_dir)
    ids = engine.bundle.live_ids()[engine.bundle.all_records()["split"] == 1]
    results = engine.query_batch(engine.bundle.images(ids), k=2)
    # The test images are indexed too: judge each against its nearest *other* image, as a new
    # image of the same kind would be judged.
    flagged, rules = 0, Counter()
    for own, r in zip(ids, results, strict=True):
        nearest_other = next(h.distance for h in r.hits if h.id != own)
        t = engine.trust.assess(r.reconstruction_mse, nearest_other, r.query)
        flagged += not t.in_distribution
        rules.update(rule for rule, hit in broken_rules(t).items() if hit)
    print(f"genuine test images flagged (self excluded): {flagged} of {len(ids)} ({flagged / len(ids):.2%})")
    print("  by rule (an image may break several): " + ", ".join(f"{rule} {rules[rule]}" for rule in RULES))
    print(f"\n{'input':<22} {'recon %':>8} {'neighbour %':>12} {'content %':>10}  verdict")
    for name, image in unlike_inputs().items():
        t = engine.query(image, k=1).trust
        verdict = "in distribution" if t.in_distribution else "FLAGGED"
        print(
            f"{name:<22} {t.reconstruction_percentile:>8.1f} {t.neighbour_percentile:>12.1f} "
            f"{t.content_percentile:>10.1f}  {verdict}"
        )


if __name__ == "__main__":
    main()
