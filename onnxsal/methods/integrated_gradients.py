"""Integrated Gradients (Sundararajan et al. 2017).

attribution = (x - baseline) * integral_0^1 grad(baseline + a (x - baseline)) da,
the integral by the trapezoid rule (Captum's "riemann_trapezoid") or Gauss-Legendre.
All points of a sample's path run as one batch. `extras["completeness_gap"]` is
sum(attribution) - (score(x) - score(baseline)): it shrinks as `steps` grows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxsal.errors import OptionError
from onnxsal.methods.base import (
    Explanation,
    Method,
    Request,
    gradients,
    non_negative,
    positive_int,
    resolve_targets,
    sample_groups,
    sample_rngs,
    scores,
)
from onnxsal.postprocess import spatial_axes
from onnxsal.runner import Runner

RULES = ("riemann_trapezoid", "gausslegendre")


def nodes_and_weights(steps: int, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """Points a in [0, 1] and their quadrature weights."""
    if rule == "riemann_trapezoid":
        if steps < 2:
            raise OptionError("The trapezoid rule needs steps >= 2.")
        alphas = np.linspace(0.0, 1.0, steps)
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] /= 2
        return alphas, weights
    if rule == "gausslegendre":
        points, w = np.polynomial.legendre.leggauss(steps)
        return 0.5 * (points + 1.0), 0.5 * w
    raise OptionError(f"integration must be one of {', '.join(RULES)}, not '{rule}'.")


def make_baseline(
    x: np.ndarray,
    baseline: Any,
    layout: str | None,
    seed: int | None,
    blur_sigma: float | None,
    req: Request | None = None,
) -> np.ndarray:
    """zeros (default), a scalar, an array broadcastable to x, "blur" or "uniform".

    When x stands for a layer (`wrt=`), the baseline is given as the model's input, as
    Captum's LayerIntegratedGradients takes it (default: zeros, e.g. token 0), and mapped
    through the model to the layer; "blur" and "uniform" are drawn in the layer's space.
    """
    if req is not None and req.to_wrt is not None and not isinstance(baseline, str):
        return req.to_wrt(baseline, req).astype(x.dtype)
    if baseline is None or (isinstance(baseline, str) and baseline == "zeros"):
        return np.zeros_like(x)
    if isinstance(baseline, str):
        if baseline == "uniform":  # uniform noise over each sample's value range
            flat = x.reshape(x.shape[0], -1)
            lo = flat.min(axis=1).reshape(-1, *([1] * (x.ndim - 1)))
            hi = flat.max(axis=1).reshape(-1, *([1] * (x.ndim - 1)))
            draws = np.stack([rng.random(x.shape[1:]) for rng in sample_rngs(x, seed)])
            return (lo + (hi - lo) * draws).astype(x.dtype)
        if baseline == "blur":
            return _gaussian_blur(x, layout, blur_sigma)
        raise OptionError(
            f"Unknown baseline '{baseline}': use 'zeros', 'blur', 'uniform', a number or an array."
        )
    try:
        return np.broadcast_to(np.asarray(baseline, dtype=x.dtype), x.shape).copy()
    except ValueError as exc:
        raise OptionError(
            f"The baseline's shape {np.shape(baseline)} does not broadcast to x's {x.shape}."
        ) from exc


def _gaussian_blur(x: np.ndarray, layout: str | None, sigma: float | None) -> np.ndarray:
    """A strongly blurred copy of x (the Blur IG baseline); sigma defaults to 10% of the side."""
    out = x.astype(np.float64)
    for axis in spatial_axes(layout, x.ndim):
        n = x.shape[axis]
        s = sigma if sigma is not None else max(n / 10.0, 1.0)
        radius = int(np.ceil(3 * s))
        taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / s) ** 2)
        taps /= taps.sum()
        pad = [(0, 0)] * x.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="reflect" if n > radius else "edge")
        out = sum(w * np.take(padded, np.arange(i, i + n), axis=axis) for i, w in enumerate(taps))
    return out.astype(x.dtype)


class IntegratedGradients(Method):
    name = "integrated_gradients"
    signed = True  # the terms sum to score(x) - score(baseline): their sign says which way
    options = frozenset({"baseline", "steps", "integration", "seed", "blur_sigma"})

    def explain(
        self,
        runner: Runner,
        req: Request,
        baseline: Any = None,
        steps: int = 50,
        integration: str = "riemann_trapezoid",
        seed: int | None = 0,
        blur_sigma: float | None = None,
    ) -> Explanation:
        alphas, weights = nodes_and_weights(positive_int(steps, "steps"), integration)
        if blur_sigma is not None:
            blur_sigma = non_negative(blur_sigma, "blur_sigma")
        target = resolve_targets(runner, req)
        base = make_baseline(req.x, baseline, req.layout, seed, blur_sigma, req)
        attributions, chosen = [], []
        for start, stop, sub in sample_groups(req, steps):
            x, x0 = sub.x, base[start:stop]
            path = x0[:, None] + alphas.reshape(1, -1, *([1] * (x.ndim - 1))) * (x - x0)[:, None]
            path = path.reshape(-1, *x.shape[1:]).astype(x.dtype)
            expanded = sub.with_x(path, steps, target.slice(start, stop).repeat(steps))
            result, _ = gradients(runner, expanded)
            chosen.append(result.target.reshape(stop - start, steps, -1)[:, 0])
            grads = result.attribution.reshape(stop - start, steps, *x.shape[1:])
            mean_grad = np.einsum("s,ns...->n...", weights, grads.astype(np.float64))
            attributions.append((x - x0).astype(np.float64) * mean_grad)
        attribution = np.concatenate(attributions)
        score_x = scores(runner, req, target)
        score_0 = scores(runner, req.with_x(base, 1, target), target)
        gap = attribution.reshape(req.n, -1).sum(axis=1) - (score_x - score_0)
        return Explanation(
            attribution.astype(req.x.dtype),
            score_x,
            np.concatenate(chosen).reshape(req.n, *result.target.shape[1:]),
            None,
            self.name,
            {"completeness_gap": gap, "baseline": base, "steps": steps, "integration": integration},
            kind=target.kind,
            activation=result.activation,
        )
