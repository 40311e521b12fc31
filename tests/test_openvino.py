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


def test_fastest_stays_on_onnxruntime_when_openvino_cannot_read_the_graph(exported, monkeypatch):
    from onnxsal import openvino_runtime

    def refuse(self, feed):
        raise onnxsal.UnsupportedModelError("OpenVINO cannot run this graph (test)")

    monkeypatch.setattr(openvino_runtime.Session, "_compile", refuse)
    _, path, on_ort = exported("vgg", "dynamo")
    ex = onnxsal.Explainer(path, providers="fastest")
    x = _inputs(8, 2)
    assert rel_l2(ex.explain(x, "vanilla", [0, 1]), on_ort.explain(x, "vanilla", [0, 1])) <= 1e-4
    assert ex.providers == [runtime.CPU]


def test_fastest_never_takes_a_runtime_whose_maps_disagree(exported, monkeypatch):
    """However fast, OpenVINO does not take a graph whose outputs differ from onnxruntime's
    (it sizes some ceil_mode pools differently)."""
    from onnxsal import fastest_runtime, openvino_runtime

    real = openvino_runtime.Session.run

    def off(self, names, feed):
        return [v * 2 if v.dtype.kind == "f" else v for v in real(self, names, feed)]

    monkeypatch.setattr(openvino_runtime.Session, "run", off)
    monkeypatch.setattr(fastest_runtime, "MARGIN", -1e9)  # any time counts as faster
    _, path, on_ort = exported("vgg", "dynamo")
    ex = onnxsal.Explainer(path, providers="fastest")
    x = _inputs(9, 2)
    assert rel_l2(ex.explain(x, "vanilla", [0, 1]), on_ort.explain(x, "vanilla", [0, 1])) <= 1e-4
    assert ex.providers == [runtime.CPU]


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


@settings(max_examples=60, deadline=None)
@given(case=pool_cases(max_rank=2), seed=seeds, ties=st.booleans())
def test_max_pool_indices_lowered_for_openvino_equal_onnxruntimes(case, seed, ties):
    """OpenVINO gets MaxPool's Indices from standard ops; onnxruntime's own kernel is the
    oracle: the same first maximum in every window, ties everywhere or not."""
    import onnx
    from onnx import TensorProto, helper

    from onnxsal.openvino_runtime import _max_pool_indices_lowered
    from tests.support import ORT_IR_VERSION, run

    r, k, s, d, pads, size, ceil = case
    assume(r == 2)
    x = np.random.default_rng(seed).standard_normal((2, 3, *size)).astype(np.float32)
    if ties:
        x = np.round(np.maximum(x, 0))
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
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("providers", [[{}], [("CPUExecutionProvider", {}), 3]])
def test_providers_that_are_not_names_are_one_clear_error(providers):
    with pytest.raises(onnxsal.OptionError, match="name"):
        runtime.resolve_providers(providers)
