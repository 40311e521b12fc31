"""onnxsal.evaluate against oracles: Quantus 0.6.0 on the same maps, the RISE authors'
deletion/insertion protocol written out here from its definition, the randomisation
protocol observed step by step, and the metrics' refusals.

The models are small torch CNNs exported here; every oracle runs the torch twin (or
Quantus on it) while onnxsal runs the ONNX export on onnxruntime.
"""

from __future__ import annotations

import importlib
import io
import re
import warnings

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import onnxsal
from onnxsal.errors import InputError, OnnxsalError, OptionError, TargetError
from onnxsal.evaluate import (
    Positions,
    complexity,
    deletion,
    insertion,
    max_sensitivity,
    random_maps,
    randomization,
    relevance,
    road,
    sparseness,
)
from onnxsal.evaluate.randomization import redrawn, weighted_layers
from onnxsal.evaluate.road import impute
from onnxsal.evaluate.similarity import spearman_abs
from onnxsal.explainer import Explainer
from tests.architectures import export

quantus = pytest.importorskip("quantus")
# the modules (the package exports functions of the same names)
randomization_module = importlib.import_module("onnxsal.evaluate.randomization")
road_module = importlib.import_module("onnxsal.evaluate.road")


# -- models ------------------------------------------------------------------------------


class Net(nn.Module):
    """Conv-ReLU-pool twice, then two Linear layers: 10 logits."""

    def __init__(self, channels: int, size: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * (size // 4) ** 2, 32), nn.ReLU(), nn.Linear(32, 10)
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class ChannelsLast(nn.Module):
    """The same network taking N, H, W, C images."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x.permute(0, 3, 1, 2))


def _net(channels: int, size: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = Net(channels, size).eval()
    with torch.no_grad():  # biases away from zero, so that zeroing them is visible
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.bias.uniform_(-0.3, 0.3)
        net.classifier[-1].weight.mul_(8.0)  # confident enough that removals move it
    return net


def _onnx_bytes(net: nn.Module, example: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (example,),
            buffer,
            dynamo=False,
            opset_version=13,
            input_names=["input"],
            dynamic_axes={"input": {0: "batch"}},
        )
    return buffer.getvalue()


@pytest.fixture(scope="module")
def rgb(tmp_path_factory):
    """(torch net, ONNX path, Explainer) of a 3 x 32 x 32 classifier."""
    net = _net(3, 32, seed=0)
    path = str(tmp_path_factory.mktemp("evaluate") / "rgb.onnx")
    export(net, torch.randn(2, 3, 32, 32), path, dynamo=False, opset=13)
    return net, path, Explainer(path)


@pytest.fixture(scope="module")
def rgb_last(rgb, tmp_path_factory):
    """The same classifier taking N, H, W, C."""
    net = ChannelsLast(rgb[0]).eval()
    path = str(tmp_path_factory.mktemp("evaluate") / "rgb_last.onnx")
    export(net, torch.randn(2, 32, 32, 3), path, dynamo=False, opset=13)
    return net, path, Explainer(path)


@pytest.fixture(scope="module")
def grey(tmp_path_factory):
    """A 1 x 20 x 20 classifier (20 x 20 = 400 pixels: 400 * 0.29 is not 116 in floats)."""
    net = _net(1, 20, seed=1)
    path = str(tmp_path_factory.mktemp("evaluate") / "grey.onnx")
    export(net, torch.randn(2, 1, 20, 20), path, dynamo=False, opset=13)
    return net, path, Explainer(path)


def _images(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Smooth random images (imputation and blur act on structure, not white noise)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    raw = rng.standard_normal((n, *shape))
    smooth = np.stack([[gaussian_filter(c, 1.5) for c in img] for img in raw])
    return (2.0 * smooth / smooth.std()).astype(np.float32)


# -- 1. Quantus on the same maps ---------------------------------------------------------


def _vanilla_maps(ex: Explainer, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(raw signed gradients, |gradient| summed over channels per pixel)."""
    a = ex.explain(x, "vanilla")
    return a, relevance(a, Positions.of(x, ex.layout), signed=False)


def test_sparseness_and_complexity_equal_quantus_one_sample_at_a_time(rgb):
    _, _, ex = rgb
    x = _images(4, (3, 32, 32), seed=2)
    y = ex.predict(x).argmax(1)
    raw, per_pixel = _vanilla_maps(ex, x)
    # signed maps (Quantus takes |a|) and relevance per pixel, in float64 on both sides
    # (Quantus computes in the map's dtype: float32 maps differ by its float32 rounding)
    for maps in (raw.astype(np.float64), per_pixel[:, None]):
        ours_s, ours_c = sparseness(maps), complexity(maps)
        theirs_s, theirs_c = [], []
        for i in range(len(x)):  # Quantus normalises by the whole batch's max: one at a time
            kw = dict(model=None, x_batch=x[i : i + 1], y_batch=y[i : i + 1])
            one = maps[i : i + 1]
            theirs_s += quantus.Sparseness(disable_warnings=True)(a_batch=one.copy(), **kw)
            theirs_c += quantus.Complexity(disable_warnings=True)(a_batch=one.copy(), **kw)
        print(
            f"sparseness/complexity |ours - quantus| "
            f"{np.abs(ours_s - theirs_s).max():.1e} {np.abs(ours_c - theirs_c).max():.1e}"
        )
        np.testing.assert_allclose(ours_s, theirs_s, rtol=1e-12)
        np.testing.assert_allclose(ours_c, theirs_c, rtol=1e-12)
    # per-sample normalisation: a sample's score does not depend on the others
    np.testing.assert_allclose(sparseness(per_pixel[1:2]), sparseness(per_pixel)[1:2], rtol=1e-14)
    assert np.ptp(sparseness(per_pixel)) > 1e-3  # the samples differ: the check can fail


def _captum_gradient(model, inputs, targets, **kwargs) -> np.ndarray:
    from captum.attr import Saliency

    xt = torch.as_tensor(np.asarray(inputs), dtype=torch.float32).requires_grad_()
    target = torch.as_tensor(np.asarray(targets), dtype=torch.int64)
    return Saliency(model).attribute(xt, target=target, abs=False).detach().numpy()


def test_max_sensitivity_equals_quantus_on_the_same_draws(rgb):
    net, _, ex = rgb
    x = _images(3, (3, 32, 32), seed=3)
    y = ex.predict(x).argmax(1)
    n_samples = 10
    draws = np.random.default_rng(4).uniform(-0.2, 0.2, (n_samples, *x.shape))
    used = []

    def our_draws(arr, indices, **kwargs):  # Quantus's step j adds draw j to the batch
        step = len(used)
        used.append(step)
        return arr + draws[step].reshape(arr.shape)

    metric = quantus.MaxSensitivity(
        nr_samples=n_samples, perturb_func=our_draws, disable_warnings=True
    )
    theirs = np.asarray(
        metric(model=net, x_batch=x, y_batch=y, explain_func=_captum_gradient, device="cpu")
    )
    assert len(used) == n_samples
    ours = max_sensitivity(ex, x, "vanilla", n_samples=n_samples, noise=draws)
    print("max-sensitivity ours", ours, "quantus", theirs, "rel", np.abs(ours / theirs - 1))
    assert np.isfinite(ours).all() and (ours > 0.05).all()
    # Both sides take float32 gradients (onnxruntime here, torch autograd there) of the same
    # float32 inputs, so each gradient carries float32 rounding (~1e-7 relative, a few ulps
    # summed over a short chain); the ratio's numerator is a difference of gradients about
    # `ratio` times smaller than them (0.5-0.8 here), so its error is ~1e-7 / ratio relative.
    # 1e-5 leaves headroom of ~50x over that; a wrong draw, class or norm moves it by >1e-2.
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)


ROAD_PERCENTAGES = [5, 20, 29, 40, 57, 58, 69, 80]


def test_road_morf_kept_equals_quantus_road_on_a_one_channel_model(grey, monkeypatch):
    net, _, ex = grey
    x = np.random.default_rng(5).standard_normal((6, 1, 20, 20)).astype(np.float32)
    y = ex.predict(x).argmax(1)
    maps = _vanilla_maps(ex, x)[1][:, None]  # |gradient|: removing it moves the class
    assert all(len(np.unique(m)) == m.size for m in maps)  # no ties: one order for both
    theirs, their_counts = [], []

    def spy(arr, indices, **kwargs):
        their_counts.append(len(indices))
        return quantus.functions.perturb_func.noisy_linear_imputation(arr, indices, **kwargs)

    for i in range(len(x)):  # Quantus reports the batch's accuracy: one sample at a time
        metric = quantus.ROAD(
            noise=0.0, percentages=ROAD_PERCENTAGES, perturb_func=spy, disable_warnings=True
        )
        scores = metric(
            model=net, x_batch=x[i : i + 1], y_batch=y[i : i + 1], a_batch=maps[i : i + 1]
        )
        theirs.append([scores[p] for p in ROAD_PERCENTAGES])
    our_counts = []
    real_impute = road_module.impute

    def counting(sample, removed, *args, **kwargs):
        our_counts.append(int(removed.sum()))
        return real_impute(sample, removed, *args, **kwargs)

    monkeypatch.setattr(road_module, "impute", counting)
    shares = tuple(p / 100 for p in ROAD_PERCENTAGES)
    result = road(ex, x, maps, noise=0.0, shares=shares)
    k = len(shares)
    morf_counts = [c for i in range(len(x)) for c in our_counts[2 * k * i : 2 * k * i + k]]
    assert morf_counts == their_counts  # the top floor(P * p / 100) pixels, as Quantus
    theirs = np.array(theirs) == 1
    assert (result.morf_kept == theirs).all(), (result.morf_kept, theirs)
    assert theirs.any() and not theirs.all()  # the top class both kept and lost: can fail


def test_impute_equals_quantus_noisy_linear_imputation():
    rng = np.random.default_rng(7)
    positions = Positions((3, 17, 23), 0)
    for density in (0.1, 0.5, 0.9):
        sample = rng.standard_normal((3, 17, 23)).astype(np.float32)
        removed = rng.random((17, 23)) < density
        removed[0, 0] = removed[-1, -1] = True  # corners: the fewest in-image neighbours
        theirs = quantus.functions.perturb_func.noisy_linear_imputation(
            sample.astype(np.float64), np.flatnonzero(removed), noise=0.0
        )
        ours = impute(sample.astype(np.float64), removed, positions)
        print(f"impute density {density}: max |ours - quantus| {np.abs(ours - theirs).max():.1e}")
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
        assert np.abs(ours - sample)[:, removed].max() > 0.1  # the pixels did change
        np.testing.assert_array_equal(ours[:, ~removed], sample[:, ~removed])
        last = impute(
            sample.transpose(1, 2, 0).astype(np.float64), removed, Positions((17, 23, 3), -1)
        )
        np.testing.assert_allclose(last.transpose(2, 0, 1), theirs, rtol=0, atol=1e-6)


def test_spearman_abs_equals_quantus_mprt_on_its_own_randomised_models(rgb):
    """Quantus randomises the torch layers from the top; its explain_func exports each
    model it is handed to ONNX and returns onnxsal's maps; our similarity on those maps
    must give Quantus's scores."""
    net, _, _ = rgb
    x = _images(3, (3, 32, 32), seed=8)
    handed: list[tuple[int, np.ndarray]] = []

    def onnxsal_maps(model, inputs, targets, **kwargs):
        ex = Explainer(_onnx_bytes(model, torch.as_tensor(np.asarray(inputs)[:1])))
        a = ex.explain(np.asarray(inputs, dtype=np.float32), "vanilla", np.asarray(targets))
        handed.append((id(model), a))
        return a

    y = onnxsal.Explainer(_onnx_bytes(net, torch.as_tensor(x[:1]))).predict(x).argmax(1)
    metric = quantus.MPRT(
        similarity_func=quantus.similarity_func.correlation_spearman,
        abs=True,
        layer_order="top_down",
        disable_warnings=True,
    )
    scores = metric(model=net, x_batch=x, y_batch=y, explain_func=onnxsal_maps, device="cpu")
    layers = [name for name in scores if name != "original"]
    assert layers == ["classifier.3", "classifier.1", "features.3", "features.0"]
    original = handed[0][1]
    randomised = [a for _, a in handed[-len(layers) :]]
    for name, maps in zip(layers, randomised):
        ours = [spearman_abs(original[i], maps[i]) for i in range(len(x))]
        print(f"MPRT {name}: quantus {np.round(scores[name], 4)} |diff| "
              f"{np.abs(np.subtract(ours, scores[name])).max():.1e}")  # fmt: skip
        np.testing.assert_allclose(ours, scores[name], rtol=1e-12, atol=1e-12)
    assert np.ptp(np.concatenate([scores[n] for n in layers])) > 0.1  # it varies: can fail


# -- 1b. our randomisation protocol ------------------------------------------------------


def _initializer_names(ex: Explainer, layers: list[str]) -> set[str]:
    by_node = {w.node: w for w in weighted_layers(ex.model)}
    names = set()
    for node in layers:
        w = by_node[node]
        names |= {w.weight} | ({w.bias} if w.bias else set())
    return names


@pytest.mark.parametrize("order", ["cascading", "independent"])
def test_randomisation_protocol_step_by_step(rgb, monkeypatch, order):
    _, path, ex = rgb
    x = _images(2, (3, 32, 32), seed=9)
    graph_order = [w.node for w in weighted_layers(ex.model)]
    drawn, given = [], []
    real_redrawn, real_with = randomization_module.redrawn, Explainer.with_initializers

    def spy_redrawn(explainer, layers, seed, stream):
        out = real_redrawn(explainer, layers, seed, stream)
        drawn.append(({w.node for w in layers}, out))
        return out

    def spy_with(self, values):
        given.append(dict(values))
        return real_with(self, values)

    monkeypatch.setattr(randomization_module, "redrawn", spy_redrawn)
    monkeypatch.setattr(Explainer, "with_initializers", spy_with)
    r = randomization(ex, x, "vanilla", order=order, seed=3)

    # one block per weighted layer here, taken from the output backwards
    assert [r.layers[b] for b in r.blocks] == [[n] for n in graph_order[::-1]]
    assert len(drawn) == len(given) == len(r.blocks) == 4
    inits = ex.model.graph.initializers
    biases = {w.bias for w in weighted_layers(ex.model)} - {None}
    assert len(biases) == 4
    for k, (nodes, values) in enumerate(drawn):
        assert nodes == set(r.layers[r.blocks[k]])
        assert set(values) == _initializer_names(ex, r.layers[r.blocks[k]])
        for name, v in values.items():
            old = inits[name].const_value.numpy()
            if name in biases:
                assert not v.any() and old.any()  # zeroed (they were not zero)
            else:
                assert v.shape == old.shape and not np.allclose(v, old)
        expected = {}
        if order == "cascading":  # every block so far, each keeping its own draw
            for _, earlier in drawn[: k + 1]:
                expected.update(earlier)
        else:  # this block alone; the others keep their trained weights
            expected = values
        assert set(given[k]) == set(expected)
        for name in expected:
            assert given[k][name] is expected[name]

    # the maps are those of the rewritten models: an ONNX file edited here, explained afresh
    proto = onnx.load(path)
    for k, values in enumerate(given):
        edited = onnx.ModelProto()
        edited.CopyFrom(proto)
        for init in edited.graph.initializer:
            if init.name in values:
                init.CopyFrom(onnx.numpy_helper.from_array(values[init.name], init.name))
        a = Explainer(edited).explain(x, "vanilla", r.classes)
        want = relevance(a, Positions.of(x, ex.layout), signed=False)
        np.testing.assert_allclose(r.maps["vanilla"][k + 1], want, rtol=1e-6, atol=1e-9)
    assert r.scores["spearman_abs"].shape == (1, 4, 2)


class Wide(nn.Module):
    """Layers whose fan-in and fan-out differ a lot, as Conv, Gemm and MatMul."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(64, 128, 3)  # 128 x 64 x 3 x 3: fan-in 576, fan-out 1152
        self.fc = nn.Linear(128 * 6 * 6, 64)  # Gemm, transB: fan-in 4608, fan-out 64
        self.w = nn.Parameter(torch.randn(64, 4096) * 0.1)  # MatMul, (in, out): fan-in 64

    def forward(self, x):
        return torch.relu(self.fc(torch.flatten(self.conv(x), 1))) @ self.w


def test_redrawn_weights_are_he_normal_and_biases_zero():
    torch.manual_seed(0)
    ex = Explainer(_onnx_bytes(Wide().eval(), torch.randn(1, 64, 8, 8)))
    found = {w.fan_in: w for w in weighted_layers(ex.model)}
    assert set(found) == {576, 4608, 64}, found
    values = redrawn(ex, list(found.values()), seed=0, stream=0)
    for fan_in, w in found.items():
        v = values[w.weight].astype(np.float64).ravel()
        n, want = v.size, np.sqrt(2.0 / fan_in)
        # sample std of n normal draws: relative standard error 1/sqrt(2(n-1)); mean: std/sqrt(n)
        assert abs(v.std() / want - 1) < 5 / np.sqrt(2 * (n - 1)), (fan_in, v.std(), want)
        assert abs(v.mean()) < 5 * want / np.sqrt(n)
        # and the draws are normal: the share within one std is 68.3% (binomial error)
        share = np.mean(np.abs(v) < want)
        assert abs(share - 0.6827) < 5 * np.sqrt(0.6827 * 0.3173 / n)
        if w.bias is not None:
            assert not values[w.bias].any()
    assert found[576].bias is not None and found[4608].bias is not None
    # another stream, another draw; the same stream, the same draw
    again = redrawn(ex, list(found.values()), seed=0, stream=0)
    other = redrawn(ex, list(found.values()), seed=0, stream=1)
    w = found[576].weight
    assert np.array_equal(values[w], again[w]) and not np.allclose(values[w], other[w])


# -- 2. the RISE authors' deletion and insertion, written out ----------------------------


def _rise_kernel(size: int = 11, sigma: float = 5.0) -> np.ndarray:
    """An impulse in a size x size window smoothed by scipy's Gaussian filter (its
    default reflecting edges), as the RISE authors build their insertion blur."""
    from scipy.ndimage import gaussian_filter

    impulse = np.zeros((size, size))
    impulse[size // 2, size // 2] = 1
    return gaussian_filter(impulse, sigma)


def _rise_blur(img: torch.Tensor) -> torch.Tensor:
    """Each channel convolved with the kernel on its own, zero padding of 5."""
    c = img.shape[1]
    k = torch.zeros(c, c, 11, 11)
    for i in range(c):
        k[i, i] = torch.as_tensor(_rise_kernel(), dtype=torch.float32)
    return nn.functional.conv2d(img, k, padding=5)


def _rise_causal(net, kind, img: np.ndarray, saliency: np.ndarray, step: int) -> tuple:
    """Petsiuk et al.'s CausalMetric on one image (1, C, H, W): (scores, auc)."""
    model = nn.Sequential(net, nn.Softmax(dim=1))
    x = torch.as_tensor(img)
    hw = img.shape[2] * img.shape[3]
    with torch.no_grad():
        c = int(model(x).argmax(1))
        n_steps = (hw + step - 1) // step
        if kind == "deletion":
            start, finish = x.clone(), torch.zeros_like(x)
        else:
            start, finish = _rise_blur(x), x.clone()
        order = np.flip(np.argsort(saliency.reshape(-1, hw), axis=1), axis=-1)
        scores = np.empty(n_steps + 1)
        for i in range(n_steps + 1):
            scores[i] = float(model(start)[0, c])
            if i < n_steps:
                coords = torch.as_tensor(order[:, step * i : step * (i + 1)].copy())
                flat_start = start.reshape(1, img.shape[1], hw)
                flat_finish = finish.reshape(1, img.shape[1], hw)
                flat_start[0, :, coords] = flat_finish[0, :, coords]
    auc = (scores.sum() - scores[0] / 2 - scores[-1] / 2) / (len(scores) - 1)
    return scores, auc


