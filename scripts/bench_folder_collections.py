"""Labelled folder collections from packages: does a model's latent search beat raw pixels on them?

    OMP_NUM_THREADS=1 nice -n 19 python scripts/bench_folder_collections.py \\
        [--model NAME=CKPT ...] [--space default --space unwhitened] [--work DIR]
        [--collections digits,openclipart,icons] [--per-class 80] [--json FILE]

Issue 19's target: on every labelled folder collection, the Fashion-MNIST model's P@10 is at least
that of raw pixels under the same preprocessing. Each collection below is written once as a folder
of PNG files, one subfolder per class (under --work, default /work/bench/folders: 25 MB, and
about 30 MB of bundles per model and search space, rebuilt on every run),
indexed with `build_from_folders` (what `aesearch build-index --images DIR --labels folders --model
CKPT` does) in the default search space (pooled z, whitening to 192, cosine; `--space unwhitened`
adds the same without whitening) once per --model (default: the model shipped in the package), and
measured as `aesearch eval --baselines` does: the collection protocol holds out every 5th labelled
image (in id order, i.e. sorted by class folder then file name: a fifth of each class) as a query
against the other four fifths; "pixels" and "PCA" (to the z size, or to the number of database
images when that is smaller, which makes it raw pixels rotated) search the same preprocessed 28x28
images the model encodes, with Euclidean distance. The whole run takes well under a minute.

Collections (counts after dropping byte-identical copies and capping each class at --per-class,
default 80, evenly spaced over the class's files in sorted order):
  * digits: scikit-learn's `load_digits` (UCI optical digits: 1,797 8x8 images, 16 grey levels),
    written grey on black, upscaled 4x to 32x32 (bilinear); 10 classes 0-9 of 174-183 images each,
    never capped: 1,797 images, 360 queries. Preprocessing keeps the polarity (dark background),
    trims to the digit and pads it to 28x28, as for any file.
  * openclipart: Debian's `openclipart-png` (/usr/share/openclipart/png), 8 of its category
    folders, each with its subfolders: birds (animals/birds: 49, its two "Linked Image Not Found"
    placeholders dropped), bugs (animals/bugs: 49), mammals (animals/mammals: 80 of 117), fruit
    (food/fruit: 80 of 89), flowers (plants/flowers: 32), houses (buildings/homes: 38), smilies
    (people/smilies: 43), flags (signs_and_symbols/flags: 80 of 534): 451 images, 91 queries.
    Clip art of any size, mostly transparent RGBA on no background, copied as it is; the five
    files over 16 M pixels (two fruit and three flag posters) are left out.
  * icons: the full-colour PNG icons (not their aliases, which are symlinks, nor the "-symbolic"
    ones) of three Debian icon themes at one size each (oxygen-icon-theme 64x64, tango-icon-theme
    32x32, adwaita-icon-theme 48x48), classed by icon name where a class's icons look alike:
    folder (folder*: 50), face (face-*: 47), document (text-* in mimetypes, page icons: 53),
    weather (weather-*, stock_weather-*: 34), arrow (go-*, not go-home: 30): 214 images, 43
    queries. Theme contexts (places, devices, apps...) are not classes: their icons look nothing
    alike. Breeze, elementary and Papirus ship SVG only and no SVG renderer is installed here.

Install the packages with `apt-get install openclipart-png oxygen-icon-theme tango-icon-theme
adwaita-icon-theme` (scikit-learn is aesearch's `maps` extra); a collection whose package is
missing is skipped with a line saying so. The collections are small, so the figures are coarse:
on icons one query whose ten neighbours all change class moves P@10 by 0.023.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from aesearch import SearchEngine, defaults
from aesearch.pipelines.collection import build_from_folders
from aesearch.quality.evaluate import EvalReport, evaluate, protocol_rows
from aesearch.quality.metrics import relevance
from aesearch.search.index import IndexSpec, VectorIndex

OPENCLIPART = Path("/usr/share/openclipart/png")
OPENCLIPART_CLASSES = {  # class -> the package's category folder (with its subfolders)
    "birds": "animals/birds",
    "bugs": "animals/bugs",
    "mammals": "animals/mammals",
    "fruit": "food/fruit",
    "flowers": "plants/flowers",
    "houses": "buildings/homes",
    "smilies": "people/smilies",
    "flags": "signs_and_symbols/flags",
}
# Rendered from SVGs whose linked bitmap was missing: a red cross and "Linked Image Not Found".
OPENCLIPART_PLACEHOLDERS = {"duck_yellow_ii_kurt_cagl_.png", "tux_didier_fabert_01.png"}
ICON_THEMES = {  # theme -> (package, the one size used: the same icon at two sizes would be its own neighbour)
    "oxygen": ("oxygen-icon-theme", Path("/usr/share/icons/oxygen/base/64x64")),
    "tango": ("tango-icon-theme", Path("/usr/share/icons/Tango/32x32")),
    "adwaita": ("adwaita-icon-theme", Path("/usr/share/icons/Adwaita/48x48")),
}
LARGEST = 16_000_000  # pixels: the few posters above this would take most of the run to decode
MINIMUM = 25  # images a class needs to be kept
PER_CLASS = 80


@dataclass(frozen=True)
class Collection:
    name: str
    source: str  # the package it comes from
    write: Callable[[Path, int], dict[str, int]]  # (folder, per-class cap) -> images per class


# --- picking files -------------------------------------------------------------------------------


def pick(groups: dict[str, list[Path]], *, per_class: int, minimum: int = MINIMUM) -> dict[str, list[Path]]:
    """The files each class keeps: byte-identical copies dropped (the first, in class then path
    order, stays: a copy across two classes would be a query's exact match in the wrong class),
    classes under `minimum` dropped, the rest capped at `per_class` evenly spaced over sorted paths.
    """
    seen: set[str] = set()
    kept: dict[str, list[Path]] = {}
    for name in sorted(groups):
        unique = []
        for path in sorted(groups[name]):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest not in seen:
                seen.add(digest)
                unique.append(path)
        if len(unique) < minimum:
            continue
        if len(unique) > per_class:
            unique = [unique[i] for i in np.linspace(0, len(unique) - 1, per_class).round().astype(int)]
        kept[name] = unique
    return kept


def icon_class(context: str, stem: str) -> str | None:
    """The class of an icon from its theme context folder and name, or None when in none of them."""
    if stem.startswith("folder"):
        return "folder"
    if stem.startswith("face-"):
        return "face"
    if context == "mimetypes" and stem.startswith("text-"):
        return "document"
    if stem.startswith(("weather-", "stock_weather-")):
        return "weather"
    if stem.startswith("go-") and stem != "go-home":
        return "arrow"
    return None


def small_enough(path: Path) -> bool:
    with warnings.catch_warnings():  # the header of a poster is no decompression bomb: it is not decoded
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:  # reads the header only
                return image.width * image.height <= LARGEST
        except (OSError, Image.DecompressionBombError):
            return False


def copy_classes(kept: dict[str, list[Path]], out: Path, name: Callable[[Path], str]) -> dict[str, int]:
    for label, paths in kept.items():
        (out / label).mkdir(parents=True, exist_ok=True)
        for path in paths:
            shutil.copyfile(path, out / label / name(path))
    return {label: len(paths) for label, paths in kept.items()}


# --- the collections -----------------------------------------------------------------------------


def write_digits(out: Path, per_class: int) -> dict[str, int]:
    from sklearn.datasets import load_digits

    digits = load_digits()  # (1797, 8, 8), grey levels 0-16; not capped: every image is used
    counts: dict[str, int] = {}
    for n, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        grey = Image.fromarray((image * (255 / 16)).round().astype(np.uint8))
        path = out / str(label) / f"digit-{n:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        grey.resize((32, 32), Image.Resampling.BILINEAR).save(path)
        counts[str(label)] = counts.get(str(label), 0) + 1
    return counts


def write_openclipart(out: Path, per_class: int) -> dict[str, int]:
    groups = {
        label: [
            p
            for p in (OPENCLIPART / folder).rglob("*.png")
            if p.name not in OPENCLIPART_PLACEHOLDERS and small_enough(p)
        ]
        for label, folder in OPENCLIPART_CLASSES.items()
    }
    kept = pick(groups, per_class=per_class)
    # Names keep the subfolder, so two files of one name in different subfolders both stay.
    return copy_classes(kept, out, lambda p: "-".join(p.relative_to(OPENCLIPART).parts[1:]))


def write_icons(out: Path, per_class: int) -> dict[str, int]:
    groups: dict[str, list[Path]] = {}
    for root in (root for _, root in ICON_THEMES.values() if root.is_dir()):
        for path in root.rglob("*.png"):
            label = icon_class(path.parent.name, path.stem)
            # A symlink is an alias: its name may say "document" of an application's icon.
            if label and not path.is_symlink() and "symbolic" not in path.name and small_enough(path):
                groups.setdefault(label, []).append(path)
    kept = pick(groups, per_class=per_class)
    theme = {root: name for name, (_, root) in ICON_THEMES.items()}
    return copy_classes(kept, out, lambda p: f"{next(theme[r] for r in theme if r in p.parents)}-{p.name}")


COLLECTIONS = {
    c.name: c
    for c in (
        Collection("digits", "scikit-learn load_digits", write_digits),
        Collection("openclipart", "Debian openclipart-png", write_openclipart),
        Collection("icons", "Debian oxygen/tango/adwaita-icon-theme", write_icons),
    )
}


def missing(name: str) -> str | None:
    """Why a collection cannot be written here (its package is not installed), or None."""
    if name == "digits":
        try:
            import sklearn  # noqa: F401
        except ImportError:
            return "needs scikit-learn: pip install 'aesearch[maps]'"
    if name == "openclipart" and not OPENCLIPART.is_dir():
        return "needs Debian's openclipart-png: apt-get install openclipart-png"
    if name == "icons" and not any(root.is_dir() for _, root in ICON_THEMES.values()):
        packages = " ".join(package for package, _ in ICON_THEMES.values())
        return f"needs an icon theme: apt-get install {packages}"
    return None


def materialise(collection: Collection, work: Path, per_class: int) -> tuple[Path, dict[str, int]]:
    """The collection's folder under work, written once (again when the cap or the themes changed)."""
    folder, marker = work / collection.name, work / f"{collection.name}.json"
    settings = {"per_class": per_class, "themes": sorted(n for n, (_, r) in ICON_THEMES.items() if r.is_dir())}
    if marker.exists() and folder.is_dir():
        record = json.loads(marker.read_text())
        if record["settings"] == settings:
            return folder, record["counts"]
    shutil.rmtree(folder, ignore_errors=True)
    marker.unlink(missing_ok=True)
    counts = collection.write(folder, per_class)
    marker.write_text(json.dumps({"settings": settings, "counts": counts}, indent=1))  # last: the folder is whole
    return folder, counts


# --- measuring -----------------------------------------------------------------------------------


def search_space(name: str) -> IndexSpec:
    """default: what `aesearch build-index --images DIR` indexes with when given no search-space
    options (`--transform auto`: whitened only with enough images); whitened: whitening forced
    (`--transform whiten`); unwhitened: never (`--transform none`)."""
    params = {"whiten_shrinkage": defaults.WHITEN_SHRINKAGE, "whiten_dims": defaults.WHITEN_DIMS}
    if name == "unwhitened":
        return IndexSpec(defaults.INDEX_TYPE, defaults.METRIC, {}, "none")
    whiten = defaults.TRANSFORM == "whiten"
    return IndexSpec(defaults.INDEX_TYPE, defaults.METRIC, params if whiten else {}, defaults.TRANSFORM)


SPACES = ("default", "whitened", "unwhitened")


def measure(folder: Path, bundle: Path, model: Path, space: str) -> tuple[EvalReport, tuple[float, float]]:
    """The eval report of a bundle built afresh, and the 95% interval of model minus pixels P@10."""
    shutil.rmtree(bundle, ignore_errors=True)  # built afresh: a resumable build must not reuse another model's work
    build_from_folders(
        bundle,
        images=[folder],
        labels="folders",
        model=model,
        spec=search_space(space),
        shifts=defaults.EMBEDDING_SHIFTS,
        transform_auto=space == "default",  # as `build-index --images DIR` (--transform auto)
        workers=1,
        log=None,
    )
    engine = SearchEngine.load(bundle)
    report = evaluate(engine, baselines=True, latency_queries=1, examples=0)
    ours, pixels = per_query_p_at_10(engine)
    # evaluate's protocol, repeated query by query: the means must be its figures
    assert abs(ours.mean() - report.retrieval[0].p_at_10) < 1e-6, (ours.mean(), report.retrieval[0].p_at_10)
    assert abs(pixels.mean() - report.retrieval[1].p_at_10) < 1e-6, (pixels.mean(), report.retrieval[1].p_at_10)
    return report, paired_interval(ours - pixels)


def per_query_p_at_10(engine: SearchEngine) -> tuple[np.ndarray, np.ndarray]:
    """Each query's P@10 in the bundle's search space and on raw pixels, under evaluate's protocol."""
    ids, database, queries, labels, _ = protocol_rows(engine, "test")
    latents = engine.bundle.embeddings(ids)
    pixels = engine.bundle.images(ids).reshape(len(ids), -1).astype(np.float32) / np.float32(255)
    found = []
    for vectors, spec, transform in (
        (latents, IndexSpec("flat", engine.index.spec.metric), engine.index.transform),
        (pixels, IndexSpec("flat", "l2"), None),
    ):
        index = VectorIndex.build(vectors[database], spec, transform)
        _, neighbours = index.search(vectors[queries], 10)
        found.append(relevance(labels[database][neighbours], labels[queries]).mean(axis=1))
    return found[0], found[1]


def paired_interval(differences: np.ndarray, rounds: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of the mean of per-query differences (queries resampled, seeded)."""
    rng = np.random.default_rng(0)
    means = differences[rng.integers(0, len(differences), (rounds, len(differences)))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(low), float(high)


def parse_models(values: Iterable[str]) -> dict[str, Path]:
    """NAME=PATH (or a bare PATH, named by its file stem) -> {name: path}; none: the shipped model."""
    models: dict[str, Path] = {}
    for value in values:
        name, _, path = value.rpartition("=")
        name = name or Path(path).stem
        if name in models:
            raise SystemExit(f"--model {value}: the name {name!r} is given twice; name each model: NAME=PATH")
        if not Path(path).is_file():
            raise SystemExit(f"--model {value}: no checkpoint at {path}")
        models[name] = Path(path)
    if not models:
        from aesearch.model.shipped import shipped_model

        models["shipped"] = shipped_model()
    return models


def cpu() -> str:
    name = next(
        (line.split(":", 1)[1].strip() for line in _lscpu().splitlines() if line.startswith("Model name")), "unknown"
    )
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    return f"{name}, {os.cpu_count()} cores, avx512: {'yes' if ' avx512f' in flags else 'no'}"


def _lscpu() -> str:
    try:
        return subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return ""


def row(collection: str, model: str, space: str, report: EvalReport, interval: tuple[float, float]) -> dict:
    ours, pixels, pca = report.retrieval[0], report.retrieval[1], report.retrieval[2]
    return {
        "collection": collection,
        "model": model,
        "images": report.n_queries + report.n_database,
        "classes": len(report.class_names),
        "queries": report.n_queries,
        "space": space,
        "search": ours.name,
        "p_at_10": ours.p_at_10,
        "pixels_p_at_10": pixels.p_at_10,
        "pca_p_at_10": pca.p_at_10,
        "pca_dims": pca.dims,
        "minus_pixels_95": list(interval),
        "map_at_r": ours.map_at_r,
        "pixels_map_at_r": pixels.map_at_r,
        "pca_map_at_r": pca.map_at_r,
        "class_names": report.class_names,
        "per_class_p_at_10": ours.per_class_p_at_10,
        "pixels_per_class_p_at_10": pixels.per_class_p_at_10,
    }


def print_table(results: list[dict]) -> None:
    print()
    print(
        f"{'collection':<12} {'model':<12} {'space':<10} {'images':>6} {'classes':>7} {'queries':>7}  {'P@10':>6} "
        f"{'pixels':>6} {'PCA':>6} {'-pixels':>7} {'(95% interval)':>16}  {'mAP@R':>6} {'pixels':>6} {'PCA':>6}"
    )
    for r in results:
        print(
            f"{r['collection']:<12} {r['model']:<12} {r['space']:<10} "
            f"{r['images']:>6,} {r['classes']:>7} {r['queries']:>7}  "
            f"{r['p_at_10']:>6.3f} {r['pixels_p_at_10']:>6.3f} {r['pca_p_at_10']:>6.3f} "
            f"{r['p_at_10'] - r['pixels_p_at_10']:>+7.3f} {'({:+.3f}, {:+.3f})'.format(*r['minus_pixels_95']):>16}  "
            f"{r['map_at_r']:>6.3f} {r['pixels_map_at_r']:>6.3f} "
            f"{r['pca_map_at_r']:>6.3f}"
        )
    print("\nP@10 per class, model / raw pixels:")
    for r in results:
        cells = ", ".join(
            f"{name} {ours:.2f}/{pixels:.2f}"
            for name, ours, pixels in zip(
                r["class_names"], r["per_class_p_at_10"], r["pixels_per_class_p_at_10"], strict=True
            )
        )
        print(f"  {r['collection']} ({r['model']}, {r['space']}): {cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=CKPT",
        help="a checkpoint to measure, repeatable (default: the model shipped in the package)",
    )
    parser.add_argument(
        "--work", type=Path, default=Path("/work/bench/folders"), help="where collections and bundles go"
    )
    parser.add_argument(
        "--collections", default=",".join(COLLECTIONS), help="comma-separated, of: " + ", ".join(COLLECTIONS)
    )
    parser.add_argument("--per-class", type=int, default=PER_CLASS, help="images kept per class (not for digits)")
    parser.add_argument(
        "--space",
        action="append",
        choices=SPACES,
        help="search space, repeatable (default: default, as build-index; whitened, unwhitened: forced either way)",
    )
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    models = parse_models(args.model)
    names = [n.strip() for n in args.collections.split(",") if n.strip()]
    unknown = [n for n in names if n not in COLLECTIONS]
    if unknown:
        raise SystemExit(f"unknown collection(s) {', '.join(unknown)}: choose from {', '.join(COLLECTIONS)}")
    print(f"CPU: {cpu()}")
    for name, path in models.items():
        print(f"model {name}: {path} (sha256 {hashlib.sha256(path.read_bytes()).hexdigest()[:12]})")
    results = []
    for name in names:
        collection = COLLECTIONS[name]
        why = missing(name)
        if why:
            print(f"{name}: skipped ({why})")
            continue
        folder, counts = materialise(collection, args.work, args.per_class)
        print(f"{name} ({collection.source}): {sum(counts.values()):,} images in {folder}: {counts}", flush=True)
        for model_name, model in models.items():
            for space in args.space or ["default"]:
                report, interval = measure(folder, args.work / "bundles" / model_name / f"{name}-{space}", model, space)
                results.append(row(name, model_name, space, report, interval))
    print_table(results)
    if args.json:
        args.json.write_text(
            json.dumps({"cpu": cpu(), "models": {k: str(v) for k, v in models.items()}, "rows": results}, indent=1)
        )


if __name__ == "__main__":
    main()
