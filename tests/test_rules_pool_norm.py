"""Pooling, normalisation and reductions against torch autograd in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given
from hypothesis import strategies as st

from tests.support import check_against_torch, one_op_model, onnxsal_vjp, rel_l2

seeds = st.integers(0, 2**31 - 1)


def _randn(rng, *shape):
    return np.asarray(rng.standard_normal(shape), dtype=np.float32)


def _pad_arg(pads, r):
    out = []
    for i in reversed(range(r)):
        out += [pads[i], pads[r + i]]
    return out


@st.composite
def pool_cases(draw, max_rank=2):
    r = draw(st.integers(1, max_rank))
    k = [draw(st.integers(1, 3)) for _ in range(r)]
    s = [draw(st.integers(1, 3)) for _ in range(r)]
    d = [draw(st.integers(1, 2)) for _ in range(r)]
    pads = [draw(st.integers(0, (kk - 1) * dd // 2)) for kk, dd in zip(k, d)] * 2
    if draw(st.booleans()):  # asymmetric
        pads = pads[:r] + [draw(st.integers(0, (kk - 1) * dd // 2)) for kk, dd in zip(k, d)]
    size = [draw(st.integers(dd * (kk - 1) + 1, 7)) for kk, dd in zip(k, d)]
    ceil = draw(st.integers(0, 1))
    return r, k, s, d, pads, size, ceil


def _max_pool_reference(x, r, k, s, d, pads, ceil):
    """torch pools with symmetric padding; asymmetric pads are added as -inf first."""
    sym = [min(pads[i], pads[r + i]) for i in range(r)]
    extra = [pads[i] - sym[i] for i in range(r)] + [pads[r + i] - sym[i] for i in range(r)]
    if any(extra):
        x = F.pad(x, _pad_arg(extra, r), value=-float("inf"))
    fn = F.max_pool1d if r == 1 else F.max_pool2d
    return fn(x, k, s, sym, d, ceil_mode=bool(ceil))


def _check_max_pool(case, x: np.ndarray) -> None:
    r, k, s, d, pads, _, ceil = case
    attrs = {"kernel_shape": k, "strides": s, "dilations": d, "pads": pads, "ceil_mode": ceil}
    model = one_op_model("MaxPool", [("x", x, True)], attrs)
    try:
        expected = _max_pool_reference(torch.tensor(x), r, k, s, d, pads, ceil)
    except RuntimeError:
        assume(False)
    # torch and onnx disagree on ceil_mode with asymmetric pads: keep the cases they share
    from tests.support import run

    assume(tuple(expected.shape) == run(model, {"x": x})[0].shape)
    check_against_torch(
        model, {"x": x}, lambda x: _max_pool_reference(x, r, k, s, d, pads, ceil), ["x"]
    )


@given(case=pool_cases(), seed=seeds)
def test_max_pool(case, seed):
    _check_max_pool(case, _randn(np.random.default_rng(seed), 2, 3, *case[5]))


@given(case=pool_cases(), seed=seeds)
def test_max_pool_with_ties_everywhere(case, seed):
    """Values of 0, 1 and 2 only (as after a ReLU and coarse quantisation): most windows
    tie, and each must route to torch's first maximum in every configuration."""
    x = _randn(np.random.default_rng(seed), 2, 3, *case[5])
    _check_max_pool(case, np.round(np.maximum(x, 0)))


@pytest.mark.parametrize("value", [-np.inf, np.inf, np.finfo(np.float32).min])
def test_max_pool_with_infinite_or_extreme_values(value):
    """An infinite or extreme input routes as torch routes it (a formulation that multiplies
    candidates by 0 or pads with the lowest value would send the gradient elsewhere)."""
    from tests.support import onnxsal_vjp

    x = _randn(np.random.default_rng(0), 1, 2, 5, 5)
    x[0, 0, 0, 0] = x[0, 1, 2, 2] = value
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    model = one_op_model("MaxPool", [("x", x, True)], attrs)
    cot = np.arange(1, 19, dtype=np.float32).reshape(1, 2, 3, 3)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    F.max_pool2d(xt, 3, 2, 1).backward(torch.tensor(cot, dtype=torch.float64))
    np.testing.assert_array_equal(onnxsal_vjp(model, {"x": x}, "x", cot), xt.grad.numpy())


def test_max_pool_ties_go_to_the_first_maximum():
    """After a ReLU whole windows are 0: the gradient goes to one winner, as in torch."""
    x = np.zeros((1, 1, 5, 5), np.float32)
    x[0, 0, 1, 1] = 1.0
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    model = one_op_model("MaxPool", [("x", x, True)], attrs)
    check_against_torch(model, {"x": x}, lambda x: F.max_pool2d(x, 3, 2, 1), ["x"])


