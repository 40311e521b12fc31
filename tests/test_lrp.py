"""LRP against Zennit in float64: each rule alone, each shipped composite, BatchNorm merged
(folded by the exporter, or left as a node), residual sums, and conservation."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch

import onnxsal
from onnxsal.errors import OptionError
from onnxsal.modifiers.lrp import (
    Composite,
    alpha_beta,
    epsilon,
    epsilon_gamma_box,
    flat,
    gamma,
    w_square,
    z_box,
    zplus,
)
from tests.support import rel_l2

zennit = pytest.importorskip("zennit")
from zennit.attribution import Gradient  # noqa: E402
from zennit.canonizers import SequentialMergeBatchNorm  # noqa: E402
from zennit.composites import (  # noqa: E402
    EpsilonAlpha2Beta1,
    EpsilonGammaBox,
    EpsilonPlusFlat,
    LayerMapComposite,
    SpecialFirstLayerMapComposite,
)
from zennit.layer import Sum  # noqa: E402
from zennit.rules import AlphaBeta, Epsilon, Flat, Gamma, Norm, Pass, WSquare, ZBox, ZPlus  # noqa: E402
from zennit.types import Activation, AvgPool, Convolution, Linear  # noqa: E402

TOL = 1e-4  # float32 onnxsal against float64 Zennit


class VGG(torch.nn.Module):
    def __init__(self, bias: bool = True):
        super().__init__()
        c = torch.nn.Conv2d
        self.f = torch.nn.Sequential(
            c(3, 8, 3, padding=1, bias=bias), torch.nn.ReLU(), c(8, 8, 3, padding=1, bias=bias),
            torch.nn.ReLU(), torch.nn.MaxPool2d(2), c(8, 16, 3, stride=2, padding=1, bias=bias),
            torch.nn.ReLU(), torch.nn.AvgPool2d(2),
        )  # fmt: skip
        self.c = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(256, 32, bias=bias), torch.nn.ReLU(),
            torch.nn.Linear(32, 10, bias=bias),
        )  # fmt: skip

    def forward(self, x):
        return self.c(self.f(x))


class Block(torch.nn.Module):
    def __init__(self, c: int, zennit_sum: bool):
        super().__init__()
        self.a = torch.nn.Sequential(torch.nn.Conv2d(c, c, 3, padding=1, bias=False),
                                     torch.nn.BatchNorm2d(c))  # fmt: skip
        self.relu, self.zennit_sum, self.sum = torch.nn.ReLU(), zennit_sum, Sum()

    def forward(self, x):
        y = self.relu(self.a(x))
        joined = self.sum(torch.stack([x, y], dim=-1)) if self.zennit_sum else x + y
        return self.relu(joined)


class ResNet(torch.nn.Module):
    """Residual additions and BatchNorm; Zennit's twin writes the sums as its Sum module."""

    def __init__(self, zennit_sum: bool = False):
        super().__init__()
        stem = (torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
        self.stem = torch.nn.Sequential(*stem)
        self.b1, self.b2 = Block(8, zennit_sum), Block(8, zennit_sum)
        self.head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                        torch.nn.Linear(8, 10))  # fmt: skip

    def forward(self, x):
        return self.head(self.b2(self.b1(self.stem(x))))


class Dense(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.ReLU(),
                                       torch.nn.Linear(16, 16), torch.nn.ReLU(),
                                       torch.nn.Linear(16, 5))  # fmt: skip

    def forward(self, x):
        return self.net(x)


def export(model, x, **kw) -> onnxsal.Explainer:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, x, buf, dynamo=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n"}}, **kw)  # fmt: skip
    return onnxsal.Explainer(buf.getvalue())


def zennit_relevance(model, x, composite) -> tuple[np.ndarray, np.ndarray]:
    """Zennit's relevance in float64, the output relevance being the explained logit."""
    model = model.double()
    xd = x.double()
    with Gradient(model=model, composite=composite) as attributor:
        classes = model(xd).argmax(1)
        one_hot = torch.nn.functional.one_hot(classes, model(xd).shape[1]).double()
        _, relevance = attributor(xd, lambda out: out * one_hot)
    return relevance.numpy(), classes.numpy()


