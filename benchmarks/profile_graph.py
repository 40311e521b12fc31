"""Where a saliency graph spends its time: onnxruntime's profiler, summed per op type.

python benchmarks/profile_graph.py MODEL.onnx [--method vanilla] [--batch 8] [--top 25]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--method", default="vanilla")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--forward", action="store_true", help="profile the plain forward")
    args = parser.parse_args()

    import onnxruntime as ort

    import onnxsal

    ex = onnxsal.Explainer(args.model)
    model = ex.saliency_model(args.method).SerializeToString()
    if args.forward:
        model = Path(args.model).read_bytes()
    dims = [args.batch] + [d if isinstance(d, int) else 1 for d in ex.input_shape[1:]]
    x = np.random.default_rng(0).standard_normal(dims).astype(np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.enable_profiling = True
    options.log_severity_level = 3
    sess = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    feeds = {ex.input_name: x}
    if not args.forward:
        feeds["target"] = np.zeros(args.batch, np.int64)
    for _ in range(3):
        sess.run(None, feeds)
    trace = sess.end_profiling()
    with open(trace) as f:
        events = json.load(f)
    os.remove(trace)
    by_op, by_node = defaultdict(float), defaultdict(float)
    runs = 0
    for e in events:
        if e.get("cat") == "Session" and e.get("name") == "model_run":
            runs += 1
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        op = e["args"].get("op_name", "?")
        by_op[op] += e["dur"] / 1e3
        by_node[(op, e["name"][: -len("_kernel_time")])] += e["dur"] / 1e3
    runs = max(runs, 1)
    total = sum(by_op.values()) / runs
    print(f"{args.method} batch {args.batch}: {total:.1f} ms of kernels per run")
    for op, ms in sorted(by_op.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"  {op:24s} {ms / runs:8.2f} ms  {100 * ms / runs / total:5.1f}%")
    print("slowest nodes:")
    for (op, node), ms in sorted(by_node.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"  {op:18s} {ms / runs:8.2f} ms  {node}")


if __name__ == "__main__":
    main()
