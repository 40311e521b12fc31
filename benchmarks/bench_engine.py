"""onnxsal vs onnxruntime forward vs PyTorch + Captum, same models, same thread count.

    python benchmarks/bench_engine.py [--threads 2] [--batches 1 8] [--models ...]

For each architecture at 224x224 (the parity-test architectures plus
EfficientNet-Lite0 with its real weights) and each batch size, one run
measures: onnxruntime forward; onnxsal vanilla and guided (gradient graph
incl. its forward) on onnxruntime and, when installed, on OpenVINO; torch
forward; Captum Saliency and GuidedBackprop. Also the cold build (the first
`explain` call: gradient graph built, session made, first batch run) per
runtime. Times are medians; ratios are printed as a Markdown table with the
machine. "best" is the faster runtime of the two for that model and batch.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def session_options(threads: int):
    """onnxsal's own session options with `threads` intra-op threads (for onnxsal)."""
    from onnxsal.runtime import session_options as onnxsal_options

    options = onnxsal_options(threads)
    options.inter_op_num_threads = 1
    return options


def forward_options(threads: int):
    """onnxruntime's defaults with `threads` intra-op threads (for the plain forward)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return options


def _median_time(fn, budget: float, min_runs: int = 3, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < budget and len(times) < 50):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _models(names):
    from tests.architectures import FULL_SIZE, build

    for name in names:
        if name == "efficientnet-lite0":
            from onnxsal.models.efficientnet_lite0 import torch_model

            yield name, torch_model()
        else:
            model = build(name, **FULL_SIZE[name])
            if hasattr(model, "softmax"):
                model.softmax = False
            yield name, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument(
        "--models",
        nargs="+",
        default=["vgg", "resnet", "mobilenet", "densenet", "vit", "upsample", "efficientnet-lite0"],
    )
    parser.add_argument("--budget", type=float, default=3.0, help="seconds per measurement")
    args = parser.parse_args()

    import onnxruntime as ort
    import torch

    import onnxsal
    from tests.architectures import export

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    options = session_options(args.threads)

    print(
        f"Machine: {_cpu_name()}, {os.cpu_count()} logical CPUs, {args.threads} threads; "
        f"Python {platform.python_version()}, onnxruntime {ort.__version__}, "
        f"torch {torch.__version__}, onnxsal {onnxsal.__version__}\n"
    )
    header = (
        "| model | batch | ORT fwd ms | vanilla ORT ms | guided ORT ms | vanilla OV ms | "
        "guided OV ms | torch fwd ms | Captum Saliency ms | Captum GuidedBP ms | "
        "best vanilla / ORT fwd | best guided / ORT fwd | best vanilla / Captum Sal. | "
        "cold first call ORT / OV s |"
    )
    print(header)
    print("|---" * 14 + "|")
    tmp = Path(tempfile.mkdtemp())
    for name, model in _models(args.models):
        path = str(tmp / f"{name}.onnx")
        export(model, torch.randn(2, 3, 224, 224), path, dynamo=True, opset=None)
        for batch in args.batches:
            ms, cold = _measure(model, path, batch, options, args.budget)
            t_fwd, t_van, t_gui, o_van, o_gui, _, t_sal, _ = ms
            van, gui = min(t_van, o_van), min(t_gui, o_gui)
            print(
                f"| {name} | {batch} | "
                + " | ".join("–" if m != m else f"{m:.1f}" for m in ms)
                + f" | {van / t_fwd:.2f} | {gui / t_fwd:.2f} | {van / t_sal:.2f} | "
                + " / ".join("–" if c != c else f"{c:.2f}" for c in cold)
                + " |",
                flush=True,
            )


def _openvino_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def _cold(path: str, options, providers, x, target) -> float:
    """Seconds of a first explain call on a fresh Explainer (build, session, one batch)."""
    import onnxsal

    ex = onnxsal.Explainer(path, session_options=options, providers=providers)
    started = time.perf_counter()
    ex.explain(x, "vanilla", target, batch_size=None)
    return time.perf_counter() - started


def _measure(model, path: str, batch: int, options, budget: float):
    """Milliseconds: ORT forward, onnxsal vanilla and guided on ORT and on OpenVINO (NaN
    without it), torch forward, Captum x2; and the cold first call's seconds per runtime."""
    import onnxruntime as ort
    import torch
    from captum.attr import GuidedBackprop, Saliency

    import onnxsal

    plain = forward_options(options.intra_op_num_threads)
    fwd = ort.InferenceSession(path, sess_options=plain, providers=["CPUExecutionProvider"])
    ex = onnxsal.Explainer(path, session_options=options)
    ov = _openvino_installed()
    on_ov = onnxsal.Explainer(path, session_options=options, providers="openvino") if ov else None
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    feed = {fwd.get_inputs()[0].name: x}
    target = np.zeros(batch, dtype=np.int64)
    xt, tt = torch.tensor(x), torch.tensor(target)
    sal, gbp = Saliency(model), GuidedBackprop(model)

    def torch_forward():
        with torch.no_grad():
            model(xt)

    def on(explainer, method):
        if explainer is None:
            return None
        return lambda: explainer.explain(x, method, target, batch_size=None)

    cold = [_cold(path, options, None, x, target)]
    cold.append(_cold(path, options, "openvino", x, target) if ov else float("nan"))
    runs = [
        lambda: fwd.run(None, feed),
        on(ex, "vanilla"),
        on(ex, "guided"),
        on(on_ov, "vanilla"),
        on(on_ov, "guided"),
        torch_forward,
        lambda: sal.attribute(xt.clone().requires_grad_(), target=tt, abs=False),
        lambda: gbp.attribute(xt.clone().requires_grad_(), target=tt),
    ]
    ms = [float("nan") if run is None else 1e3 * _median_time(run, budget) for run in runs]
    return ms, cold


if __name__ == "__main__":
    main()
