"""Keras 3 -> ONNX under whichever backend Keras runs on.

`model.export(path, format="onnx")` is Keras's own exporter: through torch's
exporter on the torch backend (no TensorFlow needed), through tf2onnx on the
TensorFlow backend. Keras picks its backend once per process (KERAS_BACKEND).
NHWC stays NHWC unless `layout="NCHW"` asks for a transposing input.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper

from onnxsal import metadata
from onnxsal.converters.common import (
    ConversionError,
    existing_file,
    finish,
    layer_map,
    load_inline,
    need,
    verify,
)


def _load(source: Any) -> Any:
    keras = need("keras", "keras")
    path = existing_file(source, "Keras model file")
    if path is not None:
        try:
            return keras.saving.load_model(str(path), compile=False)
        except Exception as exc:
            raise ConversionError(
                f"'{path}' could not be loaded as a Keras model ({str(exc).splitlines()[0]}). "
                "Custom layers must be importable (pass the model object instead)."
            ) from exc
    return source


def _to_nchw_input(model: onnx.ModelProto) -> None:
    """Give the model an NCHW input that is transposed to the NHWC one it had."""
    graph = model.graph
    old = graph.input[0]
    dims = old.type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ConversionError("layout='NCHW' needs a 4-D image input.")
    nhwc_name = old.name + "__nhwc"
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old.name:
                node.input[i] = nhwc_name
    for out in graph.output:
        if out.name == old.name:
            raise ConversionError("The input is also an output; cannot add a transpose.")
    new = onnx.ValueInfoProto()
    new.CopyFrom(old)
    order = [0, 3, 1, 2]
    new_dims = new.type.tensor_type.shape.dim
    for i, j in enumerate(order):
        new_dims[i].CopyFrom(dims[j])
    graph.node.insert(
        0,
        helper.make_node(
            "Transpose", [old.name], [nhwc_name], perm=[0, 2, 3, 1], name="onnxsal_nchw_to_nhwc"
        ),
    )
    graph.input.remove(old)
    graph.input.insert(0, new)


def from_keras(
    model: Any,
    path: str | os.PathLike | None = None,
    *,
    layout: str = "NHWC",
    preprocess: metadata.Preprocess | None = None,
    labels: Sequence[str] | None = None,
    tolerance: float = 1e-4,
) -> onnx.ModelProto:
    """Export a keras.Model (or a .keras / .h5 file) to ONNX, verified before it is written.

    The input keeps its NHWC layout; `layout="NCHW"` adds an input transpose so the
    ONNX model takes NCHW. Written to `path` only after onnxruntime reproduced
    Keras's outputs on two batch sizes.
    """
    keras = need("keras", "keras")
    model = _load(model)
    if layout not in ("NHWC", "NCHW"):
        raise ConversionError(f"layout must be 'NHWC' or 'NCHW', not '{layout}'.")
    shape = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else None
    if shape is None or any(d is None for d in shape):
        raise ConversionError(
            "The Keras model needs a fully known input shape (keras.Input(shape=...))."
        )
    backend = keras.backend.backend()

    as_list = _takes_input_list(model)

    def reference(x: np.ndarray):
        out = model([x] if as_list else x, training=False)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return [keras.ops.convert_to_numpy(o) for o in outs]

    reference(np.zeros((1, *shape), np.float32))  # Keras exports only models called once
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "model.onnx")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.export(out, format="onnx", verbose=False)
            onnx_model = load_inline(out)
        except Exception as exc:
            raise ConversionError(
                f"Keras's ONNX export failed on the {backend} backend: {exc}"
            ) from exc
    transform = None
    if layout == "NCHW":
        _to_nchw_input(onnx_model)
        transform = lambda x: np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # noqa: E731
    checked = verify(onnx_model, reference, shape, tolerance=tolerance, transform=transform)
    layers = _keras_layers(keras, model, onnx_model, shape, transform)
    source = {
        "framework": "keras",
        "framework_version": keras.__version__,
        "backend": backend,
        "exporter": "tf2onnx" if backend == "tensorflow" else f"keras export ({backend})",
    }
    return finish(
        onnx_model,
        path,
        source=source,
        layout=layout,
        verification=checked,
        layers=layers,
        preprocess=preprocess,
        labels=labels,
    )


def _takes_input_list(model: Any) -> bool:
    """Whether a functional model was built on [input] (calling it on a bare array warns)."""
    try:
        return isinstance(model.input, (list, tuple))
    except (AttributeError, ValueError):  # subclassed models declare no input
        return False


def _keras_layers(keras, model, onnx_model, shape, transform) -> dict[str, str]:
    """Map Keras layer names to ONNX tensors by comparing their outputs."""
    try:
        layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
        probe = keras.Model(model.inputs[0], [layer.output for layer in layers])
    except Exception:  # subclassed models have no symbolic layer outputs
        return {}
    x = np.random.default_rng(1).standard_normal((1, *shape)).astype(np.float32)
    values = probe(x, training=False)
    values = values if isinstance(values, (list, tuple)) else [values]
    outputs = {layer.name: keras.ops.convert_to_numpy(v) for layer, v in zip(layers, values)}
    return layer_map(onnx_model, x, outputs, transform)
