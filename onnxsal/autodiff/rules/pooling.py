"""Pooling: MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, LRN.

Every max-type reduction routes its gradient to the first maximum of each
window (torch's and Zeiler's "switches"); splitting it among ties would give
a different deconvnet map after ReLUs, where whole windows tie at 0.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxsal.autodiff.engine import Ctx, wrt
from onnxsal.autodiff.rules.conv import slice_spatial, window
from onnxsal.graph.builder import Builder


def _numel_1d(b: Builder, x: ir.Value) -> ir.Value:
    return b.Reshape(b.Size(x), b.ints([1]))


def scatter_add_flat(b: Builder, x: ir.Value, flat_index: ir.Value, g: ir.Value) -> ir.Value:
    """Gradient for x from g, where g[i] came from x.flat[flat_index[i]]."""
    zeros = b.op(
        "ConstantOfShape", _numel_1d(b, x), value=ir.tensor(np.zeros((1,), dtype=b.np_dtype(x)))
    )
    flat = b.ScatterElements(
        zeros,
        b.Reshape(flat_index, b.ints([-1])),
        b.Reshape(g, b.ints([-1])),
        axis=0,
        reduction="add",
    )
    return b.reshape_like(flat, x)


@wrt(0)
def max_pool(ctx: Ctx):
    b, node, x = ctx.b, ctx.node, ctx.x[0]
    if len(node.outputs) > 1 and node.outputs[1].consumers():
        indices = node.outputs[1]
        if ctx.attr("storage_order", 0) != 0:
            indices = None
    else:
        indices = None
    if indices is None:
        attrs = {
            k: ctx.attr(k)
            for k in ("auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "strides")
        }
        _, indices = b.op("MaxPool", x, outputs=2, storage_order=0, **attrs)
    return [scatter_add_flat(b, x, indices, ctx.dy[0])]


@wrt(0)
def average_pool(ctx: Ctx):
    b, g, x, y = ctx.b, ctx.g, ctx.x[0], ctx.y[0]
    win = window(ctx.node, x)
    r = win.rank
    count_pad = ctx.attr("count_include_pad", 0)
    no_pads = not any(win.pads_begin + win.pads_end)
    ceil = ctx.attr("ceil_mode", 0)
    if win.kernel == win.strides and no_pads and not ceil and all(d == 1 for d in win.dilations):
        return [
            _spread_tiles(b, b.Div(g, b.scalar(float(np.prod(win.kernel)), y)), x, y, win.kernel)
        ]
    spatial_axes = list(range(2, 2 + r))
    ones = b.op(
        "ConstantOfShape",
        b.Concat(b.ints([1, 1]), b.shape(x, 2), axis=0),
        value=ir.tensor(np.ones((1,), dtype=b.np_dtype(x))),
    )
    overflow = [s - 1 for s in win.strides]  # room for ceil_mode's last window
    zero = b.scalar(0.0, x)
    if count_pad:
        padded = b.Pad(ones, b.ints([0, 0, *win.pads_begin, 0, 0, *win.pads_end]), b.scalar(1.0, x))
        padded = b.Pad(padded, b.ints([0] * (r + 2) + [0, 0, *overflow]), zero)
    else:
        ends = [p + o for p, o in zip(win.pads_end, overflow)]
        padded = b.Pad(ones, b.ints([0, 0, *win.pads_begin, 0, 0, *ends]), zero)
    box = b.array(np.ones((1, 1, *win.kernel)), x)
    counts = b.Conv(padded, box, strides=list(win.strides), dilations=list(win.dilations))
    counts = b.Slice(counts, b.ints([0] * r), b.shape(y, 2), b.ints(spatial_axes))
    per_cell = b.Reshape(b.Div(g, counts), b.Concat(b.ints([-1, 1]), b.shape(y, 2), axis=0))
    spread = b.ConvTranspose(
        per_cell,
        box,
        strides=list(win.strides),
        dilations=list(win.dilations),
        output_padding=overflow,
    )
    return [b.reshape_like(slice_spatial(b, spread, win.pads_begin, x), x)]


def _spread_tiles(b: Builder, g: ir.Value, x: ir.Value, y: ir.Value, kernel) -> ir.Value:
    """Non-overlapping windows: repeat each cell k times per axis, zero the uncovered tail."""
    r = len(kernel)
    inner = b.unsqueeze(g, [3 + 2 * i for i in range(r)])
    parts = [b.shape(y, 0, 2)]
    for i, k in enumerate(kernel):
        parts += [b.shape(y, 2 + i, 3 + i), b.ints([k])]
    tiled = b.Expand(inner, b.Concat(*parts, axis=0))
    covered = b.Mul(b.shape(y, 2), b.ints(list(kernel)))
    merged = b.Reshape(tiled, b.Concat(b.shape(y, 0, 2), covered, axis=0))
    tail = b.Sub(b.shape(x, 2), covered)
    pads = b.Concat(b.ints([0] * (r + 2)), b.ints([0, 0]), tail, axis=0)
    return b.Pad(merged, pads)


@wrt(0)
def global_average_pool(ctx: Ctx):
    b, g, x = ctx.b, ctx.g, ctx.x[0]
    cells = b.Cast(b.ReduceProd(b.shape(x, 2), keepdims=0), to=ir.DataType(x.dtype or b.dtype))
    return [b.expand_like(b.Div(g, cells), x)]


@wrt(0)
def global_max_pool(ctx: Ctx):
    b, g, x = ctx.b, ctx.g, ctx.x[0]
    rows = b.Reshape(x, b.ints([0, 0, -1]))
    first = b.ArgMax(rows, axis=2, keepdims=1, select_last_index=0)
    routed = b.ScatterElements(b.zeros_like(rows), first, b.Reshape(g, b.ints([0, 0, 1])), axis=2)
    return [b.reshape_like(routed, x)]


@wrt(0)
def lrn(ctx: Ctx):
    """y = x * s^-beta, s = bias + alpha/size * (sum of x^2 over a channel window)."""
    b, g, x = ctx.b, ctx.g, ctx.x[0]
    size = ctx.attr("size")
    alpha, beta, bias = ctx.attr("alpha", 1e-4), ctx.attr("beta", 0.75), ctx.attr("bias", 1.0)
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    column = b.Concat(b.shape(x, 0, 1), b.ints([1]), b.shape(x, 1, 2), b.ints([-1]), axis=0)
    box = b.array(np.ones((1, 1, size, 1)), x)

    def channel_window(v: ir.Value, before: int, after: int) -> ir.Value:
        summed = b.Conv(b.Reshape(v, column), box, pads=[before, 0, after, 0])
        return b.reshape_like(summed, x)

    s = b.Add(
        b.scalar(bias, x), b.Mul(b.scalar(alpha / size, x), channel_window(b.Mul(x, x), lo, hi))
    )
    s_beta = b.Pow(s, b.scalar(-beta, x))
    t = b.Div(b.Mul(b.Mul(g, x), s_beta), s)
    cross = b.Mul(b.Mul(b.scalar(2.0 * alpha * beta / size, x), x), channel_window(t, hi, lo))
    return [b.Sub(b.Mul(g, s_beta), cross)]
