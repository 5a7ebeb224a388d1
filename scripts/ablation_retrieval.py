"""What each step contributes to retrieval quality: models x search spaces, on both protocols.

For every model (trained here with --train, or given with --checkpoint) and every search space,
builds a real bundle with `build_index` and scores it with `evaluate`:
  * validation: the last 10,000 training images against the other 50,000 (settings are chosen
    on this one);
  * test: the 10,000 test images against the 60,000 training images (reported, never tuned on).
Also prints the raw-pixel and PCA baselines under the test protocol.

    python scripts/ablation_retrieval.py --train
    python scripts/ablation_retrieval.py --checkpoint default=runs/model.safetensors
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from aesearch import SearchEngine, TrainConfig, build_index, train_model
from aesearch.quality.evaluate import evaluate

RECIPES = {"seed": "seed recipe (the article's)", "default": "default recipe"}
PHASES = ((0, 0), (1, 1))
SEARCH_SPACES = [  # (label, metric, transform, whitening shrinkage, whitening dims, embedding shifts)
    ("l2", "l2", "none", 0.0, None, ((0, 0),)),
    ("cosine", "cosine", "none", 0.0, None, ((0, 0),)),
    ("whiten + cosine", "cosine", "whiten", 0.0, None, ((0, 0),)),
    ("whiten(0.01) + cosine", "cosine", "whiten", 0.01, None, ((0, 0),)),
    ("whiten(0.03) + cosine", "cosine", "whiten", 0.03, None, ((0, 0),)),
    ("phase pool + cosine", "cosine", "none", 0.0, None, PHASES),
    ("phase pool + whiten(0.01) + cosine", "cosine", "whiten", 0.01, None, PHASES),
    ("phase pool + whiten(0.03) + cosine", "cosine", "whiten", 0.03, None, PHASES),
    ("  ... keeping 256 axes", "cosine", "whiten", 0.03, 256, PHASES),
    ("  ... keeping 192 axes (default)", "cosine", "whiten", 0.03, 192, PHASES),
    ("  ... keeping 128 axes", "cosine", "whiten", 0.03, 128, PHASES),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--train", action="store_true", help=f"train the {', '.join(RECIPES)} recipes first")
    parser.add_argument("--out", default="runs/ablation", help="where --train writes its checkpoints")
    args = parser.parse_args()

    models = dict(item.split("=", 1) for item in args.checkpoint)
    if args.train:
        for recipe, label in RECIPES.items():
            path = Path(args.out) / f"{recipe}.safetensors"
            result = train_model(TrainConfig.for_recipe(recipe), out=path, progress=False, log=None)
            print(f"trained {label}: test MSE {result.test_mse:.5f} in {result.seconds:.0f} s -> {path}")
            models[label] = str(path)
    if not models:
        parser.error("give --checkpoint NAME=PATH or --train")

    print(f"\n{'model':<28} {'search space':<36} {'val P@10':>9} {'test P@10':>10} {'test mAP@100':>13}")
    baselines_pending = True
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in models.items():
            for label, metric, transform, shrinkage, dims, shifts in SEARCH_SPACES:
                start = time.perf_counter()
                bundle = Path(tmp) / "bundle"
                build_index(
                    bundle,
                    model=path,
                    metric=metric,
                    transform=transform,
                    whiten_shrinkage=shrinkage,
                    whiten_dims=dims,
                    embedding_shifts=shifts,
                    progress=False,
                    log=None,
                )
                engine = SearchEngine.load(bundle)
                val = evaluate(engine, protocol="validation").retrieval[0]
                test = evaluate(engine, baselines=baselines_pending).retrieval
                print(
                    f"{name:<28} {label:<36} {val.p_at_10:>9.4f} {test[0].p_at_10:>10.4f} "
                    f"{test[0].map_at_100:>13.4f}   ({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
                for baseline in test[1:]:
                    print(
                        f"{'baseline: ' + baseline.name:<28} {'l2':<36} {'':>9} {baseline.p_at_10:>10.4f} "
                        f"{baseline.map_at_100:>13.4f}"
                    )
                baselines_pending = False


if __name__ == "__main__":
    main()
