"""Turn an edited onnx-ir model into the ModelProto onnxruntime runs."""

from __future__ import annotations

from collections.abc import Sequence

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from onnxsal.graph.builder import Builder

# (name, value, dtype, shape): shape is a list of dims, a value whose rank to copy, or None
OutputSpec = tuple[str, ir.Value, "ir.DataType | None", "Sequence | ir.Value | None"]


def finish(model: ir.Model, b: Builder, outputs: Sequence[OutputSpec]) -> onnx.ModelProto:
    """Replace the graph outputs, drop dead nodes and stale inferred shapes, serialize.

    Inferred shapes of intermediate values are dropped: onnx's inference is
    wrong for some ceil-mode pools, and onnxruntime re-infers them anyway.
    """
    graph = model.graph
    graph.outputs.clear()
    for name, value, dtype, shape in outputs:
        out = b.Identity(value)
        out.name = name
        out.dtype = dtype
        if isinstance(shape, ir.Value):  # "shaped like this value": its rank, sizes unknown
            shape = None if shape.shape is None else [None] * len(shape.shape)
        out.shape = ir.Shape(shape) if shape is not None else None
        graph.outputs.append(out)
    RemoveUnusedNodesPass()(model)
    io = set(graph.inputs) | set(graph.outputs)
    for node in graph:
        for v in node.outputs:
            if v not in io:
                v.shape = None
                v.type = None
    if not sizes_trustworthy(graph):
        _relax_input_dims(graph)
    model.ir_version = max(model.ir_version, 8)
    return ir.to_proto(model)


def sizes_trustworthy(graph: ir.Graph) -> bool:
    """False if onnx's (and so onnxruntime's) static shape inference may be wrong here.

    onnxruntime's kernels drop a ceil_mode pooling window that would start in
    the right padding, onnx's inference does not; and onnx drops an axis of
    ConvTranspose outputs sized by output_shape. onnxruntime folds Shape ops
    of statically known tensors into constants, so a wrong inferred size would
    become a wrong gradient shape.
    """
    for node in graph:
        if node.op_type in ("MaxPool", "AveragePool", "LpPool"):
            ceil = node.attributes.get("ceil_mode")
            if ceil is not None and ceil.value:
                return False
        if node.op_type == "ConvTranspose" and "output_shape" in node.attributes:
            return False
    return True


def _relax_input_dims(graph: ir.Graph) -> None:
    """Make every input dim symbolic, so no size downstream is inferred statically."""
    for v in graph.inputs:
        if v.shape is not None and v.name not in graph.initializers:
            v.shape = ir.Shape([f"{v.name}_dim{i}" for i in range(len(v.shape))])
