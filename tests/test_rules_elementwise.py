"""Elementwise rules against torch autograd in float64, over random shapes and attributes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

from tests.support import check_against_torch, one_op_model

seeds = st.integers(0, 2**31 - 1)


def _arr(rng, shape, low=None, high=None, away_from_zero=False):
    a = rng.uniform(low, high, size=shape) if low is not None else rng.standard_normal(shape)
    if away_from_zero:
        a = np.sign(a + 1e-9) * (0.5 + np.abs(a))
    return np.asarray(a, dtype=np.float32)


BINARY = {
    "Add": lambda a, b: a + b,
    "Sub": lambda a, b: a - b,
    "Mul": lambda a, b: a * b,
    "Div": lambda a, b: a / b,
    "Max": torch.maximum,
    "Min": torch.minimum,
    "Pow": torch.pow,
}


@pytest.mark.parametrize("op", sorted(BINARY))
@given(
    shapes=mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=4),
    seed=seeds,
)
def test_broadcasting_binary(op, shapes, seed):
    rng = np.random.default_rng(seed)
    sa, sb = shapes.input_shapes
    if op == "Pow":
        a, b = _arr(rng, sa, 0.5, 2.0), _arr(rng, sb, -2.0, 2.0)
    else:
        a, b = _arr(rng, sa), _arr(rng, sb, away_from_zero=(op == "Div"))
    model = one_op_model(op, [("a", a, True), ("b", b, True)])
    check_against_torch(model, {"a": a, "b": b}, lambda a, b: BINARY[op](a, b), ["a", "b"])


@pytest.mark.parametrize("op", ["Sum", "Mean", "Max", "Min"])
@given(
    shapes=mutually_broadcastable_shapes(num_shapes=3, min_dims=1, max_dims=3, max_side=3),
    seed=seeds,
)
def test_variadic(op, shapes, seed):
    rng = np.random.default_rng(seed)
    arrays = {n: _arr(rng, s) for n, s in zip("abc", shapes.input_shapes)}
    model = one_op_model(op, [(n, a, True) for n, a in arrays.items()])

    def reference(a, b, c):
        a, b, c = torch.broadcast_tensors(a, b, c)
        stacked = torch.stack([a, b, c])
        return {
            "Sum": stacked.sum(0),
            "Mean": stacked.mean(0),
            "Max": stacked.amax(0),
            "Min": stacked.amin(0),
        }[op]

    check_against_torch(model, arrays, reference, list(arrays))


def test_max_ties_share_gradient_like_torch():
    a = np.array([1.0, 2.0, 3.0], np.float32)
    b = np.array([1.0, 0.0, 3.0], np.float32)
    model = one_op_model("Max", [("a", a, True), ("b", b, True)])
    check_against_torch(model, {"a": a, "b": b}, lambda a, b: torch.maximum(a, b), ["a", "b"])


@given(
    shapes=mutually_broadcastable_shapes(num_shapes=3, min_dims=1, max_dims=3, max_side=3),
    seed=seeds,
)
def test_where(shapes, seed):
    rng = np.random.default_rng(seed)
    sc, sa, sb = shapes.input_shapes
    cond = rng.random(sc) > 0.5
    a, b = _arr(rng, sa), _arr(rng, sb)
    model = one_op_model("Where", [("c", cond, False), ("a", a, True), ("b", b, True)])
    check_against_torch(
        model,
        {"a": a, "b": b},
        lambda a, b, c: torch.where(c, a, b),
        ["a", "b"],
        consts={"c": cond},
    )


def _selu(x, alpha=1.67326319217681884765625, gamma=1.05070102214813232421875):
    return gamma * torch.where(x > 0, x, alpha * (torch.exp(x) - 1))


# op -> (attribute strategy, torch reference(x, **attrs), input domain)
UNARY = {
    "Relu": (st.just({}), lambda x: F.relu(x), None),
    "LeakyRelu": (
        st.fixed_dictionaries({"alpha": st.floats(0.0, 0.5)}),
        lambda x, alpha=0.01: F.leaky_relu(x, alpha),
        None,
    ),
    "Elu": (
        st.fixed_dictionaries({"alpha": st.floats(0.1, 2.0)}),
        lambda x, alpha=1.0: F.elu(x, alpha),
        None,
    ),
    "Celu": (
        st.fixed_dictionaries({"alpha": st.floats(0.1, 2.0)}),
        lambda x, alpha=1.0: F.celu(x, alpha),
        None,
    ),
    "Selu": (st.just({}), _selu, None),
    "ThresholdedRelu": (
        st.fixed_dictionaries({"alpha": st.floats(0.0, 1.0)}),
        lambda x, alpha=1.0: torch.where(x > alpha, x, torch.zeros_like(x)),
        None,
    ),
    "HardSigmoid": (
        st.fixed_dictionaries({"alpha": st.sampled_from([0.2, 1 / 6]), "beta": st.just(0.5)}),
        lambda x, alpha=0.2, beta=0.5: torch.clamp(alpha * x + beta, 0, 1),
        (-6, 6),
    ),
    "HardSwish": (st.just({}), lambda x: F.hardswish(x), (-6, 6)),
    "Gelu": (
        st.fixed_dictionaries({"approximate": st.sampled_from(["none", "tanh"])}),
        lambda x, approximate="none": F.gelu(x, approximate=approximate),
        None,
    ),
    "Mish": (st.just({}), F.mish, None),
    "Softplus": (st.just({}), F.softplus, None),
    "Softsign": (st.just({}), F.softsign, None),
    # Saturated Sigmoid/Tanh lose f' = y(1-y), 1-y^2 to float32 cancellation (so does torch's
    # float32 autograd): keep inputs where float32 can express the slope.
    "Sigmoid": (st.just({}), torch.sigmoid, (-4, 4)),
    "Tanh": (st.just({}), torch.tanh, (-3, 3)),
    "Erf": (st.just({}), torch.erf, None),
    "Exp": (st.just({}), torch.exp, None),
    "Log": (st.just({}), torch.log, (0.1, 3.0)),
    "Sqrt": (st.just({}), torch.sqrt, (0.1, 3.0)),
    "Reciprocal": (st.just({}), torch.reciprocal, "nonzero"),
    "Abs": (st.just({}), torch.abs, None),
    "Neg": (st.just({}), torch.neg, None),
    "Sin": (st.just({}), torch.sin, None),
    "Cos": (st.just({}), torch.cos, None),
    "Floor": (st.just({}), torch.floor, None),
    "Ceil": (st.just({}), torch.ceil, None),
    "Round": (st.just({}), torch.round, None),
    "Sign": (st.just({}), torch.sign, None),
}


@pytest.mark.parametrize("op", sorted(UNARY))
@given(shape=st.lists(st.integers(1, 5), min_size=0, max_size=3), data=st.data(), seed=seeds)
def test_unary(op, shape, data, seed):
    # At least 6 elements: the relative error of a lone element is ill-conditioned
    # where f' crosses zero (Gelu near -0.75); rank 0 is covered below.
    shape = [6, *shape]
    attrs_strategy, reference, domain = UNARY[op]
    attrs = data.draw(attrs_strategy)
    rng = np.random.default_rng(seed)
    if domain == "nonzero":
        x = _arr(rng, shape, away_from_zero=True)
    elif domain is not None:
        x = _arr(rng, shape, *domain)
    else:
        x = _arr(rng, shape) * np.float32(2)
    x = np.asarray(x, dtype=np.float32)
    model = one_op_model(op, [("x", x, True)], attrs, opset=20 if op == "Gelu" else 18)
    # onnxruntime's float32 tanh-Gelu differs from float64 by ~1e-5 in the forward alone.
    forward_tol = 1e-4 if op == "Gelu" else 1e-5
    check_against_torch(
        model, {"x": x}, lambda x: reference(x, **attrs), ["x"], forward_tol=forward_tol
    )


@pytest.mark.parametrize("op", ["Relu", "Exp", "Sigmoid", "HardSwish", "Neg"])
def test_unary_scalar_input(op):
    x = np.asarray(0.7, dtype=np.float32)
    _, reference, _ = UNARY[op]
    check_against_torch(one_op_model(op, [("x", x, True)]), {"x": x}, reference, ["x"])


@given(
    shape=st.lists(st.integers(1, 4), min_size=2, max_size=4), seed=seeds, per_channel=st.booleans()
)
def test_prelu(shape, seed, per_channel):
    rng = np.random.default_rng(seed)
    x = _arr(rng, shape)
    slope_shape = [shape[1]] + [1] * (len(shape) - 2) if per_channel else [1]
    slope = rng.uniform(0, 0.5, slope_shape).astype(np.float32)
    model = one_op_model("PRelu", [("x", x, True), ("slope", slope, False)])
    check_against_torch(
        model,
        {"x": x},
        lambda x, slope: torch.where(x > 0, x, slope * x),
        ["x"],
        consts={"slope": slope},
    )


@given(
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=3),
    seed=seeds,
    bounds=st.sampled_from([(0.0, 6.0), (-1.0, 1.0), (None, 0.5), (0.0, None), (None, None)]),
    opset=st.sampled_from([10, 18]),
)
def test_clip_input_and_attribute_forms(shape, seed, bounds, opset):
    rng = np.random.default_rng(seed)
    x = np.asarray(_arr(rng, shape) * 4, dtype=np.float32)
    lo, hi = bounds
    if opset < 11:
        attrs = {k: v for k, v in (("min", lo), ("max", hi)) if v is not None}
        model = one_op_model("Clip", [("x", x, True)], attrs, opset=opset)
    else:
        ins = [
            ("x", x, True),
            ("lo", None if lo is None else np.float32(lo), False),
            ("hi", None if hi is None else np.float32(hi), False),
        ]
        model = one_op_model("Clip", ins, opset=opset)
    check_against_torch(
        model,
        {"x": x},
        lambda x: x * 1 if lo is None and hi is None else torch.clamp(x, lo, hi),
        ["x"],
    )


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@given(
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=4),
    seed=seeds,
    data=st.data(),
    opset=st.sampled_from([11, 13, 18]),
)
def test_softmax_both_semantics(op, shape, seed, data, opset):
    """Before opset 13 the op normalises over all axes >= axis, flattened."""
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    rng = np.random.default_rng(seed)
    x = np.asarray(_arr(rng, shape) * 3, dtype=np.float32)
    model = one_op_model(op, [("x", x, True)], {"axis": axis}, opset=opset)
    fn = torch.softmax if op == "Softmax" else torch.log_softmax

    def reference(x):
        if opset >= 13:
            return fn(x, axis)
        a = axis % len(shape)
        flat = x.reshape(int(np.prod(shape[:a])), -1)
        return fn(flat, 1).reshape(shape)

    check_against_torch(model, {"x": x}, reference, ["x"])


@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), seed=seeds)
def test_cast_round_trip(shape, seed):
    x = _arr(np.random.default_rng(seed), shape)
    from onnx import TensorProto, helper

    from tests.support import make_model

    nodes = [
        helper.make_node("Cast", ["x"], ["d"], to=TensorProto.DOUBLE),
        helper.make_node("Mul", ["d", "d"], ["m"]),
        helper.make_node("Cast", ["m"], ["y"], to=TensorProto.FLOAT),
    ]
    model = make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
    )
    check_against_torch(model, {"x": x}, lambda x: x * x, ["x"])