BASE = [(Activation, Pass()), (Sum, Norm()), (AvgPool, Norm())]
RULES = {  # ours (conv, dense, first), Zennit's (layer map, first map)
    "Epsilon": ((epsilon(), epsilon(), None),
                ([(Convolution, Epsilon()), (Linear, Epsilon())], None)),
    "ZPlus": ((zplus(), zplus(), None), ([(Convolution, ZPlus()), (Linear, ZPlus())], None)),
    "AlphaBeta": ((alpha_beta(), alpha_beta(), None),
                  ([(Convolution, AlphaBeta()), (Linear, AlphaBeta())], None)),
    "Gamma": ((gamma(), gamma(), None), ([(Convolution, Gamma()), (Linear, Gamma())], None)),
    "Flat": ((epsilon(), epsilon(), flat()),
             ([(Convolution, Epsilon()), (Linear, Epsilon())], [(Convolution, Flat())])),
    "WSquare": ((epsilon(), epsilon(), w_square()),
                ([(Convolution, Epsilon()), (Linear, Epsilon())], [(Convolution, WSquare())])),
    "ZBox": ((epsilon(), epsilon(), z_box(-3.0, 3.0)),
             ([(Convolution, Epsilon()), (Linear, Epsilon())], [(Convolution, ZBox(-3.0, 3.0))])),
}  # fmt: skip


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    model, x = VGG().eval(), torch.randn(2, 3, 32, 32)
    return model, x, export(model, x)


@pytest.mark.parametrize("rule", list(RULES))
def test_each_rule_matches_zennit(vgg, rule):
    model, x, ex = vgg
    (conv, dense, first), (layer_map, first_map) = RULES[rule]
    composite = (SpecialFirstLayerMapComposite(layer_map=BASE + layer_map, first_map=first_map)
                 if first_map else LayerMapComposite(layer_map=BASE + layer_map))  # fmt: skip
    want, classes = zennit_relevance(model, x, composite)
    got = ex.explain(x.numpy(), "lrp", classes, composite=Composite(rule, conv, dense, first))
    assert rel_l2(got, want) <= TOL


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(1)
    model = ResNet().eval()
    for m in model.modules():  # BatchNorm statistics that change something
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    twin = ResNet(zennit_sum=True).eval()
    twin.load_state_dict(model.state_dict())
    return model, twin, torch.randn(2, 3, 16, 16)


@pytest.mark.parametrize("kept_batchnorm", [False, True], ids=["bn-folded", "bn-node"])
@pytest.mark.parametrize("name", ["epsilon_plus_flat", "epsilon_alpha2_beta1", "epsilon_gamma_box"])
def test_shipped_composites_match_zennit_on_a_resnet(resnet, name, kept_batchnorm):
    model, twin, x = resnet
    kw = ({"training": torch.onnx.TrainingMode.PRESERVE, "do_constant_folding": False}
          if kept_batchnorm else {})  # fmt: skip
    ex = export(model, x, **kw)
    ops = {n.op_type for n in ex.model.graph}
    assert ("BatchNormalization" in ops) == kept_batchnorm and "Add" in ops
    canon = [SequentialMergeBatchNorm()]
    zennit_composite = {
        "epsilon_plus_flat": EpsilonPlusFlat(canonizers=canon),
        "epsilon_alpha2_beta1": EpsilonAlpha2Beta1(canonizers=canon),
        "epsilon_gamma_box": EpsilonGammaBox(low=-3.0, high=3.0, canonizers=canon),
    }[name]
    want, classes = zennit_relevance(twin, x, zennit_composite)
    composite = epsilon_gamma_box(-3.0, 3.0) if name == "epsilon_gamma_box" else name
    got = ex.explain(x.numpy(), "lrp", classes, composite=composite)
    assert rel_l2(got, want) <= TOL