@given(case=pool_cases(), seed=seeds, count_pad=st.integers(0, 1))
def test_average_pool(case, seed, count_pad):
    r, k, s, _, pads, size, ceil = case
    pads = pads[:r] * 2  # torch's avg_pool pads symmetrically
    assume(all(p <= kk // 2 for p, kk in zip(pads, k)))
    rng = np.random.default_rng(seed)
    x = _randn(rng, 2, 3, *size)
    attrs = {
        "kernel_shape": k,
        "strides": s,
        "pads": pads,
        "ceil_mode": ceil,
        "count_include_pad": count_pad,
    }
    model = one_op_model("AveragePool", [("x", x, True)], attrs)
    fn = F.avg_pool1d if r == 1 else F.avg_pool2d

    def reference(x):
        return fn(x, k, s, pads[:r], ceil_mode=bool(ceil), count_include_pad=bool(count_pad))

    from tests.support import run

    assume(tuple(reference(torch.tensor(x)).shape) == run(model, {"x": x})[0].shape)
    check_against_torch(model, {"x": x}, reference, ["x"])


@pytest.mark.parametrize("size", [(4, 6), (5, 7)])
def test_average_pool_non_overlapping_fast_path(size):
    x = _randn(np.random.default_rng(0), 2, 3, *size)
    model = one_op_model(
        "AveragePool", [("x", x, True)], {"kernel_shape": [2, 2], "strides": [2, 2]}
    )
    check_against_torch(model, {"x": x}, lambda x: F.avg_pool2d(x, 2, 2), ["x"])


@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=3), seed=seeds)
def test_global_pools(shape, seed):
    x = _randn(np.random.default_rng(seed), 2, 3, *shape)
    model = one_op_model("GlobalAveragePool", [("x", x, True)])
    axes = tuple(range(2, x.ndim))
    check_against_torch(model, {"x": x}, lambda x: x.mean(axes, keepdim=True), ["x"])
    model = one_op_model("GlobalMaxPool", [("x", x, True)])

    def first_max(x):
        flat = x.flatten(2).max(dim=2).values
        return flat.reshape(*flat.shape, *([1] * len(shape)))

    check_against_torch(model, {"x": x}, first_max, ["x"])


def test_global_max_pool_ties_go_to_the_first_maximum():
    x = np.zeros((1, 2, 3, 3), np.float32)
    model = one_op_model("GlobalMaxPool", [("x", x, True)])
    cot = np.ones((1, 2, 1, 1), np.float32)
    got = onnxsal_vjp(model, {"x": x}, "x", cot)
    expected = np.zeros_like(x)
    expected[:, :, 0, 0] = 1.0
    np.testing.assert_array_equal(got, expected)


@given(
    size=st.sampled_from([1, 3, 5]),
    c=st.integers(1, 7),
    seed=seeds,  # onnxruntime: odd sizes
    alpha=st.floats(1e-4, 1.0),
    beta=st.floats(0.1, 1.0),
    bias=st.floats(0.5, 2.0),
)
def test_lrn(size, c, seed, alpha, beta, bias):
    x = _randn(np.random.default_rng(seed), 2, c, 3, 2)
    attrs = {"size": size, "alpha": alpha, "beta": beta, "bias": bias}
    model = one_op_model("LRN", [("x", x, True)], attrs)
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2

    def reference(x):  # the ONNX formula, channel window [c - lo, c + hi]
        sq = F.pad(x * x, (0, 0, 0, 0, lo, hi))
        window = sum(sq[:, i : i + x.shape[1]] for i in range(size))
        return x / (bias + alpha / size * window) ** beta

    check_against_torch(model, {"x": x}, reference, ["x"])


@given(shape=st.lists(st.integers(1, 4), min_size=0, max_size=2), seed=seeds)
def test_batch_norm_inference(shape, seed):
    rng = np.random.default_rng(seed)
    c = 3
    x = _randn(rng, 2, c, *shape)
    scale, bias, mean = _randn(rng, c), _randn(rng, c), _randn(rng, c)
    var = np.abs(_randn(rng, c)) + 0.1
    ins = [
        ("x", x, True),
        ("s", scale, False),
        ("b", bias, False),
        ("m", mean, False),
        ("v", var, False),
    ]
    model = one_op_model("BatchNormalization", ins, {"epsilon": 1e-3})
    check_against_torch(
        model,
        {"x": x},
        lambda x, s, b, m, v: F.batch_norm(x, m, v, s, b, training=False, eps=1e-3),
        ["x"],
        consts={"s": scale, "b": bias, "m": mean, "v": var},
    )


