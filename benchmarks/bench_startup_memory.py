"""Time to the first map from the command line, and peak memory at a large batch.

    python benchmarks/bench_startup_memory.py [--batch 64] [--threads 2] [--runs 3]

1. `onnxsal explain efficientnet-lite0 chelsea.jpg`, warm (the zoo model already made, the
   OS file cache warm from a first run): wall seconds of the whole command, median of
   `--runs`, on onnxruntime and on OpenVINO (`--providers openvino`).
2. Peak RSS of one process that does one thing at batch `--batch` of 224x224 EfficientNet-
   Lite0 inputs: the onnxruntime forward alone; onnxsal vanilla on onnxruntime in one run
   of the whole batch (`batch_size=None`) and in its default runs (`batch_size` left as
   it is); onnxsal vanilla on OpenVINO (one run); Captum Saliency on torch. Each in its
   own child process (`--child`), its ru_maxrss read with os.wait4, so no measurement sees
   another's memory; the ratio is to the forward's own peak.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_engine import _cpu_name

ONNXSAL = Path(sys.executable).with_name("onnxsal")
KINDS = ("ort-forward", "onnxsal-ort", "onnxsal-ort-default-runs", "onnxsal-openvino", "captum")


def _photo(folder: Path) -> Path:
    from PIL import Image
    from skimage import data

    path = folder / "chelsea.jpg"
    Image.fromarray(data.chelsea()).save(path, quality=92)
    return path


def first_map(photo: Path, providers: list[str], runs: int) -> float:
    times = []
    for k in range(runs + 1):  # the first run warms the file cache and the zoo model
        out = photo.parent / f"out-{'-'.join(providers) or 'default'}-{k}"
        started = time.perf_counter()
        subprocess.run(
            [
                str(ONNXSAL),
                "explain",
                "efficientnet-lite0",
                str(photo),
                "-o",
                str(out),
                "-q",
                *providers,
            ],
            check=True,
        )
        if k:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def child(kind: str, batch: int, threads: int) -> None:
    """One measured thing, run twice (the second run is the steady state)."""
    import numpy as np

    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    target = np.zeros(batch, dtype=np.int64)
    if kind == "captum":
        import torch
        from captum.attr import Saliency

        from onnxsal.models.efficientnet_lite0 import torch_model

        torch.set_num_threads(threads)
        saliency = Saliency(torch_model().eval())
        for _ in range(2):
            xt = torch.tensor(x).requires_grad_()
            saliency.attribute(xt, target=torch.tensor(target), abs=False)
        return
    import onnxruntime as ort

    import onnxsal
    from onnxsal.models import locate
    from onnxsal.runtime import session_options

    if kind == "ort-forward":  # onnxruntime's own defaults
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(locate("efficientnet-lite0")), options)
        name = session.get_inputs()[0].name
        for _ in range(2):
            session.run(None, {name: x})
        return
    providers = "openvino" if kind == "onnxsal-openvino" else None
    options = session_options(threads)
    ex = onnxsal.Explainer("efficientnet-lite0", session_options=options, providers=providers)
    runs = {} if kind == "onnxsal-ort-default-runs" else {"batch_size": None}
    for _ in range(2):
        ex.explain(x, "vanilla", target, **runs)


def peak_mb(kind: str, batch: int, threads: int) -> float:
    command = [sys.executable, __file__, "--child", kind, "--batch", str(batch)]
    proc = subprocess.Popen([*command, "--threads", str(threads)])
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{kind} failed with exit {proc.returncode}")
    return usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.batch, args.threads)
    print(
        f"Machine: {_cpu_name()}, {os.cpu_count()} logical CPUs, {args.threads} threads; "
        f"Python {platform.python_version()}, onnxruntime {version('onnxruntime')}, "
        f"openvino {version('openvino')}, torch {version('torch')}\n"
    )
    with tempfile.TemporaryDirectory() as folder:
        photo = _photo(Path(folder))
        print("| command (warm) | seconds to the first map |\n|---|---|")
        for label, flags in (("onnxruntime", []), ("OpenVINO", ["--providers", "openvino"])):
            seconds = first_map(photo, flags, args.runs)
            print(f"| `onnxsal explain efficientnet-lite0 chelsea.jpg` ({label}) | {seconds:.2f} |")
    print(f"\n| batch {args.batch}, EfficientNet-Lite0 | peak RSS MB | / ORT forward |")
    print("|---|---|---|")
    forward = None
    for kind in KINDS:
        mb = peak_mb(kind, args.batch, args.threads)
        forward = forward or mb
        print(f"| {kind} | {mb:.0f} | {mb / forward:.2f} |", flush=True)


if __name__ == "__main__":
    main()
