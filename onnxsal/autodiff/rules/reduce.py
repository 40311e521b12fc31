"""Reduce* ops. ReduceMax/ReduceMin route the gradient to the first extreme."""

from __future__ import annotations

import onnx_ir as ir

from onnxsal.autodiff.engine import Ctx, wrt
from onnxsal.errors import UnsupportedModelError
from onnxsal.graph.builder import Builder, const_array, rank_of


def reduced_axes(ctx: Ctx) -> list[int] | None:
    """Sorted non-negative reduced axes, or None when the op is a no-op."""
    node = ctx.node
    r = rank_of(ctx.x[0])
    axes_input = ctx.input(1)
    if axes_input is not None:
        value = const_array(axes_input)
        if value is None:
            raise UnsupportedModelError(
                f"{node.op_type} '{node.name}' reduces over axes computed at run time; the "
                "gradient needs them fixed. Re-export with constant axes."
            )
        axes = [int(a) for a in value.reshape(-1)]
    else:
        axes = list(ctx.attr("axes", ()))
    if not axes:
        if ctx.attr("noop_with_empty_axes", 0):
            return None
        if r is None:
            raise UnsupportedModelError(f"{node.op_type} '{node.name}': input rank unknown.")
        return list(range(r))
    if r is None and any(a < 0 for a in axes):
        raise UnsupportedModelError(f"{node.op_type} '{node.name}': input rank unknown.")
    return sorted(a % r if r is not None else a for a in axes)


def _broadcast_back(ctx: Ctx, b: Builder, v: ir.Value, axes: list[int]) -> ir.Value:
    """Bring a reduced-shape tensor back to the input's shape."""
    if not ctx.attr("keepdims", 1):
        v = b.unsqueeze(v, axes)
    return b.expand_like(v, ctx.x[0])


def _reduction(local):
    @wrt(0)
    def rule(ctx: Ctx):
        axes = reduced_axes(ctx)
        if axes is None:
            return [ctx.g]
        b = ctx.b
        return [local(ctx, b, lambda v: _broadcast_back(ctx, b, v, axes))]

    return rule


reduce_sum = _reduction(lambda ctx, b, back: back(ctx.g))
reduce_mean = _reduction(
    lambda ctx, b, back: b.Div(
        back(ctx.g),
        b.Cast(
            b.Div(b.Size(ctx.x[0]), b.Size(ctx.y[0])), to=ir.DataType(ctx.x[0].dtype or b.dtype)
        ),
    )
)
reduce_sum_square = _reduction(
    lambda ctx, b, back: b.Mul(b.Mul(back(ctx.g), ctx.x[0]), b.scalar(2.0, ctx.x[0]))
)
reduce_l1 = _reduction(lambda ctx, b, back: b.Mul(back(ctx.g), b.Sign(ctx.x[0])))
reduce_log_sum_exp = _reduction(
    lambda ctx, b, back: b.Mul(back(ctx.g), b.Exp(b.Sub(ctx.x[0], back(ctx.y[0]))))
)


def _l2(ctx: Ctx, b: Builder, back) -> ir.Value:
    x = ctx.x[0]
    norm = back(ctx.y[0])
    zero = b.scalar(0.0, x)
    safe = b.Where(b.Equal(norm, zero), b.scalar(1.0, x), norm)
    return b.Where(b.Equal(norm, zero), zero, b.Div(b.Mul(back(ctx.g), x), safe))


reduce_l2 = _reduction(_l2)


def _route_to_first(pick: str):
    @wrt(0)
    def rule(ctx: Ctx):
        axes = reduced_axes(ctx)
        if axes is None:
            return [ctx.g]
        b, x = ctx.b, ctx.x[0]
        r = rank_of(x)
        kept = [a for a in range(r) if a not in axes]
        perm = kept + axes
        moved = b.Transpose(x, perm=perm)
        rows = (
            b.Reshape(moved, b.Concat(b.shape(moved, 0, len(kept)), b.ints([-1]), axis=0))
            if kept
            else b.Reshape(moved, b.ints([-1]))
        )
        first = b.op(pick, rows, axis=-1, keepdims=1, select_last_index=0)
        g_rows = (
            b.Reshape(ctx.g, b.Concat(b.shape(moved, 0, len(kept)), b.ints([1]), axis=0))
            if kept
            else b.Reshape(ctx.g, b.ints([1]))
        )
        routed = b.ScatterElements(b.zeros_like(rows), first, g_rows, axis=-1)
        inverse = [perm.index(i) for i in range(r)]
        return [b.Transpose(b.reshape_like(routed, moved), perm=inverse)]

    return rule


reduce_max = _route_to_first("ArgMax")
reduce_min = _route_to_first("ArgMin")
