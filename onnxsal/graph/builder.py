"""Emit standard-domain ONNX nodes into an onnx-ir graph.

`Builder` is the only way the gradient rules write to a graph. Calling an
ONNX op name on it appends that node (``b.Mul(a, c)``, ``b.Conv(x, w,
strides=[2, 2])``), in the onnxscript style; the helpers below it cover the
shape bookkeeping every rule needs (constants, unbroadcasting, masks).

Static shapes are trusted only for ranks, for dimensions equal to 1 and for
constants: onnx's shape inference is known to be wrong for some pooling
configurations, so spatial sizes are always read at run time with Shape.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

FLOAT_TYPES = frozenset(
    {ir.DataType.FLOAT, ir.DataType.DOUBLE, ir.DataType.FLOAT16, ir.DataType.BFLOAT16}
)

Dim = "int | str | None"


def attr(node: ir.Node, name: str, default: Any = None) -> Any:
    """The python value of a node attribute (tuples for lists), or `default`."""
    a = node.attributes.get(name)
    if a is None:
        return default
    value = a.value
    if isinstance(value, Sequence) and not isinstance(value, str):
        return tuple(value)
    return value


_READS: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar("reads", default=None)


@contextlib.contextmanager
def recording_reads() -> Iterator[set[str]]:
    """The names of the constants whose values are read (const_array) inside the block: a
    graph built from a model depends on those values and on no other constant's."""
    reads: set[str] = set()
    token = _READS.set(reads)
    try:
        yield reads
    finally:
        _READS.reset(token)


def is_constant(value: ir.Value | None) -> bool:
    """Whether the value is an initializer or Constant output (its value not read)."""
    return value is not None and ir.convenience.get_const_tensor(value) is not None


def const_array(value: ir.Value | None) -> np.ndarray | None:
    """The numpy value of an initializer or Constant output, else None."""
    if value is None:
        return None
    tensor = ir.convenience.get_const_tensor(value)
    if tensor is None:
        return None
    reads = _READS.get()
    if reads is not None and value.name:
        reads.add(value.name)
    return tensor.numpy()


def is_float(value: ir.Value) -> bool:
    """True for values that can carry a gradient (unknown dtypes count as float)."""
    return value.dtype is None or value.dtype in FLOAT_TYPES


def subgraphs(node: ir.Node) -> list[ir.Graph]:
    """The graphs a node holds as attributes (If branches, Loop and Scan bodies)."""
    found: list[ir.Graph] = []
    for attribute in node.attributes.values():
        if attribute.type == ir.AttributeType.GRAPH:
            found.append(attribute.as_graph())
        elif attribute.type == ir.AttributeType.GRAPHS:
            found.extend(attribute.as_graphs())
    return found


def body_nodes(node: ir.Node) -> list[ir.Node]:
    """Every node inside a node's subgraphs, nested ones included."""
    return [inner for graph in subgraphs(node) for inner in graph.all_nodes()]


def rank_of(value: ir.Value) -> int | None:
    return None if value.shape is None else len(value.shape)


def static_dims(value: ir.Value) -> tuple[int | str | None, ...] | None:
    """Inferred dims: ints, symbol names, or None for unknown; None if rank unknown."""
    if value.shape is None:
        return None
    dims: list[int | str | None] = []
    for d in value.shape:
        if isinstance(d, int):
            dims.append(d)
        else:
            dims.append(getattr(d, "value", None))
    return tuple(dims)


