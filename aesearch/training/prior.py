"""Setting up a member with a prior for training (model/prior.py): its fixed parts, each training
image's condition, and the neighbours its views are pulled towards.

Computed once before the first epoch, from the training images alone (no label is read):
  * the grey model: the shipped Fashion-MNIST weights, copied into the member (frozen);
  * the grey z of every image (train and test), by the torch-free runtime, as queries compute it;
  * the condition's whitening, learned on the training images' grey z (PRIOR_CONDITION_DIMS axes);
  * each training image's PRIOR_NEIGHBOURS nearest other training images in the space that needs no
    training (unit grey z beside 0.5 x histogram): the consistency term pairs a view of an image with
    a view of one of them, as NNCLR and SCAN take positives from a prior space. On icons, where those
    neighbours share the image's class 77-86% of the time, this lifted the trained z's own P@10 from
    0.62 to 0.69 (docs/colour-models.md, session 26).
Everything here is deterministic in the images, so a resumed training computes it again identically.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from aesearch import defaults
from aesearch.model import prior
from aesearch.model.checkpoint import load_checkpoint
from aesearch.model.network import AutoEncoder
from aesearch.model.runtime import NumpyAutoEncoder
from aesearch.model.shipped import shipped_model
from aesearch.search.index import AffineTransform

_CHUNK = 2048  # images framed and encoded at a time


@dataclass
class PriorSetup:
    train_conditions: torch.Tensor  # (n_train, condition_size) float32
    test_conditions: torch.Tensor  # (n_test, condition_size)
    partners: torch.Tensor | None  # (n_train, k) int64: each training image's neighbours; None: k = 0


def set_up_prior(model: AutoEncoder, train_images: np.ndarray, test_images: np.ndarray, neighbours: int) -> PriorSetup:
    """Fill the model's fixed parts; return the conditions and neighbours training uses.

    train_images, test_images: (n, S, S, 4) uint8, the member's inputs (premultiplied RGBA)."""
    shipped = load_checkpoint(shipped_model())
    grey_model = NumpyAutoEncoder.from_checkpoint(shipped)
    state = {name: torch.from_numpy(np.asarray(w, np.float32)) for name, w in shipped.weights.items()}
    model.prior.grey.load_state_dict(state)
    train_grey, train_histograms = _prior_parts(grey_model, train_images)
    test_grey, _ = _prior_parts(grey_model, test_images)
    whitening = AffineTransform.whitening(
        train_grey, dims=model.config.condition_size, shrinkage=defaults.WHITEN_SHRINKAGE
    )
    if whitening.matrix.shape[1] < model.config.condition_size:  # fewer images than axes: pad with zeros
        padded = np.zeros((whitening.matrix.shape[0], model.config.condition_size), np.float32)
        padded[:, : whitening.matrix.shape[1]] = whitening.matrix
        whitening = AffineTransform(whitening.mean, padded)
    with torch.no_grad():
        model.prior.condition_mean.copy_(torch.from_numpy(whitening.mean))
        model.prior.condition_matrix.copy_(torch.from_numpy(whitening.matrix))
    mean, matrix = whitening.mean, whitening.matrix
    partners = None
    k = min(neighbours, len(train_images) - 1)
    if k > 0:
        partners = torch.from_numpy(nearest_others(prior.prior_space(train_grey, train_histograms), k))
    return PriorSetup(
        torch.from_numpy(prior.condition(train_grey, mean, matrix)),
        torch.from_numpy(prior.condition(test_grey, mean, matrix)),
        partners,
    )


def _prior_parts(grey_model: NumpyAutoEncoder, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(grey z pooled as the runtime pools it, sqrt histograms) of (n, S, S, 4) uint8 RGBA inputs."""
    grey, histograms = [], []
    for start in range(0, len(images), _CHUNK):
        x = np.asarray(images[start : start + _CHUNK], dtype=np.float32) / np.float32(255)
        grey.append(grey_model.embed(prior.silhouettes(x), defaults.EMBEDDING_SHIFTS)[1])
        histograms.append(prior.histograms(prior.pictures(x)))
    width = grey_model.z_size
    return (
        np.concatenate(grey) if grey else np.zeros((0, width), np.float32),
        np.concatenate(histograms) if histograms else np.zeros((0, defaults.PRIOR_HISTOGRAM_LEVELS**3), np.float32),
    )


def nearest_others(space: np.ndarray, k: int) -> np.ndarray:
    """(n, k) int64: each row's k nearest other rows of space by cosine (its rows are all of one
    length), nearest first, ties by row number; exact, a block of rows at a time."""
    x = np.ascontiguousarray(space, dtype=np.float32)
    out = np.empty((len(x), k), np.int64)
    for start in range(0, len(x), _BLOCK):
        similarity = x[start : start + _BLOCK] @ x.T
        rows = np.arange(len(similarity))
        similarity[rows, start + rows] = -np.inf  # never its own neighbour
        found = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        order = np.lexsort((found, -np.take_along_axis(similarity, found, axis=1)), axis=1)
        out[start : start + len(similarity)] = np.take_along_axis(found, order, axis=1)
    return out


_BLOCK = 1024  # rows compared with all at once: 1,024 x n float32 similarities
