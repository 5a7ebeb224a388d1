"""The trust score: does a query look like anything indexed, or do its neighbours mean little?

Three signals, each placed as a percentile in its distribution over the indexed images, recorded
at build time:
  * reconstruction error: the AutoEncoder reconstructs what it was trained on well, and noise,
    text or photos of other things badly;
  * nearest-neighbour distance: how far the query's z lies from the closest indexed z, against
    how far each indexed image lies from its own closest other image;
  * content: the fraction of the image that holds the object: for Fashion-MNIST's silhouettes
    (light on black), its pixels above 5%; for a collection's photo framing (any background,
    often white), its pixels more than 5% away from the image's own background (the median of
    its border): measure "level" and "border", recorded with the calibration.
A query is out of distribution when its reconstruction error or neighbour distance is above
the 99.5th percentile, when both are above the 97.5th (each alone is common, together rare), or
when it holds less content than 99.9% of indexed images. A blank image needs the last rule: it
reconstructs well (there is nothing to get wrong) and its z sits among the garments'.
On the default Fashion-MNIST bundle these rules flag about 2.3% of genuine test images judged
as new ones (scripts/bench_trust.py measures it, and lists what they flag among unlike inputs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aesearch.rowwise import per_image_mean

THRESHOLD_PERCENTILE = 99.5  # either signal alone above this: out of distribution
JOINT_PERCENTILE = 97.5  # both signals above this: out of distribution
CONTENT_PERCENTILE = 0.1  # less content than this percentile of indexed images: out of distribution
CONTENT_LEVEL = 0.05  # a pixel counts as content above this (the preprocessing trim threshold)
_LEVELS = np.linspace(0, 100, 1001)  # quantiles stored at 0.1-percentile steps
CONTENT_MEASURES = ("level", "border")  # content(): how much of an image holds something


@dataclass(frozen=True)
class Trust:
    reconstruction_percentile: float
    neighbour_percentile: float
    content_percentile: float

    @property
    def in_distribution(self) -> bool:
        r, n = self.reconstruction_percentile, self.neighbour_percentile
        return (
            max(r, n) <= THRESHOLD_PERCENTILE
            and min(r, n) <= JOINT_PERCENTILE
            and self.content_percentile >= CONTENT_PERCENTILE
        )

    def warning(self) -> str | None:
        """One line for the user when the query looks unlike the indexed images, else None."""
        if self.in_distribution:
            return None
        if self.content_percentile < CONTENT_PERCENTILE:
            reason = "it is almost empty"
        else:  # the signals that flagged it, each above JOINT_PERCENTILE (the other may be anywhere)
            r, n = self.reconstruction_percentile, self.neighbour_percentile
            reasons = [f"its reconstruction error is above {r:.1f}% of indexed images'"] if r > JOINT_PERCENTILE else []
            if n > JOINT_PERCENTILE:
                reasons.append(f"it is farther from its nearest match than {n:.1f}% of them are")
            reason = " and ".join(reasons)
        return f"Warning: this query looks unlike the indexed images ({reason}): its neighbours mean little"

    def to_dict(self) -> dict:
        return {
            "reconstruction_percentile": self.reconstruction_percentile,
            "neighbour_percentile": self.neighbour_percentile,
            "content_percentile": self.content_percentile,
            "in_distribution": self.in_distribution,
        }


@dataclass(frozen=True)
class TrustCalibration:
    """Quantiles (at 0.0, 0.1, ..., 100.0 percent) of the three signals over the indexed images,
    and how content was measured ("level": bundles written before the "border" measure say nothing
    and measured it so, whatever their framing)."""

    reconstruction_quantiles: np.ndarray
    neighbour_quantiles: np.ndarray
    content_quantiles: np.ndarray
    content_measure: str = "level"

    def assess(self, reconstruction_mse: float, neighbour_distance: float, image: np.ndarray) -> Trust:
        """image: the preprocessed 28x28 query in [0, 1]."""
        return self.assess_many(np.array([reconstruction_mse]), np.array([neighbour_distance]), image[None])[0]

    def assess_many(
        self, reconstruction_mse: np.ndarray, neighbour_distance: np.ndarray, images: np.ndarray
    ) -> list[Trust]:
        """assess() for a batch of queries, as columns (50 us a query one by one)."""
        columns = (
            _percentile(self.reconstruction_quantiles, reconstruction_mse),
            _percentile(self.neighbour_quantiles, neighbour_distance),
            _percentile(self.content_quantiles, content(images, self.content_measure)),
        )
        return [Trust(*levels) for levels in zip(*(c.tolist() for c in columns), strict=True)]

    def neighbour_distance_at(self, percentile: float) -> float:
        """The indexed images' nearest-neighbour distance at this percentile (0 to 100)."""
        return float(np.interp(percentile, _LEVELS, self.neighbour_quantiles))

    def to_dict(self) -> dict:
        return {
            "percent_levels": "0.0 to 100.0 in steps of 0.1",
            "reconstruction_mse_quantiles": [float(v) for v in self.reconstruction_quantiles],
            "neighbour_distance_quantiles": [float(v) for v in self.neighbour_quantiles],
            "content_quantiles": [float(v) for v in self.content_quantiles],
            "content_measure": self.content_measure,
        }

    @classmethod
    def from_dict(cls, data: dict) -> TrustCalibration:
        names = ("reconstruction_mse_quantiles", "neighbour_distance_quantiles", "content_quantiles")
        arrays = [np.asarray(data[name], dtype=np.float64) for name in names]
        if any(a.shape != _LEVELS.shape for a in arrays):
            raise ValueError("trust calibration must hold 1001 quantiles per signal")
        # Checksums prove the file is what the builder wrote, not that the builder was right: NaN
        # would make every percentile NaN (and --json print NaN, which is not JSON).
        if not all(np.isfinite(a).all() for a in arrays):
            raise ValueError("trust quantiles hold NaN or infinity")
        if any((np.diff(a) < 0).any() for a in arrays):
            raise ValueError("trust quantiles must not decrease")
        measure = data.get("content_measure", "level")
        if measure not in CONTENT_MEASURES:
            raise ValueError(f"trust content_measure must be one of {CONTENT_MEASURES}")
        return cls(*arrays, content_measure=measure)


