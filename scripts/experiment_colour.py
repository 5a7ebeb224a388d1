"""Colour retrieval on labelled colour collections: baselines and collection-trained AutoEncoders.

Issue 20's measurement script. It reads the collections written by scripts/colour_collections.py
(/work/bench/colour/<collection>/ and <collection>.json: class, group and split of every file) and
measures, on their split (every 5th near-duplicate group of each class is a query, searched
against the rest, the database), P@10, mAP@100 and mAP@R of:

  * pixels: the S x S RGB images, Euclidean distance;
  * histogram: joint colour histograms of the same images (RGB 8x8x8 and HSV 16x4x4), compared by
    Hellinger, chi-squared and L1 distances: every combination is reported, and the best is the
    baseline to beat;
  * grey: the Fashion-MNIST model shipped in the package, on aesearch's own 28x28 grey
    preprocessing of the same files, z pooled over the two grid phases, whitened to 192 axes
    (shrinkage 0.03), cosine: what `build-index --images DIR --model` does today;
  * trained: an AutoEncoder trained on the database images only (never the queries), in the
    seed's spirit: stages of strided convolutions (kernel 2 stride 2 as the seed, or kernel 4
    stride 2 padding 1) with LeakyReLU(0.01), flatten, Linear to z (LeakyReLU, as the seed), a
    mirror-image decoder of transposed convolutions ending in a Sigmoid; trained with the
    retrieval recipe (docs/retrieval-objective.md): reconstruction MSE of the clean batch plus
    `--consistency` x NT-Xent (temperature `--temperature`) between two colour-aware views of each
    image, through a projection head over the first `--cons-dims` components of z; then
    `--decoder-epochs` epochs of the decoder alone. Searched by cosine on z, on z whitened, and on
    z pooled over the two grid phases and whitened; test MSE is measured on the queries.

Preprocessing (the colour contract measured here): RGBA composited on white (the collections'
files are transparent clip art, icons and emoji: white is their background), the image padded to a
square with the background colour (aspect kept, never stretched), resized to S x S by area
averaging. The files were trimmed to their opaque box when written.

Views (`--hue` decides the one open question): random affine map (turn up to 10 degrees, zoom by up
to 25%, shift up to 1/8 of the side, mirrored half the time; what falls outside is background),
brightness +-0.15, contrast and saturation x 0.6-1.4, and with `--hue H` the chroma turned by up to
H x 180 degrees in YIQ (H = 1: any hue, a colour-invariant model; 0: hue kept); a rectangle of a
random colour erased in 30% of them.

Two-part search (session 25): `train` also reports the shipped grey model's z (whitened, or
unwhitened: "grey raw") beside alpha x the trained z (whitened), each unit-length, cosine, for
`--alphas`, and grey + 0.5 x RGB Hellinger histogram; `--condition white|raw` feeds the decoder
[the grey z of the image (fixed; whitened to `--condition-dims` axes, or as it is), z], so that z
need only carry what the grey z lacks; `--epochs 0` takes build-index's length (about 200,000
image-passes); `compare --fuse A [--fuse-grey raw]` compares the two-part vector with the
baselines and appends its rows to the results.

Neighbour positives (session 26): `--neighbours K [--neighbour-share S]` pairs a view of an image
with a view of one of its K nearest training images in the space that needs no training (grey z
beside 0.5 x RGB Hellinger histogram) for a share S of the pairs; `train` also reports that space
beside alpha x the trained z.

`--extra N` adds N of the source's unlabelled images (colour_collections.py --extra) to the
training set only: a bigger collection of which the labelled part is searched. `--database N`
trains and searches on a random N of the database (the baselines are measured on the same
subset): where a collection becomes too small to train well.

Run (CPU shared: one thread, nice):

    OMP_NUM_THREADS=1 nice -n 10 python scripts/experiment_colour.py baselines --size 64,32,48
    OMP_NUM_THREADS=1 nice -n 10 python scripts/experiment_colour.py train --collection emoji \\
        --size 32 --widths 32,64,128 --kernel 2 --z 256 --epochs 150 --hue 0 --tag base \\
        [--database 250] [--extra 1000]
    python scripts/experiment_colour.py compare --collection emoji --vectors ROOT/vectors/emoji-32-base-689.npz
    python scripts/experiment_colour.py speed --size 64 --widths 32,64,128,128 --threads 1,2
    python scripts/experiment_colour.py table

`train` prints P@10 / mAP@100 in each search space, the queries' MSE and the training seconds;
`compare` puts a run's saved vectors against every baseline (pixels, histograms, the grey model,
grey model + histogram) query by query with paired 95% bootstrap intervals; `speed` times a
joint epoch per image. Every measured row is appended to /work/bench/colour/results.jsonl
(`--results`) with the CPU; `table` prints them. Preprocessed images are cached under
/work/bench/colour/cache, each run's vectors saved under /work/bench/colour/vectors.
Findings: docs/colour-models.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path("/work/bench/colour")
COLLECTIONS = ("openclipart", "icons", "emoji")


# --- data ----------------------------------------------------------------------------------------


@dataclass
class Collection:
    name: str
    paths: list[Path]
    labels: np.ndarray  # (n,) int
    classes: list[str]
    query: np.ndarray  # (n,) bool
    images: np.ndarray  # (n, S, S, 3) uint8
    rows: np.ndarray | None = None  # (n,) each image's row among all the collection's files, sorted


def to_square(path: Path, size: int, background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """The colour contract: RGBA on the background, padded to a square with it, area-resized to size."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = Image.open(path)
        image.load()
    image = image.convert("RGBA")
    side = max(image.size)
    canvas = Image.new("RGBA", (side, side), (*background, 255))
    canvas.alpha_composite(image, ((side - image.width) // 2, (side - image.height) // 2))
    return np.asarray(canvas.convert("RGB").resize((size, size), Image.Resampling.BOX), dtype=np.uint8)


VALIDATION_HOLD_OUT = 4  # validation: every 4th group of the database per class queries the rest


def load(name: str, size: int, root: Path = ROOT, validation: bool = False) -> Collection:
    """A collection at size x size. validation: the database alone, split again as the collection
    was (per class, groups sorted by name, every VALIDATION_HOLD_OUT-th a query), for choosing
    recipes without looking at the queries."""
    record = json.loads((root / f"{name}.json").read_text())
    every = sorted(record["files"])
    files = [f for f in every if record["files"][f]["split"] == "database"] if validation else every
    classes = record["classes"]
    labels = np.array([classes.index(record["files"][f]["class"]) for f in files])
    if validation:
        held: set[tuple[str, str]] = set()
        for label in classes:
            groups = sorted({record["files"][f]["group"] for f in files if record["files"][f]["class"] == label})
            held |= {(label, g) for g in groups[VALIDATION_HOLD_OUT - 1 :: VALIDATION_HOLD_OUT]}
        query = np.array([(record["files"][f]["class"], record["files"][f]["group"]) in held for f in files])
    else:
        query = np.array([record["files"][f]["split"] == "query" for f in files])
    paths = [root / name / f for f in files]
    cache = root / "cache" / f"{name}-{size}.npy"
    if cache.exists() and np.load(cache, mmap_mode="r").shape[0] == len(every):
        images = np.load(cache)
    else:
        images = np.stack([to_square(root / name / f, size) for f in every])
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, images)
    rows = np.flatnonzero(np.isin(every, files))
    return Collection(name, paths, labels, classes, query, images[rows], rows)


def load_extra(name: str, size: int, root: Path = ROOT) -> np.ndarray:
    """The source's unlabelled images (colour_collections.py --extra), for training only."""
    paths = sorted((root / f"{name}-extra").glob("*.png"))
    cache = root / "cache" / f"{name}-extra-{size}.npy"
    if cache.exists() and np.load(cache, mmap_mode="r").shape[0] == len(paths):
        return np.load(cache)
    images = np.stack([to_square(p, size) for p in paths])
    np.save(cache, images)
    return images


# --- measuring -----------------------------------------------------------------------------------


def scores(distances: np.ndarray, labels: np.ndarray, query: np.ndarray, database: np.ndarray) -> dict:
    """P@10, mAP@100 and mAP@R from a (queries, database) distance matrix (smaller is nearer)."""
    from aesearch.quality.metrics import average_precision_at_r, mean_average_precision_at_k, precision_at_k

    order = np.argsort(distances, axis=1, kind="stable")
    relevant = labels[database][order] == labels[query][:, None]
    r = np.array([(labels[database] == c).sum() for c in labels[query]])
    return {
        "p_at_10": precision_at_k(relevant, 10),
        "map_at_100": mean_average_precision_at_k(relevant, 100),
        "map_at_r": float(average_precision_at_r(relevant, r).mean()),
    }


def squared_l2(q: np.ndarray, d: np.ndarray) -> np.ndarray:
    q, d = q.astype(np.float64), d.astype(np.float64)
    return (q**2).sum(1)[:, None] - 2 * q @ d.T + (d**2).sum(1)[None, :]


def cosine_distance(q: np.ndarray, d: np.ndarray) -> np.ndarray:
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    return 1 - q @ d.T


def whiten(database: np.ndarray, *others: np.ndarray, dims: int = 192, shrinkage: float = 0.03):
    """PCA whitening fitted on the database (aesearch's default space): top `dims` axes, each scaled
    by 1/sqrt(variance + shrinkage x the largest variance)."""
    mean = database.mean(0)
    cov = np.cov((database - mean).T.astype(np.float64))
    values, vectors = np.linalg.eigh(cov)
    top = np.argsort(values)[::-1][: min(dims, len(database) - 1, len(values))]
    projection = vectors[:, top] / np.sqrt(values[top] + shrinkage * values.max())
    return [(x - mean) @ projection for x in (database, *others)]


def histograms(images: np.ndarray, space: str) -> np.ndarray:
    """(n, bins) joint colour histograms, each summing to 1."""
    x = images.reshape(len(images), -1, 3)
    if space == "rgb":
        bins = (8, 8, 8)
        q = (x.astype(np.int32) * 8) // 256
    else:
        hsv = (
            np.stack([np.asarray(Image.fromarray(im).convert("HSV")) for im in images])
            .reshape(len(images), -1, 3)
            .astype(np.int32)
        )
        bins = (16, 4, 4)
        q = np.stack([hsv[..., 0].astype(np.int32) * 16 // 256, hsv[..., 1] * 4 // 256, hsv[..., 2] * 4 // 256], -1)
    index = (q[..., 0] * bins[1] + q[..., 1]) * bins[2] + q[..., 2]
    out = np.zeros((len(images), math.prod(bins)))
    for i in range(len(images)):
        out[i] = np.bincount(index[i], minlength=out.shape[1])
    return out / out.sum(1, keepdims=True)


def histogram_distance(q: np.ndarray, d: np.ndarray, kind: str) -> np.ndarray:
    if kind == "hellinger":
        return squared_l2(np.sqrt(q), np.sqrt(d))
    out = np.empty((len(q), len(d)))
    for i, row in enumerate(q):
        if kind == "l1":
            out[i] = np.abs(d - row).sum(1)
        else:  # chi-squared
            total = d + row
            out[i] = np.divide((d - row) ** 2, total, out=np.zeros_like(d), where=total > 0).sum(1)
    return out


def grey_model_vectors(paths: list[Path]) -> np.ndarray:
    """The shipped Fashion-MNIST model's search vectors: aesearch's grey contract, pooled z."""
    from aesearch import defaults
    from aesearch.model.checkpoint import load_checkpoint
    from aesearch.model.runtime import NumpyAutoEncoder
    from aesearch.model.shipped import shipped_model
    from aesearch.sources.preprocess import preprocess

    model = NumpyAutoEncoder.from_checkpoint(load_checkpoint(shipped_model()))
    images = np.stack([preprocess(p) for p in paths])
    return model.embed(images, defaults.EMBEDDING_SHIFTS)[1]


def grey_vectors(c: Collection, root: Path = ROOT) -> np.ndarray:
    """grey_model_vectors of the collection's images, computed once for all its files (cached as
    compare does) and taken for the rows loaded (the validation split's database, or all)."""
    cache = root / "cache" / f"{c.name}-grey.npy"
    full = np.load(cache) if cache.exists() else None
    if full is None or c.rows is None or len(full) <= c.rows.max():
        full = grey_model_vectors(load(c.name, 32, root).paths)
        np.save(cache, full)
    return full if c.rows is None else full[c.rows]


def extra_grey_vectors(name: str, root: Path = ROOT) -> np.ndarray:
    """grey_model_vectors of the source's unlabelled images (load_extra's order), computed once."""
    paths = sorted((root / f"{name}-extra").glob("*.png"))
    cache = root / "cache" / f"{name}-extra-grey.npy"
    if cache.exists() and np.load(cache, mmap_mode="r").shape[0] == len(paths):
        return np.load(cache)
    vectors = grey_model_vectors(paths)
    np.save(cache, vectors)
    return vectors


def rgb_hellinger(c: Collection, root: Path = ROOT) -> np.ndarray:
    """sqrt of the RGB 8x8x8 histograms of the 64 x 64 images (compare's), for the rows loaded."""
    every = load(c.name, 64, root)
    return np.sqrt(histograms(every.images if c.rows is None else every.images[c.rows], "rgb"))


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def fused(grey_d, grey_q, colour_d, colour_q, alpha: float, grey_space: str = "white"):
    """The two-part search vector: unit(grey z) beside alpha x unit(colour z, whitened), each
    whitened on the database (grey_space "white"; "raw": the grey z as it is): (database, queries)."""
    gd, gq = whiten(grey_d, grey_q) if grey_space == "white" else (grey_d, grey_q)
    cd, cq = whiten(colour_d, colour_q)
    return (
        np.concatenate([unit(gd), alpha * unit(cd)], 1),
        np.concatenate([unit(gq), alpha * unit(cq)], 1),
    )


def baselines(c: Collection, size: int, with_grey: bool) -> list[dict]:
    q, d = c.query, ~c.query
    rows = []
    flat = c.images.reshape(len(c.images), -1).astype(np.float32) / 255
    rows.append({"method": "pixels", "space": "L2", **scores(squared_l2(flat[q], flat[d]), c.labels, q, d)})
    for space in ("rgb", "hsv"):
        h = histograms(c.images, space)
        for kind in ("hellinger", "chi2", "l1"):
            s = scores(histogram_distance(h[q], h[d], kind), c.labels, q, d)
            rows.append({"method": "histogram", "space": f"{space} {kind}", **s})
    if with_grey:
        v = grey_model_vectors(c.paths)
        rows.append(
            {
                "method": "grey FMNIST model",
                "space": "pooled z, cosine",
                **scores(cosine_distance(v[q], v[d]), c.labels, q, d),
            }
        )
        wd, wq = whiten(v[d], v[q])
        rows.append(
            {
                "method": "grey FMNIST model",
                "space": "pooled z, whitened 192, cosine",
                **scores(cosine_distance(wq, wd), c.labels, q, d),
            }
        )
    for r in rows:
        r.update(collection=c.name, size=size, images=len(c.images), queries=int(q.sum()))
    return rows


# --- the model -----------------------------------------------------------------------------------


def build_model(size: int, widths: list[int], kernel: int, z: int, channels: int = 3, condition: int = 0):
    """condition: the decoder takes [a fixed vector of this many dims (the grey z), z]."""
    import torch
    from torch import nn

    padding = 0 if kernel == 2 else (kernel - 2) // 2
    grid = size >> len(widths)
    if grid << len(widths) != size:
        raise SystemExit(f"size {size} does not halve {len(widths)} times")
    flat = widths[-1] * grid * grid

    def leaky() -> nn.Module:
        return nn.LeakyReLU(0.01)

    down, c = [], channels
    for w in widths:
        down += [nn.Conv2d(c, w, kernel, 2, padding), leaky()]
        c = w
    encoder = nn.Sequential(*down, nn.Flatten(), nn.Linear(flat, z), leaky())
    up = [nn.Linear(condition + z, flat), leaky(), nn.Unflatten(1, (widths[-1], grid, grid))]
    back = list(reversed(widths))
    for i, w in enumerate(back):
        out = back[i + 1] if i + 1 < len(back) else channels
        up.append(nn.ConvTranspose2d(w, out, kernel, 2, padding))
        up.append(leaky() if i + 1 < len(back) else nn.Sigmoid())
    decoder = nn.Sequential(*up)

    class AE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder, self.decoder = encoder, decoder

        def decode(self, z, g=None):
            return self.decoder(z if g is None else torch.cat([g, z], 1))

        def forward(self, x, g=None):
            return self.decode(self.encoder(x), g)

    return AE()


_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=np.float32)


def colour_views(x, generator, *, hue: float, zoom: float = 0.25, background: float = 1.0):
    """One random colour-aware view of each (B, 3, H, W) image in [0, 1]."""
    import torch
    import torch.nn.functional as F

    from aesearch.training.views import _base_grid

    b, _, h, w = x.shape

    def u(*shape):
        return torch.rand(shape, generator=generator) * 2 - 1

    angle, scale = u(b) * math.radians(10), 1 + u(b) * zoom
    mirror = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
    tx, ty = u(b) * 0.25, u(b) * 0.25  # 1/8 of the side: affine_grid's side is 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * mirror, -sin, tx], 1), torch.stack([sin * mirror, cos, ty], 1)], 1)
    grid = (_base_grid(h, w, x.device) @ theta.transpose(1, 2)).view(b, h, w, 2)
    v = F.grid_sample(x - background, grid, align_corners=False, padding_mode="zeros") + background
    v = v + u(b, 1, 1, 1) * 0.15
    mean = v.mean(dim=(1, 2, 3), keepdim=True)
    v = (v - mean) * (1 + u(b, 1, 1, 1) * 0.4) + mean
    yiq = torch.as_tensor(_YIQ)
    t = torch.einsum("ij,bjhw->bihw", yiq, v)
    chroma = 1 + u(b) * 0.4
    turn = u(b) * math.pi * hue
    c, s = torch.cos(turn) * chroma, torch.sin(turn) * chroma
    i, q = (
        t[:, 1] * c[:, None, None] - t[:, 2] * s[:, None, None],
        t[:, 1] * s[:, None, None] + t[:, 2] * c[:, None, None],
    )
    t = torch.stack([t[:, 0], i, q], 1)
    v = torch.einsum("ij,bjhw->bihw", torch.as_tensor(np.linalg.inv(_YIQ).astype(np.float32)), t)
    from aesearch.training.views import _erased

    mask = _erased(b, h, w, 0.3, generator, x.device)
    colour = torch.rand((b, 3, 1, 1), generator=generator)
    v = torch.where(mask, colour, v)
    return v.clamp_(0, 1)


@dataclass
class Recipe:
    size: int = 64
    widths: str = "32,64,128,128"
    kernel: int = 2
    z: int = 256
    epochs: int = 60
    decoder_epochs: int = 10
    batch: int = 128
    lr: float = 3e-3
    consistency: float = 0.3
    cons_dims: int = 0  # 0: two fifths of z, the package's share
    temperature: float = 0.2
    hue: float = 0.0
    zoom: float = 0.25  # views scaled by 1 +- up to this
    recon_views: float = 0.0  # weight of the views' own reconstruction (augmentation for the decoder too)
    distil: float = 0.0  # with init: weight of the mean squared distance of z from the starting encoder's z
    weight_decay: float = 0.0  # AdamW's, when not 0
    seed: int = 0
    # the decoder conditioned on the shipped grey model's z of each image (fixed, computed once): "white":
    # whitened on the training images (192 axes), "raw": as it is; either unit-length x sqrt(dims)
    condition: str = ""
    condition_dims: int = 192  # --condition white: the whitened grey z's top axes the decoder takes
    # "grey": start from the shipped Fashion-MNIST model (size 28, widths 32,64, kernel 2, z 314), as
    # its negative; "grey-plain": its weights as they are
    init: str = ""
    # Positives from the collection itself (NNCLR / SCAN's idea): a view of an image is pulled
    # towards a view of one of its `neighbours` nearest training images in the prior space that needs
    # no training (unit(grey z) beside 0.5 x unit(RGB Hellinger histogram)), for `neighbour_share`
    # of the pairs; the rest are two views of the same image, as before. 0: off.
    neighbours: int = 0
    neighbour_share: float = 1.0


def start_from_grey_model(model, negative: bool = True) -> None:
    """Copy the shipped Fashion-MNIST model into a 28 x 28 colour member of its shape, so that on a
    grey image of dark ink on white it computes what the grey model computes on the negative (white
    ink on black, as Fashion-MNIST is drawn): the first convolution takes -W/3 from each channel and
    sum(W) as its bias (W.(1 - x)), and the last transposed convolution -W to each channel (the
    sigmoid of -h is 1 - the grey reconstruction)."""
    import torch

    from aesearch.model.checkpoint import load_checkpoint
    from aesearch.model.shipped import shipped_model

    weights = load_checkpoint(shipped_model()).weights
    grey = {name: torch.from_numpy(np.asarray(w, dtype=np.float32)) for name, w in weights.items()}
    state = model.state_dict()
    for name, value in grey.items():
        sign = -1 if negative else 1  # not negative: the weights as they are (the package's have no conv bias)
        if name == "encoder.0.weight":  # (32, 1, 2, 2) -> (32, 3, 2, 2)
            state[name] = (sign * value / 3).repeat(1, 3, 1, 1)
            state["encoder.0.bias"] = value.sum(dim=(1, 2, 3)) if negative else torch.zeros(value.shape[0])
        elif name == "decoder.5.weight":  # (32, 1, 2, 2) -> (32, 3, 2, 2)
            state[name] = (sign * value).repeat(1, 3, 1, 1)
        else:
            assert state[name].shape == value.shape, (name, state[name].shape, value.shape)
            state[name] = value
    for name in state:  # biases the seed has none of start at zero
        if name not in grey and name != "encoder.0.bias":
            state[name] = torch.zeros_like(state[name])
    model.load_state_dict(state)


FUSE_ALPHAS = (0.3, 0.5, 0.7, 1.0)


def condition_vectors(grey: np.ndarray, train_rows: np.ndarray, space: str, dims: int = 192) -> np.ndarray:
    """The decoder's fixed input per image: the grey z whitened on the training images ("white") or
    as it is ("raw"), unit-length x sqrt(dims) (entries of about unit size)."""
    if space not in ("white", "raw"):
        raise SystemExit(f"--condition {space}: white or raw")
    g = whiten(grey[train_rows], grey, dims=dims)[1] if space == "white" else grey
    return (unit(g) * math.sqrt(g.shape[1])).astype(np.float32)


def prior_neighbours(grey: np.ndarray, hist: np.ndarray, k: int) -> np.ndarray:
    """Each training image's k nearest other training images (rows of grey and hist, the training
    images' grey z and RGB Hellinger histograms) in the space that needs no training: unit(grey z,
    as it is) beside 0.5 x unit(histogram), cosine. No label and no query is read."""
    prior = np.concatenate([unit(grey), 0.5 * unit(hist)], 1)
    similarity = prior @ prior.T
    np.fill_diagonal(similarity, -np.inf)
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k]


def train(
    c: Collection,
    recipe: Recipe,
    database_limit: int | None,
    threads: int,
    tag: str = "",
    extra: int = 0,
    alphas: tuple[float, ...] = FUSE_ALPHAS,
    with_grey: bool = True,
) -> tuple[dict, list[dict]]:
    import dataclasses

    import torch
    import torch.nn.functional as F

    from aesearch.training.views import nt_xent, projection_head

    torch.set_num_threads(threads)
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    database = np.flatnonzero(~c.query)
    if database_limit and database_limit < len(database):
        database = np.sort(rng.choice(database, database_limit, replace=False))
    queries = np.flatnonzero(c.query)
    train_images = c.images[database]
    if not recipe.epochs:  # the colour recipe's length for the collection, as build-index takes it
        from aesearch.pipelines.collection import colour_schedule

        schedule = colour_schedule(len(database) + extra)
        recipe = dataclasses.replace(recipe, epochs=schedule["epochs"], decoder_epochs=schedule["decoder_epochs"])
    grey = grey_vectors(c) if with_grey or recipe.condition or recipe.neighbours else None
    # Rows of `everything` (the collection's images, then the unlabelled ones trained on) that train.
    train_rows, extra_rows = database, np.zeros(0, np.int64)
    if extra:  # unlabelled images of the same source: a bigger collection, of which these are searched
        pool = load_extra(c.name, recipe.size)
        extra_rows = np.sort(rng.permutation(len(pool))[:extra])
        train_images = np.concatenate([train_images, pool[extra_rows]])
        train_rows = np.concatenate([database, len(c.images) + np.arange(len(extra_rows))])
    if recipe.condition or recipe.neighbours:  # the grey z (and histogram) of every image trained on
        grey_all = np.concatenate([grey, extra_grey_vectors(c.name)[extra_rows]]) if extra else grey
    cond_all = train_cond = None
    if recipe.condition:
        cond_all = torch.as_tensor(condition_vectors(grey_all, train_rows, recipe.condition, recipe.condition_dims))
        train_cond = cond_all[train_rows]
    train_x = torch.as_tensor(train_images).permute(0, 3, 1, 2).contiguous()  # uint8
    partners = None
    if recipe.neighbours:
        hist = rgb_hellinger(c)
        if extra:
            hist = np.concatenate([hist, np.sqrt(histograms(load_extra(c.name, 64)[extra_rows], "rgb"))])
        partners = torch.as_tensor(prior_neighbours(grey_all[train_rows], hist[train_rows], recipe.neighbours))
    widths = [int(w) for w in recipe.widths.split(",")]
    model = build_model(
        recipe.size, widths, recipe.kernel, recipe.z, condition=0 if cond_all is None else cond_all.shape[1]
    )
    teacher = None
    if recipe.init in ("grey", "grey-plain"):
        start_from_grey_model(model, negative=recipe.init == "grey")
        if recipe.distil:  # the starting encoder, frozen: z is kept near what it was
            import copy

            teacher = copy.deepcopy(model.encoder).requires_grad_(False)
    cons_dims = recipe.cons_dims or max(1, recipe.z * 2 // 5)
    head = projection_head(cons_dims) if recipe.consistency else None
    params = list(model.parameters()) + (list(head.parameters()) if head else [])
    n = len(train_x)
    batch = min(recipe.batch, n)
    steps = max(1, n // batch)
    if recipe.weight_decay:
        optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    else:
        optimizer = torch.optim.Adam(params, lr=recipe.lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe.lr, total_steps=max(1, recipe.epochs * steps)
    )
    started = time.perf_counter()
    history = []
    for epoch in range(recipe.epochs + recipe.decoder_epochs):
        decoder_only = epoch >= recipe.epochs
        if epoch == recipe.epochs and recipe.decoder_epochs:
            model.encoder.requires_grad_(False)
            optimizer = torch.optim.Adam(model.decoder.parameters(), lr=1e-3)
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=1e-3, total_steps=recipe.decoder_epochs * steps
            )
        model.train()
        order = torch.randperm(n, generator=generator)
        rec_sum = cons_sum = 0.0
        for step in range(steps):
            chosen = order[step * batch : (step + 1) * batch]
            x = train_x[chosen].float().div_(255)
            g = None if train_cond is None else train_cond[chosen]
            if decoder_only:
                with torch.no_grad():
                    z = model.encoder(x)
                loss = rec = F.mse_loss(model.decode(z, g), x)
            else:
                z = model.encoder(x)
                loss = rec = F.mse_loss(model.decode(z, g), x)
                if teacher is not None:
                    loss = loss + recipe.distil * F.mse_loss(z, teacher(x))
                if head is not None:
                    other = x
                    if partners is not None:  # a neighbour in the prior space instead of the image itself
                        pick = partners[chosen, torch.randint(partners.shape[1], (len(chosen),), generator=generator)]
                        use = torch.rand(len(chosen), generator=generator) < recipe.neighbour_share
                        other = torch.where(use[:, None, None, None], train_x[pick].float().div_(255), x)
                    views = torch.cat(
                        [
                            colour_views(x, generator, hue=recipe.hue, zoom=recipe.zoom),
                            colour_views(other, generator, hue=recipe.hue, zoom=recipe.zoom),
                        ]
                    )
                    z_views = model.encoder(views)
                    a, b = head(z_views[:, :cons_dims]).chunk(2)
                    cons = nt_xent(a, b, recipe.temperature)
                    loss = loss + recipe.consistency * cons
                    if recipe.recon_views:
                        g2 = None if g is None else torch.cat([g, g])  # a view's grey z: its image's
                        loss = loss + recipe.recon_views * F.mse_loss(model.decode(z_views, g2), views)
                    cons_sum += cons.item()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            rec_sum += rec.item()
        history.append({"epoch": epoch + 1, "rec": rec_sum / steps, "cons": cons_sum / steps})
    seconds = time.perf_counter() - started
    model.eval()
    with torch.no_grad():

        def encode(idx, shift=0):
            x = torch.as_tensor(c.images[idx]).permute(0, 3, 1, 2).float().div_(255)
            if shift < 0:
                x = x.flip(3)
            elif shift:
                x = torch.nn.functional.pad(x, (0, shift, 0, shift), value=1.0)[:, :, shift:, shift:]
            return model.encoder(x).numpy()

        def conv_features(idx):
            """Each convolution stage's activations averaged over positions, concatenated."""
            h = torch.as_tensor(c.images[idx]).permute(0, 3, 1, 2).float().div_(255)
            pooled = []
            for layer in model.encoder:
                h = layer(h)
                if isinstance(layer, torch.nn.LeakyReLU) and h.dim() == 4:
                    pooled.append(h.mean(dim=(2, 3)))
            return torch.cat(pooled, 1).numpy()

        fd, fq = conv_features(database), conv_features(queries)
        zd, zq = encode(database), encode(queries)
        pd, pq = (zd + encode(database, 1)) / 2, (zq + encode(queries, 1)) / 2
        md, mq = (zd + encode(database, -1)) / 2, (zq + encode(queries, -1)) / 2  # -1: the mirror image
        xq = torch.as_tensor(c.images[queries]).permute(0, 3, 1, 2).float().div_(255)
        test_mse = float(F.mse_loss(model(xq, None if cond_all is None else cond_all[queries]), xq))
    labels = c.labels
    q_mask = np.zeros(len(labels), bool)
    q_mask[queries] = True
    d_mask = np.zeros(len(labels), bool)
    d_mask[database] = True
    spaces = {}
    if database_limit:  # the baselines on the same smaller database
        flat = c.images.reshape(len(c.images), -1).astype(np.float32) / 255
        spaces["baseline: pixels L2"] = scores(squared_l2(flat[q_mask], flat[d_mask]), labels, q_mask, d_mask)
        for space, kind in (("rgb", "l1"), ("rgb", "hellinger"), ("hsv", "l1"), ("hsv", "hellinger")):
            h = histograms(c.images, space)
            spaces[f"baseline: histogram {space} {kind}"] = scores(
                histogram_distance(h[q_mask], h[d_mask], kind), labels, q_mask, d_mask
            )
    spaces["z cosine"] = scores(cosine_distance(zq, zd), labels, q_mask, d_mask)
    wd, wq = whiten(zd, zq)
    spaces["z whitened cosine"] = scores(cosine_distance(wq, wd), labels, q_mask, d_mask)
    wd, wq = whiten(pd, pq)
    spaces["pooled z whitened cosine"] = scores(cosine_distance(wq, wd), labels, q_mask, d_mask)
    wd, wq = whiten(md, mq)
    spaces["z + mirror whitened cosine"] = scores(cosine_distance(wq, wd), labels, q_mask, d_mask)
    wd, wq = whiten(fd, fq)
    spaces["conv features mean-pooled, whitened cosine"] = scores(cosine_distance(wq, wd), labels, q_mask, d_mask)
    for dims in (32, 64):
        wd, wq = whiten(zd, zq, dims=dims)
        spaces[f"z whitened {dims} cosine"] = scores(cosine_distance(wq, wd), labels, q_mask, d_mask)
    if grey is not None:  # the two-part search: the shipped grey model's z beside this z
        gd, gq = grey[database], grey[queries]
        spaces["grey model alone, cosine"] = scores(cosine_distance(gq, gd), labels, q_mask, d_mask)
        wd, wq = whiten(gd, gq)
        spaces["grey model alone, whitened cosine"] = scores(cosine_distance(wq, wd), labels, q_mask, d_mask)
        for grey_space in ("white", "raw"):
            for a in alphas:
                fd_, fq_ = fused(gd, gq, zd, zq, a, grey_space)
                spaces[f"grey {grey_space} + {a} x z white"] = scores(cosine_distance(fq_, fd_), labels, q_mask, d_mask)
        h = rgb_hellinger(c)
        for grey_space in ("white", "raw"):
            wd, wq = whiten(gd, gq) if grey_space == "white" else (gd, gq)
            hd = np.concatenate([unit(wd), 0.5 * unit(h[database])], 1)
            hq = np.concatenate([unit(wq), 0.5 * unit(h[queries])], 1)
            spaces[f"grey {grey_space} + 0.5 x RGB Hellinger histogram"] = scores(
                cosine_distance(hq, hd), labels, q_mask, d_mask
            )
            if grey_space == "raw":  # the prior space beside the trained z: what training adds to it
                cd, cq = whiten(zd, zq)
                for a in alphas:
                    td, tq = np.concatenate([hd, a * unit(cd)], 1), np.concatenate([hq, a * unit(cq)], 1)
                    spaces[f"grey raw + 0.5 x histogram + {a} x z white"] = scores(
                        cosine_distance(tq, td), labels, q_mask, d_mask
                    )
    vectors = ROOT / "vectors"
    vectors.mkdir(exist_ok=True)
    np.savez(
        vectors / f"{c.name}-{recipe.size}-{tag}-{int(n)}.npz",
        zd=zd,
        zq=zq,
        md=md,
        mq=mq,
        fd=fd,
        fq=fq,
        database=database,
        queries=queries,
        labels=labels,
    )
    if head is not None:
        wd, wq = whiten(zd[:, :cons_dims], zq[:, :cons_dims])
        spaces["consistency dims whitened cosine"] = scores(cosine_distance(wq, wd), labels, q_mask, d_mask)
    row = {
        "collection": c.name,
        "method": "trained",
        "recipe": asdict(recipe),
        "database": len(database),
        "trained_on": int(n),
        "queries": len(queries),
        "train_seconds": round(seconds, 1),
        "load": os.getloadavg()[0],
        "threads": threads,
        "test_mse": test_mse,
        "spaces": spaces,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    return row, history


def speed(recipe: Recipe, threads: int, images: int = 512) -> dict:
    """Seconds per joint epoch of `images` random images (with the consistency views)."""
    import torch

    c = Collection(
        "random",
        [],
        np.zeros(images, int),
        ["x"],
        np.zeros(images, bool),
        np.random.default_rng(0).integers(0, 256, (images, recipe.size, recipe.size, 3), dtype=np.uint8),
    )
    r = Recipe(**{**asdict(recipe), "epochs": 2, "decoder_epochs": 0})
    torch.set_num_threads(threads)
    # warm-up, then timed
    train_time = []
    for _ in range(2):
        started = time.perf_counter()
        _fit_only(c, r, threads)
        train_time.append(time.perf_counter() - started)
    per_image_epoch = min(train_time) / (images * r.epochs)
    return {"method": "speed", "recipe": asdict(recipe), "threads": threads, "seconds_per_image_epoch": per_image_epoch}


def _fit_only(c: Collection, r: Recipe, threads: int) -> None:
    import torch
    import torch.nn.functional as F

    from aesearch.training.views import nt_xent, projection_head

    g = torch.Generator().manual_seed(0)
    model = build_model(r.size, [int(w) for w in r.widths.split(",")], r.kernel, r.z)
    cons_dims = r.cons_dims or r.z * 2 // 5
    head = projection_head(cons_dims)
    opt = torch.optim.Adam(list(model.parameters()) + list(head.parameters()), lr=1e-3)
    x_all = torch.as_tensor(c.images).permute(0, 3, 1, 2).contiguous()
    for _ in range(r.epochs):
        for s in range(len(x_all) // r.batch):
            x = x_all[s * r.batch : (s + 1) * r.batch].float().div_(255)
            views = torch.cat([colour_views(x, g, hue=r.hue), colour_views(x, g, hue=r.hue)])
            a, b = head(model.encoder(views)[:, :cons_dims]).chunk(2)
            loss = F.mse_loss(model(x), x) + r.consistency * nt_xent(a, b, r.temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()


# --- side by side, with intervals ---------------------------------------------------------------


def per_query_p10(distances: np.ndarray, labels: np.ndarray, query: np.ndarray, database: np.ndarray) -> np.ndarray:
    order = np.argsort(distances, axis=1, kind="stable")[:, :10]
    return (labels[database][order] == labels[query][:, None]).mean(axis=1)


def interval(differences: np.ndarray, rounds: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of the mean of per-query differences (queries resampled, seeded)."""
    rng = np.random.default_rng(0)
    means = differences[rng.integers(0, len(differences), (rounds, len(differences)))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(low), float(high)


def compare(
    name: str,
    vectors: Path,
    root: Path = ROOT,
    fuse: float = 0.0,
    validation: bool = False,
    results: Path | None = None,
    fuse_grey: str = "white",
) -> None:
    """A trained run's saved vectors against the baselines on the same queries and database:
    per-query P@10, with the 95% interval of each difference from the model's. fuse: the model's
    vector is the two-part one (unit(grey z, whitened or, fuse_grey "raw", not) beside fuse x
    unit(whitened z)); fuse_grey "prior": unit(grey z) beside 0.5 x unit(RGB Hellinger histogram)
    and fuse x unit(whitened z))."""
    v = np.load(vectors)
    database, queries = v["database"], v["queries"]
    c = load(name, 64, root, validation)
    d = np.zeros(len(c.labels), bool)
    d[database] = True
    q = np.zeros(len(c.labels), bool)
    q[queries] = True

    found = {}
    grey = grey_vectors(c, root)
    if fuse and fuse_grey == "prior":  # the space that needs no training, beside fuse x the trained z
        h = np.sqrt(histograms(c.images, "rgb"))
        wd, wq = whiten(v["zd"], v["zq"])
        fd_ = np.concatenate([unit(grey[d]), 0.5 * unit(h[d]), fuse * unit(wd)], 1)
        fq_ = np.concatenate([unit(grey[q]), 0.5 * unit(h[q]), fuse * unit(wq)], 1)
        found[f"grey model + 0.5 x RGB histogram + {fuse} x trained z (whitened), cosine"] = per_query_p10(
            cosine_distance(fq_, fd_), c.labels, q, d
        )
    elif fuse:
        fd_, fq_ = fused(grey[d], grey[q], v["zd"], v["zq"], fuse, fuse_grey)
        found[f"grey model ({fuse_grey}) + {fuse} x trained z (whitened), cosine"] = per_query_p10(
            cosine_distance(fq_, fd_), c.labels, q, d
        )
    wd, wq = whiten(v["zd"], v["zq"])
    found["trained: z whitened, cosine"] = per_query_p10(cosine_distance(wq, wd), c.labels, q, d)
    wd, wq = whiten(v["md"], v["mq"])
    found["trained: z + mirror, whitened, cosine"] = per_query_p10(cosine_distance(wq, wd), c.labels, q, d)
    for size in (32, 64):
        flat = load(name, size, root, validation).images.reshape(len(c.labels), -1).astype(np.float32) / 255
        found[f"pixels {size}, L2"] = per_query_p10(squared_l2(flat[q], flat[d]), c.labels, q, d)
    for space in ("rgb", "hsv"):
        h = histograms(c.images, space)
        for kind in ("hellinger", "l1"):
            found[f"histogram {space} {kind}"] = per_query_p10(histogram_distance(h[q], h[d], kind), c.labels, q, d)
    found["grey FMNIST model, cosine"] = per_query_p10(cosine_distance(grey[q], grey[d]), c.labels, q, d)
    wd, wq = whiten(grey[d], grey[q])
    found["grey FMNIST model, whitened, cosine"] = per_query_p10(cosine_distance(wq, wd), c.labels, q, d)
    h = np.sqrt(histograms(c.images, "rgb"))
    for a in (0.5, 1.0):
        mixed = np.concatenate([unit(grey), a * unit(h)], 1)
        found[f"grey model + {a} x RGB Hellinger histogram"] = per_query_p10(
            cosine_distance(mixed[q], mixed[d]), c.labels, q, d
        )
        wd, wq = whiten(v["md"], v["mq"])
        md_, mq_ = np.concatenate([unit(wd), a * unit(h[d])], 1), np.concatenate([unit(wq), a * unit(h[q])], 1)
        found[f"trained (z + mirror, whitened) + {a} x RGB Hellinger histogram"] = per_query_p10(
            cosine_distance(mq_, md_), c.labels, q, d
        )
        wd, wq = whiten(v["zd"], v["zq"])
        zd_, zq_ = np.concatenate([unit(wd), a * unit(h[d])], 1), np.concatenate([unit(wq), a * unit(h[q])], 1)
        found[f"trained (z whitened) + {a} x RGB Hellinger histogram"] = per_query_p10(
            cosine_distance(zq_, zd_), c.labels, q, d
        )
    ours_name = next(iter(found)) if fuse else "trained: z whitened, cosine"  # else the default search space
    ours = found[ours_name]
    print(f"{name}: {vectors.name}, {q.sum()} queries, {d.sum()} database images; the model: {ours_name}")
    rows = {}
    for method, p in found.items():
        low, high = interval(ours - p)
        rows[method] = {"p_at_10": float(p.mean()), "difference": float(ours.mean() - p.mean()), "ci95": [low, high]}
        print(
            f"  {method:<62} P@10 {p.mean():.3f}   trained minus this "
            f"{ours.mean() - p.mean():+.3f} ({low:+.3f}, {high:+.3f})"
        )
    if results is not None:
        append(
            results,
            {
                "collection": name,
                "method": "compare",
                "vectors": vectors.name,
                "model": ours_name,
                "protocol": "validation" if validation else "test",
                "queries": int(q.sum()),
                "rows": rows,
            },
        )


# --- the command line ----------------------------------------------------------------------------


def cpu() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    name = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?")
    avx512 = " avx512f" in Path("/proc/cpuinfo").read_text()
    return f"{name}, {os.cpu_count()} cores, avx512: {'yes' if avx512 else 'no'}"


def append(path: Path, row: dict) -> None:
    row = {**row, "cpu": cpu(), "when": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["baselines", "train", "speed", "table", "compare"])
    parser.add_argument("--vectors", type=Path, help="compare: a trained run's saved vectors (ROOT/vectors/*.npz)")
    parser.add_argument("--collection", default=",".join(COLLECTIONS))
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--results", type=Path, default=ROOT / "results.jsonl")
    parser.add_argument("--size", default="64")
    parser.add_argument("--no-grey", action="store_true")
    parser.add_argument("--database", type=int, help="train and search on this many database images only")
    parser.add_argument("--threads", default="1")
    parser.add_argument("--extra", type=int, default=0, help="also train on this many unlabelled images of the source")
    parser.add_argument("--tag", default="")
    parser.add_argument(
        "--alphas",
        default=",".join(str(a) for a in FUSE_ALPHAS),
        help="train: weights of the trained z beside the grey model's z in the two-part search",
    )
    parser.add_argument(
        "--fuse-grey",
        choices=["white", "raw", "prior"],
        default="white",
        help="compare --fuse: grey z whitened or raw; prior: grey z (raw) beside 0.5 x RGB Hellinger histogram",
    )
    parser.add_argument(
        "--fuse",
        type=float,
        default=0.0,
        help="compare: the model's vector is unit(whitened grey z) beside this x unit(whitened z)",
    )
    parser.add_argument(
        "--validation", action="store_true", help="the database alone, split again (for choosing; queries unseen)"
    )
    for field, value in asdict(Recipe()).items():
        if field != "size":
            parser.add_argument(f"--{field.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args()
    names = args.collection.split(",")
    sizes = [int(s) for s in args.size.split(",")]
    if args.command == "table":
        return print_table(args.results)
    if args.command == "compare":
        return compare(names[0], args.vectors, args.root, args.fuse, args.validation, args.results, args.fuse_grey)
    if args.command == "baselines":
        for name in names:
            for size in sizes:
                c = load(name, size, args.root, args.validation)
                for row in baselines(c, size, with_grey=not args.no_grey and size == sizes[0]):
                    append(args.results, row)
                    print(
                        f"{name} {size}: {row['method']} ({row['space']}): P@10 {row['p_at_10']:.3f} "
                        f"mAP@100 {row['map_at_100']:.3f} mAP@R {row['map_at_r']:.3f}",
                        flush=True,
                    )
        return None
    recipe_fields = {f: getattr(args, f) for f in asdict(Recipe()) if f != "size"}
    if args.command == "speed":
        for size in sizes:
            for threads in (int(t) for t in args.threads.split(",")):
                row = speed(Recipe(size=size, **recipe_fields), threads)
                append(args.results, row)
                print(
                    f"speed {size} {args.widths} k{args.kernel} z{args.z}, {threads} threads: "
                    f"{row['seconds_per_image_epoch'] * 1e3:.3f} ms per image-epoch; "
                    f"10,000 images x {args.epochs}+{args.decoder_epochs} epochs ~ "
                    f"{row['seconds_per_image_epoch'] * 10_000 * (args.epochs + args.decoder_epochs / 3) / 60:.1f} min",
                    flush=True,
                )
        return None
    for name in names:
        for size in sizes:
            c = load(name, size, args.root, args.validation)
            row, history = train(
                c,
                Recipe(size=size, **recipe_fields),
                args.database,
                int(args.threads),
                args.tag,
                args.extra,
                tuple(float(a) for a in args.alphas.split(",")),
                with_grey=not args.no_grey,
            )
            row["tag"] = args.tag
            row["protocol"] = "validation" if args.validation else "test"
            append(args.results, row)
            best = max(row["spaces"].items(), key=lambda kv: kv[1]["p_at_10"])
            print(
                f"{name} {size} {args.tag}: db {row['database']}, {row['train_seconds']:.0f} s, test MSE "
                f"{row['test_mse']:.5f}, last rec {history[-1]['rec'] if history else float('nan'):.5f} "
                f"cons {history[row['recipe']['epochs'] - 1]['cons'] if history else 0:.3f}; "
                + "; ".join(
                    f"{k}: P@10 {v['p_at_10']:.3f} mAP@100 {v['map_at_100']:.3f}" for k, v in row["spaces"].items()
                )
                + f" | best {best[0]}",
                flush=True,
            )
    return None


def print_table(path: Path) -> None:
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if r["method"] == "trained":
            rec = r["recipe"]
            for space, s in r["spaces"].items():
                print(
                    f"{r['collection']:<12} {rec['size']:>3} trained {r.get('tag', ''):<24} "
                    f"k{rec['kernel']} {rec['widths']:<16} "
                    f"z{rec['z']} e{rec['epochs']}+{rec['decoder_epochs']} cons {rec['consistency']} hue {rec['hue']} "
                    f"db {r['database']:>5} "
                    f"{space:<34} P@10 {s['p_at_10']:.3f} mAP@100 {s['map_at_100']:.3f} mAP@R {s['map_at_r']:.3f} "
                    f"MSE {r['test_mse']:.5f} {r['train_seconds']:.0f} s"
                )
        elif r["method"] == "compare":
            for method, x in r["rows"].items():
                print(
                    f"{r['collection']:<12} compare {r['vectors']} ({r['protocol']}) {method:<62} "
                    f"P@10 {x['p_at_10']:.3f} model minus this {x['difference']:+.3f} "
                    f"({x['ci95'][0]:+.3f}, {x['ci95'][1]:+.3f})"
                )
        elif r["method"] != "speed":
            print(
                f"{r['collection']:<12} {r['size']:>3} {r['method']:<18} {r['space']:<34} P@10 {r['p_at_10']:.3f} "
                f"mAP@100 {r['map_at_100']:.3f} mAP@R {r['map_at_r']:.3f}"
            )
        else:
            print(
                f"speed {r['recipe']['size']} {r['recipe']['widths']} k{r['recipe']['kernel']} z{r['recipe']['z']} "
                f"threads {r['threads']}: {r['seconds_per_image_epoch'] * 1e3:.3f} ms/image-epoch"
            )


if __name__ == "__main__":
    main()
