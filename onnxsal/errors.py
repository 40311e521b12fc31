"""Errors and warnings raised by onnxsal.

Every error message names the problem and the fix, so that a user mistake
never surfaces as a bare traceback from onnx or onnxruntime.
"""

from __future__ import annotations


class OnnxsalError(Exception):
    """Base class of every error onnxsal raises on purpose."""


class ModelLoadError(OnnxsalError, ValueError):
    """The model could not be read (missing file, not ONNX, bad external data)."""


class UnsupportedModelError(OnnxsalError):
    """The model uses something the gradient engine cannot differentiate."""


class NormalizationError(OnnxsalError):
    """Upgrading the model to the engine's opset failed or changed its outputs."""


class InputError(OnnxsalError, ValueError):
    """An input array does not fit the model (shape, dtype, non-finite values)."""


class OptionError(InputError):
    """An option (a method's, or of preprocessing) is unknown or out of range: no input
    would do."""


class TargetError(OnnxsalError, ValueError):
    """A target, layer or unit does not exist in the model."""


class RuntimeUnavailableError(OnnxsalError, ImportError):
    """onnxruntime is missing or broken."""


class OnnxsalWarning(UserWarning):
    """Something worth knowing happened, but the result is still correct."""


def first_line(exc: BaseException) -> str:
    """The first line of an error from onnx or onnxruntime, for a one-line message."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
