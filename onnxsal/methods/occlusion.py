"""Occlusion (Zeiler & Fergus 2014) with the semantics of Captum's `Occlusion`, forward only.

A window slides over every non-batch axis; each position is set to the baseline and the
drop in score, score(x) - score(occluded x), is credited to the window's elements. Each
element's total is divided by the number of windows that covered it. Windows start at
0, stride, 2 stride, ... (ceil((size - window) / stride) + 1 positions per axis, the last
one cut off at the border), and the stride may not exceed the window where the window is
shorter than the axis, so every element is covered at least once.

Needs no gradient: it runs on any model onnxruntime runs, integer inputs (token ids, with
a padding token as the baseline) included. The occluded copies run as batches of
`batch_size` (32 when None), so memory stays bounded for any number of windows.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from onnxsal.errors import OptionError
from onnxsal.methods.base import (
    Explanation,
    Method,
    Request,
    explained_activation,
    resolve_targets,
    scores,
)
from onnxsal.runner import Runner
from onnxsal.targets import Target

COPIES_WHEN_UNBATCHED = 32  # perturbed copies per run when batch_size is None


def default_windows(shape: Sequence[int], layout: str | None) -> tuple[tuple, tuple]:
    """(sliding_window_shapes, strides) used when none are given.

    Feature vectors (N, F): one feature at a time (feature ablation). Otherwise the whole
    channel axis (axis 1, or the last for NHWC) and, along every other axis, a window of
    1/15 of its length moved by half a window: 15 x 15 with stride 8 at 224 px, the
    setting of Captum's occlusion tutorial, scaled so any size gets about 28 positions.
    """
    dims = tuple(shape[1:])
    if len(dims) == 1:
        return (1,), (1,)
    channel = len(dims) - 1 if layout == "NHWC" else 0
    windows, strides = [], []
    for axis, size in enumerate(dims):
        window = size if axis == channel else max(1, round(size / 15))
        windows.append(window)
        strides.append(window if axis == channel else math.ceil(window / 2))
    return tuple(windows), tuple(strides)


def _per_axis(value: Any, count: int, what: str, example: str, one_for_all: bool) -> tuple:
    """One positive int per non-batch axis (`one_for_all`: an int stands for every axis)."""
    if one_for_all and isinstance(value, (int, np.integer)):
        value = (value,) * count
    try:
        values = tuple(value)
    except TypeError:
        values = ()
    ok = len(values) == count and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and v >= 1
        for v in values
    )
    if not ok:
        raise OptionError(
            f"{what} must give one positive int per non-batch axis of x ({count} here, "
            f"e.g. {example}); got {value!r}."
        )
    return tuple(int(v) for v in values)


def window_slices(
    dims: Sequence[int], windows: Sequence[int], strides: Sequence[int]
) -> list[tuple[slice, ...]]:
    """Every window position as slices over the non-batch axes, first axis fastest."""
    counts = []
    for size, window, stride in zip(dims, windows, strides):
        if window > size:
            raise OptionError(
                f"sliding_window_shapes {tuple(windows)} exceeds x's non-batch shape "
                f"{tuple(dims)}; give windows no larger than the input."
            )
        if window < size and stride > window:
            raise OptionError(
                f"strides {tuple(strides)} skip elements: along an axis the window does not "
                f"span, the stride may not exceed the window {tuple(windows)}."
            )
        counts.append(-(-(size - window) // stride) + 1)
    positions = itertools.product(*(range(c) for c in reversed(counts)))
    return [
        tuple(
            slice(k * stride, min(k * stride + window, size))
            for k, size, window, stride in zip(reversed(pos), dims, windows, strides)
        )
        for pos in positions
    ]


def make_baselines(x: np.ndarray, baselines: Any) -> np.ndarray:
    """The replacement values, in x's dtype: 0, a number, or an array broadcastable to x
    (one sample's shape, or x's); a read-only view."""
    if baselines is None:
        baselines = 0.0
    try:
        value = np.asarray(baselines, dtype=x.dtype)
    except (TypeError, ValueError) as exc:
        raise OptionError(f"baselines must be a number or an array ({exc}).") from exc
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        raise OptionError("baselines must be finite numbers (no NaN or infinity).")
    try:
        return np.broadcast_to(value, x.shape)
    except ValueError:
        raise OptionError(
            f"baselines of shape {value.shape} do not broadcast to x's {x.shape}; give a "
            "number, one sample's shape, or x's shape."
        ) from None


def perturbed_scores(
    runner: Runner, req: Request, target: Target, copies: np.ndarray, samples: np.ndarray
) -> np.ndarray:
    """The explained score of perturbed copies of the samples `samples` (sorted indices).

    Each copy keeps its sample's (fixed) target and its sample's other batched inputs.
    """
    repeats = np.bincount(samples, minlength=req.n)
    return scores(runner, req.with_x(copies, repeats, target.repeat(repeats)))


def explained_index(target: Target, n: int) -> np.ndarray:
    """(n,) the index a fixed target explains in each sample (-1 where it names none)."""
    index = getattr(target, "index", None)
    if index is None or np.ndim(index) > 1:
        return np.full(n, -1, np.int64)
    return np.broadcast_to(np.asarray(index, np.int64), (n,)).copy()


def attribution_dtype(x: np.ndarray) -> np.dtype:
    """x's own float type; float32 for integer inputs (tokens, categories)."""
    return x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)


