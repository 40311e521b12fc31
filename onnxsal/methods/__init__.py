"""The saliency methods, one per module, registered by name (the names are the API)."""

from __future__ import annotations

from onnxsal.errors import TargetError
from onnxsal.methods.base import Explanation, Method, Request
from onnxsal.methods.fullgrad import FullGrad, SimpleFullGrad
from onnxsal.methods.gradcam import GradCAM
from onnxsal.methods.gradient import Gradient
from onnxsal.methods.guided_gradcam import GuidedGradCAM
from onnxsal.methods.input_x_gradient import InputXGradient
from onnxsal.methods.integrated_gradients import IntegratedGradients
from onnxsal.methods.lrp import LRP
from onnxsal.methods.occlusion import Occlusion
from onnxsal.methods.rise import RISE
from onnxsal.methods.smoothgrad import SmoothGrad
from onnxsal.modifiers import MODIFIERS

METHODS: dict[str, Method] = {
    **{name: Gradient(name) for name in MODIFIERS},
    **{
        m.name: m
        for m in (
            InputXGradient(),
            SmoothGrad(),
            IntegratedGradients(),
            LRP(),
            GradCAM(),
            GuidedGradCAM(),
            FullGrad(),
            SimpleFullGrad(),
            Occlusion(),
            RISE(),
        )
    },
}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        known = ", ".join(METHODS)
        raise TargetError(f"Unknown method '{name}'; the methods are: {known}") from None


__all__ = ["METHODS", "Explanation", "Method", "Request", "get_method"]
