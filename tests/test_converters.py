"""Converters: PyTorch and Keras (both backends) exports, verification, metadata, layer names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import onnxsal
from onnxsal import metadata
from onnxsal.cli import main as cli
from onnxsal.converters import ConversionError, from_torch, torch_export
from onnxsal.converters.common import need
from tests.support import rel_l2

ROOT = Path(__file__).resolve().parent.parent


def small_cnn():
    """Conv / BatchNorm / MaxPool / Dense / softmax, as the issue asks."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, 5),
        nn.Softmax(dim=1),
    )
    net[1].running_mean.uniform_(-0.5, 0.5)
    net[1].running_var.uniform_(0.5, 2.0)
    return net.eval()


def _vanilla_torch(net, x, target):
    logits = net[:-1].double()
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    logits(xt)[torch.arange(len(x)), torch.tensor(target)].sum().backward()
    net.float()
    return xt.grad.numpy()


def _unit_gradient(net, module, x, unit):
    net = net.double()
    seen = {}
    handle = module.register_forward_hook(lambda m, i, o: seen.__setitem__("o", o))
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    net(xt)
    handle.remove()
    seen["o"][:, unit].mean((1, 2)).sum().backward()
    net.float()
    return xt.grad.numpy()


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_torch_export_is_verified_annotated_and_explainable(tmp_path, exporter):
    net = small_cnn()
    path = tmp_path / "cnn.onnx"
    pre = metadata.Preprocess(size=(16, 16), mean=[1.0, 2.0, 3.0], std=[4.0, 5.0, 6.0])
    model = from_torch(
        net, (3, 16, 16), path, exporter=exporter, preprocess=pre, labels=list("abcde")
    )
    assert path.exists() and not list(tmp_path.glob("*.data"))
    back = onnx.load(path)
    md = metadata.read(back)
    assert md["schema"] == "1" and md["layout"] == "NCHW"
    assert md["source"]["framework"] == "torch" and exporter in md["source"]["exporter"].lower()
    assert md["verified"]["batches"] == [2, 3] and md["verified"]["rel_l2"] < 1e-5
    assert metadata.labels(back) == list("abcde")
    assert metadata.preprocess(back) == pre
    assert {"1", "2", "3", "5", "7"} <= set(md["layers"])  # BN "1" folded or not, it maps
    ex = onnxsal.Explainer(path)
    assert ex.labels == list("abcde") and ex.preprocess == pre
    assert isinstance(model, onnx.ModelProto)
    x = np.random.default_rng(0).standard_normal((5, 3, 16, 16)).astype(np.float32)
    assert (
        rel_l2(ex.explain(x, "vanilla", [0, 1, 2, 3, 4]), _vanilla_torch(net, x, [0, 1, 2, 3, 4]))
        < 1e-5
    )
    # friendly names: the torch module name reaches the module's output tensor
    layer_grad = _unit_gradient(net, net[5], x, 2)
    assert rel_l2(ex.explain(x, layer="5", unit=2), layer_grad) < 1e-5


def test_a_wrong_export_fails_loudly_and_writes_nothing(tmp_path, monkeypatch):
    real = torch_export._export

    def corrupt(module, example, path, dynamo, opset):
        real(module, example, path, dynamo, opset)
        m = onnx.load(path)
        for init in m.graph.initializer:
            if len(init.dims) == 4:  # a convolution kernel
                arr = onnx.numpy_helper.to_array(init) * 1.01
                init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
                break
        onnx.save(m, path)

    monkeypatch.setattr(torch_export, "_export", corrupt)
    path = tmp_path / "bad.onnx"
    with pytest.raises(ConversionError, match="disagrees with the framework"):
        from_torch(small_cnn(), (3, 16, 16), path, exporter="dynamo")
    assert not path.exists() and not list(tmp_path.iterdir())


def test_auto_falls_back_to_torchscript(tmp_path, monkeypatch):
    real = torch_export._export

    def no_dynamo(module, example, path, dynamo, opset):
        if dynamo:
            raise RuntimeError("dynamo cannot trace this model")
        real(module, example, path, dynamo, opset)

    monkeypatch.setattr(torch_export, "_export", no_dynamo)
    with pytest.warns(UserWarning, match="dynamo cannot trace"):
        model = from_torch(small_cnn(), (3, 16, 16), tmp_path / "m.onnx")
    assert "TorchScript" in metadata.read(model)["source"]["exporter"]


