"""The model zoo: offline models, the digits twins, EfficientNet-Lite0 from a cold cache."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from PIL import Image

import onnxsal
from onnxsal.cli import main as cli
from onnxsal.models import ZOO, locate
from onnxsal.models.digits_recipe import dataset


@pytest.fixture(scope="module")
def digits():
    _, _, x, y = dataset()
    return x, y


@pytest.mark.parametrize(("name", "layout"), [("digits-cnn", "NCHW"), ("digits-cnn-keras", "NHWC")])
def test_digits_twins_are_accurate(digits, name, layout):
    x, y = digits
    ex = onnxsal.Explainer(name)
    assert ex.layout == layout and ex.labels == [str(d) for d in range(10)]
    xin = x[:, None] if layout == "NCHW" else x[..., None]
    accuracy = (ex.predict(xin, batch_size=256).argmax(1) == y).mean()
    assert accuracy >= 0.97


@pytest.mark.parametrize("method", ["vanilla", "guided", "deconv"])
def test_twins_give_the_same_maps(digits, method):
    x, _ = digits
    result = onnxsal.compare("digits-cnn", "digits-cnn-keras", x[:16, None], method)
    assert result.same.all(), result.table()
    assert (result.rel_l2 <= 1e-4).all() and (result.spearman > 0.999).all()
    assert (result.topk_overlap > 0.95).all()


def test_a_perturbed_twin_is_reported_different(digits, tmp_path):
    x, _ = digits
    model = onnx.load(locate("digits-cnn-keras"))
    for init in model.graph.initializer:
        arr = onnx.numpy_helper.to_array(init)
        if arr.ndim == 4:  # nudge the first convolution kernel by 5%
            rng = np.random.default_rng(0)
            arr = arr * (1 + 0.05 * rng.standard_normal(arr.shape)).astype(arr.dtype)
            init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
            break
    result = onnxsal.compare("digits-cnn", model, x[:8, None], "vanilla")
    assert not result.same.any()
    assert (result.rel_l2 > 1e-2).all()
    assert "NO" in result.table()


def test_efficientnet_lite0_from_a_cold_cache_knows_the_cat(tmp_path, monkeypatch):
    from skimage import data

    monkeypatch.setenv("ONNXSAL_CACHE", str(tmp_path))
    ex = onnxsal.Explainer("efficientnet-lite0")
    assert list(tmp_path.glob("efficientnet-lite0*.onnx"))
    assert ex.preprocess.size == (224, 224) and ex.preprocess.resize == "bicubic"
    x = ex.preprocess(Image.fromarray(data.chelsea()))
    top = int(ex.predict(x).argmax())
    assert 281 <= top <= 285 and "cat" in ex.labels[top]
    assert ex.metadata["source"]["framework"] == "torch"
    assert {"_blocks.15", "_bn1"} <= set(ex.metadata["layers"])  # _conv_head: BN folded into it


def test_models_command_and_unknown_names():
    result = CliRunner().invoke(cli, ["models"])
    assert result.exit_code == 0
    for name in ZOO:
        assert name in result.output
    with pytest.raises(onnxsal.ModelLoadError, match="efficientnet-lite0"):
        onnxsal.Explainer("efficientnet-lite7")
