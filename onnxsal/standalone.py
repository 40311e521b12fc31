"""Standalone explainer models: one ONNX file that computes the model's outputs and a map.

No onnxsal at run time: any ONNX runtime (onnxruntime, onnxruntime-web...)
runs it. Inputs: the model's inputs. Outputs: the model's own outputs, then
`attribution` (and `score`, `target_index`). The target is baked in: a class
index, or the top-1 when none is given.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxsal.errors import TargetError
from onnxsal.saliency_graph import GraphSpec
from onnxsal.targets import ATTRIBUTION, TARGET_INPUT

SINGLE_GRAPH_METHODS = ("vanilla", "guided", "deconv", "input_x_gradient")


def standalone_explainer(
    explainer, method: str = "vanilla", target: int | None = None, *, layer: str | None = None
) -> onnx.ModelProto:
    """The explainer graph of `method` as a self-contained ONNX model (see module doc)."""
    if method not in SINGLE_GRAPH_METHODS:
        raise TargetError(
            f"'{method}' needs several runs and cannot be one ONNX graph; exportable methods: "
            + ", ".join(SINGLE_GRAPH_METHODS)
        )
    if target is not None and (
        isinstance(target, bool) or not isinstance(target, int) or target < 0
    ):
        raise TargetError("The exported target must be one class index >= 0 (or none: top-1).")
    modifier = "vanilla" if method == "input_x_gradient" else method
    spec = GraphSpec(modifier=modifier, explained=(layer,), keep_outputs=True)
    g = explainer._runner.graph(spec)
    if target is not None and g.units[0] is not None and target >= g.units[0]:
        raise TargetError(f"target {target} is out of range: there are {g.units[0]} units.")
    model = onnx.ModelProto()
    model.CopyFrom(g.model)
    graph = model.graph
    x_name = explainer.input_name
    # the target input becomes a constant: [target] * batch
    kept = [i for i in graph.input if i.name != TARGET_INPUT]
    del graph.input[:]
    graph.input.extend(kept)
    value = -1 if target is None else target
    graph.node.insert(
        0,
        helper.make_node(
            "Shape", [x_name], ["onnxsal/batch"], start=0, end=1, name="onnxsal/batch_of_input"
        ),
    )
    graph.node.insert(
        1,
        helper.make_node(
            "ConstantOfShape",
            ["onnxsal/batch"],
            [TARGET_INPUT],
            name="onnxsal/baked_target",
            value=numpy_helper.from_array(np.array([value], np.int64)),
        ),
    )
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
