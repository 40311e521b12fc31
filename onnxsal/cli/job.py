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

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from onnxsal import __version__
from onnxsal.cli.inputs import Source, claim, input_exists, name_key
from onnxsal.cli.journal import RETIRED, Index, Journal, settings_id, strict
from onnxsal.cli.render import Drawing
from onnxsal.cli.worker import JobRequest, Task, Work, Worker
from onnxsal.errors import InputError, OnnxsalError, OptionError
from onnxsal.images import DEFAULT_MAX_PIXELS
from onnxsal.samples import count_samples

# an engine explains a run's tasks in batches (see worker), handing each batch's rows to
# the callback as they are done: run_here below, or ray_engine.OnRay
Engine = Callable[["Run", list[Task], Callable[[list[dict]], None]], None]


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
    targets: dict[str, int] = field(default_factory=dict)  # a manifest's class per input
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0  # inputs finished by an earlier run (--resume)
    _settings: dict[bool, dict] = field(default_factory=dict)
    _recipe: Any = None  # the pictures' preprocessing, once made
    _picture_error: OnnxsalError | None = None  # why pictures cannot be read (samples can)

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
            if input_exists(holder):
                return False
            retired.add(holder)
            return True

        tasks = []
        for source in sources:
            for sample in self._samples_of(source):
                key = source.key(sample)
                name = Path(index.names[key]) if key in index.names else source.name(sample)
                name = claim(name, key, owners, gone)
                target = self.targets.get(source.key())
                tasks.append(Task(source, sample, key, name, ids[source.is_picture], target))
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
            with source.local() as path:
                count = count_samples(path, self.explainer.sample_rank, self.explainer.input_name)
        except OnnxsalError:
            return [None]  # one input, failing when read: a row says why
        if count == 1 and source.path.suffix.lower() != ".csv":
            return [None]
        return list(range(count))

    def work(self) -> Work:
        """What a worker needs to explain this run's tasks, anywhere."""
        return Work(
            request=self.request,
            drawing=self.drawing,
            folder=self.folder,
            model_name=self.model_name,
            settings={
                settings_id(found): json.dumps(strict(found), sort_keys=True)
                for found in self._settings.values()
            },
            recipe=self._recipe,
            picture_error=self._picture_error,
            max_pixels=self.max_pixels,
            protected=self.protected,
        )

    def _finished(self, task: Task, index: Index) -> bool:
        found = index.done.get((task.key, task.settings_id))
        if found is None or found.status != "ok":
            return False
        if found.stamp != task.source.stamp():
            return False
        if task.target is not None and found.target != task.target:
            return False  # the manifest asks for another class now
        if found.part is None or not (self.folder / found.part).is_file():
            return False  # its row is not in the table
        files = self.work().files(task)
        listed = {str(p.relative_to(self.folder)) for p in files.values()}
        return listed == set(found.outputs) and all(p.is_file() for p in files.values())

    # -- running ---------------------------------------------------------------------------
    def run(self, todo: list[Task], engine: Engine, progress: Callable[[int], None]) -> None:
        """Explain the tasks on `engine`, recording each batch's rows in the journal as the
        engine hands them over, and telling `progress` how many inputs each finished."""

        def record(rows: Iterable[dict]) -> None:
            rows = list(rows)
            self.journal.append(rows)
            for row in rows:
                if row["status"] == "ok":
                    self.succeeded += 1
                else:
                    self._report(row["message"])
            progress(len(rows))

        engine(self, todo, record)

    def _report(self, message: str) -> None:
        self.failed += 1
        self.report(message)


def run_here(run: Run, todo: list[Task], record: Callable[[list[dict]], None]) -> None:
    """The local engine: this process, one batch after the other, with the folder's lock
    checked before every write."""
    work = run.work()
    worker = Worker(work, run.explainer, check=run.journal.check)
    size = 1 if work.request.feeds else work.request.batch_size  # fed values: as given
    for start in range(0, len(todo), size):
        rows: list[dict] = []
        try:
            worker.explain(todo[start : start + size], rows)
        finally:  # even when interrupted: what the batch finished is recorded
            record(rows)