_CONTENT_BLOCK = 1024  # images measured at a time (50 MB of float32 working arrays at 64 x 64 x 3)


def content(images: np.ndarray, measure: str = "level") -> np.ndarray:
    """(n, H, W[, C]) images in [0, 1] (or uint8) -> (n,) the fraction of each that holds something.

    measure "level": pixel values above the background level of a black background (silhouettes);
    "border": pixels more than that level away, in any channel, from the median colour of the
    image's border (photo framing pads with the image's own background, white or any other).
    Four channels are a prior member's premultiplied RGBA (model/prior.py): measured as pictures show
    them, onto white, as its queries are. Measured _CONTENT_BLOCK images at a time: a build's 20,000
    calibration images of 64 x 64 RGBA took 3 GB of float working arrays at once.
    """
    if len(images) > _CONTENT_BLOCK:  # each image's measure is its own
        return np.concatenate(
            [
                content(images[start : start + _CONTENT_BLOCK], measure)
                for start in range(0, len(images), _CONTENT_BLOCK)
            ]
        )
    if images.ndim == 4 and images.shape[-1] == 4:
        from aesearch.model.prior import pictures

        images = pictures(images)
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    if measure == "level":
        return per_image_mean(images > CONTENT_LEVEL * scale)
    pixels = np.asarray(images, np.float32).reshape(*images.shape[:3], -1) / np.float32(scale)  # (n, H, W, C)
    border = np.concatenate([pixels[:, 0], pixels[:, -1], pixels[:, :, 0], pixels[:, :, -1]], axis=1)
    background = np.median(border, axis=1)  # (n, C)
    return per_image_mean(np.abs(pixels - background[:, None, None]).max(axis=-1) > CONTENT_LEVEL)


def content_measure_for(framing: str) -> str:
    """How a bundle of this framing measures content: silhouettes by level, photos by their border."""
    return "border" if framing == "photo" else "level"


def calibrate(
    reconstruction_errors: np.ndarray, neighbour_distances: np.ndarray, images: np.ndarray, *, measure: str = "level"
) -> TrustCalibration:
    """From per-image reconstruction MSE, leave-one-out nearest-neighbour distance, and the images."""
    return TrustCalibration(
        np.percentile(np.asarray(reconstruction_errors, np.float64), _LEVELS),
        np.percentile(np.asarray(neighbour_distances, np.float64), _LEVELS),
        np.percentile(content(images, measure), _LEVELS),
        content_measure=measure,
    )


def _percentile(quantiles: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Where each value falls in the distribution, in percent (100 above its maximum)."""
    values = np.asarray(values, dtype=np.float64)
    # Ties (e.g. many identical minimum values) resolve to the highest level holding the value.
    return np.where(values > quantiles[-1], 100.0, np.interp(values, quantiles, _LEVELS, left=0.0))