def test_exported_program_source():
    net = small_cnn()
    program = torch.export.export(
        net, (torch.zeros(2, 3, 16, 16),), dynamic_shapes=({0: torch.export.Dim("n", min=1)},)
    )
    model = from_torch(program, (3, 16, 16))
    assert metadata.read(model)["verified"]["rel_l2"] < 1e-5


def test_missing_framework_names_the_extra():
    with pytest.raises(ConversionError, match=r"onnxsal\[keras\]"):
        need("a_framework_that_is_not_installed", "keras")


def test_torchscript_file_and_cli(tmp_path):
    net = small_cnn()
    scripted = torch.jit.trace(net, torch.zeros(1, 3, 16, 16))
    ts = tmp_path / "net.pt"
    torch.jit.save(scripted, str(ts))
    out = tmp_path / "from_ts.onnx"
    result = CliRunner().invoke(
        cli,
        [
            "convert",
            "torch",
            str(ts),
            "--input-shape",
            "3,16,16",
            "-o",
            str(out),
            "--size",
            "16,16",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and out.exists()
    assert metadata.preprocess(onnx.load(out)).size == (16, 16)
    missing = CliRunner().invoke(
        cli,
        [
            "convert",
            "torch",
            "nope.module:fn",
            "--input-shape",
            "3,16,16",
            "-o",
            str(tmp_path / "x.onnx"),
        ],
    )
    assert missing.exit_code == 2 and "cannot import" in missing.output


QUIET_EXPORT = """
import sys, torch
from onnxsal.converters import from_torch
net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten()).eval()
from_torch(net, (3, 8, 8), sys.argv[1], exporter="dynamo")
"""


def test_a_successful_export_prints_nothing(tmp_path):
    """The exporter's own log lines ("torchvision is not installed...") stay out of the
    user's terminal (a fresh process: torch logs them on its first export only)."""
    done = subprocess.run(
        [sys.executable, "-c", QUIET_EXPORT, str(tmp_path / "net.onnx")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "net.onnx").exists()
    assert done.stdout == "" and done.stderr == ""


def test_cli_module_callable(tmp_path, monkeypatch):
    (tmp_path / "mynets.py").write_text(
        "from tests.test_converters import small_cnn\n\ndef build():\n    return small_cnn()\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(
        cli, ["convert", "torch", "mynets:build", "--input-shape", "3,16,16", "-o", str(out), "-q"]
    )
    assert result.exit_code == 0, result.output
    assert out.exists() and result.output == ""


@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
def test_keras_converter_under_each_backend(tmp_path, backend):
    """Keras picks its backend once per process: each backend runs in a subprocess."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-m", "tests.keras_check", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["backend"] == backend
    for name in ("object", "keras_file", "h5_file", "nchw"):
        r = report[name]
        assert r["written"] and not r["sidecar"]
        assert r["source"]["framework"] == "keras" and r["source"]["backend"] == backend
        assert r["source"]["exporter"] == (
            "tf2onnx" if backend == "tensorflow" else "keras export (torch)"
        )
        assert r["verified"]["batches"] == [2, 3] and r["verified"]["rel_l2"] < 1e-5
        assert r["labels"] == list("abcde")
        assert {"relu1", "pool1", "logits"} <= set(r["layers"])
        assert r["rel_l2_vs_framework"] < 1e-4  # onnxsal's gradient = the backend's autodiff
        assert r["input_shape"][0] == "sym"
    assert report["object"]["layout"] == report["object"]["ex_layout"] == "NHWC"
    assert report["nchw"]["layout"] == report["nchw"]["ex_layout"] == "NCHW"
    assert report["nchw"]["input_shape"] == ["sym", 3, 16, 16]
    assert report["listed"]["structure_warnings"] == []
    assert {"relu1", "pool1", "logits"} <= set(report["listed"]["layers"])
