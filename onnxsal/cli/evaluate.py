"""`onnxsal evaluate`: methods judged by sanity checks and faithfulness metrics.

Inputs are read as `explain` reads them and evaluated a batch at a time; each
finished input is one row of -o's evaluation journal (fsynced), so a kill loses
at most the batch in flight and `--resume` skips what is done. At the end the
journal's views are written whole: evaluation.json, evaluation.csv (one line
per input, method and metric) and report.html (the table, the curves and
Adebayo's figure of each input).
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import click
import numpy as np

from onnxsal import __version__
from onnxsal.cli import common
from onnxsal.cli.files import atomic_write, exclusive, signals_held
from onnxsal.cli.inputs import Source, file_stamp, find_inputs, require_inputs
from onnxsal.cli.journal import Journal, neutral, settings_id, strict
from onnxsal.cli.options import (
    batch_size_option,
    max_pixels_option,
    method_option_values,
    method_options,
    preprocess_options,
    preprocess_values,
    preprocessing,
)
from onnxsal.errors import InputError, OnnxsalError
from onnxsal.methods import METHODS

FIGURES = "figures"  # Adebayo's figure of each input, named by a digest of the input


class EvaluationJournal(Journal):
    """evaluate's record: one row per input; its CSV one line per method and metric."""

    file = "evaluation.jsonl"
    summary_json, summary_csv, settings_json = (
        "evaluation.json",
        "evaluation.csv",
        "evaluation-settings.json",
    )
    csv_fields = (
        *("input", "name", "settings_id", "status", "message", "class", "label"),
        *("method", "metric", "value"),
    )

    def csv_rows(self, row: dict) -> Iterator[dict]:
        head = {k: row.get(k) for k in self.csv_fields[:7]}
        results = row.get("results") or {}
        if not results:
            yield {k: neutral(v) for k, v in head.items()}
        for method, metrics in results.items():
            for metric, found in metrics.items():
                cells = {**head, "method": method, "metric": metric, "value": found.get("value")}
                yield {k: neutral(v) for k, v in cells.items()}


