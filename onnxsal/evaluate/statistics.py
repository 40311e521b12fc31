"""How a map is spread, and how it moves when the input barely does.

Sparseness is the Gini index of |map| (Chalasani et al. 2020) and complexity
the entropy of |map| as a distribution (Bhatt et al. 2020), both as Quantus
computes them (its 1e-7 and 1e-12 guards), each sample normalised by its own
maximum (Quantus normalises by the batch's, which makes a score depend on the
other samples). Max-sensitivity (Yeh et al. 2019) is the largest relative
change of the attribution, ‖a(x + δ) − a(x)‖ / ‖a(x)‖ (Frobenius), over
`n_samples` draws of δ uniform in [−radius, radius]^d in model space, the
class held fixed: Quantus's defaults (200 draws, radius 0.2, raw maps).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxsal.errors import InputError, OptionError
from onnxsal.evaluate.scoring import explained_classes, explainer_of
from onnxsal.methods.base import positive_int


def sparseness(maps: np.ndarray) -> np.ndarray:
    """(N,) Gini index of each map's |values|: 1 = all relevance on one element."""
    a = _normalised(maps) + 1e-7
    a = np.sort(a, axis=1)
    n = a.shape[1]
    k = np.arange(1, n + 1)
    return ((2 * k - n - 1) * a).sum(axis=1) / (n * a.sum(axis=1))


def complexity(maps: np.ndarray) -> np.ndarray:
    """(N,) entropy of each map's |values| as a distribution: low = concentrated."""
    a = _normalised(maps)
    p = a / a.sum(axis=1, keepdims=True)
    return -(p * np.log(p + 1e-12)).sum(axis=1)


def _normalised(maps: np.ndarray) -> np.ndarray:
    a = np.abs(np.asarray(maps, dtype=np.float64)).reshape(len(maps), -1)
    if not np.isfinite(a).all():
        raise InputError("The maps hold NaN or infinite values: no share of relevance to measure.")
    top = a.max(axis=1, keepdims=True)
    return np.divide(a, top, out=np.zeros_like(a), where=top > 0)


def max_sensitivity(
    model: Any,
    x: np.ndarray,
    method: str = "vanilla",
    target: Any = None,
    *,
    n_samples: int = 200,
    radius: float = 0.2,
    seed: int = 0,
    noise: np.ndarray | None = None,
    batch_size: int | None = 32,
    **options: Any,
) -> np.ndarray:
    """(N,) the largest relative change of `method`'s attribution under input noise.

    noise: the draws themselves, (n_samples, *x.shape) (default: uniform, seeded).
    """
    ex = explainer_of(model)
    xs = ex.check_input(x)
    n_samples = positive_int(n_samples, "n_samples")
    if not radius > 0:
        raise OptionError(f"radius must be > 0; got {radius!r}.")
    classes, _ = explained_classes(ex, xs, target, "logit", batch_size)
    if noise is None:
        rng = np.random.default_rng(seed)
        noise = rng.uniform(-radius, radius, (n_samples, *xs.shape))
    noise = np.asarray(noise)
    if noise.shape[1:] != xs.shape:
        raise OptionError(f"noise must be shaped (n_samples, *x.shape); got {list(noise.shape)}.")
    a0 = ex.explain(xs, method, classes, batch_size=batch_size, **options)
    base = np.linalg.norm(a0.reshape(len(xs), -1).astype(np.float64), axis=1)
    worst = np.zeros(len(xs))
    for i, sample in enumerate(xs):
        noisy = (sample[None] + noise[:, i]).astype(xs.dtype)
        moved = ex.explain(noisy, method, int(classes[i]), batch_size=batch_size, **options)
        change = (moved.astype(np.float64) - a0[i]).reshape(len(noisy), -1)
        worst[i] = np.linalg.norm(change, axis=1).max() / base[i] if base[i] > 0 else np.nan
    return worst