class Builder:
    """Appends nodes and initializers to `graph`, naming them under `prefix`."""

    def __init__(
        self,
        graph: ir.Graph,
        *,
        prefix: str = "onnxsal",
        dtype: ir.DataType | None = None,
        trust_sizes: bool = False,
    ):
        self.graph = graph
        self.prefix = prefix
        self.dtype = dtype or ir.DataType.FLOAT
        # Inferred sizes may be used only where onnx's inference is known right.
        self.trust_sizes = trust_sizes
        self._count = 0
        self._consts: dict[tuple, ir.Value] = {}
        self._taken = {v.name for v in _all_values(graph)} | {n.name for n in graph}

    # -- naming --------------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        while True:
            self._count += 1
            name = f"{self.prefix}/{hint}_{self._count}"
            if name not in self._taken:
                self._taken.add(name)
                return name

    # -- nodes ---------------------------------------------------------------------------
    def op(
        self,
        op_type: str,
        *inputs: ir.Value | None,
        outputs: int = 1,
        domain: str = "",
        **attributes: Any,
    ) -> Any:
        """Append one node; return its output (or a tuple when outputs > 1)."""
        attrs = {k: v for k, v in attributes.items() if v is not None}
        node = ir.node(
            op_type,
            list(inputs),
            attributes=attrs,
            domain=domain,
            num_outputs=outputs,
            name=self.fresh(op_type),
        )
        dtype = _output_dtype(node)
        for out in node.outputs:
            out.name = self.fresh(op_type.lower())
            out.dtype = dtype
        self.graph.append(node)
        return node.outputs[0] if outputs == 1 else tuple(node.outputs)

    def __getattr__(self, op_type: str) -> Any:
        if not op_type[:1].isupper():
            raise AttributeError(op_type)

        def emit(*inputs: ir.Value | None, **attributes: Any) -> Any:
            return self.op(op_type, *inputs, **attributes)

        return emit

    # -- constants -----------------------------------------------------------------------
    def const(self, array: Any, dtype: Any = None, *, hint: str = "const") -> ir.Value:
        """An initializer holding `array` (small ones are shared)."""
        arr = np.asarray(array, dtype=dtype)
        key = None
        if arr.size <= 64:
            key = (arr.dtype.str, arr.shape, arr.tobytes())
            if key in self._consts:
                return self._consts[key]
        name = self.fresh(hint)
        value = ir.Value(
            name=name,
            shape=ir.Shape(arr.shape),
            type=ir.TensorType(ir.DataType.from_numpy(arr.dtype)),
            const_value=ir.tensor(arr, name=name),
        )
        self.graph.register_initializer(value)
        if key is not None:
            self._consts[key] = value
        return value

    def ints(self, values: Sequence[int] | int) -> ir.Value:
        return self.const(np.asarray(values, dtype=np.int64), hint="ints")

    def np_dtype(self, like: ir.Value | None = None) -> np.dtype:
        dt = like.dtype if like is not None and like.dtype is not None else self.dtype
        return dt.numpy()

    def scalar(self, value: float, like: ir.Value | None = None) -> ir.Value:
        """A 0-d float constant in `like`'s dtype (the explained input's by default)."""
        return self.const(np.asarray(value, dtype=self.np_dtype(like)), hint="scalar")

    def array(self, value: Any, like: ir.Value | None = None) -> ir.Value:
        return self.const(np.asarray(value, dtype=self.np_dtype(like)), hint="array")

    # -- shapes --------------------------------------------------------------------------
    def static_size(self, v: ir.Value, axis: int) -> int | None:
        """The inferred size of one axis, if known and trustworthy."""
        if not self.trust_sizes:
            return None
        dims = static_dims(v)
        if dims is None or not -len(dims) <= axis < len(dims):
            return None
        d = dims[axis]
        return d if isinstance(d, int) else None

    def shape(self, v: ir.Value, start: int | None = None, end: int | None = None) -> ir.Value:
        return self.op("Shape", v, start=start, end=end)

    def dim(self, v: ir.Value, axis: int) -> ir.Value:
        """Size of one axis as a 1-element int64 tensor."""
        return self.shape(v, axis, axis + 1 if axis != -1 else None)

    def reshape_like(self, g: ir.Value, x: ir.Value) -> ir.Value:
        return self.Reshape(g, self.shape(x))

    def expand_like(self, g: ir.Value, x: ir.Value) -> ir.Value:
        return self.Expand(g, self.shape(x))

    def zeros_like(self, v: ir.Value) -> ir.Value:
        zero = ir.tensor(np.zeros((1,), dtype=self.np_dtype(v)))
        return self.op("ConstantOfShape", self.shape(v), value=zero)

    def ones_like(self, v: ir.Value) -> ir.Value:
        one = ir.tensor(np.ones((1,), dtype=self.np_dtype(v)))
        return self.op("ConstantOfShape", self.shape(v), value=one)

    def unsqueeze(self, v: ir.Value, axes: Sequence[int]) -> ir.Value:
        return self.Unsqueeze(v, self.ints(list(axes)))

    def reduce_sum(self, v: ir.Value, axes: Sequence[int], keepdims: int = 1) -> ir.Value:
        return self.ReduceSum(v, self.ints(list(axes)), keepdims=keepdims)

    def reduce_mean(self, v: ir.Value, axes: Sequence[int], keepdims: int = 1) -> ir.Value:
        return self.ReduceMean(v, self.ints(list(axes)), keepdims=keepdims)

    def mask(self, condition: ir.Value, like: ir.Value) -> ir.Value:
        """A 0/1 tensor of `like`'s dtype from a boolean condition."""
        return self.Cast(condition, to=ir.DataType(like.dtype or self.dtype))

    def sum_to(
        self,
        g: ir.Value,
        x: ir.Value,
        g_like: ir.Value | None = None,
        g_rank: int | None = None,
    ) -> ir.Value:
        """Undo numpy broadcasting: sum `g` down to the shape of `x`.

        `g_like` is a forward value with g's shape (or give `g_rank`). Axes are
        found statically where x's inferred dims allow, else at run time.
        """
        if g_rank is None and g_like is not None:
            g_rank = rank_of(g_like)
        x_dims = static_dims(x)
        if g_rank is not None and x_dims is not None and None not in x_dims:
            lead = g_rank - len(x_dims)
            g_dims = static_dims(g_like) if g_like is not None else None
            # Reducing an axis of size 1 is harmless, so every axis where x has
            # size 1 is reduced unless g is known to have size 1 there too.
            axes = list(range(lead))
            for i, d in enumerate(x_dims):
                gd = g_dims[lead + i] if g_dims is not None else None
                if d == 1 and gd != 1:
                    axes.append(lead + i)
            if not axes:
                return g
            r = self.reduce_sum(g, axes, keepdims=1)
            return self.reshape_like(r, x) if lead else r
        return self._sum_to_dynamic(g, x)

    def _sum_to_dynamic(self, g: ir.Value, x: ir.Value) -> ir.Value:
        gs = self.shape(g)
        xs = self.shape(x)
        pad_len = self.Sub(self.Size(gs), self.Size(xs))
        one = ir.tensor(np.ones((1,), dtype=np.int64))
        pad = self.op("ConstantOfShape", self.Reshape(pad_len, self.ints([1])), value=one)
        xs_padded = self.Concat(pad, xs, axis=0)
        one_s = self.ints(1)
        broadcast = self.And(self.Equal(xs_padded, one_s), self.Not(self.Equal(gs, one_s)))
        axes = self.Reshape(self.NonZero(broadcast), self.ints([-1]))
        r = self.ReduceSum(g, axes, keepdims=1, noop_with_empty_axes=1)
        return self.Reshape(r, xs)


