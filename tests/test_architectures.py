"""Whole architectures, exported by both torch exporters, against float64 oracles.

vanilla: torch autograd. guided/deconv: Captum where the model's rectifiers
are all nn.ReLU (Captum rewrites nothing else), and the hook oracle of
tests/oracles.py (onnxsal's documented rule, checked against Captum here)
where ReLU6, HardSwish or GELU take part.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from tests import oracles
from tests.architectures import build
from tests.conftest import EXPORTERS, SIZE
from tests.support import rel_l2

RELU_ONLY = {"vgg", "resnet", "densenet", "upsample"}
ARCHS = ["vgg", "resnet", "mobilenet", "densenet", "vit", "upsample"]
CASES = [(a, e) for a in ARCHS for e in EXPORTERS]


def _inputs(seed: int = 0, n: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, SIZE, SIZE)).astype(np.float32)


def _reference_model(model):
    if hasattr(model, "softmax"):  # explained before the softmax, like Captum on logits
        model.softmax = False
    return model


@pytest.mark.parametrize(("arch", "exporter"), CASES)
def test_vanilla_matches_torch_autograd(exported, arch, exporter):
    model, _, ex = exported(arch, exporter)
    x = _inputs()
    model = _reference_model(model)
    target = oracles.logits64(model, x).argmax(1).numpy()
    got = ex.explain(x, "vanilla", target)
    assert got.dtype == np.float32 and got.shape == x.shape
    assert rel_l2(got, oracles.vanilla(model, x, target)) <= 1e-4


@pytest.mark.parametrize("method", ["guided", "deconv"])
@pytest.mark.parametrize(("arch", "exporter"), CASES)
def test_modifiers_match_captum_or_the_hook_oracle(exported, arch, exporter, method):
    model, _, ex = exported(arch, exporter)
    x = _inputs(1)
    model = _reference_model(model)
    target = oracles.logits64(model, x).argmax(1).numpy()
    got = ex.explain(x, method, target)
    if arch in RELU_ONLY:
        ref = oracles.captum(method, model, x, target)
    else:
        ref = oracles.hooked(method, model, x, target)
    assert rel_l2(got, ref) <= 1e-4
    assert ex.rewritten_nodes(method), "the modifier rewrote nothing"


@pytest.mark.parametrize("method", ["guided", "deconv"])
@pytest.mark.parametrize("arch", sorted(RELU_ONLY))
def test_hook_oracle_is_captum_on_relu_models(arch, method):
    model = _reference_model(build(arch))
    x = _inputs(2, 2)
    target = [1, 4]
    ref = oracles.captum(method, model, x, target)
    assert rel_l2(oracles.hooked(method, model, x, target), ref) < 1e-10


@pytest.mark.parametrize("arch", ARCHS)
def test_both_exporters_give_the_same_maps(exported, arch):
    x = _inputs(3, 2)
    for method in ("vanilla", "guided", "deconv"):
        a = exported(arch, "torchscript")[2].explain(x, method, [0, 1])
        b = exported(arch, "dynamo")[2].explain(x, method, [0, 1])
        assert rel_l2(a, b) <= 1e-4, method


@pytest.mark.parametrize("exporter", list(EXPORTERS))
def test_every_relu_module_is_rewritten(exported, exporter):
    model, _, ex = exported("resnet", exporter)
    relus = sum(isinstance(m, torch.nn.ReLU) for m in model.modules())
    rewrites = ex.rewritten_nodes("guided")
    assert len(rewrites) == relus
    assert {r.pattern for r in rewrites} == {"Relu"}


def test_mobilenet_gates_include_relu6_and_hardswish(exported):
    patterns = {
        r.pattern for r in exported("mobilenet", "torchscript")[2].rewritten_nodes("deconv")
    }
    assert patterns == {"Relu", "Clip", "x*HardSigmoid(x) (HardSwish)"}
    patterns = {r.pattern for r in exported("mobilenet", "dynamo")[2].rewritten_nodes("deconv")}
    assert patterns == {"Relu", "Clip", "HardSwish"}


@pytest.mark.parametrize(("arch", "exporter"), [("vit", "dynamo"), ("mobilenet", "torchscript")])
def test_saliency_model_is_standard_onnx(exported, arch, exporter):
    _, _, ex = exported(arch, exporter)
    model = ex.saliency_model("guided")
    onnx.checker.check_model(model, full_check=True)
    assert {op.domain for op in model.opset_import} <= {"", "ai.onnx"}
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)
    names = [o.name for o in model.graph.output]
    assert {"attribution", "score", "target_index", "unit_scores"} <= set(names)
