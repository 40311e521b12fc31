"""SmoothGrad and Integrated Gradients: onnxsal vs Captum, one run, same thread count.

    python benchmarks/bench_methods.py [--threads 2] [--samples 50] [--budget 3]

At batch 1 on EfficientNet-Lite0 (real weights) and the ResNet-style model (224x224):
SmoothGrad with 50 samples vs Captum NoiseTunnel(Saliency), and IG with 50 steps vs
Captum IntegratedGradients, each Captum run with its internal batch size tuned (the best
of several is reported). "throughput ratio" is onnxsal's time over the time of one plain
batched vanilla gradient of 50 inputs: what the sampling itself costs on top.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_engine import (
    _cpu_name,
    _median_time,
    _models,
    _openvino_installed,
    session_options,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--budget", type=float, default=3.0)
    parser.add_argument("--models", nargs="+", default=["efficientnet-lite0", "resnet"])
    args = parser.parse_args()

    import onnxruntime as ort
    import torch

    import onnxsal
    from tests.architectures import export

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    options = session_options(args.threads)
    s = args.samples
    print(
        f"Machine: {_cpu_name()}, {args.threads} threads; onnxruntime {ort.__version__}, "
        f"torch {torch.__version__}; batch 1, {s} samples/steps, 224x224\n"
    )
    print(
        "| model | method | runtime | onnxsal ms | Captum ms (best internal batch) | "
        f"onnxsal / Captum | plain gradient of {s} inputs ms | throughput ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    runtimes = {"onnxruntime": None}
    if _openvino_installed():
        runtimes["OpenVINO"] = "openvino"
    tmp = Path(tempfile.mkdtemp())
    for name, model in _models(args.models):
        path = str(tmp / f"{name}.onnx")
        export(model, torch.randn(2, 3, 224, 224), path, dynamo=True)
        best_nt, best_ig = _captum(model, s, args.budget)
        for runtime, providers in runtimes.items():
            ex = onnxsal.Explainer(path, session_options=options, providers=providers)
            plain, sg, ig = _measure(ex, s, args.budget)
            for label, ours, theirs in (("SmoothGrad", sg, best_nt), ("IG", ig, best_ig)):
                print(
                    f"| {name} | {label} | {runtime} | {1e3 * ours:.0f} | {1e3 * theirs:.0f} | "
                    f"{ours / theirs:.2f} | {1e3 * plain:.0f} | {ours / plain:.2f} |",
                    flush=True,
                )


def _input() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)


def _measure(ex, s: int, budget: float) -> list[float]:
    """Seconds: plain gradient of s inputs, SmoothGrad, IG."""
    x = _input()
    xs = np.repeat(x, s, axis=0)
    return [
        _median_time(lambda: ex.explain(xs, "vanilla", 0, batch_size=s), budget),
        _median_time(lambda: ex.explain(x, "smoothgrad", 0, n_samples=s, batch_size=s), budget),
        _median_time(
            lambda: ex.explain(x, "integrated_gradients", 0, steps=s, batch_size=s), budget
        ),
    ]


def _captum(model, s: int, budget: float) -> list[float]:
    """Seconds: best Captum NoiseTunnel(Saliency) and best IG over internal batch sizes."""
    import torch
    from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

    xt = torch.tensor(_input())
    nt, igc = NoiseTunnel(Saliency(model)), IntegratedGradients(model)

    def noise_tunnel(b: int) -> float:
        return _median_time(
            lambda: nt.attribute(
                xt,
                nt_type="smoothgrad",
                nt_samples=s,
                nt_samples_batch_size=b,
                stdevs=0.15,
                target=0,
                abs=False,
            ),
            budget,
        )

    def captum_ig(b: int) -> float:
        return _median_time(
            lambda: igc.attribute(xt, target=0, n_steps=s, internal_batch_size=b), budget
        )

    sizes = (10, 25, 50)
    return [min(map(noise_tunnel, sizes)), min(map(captum_ig, sizes))]


if __name__ == "__main__":
    main()
