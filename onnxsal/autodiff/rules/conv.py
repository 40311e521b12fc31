"""Conv and ConvTranspose: input gradients only (weights are never differentiated).

Formulations measured on onnxruntime (see shared notes): a dense Conv's input
gradient is a ConvTranspose; a stride-1 depthwise Conv's is the same depthwise
Conv with the kernel flipped, which runs at forward speed where onnxruntime's
depthwise ConvTranspose is 3-30x slower. Strided gradients are computed with
`output_padding = s - 1` and sliced to the input size read at run time, so a
wrong inferred shape can never produce a wrong map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxsal.autodiff.engine import Ctx, wrt
from onnxsal.errors import UnsupportedModelError
from onnxsal.graph.builder import Builder, attr, const_array, static_dims


@dataclass(frozen=True)
class Window:
    """Sliding-window geometry of a Conv or pooling node, pads resolved."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads_begin: tuple[int, ...]
    pads_end: tuple[int, ...]

    @property
    def rank(self) -> int:
        return len(self.kernel)

    @property
    def reach(self) -> tuple[int, ...]:
        """d * (k - 1): how far a window extends beyond its first element."""
        return tuple(d * (k - 1) for d, k in zip(self.dilations, self.kernel))


def window(node: ir.Node, x: ir.Value, kernel: tuple[int, ...] | None = None) -> Window:
    kernel = tuple(attr(node, "kernel_shape", kernel or ()))
    r = len(kernel)
    if r == 0:
        raise UnsupportedModelError(
            f"{node.op_type} '{node.name}': the kernel shape is unknown (no kernel_shape "
            "attribute and no static weight shape)."
        )
    strides = tuple(attr(node, "strides", (1,) * r))
    dilations = tuple(attr(node, "dilations", (1,) * r))
    auto_pad = attr(node, "auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", ""):
        pads = tuple(attr(node, "pads", (0,) * (2 * r)))
        return Window(kernel, strides, dilations, pads[:r], pads[r:])
    if auto_pad == "VALID":
        return Window(kernel, strides, dilations, (0,) * r, (0,) * r)
    dims = static_dims(x)
    spatial = dims[2:] if dims is not None else ()
    if len(spatial) != r or not all(isinstance(d, int) for d in spatial):
        raise UnsupportedModelError(
            f"{node.op_type} '{node.name}' uses auto_pad={auto_pad} on an input whose spatial "
            "size is not static; re-export the model with explicit pads."
        )
    begin, end = [], []
    for h, k, s, d in zip(spatial, kernel, strides, dilations):
        total = max((-(-h // s) - 1) * s + d * (k - 1) + 1 - h, 0)
        small, large = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else large)
        end.append(large if auto_pad == "SAME_UPPER" else small)
    return Window(kernel, strides, dilations, tuple(begin), tuple(end))


def slice_spatial(b: Builder, v: ir.Value, begin: tuple[int, ...], like: ir.Value) -> ir.Value:
    """v[:, :, begin : begin + like's spatial size] with the size read at run time."""
    r = len(begin)
    start = b.ints(list(begin))
    stop = b.Add(start, b.shape(like, 2))
    return b.Slice(v, start, stop, b.ints(list(range(2, 2 + r))))


def _transposed_flipped_kernel(b: Builder, w: ir.Value, group: int) -> ir.Value | None:
    """The kernel of the input gradient as a Conv: (C, M/G, k...) flipped in space."""
    value = const_array(w)
    if value is None:
        return None
    m, cg = value.shape[:2]
    k = value.shape[2:]
    regrouped = (
        value.reshape(group, m // group, cg, *k).swapaxes(1, 2).reshape(cg * group, m // group, *k)
    )
    flipped = np.ascontiguousarray(
        regrouped[(slice(None), slice(None), *[slice(None, None, -1)] * len(k))]
    )
    return b.const(flipped, hint="flipped_kernel")


@wrt(0)
def conv(ctx: Ctx):
    b, g = ctx.b, ctx.g
    x, w = ctx.x[0], ctx.x[1]
    wdims = static_dims(w)
    win = window(ctx.node, x, tuple(wdims[2:]) if wdims is not None else None)
    group = ctx.attr("group", 1)
    depthwise = wdims is not None and wdims[1] == 1 and group > 1
    unit_stride = all(s == 1 for s in win.strides)
    if (
        unit_stride
        and depthwise
        and all(p <= reach for p, reach in zip(win.pads_begin + win.pads_end, win.reach * 2))
    ):
        kernel = _transposed_flipped_kernel(b, w, group)
        if kernel is not None:
            pads = [r - p for r, p in zip(win.reach, win.pads_begin)] + [
                r - p for r, p in zip(win.reach, win.pads_end)
            ]
            return [
                b.Conv(
                    g,
                    kernel,
                    pads=pads,
                    dilations=list(win.dilations),
                    group=group,
                    kernel_shape=list(win.kernel),
                )
            ]
    common = dict(dilations=list(win.dilations), group=group, kernel_shape=list(win.kernel))
    if unit_stride:
        return [b.ConvTranspose(g, w, pads=list(win.pads_begin + win.pads_end), **common)]
    full = b.ConvTranspose(
        g, w, strides=list(win.strides), output_padding=[s - 1 for s in win.strides], **common
    )
    return [slice_spatial(b, full, win.pads_begin, x)]


@wrt(0)
def conv_transpose(ctx: Ctx):
    """The input gradient of a ConvTranspose is a Conv with the same kernel and pads."""
    b, g, node = ctx.b, ctx.g, ctx.node
    x, w = ctx.x[0], ctx.x[1]
    wdims = static_dims(w)
    kernel = tuple(attr(node, "kernel_shape", tuple(wdims[2:]) if wdims is not None else ()))
    r = len(kernel)
    strides = tuple(attr(node, "strides", (1,) * r))
    dilations = tuple(attr(node, "dilations", (1,) * r))
    out_pad = tuple(attr(node, "output_padding", (0,) * r))
    auto_pad = attr(node, "auto_pad", "NOTSET")
    output_shape = attr(node, "output_shape")
    if output_shape is None and auto_pad in ("NOTSET", "", "VALID"):
        pads = tuple(attr(node, "pads", (0,) * (2 * r))) if auto_pad != "VALID" else (0,) * (2 * r)
    else:
        dims = static_dims(x)
        spatial = dims[2:] if dims is not None else ()
        if not all(isinstance(d, int) for d in spatial) or len(spatial) != r:
            raise UnsupportedModelError(
                f"ConvTranspose '{node.name}' sets its output size implicitly (auto_pad or "
                "output_shape) on an input of dynamic size; re-export it with explicit pads."
            )
        target = (
            output_shape[-r:]
            if output_shape is not None
            else [h * s for h, s in zip(spatial, strides)]
        )
        begin, end = [], []
        for h, k, s, d, op, o in zip(spatial, kernel, strides, dilations, out_pad, target):
            total = s * (h - 1) + op + (k - 1) * d + 1 - o
            half = total // 2
            if auto_pad == "SAME_UPPER":
                begin.append(half)
                end.append(total - half)
            else:  # the ONNX spec's default split, also used with output_shape
                begin.append(total - half)
                end.append(half)
        pads = tuple(begin + end)
    # With output_padding < stride (onnxruntime enforces it) this Conv returns
    # exactly the input's size.
    return [
        b.Conv(
            g,
            w,
            strides=list(strides),
            dilations=list(dilations),
            pads=list(pads),
            group=ctx.attr("group", 1),
            kernel_shape=list(kernel),
        )
    ]
