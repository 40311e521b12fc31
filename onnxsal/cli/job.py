"""Explaining many inputs into one folder: the job behind `onnxsal explain`.

Inputs are pictures, or samples in .npy/.npz/.csv files (a file of several
samples gives one input per sample, `NAME.ROW`). They are batched through the
model; each finished batch's files are written whole (see `files`) and its
rows appended to the folder's journal (see `journal`) before the next batch.
Memory holds one batch of inputs, and per input of the run a task and its
entry in the journal's index (about 2 KB together).

Output names: `NAME.METHOD.SETTINGS.KIND.EXT` under the folder, where NAME is
the input's path relative to the folder it was found in, extension kept
(`cat.jpg`, `more/cat.png`, `rows.csv.3`), and SETTINGS the digest of what
shaped the explanation (`settings_id`). An input keeps the NAME the journal
gave it first, however it is reached later; a NAME another input holds is
taken as `NAME~DIGEST` of the input's path, unless that input's file is gone,
in which case its rows are retired and the NAME passes on. One bad input is
reported and skipped; the others go on.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxsal import __version__
from onnxsal.cli.files import DiskFullError, FolderGoneError
from onnxsal.cli.inputs import Source, claim, file_stamp, name_key
from onnxsal.cli.journal import RETIRED, Index, Journal, settings_id
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
from onnxsal.samples import Samples, count_samples, read_samples
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
    stamp: list[int] | None = None  # the file's size and mtime when it was read

    @property
    def shown(self) -> str:
        """The input as the user named it, for messages."""
        return str(self.source.path) + ("" if self.sample is None else f"#{self.sample}")


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


@dataclass
class Run:
    """One `explain` over many inputs into one folder (see the module doc)."""

    explainer: Any
    model_name: str
    request: JobRequest
    drawing: Drawing
    folder: Path
    journal: Journal
    preprocess: Callable[[], Any]  # the pictures' preprocessing, made when first needed
    report: Callable[[str], None]  # tells the user of one failed input
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    protected: frozenset[Path] = frozenset()  # files no output may replace (inputs, model)
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0  # inputs finished by an earlier run (--resume)
    _settings: dict[bool, dict] = field(default_factory=dict)
    _recipe: Any = None  # the pictures' preprocessing, once made
    _picture_error: OnnxsalError | None = None  # why pictures cannot be read (samples can)
    _file: tuple[Path, Samples] | None = None  # the samples file read last
    _rows: dict[str, dict] = field(default_factory=dict)  # the batch in flight's rows

    # -- settings --------------------------------------------------------------------------
    def settings(self, picture: bool) -> dict:
        """Everything that shapes an input's files (pictures add their preprocessing)."""
        if picture not in self._settings:
            ex = self.explainer
            found = {
                "onnxsal": __version__,
                "model": ex.digest,
                "input": ex.input_name,
                "output": ex.output_name,
                "keep_softmax": ex.keep_softmax,
                **self.request.settings(),
                "drawing": self.drawing.settings(),
            }
            if picture:
                found["preprocess"] = asdict(self.picture_preprocess())
            self._settings[picture] = found
        return self._settings[picture]

    def picture_preprocess(self) -> Any:
        if self._recipe is None:
            self._recipe = self.preprocess()
        return self._recipe

    def _settings_ids(self, sources: list[Source]) -> dict[bool, str]:
        """The settings id of pictures and of samples; pictures that cannot be read (no
        preprocessing) fail one by one when samples are there too, else stop the run."""
        ids = {}
        for picture in {s.is_picture for s in sources}:
            try:
                ids[picture] = settings_id(self.settings(picture))
            except OptionError:
                raise
            except InputError as exc:
                if all(s.is_picture for s in sources):
                    raise
                self._picture_error = exc
                ids[picture] = "unread"
        return ids

    # -- planning --------------------------------------------------------------------------
    def plan(self, sources: list[Source], missing: list[str], resume: bool) -> list[Task]:
        """Every task of the run, named; with `resume`, those finished before are left out
        (their rows stay in the journal)."""
        for spec in missing:
            self._report(f"{spec}: no such file, folder or matching pattern.")
        ids = self._settings_ids(sources)
        index = self.journal.index()
        owners = {name_key(name): key for key, name in index.names.items()}
        retired: set[str] = set()

        def gone(holder: str) -> bool:
            """A holder whose file is gone gives its name up (and its rows are retired)."""
            path = re.sub(r"#\d+$", "", holder)
            if Path(path).exists():
                return False
            retired.add(holder)
            return True

        tasks = []
        for source in sources:
            for sample in self._samples_of(source):
                key = source.key(sample)
                name = Path(index.names[key]) if key in index.names else source.name(sample)
                name = claim(name, key, owners, gone)
                tasks.append(Task(source, sample, key, name, ids[source.is_picture]))
        self.journal.append(
            [
                {"input": k, "settings_id": sid, "status": RETIRED}
                for k, sid in index.done
                if k in retired
            ]
            + [
                {"settings_id": sid, "settings": self.settings(picture)}
                for picture, sid in ids.items()
                if sid != "unread" and sid not in index.settings
            ]
        )
        if not resume:
            return tasks
        todo = [t for t in tasks if not self._finished(t, index)]
        self.skipped = len(tasks) - len(todo)
        return todo

    def _samples_of(self, source: Source) -> list[int | None]:
        """The sample index of each input in one file (None: the file is one input)."""
        if source.is_picture:
            return [None]
        try:
            count = count_samples(
                source.path, self.explainer.sample_rank, self.explainer.input_name
            )
        except OnnxsalError:
            return [None]  # one input, failing when read: a row says why
        if count == 1 and source.path.suffix.lower() != ".csv":
            return [None]
        return list(range(count))

    def files(self, task: Task) -> dict[str, Path]:
        stem = self.folder / task.name
        stem = stem.with_name(f"{stem.name}.{self.request.method}.{task.settings_id}")
        return self.drawing.files(stem, task.source.is_picture)

    def _finished(self, task: Task, index: Index) -> bool:
        found = index.done.get((task.key, task.settings_id))
        if found is None or found[0] != "ok":
            return False
        _, stamp, outputs = found
        if stamp != file_stamp(task.source.path):
            return False
        files = self.files(task)
        listed = {str(p.relative_to(self.folder)) for p in files.values()}
        return listed == set(outputs) and all(p.is_file() for p in files.values())

    # -- running ---------------------------------------------------------------------------
    def run(self, todo: list[Task]) -> Iterator[int]:
        """Explain the tasks batch by batch, recording each batch in the journal; yields
        how many inputs each batch finished.

        With other inputs fed (--feed), samples run one at a time: the fed values are
        passed as given, whatever batch layout they have."""
        size = 1 if self.request.feeds else self.request.batch_size
        for start in range(0, len(todo), size):
            chunk = todo[start : start + size]
            self._rows = {}
            try:
                ready = [(t, item) for t in chunk if (item := self._prepare(t)) is not None]
                shapes: dict[tuple, list[tuple[Task, Item]]] = {}
                for task, item in ready:  # clips, lines and token rows come in several lengths
                    shapes.setdefault(item.tensor.shape, []).append((task, item))
                for group in shapes.values():
                    self._explain_group(group)
            finally:  # even when interrupted: what the batch finished is recorded
                self.journal.append(self._rows.values())
            yield len(chunk)

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

    def _report(self, message: str) -> None:
        self.failed += 1
        self.report(message)

    def _fail(self, task: Task, message: str) -> None:
        message = " ".join(message.split())
        if not message.startswith(str(task.source.path)):
            message = f"{task.shown}: {message}"
        self._report(message)
        for path in self.files(task).values():  # no earlier map stands for this failure
            if path.resolve() not in self.protected:  # an input named like an output stays
                with contextlib.suppress(OSError):
                    path.unlink()
        self._rows[task.key] = self._row(task, status="failed", message=message)

    def _prepare(self, task: Task) -> Item | None:
        try:
            for path in self.files(task).values():
                if path.resolve() in self.protected:
                    raise InputError(
                        f"its output '{path}' would replace an input or the model; choose "
                        "another -o."
                    )
            task.stamp = file_stamp(task.source.path)  # before reading: a later change is seen
            item = self._read(task)
            item.tensor = self.explainer.check_input(item.tensor)  # shape, dtype, NaN
            return item
        except RUN_ERRORS:
            raise
        except OnnxsalError as exc:
            self._fail(task, str(exc))
            return None

    def _read(self, task: Task) -> Item:
        path = task.source.path
        if task.source.is_picture:
            if self._picture_error is not None:
                raise self._picture_error
            prepared = prepare(
                path,
                self.picture_preprocess(),
                keep_original=self.drawing.original_size,
                max_pixels=self.max_pixels,
            )
            return Item(prepared.tensor, prepared.picture, prepared.original)
        if self._file is None or self._file[0] != path:  # a file's samples come in a row
            samples = read_samples(path, self.explainer.sample_rank, self.explainer.input_name)
            self._file = (path, samples)
        samples = self._file[1]
        return Item(
            np.array(samples.values[task.sample or 0][None]),
            names=samples.names,
            tabular=path.suffix.lower() == ".csv",
            tokens=self.explainer.integer_input,
        )

    def _explain(self, ready: list[tuple[Task, Item]]) -> None:
        ex, req = self.explainer, self.request
        batch = np.concatenate([item.tensor for _, item in ready])
        started = time.perf_counter()
        result = ex.run(
            batch,
            req.method,
            req.target,
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
        own_layer = get_method(req.method).layer_is_own
        explains_classes = result.kind == "class" and (req.layer is None or own_layer)
        if scores is None and explains_classes:
            scores = ex.predict(batch, req.target, batch_size=req.batch_size, inputs=req.feeds)
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
            self.journal.check()  # writing would make a removed folder anew
            try:
                files, signed = self.files(task), get_method(req.method).signed
                self.drawing.draw(files, item, attribution, ex.layout, title, extras, signed)
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
            self._rows[task.key] = self._row(task, status="ok", **facts)

    def _row(self, task: Task, **facts: Any) -> dict:
        row = {
            "input": task.key,
            "name": str(task.name),
            "settings_id": task.settings_id,
            "stamp": task.stamp,
            "model": self.model_name,
            "method": self.request.method,
            **facts,
        }
        if facts.get("status") == "ok":
            files = self.files(task)
            row["outputs"] = {k: str(v.relative_to(self.folder)) for k, v in files.items()}
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
