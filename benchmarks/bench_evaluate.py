"""onnxsal.evaluate vs Quantus, the same metric on the same model, maps and threads.

    python benchmarks/bench_evaluate.py [--threads 2] [--photos 2]

EfficientNet-Lite0 (the zoo's, real weights): onnxsal runs the ONNX export on
onnxruntime, Quantus the torch module it was exported from. The maps are the
same arrays (onnxsal's vanilla gradient, |.| summed over channels). Timed:

- deletion + insertion, 224 steps each (onnxsal), against Quantus's
  PixelFlipping with 224 pixels a step, run twice (it has no insertion; the
  second run stands for it: the same number of forward passes);
- cascading model-parameter randomisation with the vanilla gradient, each in
  its own protocol: onnxsal re-draws the default blocks (19 for this model),
  Quantus's MPRT resets every module with parameters (convolutions and batch
  norms apart, 100 steps). Both the total and the time per step are printed.

One run; ratios onnxsal / Quantus; the machine named.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_engine import _cpu_name, session_options


def _photos(count: int) -> np.ndarray:
    from PIL import Image
    from skimage import data

    from onnxsal.models.efficientnet_lite0 import preprocess

    pictures = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()][:count]
    return np.concatenate([preprocess(Image.fromarray(p)) for p in pictures])


def _timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--photos", type=int, default=2)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    from tests.support import torchvision_or_stand_in

    torchvision_or_stand_in()  # quantus imports zennit, which imports torchvision
    import quantus
    import torch

    import onnxsal
    from onnxsal.evaluate import Positions, deletion, insertion, method_relevance, randomization
    from onnxsal.models.efficientnet_lite0 import torch_model

    torch.set_num_threads(args.threads)
    ex = onnxsal.Explainer("efficientnet-lite0", session_options=session_options(args.threads))
    x = _photos(args.photos)
    classes = ex.predict(x).argmax(axis=1)
    maps = method_relevance(
        ex.explain(x, "vanilla", classes), Positions.of(x, ex.layout), "vanilla"
    )
    model = torch_model()
    rows = []

    ours, _ = _timed(lambda: (deletion(ex, x, maps, classes), insertion(ex, x, maps, classes)))
    flipping = quantus.PixelFlipping(
        features_in_step=224, perturb_baseline="black", normalise=False, abs=False,
        disable_warnings=True,
    )  # fmt: skip
    theirs, _ = _timed(
        lambda: [
            flipping(model=model, x_batch=x, y_batch=classes, a_batch=maps[:, None],
                     softmax=True, device="cpu", batch_size=len(x))
            for _ in range(2)
        ]
    )  # fmt: skip
    rows.append(("deletion + insertion, 224 steps", ours, theirs, None, None))

    ours, result = _timed(lambda: randomization(ex, x, "vanilla", classes))
    mprt = quantus.MPRT(layer_order="top_down", disable_warnings=True, display_progressbar=False)
    theirs, scores = _timed(
        lambda: mprt(model=model, x_batch=x, y_batch=classes, a_batch=maps[:, None],
                     explain_func=quantus.explain, explain_func_kwargs={"method": "Saliency"},
                     device="cpu", batch_size=len(x))
    )  # fmt: skip
    steps_theirs = len(scores) if isinstance(scores, dict) else None
    rows.append(("cascading randomisation (vanilla)", ours, theirs, len(result.blocks),
                 steps_theirs))  # fmt: skip

    print(f"\nMachine: {_cpu_name()}, {args.threads} threads, {len(x)} photos (224x224)\n")
    print("| metric | onnxsal s | Quantus s | onnxsal / Quantus | per step (onnxsal / Quantus) |")
    print("|---|---|---|---|---|")
    for name, a, b, n_ours, n_theirs in rows:
        per_step = (
            f"{a / n_ours:.2f} s / {b / n_theirs:.2f} s = {(a / n_ours) / (b / n_theirs):.2f}"
            if n_ours and n_theirs else "same steps"
        )  # fmt: skip
        print(f"| {name} | {a:.1f} | {b:.1f} | {a / b:.2f} | {per_step} |")


if __name__ == "__main__":
    main()