@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), seed=seeds, data=st.data())
def test_layer_norm(shape, seed, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    rng = np.random.default_rng(seed)
    x = _randn(rng, *shape)
    a = axis % len(shape)
    scale, bias = _randn(rng, *shape[a:]), _randn(rng, *shape[a:])
    model = one_op_model(
        "LayerNormalization",
        [("x", x, True), ("s", scale, False), ("b", bias, False)],
        {"axis": axis},
    )
    check_against_torch(
        model,
        {"x": x},
        lambda x, s, b: F.layer_norm(x, shape[a:], s, b),
        ["x"],
        consts={"s": scale, "b": bias},
    )


@given(shape=st.lists(st.integers(2, 4), min_size=1, max_size=2), seed=seeds)
def test_instance_norm(shape, seed):
    rng = np.random.default_rng(seed)
    x = _randn(rng, 2, 3, *shape)
    scale, bias = _randn(rng, 3), _randn(rng, 3)
    model = one_op_model(
        "InstanceNormalization", [("x", x, True), ("s", scale, False), ("b", bias, False)]
    )
    check_against_torch(
        model,
        {"x": x},
        lambda x, s, b: F.instance_norm(x, weight=s, bias=b),
        ["x"],
        consts={"s": scale, "b": bias},
    )


@given(groups=st.sampled_from([1, 2, 3, 6]), seed=seeds)
def test_group_norm_opset21(groups, seed):
    rng = np.random.default_rng(seed)
    x = _randn(rng, 2, 6, 3, 2)
    scale, bias = _randn(rng, 6), _randn(rng, 6)
    model = one_op_model(
        "GroupNormalization",
        [("x", x, True), ("s", scale, False), ("b", bias, False)],
        {"num_groups": groups},
        opset=21,
    )
    check_against_torch(
        model,
        {"x": x},
        lambda x, s, b: F.group_norm(x, groups, s, b),
        ["x"],
        consts={"s": scale, "b": bias},
    )


REDUCERS = {
    "ReduceSum": lambda x, axes, keep: x.sum(axes, keepdim=keep),
    "ReduceMean": lambda x, axes, keep: x.mean(axes, keepdim=keep),
    "ReduceMax": lambda x, axes, keep: x.amax(axes, keepdim=keep),
    "ReduceMin": lambda x, axes, keep: x.amin(axes, keepdim=keep),
    "ReduceL1": lambda x, axes, keep: x.abs().sum(axes, keepdim=keep),
    "ReduceL2": lambda x, axes, keep: (x * x).sum(axes, keepdim=keep).sqrt(),
    "ReduceSumSquare": lambda x, axes, keep: (x * x).sum(axes, keepdim=keep),
    "ReduceLogSumExp": lambda x, axes, keep: torch.logsumexp(x, axes, keepdim=keep),
}


@pytest.mark.parametrize("op", sorted(REDUCERS))
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    seed=seeds,
    data=st.data(),
    keep=st.integers(0, 1),
)
def test_reductions(op, shape, seed, data, keep):
    r = len(shape)
    axes = data.draw(st.lists(st.integers(-r, r - 1), max_size=r, unique_by=lambda a: a % r))
    x = _randn(np.random.default_rng(seed), *shape)
    ins = [("x", x, True), ("axes", np.array(axes, np.int64) if axes else None, False)]
    model = one_op_model(op, ins, {"keepdims": keep})
    dims = tuple(a % r for a in axes) if axes else tuple(range(r))
    check_against_torch(model, {"x": x}, lambda x: REDUCERS[op](x, dims, bool(keep)), ["x"])


def test_reduce_noop_with_empty_axes():
    x = _randn(np.random.default_rng(0), 2, 3)
    model = one_op_model("ReduceSum", [("x", x, True)], {"noop_with_empty_axes": 1})
    check_against_torch(model, {"x": x}, lambda x: x * 1, ["x"])


def test_reduce_max_ties_route_to_first():
    x = np.zeros((2, 3), np.float32)
    model = one_op_model("ReduceMax", [("x", x, True), ("axes", np.array([1], np.int64), False)])
    got = onnxsal_vjp(model, {"x": x}, "x", np.ones((2, 1), np.float32))
    assert rel_l2(got, np.array([[1, 0, 0], [1, 0, 0]])) == 0
