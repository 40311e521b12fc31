"""OpenVINO as a second runtime for the same graphs (`providers=["openvino"]`).

onnxruntime stays the default and the reference; OpenVINO is faster on some
gradient graphs and slower on others (see the README's speed section), so it
is chosen per model by measurement, never assumed. Its ONNX reader needs
static shapes where onnxruntime computes them at run time (the axes of a
ReduceSum taken from a Shape), so each feed shape gets its own compiled model:
the inputs' dims are fixed to the feed's, and onnxruntime's basic graph
optimisations (constant folding, no fused or contrib ops) turn the shape
arithmetic into constants before OpenVINO reads the graph.
"""

from __future__ import annotations

import os
import tempfile
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from onnxsal.errors import InputError, RuntimeUnavailableError, UnsupportedModelError, first_line
from onnxsal.runtime import CPU, OPENVINO, ort

COMPILED_KEPT = 4  # compiled models kept per graph (a run has one or two batch shapes)


def core() -> Any:
    """OpenVINO's Core (one per process), or an error that says how to install it."""
    global _CORE
    if _CORE is None:
        try:
            import openvino
        except ImportError as exc:
            raise RuntimeUnavailableError(
                "OpenVINO is not installed: pip install 'onnxsal[openvino]'."
            ) from exc
        _CORE = openvino.Core()
    return _CORE


_CORE: Any = None


class Session:
    """An onnxruntime-like session (`run`, `get_providers`) on OpenVINO's CPU plugin."""

    def __init__(self, model_bytes: bytes, threads: int = 0):
        core()  # fail now, not at the first batch, when OpenVINO is missing
        self._model = onnx.load_model_from_string(model_bytes)
        self._threads = threads
        self._compiled: OrderedDict[tuple, Any] = OrderedDict()

    def get_providers(self) -> list[str]:
        return [OPENVINO]

    def run(self, names: Sequence[str] | None, feed: Mapping[str, np.ndarray]) -> list:
        key = tuple(sorted((k, np.shape(v), np.asarray(v).dtype.str) for k, v in feed.items()))
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = self._compile(feed)
            if len(self._compiled) > COMPILED_KEPT:
                self._compiled.popitem(last=False)
        else:
            self._compiled.move_to_end(key)
        try:
            results = compiled(dict(feed))
        except RuntimeError as exc:
            raise InputError(
                f"OpenVINO could not run the model on this input ({_reason(exc)}); "
                "onnxruntime (the default providers) may."
            ) from exc
        by_name = {}
        for port, value in results.items():
            for name in port.get_names():
                by_name[name] = value
        wanted = names or [o.name for o in self._model.graph.output]
        return [np.asarray(by_name[name]) for name in wanted]

    def _compile(self, feed: Mapping[str, np.ndarray]) -> Any:
        with tempfile.TemporaryDirectory(prefix="onnxsal-openvino-") as folder:
            path = os.path.join(folder, "static.onnx")
            static = _max_pool_indices_lowered(_with_static_inputs(self._model, feed))
            _refuse_ceil_mode_pools(static)
            try:
                _fold_constants(static.SerializeToString(), path)
            except Exception as exc:  # onnxruntime's own error classes
                raise UnsupportedModelError(
                    f"OpenVINO cannot run this graph (preparing it failed: {first_line(exc)}); "
                    "use onnxruntime (the default providers)."
                ) from exc
            try:
                model = core().read_model(path)
                config = {"INFERENCE_PRECISION_HINT": "f32"}  # bf16 on some CPUs otherwise
                if self._threads > 0:
                    config["INFERENCE_NUM_THREADS"] = self._threads
                return core().compile_model(model, "CPU", config)
            except RuntimeError as exc:
                raise UnsupportedModelError(
                    f"OpenVINO cannot run this graph ({_reason(exc)}); use onnxruntime "
                    "(the default providers)."
                ) from exc


