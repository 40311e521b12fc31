"""Test helpers: one-op ONNX models, float64 oracles, relative L2 error."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from onnxsal.autodiff import vjp_model
from onnxsal.modifiers import MODIFIERS

ORT_IR_VERSION = 10


def rel_l2(got: np.ndarray, ref: np.ndarray) -> float:
    """||got - ref|| / ||ref|| in float64 (0 when both are zero)."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    denom = np.linalg.norm(ref)
    if denom == 0:
        return float(np.linalg.norm(got))
    return float(np.linalg.norm(got - ref) / denom)


def make_model(nodes, inputs, outputs, initializers=(), opset=18) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ORT_IR_VERSION if opset >= 18 else 7
    return model


def external_data_model(location: str, **where: int) -> onnx.ModelProto:
    """x [N, 4] @ w [4, 2], w stored outside the model at `location` (offset=, length=)."""
    w = onnx.numpy_helper.from_array(np.ones((4, 2), np.float32), "w")
    onnx.external_data_helper.set_external_data(w, location=location, **where)
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    return make_model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        [w],
    )


def _tensor_info(name: str, arr: np.ndarray) -> onnx.ValueInfoProto:
    elem = helper.np_dtype_to_tensor_dtype(arr.dtype)
    return helper.make_tensor_value_info(name, elem, list(arr.shape))


def one_op_model(
    op_type: str,
    inputs: Sequence[tuple[str, np.ndarray | None, bool]],
    attrs: dict | None = None,
    *,
    outputs: int = 1,
    output_index: int = 0,
    opset: int = 18,
) -> onnx.ModelProto:
    """A model with one node. inputs: (name, array, fed) — fed arrays are graph inputs,
    the others initializers; a None array is an omitted optional input."""
    graph_inputs, inits, names = [], [], []
    for name, arr, fed in inputs:
        if arr is None:
            names.append("")
            continue
        names.append(name)
        if fed:
            graph_inputs.append(_tensor_info(name, arr))
        else:
            inits.append(onnx.numpy_helper.from_array(arr, name))
    outs = [f"y{i}" for i in range(outputs)]
    node = helper.make_node(op_type, names, outs, **(attrs or {}))
    y = helper.make_tensor_value_info(outs[output_index], TensorProto.FLOAT, None)
    return make_model([node], graph_inputs, [y], inits, opset)


def run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def onnxsal_vjp(
    model,
    feeds: dict,
    wrt: str,
    cotangent: np.ndarray,
    of: str | None = None,
    method: str = "vanilla",
) -> np.ndarray:
    grad_model = vjp_model(model, wrt=wrt, of=of, modifier=MODIFIERS[method])
    onnx.checker.check_model(grad_model, full_check=True)
    return run(grad_model, {**feeds, "cotangent": cotangent})[0]


