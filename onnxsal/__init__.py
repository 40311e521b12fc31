"""onnxsal: gradient saliency maps for any ONNX classifier, on onnxruntime."""

from onnxsal.errors import (
    InputError,
    ModelLoadError,
    NormalizationError,
    OnnxsalError,
    OnnxsalWarning,
    RuntimeUnavailableError,
    TargetError,
    UnsupportedModelError,
)
from onnxsal.explainer import Explainer, Explanation
from onnxsal.modifiers import MODIFIERS, RECTIFIERS, BackpropModifier

__version__ = "0.1.0"

__all__ = [
    "MODIFIERS",
    "RECTIFIERS",
    "BackpropModifier",
    "Explainer",
    "Explanation",
    "InputError",
    "ModelLoadError",
    "NormalizationError",
    "OnnxsalError",
    "OnnxsalWarning",
    "RuntimeUnavailableError",
    "TargetError",
    "UnsupportedModelError",
    "__version__",
]
