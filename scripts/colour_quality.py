"""What `aesearch build-index --images` gives on the labelled colour collections, by the package itself.

For each collection made by scripts/colour_collections.py (icons, emoji, openclipart; classes and
groups in <name>.json), the database images are linked into class folders, indexed by the CLI
exactly as a user would (`aesearch build-index --images DB --labels folders`, training a colour
model on them), and every query image (never trained on) is searched through the Python API. P@10
is the share of a query's 10 hits of its class. Beside it, under the same protocol and on the same
prepared images (the bundle's own contract): raw RGB pixels (L2), RGB and HSV histograms (L1 and
Hellinger), the grey Fashion-MNIST model (the vectors' first part, cosine) and the prior alone (grey
model + 0.5 x histogram, no training). Differences come with a paired 95% bootstrap interval.

    python scripts/colour_quality.py --validation          # choosing: the database split again
    python scripts/colour_quality.py                       # the real split: report once

--validation carves queries out of the database (per class, every 4th group), as
experiment_colour.py's validation does; the real split's queries are not read.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from experiment_colour import (  # the same measures the experiment took, on the package's vectors
    ROOT,
    VALIDATION_HOLD_OUT,
    histograms,
    interval,
    squared_l2,
)
from experiment_colour import cosine_distance as cosine


def split(record: dict, validation: bool) -> tuple[list[str], list[str]]:
    files = record["files"]
    database = sorted(f for f in files if files[f]["split"] == "database")
    if not validation:
        return database, sorted(f for f in files if files[f]["split"] == "query")
    held = set()
    for label in record["classes"]:
        groups = sorted({files[f]["group"] for f in database if files[f]["class"] == label})
        held |= {(label, g) for g in groups[VALIDATION_HOLD_OUT - 1 :: VALIDATION_HOLD_OUT]}
    query = [f for f in database if (files[f]["class"], files[f]["group"]) in held]
    return [f for f in database if f not in set(query)], query


def per_query_p10(query_vectors, database_vectors, query_labels, database_labels, distance) -> np.ndarray:
    d = distance(query_vectors, database_vectors)
    order = np.argsort(d, axis=1, kind="stable")[:, :10]
    return (database_labels[order] == query_labels[:, None]).mean(axis=1)


def l1(q, d):
    return np.stack([np.abs(d - row).sum(1) for row in q])


def measure(
    name: str, validation: bool, extra_args: list[str], keep: Path | None, train_args: list[str] | None = None
) -> dict:
    from aesearch.search.engine import SearchEngine

    record = json.loads((ROOT / f"{name}.json").read_text())
    database, queries = split(record, validation)
    work = Path(tempfile.mkdtemp(prefix=f"colour-{name}-"))
    db = work / "db"
    for f in database:
        target = db / record["files"][f]["class"] / Path(f).name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            target = target.with_name(f"{Path(f).parent.name}-{target.name}")
        target.symlink_to(ROOT / name / f)
    index = work / "index"
    command = [sys.executable, "-m", "aesearch", "build-index", "--images", str(db), "--index-dir", str(index)]
    started = time.perf_counter()
    if train_args is not None:  # `aesearch train --images` with these options, then a build with its model
        model = work / "model.safetensors"
        train = [sys.executable, "-m", "aesearch", "train", "--images", str(db), "--out", str(model), *train_args]
        subprocess.run(train, check=True, stdout=subprocess.DEVNULL)
        command += ["--model", str(model)]
    command += ["--labels", "folders", *extra_args]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    build_seconds = time.perf_counter() - started
    engine = SearchEngine.load(index)
    bundle = engine.bundle
    ids = bundle.live_ids()
    classes = np.array([Path(p).parent.name for p in bundle.paths_of(ids)])
    query_paths = [ROOT / name / f for f in queries]
    query_classes = np.array([record["files"][f]["class"] for f in queries])
    vectors = engine.encode([str(p) for p in query_paths])
    _, found = engine.search(vectors, 10)
    hit_classes = np.array([[Path(p).parent.name for p in bundle.paths_of(row)] for row in found])
    ours = (hit_classes == query_classes[:, None]).mean(axis=1)
    # Baselines on the same pictures: the bundle's images and the queries framed by its contract, each
    # as pictures show it (onto white: what "raw RGB pixels" are to a person).
    d8 = bundle.pictures(ids)
    q8 = np.rint(engine.autoencoder.pictures(engine.prepare([str(p) for p in query_paths])) * 255).astype(np.uint8)
    flat = lambda x: x.reshape(len(x), -1).astype(np.float32) / 255  # noqa: E731
    rows = {"pixels L2": per_query_p10(flat(q8), flat(d8), query_classes, classes, squared_l2)}
    for space in ("rgb", "hsv"):
        hq, hd = histograms(q8, space), histograms(d8, space)
        rows[f"{space} histogram L1"] = per_query_p10(hq, hd, query_classes, classes, l1)
        rows[f"{space} histogram Hellinger"] = per_query_p10(
            np.sqrt(hq), np.sqrt(hd), query_classes, classes, squared_l2
        )
    config = engine.autoencoder.config
    stored = bundle.embeddings(ids)
    if config.prior:
        from aesearch.model.prior import prior_space

        rows["grey model (cosine)"] = per_query_p10(vectors[:, :314], stored[:, :314], query_classes, classes, cosine)
        grey, bins = 314, 314 + config.histogram_size
        rows["prior alone (grey + 0.5 x histogram)"] = per_query_p10(
            prior_space(vectors[:, :grey], vectors[:, grey:bins]),
            prior_space(stored[:, :grey], stored[:, grey:bins]),
            query_classes,
            classes,
            cosine,
        )
    best_histogram = max((k for k in rows if "histogram" in k), key=lambda k: rows[k].mean())
    report = {
        "collection": name,
        "split": "validation" if validation else "real",
        "database": len(database),
        "queries": len(queries),
        "model": config.describe(),
        "build_seconds": round(build_seconds, 1),
        "test_mse": bundle.checkpoint.info.get("test_mse"),
        "p_at_10": float(ours.mean()),
        "baselines": {k: float(v.mean()) for k, v in rows.items()},
        "differences": {k: [float((ours - v).mean()), *interval(ours - v)] for k, v in rows.items()},
        "best_histogram": best_histogram,
        "cpu": cpu(),
        "load": os.getloadavg()[0],
    }
    if keep is not None:
        shutil.copytree(index, keep / f"{name}-{report['split']}", dirs_exist_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    return report


def cpu() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collections", default="icons,emoji,openclipart")
    parser.add_argument("--validation", action="store_true", help="queries carved from the database split")
    parser.add_argument("--results", type=Path, default=ROOT / "package-results.jsonl")
    parser.add_argument("--keep", type=Path, default=None, help="copy each bundle into this folder")
    parser.add_argument(
        "--train", default=None, help="train with `aesearch train --images DB` and these options first (quoted)"
    )
    parser.add_argument("build_args", nargs="*", help="more build-index options, after --")
    args = parser.parse_args()
    train_args = None if args.train is None else args.train.split()
    for name in args.collections.split(","):
        report = measure(name, args.validation, args.build_args, args.keep, train_args)
        report["train_args"] = train_args
        with open(args.results, "a") as f:
            f.write(json.dumps(report) + "\n")
        print(
            f"{name} ({report['split']}, {report['database']} indexed, {report['queries']} queries, "
            f"{report['model']}, build {report['build_seconds']} s): P@10 {report['p_at_10']:.3f}"
        )
        for k, (diff, lo, hi) in report["differences"].items():
            print(f"  vs {k:40s} {report['baselines'][k]:.3f}: {diff:+.3f} ({lo:+.3f}..{hi:+.3f})")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
