"""Peak memory of `onnxsal explain` over many huge pictures (the issue's bound: 2 GB).

    python benchmarks/bench_memory.py [--images 200] [--side 8000] [--keep] [--variants ...]

The real console script explains `--images` pictures of SIDE x SIDE pixels in a subprocess,
once per variant: default flags, `--original-size --panel` (a bounded original kept per
input), `--batch-size 64`, all on digits-cnn (32x32 grey; the model costs next to nothing,
so what is measured is the handling of the pictures), and default flags on a tiny conv net
that takes 224x224 RGB (ImageNet preprocessing). Peak RSS is the child's own `ru_maxrss`
(os.wait4, so one variant's peak never shows in the next); "typical" is the median of
VmRSS polled every 0.2 s. A first row explains one 256x256 picture: the fixed cost of
Python, onnxruntime and the model.

The pictures are smooth synthetic scenes (gradients, a few shapes, mild noise, so the
encoder does real work): 9 in 10 JPEG quality 90 (one in five of those with EXIF
orientation 6, as phones write them), 1 in 10 PNG. They are made once, one at a time per
worker, into $TMPDIR/onnxsal-bench-memory/SIDEpx/ and reused by later runs; they are
deleted at the end unless `--keep`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_engine import _cpu_name

BOUND_MB = 2048
ONNXSAL = Path(sys.executable).with_name("onnxsal")
# name: (model, extra flags); "rgb224" is built here (see _rgb_model)
VARIANTS = {
    "default": ("digits-cnn", []),
    "original-panel": ("digits-cnn", ["--original-size", "--panel"]),
    "batch64": ("digits-cnn", ["--batch-size", "64"]),
    "rgb224": ("rgb224", []),
    "original-panel-batch64": ("digits-cnn", ["--original-size", "--panel", "--batch-size", "64"]),
}
DEFAULT_VARIANTS = ["default", "original-panel", "batch64", "rgb224"]


# -- the pictures ----------------------------------------------------------------------------
def picture_name(index: int) -> str:
    """Every tenth picture is a PNG; of the JPEGs, one in five is stored rotated (EXIF)."""
    if index % 10 == 9:
        return f"scene-{index:04d}.png"
    return f"scene-{index:04d}{'-exif6' if index % 5 == 2 else ''}.jpg"


def make_picture(path: Path, side: int, seed: int) -> None:
    """One scene, written under a temporary name and renamed: a killed run leaves no half
    picture for the next run to reuse."""
    from PIL import Image, ImageChops, ImageDraw

    rng = random.Random(seed)

    def channel():
        ramp = Image.linear_gradient("L") if rng.random() < 0.5 else Image.radial_gradient("L")
        ramp = ramp.rotate(rng.uniform(0, 360), Image.BILINEAR, fillcolor=rng.randrange(256))
        return ramp.resize((side, side), Image.BILINEAR)

    scene = Image.merge("RGB", [channel() for _ in range(3)])
    draw = ImageDraw.Draw(scene)
    for _ in range(rng.randrange(3, 8)):
        x, y, r = rng.randrange(side), rng.randrange(side), rng.randrange(side // 20, side // 4)
        colour = tuple(rng.randrange(256) for _ in range(3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x - r, y - r // 2, x + r, y + r), fill=colour)
    noise = Image.effect_noise((side, side), 4)  # grey, centred on 128
    scene = ImageChops.add(scene, Image.merge("RGB", [noise] * 3), 1.0, -128)
    del noise
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    if path.suffix == ".png":
        scene.save(tmp, format="PNG", compress_level=1)
    else:
        exif = Image.Exif()
        if "exif6" in path.name:
            exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to show
        scene.save(tmp, format="JPEG", quality=90, exif=exif.tobytes())
    os.replace(tmp, path)


def pictures(folder: Path, count: int, side: int) -> tuple[list[Path], float]:
    """The `count` pictures in `folder`, made where missing; and the seconds that took."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".*.partial"):
        stale.unlink()
    paths = [folder / picture_name(k) for k in range(count)]
    missing = [(p, k) for k, p in enumerate(paths) if not p.exists()]
    started = time.perf_counter()
    if missing:
        print(f"making {len(missing)} pictures of {side}x{side} in {folder} ...", flush=True)
        with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            list(pool.map(make_picture, *zip(*[(p, side, k) for p, k in missing])))
    return paths, time.perf_counter() - started


def rgb_model(folder: Path) -> Path:
    """A tiny conv net taking 224x224 RGB with ImageNet preprocessing in its metadata, built
    in a subprocess: this process stays small (see `measure`)."""
    path = folder / "rgb224.onnx"
    if not path.exists():
        subprocess.run([sys.executable, __file__, "--build-rgb-model", str(path)], check=True)
    return path


def _build_rgb_model(path: Path) -> None:
    import torch

    from onnxsal.converters import from_torch
    from onnxsal.metadata import Preprocess

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(16, 10),
    )
    recipe = Preprocess(
        size=(224, 224),
        scale=1 / 255,
        mean=[0.485, 0.456, 0.406],
        std=[0.229, 0.224, 0.225],
        channel_order="RGB",
    )
    from_torch(net, (3, 224, 224), path, preprocess=recipe)


