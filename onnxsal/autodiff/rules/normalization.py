"""BatchNormalization (inference), LayerNormalization, InstanceNormalization, GroupNormalization."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxsal.autodiff.engine import Ctx, wrt
from onnxsal.errors import UnsupportedModelError
from onnxsal.graph.builder import Builder, const_array, rank_of


def _rank(ctx: Ctx, x: ir.Value) -> int:
    r = rank_of(x)
    if r is None:
        raise UnsupportedModelError(
            f"{ctx.node.op_type} '{ctx.node.name}': the rank of its input is unknown."
        )
    return r


def _per_channel(b: Builder, v: ir.Value, rank: int) -> ir.Value:
    """Shape a (C,) tensor to (C, 1, ..., 1) so it broadcasts over an NC... tensor."""
    return b.unsqueeze(v, list(range(1, rank - 1))) if rank > 2 else v


@wrt(0)
def batch_norm(ctx: Ctx):
    """Inference mode: y = x * scale / sqrt(var + eps) + shift, a per-channel affine map."""
    b, g, x = ctx.b, ctx.g, ctx.x[0]
    if ctx.attr("training_mode", 0) or len([o for o in ctx.y if o.consumers()]) > 1:
        raise UnsupportedModelError(
            f"BatchNormalization '{ctx.node.name}' runs in training mode (batch statistics), "
            "so one sample's map would depend on the others. Export the model in eval mode."
        )
    scale, var = ctx.x[1], ctx.x[4]
    eps = ctx.attr("epsilon", 1e-5)
    s, v = const_array(scale), const_array(var)
    if s is not None and v is not None:
        factor = b.array(s.astype(np.float64) / np.sqrt(v.astype(np.float64) + eps), x)
    else:
        factor = b.Div(scale, b.Sqrt(b.Add(var, b.scalar(eps, var))))
    return [b.Mul(g, _per_channel(b, factor, _rank(ctx, x)))]


def standardized_gradient(
    b: Builder, x: ir.Value, gs: ir.Value, axes: list[int], eps: float
) -> ir.Value:
    """d/dx of x_hat = (x - mean) / sqrt(var + eps) over `axes`, applied to gs.

    dx = isd * (gs - mean(gs) - x_hat * mean(gs * x_hat)).
    """
    xc = b.Sub(x, b.reduce_mean(x, axes))
    isd = b.Reciprocal(b.Sqrt(b.Add(b.reduce_mean(b.Mul(xc, xc), axes), b.scalar(eps, x))))
    x_hat = b.Mul(xc, isd)
    centred = b.Sub(gs, b.reduce_mean(gs, axes))
    return b.Mul(isd, b.Sub(centred, b.Mul(x_hat, b.reduce_mean(b.Mul(gs, x_hat), axes))))


@wrt(0)
def layer_norm(ctx: Ctx):
    b, g, x = ctx.b, ctx.g, ctx.x[0]
    r = _rank(ctx, x)
    axis = ctx.attr("axis", -1) % r
    gs = b.Mul(g, ctx.x[1])
    return [standardized_gradient(b, x, gs, list(range(axis, r)), ctx.attr("epsilon", 1e-5))]


@wrt(0)
def instance_norm(ctx: Ctx):
    b, g, x = ctx.b, ctx.g, ctx.x[0]
    r = _rank(ctx, x)
    gs = b.Mul(g, _per_channel(b, ctx.x[1], r))
    return [standardized_gradient(b, x, gs, list(range(2, r)), ctx.attr("epsilon", 1e-5))]


@wrt(0)
def group_norm(ctx: Ctx):
    """Statistics per (sample, group); scale per channel (opset 21) or per group (18)."""
    b, g, x = ctx.b, ctx.g, ctx.x[0]
    r = _rank(ctx, x)
    groups = ctx.attr("num_groups")
    scale = ctx.x[1]
    scale_len = const_array(scale)
    if scale_len is not None and scale_len.size == groups and groups != 1:
        # opset 18: the scale is per group; repeat it over each group's channels.
        per_group = b.Reshape(scale, b.ints([groups, 1]))
        channels = b.Expand(
            per_group, b.Concat(b.ints([groups]), b.Div(b.dim(x, 1), b.ints([groups])), axis=0)
        )
        scale = b.Reshape(channels, b.ints([-1]))
    gs = b.Mul(g, _per_channel(b, scale, r))
    grouped = b.Concat(b.shape(x, 0, 1), b.ints([groups, -1]), axis=0)
    dx = standardized_gradient(
        b, b.Reshape(x, grouped), b.Reshape(gs, grouped), [2], ctx.attr("epsilon", 1e-5)
    )
    return [b.reshape_like(dx, x)]
