"""Labelled colour collections from Debian packages, with a split that keeps near-duplicates together.

    apt-get install openclipart-png fonts-noto-color-emoji unicode-data oxygen-icon-theme \\
        tango-icon-theme adwaita-icon-theme gnome-icon-theme mate-icon-theme moka-icon-theme \\
        lxde-icon-theme faenza-icon-theme elementary-xfce-icon-theme
    python scripts/colour_collections.py [--out /work/bench/colour] [--only openclipart,icons,emoji]

Writes each collection as /work/bench/colour/<collection>/<class>/<name>.png (RGBA kept, longest
side shrunk to at most 128 px) and /work/bench/colour/<collection>.json: its source, classes and
counts, and for every file its class, its group and its split ("query" or "database").

The split (issue 20): per class, the files are put in groups of near-duplicates, the groups sorted
by name, and every 5th group (the 5th, 10th, ...) is held out as queries; the rest is the
database a model is trained on and searched. With single-file groups this is `eval --baselines`'
"every 5th image per class". A group is what must not straddle the split:
  * icons: one icon name (across themes: "folder-music" drawn by Oxygen and by Tango is one group),
    one size per theme (the same icon at 32 and 48 px would be its own neighbour);
  * emoji: one emoji name with the gender word dropped ("man cook", "woman cook", "cook" are one);
  * openclipart: one file name with its trailing variant number dropped ("rose_01", "rose_02"),
    unless the series is longer than 10 files (then each file is its own group).
On top, byte-identical files and near-identical images (16x16 thumbnails on white whose mean
absolute difference is under 0.02) are dropped wherever they fall, keeping the first in sorted
order: a near-copy in two classes is a wrong label, in one class a free hit.

Collections and labels (classes a person would give, and which look alike within):
  * openclipart: Debian openclipart-png category folders (with subfolders) chosen for visual
    coherence: birds, bugs, mammals, fish, fruit, desserts, beverages, flowers, houses, smilies,
    stickmen, flags, stars, arrows, jigsaw, roadsigns, weather, clocks, vehicles, boats.
  * icons: full-colour PNG icons of nine themes (Oxygen 64, Tango 32, Adwaita 64, GNOME 48, MATE
    48, Moka 64, nuoveXT2 64, Faenza 64, elementary-xfce 64), not aliases (symlinks) or symbolic
    ones, classed by icon name: folder, face (emotes), document (text-* mimetypes), weather,
    arrow (go-*), speaker (audio-volume-*), player (media-playback/skip/seek-*), battery,
    printer, harddisk (drive-harddisk*), disc (media-optical*), wifi (network-wireless*).
  * emoji: Noto Color Emoji (fonts-noto-color-emoji, its 136 px bitmaps) of the Unicode emoji
    list (unicode-data's emoji-test.txt: fully-qualified, no skin-tone variants), classed by
    Unicode subgroup, merged where they look alike: face (the face-* subgroups), flag
    (country-flag), mammal, bird, fruit & veg, dish (food-prepared), vehicle (transport-*),
    weather (sky & weather), clothing, clock (time), heart, shape (geometric), letters
    (alphanum and keycap), people (person-role), building (place-building), sport.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

OPENCLIPART = Path("/usr/share/openclipart/png")
OPENCLIPART_CLASSES = {
    "birds": ["animals/birds"],
    "bugs": ["animals/bugs"],
    "mammals": ["animals/mammals"],
    "fish": ["animals/fish"],
    "fruit": ["food/fruit"],
    "desserts": ["food/desserts"],
    "beverages": ["food/beverages"],
    "flowers": ["plants/flowers"],
    "houses": ["buildings/homes"],
    "smilies": ["people/smilies"],
    "stickmen": ["people/stickmen"],
    "flags": ["signs_and_symbols/flags"],
    "stars": ["shapes/stars"],
    "arrows": ["shapes/arrows"],
    "jigsaw": ["shapes/jigsaw"],
    "roadsigns": ["transportation/roadsigns"],
    "weather": ["signs_and_symbols/weather"],
    "clocks": ["signs_and_symbols/clocks"],
    "vehicles": ["transportation/vehicles"],
    "boats": ["transportation/boating"],
}
OPENCLIPART_PLACEHOLDERS = {"duck_yellow_ii_kurt_cagl_.png", "tux_didier_fabert_01.png"}

ICONS = Path("/usr/share/icons")
ICON_THEMES = {  # theme folder -> the one size used (a path part)
    "oxygen": "64x64",
    "Tango": "32x32",
    "Adwaita": "64x64",
    "gnome": "48x48",
    "mate": "48x48",
    "Moka": "64x64",
    "nuoveXT2": "64x64",
    "Faenza": "64",
    "elementary-xfce": "64",
}

EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
EMOJI_CLASSES = {  # class -> Unicode subgroups
    "flag": ["country-flag"],
    "mammal": ["animal-mammal"],
    "bird": ["animal-bird"],
    "fruit-veg": ["food-fruit", "food-vegetable"],
    "dish": ["food-prepared"],
    "vehicle": ["transport-ground", "transport-air", "transport-water"],
    "weather": ["sky & weather"],
    "clothing": ["clothing"],
    "clock": ["time"],
    "heart": ["heart"],
    "shape": ["geometric"],
    "letters": ["alphanum", "keycap"],
    "people": ["person-role"],
    "building": ["place-building"],
    "sport": ["sport"],
}
FACE_SUBGROUPS = re.compile(r"face-(?!costume)")  # face-smiling, face-affection, ... but not the costumes

LARGEST = 16_000_000  # pixels: posters above this are skipped
MAX_SIDE = 128  # stored files are shrunk to this longest side
MINIMUM = 20  # a class with fewer images after de-duplication is dropped
PER_CLASS = 200  # evenly spaced over a class's groups beyond this
HOLD_OUT = 5  # every 5th group per class is a query
NEAR = 0.02  # mean absolute difference of 16x16 thumbnails under which two images are one


# --- sources -------------------------------------------------------------------------------------


def openclipart_items(everything: bool = False) -> Iterable[tuple[str | None, str, str, Image.Image | Path]]:
    """(class, name, group, path) for each file of the chosen openclipart categories (everything:
    then the package's other files, class None)."""
    if everything:
        chosen = {f for folders in OPENCLIPART_CLASSES.values() for f in folders}
        for path in sorted(OPENCLIPART.rglob("*.png")):
            relative = path.relative_to(OPENCLIPART).as_posix()
            if not any(relative.startswith(f + "/") for f in chosen) and small_enough(path):
                yield None, relative.replace("/", "-"), "", path
        return
    for label, folders in OPENCLIPART_CLASSES.items():
        for folder in folders:
            for path in sorted((OPENCLIPART / folder).rglob("*.png")):
                if path.name in OPENCLIPART_PLACEHOLDERS or not small_enough(path):
                    continue
                group = re.sub(r"[_-]?\d+$", "", path.stem)
                yield label, "-".join(path.relative_to(OPENCLIPART).parts[1:]), group, path


def icon_class(context: str, stem: str) -> str | None:
    if stem.startswith("folder"):
        return "folder"
    if stem.startswith("face-"):
        return "face"
    if context in ("mimetypes", "mimes") and stem.startswith("text-"):
        return "document"
    if stem.startswith(("weather-", "stock_weather-")):
        return "weather"
    if stem.startswith("go-") and stem != "go-home":
        return "arrow"
    if stem.startswith("audio-volume-"):
        return "speaker"
    if stem.startswith(("media-playback-", "media-skip-", "media-seek-")):
        return "player"
    if stem.startswith(("battery", "gpm-battery", "xfce4-battery")):
        return "battery"
    if stem.startswith("printer"):
        return "printer"
    if stem.startswith("drive-harddisk"):
        return "harddisk"
    if stem.startswith("media-optical"):
        return "disc"
    if stem.startswith("network-wireless"):
        return "wifi"
    return None


def icon_items(everything: bool = False) -> Iterable[tuple[str | None, str, str, Path]]:
    for theme, size in ICON_THEMES.items():
        root = ICONS / theme
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*.png")):
            parts = path.relative_to(root).parts
            if size not in parts[:-1] or path.is_symlink() or "symbolic" in path.name:
                continue
            context = next((p for p in parts[:-1] if p != size and p != "base"), "")
            label = icon_class(context, path.stem)
            if (label is None) == everything and small_enough(path):
                yield label, f"{theme}-{path.stem}.png", path.stem, path


def emoji_items(everything: bool = False) -> Iterable[tuple[str | None, str, str, Image.Image]]:
    by_subgroup = {s: c for c, subs in EMOJI_CLASSES.items() for s in subs}
    font = ImageFont.truetype(str(EMOJI_FONT), 109)  # the font's one bitmap strike
    subgroup = None
    for line in EMOJI_TEST.read_text(encoding="utf-8").splitlines():
        if line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
            continue
        if not line.strip() or line.startswith("#"):
            continue
        codes, rest = line.split(";", 1)
        if "fully-qualified" not in rest.split("#")[0]:
            continue
        points = [int(c, 16) for c in codes.split()]
        if any(0x1F3FB <= p <= 0x1F3FF for p in points):  # skin tones: five near-copies of one emoji
            continue
        label = "face" if FACE_SUBGROUPS.match(subgroup or "") else by_subgroup.get(subgroup)
        if (label is None) != everything:
            continue
        name = re.sub(r"^E\d+\.\d+\s+", "", rest.split("#", 1)[1].strip().split(" ", 1)[1])
        text = "".join(map(chr, points))
        canvas = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
        ImageDraw.Draw(canvas).text((80, 80), text, font=font, embedded_color=True, anchor="mm")
        if canvas.getbbox() is None:
            continue
        group = re.sub(r"^(man|woman|person|men|women|people)\s+", "", name)
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        yield label, f"{slug}.png", group, canvas


SOURCES = {
    "openclipart": ("Debian openclipart-png", openclipart_items),
    "icons": ("Debian icon themes: " + ", ".join(ICON_THEMES), icon_items),
    "emoji": ("Debian fonts-noto-color-emoji + unicode-data emoji-test.txt", emoji_items),
}


# --- de-duplication and the split ---------------------------------------------------------------


def small_enough(path: Path) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                return image.width * image.height <= LARGEST
        except (OSError, Image.DecompressionBombError):
            return False


def load_rgba(source: Image.Image | Path) -> Image.Image:
    """The image as RGBA, trimmed to its opaque box when it has transparent margins, longest side <= MAX_SIDE."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = source if isinstance(source, Image.Image) else Image.open(source)
        image.load()
    image = image.convert("RGBA")
    box = image.getchannel("A").point(lambda a: 255 if a > 8 else 0).getbbox()
    if box:
        image = image.crop(box)
    if max(image.size) > MAX_SIDE:
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    return image


def thumbnail(image: Image.Image) -> np.ndarray:
    """16x16 RGB on white, aspect kept by padding: what near-duplicates are compared by."""
    side = max(image.size)
    canvas = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    canvas.alpha_composite(image, ((side - image.width) // 2, (side - image.height) // 2))
    return np.asarray(canvas.convert("RGB").resize((16, 16), Image.Resampling.BOX), dtype=np.float32) / 255


def build(name: str, out: Path, per_class: int) -> dict:
    source, items = SOURCES[name]
    folder = out / name
    if folder.exists():
        for old in folder.rglob("*.png"):
            old.unlink()
    seen_bytes: set[str] = set()
    thumbs: list[np.ndarray] = []
    kept: dict[str, dict[str, list[tuple[str, Image.Image]]]] = {}  # class -> group -> [(file name, image)]
    dropped = {"identical": 0, "near": 0}
    for label, file_name, group, src in items():
        image = load_rgba(src)
        digest = hashlib.sha256(image.tobytes() + repr(image.size).encode()).hexdigest()
        if digest in seen_bytes:
            dropped["identical"] += 1
            continue
        seen_bytes.add(digest)
        thumb = thumbnail(image)
        if thumbs and np.abs(np.stack(thumbs) - thumb).mean(axis=(1, 2, 3)).min() < NEAR:
            dropped["near"] += 1
            continue
        thumbs.append(thumb)
        kept.setdefault(label, {}).setdefault(group, []).append((file_name, image))
    files: dict[str, dict] = {}
    counts: dict[str, dict[str, int]] = {}
    for label in sorted(kept):
        for group in [g for g in kept[label] if len(kept[label][g]) > 2 * HOLD_OUT]:
            # A long numbered series (49 jigsaw pieces by one author) is a set of drawings, not
            # copies: near-copies in it are already gone, so its files are split one by one.
            for file_name, image in kept[label].pop(group):
                kept[label][f"{group}/{file_name}"] = [(file_name, image)]
        groups = sorted(kept[label])
        total = sum(len(kept[label][g]) for g in groups)
        if total < MINIMUM:
            continue
        if total > per_class:  # evenly spaced groups, about per_class images
            every = np.arange(0, len(groups), total / per_class)
            groups = [groups[i] for i in np.unique(np.floor(every).astype(int))]
        (folder / label).mkdir(parents=True, exist_ok=True)
        counts[label] = {"query": 0, "database": 0}
        for n, group in enumerate(groups):
            split = "query" if n % HOLD_OUT == HOLD_OUT - 1 else "database"
            for file_name, image in kept[label][group]:
                path = folder / label / file_name
                image.save(path)
                # Two emoji of one class may share a slug: the later file replaces the earlier.
                files[f"{label}/{file_name}"] = {"class": label, "group": group, "split": split}
    for entry in files.values():  # counted from what was written, after any replacement
        counts[entry["class"]][entry["split"]] += 1
    record = {
        "collection": name,
        "source": source,
        "split": f"per class, groups of near-duplicates sorted by name; every {HOLD_OUT}th group is a query",
        "dropped": dropped,
        "classes": sorted(counts),
        "counts": counts,
        "images": len(files),
        "queries": sum(c["query"] for c in counts.values()),
        "files": files,
    }
    (out / f"{name}.json").write_text(json.dumps(record, indent=1))
    return record


def build_extra(name: str, out: Path) -> int:
    """The source's unlabelled images (everything not in a class) as <name>-extra/*.png: extra
    training data for the "bigger collection" runs, never searched. Byte-identical copies and near
    copies of any labelled image (queries included) are left out."""
    record = json.loads((out / f"{name}.json").read_text())
    labelled = np.stack([thumbnail(load_rgba(out / name / f)) for f in record["files"]]).reshape(
        len(record["files"]), -1
    )
    folder = out / f"{name}-extra"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    seen: set[str] = set()
    count = 0
    for _, file_name, _, src in SOURCES[name][1](everything=True):
        image = load_rgba(src)
        digest = hashlib.sha256(image.tobytes() + repr(image.size).encode()).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        if np.abs(labelled - thumbnail(image).reshape(1, -1)).mean(axis=1).min() < NEAR:
            continue
        image.save(folder / file_name)
        count += 1
    record["extra"] = count
    (out / f"{name}.json").write_text(json.dumps(record, indent=1))
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/work/bench/colour"))
    parser.add_argument("--only", default=",".join(SOURCES))
    parser.add_argument("--per-class", type=int, default=PER_CLASS)
    parser.add_argument("--extra", action="store_true", help="also write each source's unlabelled images")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only.split(","):
        record = build(name, args.out, args.per_class)
        summary = ", ".join(f"{k} {v['database']}+{v['query']}" for k, v in record["counts"].items())
        print(
            f"{name}: {record['images']} images ({record['queries']} queries), {len(record['classes'])} classes; "
            f"dropped {record['dropped']}; per class database+query: {summary}",
            flush=True,
        )
        if args.extra:
            print(f"{name}: {build_extra(name, args.out)} unlabelled extra images in {args.out / (name + '-extra')}")


if __name__ == "__main__":
    main()
