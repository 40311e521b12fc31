"""OpenVINO as a second runtime: the same parity oracles as onnxruntime, and its doors.

Every architecture, both torch exporters, vanilla/guided/deconv against the float64
oracles of test_architectures (torch autograd, Captum, the hook oracle) at the same
tolerance; the sampling and layer methods against onnxruntime; the errors a user meets.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import onnxsal
from onnxsal import runtime
from tests import oracles
from tests.conftest import EXPORTERS
from tests.support import rel_l2
from tests.test_architectures import ARCHS, RELU_ONLY, _inputs, _reference_model
from tests.test_rules_pool_norm import pool_cases, seeds

pytest.importorskip("openvino")
CASES = [(a, e) for a in ARCHS for e in EXPORTERS]


@pytest.fixture(scope="module")
def on_openvino(exported):
    """The Explainer of an exported architecture, on OpenVINO (one per case)."""
    cache: dict = {}

    def get(arch: str, exporter: str):
        if (arch, exporter) not in cache:
            model, path, _ = exported(arch, exporter)
            cache[arch, exporter] = (model, onnxsal.Explainer(path, providers="openvino"))
        return cache[arch, exporter]

    return get


@pytest.mark.parametrize("method", ["vanilla", "guided", "deconv"])
@pytest.mark.parametrize(("arch", "exporter"), CASES)
def test_openvino_matches_the_oracles(on_openvino, arch, exporter, method):
    model, ex = on_openvino(arch, exporter)
    x = _inputs(4)
    model = _reference_model(model)
    target = oracles.logits64(model, x).argmax(1).numpy()
    got = ex.explain(x, method, target)
    if method == "vanilla":
        ref = oracles.vanilla(model, x, target)
    elif arch in RELU_ONLY:
        ref = oracles.captum(method, model, x, target)
    else:
        ref = oracles.hooked(method, model, x, target)
    assert got.dtype == np.float32 and got.shape == x.shape
    assert rel_l2(got, ref) <= 1e-4
    assert ex.providers == [runtime.OPENVINO]


@pytest.mark.parametrize(
    "method, options",
    [
        ("smoothgrad", dict(n_samples=4, seed=0)),
        ("integrated_gradients", dict(steps=8)),
        ("gradcam", {}),
        ("simple_fullgrad", {}),
    ],
)
def test_methods_of_several_passes_agree_with_onnxruntime(exported, on_openvino, method, options):
    _, _, on_ort = exported("resnet", "dynamo")
    _, on_ov = on_openvino("resnet", "dynamo")
    x = _inputs(5, 2)
    want = on_ort.explain(x, method, [1, 2], **options)
    assert rel_l2(on_ov.explain(x, method, [1, 2], **options), want) <= 1e-4


def test_batch_shapes_compile_once_each(exported):
    """A run's full batches and its last, shorter one: one compiled model each."""
    _, path, on_ort = exported("vgg", "dynamo")
    ex = onnxsal.Explainer(path, providers="openvino")
    x = _inputs(6, 5)
    ex.explain(x, "vanilla", batch_size=2)
    compiled = [len(g.session._compiled) for g in ex._runner._graphs.values() if g.session]
    assert max(compiled) == 2, compiled  # batches of 2, 2 and 1
    assert rel_l2(ex.explain(x, "vanilla", batch_size=2), on_ort.explain(x, "vanilla")) <= 1e-4


@pytest.mark.parametrize("name", ["openvino", "fastest"])
def test_a_missing_openvino_says_how_to_install_it(exported, monkeypatch, name):
    _, path, _ = exported("vgg", "dynamo")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a)
    )
    with pytest.raises(onnxsal.OnnxsalError, match=r"onnxsal\[openvino\]"):
        onnxsal.Explainer(path, providers=name)


