"""SmoothGrad (Smilkov et al. 2017): average a base method over noisy copies of the input.

Noise: Gaussian with std = `noise` x (max - min) of each sample. Variants:
"mean" (SmoothGrad), "squared" (SG^2: the mean of squares), "var" (VarGrad:
the variance). The noisy copies run as batches through the base method's
graph, `batch_size` samples at a time; only a group of inputs is expanded at
once, so memory stays bounded however many samples are drawn.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxsal.errors import OptionError
from onnxsal.methods.base import (
    Explanation,
    Method,
    Request,
    non_negative,
    positive_int,
    resolve_targets,
    sample_groups,
    sample_rngs,
)
from onnxsal.runner import Runner

VARIANTS = ("mean", "squared", "var")


def noise_for(x: np.ndarray, n_samples: int, noise: float, seed: int | None) -> np.ndarray:
    """(N * n_samples, ...) Gaussian noise, sample-major (copies of sample 0 first); each
    sample's noise comes from its own stream (see `sample_rngs`)."""
    flat = x.reshape(x.shape[0], -1)
    sigma = noise * (flat.max(axis=1) - flat.min(axis=1))
    draws = np.stack(
        [rng.standard_normal((n_samples, *x.shape[1:])) for rng in sample_rngs(x, seed)]
    )
    draws *= sigma.reshape(-1, 1, *([1] * (x.ndim - 1)))
    return draws.reshape(-1, *x.shape[1:]).astype(x.dtype)


class SmoothGrad(Method):
    name = "smoothgrad"
    signed = False  # averaged gradients read by size, like gradients; squared/var are >= 0
    options = frozenset({"n_samples", "noise", "seed", "variant", "base"})

    def explain(
        self,
        runner: Runner,
        req: Request,
        n_samples: int = 50,
        noise: float = 0.15,
        seed: int | None = 0,
        variant: str = "mean",
        base: str = "vanilla",
        **base_options: Any,
    ) -> Explanation:
        from onnxsal.methods import get_method

        if variant not in VARIANTS:
            raise OptionError(f"variant must be one of {', '.join(VARIANTS)}, not '{variant}'.")
        n_samples = positive_int(n_samples, "n_samples")
        noise = non_negative(noise, "noise")
        base_method = get_method(base)
        if base_method.name == self.name:
            raise OptionError("SmoothGrad cannot be its own base method.")
        target = resolve_targets(runner, req)
        pieces, scores, chosen = [], [], []
        for start, stop, sub in sample_groups(req, n_samples):
            x = sub.x
            noisy = np.repeat(x, n_samples, axis=0) + noise_for(x, n_samples, noise, seed)
            expanded = sub.with_x(noisy, n_samples, target.slice(start, stop).repeat(n_samples))
            result = base_method.explain(runner, expanded, **base_options)
            maps = result.attribution.reshape(stop - start, n_samples, *x.shape[1:])
            pieces.append(_aggregate(maps.astype(np.float64), variant))
            scores.append(result.score.reshape(stop - start, n_samples).mean(axis=1))
            chosen.append(result.target.reshape(stop - start, n_samples, -1)[:, 0])
        return Explanation(
            np.concatenate(pieces).astype(req.x.dtype),
            np.concatenate(scores),
            np.concatenate(chosen).reshape(req.n, *result.target.shape[1:]),
            None,
            self.name,
            {"base": base_method.name, "variant": variant, "n_samples": n_samples},
            kind=target.kind,
            activation=result.activation,
        )


def _aggregate(maps: np.ndarray, variant: str) -> np.ndarray:
    if variant == "mean":
        return maps.mean(axis=1)
    if variant == "squared":
        return (maps**2).mean(axis=1)
    return maps.var(axis=1)
