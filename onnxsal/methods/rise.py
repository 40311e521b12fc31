"""RISE (Petsiuk et al. 2018): a score-weighted average of random smooth masks, forward only.

Each mask is an s x s grid of cells kept with probability p, upsampled bilinearly to
(s + 1) x cell (cell = ceil(side / s)) and cropped at a random shift of less than a cell,
as the authors' reference code does (scikit-image's order-1 resize, mirrored edges). The
map is sum_i score(x * M_i) * M_i / (N p): dimmed pixels go to 0 in the model's input
space, so "0" means whatever the preprocessing maps to 0 (the mean colour when inputs are
standardised). The masks span the spatial axes and are shared by all channels; (N, L)
and (N, C, L) inputs get 1-D masks of s cells along L.

Defaults N = 4000, s = 7, p = 0.5, inside the ranges the paper reports for ImageNet
classifiers (N 4000-8000, s 7-10, p 0.1-0.5): the fewest masks (each costs one forward
pass), the coarsest grid (32 px cells at 224 px, about an object part), and half the
image kept, so masked images still show enough of the
object for the score to vary. The paper explains the class probability: use
`Explainer(..., keep_softmax=True)` for that; by default the score is the logit, which
the sum weighs the same way (the map is linear in the score).

Masks are drawn row by row from one seeded stream (mask i is the same whatever the
batch size) and made `batch_size` at a time, so memory is bounded for any N.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from onnxsal.errors import OptionError
from onnxsal.methods.base import (
    Explanation,
    Method,
    Request,
    explained_activation,
    positive_int,
    resolve_targets,
    scores,
)
from onnxsal.methods.occlusion import (
    COPIES_WHEN_UNBATCHED,
    explained_index,
    perturbed_scores,
)
from onnxsal.runner import Runner


def interpolation(cells: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear interpolation of `cells` values to `size` points with half-pixel centres and
    mirrored edges (scikit-image's resize(order=1, mode="reflect", anti_aliasing=False) on
    one axis): point i = (1 - frac[i]) * value[low[i]] + frac[i] * value[high[i]]."""
    coord = np.abs((np.arange(size) + 0.5) * (cells / size) - 0.5)
    coord = np.where(coord > cells - 1, 2 * (cells - 1) - coord, coord)
    low = np.clip(np.floor(coord).astype(int), 0, max(cells - 2, 0))
    high = np.minimum(low + 1, cells - 1)
    frac = np.where(high > low, coord - low, 0.0)
    return low, high, frac


def upsampled_masks(
    cells: np.ndarray, shifts: np.ndarray, size: Sequence[int], dtype: np.dtype = np.float64
) -> np.ndarray:
    """Masks (b, *size) from binary cell grids (b, s[, s]) and shifts (b, axes).

    Each grid is upsampled to (s + 1) * ceil(side / s) per axis and cropped to `size`
    starting at its shift. One axis at a time, the last first (the intermediate stays
    small), by gathering rows: no BLAS call, whose threads would compete with
    onnxruntime's (measured: 10-15% slower runs on 2 cores).
    """
    grid, n = cells.shape[1], len(cells)
    masks = cells.astype(dtype)
    for axis in reversed(range(len(size))):
        side = size[axis]
        low, high, frac = interpolation(grid, (grid + 1) * math.ceil(side / grid))
        at = shifts[:, axis, None] + np.arange(side)  # (n, side): each mask's crop
        moved = np.moveaxis(masks, 1 + axis, 1)
        samples = np.arange(n)[:, None]
        first, second = moved[samples, low[at]], moved[samples, high[at]]
        second -= first
        second *= frac[at].astype(dtype).reshape(n, side, *([1] * (moved.ndim - 2)))
        first += second
        masks = np.moveaxis(first, 1, 1 + axis)
    return np.ascontiguousarray(masks)


