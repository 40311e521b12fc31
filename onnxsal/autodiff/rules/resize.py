"""Resize: every mode is linear and separable per axis.

For each resized axis, onnxruntime itself resizes an identity matrix with the
node's own settings, which yields that axis's interpolation matrix R
(n_in x n_out); the gradient is g contracted with R along the axis. No
interpolation formula is re-implemented here, so every mode, coordinate
transform and antialias setting is matched exactly.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxsal.autodiff.engine import Ctx, wrt
from onnxsal.errors import UnsupportedModelError
from onnxsal.graph.builder import Builder, const_array, rank_of, static_dims

_COPIED = (
    "mode",
    "coordinate_transformation_mode",
    "cubic_coeff_a",
    "exclude_outside",
    "nearest_mode",
    "antialias",
)


def _contract(b: Builder, g: ir.Value, matrix: ir.Value, axis: int, rank: int) -> ir.Value:
    """out[..., i, ...] = sum_o matrix[i, o] * g[..., o, ...] along `axis`."""
    if axis == rank - 2:
        return b.MatMul(matrix, g)
    matrix_t = b.Transpose(matrix, perm=[1, 0])
    if axis == rank - 1:
        return b.MatMul(g, matrix_t)
    perm = [a for a in range(rank) if a != axis] + [axis]
    inverse = [perm.index(a) for a in range(rank)]
    return b.Transpose(b.MatMul(b.Transpose(g, perm=perm), matrix_t), perm=inverse)


@wrt(0)
def resize(ctx: Ctx):
    b, g, x, y, node = ctx.b, ctx.g, ctx.x[0], ctx.y[0], ctx.node
    r = rank_of(x)
    if r is None:
        raise UnsupportedModelError(f"Resize '{node.name}': the input rank is unknown.")
    if ctx.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise UnsupportedModelError(
            f"Resize '{node.name}' uses keep_aspect_ratio_policy; re-export with explicit sizes."
        )
    axes = [a % r for a in ctx.attr("axes", tuple(range(r)))]
    roi, scales, sizes = ctx.input(1), ctx.input(2), ctx.input(3)
    scale_values = const_array(scales)
    size_values = const_array(sizes)
    use_scales = scales is not None and (scale_values is None or scale_values.size > 0)
    crop = ctx.attr("coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize"
    roi_values = const_array(roi) if crop else None
    if crop and roi_values is None:
        raise UnsupportedModelError(
            f"Resize '{node.name}': tf_crop_and_resize needs a constant roi."
        )
    x_dims = static_dims(x) or (None,) * r
    attrs = {name: ctx.attr(name) for name in _COPIED}
    dtype = b.np_dtype(x)
    for j, axis in enumerate(axes):
        if not crop:
            if use_scales and scale_values is not None and float(scale_values[j]) == 1.0:
                continue
            if not use_scales and size_values is not None and x_dims[axis] == int(size_values[j]):
                continue
        n_in = b.dim(x, axis)
        eye = b.EyeLike(
            b.op(
                "ConstantOfShape",
                b.Concat(n_in, n_in, axis=0),
                value=ir.tensor(np.zeros((1,), dtype=dtype)),
            )
        )
        roi_2d = None
        if crop:
            k = len(axes)
            roi_2d = b.array([0.0, roi_values[j], 1.0, roi_values[k + j]], x)
        if use_scales:
            scale_j = b.Slice(scales, b.ints([j]), b.ints([j + 1]))
            pair = b.Concat(b.array([1.0], scales), scale_j, axis=0)
            matrix = b.Resize(eye, roi_2d, pair, extrapolation_value=0.0, **attrs)
        else:
            pair = b.Concat(n_in, b.dim(y, axis), axis=0)
            matrix = b.Resize(eye, roi_2d, None, pair, extrapolation_value=0.0, **attrs)
        g = _contract(b, g, matrix, axis, r)
    return [g]
