"""The evaluation papers' findings, reproduced on the zoo's EfficientNet-Lite0 (ImageNet
weights) and scikit-image's photos.

- Adebayo et al. 2018: the gradient's map changes as soon as the top layers are
  re-drawn, guided backprop's does not (it is invariant to the higher layers).
- Petsiuk et al. 2018: deleting the pixels a gradient map ranks first destroys the
  class faster than deleting pixels in a random order (signed maps on every photo; the
  unsigned gradient on average, see the test for the photo where it does not).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import onnxsal
from onnxsal.evaluate import Positions, deletion, method_relevance, random_maps, randomization

pytest.importorskip("skimage")

PHOTOS = ("chelsea", "coffee")
TOP = 5  # the blocks nearest the output: the logits, the head conv and the last 3 MBConv blocks


@pytest.fixture(scope="module")
def zoo():
    from PIL import Image
    from skimage import data

    ex = onnxsal.Explainer("efficientnet-lite0")
    x = np.concatenate([ex.preprocess(Image.fromarray(getattr(data, p)())) for p in PHOTOS])
    classes = ex.predict(x).argmax(axis=1)
    print("classes", [ex.labels[c] for c in classes])
    return ex, x, classes


def test_cascading_randomisation_changes_the_gradient_not_guided_backprop(zoo):
    ex, x, classes = zoo
    start = time.perf_counter()
    r = randomization(ex, x, ["vanilla", "guided"], classes, order="cascading")
    seconds = time.perf_counter() - start
    vanilla, guided = r.mean("spearman_abs")  # over photos, one value per cascade step
    print(f"\ncascading randomisation, {len(r.blocks)} blocks, {seconds:.1f} s")
    print(f"{'randomised down to':>20} {'vanilla':>8} {'guided':>8}")
    for block, v, g in zip(r.blocks, vanilla, guided):
        print(f"{block:>20} {v:8.3f} {g:8.3f}")
    assert r.blocks[:2] == ["_fc", "_bn1"] and r.blocks[-1] == "_bn0"  # from the output back

    # The gradient moves as soon as the logits layer is re-drawn, and keeps falling.
    assert vanilla[0] < 0.6
    assert vanilla[-1] < 0.3 and vanilla[-1] < vanilla[0] - 0.2
    # Guided backprop does not see the top of the network (Adebayo et al.'s finding) ...
    assert (guided[:TOP] > 0.9).all()
    assert (guided[:TOP] - vanilla[:TOP] > 0.35).all()
    # ... and over the whole cascade stays well above the gradient.
    assert guided.mean() > vanilla.mean() + 0.15
    # Not asserted: at the last step (every block re-drawn) guided backprop is as low as the
    # gradient here (~0.1 each). Re-drawing one block at a time (order="independent", these
    # photos) shows why: guided backprop stays >= 0.79 when any MBConv block with an identity
    # shortcut is re-drawn, and >= 0.69 for every block from _blocks.8 up, but the lower
    # blocks without a shortcut (_blocks.0, 1, 3, 5 and the stem) each re-order its map
    # (0.35 and below). Once they are random nothing of the trained map's ranking is left,
    # though the map still shows the photo's edges (Adebayo et al.'s visual finding).
    print(f"last step: vanilla {vanilla[-1]:.3f}, guided {guided[-1]:.3f}")


def test_gradient_maps_delete_the_class_faster_than_random_maps(zoo):
    ex, x, classes = zoo
    positions = Positions.of(x, ex.layout)
    start = time.perf_counter()
    maps = {
        name: method_relevance(ex.explain(x, name, classes, **options), positions, name)
        for name, options in (
            ("vanilla", {}),
            ("integrated_gradients", {"steps": 16}),
            ("input_x_gradient", {}),
        )
    }
    maps["random"] = random_maps(len(x), positions, seed=0)
    # 448 pixels a step (RISE's 224-pixel steps on 224 x 224 would double the forward passes
    # and this file's runtime; the curve is the same protocol on a coarser grid: the AUCs
    # move by < 5e-4)
    auc = {name: deletion(ex, x, m, classes, steps=112).auc for name, m in maps.items()}
    print(f"\ndeletion AUC (lower is better), {time.perf_counter() - start:.1f} s")
    for name, values in auc.items():
        print(f"{name:>22} " + " ".join(f"{p}={v:.4f}" for p, v in zip(PHOTOS, values)))

    # Signed maps, positive evidence first, beat the random order on every photo, by far
    # (random maps of seeds 0-5 score 0.112-0.147 on the cat, 0.104-0.139 on the coffee).
    for name in ("integrated_gradients", "input_x_gradient"):
        assert (auc[name] < auc["random"] / 2).all(), name
    assert (auc["integrated_gradients"] < auc["vanilla"]).all()
    # The unsigned gradient beats it on average and on the coffee, not on the cat: there
    # (0.117) it is inside the random baseline's spread. |gradient| ranks pixels whose
    # removal raises the cat's probability as high as those whose removal lowers it, and
    # ignores how far a pixel is from the substrate; on a frame-filling fur texture that
    # order is no better than scattered removal. The same gradient times the input, signed
    # (input_x_gradient, the first-order effect of zeroing a pixel), scores 0.04 on the cat.
    assert auc["vanilla"].mean() < auc["random"].mean()
    coffee = PHOTOS.index("coffee")
    assert auc["vanilla"][coffee] < 0.75 * auc["random"][coffee]
