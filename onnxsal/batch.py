"""Explaining many inputs into files: the job behind `onnxsal explain`.

Inputs are batched through the model; each input's pictures, raw map and
summary row are written atomically (temporary name, then rename), so an
interrupted run leaves only complete files and `resume` finishes it. One bad
input is reported and skipped; the others go on.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from onnxsal.errors import OnnxsalError
from onnxsal.images import Prepared, find_inputs, prepare
from onnxsal.metadata import Preprocess
from onnxsal.methods import get_method
from onnxsal.pictures import colorize, overlay, panel, to_map

SUMMARY_FIELDS = [
    "input",
    "status",
    "message",
    "model",
    "method",
    "target",
    "label",
    "score",
    "top5",
    "outputs",
    "seconds",
]


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """write(tmp) then rename: a crash or Ctrl-C never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial{path.suffix}")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".onnxsal-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise OnnxsalError(
            f"cannot write to output folder '{folder}' ({exc.strerror}); choose another with -o."
        ) from exc


def probabilities(scores: np.ndarray) -> np.ndarray:
    """Scores as probabilities: kept if they already are, else a softmax of the logits."""
    s = scores.astype(np.float64)
    if (s >= 0).all() and np.allclose(s.sum(axis=-1), 1, atol=1e-3):
        return s
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@dataclass
class Drawing:
    """What to write for each input and how it looks."""

    folder: Path
    fmt: str = "png"  # "npy" / "npz" also keep the raw attribution
    overlay: bool = True
    panel: bool = False
    original_size: bool = False
    colormap: str = "inferno"
    alpha: float = 0.6
    reduce: str = "max"

    def files(self, rel: Path) -> dict[str, Path]:
        stem = self.folder / rel.parent / rel.stem
        out = {kind: stem.with_name(f"{stem.name}.{kind}.png") for kind in ("saliency", "overlay")}
        if self.fmt in ("npy", "npz"):
            out["raw"] = stem.with_name(f"{stem.name}.attribution.{self.fmt}")
        if self.panel:
            out["panel"] = stem.with_name(f"{stem.name}.panel.png")
        return out


@dataclass
class Job:
    path: Path
    rel: Path
    files: dict[str, Path]