def _methods(ctx, param, value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise click.BadParameter(
            f"unknown method {', '.join(map(repr, unknown)) or '(none)'}; the methods are: "
            + ", ".join(METHODS)
        )
    return list(dict.fromkeys(names))


def _suite():
    """onnxsal.evaluate.suite, or one line saying which extra brings what it needs."""
    try:
        from onnxsal.evaluate import suite
    except ImportError as exc:
        common.fail(str(exc))
    return suite


def _metrics(ctx, param, value: str) -> list[str]:
    try:
        return _suite().parse_metrics([n.strip() for n in value.split(",") if n.strip()])
    except OnnxsalError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.argument("model")
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "-m",
    "--method",
    "methods",
    default="vanilla,guided,integrated_gradients",
    show_default=True,
    callback=_methods,
    help="Methods to judge, comma-separated.",
)
@click.option(
    "--metrics",
    default="randomization,deletion,insertion,road,sparseness,complexity",
    show_default=True,
    callback=_metrics,
    help="Comma-separated, of: randomization, deletion, insertion, road, sensitivity "
    "(200 explanations per input and method), sparseness, complexity.",
)
@click.option("-t", "--target", help="The class explained (default: each input's top-1).")
@click.option("--input", "input_name", help="The input to perturb (models with several).")
@click.option(
    "-o", "--out", default="onnxsal-eval", show_default=True, type=click.Path(file_okay=False)
)
@click.option(
    "--deletion-steps",
    default=224,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Steps of deletion and insertion (ceil(pixels / steps) pixels each).",
)
@click.option(
    "--substrate",
    default="zeros",
    show_default=True,
    type=click.Choice(["zeros", "mean", "blur"]),
    help="What deleted pixels become (insertion always starts from the blur).",
)
@click.option(
    "--order",
    default="cascading",
    show_default=True,
    type=click.Choice(["cascading", "independent"]),
    help="Randomisation: blocks from the output down, or one at a time.",
)
@click.option(
    "--sensitivity-samples",
    default=200,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Noisy copies of max-sensitivity.",
)
@batch_size_option(8)
@click.option("--providers", help="As for explain: onnxruntime providers, openvino or fastest.")
@click.option("--resume", is_flag=True, help="Skip inputs evaluated before with the same settings.")
@max_pixels_option
@method_options
@preprocess_options()
@common.verbosity
@common.guarded
def evaluate(
    model,
    inputs,
    methods,
    metrics,
    target,
    input_name,
    out,
    deletion_steps,
    substrate,
    order,
    sensitivity_samples,
    batch_size,
    providers,
    resume,
    max_pixels,
    quiet,
    verbose,
    **flags,
) -> None:
    """Judge saliency METHODS on MODEL and INPUTS (pictures, .npy/.npz/.csv samples): does
    the map change when the weights are randomised (Adebayo et al.'s sanity check), does
    deleting what it marks drop the score (deletion, insertion, ROAD), how sparse is it.
    Every perturbation metric also judges a random map, the number to beat.

    Prints a table (methods x metrics, mean ± std over inputs) and writes -o/report.html,
    evaluation.json and evaluation.csv.

    \b
    Examples:
      onnxsal evaluate efficientnet-lite0 photos/ -m vanilla,guided,integrated_gradients
      onnxsal evaluate model.onnx x.npy --metrics deletion,insertion --deletion-steps 64
    """
    from onnxsal.cli.report import report_html, table_lines  # after _metrics checked the extra
    from onnxsal.evaluate.scoring import explainer_of

    started = time.perf_counter()
    folder = Path(out)
    pre = preprocess_values(flags)
    options = method_option_values(flags)
    sources, missing = find_inputs(list(inputs), skip=folder)
    require_inputs(sources, missing)
    ex = explainer_of(common.explainer(model, providers, input=input_name))  # or one line
    goal = _class_target(target, ex.labels)
    if goal is not None:  # refused before anything is written
        count = ex.predict(ex.example_input(1)).shape[1]
        if not 0 <= goal < count:
            raise click.BadParameter(
                f"class {goal} is not one of the model's 0..{count - 1}.", param_hint="-t"
            )
    settings = _suite().Settings(
        steps=deletion_steps,
        substrate=substrate,
        order=order,
        sensitivity_samples=sensitivity_samples,
        seed=int(options.get("seed", 0) or 0),
        batch_size=batch_size,
    )
    per_method = {m: {k: v for k, v in options.items() if k in METHODS[m].options} for m in methods}
    unused = sorted(set(options) - {k for o in per_method.values() for k in o})
    if unused:
        raise click.BadParameter(
            f"no method of {', '.join(methods)} takes {', '.join(unused)}.", param_hint="options"
        )
    recorded = {
        "model": ex.digest,
        "methods": methods,
        "metrics": metrics,
        "target": target,
        "options": per_method,
        "settings": asdict(settings),
        "preprocess": {k: v for k, v in pre.items() if v is not None},
        "onnxsal": __version__,
    }
    sid = settings_id(recorded)
    with exclusive(folder) as lock:
        journal = EvaluationJournal(folder, check=lock.check)
        job = _Job(ex, journal, sid, recorded, pre, max_pixels, folder)
        tasks = job.plan(sources, resume)
        failed = True
        try:
            job.run(tasks, methods, metrics, goal, settings, per_method, quiet)
            failed = False
        finally:
            with signals_held():
                try:
                    journal.write_summaries()
                    rows = list(journal.rows(sid)) if journal.path.exists() else []
                    html = report_html(rows, recorded, str(model))
                    atomic_write(
                        folder / "report.html",
                        lambda tmp: Path(tmp).write_text(html, encoding="utf-8"),
                    )
                except Exception:
                    if not failed:
                        raise
    if not quiet:
        for text in table_lines(rows, methods, metrics):
            common.echo(text)
        common.echo(
            f"{job.succeeded} evaluated, {job.failed} failed"
            + (f", {job.skipped} done before" if job.skipped else "")
            + f", in {time.perf_counter() - started:.1f} s; report: {folder / 'report.html'}"
        )
    if job.failed:
        sys.exit(1)


def _class_target(text: str | None, labels: list[str] | None) -> int | None:
    from onnxsal.targets import Class

    goal = common.target(text, labels)
    if goal is None:
        return None
    if not (isinstance(goal, Class) and goal.output is None and goal.index is not None):
        raise click.BadParameter(
            "evaluate explains a class: give its index or label.", param_hint="-t"
        )
    return goal.index


