"""Images per second of `onnxsal explain` on the local engine and on Ray, start-up excluded.

    python benchmarks/bench_scale.py [--model efficientnet-lite0] [--images 384] [--runs 2]

The console script explains a folder of pictures (photos from scikit-image, resized and
recoloured a little so that no two are alike, JPEG) in a subprocess, as a user runs it:

- `local`: the default engine (one process, onnxruntime's own thread count);
- `local, N workers`: `--workers N`, one process per CPU, one thread each;
- `ray, 1 actor`: one actor reserving every CPU (its onnxruntime threads as many);
- `ray, N actors`: one actor per CPU, one thread each;
- `ray, 2 nodes`: two Ray nodes on this machine (ray.cluster_utils.Cluster: two raylets,
  one CPU each), the command joining with --address: the multi-node path, simulated.

Each variant runs on SMALL pictures and on --images pictures, interleaved, --runs times;
the throughput once start-up is excluded is (images_large - images_small) / (time_large -
time_small) from the medians: Python's and Ray's start-up, the model's build and the
first batches' warm-up cancel. Per CPU divides it by the CPUs the variant uses (the local
engine and the one actor use them all; the others one per actor). The target (issue 14):
Ray's per-worker throughput >= 90% of the local engine's once start-up is excluded.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
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
SMALL = 64  # 4 batches of 16: every worker and actor starts in both runs
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "horse", "cat")


def make_pictures(folder: Path, count: int) -> None:
    import numpy as np
    from PIL import Image
    from skimage import data

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        photo = getattr(data, PHOTOS[i % len(PHOTOS)])()
        if photo.ndim == 2:
            photo = np.stack([photo] * 3, axis=-1)
        tint = rng.uniform(0.85, 1.15, size=3)
        picture = Image.fromarray(np.clip(photo[..., :3] * tint, 0, 255).astype(np.uint8))
        side = int(rng.integers(256, 400))
        picture.resize((side, side * picture.height // picture.width)).save(
            folder / f"p{i:04d}.jpg", quality=90
        )


def run(model: str, pictures: Path, flags: list[str]) -> float:
    out = Path(tempfile.mkdtemp(prefix="onnxsal-bench-scale-"))
    started = time.perf_counter()
    done = subprocess.run(
        [str(ONNXSAL), "explain", model, str(pictures), "-o", str(out), "-q", *flags],
        capture_output=True,
        text=True,
        timeout=900,
    )
    seconds = time.perf_counter() - started
    shutil.rmtree(out, ignore_errors=True)
    if done.returncode:
        raise SystemExit(f"{flags}: exit {done.returncode}\n{done.stdout}\n{done.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--images", type=int, default=384)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    cpus = os.cpu_count() or 1

    root = Path(tempfile.mkdtemp(prefix="onnxsal-bench-scale-in-"))
    small, large = root / "small", root / "large"
    make_pictures(large, args.images)
    small.mkdir()
    for p in sorted(large.iterdir())[:SMALL]:
        shutil.copy(p, small / p.name)

    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=max(1, cpus - 1))
    ray_flags = ["--engine", "ray"]
    variants = {
        "local": ([], cpus),
        f"local, {cpus} workers": (["--workers", str(cpus)], cpus),
        "ray, 1 actor": ([*ray_flags, "--actors", "1", "--cpus-per-actor", str(cpus)], cpus),
        f"ray, {cpus} actors": (
            [*ray_flags, "--actors", str(cpus), "--cpus-per-actor", "1"],
            cpus,
        ),
        "ray, 2 nodes": (
            [*ray_flags, "--actors", "2", "--cpus-per-actor", "1", "--address", cluster.address],
            2,
        ),
    }
    batch = ["--batch-size", str(args.batch_size)]
    times: dict[tuple[str, int], list[float]] = {}
    try:
        for _ in range(args.runs):
            for name, (flags, _) in variants.items():
                for folder, n in ((small, SMALL), (large, args.images)):
                    times.setdefault((name, n), []).append(
                        run(args.model, folder, [*flags, *batch])
                    )
                    print(f"  {name}, {n} images: {times[name, n][-1]:.1f} s", file=sys.stderr)
    finally:
        cluster.shutdown()
        shutil.rmtree(root, ignore_errors=True)

    print(
        f"\nMachine: {_cpu_name()} ({cpus} logical CPUs); Python {platform.python_version()}, "
        f"onnxruntime {version('onnxruntime')}, ray {version('ray')}; {args.model}, "
        f"batch {args.batch_size}, medians of {args.runs} runs\n"
    )
    print(
        f"| engine | CPUs | {SMALL} images s | {args.images} images s | images/s, start-up "
        "excluded | per CPU | per CPU / local |"
    )
    print("|---|---|---|---|---|---|---|")
    local = None
    for name, (_, workers) in variants.items():
        t_small = statistics.median(times[name, SMALL])
        t_large = statistics.median(times[name, args.images])
        rate = (args.images - SMALL) / (t_large - t_small)
        per = rate / workers
        local = local or per
        print(
            f"| {name} | {workers} | {t_small:.1f} | {t_large:.1f} | {rate:.2f} | {per:.2f} | "
            f"{per / local:.2f} |"
        )


if __name__ == "__main__":
    main()