def _with_static_inputs(model: onnx.ModelProto, feed: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """The model with every input's dims fixed to the fed array's (inferred shapes dropped:
    onnxruntime infers them anew for these sizes)."""
    static = onnx.ModelProto()
    static.CopyFrom(model)
    for value in static.graph.input:
        if value.name not in feed:
            continue
        dims = value.type.tensor_type.shape.dim
        for dim, size in zip(dims, np.shape(feed[value.name])):
            dim.Clear()
            dim.dim_value = int(size)
    del static.graph.value_info[:]
    for value in static.graph.output:
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.Clear()
    return static


def _refuse_ceil_mode_pools(model: onnx.ModelProto) -> None:
    """OpenVINO sizes ceil_mode pools as ONNX's shape inference does, with one more window
    than onnxruntime and torch when the last would start in the end padding (30 of 210
    configurations measured); that made maps wrong without an error, so such a pool, or
    one whose input size is unknown here, is refused."""
    pools = [
        n
        for n in model.graph.node
        if n.op_type in ("MaxPool", "AveragePool")
        and any(a.name == "ceil_mode" and a.i for a in n.attribute)
    ]
    if not pools:
        return
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:
        inferred = model
    shapes = {
        v.name: [
            d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim
        ]
        for v in [*inferred.graph.value_info, *inferred.graph.input]
    }
    for node in pools:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        dims = shapes.get(node.input[0])
        if dims is None or any(d is None for d in dims[2:]) or _one_window_more(dims[2:], attrs):
            raise UnsupportedModelError(
                f"{node.op_type} '{node.name}' uses ceil_mode, which OpenVINO sizes differently "
                "from onnxruntime here; use onnxruntime (the default providers)."
            )


def _one_window_more(sizes: list[int], attrs: dict) -> bool:
    """Whether ceil_mode's last window starts in the end padding on some axis (onnxruntime
    and torch drop it; ONNX's shape inference and OpenVINO keep it)."""
    rank = len(sizes)
    kernel = attrs.get("kernel_shape", [1] * rank)
    strides = attrs.get("strides", [1] * rank)
    dilations = attrs.get("dilations", [1] * rank)
    pads = attrs.get("pads", [0] * 2 * rank)
    for axis, size in enumerate(sizes):
        begin, end = pads[axis], pads[rank + axis]
        reach = size + begin + end - dilations[axis] * (kernel[axis] - 1) - 1
        windows = -(-reach // strides[axis]) + 1
        if (windows - 1) * strides[axis] >= size + begin:
            return True
    return False


def _max_pool_indices_lowered(model: onnx.ModelProto) -> onnx.ModelProto:
    """Each 2-D MaxPool's Indices output computed from standard ops, in place: OpenVINO runs
    MaxPool-with-Indices in a reference kernel (624 of 808 ms of a ResNet's gradient at
    batch 8). Each window offset's values are one strided Slice of the input padded with
    -inf; a running maximum that only a strictly larger value replaces keeps the first
    maximum, as onnxruntime's Indices do (the first real pixel wins over padding, whatever
    it holds), and the winner's offset becomes the flat index over N*C*H*W. Pools with
    auto_pad, storage_order 1 or other ranks, and opsets before 15, keep the kernel."""
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 15:  # CastLike
        return model
    nodes = []
    for k, node in enumerate(graph.node):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        lowered = (
            node.op_type == "MaxPool"
            and node.domain in ("", "ai.onnx")
            and len(node.output) > 1
            and node.output[1]
            and len(attrs.get("kernel_shape", ())) == 2
            and attrs.get("storage_order", 0) == 0
            and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET", b"", "")
        )
        if not lowered:
            nodes.append(node)
            continue
        indices = node.output[1]
        del node.output[1:]
        nodes += [node, *_first_maximum_indices(node.input[0], node.output[0], indices, attrs, k)]
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def _first_maximum_indices(x: str, y: str, out: str, attrs: dict, k: int) -> list:
    make, names = onnx.helper.make_node, iter(range(10**6))
    const: list = []

    def name(hint: str) -> str:
        return f"onnxsal_ov/maxpool{k}/{hint}{next(names)}"

    def ints(values) -> str:
        n = name("c")
        const.append(
            onnx.helper.make_node(
                "Constant",
                [],
                [n],
                value=onnx.numpy_helper.from_array(np.asarray(values, np.int64)),
            )
        )
        return n

    def op(op_type: str, *inputs: str, **kw) -> str:
        n = name(op_type.lower())
        const.append(make(op_type, list(inputs), [n], **kw))
        return n

    kh, kw = attrs["kernel_shape"]
    sh, sw = attrs.get("strides", (1, 1))
    dh, dw = attrs.get("dilations", (1, 1))
    th, tw, bh, bw = attrs.get("pads", (0, 0, 0, 0))
    if attrs.get("ceil_mode", 0):  # room for the last, partial window
        bh, bw = bh + sh, bw + sw
    xshape, yshape = op("Shape", x), op("Shape", y)
    lowest = onnx.numpy_helper.from_array(np.array(-np.inf, np.float32))
    padded = op(
        "Pad",
        x,
        ints([0, 0, th, tw, 0, 0, bh, bw]),
        op("CastLike", op("Constant", value=lowest), x),
    )
    height = op("Slice", xshape, ints([2]), ints([3]))
    width = op("Slice", xshape, ints([3]), ints([4]))
    out_hw = op("Slice", yshape, ints([2]), ints([4]))
    span = op("Mul", op("Sub", out_hw, ints([1, 1])), ints([sh, sw]))  # (Ho-1)*s, (Wo-1)*s
    ho = op("Squeeze", op("Slice", out_hw, ints([0]), ints([1])))
    wo = op("Squeeze", op("Slice", out_hw, ints([1]), ints([2])))
    rows = op("Sub", op("Mul", op("Range", ints(0), ho, ints(1)), ints(sh)), ints(th))
    cols = op("Sub", op("Mul", op("Range", ints(0), wo, ints(1)), ints(sw)), ints(tw))

    def inside(first: str, offset: int, size: str) -> str:
        at = op("Add", first, ints(offset))
        return op("And", op("GreaterOrEqual", at, ints(0)), op("Less", at, size))

    best = winner = seen = None
    for a in range(kh * kw):
        oi, oj = a // kw * dh, a % kw * dw
        start = ints([oi, oj])
        value = op(
            "Slice",
            padded,
            start,
            op("Add", op("Add", start, span), ints([1, 1])),
            ints([2, 3]),
            ints([sh, sw]),
        )
        real = op(  # [Ho, Wo]: this offset is a pixel of x, not padding
            "And",
            op("Unsqueeze", inside(rows, oi, height), ints([1])),
            inside(cols, oj, width),
        )
        if best is None:
            best, winner, seen = value, ints(0), real
            continue
        better = op("And", real, op("Or", op("Greater", value, best), op("Not", seen)))
        best = op("Where", better, value, best)
        winner = op("Where", better, ints(a), winner)
        seen = op("Or", seen, real)
    h = op(
        "Add", op("Unsqueeze", rows, ints([1])), op("Mul", op("Div", winner, ints(kw)), ints(dh))
    )
    w = op("Add", cols, op("Mul", op("Mod", winner, ints(kw)), ints(dw)))
    planes = op("ReduceProd", op("Slice", xshape, ints([0]), ints([2])), keepdims=0)
    plane = op(
        "Mul",
        op(
            "Reshape",
            op("Range", ints(0), planes, ints(1)),
            op("Concat", op("Slice", xshape, ints([0]), ints([2])), ints([1, 1]), axis=0),
        ),
        op("Mul", height, width),
    )
    const.append(make("Add", [plane, op("Add", op("Mul", h, width), w)], [out]))
    return const


def _fold_constants(model_bytes: bytes, path: str) -> None:
    """onnxruntime's basic optimisations written to `path`: with static inputs, every
    Shape-derived value becomes a constant."""
    rt = ort()
    options = rt.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = rt.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = path
    rt.InferenceSession(model_bytes, sess_options=options, providers=[CPU])


def _reason(exc: Exception) -> str:
    """What OpenVINO's many-line report says: the failed operation and why, or else its
    first line that is not a source location."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for k, line in enumerate(lines):
        if line.startswith("--"):
            op = line.lstrip("- ").removesuffix(" with a message:")
            why = lines[k + 1] if k + 1 < len(lines) else ""
            return (f"{op}: {why}" if why else op)[:300]
    told = [line for line in lines if not line.startswith(("Exception from", "Check "))]
    return (told[0] if told else first_line(exc))[:300]