@pytest.mark.parametrize("steps", [10, 7, 64])
def test_deletion_and_insertion_equal_the_rise_authors_protocol(rgb, rgb_last, steps):
    net, _, ex = rgb
    x = _images(3, (3, 32, 32), seed=10)
    positions = Positions.of(x, ex.layout)
    maps = random_maps(len(x), positions, seed=11)  # tie-free
    hw = positions.size
    step = -(-hw // steps)
    assert (hw % step != 0) == (steps != 64)  # partial last step (10: 103 px a step, then 97)
    last_layout = x.transpose(0, 2, 3, 1)
    for kind, ours in (
        ("deletion", deletion(ex, x, maps, steps=steps)),
        ("insertion", insertion(ex, x, maps, steps=steps)),
    ):
        theirs = [_rise_causal(net, kind, x[i : i + 1], maps[i], step) for i in range(len(x))]
        curves = np.stack([s for s, _ in theirs])
        assert ours.scores.shape == curves.shape == (len(x), -(-hw // step) + 1)
        np.testing.assert_allclose(ours.scores, curves, rtol=0, atol=1e-6)
        np.testing.assert_allclose(ours.auc, [a for _, a in theirs], rtol=0, atol=1e-6)
        assert np.ptp(curves) > 0.05  # the probabilities move: the comparison can fail
        # the channels-last twin removes the same pixels and blurs the same way
        fn = deletion if kind == "deletion" else insertion
        again = fn(rgb_last[2], last_layout, maps, steps=steps)
        np.testing.assert_allclose(again.auc, ours.auc, rtol=0, atol=1e-6)
    print(f"steps={steps}: max |auc - RISE| {np.abs(ours.auc - [a for _, a in theirs]).max():.1e}")


def test_road_is_the_same_on_a_channels_last_twin(rgb, rgb_last):
    x = _images(2, (3, 32, 32), seed=12)
    maps = random_maps(len(x), Positions.of(x, "NCHW"), seed=13)
    first = road(rgb[2], x, maps, noise=0.0, shares=(0.2, 0.5))
    last = road(rgb_last[2], x.transpose(0, 2, 3, 1), maps, noise=0.0, shares=(0.2, 0.5))
    np.testing.assert_allclose(last.morf, first.morf, atol=1e-6)
    np.testing.assert_allclose(last.lerf, first.lerf, atol=1e-6)


# -- 3. unhappy paths --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tabular():
    """A model on (N, 16) vectors: no pixels to impute or blur."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    return Explainer(_onnx_bytes(net, torch.randn(1, 16)))


def _refused(error, match, call) -> str:
    with pytest.raises(error, match=match) as info:
        call()
    assert isinstance(info.value, OnnxsalError)
    message = str(info.value)
    assert "\n" not in message.strip() and len(message) < 300, message
    return message


def test_metrics_refuse_wrong_input_in_one_line(rgb, tabular):
    _, _, ex = rgb
    x = _images(2, (3, 32, 32), seed=14)
    positions = Positions.of(x, ex.layout)
    maps = random_maps(2, positions)
    v, flat = np.ones((2, 16), np.float32), np.random.default_rng(0).random((2, 16))
    d, i, r = deletion, insertion, road
    cases = [
        (InputError, r"map of shape \[2, 5, 5\] fits neither", lambda: d(ex, x, maps[:, :5, :5])),
        (InputError, r"map of shape \[2, 3, 32\] fits neither", lambda: r(ex, x, maps[:, :3])),
        (InputError, r"got 3 for 2 samples", lambda: i(ex, x, random_maps(3, positions))),
        (InputError, r"One map per sample: got 1 for 2 samples", lambda: r(ex, x, maps[:1])),
        (TargetError, r"must lie in 0\.\.9; got 10", lambda: d(ex, x, maps, 10)),
        (TargetError, r"must lie in 0\.\.9; got -1", lambda: r(ex, x, maps, -1)),
        (TargetError, r"target is a class index", lambda: i(ex, x, maps, 1.5)),
        (OptionError, r"ROAD .* needs images", lambda: r(tabular, v, flat)),
        (OptionError, r"blur substrate needs images", lambda: i(tabular, v, flat)),
        (OptionError, r"steps must be a positive int; got 0", lambda: d(ex, x, maps, steps=0)),
        (OptionError, r"steps must be a positive int", lambda: i(ex, x, maps, steps=2.5)),
        (OptionError, r"Unknown substrate 'noise'", lambda: d(ex, x, maps, substrate="noise")),
        (OptionError, r"score must be one of probability, logit; got 'prob'",
         lambda: i(ex, x, maps, score="prob")),
    ]  # fmt: skip
    holey = np.where(maps > 0.9, np.nan, maps)
    cases += [
        (InputError, r"NaN or infinite values: no order", lambda: d(ex, x, holey)),
        (
            InputError,
            r"NaN or infinite values: no order",
            lambda: r(ex, x, np.where(maps > 0.5, np.inf, maps)),
        ),
        (InputError, r"NaN or infinite values: no share", lambda: sparseness(holey)),
        (InputError, r"NaN or infinite values: no share", lambda: complexity(holey)),
    ]
    for shares in [(0.5, 1.0), (0.0,), (-0.1, 0.5), (1.5,), ((0.1, 0.2),), (), (np.nan,)]:
        cases.append(
            (OptionError, r"shares are fractions between 0 and 1; got " + re.escape(repr(shares)),
             lambda s=shares: r(ex, x, maps, shares=s))
        )  # fmt: skip
    for error, match, call in cases:
        print(_refused(error, match, call))
    # a tabular model is fine for deletion with zeros: its positions are its elements
    assert deletion(tabular, v, flat, steps=4).scores.shape == (2, 5)


def test_randomisation_and_sensitivity_refuse_unknown_names_in_one_line(rgb):
    _, _, ex = rgb
    x = _images(1, (3, 32, 32), seed=15)
    cases = [
        (OptionError, r"No weighted layer is named 'head'; name a node, a weight, or a module: "
         r"classifier, features", lambda: randomization(ex, x, layers=["features.0", "head"])),
        (OptionError, r"No method of vanilla, guided takes smoothness",
         lambda: randomization(ex, x, ["vanilla", "guided"], smoothness=2)),
        (OptionError, r"order must be one of cascading, independent; got 'random'",
         lambda: randomization(ex, x, order="random")),
        (TargetError, r"Unknown method 'gradient'", lambda: randomization(ex, x, "gradient")),
        (OnnxsalError, r"smoothness", lambda: max_sensitivity(ex, x, n_samples=2, smoothness=2)),
        (OptionError, r"n_samples must be a positive int",
         lambda: max_sensitivity(ex, x, n_samples=0)),
        (OptionError, r"radius must be > 0", lambda: max_sensitivity(ex, x, radius=0.0)),
        (OptionError, r"noise must be shaped \(n_samples, \*x.shape\)",
         lambda: max_sensitivity(ex, x, n_samples=2, noise=np.zeros((2, 3, 32, 32)))),
    ]  # fmt: skip
    for error, match, call in cases:
        print(_refused(error, match, call))