def rise_masks(
    size: Sequence[int],
    n_masks: int,
    grid: int = 7,
    keep: float = 0.5,
    seed: int | None = 0,
    chunk: int = 32,
    dtype: np.dtype = np.float32,
) -> Iterator[np.ndarray]:
    """The RISE masks for inputs of spatial `size` (1 or 2 sides), `chunk` at a time.

    Mask i takes row i of one stream of uniform draws (grid**d cell values, then d shift
    fractions), so the masks do not depend on `chunk`.
    """
    size = tuple(int(s) for s in size)
    d = len(size)
    rng = np.random.default_rng(seed)
    cell = np.array([math.ceil(side / grid) for side in size])
    for start in range(0, n_masks, chunk):
        b = min(chunk, n_masks - start)
        draws = rng.random((b, grid**d + d))
        cells = (draws[:, : grid**d] < keep).reshape(b, *([grid] * d))
        shifts = np.floor(draws[:, grid**d :] * cell).astype(int)
        yield upsampled_masks(cells, shifts, size, dtype)


def mask_axes(ndim: int, layout: str | None) -> tuple[int, ...]:
    """The axes a mask spans: L of (N, L) and (N, C, L); H, W of NCHW / NHWC."""
    if ndim == 2:
        return (1,)
    if ndim == 3:
        return (2,)
    if ndim == 4:
        return (1, 2) if layout == "NHWC" else (2, 3)
    raise OptionError(
        f"RISE masks the length of (N, L) and (N, C, L) inputs or the height and width of "
        f"NCHW and NHWC images; x has {ndim} axes. Use method='occlusion', which takes any "
        "shape."
    )


class RISE(Method):
    name = "rise"
    signed = False  # an expected score per pixel: larger is more important; its 0 means nothing
    options = frozenset({"n_masks", "grid", "keep", "seed"})
    needs_gradient = False

    def explain(
        self,
        runner: Runner,
        req: Request,
        n_masks: int = 4000,
        grid: int = 7,
        keep: float = 0.5,
        seed: int | None = 0,
    ) -> Explanation:
        n_masks = positive_int(n_masks, "n_masks")
        grid = positive_int(grid, "grid")
        if isinstance(keep, (bool, np.bool_)) or not isinstance(keep, (int, float, np.floating)):
            raise OptionError(f"keep must be a probability in (0, 1]; got {keep!r}.")
        if not 0 < keep <= 1:
            raise OptionError(f"keep must be a probability in (0, 1]; got {keep}.")
        x = req.x
        if x.dtype.kind != "f":
            raise OptionError(
                f"RISE dims the input by multiplying it with masks in [0, 1]; x holds "
                f"{x.dtype} values (tokens, categories). Use method='occlusion', whose "
                "baselines= replaces them (a padding token, say)."
            )
        axes = mask_axes(x.ndim, req.layout)
        size = tuple(x.shape[a] for a in axes)
        # where a (b, *size) stack of masks sits in a (b, *x.shape[1:]) stack of copies
        spread = tuple(x.shape[a] if a in axes else 1 for a in range(1, x.ndim))

        target = resolve_targets(runner, req)
        score_x = scores(runner, req, target)
        per_run = req.batch_size or COPIES_WHEN_UNBATCHED
        chunk = min(n_masks, per_run)
        group = max(1, per_run // chunk)  # samples per run when there are few masks
        work = np.promote_types(x.dtype, np.float32)  # integer inputs: masks in float32
        buffer = np.empty((min(group, req.n) * chunk, *x.shape[1:]), dtype=x.dtype)
        total = np.zeros((req.n, math.prod(size)), dtype=np.float64)
        for masks in rise_masks(size, n_masks, grid, keep, seed, chunk, work):
            b = masks.shape[0]
            for start in range(0, req.n, group):
                stop = min(start + group, req.n)
                copies = buffer[: (stop - start) * b]
                np.multiply(
                    x[start:stop, None],
                    masks.reshape(1, b, *spread),
                    out=copies.reshape(stop - start, b, *x.shape[1:]),
                )
                samples = np.repeat(np.arange(start, stop), b)
                got = perturbed_scores(runner, req, target, copies, samples).astype(work)
                # einsum, not matmul: BLAS threads would compete with onnxruntime's
                total[start:stop] += np.einsum(
                    "nb,bp->np", got.reshape(stop - start, b), masks.reshape(b, -1)
                )
        saliency = (total / (n_masks * keep)).reshape(req.n, *spread)
        return Explanation(
            np.ascontiguousarray(np.broadcast_to(saliency, x.shape), dtype=x.dtype),
            score_x,
            explained_index(target, req.n),
            None,
            self.name,
            {"n_masks": n_masks, "grid": grid, "keep": keep, "seed": seed},
            kind=target.kind,
            activation=explained_activation(runner, req, target),
        )
