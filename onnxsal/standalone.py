"""Standalone explainer models: one ONNX file that computes the model's outputs and a map.

No onnxsal at run time: any ONNX runtime (onnxruntime, onnxruntime-web...)
runs it. Inputs: the model's inputs. Outputs: the model's own outputs, then
`attribution` (and `score`, `target_index`...). The target is baked in: its
run-time values (a class index, a time step, a box's weights...) become
constants repeated over the batch; no class means each sample's top-1.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxsal.errors import OnnxsalWarning, TargetError, UnsupportedModelError
from onnxsal.modifiers import MODIFIERS
from onnxsal.targets import ATTRIBUTION

# one graph each: the backprop modifiers, LRP, and the gradient times the input
SINGLE_GRAPH_METHODS = (*MODIFIERS, "lrp", "input_x_gradient")


def standalone_explainer(
    explainer,
    method: str = "vanilla",
    target: Any = None,
    *,
    example: Any = None,
    composite: Any = None,
) -> onnx.ModelProto:
    """The explainer graph of `method` as a self-contained ONNX model (see module doc).
    `example`: an input to measure shapes on, for models whose sizes are dynamic;
    `composite`: LRP's (default epsilon_plus_flat)."""
    if method not in SINGLE_GRAPH_METHODS:
        raise TargetError(
            f"'{method}' needs several runs and cannot be one ONNX graph; exportable methods: "
            + ", ".join(SINGLE_GRAPH_METHODS)
        )
    modifier = "vanilla" if method == "input_x_gradient" else method
    others = [
        i
        for i in explainer.model.graph.inputs
        if i.name not in explainer.model.graph.initializers and i.name != explainer.input_name
    ]
    if explainer.specialised and others:
        raise UnsupportedModelError(
            "The model's control flow or recurrent ops are rewritten for the values of its "
            f"other inputs ({', '.join(v.name for v in others)}), which an exported explainer "
            "could not follow; explain it with onnxsal explain --feed instead."
        )
    model, feeds = explainer.compiled(
        modifier, target, example=example, keep_outputs=True, composite=composite
    )
    dynamic = any(not isinstance(d, int) for d in explainer.input_shape[1:])
    if dynamic and any(np.ndim(v) > 1 for v in feeds.values()):
        warnings.warn(
            "The baked target holds values laid out on the output's grid (a region's "
            "weights, a path of steps): the exported explainer fits inputs the size of the "
            "example only.",
            OnnxsalWarning,
            stacklevel=2,
        )
    if explainer.specialised:  # unrolled for the example's size: say so in the signature
        shape = (example if example is not None else explainer.example_input()).shape
        x = next(i for i in model.graph.input if i.name == explainer.input_name)
        for dim, size in zip(list(x.type.tensor_type.shape.dim)[1:], shape[1:]):
            dim.Clear()
            dim.dim_value = size
        warnings.warn(
            "The model's control flow or recurrent ops were rewritten for the example's "
            f"size: the exported explainer takes inputs of shape {['N', *shape[1:]]} only.",
            OnnxsalWarning,
            stacklevel=2,
        )
    graph = model.graph
    x_name = explainer.input_name
    kept = [i for i in graph.input if i.name not in feeds]
    del graph.input[:]
    graph.input.extend(kept)
    baked = [
        helper.make_node(
            "Shape", [x_name], ["onnxsal/batch"], start=0, end=1, name="onnxsal/batch_of_input"
        )
    ]
    for name, value in feeds.items():  # value: one sample's row, repeated over the batch
        row = f"onnxsal/baked/{name}"
        graph.initializer.append(numpy_helper.from_array(value, row))
        reps = f"onnxsal/baked/{name}/repeats"
        ones = numpy_helper.from_array(np.ones(value.ndim - 1, np.int64), f"{reps}/ones")
        graph.initializer.append(ones)
        baked += [
            helper.make_node("Concat", ["onnxsal/batch", ones.name], [reps], axis=0, name=reps),
            helper.make_node("Tile", [row, reps], [name], name=f"onnxsal/baked/{name}/tile"),
        ]
    for i, node in enumerate(baked):
        graph.node.insert(i, node)
    if method == "input_x_gradient":
        for node in graph.node:
            for i, out in enumerate(node.output):
                if out == ATTRIBUTION:
                    node.output[i] = "onnxsal/gradient"
        graph.node.append(
            helper.make_node(
                "Mul", ["onnxsal/gradient", x_name], [ATTRIBUTION], name="onnxsal/times_input"
            )
        )
    onnx.checker.check_model(model)
    return model
