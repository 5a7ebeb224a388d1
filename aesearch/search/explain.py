"""Explain a hit by decoding: where it differs from the query, and the path between them. No torch.

For a query and one of its hits:
  * pixel difference: hit - query over the 28x28 (positive: the hit has more ink there, negative:
    the query has), on the images as searched;
  * reconstruction difference: the same between the decoder's reconstructions of the two, which
    shows what the *model* sees differ once detail it does not keep is gone;
  * interpolation: the decoder's image at evenly spaced points on the straight line between the
    two encoder outputs z, query first, hit last (the ends are the two reconstructions).

Why linear in z: z is what the decoder was trained to take, and no prior shapes it (this is a
plain AutoEncoder, not a VAE, so there is no Gaussian shell that would call for spherical
interpolation). The search space (whitened, unit length, 192 of 314 axes) cannot be mapped back
to z without inventing the discarded axes, so a path drawn there would decode what it made up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from aesearch.integers import check_int
from aesearch.search import notebook
from aesearch.sources.preprocess import ImageSource

if TYPE_CHECKING:
    from aesearch.search.engine import Hit, QueryResult, SearchEngine

DEFAULT_STEPS = 8
MAX_STEPS = 64


@dataclass(frozen=True)
class Explanation:
    """Why `hit` matched the query; every image is (28, 28) float32, in [0, 1] or, for differences, [-1, 1]."""

    hit: Hit
    query: np.ndarray  # the preprocessed query
    image: np.ndarray  # the hit's indexed image
    query_reconstruction: np.ndarray
    hit_reconstruction: np.ndarray
    pixel_difference: np.ndarray  # image - query
    reconstruction_difference: np.ndarray  # hit_reconstruction - query_reconstruction
    interpolation: np.ndarray  # (steps, 28, 28): decoder images from the query's z to the hit's
    fractions: np.ndarray  # (steps,): where on the line each frame is (0 = query, 1 = hit)

    def __repr__(self) -> str:  # seven 28x28 arrays otherwise
        return notebook.explanation_text(self)

    def _repr_html_(self) -> str:
        return notebook.explanation_html(self)

    def to_dict(self) -> dict:
        """Summary numbers (the arrays are pictures: see figures/explain.py)."""
        return {
            "id": self.hit.id,
            "rank": self.hit.rank,
            "pixel_difference_mean_abs": float(np.abs(self.pixel_difference).mean()),
            "reconstruction_difference_mean_abs": float(np.abs(self.reconstruction_difference).mean()),
            "steps": len(self.fractions),
        }


def explain_hits(
    engine: SearchEngine, result: QueryResult, hits: list[Hit], *, steps: int = DEFAULT_STEPS
) -> list[Explanation]:
    """Explanations of several hits of one result: one batched encode and one batched decode."""
    fractions = _fractions(steps)
    if not hits:
        return []
    images = np.stack([engine.image(h.id) for h in hits]).astype(np.float32) / np.float32(255)  # as shown
    if engine.autoencoder.config.prior:
        # Its input keeps a transparency the pictures have not (model/prior.py), and its vectors are not
        # pooled: the query's vector and the hits' stored ones are the encoder's outputs themselves.
        z_query = result.latent[None]
        z_hits = engine.bundle.embeddings(np.array([h.id for h in hits], dtype=np.int64))
    else:
        z_query = engine.autoencoder.encode(result.query[None])  # (1, z)
        z_hits = engine.autoencoder.encode(images)  # (n, z)
    path = (1 - fractions)[None, :, None] * z_query[:, None] + fractions[None, :, None] * z_hits[:, None]
    frames = engine.decode(path.reshape(-1, z_hits.shape[1])).reshape(len(hits), steps, *images.shape[1:])
    hit_reconstructions = frames[:, -1]  # the line's end is the hit's z
    explanations = []
    for n, hit in enumerate(hits):
        explanations.append(
            Explanation(
                hit=hit,
                query=result.query,
                image=images[n],
                query_reconstruction=result.reconstruction,
                hit_reconstruction=hit_reconstructions[n],
                pixel_difference=images[n] - result.query,
                reconstruction_difference=hit_reconstructions[n] - result.reconstruction,
                interpolation=frames[n],
                fractions=fractions,
            )
        )
    return explanations


def interpolate(
    engine: SearchEngine, start: ImageSource | int, end: ImageSource | int, *, steps: int = DEFAULT_STEPS
) -> tuple[np.ndarray, np.ndarray]:
    """Decoder images on the line from start's z to end's z -> (frames (steps, 28, 28), fractions).

    start, end: an indexed image's id, or anything the preprocessing contract takes.
    """
    fractions = _fractions(steps)
    inputs = np.stack([engine.input_of(x) if _is_id(x) else engine.prepare([x])[0] for x in (start, end)])
    z = engine.autoencoder.encode(inputs)  # (2, z)
    path = (1 - fractions)[:, None] * z[0] + fractions[:, None] * z[1]
    return engine.decode(path), fractions


def _is_id(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _fractions(steps: int) -> np.ndarray:
    return np.linspace(0, 1, check_int(steps, "steps", low=2, high=MAX_STEPS), dtype=np.float32)
