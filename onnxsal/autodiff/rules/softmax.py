"""Softmax and LogSoftmax over one axis (opset >= 13 semantics).

Older models normalise over all trailing axes flattened; the version
converter rewrites those into Flatten/Softmax/Reshape during normalisation.
"""

from __future__ import annotations

from onnxsal.autodiff.engine import Ctx


def softmax(ctx: Ctx):
    b, g, y = ctx.b, ctx.g, ctx.y[0]
    axis = ctx.attr("axis", -1)
    dot = b.reduce_sum(b.Mul(g, y), [axis])
    return [b.Mul(y, b.Sub(g, dot))]


def log_softmax(ctx: Ctx):
    b, g, y = ctx.b, ctx.g, ctx.y[0]
    axis = ctx.attr("axis", -1)
    return [b.Sub(g, b.Mul(b.Exp(y), b.reduce_sum(g, [axis])))]