_INT64_OPS = frozenset({"Shape", "Size", "ArgMax", "ArgMin", "NonZero"})
_BOOL_OPS = frozenset(
    {
        "Equal",
        "Greater",
        "Less",
        "GreaterOrEqual",
        "LessOrEqual",
        "And",
        "Or",
        "Not",
        "Xor",
        "IsNaN",
        "IsInf",
    }
)


def _output_dtype(node: ir.Node) -> ir.DataType | None:
    """The element type of a new node's outputs, so the engine can tell floats apart."""
    op = node.op_type
    if op in _INT64_OPS:
        return ir.DataType.INT64
    if op in _BOOL_OPS:
        return ir.DataType.BOOL
    if op == "Cast":
        return ir.DataType(attr(node, "to"))
    if op in ("ConstantOfShape",):
        value = attr(node, "value")
        return value.dtype if value is not None else ir.DataType.FLOAT
    if op == "OneHot":
        return node.inputs[2].dtype
    if op == "Where":
        return node.inputs[1].dtype or node.inputs[2].dtype
    for v in node.inputs:
        if v is not None and v.dtype is not None:
            return v.dtype
    return None


def _all_values(graph: ir.Graph):
    yield from graph.inputs
    yield from graph.initializers.values()
    for node in graph:
        yield from node.outputs