class _Job:
    """The inputs to evaluate, their rows and figures."""

    def __init__(self, ex, journal, sid, recorded, pre, max_pixels, folder):
        self.ex, self.journal, self.sid = ex, journal, sid
        self.recorded, self.pre, self.max_pixels, self.folder = recorded, pre, max_pixels, folder
        self.succeeded = self.failed = self.skipped = 0
        self._recipe = None
        self._file: tuple[Path, np.ndarray] | None = None  # a file's samples come in a row

    def plan(self, sources: list[Source], resume: bool) -> list[tuple[Source, int | None]]:
        from onnxsal.samples import count_samples

        if any(s.is_picture for s in sources):  # a recipe that cannot fit stops the run here
            self._recipe = preprocessing(self.ex, **self.pre)
        done = self.journal.index().done if resume else {}
        tasks = []
        for source in sources:
            samples: list[int | None] = [None]
            if not source.is_picture:
                try:
                    count = count_samples(source.path, self.ex.sample_rank, self.ex.input_name)
                    samples = [None] if count == 1 else list(range(count))
                except OnnxsalError:
                    pass  # read again when run: its row says why
            for sample in samples:
                found = done.get((source.key(sample), self.sid))
                if found and found.status == "ok" and found.stamp == file_stamp(source.path):
                    self.skipped += 1
                    continue
                tasks.append((source, sample))
        return tasks

    def run(self, tasks, methods, metrics, goal, settings, options, quiet) -> None:
        if not self.journal.path.exists() or self.sid not in self.journal.index().settings:
            self.journal.append([{"settings_id": self.sid, "settings": self.recorded}])
        show = not quiet and sys.stderr.isatty()
        bar = click.progressbar(length=len(tasks), label="evaluating", file=sys.stderr) if show \
            else None  # fmt: skip
        step = settings.batch_size or len(tasks) or 1
        try:
            for start in range(0, len(tasks), step):
                group = tasks[start : start + step]
                ready = []
                for source, sample in group:
                    stamp = file_stamp(source.path)
                    try:
                        ready.append((source, sample, stamp, self._read(source, sample)))
                    except OnnxsalError as exc:
                        self._record(source, sample, stamp, status="failed", message=str(exc))
                if ready:
                    self._evaluate(ready, methods, metrics, goal, settings, options)
                if bar:
                    bar.update(len(group))
        finally:
            if bar:
                bar.render_finish()

    def _evaluate(self, ready, methods, metrics, goal, settings, options) -> None:
        from onnxsal.evaluate.suite import evaluate_batch

        started = time.perf_counter()
        shapes = {item.shape for *_, item in ready}
        if len(shapes) > 1:  # samples of different sizes: one at a time
            for one in ready:
                self._evaluate([one], methods, metrics, goal, settings, options)
            return
        x = np.concatenate([item for *_, item in ready])
        try:
            rows, batch = evaluate_batch(self.ex, x, methods, metrics, goal, settings, options)
        except InputError as exc:
            for source, sample, stamp, _ in ready:
                self._record(source, sample, stamp, status="failed", message=str(exc))
            return
        seconds = (time.perf_counter() - started) / len(ready)
        for i, ((source, sample, stamp, _), row) in enumerate(zip(ready, rows)):
            figure = None
            if batch.randomized is not None:
                figure = Path(FIGURES) / f"{_digest(source.key(sample))}.{self.sid}.png"
                picture = batch.randomized.figure(i)
                (self.folder / FIGURES).mkdir(exist_ok=True)
                self.journal.check()
                atomic_write(self.folder / figure, lambda tmp, p=picture: p.save(tmp, "PNG"))
            shown = str(figure) if figure else None
            label = self._label(row["class"])
            self._record(
                source, sample, stamp, status="ok", figure=shown, seconds=round(seconds, 3),
                label=label, **row,
            )  # fmt: skip

    def _record(self, source, sample, stamp, **facts) -> None:
        row = {"input": source.key(sample), "name": str(source.name(sample)),
               "settings_id": self.sid, "stamp": stamp, **facts}  # fmt: skip
        self.journal.append([strict(row)])
        if facts.get("status") == "ok":
            self.succeeded += 1
        else:
            self.failed += 1
            common.echo(f"error: {source.name(sample)}: {facts.get('message')}", err=True)

    def _label(self, k: int) -> str | None:
        labels = self.ex.labels
        return labels[k] if labels and 0 <= k < len(labels) else None

    def _read(self, source: Source, sample: int | None) -> np.ndarray:
        if source.is_picture:
            from onnxsal.images import prepare

            tensor = prepare(source.path, self._recipe, max_pixels=self.max_pixels).tensor
        else:
            from onnxsal.samples import read_samples

            if self._file is None or self._file[0] != source.path:
                found = read_samples(source.path, self.ex.sample_rank, self.ex.input_name)
                self._file = (source.path, found.values)
            tensor = np.array(self._file[1][sample or 0][None])
        return self.ex.check_input(tensor)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]
