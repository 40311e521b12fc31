"""Explaining one batch of a job's tasks into files and rows: what every engine runs.

A `Worker` reads and preprocesses its tasks, explains them in one run of the
model (per input shape), draws each input's files, and writes the batch's rows
as one part of the results table (see `table`). It returns the rows; the
engine hands them to the journal. Everything a worker needs is in `Work`,
which is plain data, so that an engine can ship it to other processes or
machines (see `ray_engine`).
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxsal.cli import table
from onnxsal.cli.files import STATE, DiskFullError, FolderGoneError
from onnxsal.cli.inputs import Source
from onnxsal.cli.render import Drawing, Item
from onnxsal.errors import (
    InputError,
    NormalizationError,
    OnnxsalError,
    OptionError,
    TargetError,
    UnsupportedModelError,
)
from onnxsal.images import DEFAULT_MAX_PIXELS, prepare
from onnxsal.methods import get_method
from onnxsal.samples import Samples, read_samples
from onnxsal.targets import Class
from onnxsal.targets.activation import probabilities

# errors that stop the whole run: the model cannot be read as it should, an option is
# wrong (no input would do), the disk is full or the folder gone (no later input could be
# written)
RUN_ERRORS = (NormalizationError, OptionError, DiskFullError, FolderGoneError)


@dataclass(slots=True)
class Task:
    """One input of a run: a file, or one sample of a file of several."""

    source: Source
    sample: int | None  # which sample of an array file (None: the file is one input)
    key: str  # the input as the journal knows it (Source.key)
    name: Path  # the output name, relative to the folder
    settings_id: str
    target: int | None = None  # the class to explain (a manifest's), None: the run's
    stamp: list[int] | None = None  # the file's size and mtime when it was read

    @property
    def shown(self) -> str:
        """The input as the user named it, for messages."""
        return self.source.shown + ("" if self.sample is None else f"#{self.sample}")


@dataclass(kw_only=True)
class JobRequest:
    """What to explain about every input (the explain command's arguments)."""

    method: str
    target: Any = None
    target_text: str | None = None  # -t as given, recorded in the settings
    layer: str | None = None
    unit: int | None = None
    wrt: str | None = None
    grad_modifier: str | None = None
    options: dict = field(default_factory=dict)
    feeds: dict[str, np.ndarray] = field(default_factory=dict)  # the model's other inputs
    batch_size: int = 16

    def settings(self) -> dict:
        return {
            "method": self.method,
            "target": self.target_text,
            "layer": self.layer,
            "unit": self.unit,
            "wrt": self.wrt,
            "grad_modifier": self.grad_modifier,
            "options": {k: list(v) if isinstance(v, tuple) else v for k, v in self.options.items()},
            "feeds": {k: _digest(v) for k, v in self.feeds.items()},
        }


@dataclass(kw_only=True)
class Work:
    """Everything a worker needs besides the explainer (plain data: engines ship it)."""

    request: JobRequest
    drawing: Drawing
    folder: Path
    model_name: str
    settings: dict[str, str]  # settings id -> the settings as JSON (the table's column)
    recipe: Any = None  # the pictures' preprocessing (None: the run has no pictures)
    picture_error: OnnxsalError | None = None  # why pictures cannot be read (samples can)
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    protected: frozenset[Path] = frozenset()  # files no output may replace (inputs, model)

    def files(self, task: Task) -> dict[str, Path]:
        stem = self.folder / task.name
        stem = stem.with_name(f"{stem.name}.{self.request.method}.{task.settings_id}")
        return self.drawing.files(stem, task.source.is_picture)


@dataclass(frozen=True)
class ExplainerRecipe:
    """How a worker in another process builds its own Explainer (plain data)."""

    model: bytes  # the model file as loaded (external data read in)
    providers: list[str] | None = None
    input: str | None = None
    output: str | None = None
    keep_softmax: bool = False

    def build(self, threads: int) -> Any:
        """The Explainer, its runtime using `threads` threads."""
        import onnxsal
        from onnxsal import runtime

        return onnxsal.Explainer(
            self.model,
            providers=self.providers,
            input=self.input,
            output=self.output,
            keep_softmax=self.keep_softmax,
            session_options=runtime.session_options(threads),
        )


class Worker:
    """Explains batches of tasks with one explainer (built once per process or actor)."""

    def __init__(self, work: Work, explainer: Any, check: Callable[[], None] | None = None):
        self.work = work
        self.explainer = explainer
        self.check = check or (lambda: folder_there(work.folder))
        self.succeeded = 0  # a refusal before any success is the setup's, not the input's
        self._file: tuple[Source, Samples] | None = None  # the samples file read last
        self._rows: dict[str, dict] = {}
        self._maps: dict[str, np.ndarray] = {}

    def explain(self, tasks: list[Task], rows: list[dict]) -> None:
        """Explain `tasks`, adding their rows to `rows` (in task order) once the batch's
        table part is on disk -- also when interrupted, for the tasks finished by then."""
        self._rows, self._maps = {}, {}
        try:
            ready = [(t, item) for t in tasks if (item := self._prepare(t)) is not None]
            groups: dict[tuple, list[tuple[Task, Item]]] = {}
            for task, item in ready:  # clips, lines and token rows come in several lengths
                groups.setdefault((item.tensor.shape, task.target is None), []).append((task, item))
            for group in groups.values():
                self._explain_group(group)
        finally:
            done = [self._rows[t.key] for t in tasks if t.key in self._rows]
            interrupted = sys.exc_info()[0] is not None
            try:
                if done:
                    self.check()
                    table.write_part(self.work.folder, done, self.work.settings, self._maps)
            except OnnxsalError:
                if not interrupted:
                    raise
            else:
                rows.extend(done)

    def _explain_group(self, group: list[tuple[Task, Item]]) -> None:
        try:
            self._explain(group)
        except RUN_ERRORS:
            raise
        except (TargetError, UnsupportedModelError) as exc:
            if not self.succeeded:
                raise  # the first inputs refused: the setup, not these inputs
            for task, _ in group:  # e.g. a time step past a shorter line's end
                self._fail(task, str(exc))
        except OnnxsalError as exc:
            for task, _ in group:
                self._fail(task, str(exc))

    def _fail(self, task: Task, message: str) -> None:
        message = " ".join(message.split())
        if not message.startswith(task.source.shown):
            message = f"{task.shown}: {message}"
        for path in self.work.files(task).values():  # no earlier map stands for this failure
            if path.resolve() not in self.work.protected:  # an input named like an output stays
                with contextlib.suppress(OSError):
                    path.unlink()
        self._maps.pop(task.key, None)
        self._rows[task.key] = self._row(task, status="failed", message=message)

    def _prepare(self, task: Task) -> Item | None:
        try:
            for path in self.work.files(task).values():
                if path.resolve() in self.work.protected:
                    raise InputError(
                        f"its output '{path}' would replace an input or the model; choose "
                        "another -o."
                    )
            task.stamp = task.source.stamp()  # before reading: a later change is seen
            item = self._read(task)
            item.tensor = self.explainer.check_input(item.tensor)  # shape, dtype, NaN
            return item
        except RUN_ERRORS:
            raise
        except OnnxsalError as exc:
            self._fail(task, str(exc))
            return None

    def _read(self, task: Task) -> Item:
        source, work = task.source, self.work
        if source.is_picture:
            if work.picture_error is not None:
                raise work.picture_error
            with source.local() as path:
                prepared = prepare(
                    path,
                    work.recipe,
                    keep_original=work.drawing.original_size,
                    max_pixels=work.max_pixels,
                )
            return Item(prepared.tensor, prepared.picture, prepared.original)
        if self._file is None or self._file[0] != source:  # a file's samples come in a row
            with source.local() as path:
                ex = self.explainer
                samples = read_samples(path, ex.sample_rank, ex.input_name)
                if source.url is not None:  # read whole before the fetched copy goes
                    samples.values = np.array(samples.values)
            self._file = (source, samples)
        samples = self._file[1]
        return Item(
            np.array(samples.values[task.sample or 0][None]),
            names=samples.names,
            tabular=source.path.suffix.lower() == ".csv",
            tokens=self.explainer.integer_input,
        )

    def _explain(self, ready: list[tuple[Task, Item]]) -> None:
        ex, req = self.explainer, self.work.request
        batch = np.concatenate([item.tensor for _, item in ready])
        goal = req.target
        if ready[0][0].target is not None:  # a manifest's classes, one per input
            goal = Class(np.array([task.target for task, _ in ready]))
        started = time.perf_counter()
        result = ex.run(
            batch,
            req.method,
            goal,
            layer=req.layer,
            unit=req.unit,
            wrt=req.wrt,
            inputs=req.feeds or None,
            grad_modifier=req.grad_modifier,
            batch_size=req.batch_size,
            **req.options,
        )
        seconds = (time.perf_counter() - started) / len(ready)
        scores = result.unit_scores
        method = get_method(req.method)
        explains_classes = result.kind == "class" and (req.layer is None or method.layer_is_own)
        if scores is None and explains_classes:
            scores = ex.predict(batch, goal, batch_size=req.batch_size, inputs=req.feeds)
        for i, (task, item) in enumerate(ready):
            attribution = result.attribution[i]
            own = scores[i] if scores is not None else np.zeros(0)
            score = float(result.score[i])
            finite = np.isfinite(own).all() and np.isfinite(attribution).all()
            if not (finite and np.isfinite(score)):
                self._fail(
                    task,
                    "the model's output (or its gradient) is NaN/Inf for this input; no map "
                    "written. Check the input's preprocessing.",
                )
                continue
            target = np.asarray(result.target[i])
            one_class = result.kind == "class" and target.ndim == 0
            title = f"{req.method}, {result.kind} {self._describe(target, result.kind)}: "
            title += f"score {score:.3g}"
            extras = {"score": np.float64(score), "target": target}
            self.check()  # writing would make a removed folder anew
            try:
                files = self.work.files(task)
                self.work.drawing.draw(
                    files, item, attribution, ex.layout, title, extras, method.signed
                )
            except (DiskFullError, FolderGoneError):
                raise
            except OnnxsalError as exc:  # this input's files only (a name in the way)
                self._fail(task, str(exc))
                continue
            facts = {
                "kind": result.kind,
                "target": _target_value(target),
                "label": self._label(int(target)) if one_class else None,
                "score": score,
                "seconds": round(seconds, 4),
            }
            if explains_classes and own.size:
                facts["top5"] = self._top5(own, result.activation)
            self.succeeded += 1
            if self.work.drawing.keeps_table_maps:
                self._maps[task.key] = attribution
            self._rows[task.key] = self._row(task, status="ok", **facts)

    def _row(self, task: Task, **facts: Any) -> dict:
        row = {
            "input": task.key,
            "name": str(task.name),
            "settings_id": task.settings_id,
            "stamp": task.stamp,
            "model": self.work.model_name,
            "method": self.work.request.method,
            **facts,
        }
        if facts.get("status") == "ok":
            files = self.work.files(task)
            row["outputs"] = {k: str(v.relative_to(self.work.folder)) for k, v in files.items()}
        return row

    def _top5(self, scores: np.ndarray, activation: str | None) -> list[dict]:
        probs = probabilities(scores, activation)
        ranked = probs if probs is not None else scores
        top = np.argsort(-ranked, kind="stable")[:5]
        return [
            {"index": int(k), "label": self._label(int(k)), "score": float(scores[k])}
            | ({"probability": float(probs[k])} if probs is not None else {})
            for k in top
        ]

    def _label(self, k: int) -> str:
        labels = self.explainer.labels
        return labels[k] if labels and 0 <= k < len(labels) else str(k)

    def _describe(self, target: np.ndarray, kind: str) -> str:
        if target.ndim == 0 and int(target) >= 0:
            return self._label(int(target)) if kind == "class" else str(int(target))
        return ""


def folder_there(folder: Path) -> None:
    """A worker without the folder's lock (another process) checks that the folder is
    still there before writing into it."""
    if not (folder / STATE).is_dir():
        raise FolderGoneError(
            f"the output folder '{folder}' was removed during the run; rerun with --resume."
        )


def _digest(values: np.ndarray) -> str:
    """What an array holds, shape and type included."""
    h = hashlib.sha256(f"{values.dtype.str}{values.shape}".encode())
    h.update(np.ascontiguousarray(values).tobytes())
    return h.hexdigest()


def _target_value(target: np.ndarray) -> Any:
    """A target as JSON: a list, an index, or None for none (-1)."""
    if target.ndim:
        return target.tolist()
    return int(target) if target >= 0 else None
