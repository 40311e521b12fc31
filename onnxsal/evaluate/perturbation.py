"""Deletion and insertion (Petsiuk et al. 2018, the RISE authors' protocol).

Positions are taken in descending relevance, `ceil(P / steps)` at a time. Deletion
starts from the input and replaces them with a substrate (zeros in model space
by default); insertion starts from a blurred copy and puts them back. The curve
is the explained class's probability after each step; its area (trapezoids over
an x axis normalised to [0, 1]) is the score: low for deletion, high for
insertion is faithful. Forward passes only, so any map can be judged.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxsal.errors import InputError, OptionError
from onnxsal.evaluate.relevance import Positions, descending_ranks, relevance
from onnxsal.evaluate.scoring import chunks, explained_classes, explainer_of, track
from onnxsal.methods.base import positive_int

SUBSTRATES = ("zeros", "mean", "blur")
BLUR_SIZE, BLUR_SIGMA = 11, 5.0  # the RISE authors' insertion start


@dataclass
class Curve:
    """Scores of each sample as positions are deleted or inserted."""

    kind: str  # "deletion" or "insertion"
    fractions: np.ndarray  # (S + 1,) share of positions changed after each step
    scores: np.ndarray  # (N, S + 1)
    classes: np.ndarray  # (N,) the class tracked

    @property
    def auc(self) -> np.ndarray:
        """(N,) area under each curve, the x axis normalised to [0, 1]."""
        return area(self.scores)


def area(scores: np.ndarray) -> np.ndarray:
    """Trapezoid-rule area of equally spaced scores over [0, 1]."""
    s = np.asarray(scores, dtype=np.float64)
    return (s.sum(axis=-1) - (s[..., 0] + s[..., -1]) / 2) / (s.shape[-1] - 1)


def deletion(
    model: Any,
    x: np.ndarray,
    maps: np.ndarray,
    target: Any = None,
    *,
    steps: int = 224,
    substrate: str | np.ndarray = "zeros",
    score: str = "probability",
    batch_size: int | None = 32,
) -> Curve:
    """Delete the most relevant positions first; `maps` as relevance (see relevance())."""
    return _causal("deletion", model, x, maps, target, steps, substrate, score, batch_size)


def insertion(
    model: Any,
    x: np.ndarray,
    maps: np.ndarray,
    target: Any = None,
    *,
    steps: int = 224,
    substrate: str | np.ndarray = "blur",
    score: str = "probability",
    batch_size: int | None = 32,
) -> Curve:
    """Insert the most relevant positions first into the substrate (a blurred copy)."""
    return _causal("insertion", model, x, maps, target, steps, substrate, score, batch_size)


def _causal(kind, model, x, maps, target, steps, substrate, score, batch_size) -> Curve:
    ex = explainer_of(model)
    xs = ex.check_input(x)
    positions = Positions.of(xs, ex.layout)
    ranks = descending_ranks(relevance(maps, positions, samples=len(xs)))
    steps = positive_int(steps, "steps")
    base = make_substrate(xs, substrate, positions)
    start, finish = (xs, base) if kind == "deletion" else (base, xs)
    step = -(-positions.size // steps)
    counts = np.minimum(np.arange(-(-positions.size // step) + 1) * step, positions.size)
    classes, _ = explained_classes(ex, xs, target, score, batch_size)
    scores = np.stack(
        [
            track(
                ex,
                _steps(start[i], finish[i], ranks[i], counts, positions, batch_size),
                int(classes[i]),
                score,
                batch_size,
            )
            for i in range(len(xs))
        ]
    )
    return Curve(kind, counts / positions.size, scores, classes)


def _steps(start, finish, ranks, counts, positions: Positions, batch_size) -> Iterator[np.ndarray]:
    """The copies after each step, a chunk at a time: a position is taken from `finish`
    once its rank is below the step's count."""
    ranked = positions.expand(ranks.reshape(positions.shape))
    for a, b in chunks(len(counts), batch_size):
        taken = ranked[None] < counts[a:b].reshape(-1, *[1] * ranked.ndim)
        yield np.where(taken, finish[None], start[None]).astype(start.dtype, copy=False)


def make_substrate(x: np.ndarray, substrate: str | np.ndarray, positions: Positions) -> np.ndarray:
    """What removed positions become: zeros, each sample's per-channel mean, a Gaussian blur
    of the sample, or an array shaped like x."""
    if not isinstance(substrate, str):
        given = np.asarray(substrate, dtype=x.dtype)
        if given.shape not in (x.shape, x.shape[1:]):
            raise InputError(
                f"A substrate array must be shaped like x {list(x.shape)} or one sample; got "
                f"{list(given.shape)}."
            )
        return np.broadcast_to(given, x.shape)
    if substrate == "zeros":
        return np.zeros_like(x)
    if substrate == "mean":
        axes = tuple(range(1, x.ndim))  # a sample's mean, per channel for images
        if positions.channel_axis is not None:
            axes = axes[1:] if positions.channel_axis == 0 else axes[:-1]
        return np.broadcast_to(x.mean(axis=axes, keepdims=True), x.shape).astype(x.dtype)
    if substrate == "blur":
        return blur(x, positions)
    raise OptionError(
        f"Unknown substrate '{substrate}'; choose {', '.join(SUBSTRATES)} or pass an array."
    )


def blur(x: np.ndarray, positions: Positions) -> np.ndarray:
    """Each channel blurred with the RISE authors' kernel: an impulse in an 11x11 window
    smoothed by a σ=5 Gaussian filter (reflected at the window's edges), applied with
    zero padding."""
    from scipy import ndimage

    if not positions.spatial:
        raise OptionError("The blur substrate needs images (N, C, H, W or N, H, W, C).")
    impulse = np.zeros((BLUR_SIZE, BLUR_SIZE))
    impulse[BLUR_SIZE // 2, BLUR_SIZE // 2] = 1.0
    kernel = ndimage.gaussian_filter(impulse, BLUR_SIGMA)
    spatial = (1, 2) if positions.channel_axis == 0 else (0, 1)
    shape = [1, 1, 1]
    for axis, size in zip(spatial, kernel.shape):
        shape[axis] = size
    kernel = kernel.reshape(shape)
    out = np.stack([ndimage.correlate(s.astype(np.float64), kernel, mode="constant") for s in x])
    return out.astype(x.dtype)