def test_dense_net_epsilon_matches_zennit():
    torch.manual_seed(2)
    model, x = Dense().eval(), torch.randn(3, 20)
    ex = export(model, x)
    want, classes = zennit_relevance(model, x, EpsilonPlusFlat())  # no conv: Epsilon, Flat first
    got = ex.explain(x.numpy(), "lrp", classes, composite="epsilon_plus_flat")
    assert rel_l2(got, want) <= TOL


@pytest.mark.parametrize("name", ["epsilon", "epsilon_plus_flat", "epsilon_alpha2_beta1"])
def test_relevance_sums_to_the_logit_on_a_bias_free_net(name):
    torch.manual_seed(3)
    model, x = VGG(bias=False).eval(), torch.randn(2, 3, 32, 32)
    result = export(model, x).run(x.numpy(), "lrp", composite=name)
    gap = result.extras["conservation_gap"]
    assert np.all(np.abs(gap) <= 1e-4 * np.abs(result.score)), (gap, result.score)


def test_each_node_is_listed_with_its_rule(vgg):
    _, _, ex = vgg
    rules = {(r.op_type, r.pattern) for r in ex.rewritten_nodes("lrp")}
    assert ("Conv", "Flat (first layer)") in rules and ("Conv", "ZPlus") in rules
    assert ("Gemm", "Epsilon(1e-06)") in rules and ("Relu", "Pass") in rules
    assert ("AveragePool", "Norm") in rules


def test_box_bounds_come_from_the_models_preprocessing_and_bad_composites_are_one_line():
    ex = onnxsal.Explainer("digits-cnn")
    x = ex.example_input(1)
    box = ex.rewritten_nodes("lrp", composite="epsilon_gamma_box")[0]
    assert box.pattern.startswith("ZBox(") and "first layer" in box.pattern
    with pytest.raises(OptionError, match="composite must be one of"):
        ex.explain(x, "lrp", composite="nope")
    with pytest.raises(OptionError, match="alpha - beta = 1"):
        alpha_beta(3.0, 1.0)


def test_lrp_takes_every_target_kind_and_layer_units(vgg):
    _, x, ex = vgg
    xs = x.numpy()
    unit = ex.run(xs, "lrp", layer="f.3", unit=2)  # relevance of channel 2's mean
    weighted = ex.run(xs, "lrp", {3: 1.0, 5: 0.5})  # a weighted sum of two logits
    assert np.allclose(weighted.score, ex.predict(xs)[:, 3] + 0.5 * ex.predict(xs)[:, 5], rtol=1e-5)
    for result in (unit, weighted):
        assert result.attribution.shape == xs.shape and np.isfinite(result.attribution).all()
        assert np.abs(result.attribution).sum() > 0


def test_cli_lrp_and_its_export(tmp_path):
    from click.testing import CliRunner

    from onnxsal.cli import main as cli

    ex = onnxsal.Explainer("digits-cnn")
    sample = tmp_path / "x.npy"
    np.save(sample, ex.example_input(1))
    run = CliRunner().invoke
    done = run(cli, ["explain", "digits-cnn", str(sample), "-m", "lrp", "--composite",
                     "epsilon_alpha2_beta1", "-o", str(tmp_path / "out")])  # fmt: skip
    assert done.exit_code == 0, done.output
    bad = run(cli, ["explain", "digits-cnn", str(sample), "-m", "lrp", "--composite", "nope",
                    "-o", str(tmp_path / "bad")])  # fmt: skip
    assert bad.exit_code == 2 and "composite must be one of" in bad.output
    assert len(bad.output.strip().splitlines()) == 1
    exported = run(cli, ["export", "digits-cnn", "-m", "lrp", "--composite", "epsilon",
                         "-o", str(tmp_path / "lrp.onnx"), "--check"])  # fmt: skip
    assert exported.exit_code == 0 and "check: the file reproduces explain()" in exported.output
