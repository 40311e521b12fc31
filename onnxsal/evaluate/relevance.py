"""Maps as relevance per position: the unit the metrics remove, rank and compare.

A position is a pixel with all its channels (the RISE and ROAD protocols
remove whole pixels); for inputs without a channel axis every element is a
position. A method's attribution becomes one value per position: the sum of
|a| over channels for methods whose sign carries no meaning (the gradient, as
Captum's Saliency takes |a|), the signed sum for signed methods (integrated
gradients: positive evidence first). A map a user brings is taken as given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxsal.errors import InputError
from onnxsal.methods import get_method


@dataclass(frozen=True)
class Positions:
    """How one sample's elements group into positions: `channel_axis` of a sample's axes
    (0 for CHW, -1 for HWC) is removed together; None: every element is a position."""

    sample_shape: tuple[int, ...]
    channel_axis: int | None

    @classmethod
    def of(cls, x: np.ndarray, layout: str | None) -> Positions:
        if x.ndim == 4 and layout in ("NCHW", "NHWC"):
            return cls(tuple(x.shape[1:]), 0 if layout == "NCHW" else -1)
        return cls(tuple(x.shape[1:]), None)

    @property
    def shape(self) -> tuple[int, ...]:
        """The positions' own shape: (H, W) for images, the sample's shape otherwise."""
        if self.channel_axis is None:
            return self.sample_shape
        shape = list(self.sample_shape)
        del shape[self.channel_axis]
        return tuple(shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def spatial(self) -> bool:
        """Whether positions form an image (two axes), as blur and imputation need."""
        return self.channel_axis is not None and len(self.shape) == 2

    def expand(self, per_position: np.ndarray) -> np.ndarray:
        """(..., *shape) -> broadcastable against samples (a size-1 channel axis put back)."""
        if self.channel_axis is None:
            return per_position
        axis = per_position.ndim - len(self.shape) + (0 if self.channel_axis == 0 else 2)
        return np.expand_dims(per_position, axis)


def relevance(
    attribution: np.ndarray,
    positions: Positions,
    *,
    signed: bool = True,
    samples: int | None = None,
) -> np.ndarray:
    """(N, *positions.shape) float64: one value per position (channels summed; |a| first
    unless signed). Maps already one value per position are taken as they are; `samples`:
    the number of maps there must be (one per sample)."""
    a = np.asarray(attribution, dtype=np.float64)
    if samples is not None and a.ndim and len(a) != samples:
        raise InputError(f"One map per sample: got {len(a)} for {samples} samples.")
    if a.shape[1:] == positions.shape:
        return a
    if a.shape[1:] != positions.sample_shape:
        raise InputError(
            f"A map of shape {list(a.shape)} fits neither the input {list(positions.sample_shape)} "
            f"nor its positions {list(positions.shape)} (batch first)."
        )
    if not signed:
        a = np.abs(a)
    if positions.channel_axis is None:
        return a
    axis = 1 if positions.channel_axis == 0 else -1
    return a.sum(axis=axis)


def method_relevance(attribution: np.ndarray, positions: Positions, method: str) -> np.ndarray:
    """A method's attribution as relevance, signed as the method's maps are."""
    return relevance(attribution, positions, signed=get_method(method).signed)


def random_maps(n: int, positions: Positions, seed: int = 0) -> np.ndarray:
    """The baseline every score is reported beside: uniform noise, one map per sample."""
    return np.random.default_rng(seed).random((n, *positions.shape))


def descending_ranks(maps: np.ndarray) -> np.ndarray:
    """(N, P) each position's place in descending relevance (0 = most relevant; ties: the
    earlier position first)."""
    flat = maps.reshape(maps.shape[0], -1)
    if not np.isfinite(flat).all():
        raise InputError("The maps hold NaN or infinite values: no order of relevance to follow.")
    order = np.argsort(-flat, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None], axis=1)
    return ranks
