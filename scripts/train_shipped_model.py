"""Train the model that ships inside the package, measure it, and record what it reached.

    python scripts/train_shipped_model.py            # train, measure, write aesearch/model/shipped/
    python scripts/train_shipped_model.py --check    # train again into a temporary file and compare
    python scripts/train_shipped_model.py --recipe retrieval --precision fp32 --measure-only

Trains `TrainConfig.for_recipe(RECIPE, seed=SEED)` on Fashion-MNIST twice (needs PyTorch), builds
the default bundle with each model and scores it:
  * validation: a model trained on the first 50,000 training images only, its bundle queried with
    the last 10,000 against the other 50,000 (`eval --protocol validation`): no query was seen in
    training, so this figure is fit to choose by;
  * test: the model trained on all 60,000 (the one shipped), the 10,000 test images against the
    60,000 training ones: reported, never chosen by.
It writes the second checkpoint as `aesearch/model/shipped/fashion-mnist.safetensors` and, beside it,
`fashion-mnist.json`: the file's SHA-256 (which `aesearch.model.shipped` checks before use), the
recipe, the machine, the training times and the figures. It prints the figures.

--measure-only does the same for any recipe and precision and writes nothing (the users' recipe's
figures beside the shipped one's); --skip-validation trains the test model only.

--check trains the recorded recipe again and says whether it reproduces the recorded test P@10
within 0.005 (exit status 1 if not): training on another CPU, another PyTorch or another precision
(bfloat16 where the CPU has it) rounds differently, so the weights differ, the figures should not.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from aesearch import SearchEngine, TrainConfig, build_index, train_model
from aesearch.model.shipped import SHIPPED_MODEL, SHIPPED_RECORD
from aesearch.quality.evaluate import evaluate

RECIPE = "shipped"
SEED = 0
TOLERANCE = 0.005  # test P@10 a retraining must reproduce
SHIRT = 6  # Fashion-MNIST's class 6, the hardest to rank
VALIDATION_TRAIN = 50_000  # the validation protocol's queries are the last 10,000 training images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="retrain and compare with the record; write nothing")
    parser.add_argument("--data-dir", type=Path, help="Fashion-MNIST folder (default: found)")
    parser.add_argument("--recipe", default=RECIPE, help=f"recipe to train (default: {RECIPE})")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--measure-only", action="store_true", help="train and measure; write nothing")
    parser.add_argument("--skip-validation", action="store_true", help="train the test model only")
    args = parser.parse_args()
    recipe, seed = args.recipe, SEED
    if args.check:
        record = json.loads(SHIPPED_RECORD.read_text())
        recipe, seed = record["recipe"], record["seed"]
    config = TrainConfig.for_recipe(recipe, seed=seed, precision=args.precision)
    with tempfile.TemporaryDirectory() as tmp:
        figures, seconds = {}, {}
        if not (args.check or args.skip_validation):
            checkpoint = Path(tmp) / "validation.safetensors"
            print(f"-- recipe {recipe}, trained on the first {VALIDATION_TRAIN:,} images (validation protocol)")
            result = train_model(
                config, out=checkpoint, data_dir=args.data_dir, limit=VALIDATION_TRAIN, progress=False, log=print
            )
            figures["validation"] = measure(checkpoint, Path(tmp) / "validation", args.data_dir, "validation")
            seconds["validation_model"] = round(result.seconds, 1)
            print(json.dumps(figures["validation"]))
        print(f"-- recipe {recipe}, trained on all 60,000 training images (test protocol; the model shipped)")
        checkpoint = Path(tmp) / "model.safetensors"
        result = train_model(config, out=checkpoint, data_dir=args.data_dir, progress=False, log=print)
        seconds["model"] = round(result.seconds, 1)
        figures["test"] = measure(checkpoint, Path(tmp) / "bundle", args.data_dir, "test")
        figures["test_mse"] = round(float(result.test_mse), 6)
        print(json.dumps({"recipe": recipe, "precision": result.precision, "seconds": seconds, **figures}, indent=2))
        if args.measure_only:
            return
        if args.check:
            recorded = record["figures"]["test"]["p_at_10"]
            reached = figures["test"]["p_at_10"]
            ok = abs(reached - recorded) <= TOLERANCE
            print(
                f"test P@10 {reached:.4f} against the recorded {recorded:.4f}: {'within' if ok else 'NOT within'} "
                f"{TOLERANCE}"
            )
            sys.exit(0 if ok else 1)
        SHIPPED_MODEL.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(checkpoint, SHIPPED_MODEL)
    record = {
        "file": SHIPPED_MODEL.name,
        "sha256": hashlib.sha256(SHIPPED_MODEL.read_bytes()).hexdigest(),
        "recipe": recipe,
        "seed": seed,
        "train_config": config.to_dict(),
        "trained": {
            "seconds": seconds["model"],
            "validation_model_seconds": seconds.get("validation_model"),
            "device": result.device,
            "precision": result.precision,
            "cpu": cpu(),
            "python": platform.python_version(),
            "torch": torch_version(),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        },
        "figures": figures,
        "made_by": "python scripts/train_shipped_model.py",
    }
    SHIPPED_RECORD.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {SHIPPED_MODEL} and {SHIPPED_RECORD}")


def measure(checkpoint: Path, bundle: Path, data_dir: Path | None, protocol: str) -> dict:
    """The default bundle built with the checkpoint, scored on one protocol."""
    build_index(bundle, model=checkpoint, data_dir=data_dir, progress=False, log=None)
    scores = evaluate(SearchEngine.load(bundle), protocol=protocol).retrieval[0]
    return {
        "p_at_10": round(scores.p_at_10, 4),
        "map_at_100": round(scores.map_at_100, 4),
        "map_at_r": round(scores.map_at_r, 4),
        "shirt_p_at_10": round(scores.per_class_p_at_10[SHIRT], 4),
    }


def cpu() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in lscpu.splitlines() if line.startswith("Flags")), [])
    extras = [flag for flag in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if flag in flags]
    return f"{model} ({', '.join(extras) or 'no AVX2'})"


def torch_version() -> str:
    import torch

    return torch.__version__


if __name__ == "__main__":
    main()
