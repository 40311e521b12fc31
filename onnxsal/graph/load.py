"""Read a model from a path, bytes or an in-memory ModelProto."""

from __future__ import annotations

import os
from pathlib import Path

import onnx

from onnxsal.errors import ModelLoadError

ModelSource = str | os.PathLike | bytes | onnx.ModelProto


def _zoo_path(name: str) -> Path | None:
    from onnxsal.models import ZOO

    if name not in ZOO:
        return None
    try:
        return ZOO[name].locate()
    except ImportError as exc:
        raise ModelLoadError(f"Zoo model '{name}' cannot be built here: {exc}") from exc


def load_model(source: ModelSource) -> onnx.ModelProto:
    """Return a private copy of the model, with external data loaded.

    The caller's ModelProto is never modified: onnxsal rewrites graphs.
    """
    if isinstance(source, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(source)
        return model
    if isinstance(source, (bytes, bytearray, memoryview)):
        try:
            return onnx.load_model_from_string(bytes(source))
        except Exception as exc:
            raise ModelLoadError(
                f"The bytes given are not a serialized ONNX model ({exc})."
            ) from exc
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists() and isinstance(source, str):
            path = _zoo_path(source) or path
        if not path.exists():
            from onnxsal.models import ZOO

            raise ModelLoadError(
                f"No model file at '{path}' and no zoo model of that name. Pass the path of "
                "an .onnx file, its bytes, an onnx.ModelProto, or a zoo name: " + ", ".join(ZOO)
            )
        if path.is_dir():
            raise ModelLoadError(f"'{path}' is a folder; pass the path of an .onnx file in it.")
        try:
            return onnx.load(str(path), load_external_data=True)
        except FileNotFoundError as exc:
            raise ModelLoadError(
                f"'{path}' refers to external weight data that is missing ({exc}). Keep the "
                "model's .data file next to it, under the name it was saved with."
            ) from exc
        except Exception as exc:
            raise ModelLoadError(f"'{path}' is not a readable ONNX model ({exc}).") from exc
    raise ModelLoadError(
        f"Cannot load a model from a {type(source).__name__}; pass a path, bytes or an "
        "onnx.ModelProto."
    )