@pytest.mark.parametrize("name", ["openvino", "fastest"])
def test_the_command_line_takes_the_runtime(tmp_path, name):
    from click.testing import CliRunner

    from onnxsal.cli import main

    x = np.random.default_rng(0).random((2, 1, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "o"
    result = CliRunner().invoke(
        main,
        [
            "explain",
            "digits-cnn",
            str(tmp_path / "x.npy"),
            "-o",
            str(out),
            "--providers",
            name,
            "--format",
            "npy",
        ],
    )
    assert result.exit_code == 0, result.output
    ex = onnxsal.Explainer("digits-cnn")
    for k in range(2):
        (saved,) = out.glob(f"x.npy.{k}.vanilla.*.attribution.npy")
        assert rel_l2(np.load(saved), ex.explain(x[k : k + 1])[0]) <= 1e-5


def test_fastest_picks_a_runtime_per_graph_and_keeps_its_maps(exported):
    _, path, on_ort = exported("mobilenet", "dynamo")
    ex = onnxsal.Explainer(path, providers="fastest")
    x = _inputs(7, 2)
    assert rel_l2(ex.explain(x, "vanilla", [0, 1]), on_ort.explain(x, "vanilla", [0, 1])) <= 1e-4
    assert ex.providers in ([runtime.OPENVINO], [runtime.CPU])
    (chooser,) = [g.session for g in ex._runner._graphs.values() if g.session is not None]
    assert set(chooser.seconds) == {"onnxruntime", runtime.OPENVINO}
    assert chooser.chosen.get_providers() == ex.providers
    again = ex.explain(x, "vanilla", [0, 1])  # the chosen runtime alone from now on
    assert rel_l2(again, on_ort.explain(x, "vanilla", [0, 1])) <= 1e-4


def _assert_fastest_stays_on_onnxruntime(exported) -> None:
    _, path, on_ort = exported("vgg", "dynamo")
    ex = onnxsal.Explainer(path, providers="fastest")
    x = _inputs(8, 2)
    assert rel_l2(ex.explain(x, "vanilla", [0, 1]), on_ort.explain(x, "vanilla", [0, 1])) <= 1e-4
    assert ex.providers == [runtime.CPU]


def test_fastest_stays_on_onnxruntime_when_openvino_cannot_read_the_graph(exported, monkeypatch):
    from onnxsal import openvino_runtime

    def refuse(self, feed):
        raise onnxsal.UnsupportedModelError("OpenVINO cannot run this graph (test)")

    monkeypatch.setattr(openvino_runtime.Session, "_compile", refuse)
    _assert_fastest_stays_on_onnxruntime(exported)


def test_fastest_never_takes_a_runtime_whose_maps_disagree(exported, monkeypatch):
    """However fast, OpenVINO does not take a graph whose outputs differ from onnxruntime's
    (it sizes some ceil_mode pools differently)."""
    from onnxsal import fastest_runtime, openvino_runtime

    real = openvino_runtime.Session.run

    def off(self, names, feed):
        return [v * 2 if v.dtype.kind == "f" else v for v in real(self, names, feed)]

    monkeypatch.setattr(openvino_runtime.Session, "run", off)
    monkeypatch.setattr(fastest_runtime, "MARGIN", -1e9)  # any time counts as faster
    _assert_fastest_stays_on_onnxruntime(exported)


def test_an_openvino_run_error_is_one_readable_line(exported, monkeypatch):
    from onnxsal import openvino_runtime

    def fail(feed):
        raise RuntimeError(
            "Exception from src/inference/src/cpp/infer_request.cpp:224:\n"
            "Check 'x' failed at src/plugins/intel_cpu/src/node.cpp:1:\n"
            "The input shape does not fit the kernel\n"
        )

    _, path, _ = exported("vgg", "dynamo")
    ex = onnxsal.Explainer(path, providers="openvino")
    monkeypatch.setattr(openvino_runtime.Session, "_compile", lambda self, feed: fail)
    with pytest.raises(onnxsal.InputError, match=r"OpenVINO could not run.*does not fit"):
        ex.explain(_inputs(10, 1), "vanilla", [0])


@pytest.mark.parametrize("name", ["openvino", "fastest"])
def test_whole_graph_runtimes_are_given_alone(exported, name):
    _, path, _ = exported("vgg", "dynamo")
    with pytest.raises(onnxsal.OptionError, match="alone"):
        onnxsal.Explainer(path, providers=[name, "CPUExecutionProvider"])
    with pytest.raises(onnxsal.OptionError, match="without options"):
        onnxsal.Explainer(path, providers=[(name, {"device": "GPU"})])


@settings(max_examples=80, deadline=None)
@given(
    case=pool_cases(max_rank=2),
    seed=seeds,
    ties=st.booleans(),
    special=st.sampled_from([None, -np.inf, np.inf]),
)
def test_max_pool_indices_lowered_for_openvino_equal_onnxruntimes(case, seed, ties, special):
    """OpenVINO gets MaxPool's Indices from standard ops; onnxruntime's own kernel is the
    oracle: the same first maximum in every window, ties everywhere or not, windows of
    -inf next to the padding, +inf. (NaN is left out: onnxruntime's own two MaxPool
    kernels, with and without Indices, disagree on it.)"""
    import onnx
    from onnx import TensorProto, helper

    from onnxsal.openvino_runtime import _max_pool_indices_lowered
    from tests.support import ORT_IR_VERSION, run

    r, k, s, d, pads, size, ceil = case
    assume(r == 2)
    x = np.random.default_rng(seed).standard_normal((2, 3, *size)).astype(np.float32)
    if ties:
        x = np.round(np.maximum(x, 0))
    if special is not None:
        x[np.random.default_rng(seed + 1).random(x.shape) < 0.3] = special
    attrs = {"kernel_shape": k, "strides": s, "dilations": d, "pads": pads, "ceil_mode": ceil}
    node = helper.make_node("MaxPool", ["x"], ["y", "i"], **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("i", TensorProto.INT64, None),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = ORT_IR_VERSION
    try:
        want = run(model, {"x": x})
    except Exception:
        assume(False)  # a configuration onnxruntime refuses
    lowered = _max_pool_indices_lowered(onnx.ModelProto.FromString(model.SerializeToString()))
    assert [n.op_type for n in lowered.graph.node].count("MaxPool") == 1
    got = run(lowered, {"x": x})
    lowest = np.finfo(np.float32).min  # onnxruntime's pool without Indices gives it for -inf
    np.testing.assert_array_equal(np.maximum(got[0], lowest), np.maximum(want[0], lowest))
    np.testing.assert_array_equal(got[1], want[1])
    if not ceil:  # OpenVINO itself: ceil_mode pools are refused (it sizes them differently)
        from onnxsal.openvino_runtime import Session

        on_ov = Session(model.SerializeToString()).run(["i"], {"x": x})[0]
        np.testing.assert_array_equal(on_ov, want[1])


@pytest.mark.parametrize("providers", [[{}], [("CPUExecutionProvider", {}), 3]])
def test_providers_that_are_not_names_are_one_clear_error(providers):
    with pytest.raises(onnxsal.OptionError, match="name"):
        runtime.resolve_providers(providers)


def test_openvino_refuses_ceil_mode_pools_and_fastest_stays_on_onnxruntime(tmp_path):
    import onnx
    import torch

    from tests.architectures import export

    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.MaxPool2d((3, 1), (2, 2), ceil_mode=True),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 5),
    )
    path = tmp_path / "ceil.onnx"
    export(net.eval(), torch.randn(2, 3, 14, 14), str(path), dynamo=False, opset=17)
    assert any(a.name == "ceil_mode" for n in onnx.load(path).graph.node for a in n.attribute)
    x = np.random.default_rng(0).standard_normal((2, 3, 14, 14)).astype(np.float32)
    with pytest.raises(onnxsal.UnsupportedModelError, match="ceil_mode"):
        onnxsal.Explainer(path, providers="openvino").explain(x, "vanilla", [0, 1])
    fastest = onnxsal.Explainer(path, providers="fastest")
    want = onnxsal.Explainer(path).explain(x, "vanilla", [0, 1])
    assert rel_l2(fastest.explain(x, "vanilla", [0, 1]), want) <= 1e-5
    assert fastest.providers == [runtime.CPU]


def test_a_window_of_only_minus_inf_beside_the_padding_routes_to_its_first_pixel():
    """The padding (also -inf) comes first in such a window; onnxruntime and torch take the
    first real pixel, and so must the lowering (a negative index would land in another
    sample)."""
    import onnx
    from onnx import TensorProto, helper

    from onnxsal.openvino_runtime import Session, _max_pool_indices_lowered
    from tests.support import ORT_IR_VERSION, run

    x = np.random.default_rng(0).standard_normal((2, 2, 5, 5)).astype(np.float32)
    x[1, 1, :2, :2] = -np.inf  # the top-left window of the last plane, beside the padding
    node = helper.make_node(
        "MaxPool", ["x"], ["y", "i"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2, 5, 5])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("i", TensorProto.INT64, None),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = ORT_IR_VERSION
    want = run(model, {"x": x})[1]
    assert want[1, 1, 0, 0] == 3 * 25  # plane 3's first pixel
    lowered = _max_pool_indices_lowered(onnx.ModelProto.FromString(model.SerializeToString()))
    np.testing.assert_array_equal(run(lowered, {"x": x})[1], want)
    np.testing.assert_array_equal(Session(model.SerializeToString()).run(["i"], {"x": x})[0], want)


def test_fastest_judges_each_new_shape_and_falls_back_for_good(exported, monkeypatch):
    """OpenVINO chosen on one batch shape, wrong on the next: onnxruntime's map comes back
    and onnxruntime keeps the graph."""
    from onnxsal import fastest_runtime, openvino_runtime

    monkeypatch.setattr(fastest_runtime, "MARGIN", -1e9)  # OpenVINO wins the timing
    real = openvino_runtime.Session.run

    def wrong_on_batch_one(self, names, feed):
        out = real(self, names, feed)
        first = next(iter(feed.values()))
        return [v * 2 if v.dtype.kind == "f" and len(first) == 1 else v for v in out]

    monkeypatch.setattr(openvino_runtime.Session, "run", wrong_on_batch_one)
    _, path, on_ort = exported("vgg", "dynamo")
    ex = onnxsal.Explainer(path, providers="fastest")
    x = _inputs(11, 3)
    assert (
        rel_l2(ex.explain(x[:2], "vanilla", [0, 1]), on_ort.explain(x[:2], "vanilla", [0, 1]))
        <= 1e-4
    )
    assert ex.providers == [runtime.OPENVINO]
    assert rel_l2(ex.explain(x[2:], "vanilla", [2]), on_ort.explain(x[2:], "vanilla", [2])) <= 1e-4
    assert ex.providers == [runtime.CPU]


@pytest.mark.parametrize(
    "got, want, alike",
    [
        ([np.array([1.0, np.inf], np.float32)], [np.array([1.0, np.inf], np.float32)], True),
        ([np.array([1e30, 5.0], np.float32)], [np.array([1.0, np.inf], np.float32)], False),
        ([np.array([1.0, np.nan], np.float32)], [np.array([1.0, np.inf], np.float32)], False),
        ([np.array([1.0, -np.inf], np.float32)], [np.array([1.0, np.inf], np.float32)], False),
        ([np.array([1.0, 2.0], np.float32)], [np.array([1.0, np.nan], np.float32)], False),
        ([np.array([1.0, 2.0], np.float32)], [np.array([1.0, 2.0], np.float64)], False),
        ([np.array([1, 2])], [np.array([1, 2]), np.array([3])], False),
        ([np.array([1.0, 2.0001], np.float32)], [np.array([1.0, 2.0], np.float32)], True),
        ([np.array([3, 4])], [np.array([3, 5])], False),
    ],
)
def test_fastest_agreement_is_strict_where_it_matters(got, want, alike):
    from onnxsal.fastest_runtime import _agree

    assert _agree(got, want) is alike
