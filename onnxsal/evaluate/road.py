"""ROAD: remove and debias (Rong et al. 2022), as pytorch-grad-cam scores it.

Removed pixels are imputed from their neighbours, not set to a constant, so the
model cannot recognise the removal pattern: each removed pixel equals the
weighted mean of its in-image 8-neighbours (edge neighbours 1/6, diagonal
1/12), one sparse linear system for all removed pixels, solved per channel,
plus Gaussian noise of σ `noise` in model space. Most-relevant-first (MoRF)
and least-relevant-first (LeRF) remove a share of the pixels each; the score
is the change of the explained class's probability from the unperturbed
input, and the combined score is the mean over shares of (LeRF − MoRF) / 2:
higher is more faithful.

Which pixels a share removes is decided by count, the top ⌊P·share⌋ in the
order (as Quantus does); pytorch-grad-cam thresholds at a percentile, which
can differ by the pixels tied at the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxsal.errors import OptionError
from onnxsal.evaluate.relevance import Positions, descending_ranks, relevance
from onnxsal.evaluate.scoring import class_scores, explained_classes, explainer_of

SHARES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
NEIGHBOURS = (
    ((0, 1), 1 / 6), ((0, -1), 1 / 6), ((1, 0), 1 / 6), ((-1, 0), 1 / 6),
    ((1, 1), 1 / 12), ((1, -1), 1 / 12), ((-1, 1), 1 / 12), ((-1, -1), 1 / 12),
)  # fmt: skip


@dataclass
class Road:
    """Score changes per sample (N, shares) for both orders."""

    shares: np.ndarray  # (S,) share of pixels removed
    morf: np.ndarray  # (N, S) most relevant removed first
    lerf: np.ndarray  # (N, S) least relevant removed first
    morf_kept: np.ndarray  # (N, S) bool: the top class unchanged (the ROAD paper's accuracy)
    lerf_kept: np.ndarray
    classes: np.ndarray

    @property
    def combined(self) -> np.ndarray:
        """(N,) mean over shares of (LeRF − MoRF) / 2: higher is more faithful."""
        return ((self.lerf - self.morf) / 2).mean(axis=1)


def road(
    model: Any,
    x: np.ndarray,
    maps: np.ndarray,
    target: Any = None,
    *,
    shares: tuple[float, ...] = SHARES,
    noise: float = 0.01,
    seed: int = 0,
    score: str = "probability",
    batch_size: int | None = 32,
) -> Road:
    """MoRF and LeRF curves of `maps` (relevance per pixel, see relevance())."""
    ex = explainer_of(model)
    xs = ex.check_input(x)
    positions = Positions.of(xs, ex.layout)
    if not positions.spatial:
        raise OptionError("ROAD imputes pixels from their neighbours: it needs images.")
    fractions = np.asarray(shares, dtype=np.float64)
    if fractions.ndim != 1 or not fractions.size or not ((fractions > 0) & (fractions < 1)).all():
        raise OptionError(f"shares are fractions between 0 and 1; got {shares!r}.")
    ranks = descending_ranks(relevance(maps, positions, samples=len(xs)))
    # floor(P * share), not spoiled by the share's binary rounding (400 * 0.29 < 116)
    counts = np.floor(np.round(positions.size * fractions, 9)).astype(int)
    classes, before = explained_classes(ex, xs, target, score, batch_size)
    out = {"morf": [], "lerf": [], "morf_kept": [], "lerf_kept": []}
    for i, sample in enumerate(xs):
        rng = np.random.default_rng([seed, i])
        for order in ("morf", "lerf"):
            place = ranks[i] if order == "morf" else positions.size - 1 - ranks[i]
            copies = np.stack(
                [impute(sample, place.reshape(positions.shape) < c, positions, noise, rng)
                 for c in counts]
            )  # fmt: skip
            scores = class_scores(ex, copies, score, batch_size)
            out[order].append(scores[:, classes[i]] - before[i])
            out[order + "_kept"].append(scores.argmax(axis=1) == classes[i])
    return Road(fractions, *(np.stack(out[k]) for k in out), classes)


def impute(
    sample: np.ndarray,
    removed: np.ndarray,
    positions: Positions,
    noise: float = 0.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """The sample with the `removed` pixels (H, W bool) filled by noisy linear imputation."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    h, w = removed.shape
    channels_first = positions.channel_axis == 0
    image = sample.reshape(-1, h * w) if channels_first else sample.reshape(h * w, -1).T
    flat = removed.reshape(-1)
    unknown = np.flatnonzero(flat)
    if unknown.size == 0:
        return sample.copy()
    var = np.full(h * w, -1)
    var[unknown] = np.arange(unknown.size)
    row, col = np.divmod(unknown, w)
    weight_sum = np.zeros(unknown.size)
    rhs = np.zeros((unknown.size, image.shape[0]))
    rows, cols, vals = [], [], []
    for (dr, dc), wt in NEIGHBOURS:
        r, c = row + dr, col + dc
        inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        weight_sum += wt * inside
        idx = np.flatnonzero(inside)
        neighbour = r[idx] * w + c[idx]
        missing = flat[neighbour]
        rhs[idx[~missing]] += wt * image[:, neighbour[~missing]].T
        rows.append(idx[missing])
        cols.append(var[neighbour[missing]])
        vals.append(np.full(int(missing.sum()), -wt))
    diag = np.arange(unknown.size)
    system = coo_matrix(
        (
            np.concatenate([*vals, weight_sum]),
            (np.concatenate([*rows, diag]), np.concatenate([*cols, diag])),
        ),
        shape=(unknown.size, unknown.size),
    ).tocsc()
    solved = spsolve(system, rhs).reshape(unknown.size, -1)
    if noise:
        solved = solved + noise * (rng or np.random.default_rng()).standard_normal(solved.shape)
    filled = image.astype(np.float64).copy()
    filled[:, unknown] = solved.T
    out = filled.reshape(sample.shape) if channels_first else filled.T.reshape(sample.shape)
    return out.astype(sample.dtype)