@dataclass
class BatchRun:
    """One `explain` over many inputs (see the module doc)."""

    explainer: Any
    model_name: str
    method: str
    drawing: Drawing
    preprocess: Preprocess | None
    target: int | None = None
    layer: str | None = None
    unit: int | None = None
    grad_modifier: str | None = None
    options: dict = field(default_factory=dict)
    batch_size: int = 16
    rows: dict[str, dict] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def plan(self, specs: list[str], resume: bool) -> tuple[list[Job], list[Job]]:
        """(all jobs, those still to do); inputs that match nothing count as failures."""
        files, missing = find_inputs(specs)
        for spec in missing:
            self.failures.append(f"{spec}: no such file, folder or matching pattern.")
        if not files:
            named = "; ".join(self.failures) + ". " if missing else ""
            raise OnnxsalError(
                named + "No inputs: give image files, folders of images, glob patterns or .npy "
                "tensors."
            )
        jobs, taken = [], set()
        for path, rel in files:
            while rel in taken:  # two inputs with one name: keep both
                rel = rel.with_name(rel.stem + "_" + rel.suffix)
            taken.add(rel)
            jobs.append(Job(path, rel, self.drawing.files(rel)))
        previous = self._previous_rows() if resume else {}
        todo = []
        for job in jobs:
            done = str(job.path) in previous and all(f.exists() for f in job.files.values())
            if done:
                self.rows[str(job.path)] = previous[str(job.path)]
            else:
                todo.append(job)
        return jobs, todo

    def _previous_rows(self) -> dict[str, dict]:
        summary = self.drawing.folder / "summary.json"
        try:
            return {
                r["input"]: r for r in json.loads(summary.read_text()) if r.get("status") == "ok"
            }
        except (OSError, ValueError, KeyError, TypeError):
            return {}

    def run(self, todo: list[Job]) -> Iterator[int]:
        """Explain the jobs batch by batch; yields how many inputs each batch finished."""
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            ready = [(job, item) for job in chunk if (item := self._prepare(job)) is not None]
            if ready:
                self._explain(ready)
            yield len(chunk)

    def _fail(self, job: Job, message: str) -> None:
        if not message.startswith(str(job.path)):
            message = f"{job.path}: {message}"
        self.failures.append(message)
        self.rows[str(job.path)] = {"input": str(job.path), "status": "failed", "message": message}

    def _prepare(self, job: Job) -> Prepared | None:
        try:
            item = prepare(job.path, self.preprocess, self.explainer.input_shape)
            self.explainer.check_input(item.tensor)  # a shape or NaN problem is this input's own
            return item
        except OnnxsalError as exc:
            self._fail(job, str(exc))
            return None

    def _explain(self, ready: list[tuple[Job, Prepared]]) -> None:
        ex = self.explainer
        batch = np.concatenate([item.tensor for _, item in ready])
        explains_output = self.layer is None or get_method(self.method).layer_is_own
        started = time.perf_counter()
        result = ex.run(
            batch,
            self.method,
            self.target if explains_output else None,
            layer=self.layer,
            unit=self.unit,
            grad_modifier=self.grad_modifier,
            batch_size=self.batch_size,
            **self.options,
        )
        seconds = (time.perf_counter() - started) / len(ready)
        scores = result.unit_scores  # the output's scores, unless a layer unit was explained
        if scores is None or not explains_output:
            scores = ex.predict(batch, batch_size=self.batch_size)
        for i, (job, item) in enumerate(ready):
            attribution = result.attribution[i]
            if not np.isfinite(scores[i]).all() or not np.isfinite(attribution).all():
                self._fail(
                    job,
                    "the model's output (or its gradient) is NaN/Inf for this "
                    "input; no map written. Check the input's preprocessing.",
                )
                continue
            target = int(result.target[i])
            self._write(job, item, attribution, float(result.score[i]), target)
            self.rows[str(job.path)] = self._row(
                job, scores[i], target, float(result.score[i]), seconds
            )

    def _label(self, k: int) -> str:
        labels = self.explainer.labels
        return labels[k] if labels and 0 <= k < len(labels) else str(k)

    def _write(
        self, job: Job, item: Prepared, attribution: np.ndarray, score: float, target: int
    ) -> None:
        d, files = self.drawing, job.files
        m = to_map(attribution, self.explainer.layout, d.reduce)
        picture = item.picture
        if d.original_size and item.original is not None:
            picture = item.original.convert("RGB")
        heat = colorize(m, d.colormap)
        if picture is not None and heat.size != picture.size:
            heat = heat.resize(picture.size, Image.BILINEAR)
        atomic_write(files["saliency"], lambda tmp: heat.save(tmp, format="PNG"))
        shown = overlay(picture, m, d.colormap, d.alpha) if d.overlay and picture else heat
        atomic_write(files["overlay"], lambda tmp: shown.save(tmp, format="PNG"))
        if "raw" in files:

            def save_raw(tmp: str) -> None:
                with open(tmp, "wb") as f:
                    if d.fmt == "npy":
                        np.save(f, attribution)
                    else:
                        np.savez_compressed(
                            f, attribution=attribution, map=m, score=score, target=target
                        )

            atomic_write(files["raw"], save_raw)
        if "panel" in files:
            title = f"{self.method}: {self._label(target)} ({score:.2f})"
            sheet = panel(picture or heat, m, colormap=d.colormap, alpha=d.alpha, title=title)
            atomic_write(files["panel"], lambda tmp: sheet.save(tmp, format="PNG"))

    def _row(self, job: Job, scores: np.ndarray, target: int, score: float, seconds: float) -> dict:
        probs = probabilities(scores)
        top = np.argsort(-probs)[:5]
        return {
            "input": str(job.path),
            "status": "ok",
            "model": self.model_name,
            "method": self.method,
            "target": target if target >= 0 else None,
            "label": self._label(target) if target >= 0 else None,
            "score": score,
            "top5": [
                {"index": int(k), "label": self._label(int(k)), "probability": float(probs[k])}
                for k in top
            ],
            "outputs": {k: str(v) for k, v in job.files.items()},
            "seconds": round(seconds, 4),
        }

    def write_summary(self, jobs: list[Job]) -> None:
        rows = [self.rows[str(j.path)] for j in jobs if str(j.path) in self.rows]
        if not rows:
            return
        folder = self.drawing.folder
        atomic_write(
            folder / "summary.json", lambda tmp: Path(tmp).write_text(json.dumps(rows, indent=2))
        )
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=SUMMARY_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    **row,
                    "top5": json.dumps(row.get("top5", [])),
                    "outputs": json.dumps(row.get("outputs", {})),
                }
            )
        atomic_write(folder / "summary.csv", lambda tmp: Path(tmp).write_text(buf.getvalue()))

    @property
    def succeeded(self) -> int:
        return sum(1 for r in self.rows.values() if r.get("status") == "ok")