# -- one measured run ------------------------------------------------------------------------
def measure(command: list[str], log: Path) -> tuple[int, float, float, float]:
    """Run `command`; its exit code, peak RSS MB (its own ru_maxrss), median polled RSS MB,
    and wall seconds.

    Linux starts a child's ru_maxrss at its parent's RSS at the fork (exec keeps the old
    mm's high-water mark), so this process must stay well under the child's figure: it
    imports neither torch nor onnxruntime and makes its pictures in worker processes."""
    samples: list[int] = []
    started = time.perf_counter()
    with open(log, "wb") as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        done = threading.Event()
        poller = threading.Thread(target=_poll_rss, args=(child.pid, samples, done), daemon=True)
        poller.start()
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        done.set()
        poller.join()
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    typical = statistics.median(samples) / 1024 if samples else float("nan")
    return child.returncode, usage.ru_maxrss / 1024, typical, seconds


def _poll_rss(pid: int, samples: list[int], done: threading.Event) -> None:
    status = Path(f"/proc/{pid}/status")
    while not done.wait(0.2):
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmRSS:"):
                    samples.append(int(line.split()[1]))
        except (OSError, ValueError, IndexError):
            return


def explained(folder: Path) -> int:
    """How many rows of the run's summary are ok."""
    try:
        rows = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return 0
    return sum(1 for row in rows if row.get("status") == "ok")


def _machine() -> str:
    ram = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024**2:.1f} GB"
    except OSError:
        pass
    return (
        f"Machine: {_cpu_name()}, {os.cpu_count()} logical CPUs, {ram} RAM; "
        f"Python {platform.python_version()}, onnxruntime {version('onnxruntime')}, "
        f"Pillow {version('pillow')}, onnxsal {version('onnxsal')}"
    )


def _size_gb(paths: list[Path]) -> float:
    return sum(p.stat().st_size for p in paths) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--side", type=int, default=8000, help="pixels a side")
    parser.add_argument("--keep", action="store_true", help="keep the pictures for next time")
    parser.add_argument("--build-rgb-model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=DEFAULT_VARIANTS,
        choices=list(VARIANTS),
        help=f"default: {' '.join(DEFAULT_VARIANTS)}",
    )
    args = parser.parse_args()
    if args.build_rgb_model:
        return _build_rgb_model(args.build_rgb_model)

    cache = Path(tempfile.gettempdir()) / "onnxsal-bench-memory"
    folder = cache / f"{args.side}px"
    paths, made = pictures(folder, args.images, args.side)
    jpegs = sum(p.suffix == ".jpg" for p in paths)
    rotated = sum("exif6" in p.name for p in paths)
    print(_machine())
    print(
        f"Pictures: {len(paths)} of {args.side}x{args.side} ({jpegs} JPEG q90, {rotated} of "
        f"them EXIF-rotated; {len(paths) - jpegs} PNG), {_size_gb(paths):.2f} GB on disk in "
        f"{folder}" + (f" (made in {made:.0f} s)" if made > 1 else " (reused)") + "\n"
    )
    work = Path(tempfile.mkdtemp(prefix="onnxsal-bench-memory-"))
    inputs = work / "inputs"  # only this run's pictures, whatever else the cache holds
    inputs.mkdir()
    for p in paths:
        (inputs / p.name).symlink_to(p)
    small = work / "small" / "one.jpg"
    small.parent.mkdir()
    make_picture(small, 256, 0)
    models = {"digits-cnn": "digits-cnn"}
    if any(VARIANTS[v][0] == "rgb224" for v in args.variants):
        models["rgb224"] = str(rgb_model(cache))

    print(
        "| model | flags | pictures | explained | peak RSS MB | typical RSS MB | "
        f"under {BOUND_MB // 1024} GB | s | images/s |"
    )
    print("|---" * 9 + "|")
    runs = [("baseline", "digits-cnn", [], small.parent, 1, "1 of 256x256")]
    runs += [(v, *VARIANTS[v], inputs, len(paths), str(len(paths))) for v in args.variants]
    try:
        for label, model, flags, source, count, shown in runs:
            out = work / f"out-{label}"
            command = [str(ONNXSAL), "explain", models[model], str(source), "-o", str(out), "-q"]
            code, peak, typical, seconds = measure(command + flags, work / f"{label}.log")
            ok = explained(out)
            print(
                f"| {model} | {' '.join(flags) or '(defaults)'} | "
                f"{shown} | {ok} | "
                f"{peak:.0f} | {typical:.0f} | {'yes' if peak < BOUND_MB else 'NO'} | "
                f"{seconds:.1f} | {count / seconds:.2f} |",
                flush=True,
            )
            if code != 0 or ok != count:
                tail = (work / f"{label}.log").read_text(errors="replace").splitlines()[-5:]
                print(f"  exit {code}; last lines: " + " / ".join(tail), flush=True)
            shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
            (cache / "rgb224.onnx").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
