"""keras-vis grad modifiers, channel reductions, normalisations and the bilinear resize."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import onnxsal
from onnxsal import postprocess as pp

G = np.array([[[[-2.0, 0.0], [0.5, 4.0]], [[1.0, -3.0], [0.0, 0.25]]]], np.float32)  # (1,2,2,2)


def test_absolute():
    np.testing.assert_array_equal(pp.modify(G, "absolute"), np.abs(G))


def test_negate():
    np.testing.assert_array_equal(pp.modify(G, "negate"), -G)


def test_relu():
    np.testing.assert_array_equal(pp.modify(G, "relu"), np.maximum(G, 0))


def test_invert_keeps_sign_and_stays_finite_at_zero():
    inv = pp.modify(G, "invert")
    assert np.isfinite(inv).all()
    np.testing.assert_allclose(inv[G != 0], 1 / G[G != 0], rtol=1e-5)
    assert (np.sign(inv[G != 0]) == np.sign(G[G != 0])).all()


def test_small_values_ranks_small_gradients_highest():
    s = pp.modify(G, "small_values")
    assert (s >= 0).all()
    flat_g, flat_s = np.abs(G).ravel(), s.ravel()
    assert np.argmax(flat_s) in np.flatnonzero(flat_g == flat_g.min())
    assert np.argmin(flat_s) == np.argmax(flat_g)


def test_modifier_by_function_and_unknown_name():
    np.testing.assert_array_equal(pp.modify(G, lambda g: g * 2), 2 * G)
    with pytest.raises(onnxsal.InputError, match="absolute, negate"):
        pp.modify(G, "abs")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_reductions_follow_the_layout(layout):
    g = G if layout == "NCHW" else G.transpose(0, 2, 3, 1)
    axis = 1 if layout == "NCHW" else -1
    np.testing.assert_array_equal(
        pp.reduce_channels(g, "max", layout), np.abs(g).max(axis, keepdims=True)
    )
    np.testing.assert_array_equal(pp.reduce_channels(g, "sum", layout), g.sum(axis, keepdims=True))
    np.testing.assert_allclose(
        pp.reduce_channels(g, "l2", layout), np.sqrt((g**2).sum(axis, keepdims=True)), rtol=1e-6
    )
    assert pp.reduce_channels(g, "none", layout) is g
    expected = (1, 1, 2, 2) if layout == "NCHW" else (1, 2, 2, 1)
    assert pp.reduce_channels(g, "max", layout).shape == expected


def test_minmax_normalisation_per_sample():
    batch = np.stack([G[0], 10 * G[0] + 3])
    out = pp.normalize(batch, "minmax")
    for sample in out:
        assert sample.min() == 0 and abs(sample.max() - 1) < 1e-6
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)


def test_percentile_normalisation_clips_the_top():
    g = np.arange(100, dtype=np.float32).reshape(1, 1, 10, 10)
    out = pp.normalize(g, "percentile", percentile=90)
    assert out.max() == 1 and out.min() == 0
    assert (out.ravel()[-9:] == 1).all() and (out.ravel()[:89] < 1).all()


@pytest.mark.parametrize("align", [False, True])
@pytest.mark.parametrize("size", [(7, 9), (2, 3), (1, 1)])
def test_resize_is_torch_bilinear(align, size):
    maps = np.random.default_rng(0).standard_normal((2, 3, 3, 4)).astype(np.float32)
    ref = F.interpolate(torch.tensor(maps), size=size, mode="bilinear", align_corners=align)
    got = pp.resize_bilinear(maps, size, align_corners=align)
    np.testing.assert_allclose(got, ref.numpy(), rtol=1e-5, atol=1e-6)
    nhwc = pp.resize_bilinear(maps.transpose(0, 2, 3, 1), size, layout="NHWC", align_corners=align)
    np.testing.assert_allclose(nhwc, ref.numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-6)


def test_grad_modifier_on_explain(exported):
    _, _, ex = exported("resnet", "dynamo")
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    raw = ex.explain(x, target=2)
    np.testing.assert_array_equal(ex.explain(x, target=2, grad_modifier="negate"), -raw)
    np.testing.assert_array_equal(ex.explain(x, target=2, grad_modifier="absolute"), np.abs(raw))
