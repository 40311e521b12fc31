"""FullGrad (Srinivas & Fleuret, NeurIPS 2019) and its "simple" variant.

FullGrad = psi(grad_x * x) + sum over biased layers of psi(grad_z * b), summed
over channels, where psi = abs, per-sample min-max rescaling (eps 1e-6) and a
bilinear resize (align_corners=True) to the input size -- the reference
implementation's post-processing. Only spatial maps (same rank as x) enter
the sum, as in the reference; BatchNorm's bias is its effective bias, so a
BatchNorm folded into its Conv gives the same map. All bias-gradients come
from one gradient graph with one output per biased layer.

simple_fullgrad is the reference's SimpleFullGrad: the gradients at the biased
layers' outputs, without multiplying by the bias.

Result: one map per sample with a singleton channel, (N, 1, H, W) or NHWC.
"""

from __future__ import annotations

import numpy as np

from onnxsal.errors import TargetError
from onnxsal.methods.base import Explanation, Method, Request, gradients
from onnxsal.postprocess import channel_axis, resize_bilinear, spatial_axes
from onnxsal.runner import Runner
from onnxsal.saliency_graph import BIAS_GRAD, BIAS_MAP


def rescale(maps: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """The reference's post-processing: |m|, minus its minimum, over (maximum + eps)."""
    m = np.abs(maps.astype(np.float64))
    flat = m.reshape(m.shape[0], -1)
    m = m - flat.min(axis=1).reshape(-1, *([1] * (m.ndim - 1)))
    flat = m.reshape(m.shape[0], -1)
    return m / (flat.max(axis=1).reshape(-1, *([1] * (m.ndim - 1))) + eps)


class FullGrad(Method):
    name = "fullgrad"
    signed = False  # a sum of rescaled |.| maps: never negative (simple_fullgrad too)
    bias_output = BIAS_MAP
    takes_wrt = False

    def explain(self, runner: Runner, req: Request, **options) -> Explanation:
        if req.x.ndim != 4 or req.layout is None:
            raise TargetError(
                f"{self.name} sums bias maps over the picture: it needs image inputs "
                f"[N, C, H, W] or [N, H, W, C], not {list(req.x.shape)}."
            )
        result, out = gradients(runner, req, bias_maps=True)
        channel = channel_axis(req.layout, req.x.ndim)
        size = tuple(req.x.shape[a] for a in spatial_axes(req.layout))
        cam = rescale(result.attribution * req.x).sum(axis=channel, keepdims=True)
        used = 0
        for name in sorted(k for k in out if k.startswith(self.bias_output + "_")):
            maps = out[name]
            if maps.ndim != req.x.ndim:  # fully connected biases have no spatial map
                continue
            layer = rescale(maps).sum(axis=channel, keepdims=True)
            cam = cam + resize_bilinear(layer, size, layout=req.layout, align_corners=True)
            used += 1
        return Explanation(
            cam.astype(np.float32),
            result.score,
            result.target,
            result.unit_scores,
            self.name,
            {"bias_maps": used},
        )


class SimpleFullGrad(FullGrad):
    name = "simple_fullgrad"
    bias_output = BIAS_GRAD
