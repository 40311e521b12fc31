"""Time per map in headless Chromium (onnxruntime-web, WASM) against Python onnxruntime.

    python benchmarks/bench_web.py PACK.tgz [--threads 2] [--runs 5]

PACK.tgz: `npm pack onnxruntime-web@1.30.0`. EfficientNet-Lite0 (the zoo's) is exported
with `onnxsal.web.export`, served locally with cross-origin isolation (so WASM may use
threads), and the page's own explain() is timed on chelsea after WARMUP maps (the first
map compiles the runtime and the session; V8 then moves the WASM code to its optimising
compiler over the next few maps); Python times Explainer.explain on the same tensor with
the same thread count. Medians; the first map's time is printed too.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_engine import _cpu_name, session_options

WARMUP = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pack")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=6)
    args = parser.parse_args()

    from PIL import Image
    from skimage import data

    import onnxsal
    import onnxsal.web
    from tests.test_web import run_page

    ex = onnxsal.Explainer("efficientnet-lite0", session_options=session_options(args.threads))
    x = ex.preprocess(Image.fromarray(data.chelsea()))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "web"
        onnxsal.web.export(ex, folder, runtime=args.pack)
        for method in ("vanilla", "guided"):
            runs = [{"method": method}] * (WARMUP + args.runs)
            spec = {"x": x.ravel().tolist(), "runs": runs}
            results = run_page(folder, spec, Path(tmp), True, f"&threads={args.threads}")
            browser = statistics.median(r["ms"] for r in results[WARMUP:])
            ex.explain(x, method)
            times = []
            for _ in range(20):
                start = time.perf_counter()
                ex.explain(x, method)
                times.append(1000 * (time.perf_counter() - start))
            first = results[0]["ms"]
            rows.append((method, browser, statistics.median(times), first, results[0]["provider"]))
    print(f"\nMachine: {_cpu_name()}, {args.threads} threads, EfficientNet-Lite0, 1 image\n")
    print("| method | Chromium ms | Python ms | ratio | first map in Chromium ms | provider |")
    print("|---|---|---|---|---|---|")
    for method, b, p, first, provider in rows:
        print(f"| {method} | {b:.0f} | {p:.0f} | {b / p:.1f} | {first:.0f} | {provider} |")


if __name__ == "__main__":
    main()
