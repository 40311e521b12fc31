"""Export framework models to ONNX files that onnxsal explains, each export verified.

Installed as `onnxsal.converters`. The frameworks are optional extras
(`pip install 'onnxsal[torch]'`, `'onnxsal[keras]'`); nothing here imports them
until a converter is called.
"""

from onnxsal.converters.common import ConversionError, Verification
from onnxsal.converters.keras_export import from_keras
from onnxsal.converters.torch_export import from_torch

__all__ = ["ConversionError", "Verification", "from_keras", "from_torch"]
