"""Grad-CAM (Selvaraju et al. 2017) at any layer.

cam = relu(sum_c alpha_c A_c) with alpha_c the spatial mean of d score / d A_c,
upsampled bilinearly (torch's F.interpolate, align_corners=False) to the
input's size, with a singleton channel: (N, 1, H, W), or (N, H, W, 1) for NHWC
models. `layer=` picks the layer; by default the last 4-D activation before
the classifier.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from onnxsal import feeds
from onnxsal.errors import TargetError
from onnxsal.graph.layers import last_spatial_tensor, spatial_candidates
from onnxsal.methods.base import Explanation, Method, Request, gradients
from onnxsal.postprocess import resize_bilinear, spatial_axes
from onnxsal.runner import Runner
from onnxsal.saliency_graph import ACTIVATION, ACTIVATION_GRAD


def cam_layer(runner: Runner, req: Request) -> str:
    """The tensor name of Grad-CAM's layer: the one named, or the last 4-D activation with
    spatial extent, its sizes read off this input's run where they are not static."""
    if req.layer is not None:
        return runner.layers.resolve(req.layer).name
    found = last_spatial_tensor(runner.model, runner.facts.input_name, req.layout)
    if found is None:
        found = last_spatial_tensor(
            runner.model, runner.facts.input_name, req.layout, _measured_sizes(runner, req)
        )
    if found is None:
        raise TargetError(
            "No 4-D activation with spatial extent was found for Grad-CAM; name one with layer=."
        )
    return found.name


def _measured_sizes(runner: Runner, req: Request) -> dict[str, tuple[int, ...]]:
    """The shapes of every 4-D candidate tensor, from one run of the first sample."""
    names = spatial_candidates(runner.model, runner.facts.input_name)
    if not names:
        return {}
    x, one = feeds.first_copies(req.x, req.inputs, runner.fixed_batch or 1)
    values = runner.values(names, x, one)
    return {name: value.shape for name, value in values.items()}


def grad_cam(runner: Runner, req: Request):
    """(cam upsampled to x, the Explanation of the class score, the CAM layer's name)."""
    layer = cam_layer(runner, req)
    result, out = gradients(runner, replace(req, layer=None), layer_gradient=layer)
    acts, grads = out[ACTIVATION].astype(np.float64), out[ACTIVATION_GRAD].astype(np.float64)
    if acts.ndim != 4:
        raise TargetError(f"Grad-CAM needs a 4-D layer; '{layer}' has shape {acts.shape}.")
    # The layer's own layout: an NHWC model's layer may be stored NCHW (tf2onnx).
    declared = runner.layers.axes.get(layer)
    layer_nhwc = req.layout == "NHWC" if declared is None else declared == 3 or declared == -1
    spatial, channel = ((1, 2), 3) if layer_nhwc else ((2, 3), 1)
    alpha = grads.mean(axis=spatial, keepdims=True)
    cam = np.maximum((alpha * acts).sum(axis=channel, keepdims=True), 0.0)
    if layer_nhwc != (req.layout == "NHWC"):
        cam = cam.transpose(0, 2, 3, 1) if not layer_nhwc else cam.transpose(0, 3, 1, 2)
    size = tuple(req.x.shape[a] for a in spatial_axes(req.layout))
    return resize_bilinear(cam, size, layout=req.layout), result, layer


class GradCAM(Method):
    name = "gradcam"
    signed = False  # ReLU of the weighted activations: never negative
    layer_is_own = True
    takes_wrt = False

    def explain(self, runner: Runner, req: Request, **options) -> Explanation:
        cam, result, layer = grad_cam(runner, req)
        return Explanation(
            cam, result.score, result.target, result.unit_scores, self.name, {"layer": layer}
        )