class Occlusion(Method):
    name = "occlusion"
    signed = True  # the score's drop: negative where hiding a window raises the score
    options = frozenset({"sliding_window_shapes", "strides", "baselines"})
    needs_gradient = False

    def explain(
        self,
        runner: Runner,
        req: Request,
        sliding_window_shapes: Sequence[int] | None = None,
        strides: int | Sequence[int] | None = None,
        baselines: Any = None,
    ) -> Explanation:
        x = req.x
        dims = x.shape[1:]
        example = str(default_windows(x.shape, req.layout)[0])
        if sliding_window_shapes is None:
            windows, default_strides = default_windows(x.shape, req.layout)
            strides = default_strides if strides is None else strides
        else:
            windows = _per_axis(
                sliding_window_shapes, len(dims), "sliding_window_shapes", example, False
            )
        steps = _per_axis(1 if strides is None else strides, len(dims), "strides", example, True)
        slices = window_slices(dims, windows, steps)
        base = make_baselines(x, baselines)

        target = resolve_targets(runner, req)
        score_x = scores(runner, req, target)
        reference = score_x.astype(np.float64)
        total = np.zeros(x.shape, dtype=np.float64)
        per_run = req.batch_size or COPIES_WHEN_UNBATCHED
        count = req.n * len(slices)
        buffer = np.empty((min(per_run, count), *dims), dtype=x.dtype)
        held = np.full(len(buffer), -1)  # the sample each row of the buffer holds
        for start in range(0, count, per_run):
            samples, positions = np.divmod(
                np.arange(start, min(start + per_run, count)), len(slices)
            )
            copies = buffer[: len(samples)]
            for k, (i, p) in enumerate(zip(samples, positions)):
                if held[k] != i:  # rows keep their sample between runs: no full copy
                    copies[k], held[k] = x[i], i
                copies[k][slices[p]] = base[i][slices[p]]
            occluded = perturbed_scores(runner, req, target, copies, samples)
            drops = reference[samples] - occluded.astype(np.float64)
            for k, (drop, i, p) in enumerate(zip(drops, samples, positions)):
                total[i][slices[p]] += drop
                copies[k][slices[p]] = x[i][slices[p]]  # the window back to x
        covered = np.zeros(dims, dtype=np.float64)
        for window in slices:
            covered[window] += 1
        return Explanation(
            (total / covered).astype(attribution_dtype(x)),
            score_x,
            explained_index(target, req.n),
            None,
            self.name,
            {"sliding_window_shapes": windows, "strides": steps, "windows": len(slices)},
            kind=target.kind,
            activation=explained_activation(runner, req, target),
        )
