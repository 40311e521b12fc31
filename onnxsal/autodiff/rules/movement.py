"""Ops that only move, copy or relabel elements: reshapes, transposes, slicing, gathers, pads.

Fast inverses cover the common cases (Reshape back, inverse Transpose, Pad
back a Slice). Everything else uses one exact, general scheme: run the op on
a tensor of element numbers to learn where each output element came from,
then scatter-add the gradient back there.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxsal.autodiff.engine import Ctx, wrt
from onnxsal.errors import UnsupportedModelError
from onnxsal.graph.builder import Builder, const_array, rank_of


def identity(ctx: Ctx):
    return [ctx.g]


@wrt(0)
def dropout(ctx: Ctx):
    """Inference-mode Dropout is the identity."""
    training = ctx.input(2)
    if training is not None:
        mode = const_array(training)
        if mode is None or bool(mode.reshape(-1)[0]):
            raise UnsupportedModelError(
                f"Dropout '{ctx.node.name}' may run in training mode (random masks); export "
                "the model in eval mode."
            )
    return [ctx.g]


@wrt(0)
def reshape_back(ctx: Ctx):
    """Reshape, Flatten, Squeeze, Unsqueeze: the gradient takes the input's shape back."""
    return [ctx.b.reshape_like(ctx.g, ctx.x[0])]


def transpose(ctx: Ctx):
    perm = ctx.attr("perm")
    if perm is None:
        r = rank_of(ctx.x[0])
        if r is None:
            raise UnsupportedModelError(f"Transpose '{ctx.node.name}': input rank unknown.")
        perm = tuple(reversed(range(r)))
    inverse = [perm.index(i) for i in range(len(perm))]
    return [ctx.b.Transpose(ctx.g, perm=inverse)]


@wrt(0)
def expand(ctx: Ctx):
    return [ctx.b.sum_to(ctx.g, ctx.x[0], ctx.y[0])]


def cast(ctx: Ctx):
    """The gradient takes the input's float type back; a quantised (integer) input keeps
    the gradient's own float type."""
    x = ctx.x[0]
    if x.dtype is not None and not x.dtype.is_floating_point():
        return [ctx.g]
    return [ctx.b.Cast(ctx.g, to=ir.DataType(x.dtype or ctx.b.dtype))]


def cast_like(ctx: Ctx):
    """CastLike(x, like): the gradient takes x's type back, like Cast; `like` only lends its
    type, so nothing flows to it."""
    return [cast(ctx)[0], None]


def _axis(ctx: Ctx, default: int = 0) -> int:
    axis = ctx.attr("axis", default)
    if axis < 0:
        r = rank_of(ctx.y[0])
        if r is None:
            raise UnsupportedModelError(f"{ctx.node.op_type} '{ctx.node.name}': rank unknown.")
        axis += r
    return axis


def concat(ctx: Ctx):
    b, axis = ctx.b, _axis(ctx)
    sizes = b.Concat(*[b.dim(x, axis) for x in ctx.x], axis=0)
    parts = b.op("Split", ctx.g, sizes, axis=axis, outputs=len(ctx.x))
    parts = parts if isinstance(parts, tuple) else (parts,)
    return [p if want else None for p, want in zip(parts, ctx.wants)]


@wrt(0)
def split(ctx: Ctx):
    b, axis = ctx.b, _axis(ctx)
    pieces = [g if g is not None else b.zeros_like(y) for g, y in zip(ctx.dy, ctx.y)]
    return [b.Concat(*pieces, axis=axis) if len(pieces) > 1 else pieces[0]]


def scatter_back(ctx: Ctx, replay, x: ir.Value | None = None) -> ir.Value:
    """Exact gradient of any element-copying op.

    `replay(b, index)` applies the op to an int64 tensor of x's shape holding
    1..numel; wherever it puts 0 (a padding constant) nothing flows back.
    """
    b = ctx.b
    x = x if x is not None else ctx.x[0]
    numel = b.Size(x)
    index = b.Reshape(b.Range(b.ints(1), b.Add(numel, b.ints(1)), b.ints(1)), b.shape(x))
    moved = replay(b, index)
    slots = b.Add(b.Reshape(numel, b.ints([1])), b.ints([1]))
    zeros = b.op("ConstantOfShape", slots, value=ir.tensor(np.zeros((1,), dtype=b.np_dtype(x))))
    flat = b.ScatterElements(
        zeros,
        b.Reshape(moved, b.ints([-1])),
        b.Reshape(ctx.g, b.ints([-1])),
        axis=0,
        reduction="add",
    )
    kept = b.Slice(flat, b.ints([1]), b.Reshape(slots, b.ints([1])))
    return b.reshape_like(kept, x)


