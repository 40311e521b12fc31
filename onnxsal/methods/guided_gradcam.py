"""Guided Grad-CAM: guided backprop times the upsampled Grad-CAM (Selvaraju et al. 2017).

The CAM uses true gradients and the guided map its own backward pass, as
Captum's GuidedGradCam does (the classifier head between the CAM layer and the
score may hold ReLUs, which guided backprop would rewrite). Mind Adebayo et al.
2018: guided backprop, and so Guided Grad-CAM, largely survives randomising
the model's weights.
"""

from __future__ import annotations

from dataclasses import replace

from onnxsal.methods.base import Explanation, Method, Request, gradients, resolve_targets
from onnxsal.methods.gradcam import grad_cam
from onnxsal.runner import Runner


class GuidedGradCAM(Method):
    name = "guided_gradcam"
    signed = False  # guided backprop's gradients, read by size as guided backprop's are
    layer_is_own = True
    takes_wrt = False

    def explain(self, runner: Runner, req: Request, **options) -> Explanation:
        req = replace(req, target=resolve_targets(runner, replace(req, layer=None)))
        cam, _, layer = grad_cam(runner, req)
        guided, _ = gradients(runner, replace(req, layer=None), modifier="guided")
        return Explanation(
            guided.attribution * cam,
            guided.score,
            guided.target,
            guided.unit_scores,
            self.name,
            {"layer": layer, "cam": cam},
        )