def check_against_torch(
    model: onnx.ModelProto,
    feeds: dict[str, np.ndarray],
    reference: Callable,
    wrt: Sequence[str],
    *,
    consts: dict[str, np.ndarray] | None = None,
    tol: float = 1e-4,
    forward_tol: float = 1e-4,
    seed: int = 0,
) -> None:
    """Compare onnxsal's VJP with torch autograd in float64.

    `reference(**tensors)` computes the op from torch tensors (feeds and consts
    by name). Its forward is checked against onnxruntime first, so a reference
    that misreads the ONNX semantics fails loudly instead of agreeing with a
    wrong gradient. The tolerance is `tol`, widened only where torch's own
    float32 autograd is itself that far from float64 (ill-conditioned cases:
    saturated softmax, cancelling sums); a wrong rule is off by O(1).
    """
    import torch

    y = run(model, feeds)[0]
    values = {**feeds, **(consts or {})}

    def tensors(dtype):
        out = {}
        for k, v in values.items():
            v = np.asarray(v)
            t = torch.tensor(v.astype(dtype) if v.dtype.kind == "f" else v)
            out[k] = t.requires_grad_(k in wrt)
        return out

    t64, t32 = tensors(np.float64), tensors(np.float32)
    ref_y = reference(**t64)
    assert tuple(ref_y.shape) == y.shape, (tuple(ref_y.shape), y.shape)
    err = rel_l2(y, ref_y.detach().numpy())
    assert err <= forward_tol, f"reference forward disagrees with onnxruntime: {err:.2e}"
    cot = np.random.default_rng(seed).standard_normal(y.shape).astype(np.float32)
    ref_grads = torch.autograd.grad(
        ref_y, [t64[w] for w in wrt], torch.tensor(cot, dtype=ref_y.dtype), allow_unused=True
    )
    y32 = reference(**t32)
    f32_grads = torch.autograd.grad(
        y32, [t32[w] for w in wrt], torch.tensor(cot), allow_unused=True
    )
    for name, ref, ref32 in zip(wrt, ref_grads, f32_grads):
        ref = np.zeros(feeds[name].shape) if ref is None else ref.numpy()
        ref32 = np.zeros(feeds[name].shape) if ref32 is None else ref32.numpy()
        allowed = max(tol, 20 * rel_l2(ref32, ref))
        got = onnxsal_vjp(model, feeds, name, cot)
        err = rel_l2(got, ref)
        assert err <= allowed, (
            f"gradient w.r.t. {name}: relative L2 error {err:.2e} > {allowed:.1e}"
        )


def linear_vjp(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], wrt: str, cotangent: np.ndarray
) -> np.ndarray:
    """cotangent^T J for an op that is affine in `wrt`, with J read off onnxruntime's forward.

    Column i of J is f(e_i) - f(0): exact for data movement, and within float32
    rounding for interpolation. The oracle is onnxruntime's own forward, so the
    check is "the backward matches the forward the model actually runs".
    """
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = feeds[wrt]
    base = sess.run(None, {**feeds, wrt: np.zeros_like(x)})[0].astype(np.float64)
    out = np.zeros(x.size)
    cot = cotangent.astype(np.float64)
    for i in range(x.size):
        e = np.zeros(x.size, dtype=x.dtype)
        e[i] = 1
        col = sess.run(None, {**feeds, wrt: e.reshape(x.shape)})[0].astype(np.float64) - base
        out[i] = np.sum(cot * col)
    return out.reshape(x.shape)


def explained(folder, method: str | None = None) -> dict[str, dict]:
    """The rows of an explain run's summary.json by output name ("d0.png", "more/d3.png",
    "rows.csv.2"), each with `files`: {kind: path} of its outputs (the naming scheme is the
    CLI's business; tests find files through the summary)."""
    import json
    from pathlib import Path

    folder = Path(folder)
    rows = {}
    for row in json.loads((folder / "summary.json").read_text()):
        if method is not None and row["method"] != method:
            continue
        row["files"] = {k: folder / v for k, v in (row.get("outputs") or {}).items()}
        rows[row["name"]] = row
    return rows


def torchvision_or_stand_in() -> None:
    """zennit (and quantus, through it) imports torchvision for zennit's torchvision
    canonizers, which the tests do not use; PyPI has no CPU build of torchvision for the CPU
    torch wheel, whose C ops then fail to load. A stand-in with the two classes zennit
    names lets them import."""
    import sys
    import types

    import torch

    try:
        import torchvision  # noqa: F401
    except Exception:
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        resnet = types.ModuleType("torchvision.models.resnet")
        resnet.Bottleneck = type("Bottleneck", (torch.nn.Module,), {})
        resnet.BasicBlock = type("BasicBlock", (torch.nn.Module,), {})
        models = types.ModuleType("torchvision.models")
        models.resnet = resnet
        root = types.ModuleType("torchvision")
        root.models = models
        sys.modules.update(
            {"torchvision": root, "torchvision.models": models, "torchvision.models.resnet": resnet}
        )
