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
from onnxsal.graph.builder import Builder, attr, is_constant, static_dims


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


def _flipped_kernel(b: Builder, w: ir.Value, group: int) -> ir.Value | None:
    """The kernel of the input gradient as a Conv: (C, M/G, k...) flipped in space, as
    nodes on the weight (constant-folded when the session is made), so that the graph
    reads no weight value and serves new weights as they are."""
    dims = static_dims(w)
    if not is_constant(w) or dims is None or not all(isinstance(d, int) for d in dims):
        return None
    m, cg, *k = dims
    r = len(k)
    if group == 1:
        regrouped = b.Transpose(w, perm=[1, 0, *range(2, 2 + r)])
    else:
        split = b.Reshape(w, b.ints([group, m // group, cg, *k]))
        swapped = b.Transpose(split, perm=[0, 2, 1, *range(3, 3 + r)])
        regrouped = b.Reshape(swapped, b.ints([cg * group, m // group, *k]))
    first = np.iinfo(np.int64).min  # with step -1: through the first element
    axes = list(range(2, 2 + r))
    return b.Slice(regrouped, b.ints([-1] * r), b.ints([first] * r), b.ints(axes), b.ints([-1] * r))


def _zero_insert(b: Builder, g: ir.Value, strides: tuple[int, ...]) -> ir.Value:
    """Put s-1 zeros after every element along each spatial axis (length Ho * s)."""
    r = len(strides)
    up = b.Resize(
        g,
        None,
        b.array([1.0, 1.0, *map(float, strides)], g),
        mode="nearest",
        coordinate_transformation_mode="asymmetric",
        nearest_mode="floor",
    )
    lengths = b.Mul(b.shape(g, 2), b.ints(list(strides)))
    mask = None
    for i, step in enumerate(strides):
        if step == 1:
            continue
        length = b.Squeeze(b.Slice(lengths, b.ints([i]), b.ints([i + 1])), b.ints([0]))
        positions = b.Range(b.ints(0), length, b.ints(1))
        keep = b.mask(b.Equal(b.Mod(positions, b.ints(step)), b.ints(0)), g)
        shape = [1] * (r + 2)
        shape[2 + i] = -1
        keep = b.Reshape(keep, b.ints(shape))
        mask = keep if mask is None else b.Mul(mask, keep)
    return up if mask is None else b.Mul(up, mask)


def _flipped_conv(
    b: Builder,
    g: ir.Value,
    x: ir.Value,
    g_like: ir.Value,
    kernel: ir.Value,
    win: Window,
    group: int,
) -> ir.Value:
    """dx as a stride-1 Conv of g (zero-inserted when strided) with the flipped kernel.

    Needs pads <= d*(k-1). With unit strides the output is exactly x's size;
    a zero-inserted g (length Ho*s) may overshoot, so that result is cropped.
    """
    strided = any(s > 1 for s in win.strides)
    z = _zero_insert(b, g, win.strides) if strided else g
    begin = [r - p for r, p in zip(win.reach, win.pads_begin)]
    end = [r - p for r, p in zip(win.reach, win.pads_end)]
    crop = strided
    if strided:
        # With trusted sizes the end pad can be exact: no crop (a full copy) needed.
        sizes = [b.static_size(x, 2 + i) for i in range(win.rank)]
        outs = [b.static_size(g_like, 2 + i) for i in range(win.rank)]
        if None not in sizes and None not in outs:
            exact = [h - o * s + p for h, o, s, p in zip(sizes, outs, win.strides, win.pads_begin)]
            if min(exact) >= 0:
                end, crop = exact, False
    dx = b.Conv(
        z,
        kernel,
        pads=begin + end,
        dilations=list(win.dilations),
        group=group,
        kernel_shape=list(win.kernel),
    )
    return slice_spatial(b, dx, (0,) * win.rank, x) if crop else dx


# Below this many input channels a flipped Conv writes too few channels for
# onnxruntime's blocked kernels (measured: 3-channel gradients 2x slower).
MIN_CHANNELS_FOR_FLIPPED_CONV = 8


@wrt(0)
def conv(ctx: Ctx):
    b, g = ctx.b, ctx.g
    x, w = ctx.x[0], ctx.x[1]
    wdims = static_dims(w)
    win = window(ctx.node, x, tuple(wdims[2:]) if wdims is not None else None)
    group = ctx.attr("group", 1)
    depthwise = wdims is not None and wdims[1] == 1 and group > 1
    channels = wdims[1] * group if wdims is not None and isinstance(wdims[1], int) else 0
    unit_stride = all(s == 1 for s in win.strides)
    pads_fit = all(p <= r for p, r in zip(win.pads_begin + win.pads_end, win.reach * 2))
    wide = channels >= MIN_CHANNELS_FOR_FLIPPED_CONV or group > 1
    if pads_fit and ((unit_stride and wide) or (depthwise and win.rank == 2)):
        kernel = _flipped_kernel(b, w, group)
        if kernel is not None:
            return [_flipped_conv(b, g, x, ctx.y[0], kernel, win, group)]
    common = dict(dilations=list(win.dilations), group=group, kernel_shape=list(win.kernel))
    if unit_stride:
        return [b.ConvTranspose(g, w, pads=list(win.pads_begin + win.pads_end), **common)]
    sizes = [b.static_size(x, 2 + i) for i in range(win.rank)]
    out_sizes = [b.static_size(ctx.y[0], 2 + i) for i in range(win.rank)]
    if None not in sizes and None not in out_sizes:
        extra = [
            h - ((o - 1) * s - pb - pe + r + 1)
            for h, o, s, pb, pe, r in zip(
                sizes, out_sizes, win.strides, win.pads_begin, win.pads_end, win.reach
            )
        ]
        return [
            b.ConvTranspose(
                g,
                w,
                strides=list(win.strides),
                output_padding=extra,
                pads=list(win.pads_begin + win.pads_end),
                **common,
            )
        ]
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
