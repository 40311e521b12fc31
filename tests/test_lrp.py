"""LRP against Zennit in float64: each rule alone, each shipped composite, BatchNorm merged
(folded by the exporter, or left as a node), residual sums, and conservation."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

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


# -- ONNX forms of the same layers: each must give the map of its plain twin ------------------
def _graph(nodes, inits, x_dims, y_dims):
    from onnx import TensorProto, helper, numpy_helper

    from tests.support import make_model

    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *x_dims])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", *y_dims])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()],
    )


def _node(op, ins, outs, **kw):
    from onnx import helper

    return helper.make_node(op, ins, outs, **kw)


def _same_lrp(model, twin, x, composites=("epsilon", "epsilon_plus_flat", "epsilon_alpha2_beta1")):
    a, b = onnxsal.Explainer(model), onnxsal.Explainer(twin)
    for name in composites:
        got, want = a.run(x, "lrp", composite=name), b.run(x, "lrp", composite=name)
        assert np.array_equal(got.target, want.target)
        assert rel_l2(got.attribution, want.attribution) <= 1e-5, name


def _dense_head(rng, c_in, k=5):
    return {"wd": rng.standard_normal((k, c_in)) * 0.3, "bd": rng.standard_normal(k) * 0.1}


def test_batchnorm_written_as_mul_and_add_is_folded_like_batchnorm():
    """tf2onnx writes BatchNorm as Mul and Add by per-channel constants."""
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((4, 3, 3, 3)) * 0.4, rng.standard_normal(4) * 0.1
    s, t = rng.uniform(0.5, 1.5, 4), rng.standard_normal(4) * 0.2
    head = _dense_head(rng, 4)
    tail = [
        _node("Relu", ["z"], ["r"]),
        _node("GlobalAveragePool", ["r"], ["p"]),
        _node("Flatten", ["p"], ["f"]),
        _node("Gemm", ["f", "wd", "bd"], ["y"], transB=1),
    ]
    split = _graph(
        [_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), _node("Mul", ["c", "s"], ["m"]),
         _node("Add", ["m", "t"], ["z"]), *tail],
        {"w": w, "b": b, "s": s.reshape(1, 4, 1, 1), "t": t.reshape(1, 4, 1, 1), **head},
        [3, 8, 8], [5],
    )  # fmt: skip
    merged = _graph(
        [_node("Conv", ["x", "w", "b"], ["z"], pads=[1, 1, 1, 1]), *tail],
        {"w": w * s.reshape(4, 1, 1, 1), "b": b * s + t, **head}, [3, 8, 8], [5],
    )  # fmt: skip
    _same_lrp(split, merged, rng.standard_normal((2, 3, 8, 8)).astype(np.float32))


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_batchnorm_and_matmul_bias_forms_agree(trans_b):
    rng = np.random.default_rng(1)
    w, b = rng.standard_normal((8, 6)) * 0.4, rng.standard_normal(6) * 0.1  # (K, N)
    bn = {"sc": rng.uniform(0.5, 1.5, 6), "sh": rng.standard_normal(6) * 0.2,
          "mu": rng.standard_normal(6) * 0.1, "va": rng.uniform(0.5, 2.0, 6)}  # fmt: skip
    head = _dense_head(rng, 6)
    tail = [_node("Relu", ["z"], ["r"]), _node("Gemm", ["r", "wd", "bd"], ["y"], transB=1)]
    gemm = _graph(
        [_node("Gemm", ["x", "w", "b"], ["g"], transB=trans_b),
         _node("BatchNormalization", ["g", "sc", "sh", "mu", "va"], ["z"]), *tail],
        {"w": w.T if trans_b else w, "b": b, **bn, **head}, [8], [5],
    )  # fmt: skip
    factor = bn["sc"] / np.sqrt(bn["va"] + 1e-5)
    matmul = _graph(  # the merged layer as Keras writes Dense: MatMul, Cast, bias Add
        [_node("MatMul", ["x", "w"], ["m"]), _node("Cast", ["m"], ["c"], to=1),
         _node("Add", ["c", "b"], ["z"]), *tail],
        {"w": w * factor, "b": (b - bn["mu"]) * factor + bn["sh"], **head}, [8], [5],
    )  # fmt: skip
    _same_lrp(gemm, matmul, rng.standard_normal((3, 8)).astype(np.float32))


def test_grouped_conv_transpose_batchnorm_and_weights_through_transpose():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((4, 3, 3, 3)) * 0.4  # (C_in, M/g, k, k), group 2: M = 6
    bn = {"sc": rng.uniform(0.5, 1.5, 6), "sh": rng.standard_normal(6) * 0.2,
          "mu": rng.standard_normal(6) * 0.1, "va": rng.uniform(0.5, 2.0, 6)}  # fmt: skip
    head = _dense_head(rng, 6)
    tail = [
        _node("Relu", ["z"], ["r"]),
        _node("GlobalAveragePool", ["r"], ["p"]),
        _node("Flatten", ["p"], ["f"]),
        _node("Gemm", ["f", "wd", "bd"], ["y"], transB=1),
    ]
    split = _graph(
        [_node("Transpose", ["wt"], ["w"], perm=[1, 0, 2, 3]),  # the weight stored transposed
         _node("ConvTranspose", ["x", "w"], ["c"], group=2),
         _node("BatchNormalization", ["c", "sc", "sh", "mu", "va"], ["z"]), *tail],
        {"wt": w.transpose(1, 0, 2, 3), **bn, **head}, [4, 5, 5], [5],
    )  # fmt: skip
    factor = bn["sc"] / np.sqrt(bn["va"] + 1e-5)
    per_input = np.repeat(factor.reshape(2, 3), 2, axis=0)  # input channel c: group c // 2
    merged = _graph(
        [_node("ConvTranspose", ["x", "w", "b"], ["z"], group=2), *tail],
        {"w": w * per_input[:, :, None, None], "b": bn["sh"] - bn["mu"] * factor, **head},
        [4, 5, 5], [5],
    )  # fmt: skip
    _same_lrp(split, merged, rng.standard_normal((2, 4, 5, 5)).astype(np.float32))


def test_normalisation_inside_the_graph_passes_relevance_and_dense_first_layers_take_flat():
    rng = np.random.default_rng(3)
    w, b = rng.standard_normal((12, 6)) * 0.4, rng.standard_normal(6) * 0.1
    head = _dense_head(rng, 6)
    tail = [_node("Relu", ["z"], ["r"]), _node("Gemm", ["r", "wd", "bd"], ["y"], transB=1)]
    inside = _graph(
        [_node("Sub", ["x", "mean"], ["c"]), _node("Div", ["c", "std"], ["n"]),
         _node("MatMul", ["n", "w"], ["m"]), _node("Add", ["m", "b"], ["z"]), *tail],
        {"mean": [0.5], "std": [0.25], "w": w, "b": b, **head}, [12], [5],
    )  # fmt: skip
    plain = _graph(
        [_node("MatMul", ["x", "w"], ["m"]), _node("Add", ["m", "b"], ["z"]), *tail],
        {"w": w, "b": b, **head}, [12], [5],
    )  # fmt: skip
    x = rng.uniform(0, 1, (3, 12)).astype(np.float32)
    a, p = onnxsal.Explainer(inside), onnxsal.Explainer(plain)
    for name in ("epsilon", "epsilon_plus_flat"):
        got = a.run(x, "lrp", composite=name)
        want = p.run(((x - 0.5) / 0.25).astype(np.float32), "lrp", composite=name)
        assert rel_l2(got.attribution, want.attribution) <= 1e-5, name
    rules = {r.pattern for r in a.rewritten_nodes("lrp")}
    assert {"Pass (input preprocessing)", "Flat (first layer)"} <= rules


def test_keras_and_torch_exports_of_one_network_give_one_lrp_map():
    """digits-cnn and digits-cnn-keras compute the same function (BatchNorm as Mul/Add in the
    Keras export, NHWC input): their LRP maps must agree for every composite."""
    from PIL import Image

    from tests.test_hostile import save_digits

    torch_ex, keras_ex = onnxsal.Explainer("digits-cnn"), onnxsal.Explainer("digits-cnn-keras")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        [path] = save_digits(Path(tmp), [7])
        picture = Image.open(path)
        xt, xk = torch_ex.preprocess(picture), keras_ex.preprocess(picture)
    for name in ("epsilon", "epsilon_plus_flat", "epsilon_alpha2_beta1", "epsilon_gamma_box"):
        got = keras_ex.explain(xk, "lrp", composite=name)
        want = torch_ex.explain(xt, "lrp", composite=name)
        assert rel_l2(np.moveaxis(got, -1, 1), want) <= 1e-4, name


class MBConv(torch.nn.Module):
    """EfficientNet-Lite's block: 1x1 expand, depthwise 3x3, 1x1 project, each with BatchNorm,
    ReLU6 between, and the residual sum."""

    def __init__(self, c: int, zennit_sum: bool):
        super().__init__()

        def unit(cin, cout, k, groups):
            return torch.nn.Sequential(
                torch.nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False),
                torch.nn.BatchNorm2d(cout),
            )

        self.expand, self.depthwise = unit(c, 4 * c, 1, 1), unit(4 * c, 4 * c, 3, 4 * c)
        self.project, self.act = unit(4 * c, c, 1, 1), torch.nn.ReLU6()
        self.zennit_sum, self.sum = zennit_sum, Sum()

    def forward(self, x):
        y = self.project(self.act(self.depthwise(self.act(self.expand(x)))))
        return self.sum(torch.stack([x, y], dim=-1)) if self.zennit_sum else x + y


class LiteNet(torch.nn.Module):
    def __init__(self, zennit_sum: bool = False):
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1, bias=False),
                                        torch.nn.BatchNorm2d(8), torch.nn.ReLU6())  # fmt: skip
        self.blocks = torch.nn.Sequential(MBConv(8, zennit_sum), MBConv(8, zennit_sum))
        self.head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                        torch.nn.Linear(8, 10))  # fmt: skip

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


@pytest.mark.parametrize("name", ["epsilon_plus_flat", "epsilon_alpha2_beta1"])
def test_depthwise_relu6_blocks_match_zennit(name):
    torch.manual_seed(4)
    model = LiteNet().eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    twin = LiteNet(zennit_sum=True).eval()
    twin.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 16, 16)
    ex = export(model, x)
    canon = [SequentialMergeBatchNorm()]
    shipped = {"epsilon_plus_flat": EpsilonPlusFlat, "epsilon_alpha2_beta1": EpsilonAlpha2Beta1}
    zennit_composite = shipped[name](canonizers=canon)
    want, classes = zennit_relevance(twin, x, zennit_composite)
    got = ex.explain(x.numpy(), "lrp", classes, composite=name)
    assert rel_l2(got, want) <= TOL


def test_new_weights_reach_lrp_and_the_gradient_whether_graphs_are_reused_or_rebuilt():
    """with_initializers: gradient graphs are reused with the weights written in, LRP's (which
    fold the weights into their rules) are rebuilt; both equal a model edited afresh."""
    import onnx

    ex = onnxsal.Explainer("digits-cnn")
    x = ex.example_input(2)
    ex.explain(x)  # the graphs a copy may reuse
    name = "4.weight"
    old = ex.model.graph.initializers[name].const_value.numpy()
    new = np.random.default_rng(5).standard_normal(old.shape).astype(old.dtype)
    twin = ex.with_initializers({name: new})
    edited = onnx.ModelProto()
    edited.CopyFrom(onnx.load(onnxsal.models.locate("digits-cnn")))
    for tensor in edited.graph.initializer:
        if tensor.name == name:
            tensor.CopyFrom(onnx.numpy_helper.from_array(new, name))
    fresh = onnxsal.Explainer(edited)
    for method in ("vanilla", "guided", "lrp"):
        got, want = twin.explain(x, method, 3), fresh.explain(x, method, 3)
        assert rel_l2(got, want) <= 1e-6, method
    assert np.array_equal(twin.predict(x), fresh.predict(x))
    assert twin.digest != ex.digest
    assert rel_l2(ex.explain(x, "vanilla", 3), twin.explain(x, "vanilla", 3)) > 0.1
