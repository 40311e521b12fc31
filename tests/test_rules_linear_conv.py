"""Gemm, MatMul, Einsum, Conv and ConvTranspose against torch autograd in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given
from hypothesis import strategies as st

from onnxsal.errors import UnsupportedModelError
from tests.support import check_against_torch, one_op_model

seeds = st.integers(0, 2**31 - 1)


def _randn(rng, *shape):
    return np.asarray(rng.standard_normal(shape), dtype=np.float32)


@given(
    m=st.integers(1, 5),
    k=st.integers(1, 5),
    n=st.integers(1, 5),
    ta=st.integers(0, 1),
    tb=st.integers(0, 1),
    alpha=st.sampled_from([1.0, 0.5, -2.0]),
    beta=st.sampled_from([1.0, 0.0, 3.0]),
    c_shape=st.sampled_from(["mn", "n", "1n", "m1", "scalar", None]),
    seed=seeds,
)
def test_gemm(m, k, n, ta, tb, alpha, beta, c_shape, seed):
    rng = np.random.default_rng(seed)
    a = _randn(rng, *((k, m) if ta else (m, k)))
    b = _randn(rng, *((n, k) if tb else (k, n)))
    shapes = {"mn": (m, n), "n": (n,), "1n": (1, n), "m1": (m, 1), "scalar": ()}
    c = _randn(rng, *shapes[c_shape]) if c_shape else None
    ins = [("a", a, True), ("b", b, True)] + ([("c", c, True)] if c is not None else [])
    model = one_op_model("Gemm", ins, {"alpha": alpha, "beta": beta, "transA": ta, "transB": tb})

    def reference(a, b, c=None):
        y = alpha * ((a.T if ta else a) @ (b.T if tb else b))
        return y if c is None else y + beta * c

    feeds = {n_: v for n_, v, _ in ins}
    check_against_torch(model, feeds, reference, list(feeds))


@given(data=st.data(), seed=seeds)
def test_matmul_batched_broadcast_and_vectors(data, seed):
    rank_a = data.draw(st.integers(1, 4))
    rank_b = data.draw(st.integers(1, 4))
    k = data.draw(st.integers(1, 4))
    batch = data.draw(st.lists(st.integers(1, 3), min_size=2, max_size=2))
    sa = [data.draw(st.sampled_from([1, d])) for d in batch][: max(rank_a - 2, 0)][::-1]
    sb = [data.draw(st.sampled_from([1, d])) for d in batch][: max(rank_b - 2, 0)][::-1]
    a_shape = [k] if rank_a == 1 else [*sa, data.draw(st.integers(1, 4)), k]
    b_shape = [k] if rank_b == 1 else [*sb, k, data.draw(st.integers(1, 4))]
    rng = np.random.default_rng(seed)
    a, b = _randn(rng, *a_shape), _randn(rng, *b_shape)
    try:
        np.matmul(a, b)
    except ValueError:
        assume(False)
    model = one_op_model("MatMul", [("a", a, True), ("b", b, True)])
    check_against_torch(model, {"a": a, "b": b}, lambda a, b: torch.matmul(a, b), ["a", "b"])


EINSUMS = [
    ("ij,jk->ik", [(3, 4), (4, 2)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("bhqd,bhkd->bhqk", [(2, 2, 3, 4), (2, 2, 5, 4)]),
    ("i,i->", [(5,), (5,)]),
    ("ij->ji", [(3, 4)]),
    ("ij->i", [(3, 4)]),
    ("ij,jk", [(3, 4), (4, 2)]),
    ("...ij,...jk->...ik", [(2, 3, 4), (2, 4, 5)]),
    ("bcd,de->bce", [(2, 3, 4), (4, 5)]),
    ("ij,kl->ijkl", [(2, 3), (4, 2)]),
]


@pytest.mark.parametrize(("equation", "shapes"), EINSUMS)
def test_einsum(equation, shapes):
    rng = np.random.default_rng(0)
    arrays = {f"x{i}": _randn(rng, *s) for i, s in enumerate(shapes)}
    model = one_op_model(
        "Einsum", [(k, v, True) for k, v in arrays.items()], {"equation": equation}
    )
    check_against_torch(
        model, arrays, lambda **t: torch.einsum(equation, *t.values()), list(arrays)
    )


def test_einsum_diagonal_is_refused_by_name():
    x = np.ones((3, 3), np.float32)
    model = one_op_model("Einsum", [("x", x, True)], {"equation": "ii->i"})
    with pytest.raises(UnsupportedModelError, match="repeated index"):
        check_against_torch(model, {"x": x}, lambda x: torch.diagonal(x), ["x"])


def _conv_reference(x, w, b, *, strides, pads, dilations, group):
    r = w.dim() - 2
    pad_arg = []
    for i in reversed(range(r)):  # F.pad wants the last axis first
        pad_arg += [pads[i], pads[r + i]]
    xp = F.pad(x, pad_arg)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[r]
    return conv(xp, w, b, stride=strides, dilation=dilations, groups=group)


@st.composite
def conv_cases(draw):
    r = draw(st.sampled_from([1, 2, 2, 2, 3]))
    group_kind = draw(st.sampled_from(["dense", "grouped", "depthwise", "depthwise_mult"]))
    c = {"dense": draw(st.integers(1, 3)), "grouped": 4, "depthwise": 3, "depthwise_mult": 2}[
        group_kind
    ]
    group = {"dense": 1, "grouped": 2, "depthwise": c, "depthwise_mult": c}[group_kind]
    m = {"dense": draw(st.integers(1, 3)), "grouped": 4, "depthwise": c, "depthwise_mult": 2 * c}[
        group_kind
    ]
    k = [draw(st.integers(1, 3)) for _ in range(r)]
    s = [draw(st.integers(1, 3)) for _ in range(r)]
    d = [draw(st.integers(1, 2)) for _ in range(r)]
    auto_pad = draw(
        st.sampled_from(["NOTSET", "NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"])
    )
    if auto_pad.startswith("SAME"):  # onnxruntime refuses dilations with SAME padding
        d = [1] * r
    pads = [draw(st.integers(0, 2)) for _ in range(2 * r)]
    size = [draw(st.integers(max(1, dd * (kk - 1) + 1), 8)) for kk, dd in zip(k, d)]
    n = draw(st.integers(1, 2))
    return r, c, m, group, k, s, d, auto_pad, pads, size, n


def _same_pads(size, k, s, d, upper):
    begin, end = [], []
    for h, kk, ss, dd in zip(size, k, s, d):
        total = max((-(-h // ss) - 1) * ss + dd * (kk - 1) + 1 - h, 0)
        small, large = total // 2, total - total // 2
        begin.append(small if upper else large)
        end.append(large if upper else small)
    return begin + end


@given(case=conv_cases(), seed=seeds, bias=st.booleans())
def test_conv(case, seed, bias):
    r, c, m, group, k, s, d, auto_pad, pads, size, n = case
    rng = np.random.default_rng(seed)
    x = _randn(rng, n, c, *size)
    w = _randn(rng, m, c // group, *k)
    b = _randn(rng, m) if bias else None
    attrs = {"strides": s, "dilations": d, "group": group, "kernel_shape": k}
    if auto_pad == "NOTSET":
        attrs["pads"] = pads
        eff = pads
    else:
        attrs["auto_pad"] = auto_pad
        eff = (
            [0] * (2 * r)
            if auto_pad == "VALID"
            else _same_pads(size, k, s, d, auto_pad == "SAME_UPPER")
        )
    assume(
        all(
            (h + eff[i] + eff[r + i] - dd * (kk - 1) - 1) >= 0
            for i, (h, kk, dd) in enumerate(zip(size, k, d))
        )
    )
    ins = [("x", x, True), ("w", w, False)] + ([("b", b, False)] if b is not None else [])
    model = one_op_model("Conv", ins, attrs)
    consts = {"w": w} | ({"b": b} if b is not None else {})

    def reference(x, w, b=None):
        return _conv_reference(x, w, b, strides=s, pads=eff, dilations=d, group=group)

    check_against_torch(model, {"x": x}, reference, ["x"], consts=consts)


@given(seed=seeds, data=st.data())
def test_conv_transpose(seed, data):
    r = data.draw(st.sampled_from([1, 2]))
    group = data.draw(st.sampled_from([1, 2]))
    c = 2 * data.draw(st.integers(1, 2))
    m_per_group = data.draw(st.integers(1, 2))
    k = [data.draw(st.integers(1, 3)) for _ in range(r)]
    s = [data.draw(st.integers(1, 3)) for _ in range(r)]
    d = [data.draw(st.integers(1, 2)) for _ in range(r)]
    op = [data.draw(st.integers(0, ss - 1)) for ss in s]  # onnxruntime needs op < stride
    pads = [data.draw(st.integers(0, 2)) for _ in range(2 * r)]
    size = [data.draw(st.integers(1, 5)) for _ in range(r)]
    full = [(h - 1) * ss + dd * (kk - 1) + 1 for h, ss, dd, kk in zip(size, s, d, k)]
    assume(all(f + o - pads[i] - pads[r + i] >= 1 for i, (f, o) in enumerate(zip(full, op))))
    rng = np.random.default_rng(seed)
    x = _randn(rng, 2, c, *size)
    w = _randn(rng, c, m_per_group, *k)
    attrs = {"strides": s, "dilations": d, "group": group, "pads": pads, "output_padding": op}
    model = one_op_model("ConvTranspose", [("x", x, True), ("w", w, False)], attrs)

    def reference(x, w):
        fn = F.conv_transpose1d if r == 1 else F.conv_transpose2d
        y = fn(x, w, stride=s, dilation=d, groups=group)
        pad_arg = []
        for i in reversed(range(r)):
            pad_arg += [0, op[i]]
        y = F.pad(y, pad_arg)
        index = [slice(None), slice(None)] + [
            slice(pads[i], y.shape[2 + i] - pads[r + i]) for i in range(r)
        ]
        return y[tuple(index)]

    check_against_torch(model, {"x": x}, reference, ["x"], consts={"w": w})


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "output_shape"])
@given(
    seed=seeds,
    h=st.integers(1, 5),
    w_=st.integers(1, 5),
    stride=st.integers(1, 3),
    k=st.integers(1, 3),
)
def test_conv_transpose_implicit_output_size(auto_pad, seed, h, w_, stride, k):
    """The crop the ONNX spec prescribes (checked against onnxruntime's forward first)."""
    rng = np.random.default_rng(seed)
    x = _randn(rng, 1, 2, h, w_)
    w = _randn(rng, 2, 1, k, k)
    full = [(n - 1) * stride + k for n in (h, w_)]
    if auto_pad == "output_shape":
        out = [max(f - 1, 1) for f in full]
        attrs = {"strides": [stride, stride], "output_shape": out}
    else:
        out = [n * stride for n in (h, w_)]
        attrs = {"strides": [stride, stride], "auto_pad": auto_pad}
    totals = [f - o for f, o in zip(full, out)]
    assume(all(t >= 0 for t in totals))
    begin = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in totals]
    model = one_op_model("ConvTranspose", [("x", x, True), ("w", w, False)], attrs)

    def reference(x, w):
        y = F.conv_transpose2d(x, w, stride=stride)
        return y[:, :, begin[0] : begin[0] + out[0], begin[1] : begin[1] + out[1]]

    check_against_torch(model, {"x": x}, reference, ["x"], consts={"w": w})