def replay_node(ctx: Ctx, replace: dict[int, ir.Value | None] | None = None):
    """A replay function re-running ctx.node on the index tensor.

    `replace` swaps other inputs by position (a float padding constant must
    become an int64 one, since the replay runs on int64 element numbers).
    """
    node = ctx.node
    attrs = {name: a.value for name, a in node.attributes.items()}

    def replay(b: Builder, index: ir.Value) -> ir.Value:
        inputs = [index, *node.inputs[1:]]
        for pos, value in (replace or {}).items():
            inputs += [None] * (pos + 1 - len(inputs))
            inputs[pos] = value
        while inputs and inputs[-1] is None:
            inputs.pop()
        return b.op(node.op_type, *inputs, **attrs)

    return replay


@wrt(0)
def gather_elements(ctx: Ctx):
    """GatherElements: its gradient scatters back along the same axis, repeats adding up."""
    b = ctx.b
    zeros = b.zeros_like(ctx.x[0])
    axis = ctx.attr("axis", 0)
    return [b.ScatterElements(zeros, ctx.x[1], ctx.g, axis=axis, reduction="add")]


@wrt(0)
def gather_like(ctx: Ctx):
    """Gather, GatherND, Tile, DepthToSpace...: scatter back."""
    return [scatter_back(ctx, replay_node(ctx))]


def _const_ints(v: ir.Value | None) -> list[int] | None:
    value = const_array(v)
    return None if value is None else [int(i) for i in value.reshape(-1)]


@wrt(0)
def slice_(ctx: Ctx):
    b, g, x = ctx.b, ctx.g, ctx.x[0]
    steps = _const_ints(ctx.input(4))
    if (steps is not None and any(s != 1 for s in steps)) or (
        ctx.input(4) is not None and steps is None
    ):
        return [scatter_back(ctx, replay_node(ctx))]
    starts = ctx.x[1]
    axes = ctx.input(3)
    if axes is None:
        axes = b.Range(b.ints(0), b.Size(starts), b.ints(1))
    else:  # tf2onnx writes int32 axes; Pad takes int64
        axes = b.Cast(axes, to=ir.DataType.INT64)
    dims = b.Gather(b.shape(x), axes, axis=0)
    starts = b.Cast(starts, to=ir.DataType.INT64)
    begin = b.Where(b.Less(starts, b.ints(0)), b.Add(starts, dims), starts)
    begin = b.Min(b.Max(begin, b.ints(0)), dims)
    taken = b.Gather(b.shape(ctx.y[0]), axes, axis=0)
    end = b.Sub(b.Sub(dims, begin), taken)
    if x.shape is None:
        return [b.Pad(g, b.Concat(begin, end, axis=0), None, axes)]
    # pads for every axis rather than Pad's axes input: OpenVINO misreads that input when
    # the pads are computed at run time
    zeros = b.ints([0] * len(x.shape))
    every = [b.ScatterElements(zeros, axes, v, axis=0) for v in (begin, end)]
    return [b.Pad(g, b.Concat(*every, axis=0))]


@wrt(0)
def pad(ctx: Ctx):
    b, g, x = ctx.b, ctx.g, ctx.x[0]
    mode = ctx.attr("mode", "constant")
    pads = _const_ints(ctx.input(1))
    if mode == "constant" and pads is not None and min(pads) >= 0:
        half = len(pads) // 2
        axes = ctx.input(3)
        if axes is None:
            axes = b.ints(list(range(half)))
        begin = b.ints(pads[:half])
        stop = b.Add(begin, b.Gather(b.shape(x), axes, axis=0))
        return [b.Slice(g, begin, stop, axes)]
    # Padding constants become element number 0, which scatter_back drops.
    zero = b.const(np.asarray(0, dtype=np.int64)) if mode == "constant" else None
    return [scatter_back(ctx, replay_node(ctx, {2: zero}))]
