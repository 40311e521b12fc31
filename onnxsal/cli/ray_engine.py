"""`--engine ray`: a run's tasks as a Ray dataset, explained by a pool of actors.

The driver (the `onnxsal explain` process) plans the run and keeps the folder's
lock and journal as on the local engine (see `processes` for the same on one machine
without Ray). The tasks become a Ray dataset;
`map_batches` hands batches to an actor pool, each actor builds the Explainer
once and runs the same `Worker` as the local engine, writing the pictures and
the batch's table part itself; the rows come back to the driver, which records
them as they arrive. A lost actor is restarted and its unfinished batch run
again (Ray's actor restarts and task retries); a batch done twice is recorded
once (its rows replace themselves; `table.prune` drops the extra part).

The folder must be one all actors write to (a local disk for one machine; a
shared file system across nodes), and the model and inputs readable by every
node under the driver's paths (the model itself is shipped through Ray).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onnxsal.cli import worker as workers
from onnxsal.cli.inputs import Source
from onnxsal.cli.journal import strict
from onnxsal.errors import OnnxsalError, OptionError

STOP = "stop"  # a row that stops the run: the class and message of a run error


@dataclass
class OnRay:
    """The Ray engine's settings (see the module doc); called like `job.run_here`."""

    explainer: workers.ExplainerRecipe  # shipped to every actor (through Ray's object store)
    address: str | None = None  # an existing cluster ('auto', 'ray://...'); None: start one
    actors: int = 2
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0

    def __call__(self, run: Any, todo: list, record: Any) -> None:
        if not todo:
            return
        ray = _ray()
        started = not ray.is_initialized()
        if started:
            _start(ray, self.address)
        try:
            self._fits(ray)
            self._run(ray, run, todo, record)
        except ray.exceptions.RayError as exc:
            raise OnnxsalError(
                f"Ray stopped the run ({_first_line(exc)}); what was done is kept: rerun "
                "with --resume."
            ) from None
        finally:
            if started:
                ray.shutdown()

    def _fits(self, ray: Any) -> None:
        """Refuse actors no node of the cluster can hold (Ray would wait for ever)."""
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        for name, wanted, flag in (
            ("CPU", self.cpus_per_actor, "--cpus-per-actor"),
            ("GPU", self.gpus_per_actor, "--gpus-per-actor"),
        ):
            most = max((n.get(name, 0.0) for n in nodes), default=0.0)
            if wanted > most:
                raise OptionError(
                    f"an actor asks for {wanted:g} {name}s ({flag}) but no Ray node has more "
                    f"than {most:g}; lower {flag} (or add nodes that have them)."
                )

    def _run(self, ray: Any, run: Any, todo: list, record: Any) -> None:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the command shows its own
        context.print_on_execution_start = False
        tasks = ray.data.from_items([_task_record(t) for t in todo])
        threads = max(1, math.floor(self.cpus_per_actor)) if self.cpus_per_actor >= 1 else 1
        rows = tasks.map_batches(
            ExplainActor,
            fn_constructor_kwargs={
                "work": run.work(),
                "explainer": self.explainer,
                "threads": threads,
            },
            batch_size=run.request.batch_size,
            compute=ray.data.ActorPoolStrategy(size=self.actors),
            num_cpus=self.cpus_per_actor,
            num_gpus=self.gpus_per_actor or None,
        )  # Ray Data restarts a lost actor and runs its unfinished batch again by default
        for batch in rows.iter_batches(batch_size=None, batch_format="numpy"):
            found = [json.loads(text) for text in batch["row"]]
            stop = next((r for r in found if STOP in r), None)
            record([r for r in found if STOP not in r])
            if stop is not None:
                raise _run_error(stop)


class ExplainActor:
    """One actor of the pool: an Explainer built once, then batches of tasks to rows."""

    def __init__(self, work: workers.Work, explainer: workers.ExplainerRecipe, threads: int):
        self.worker = workers.Worker(work, explainer.build(threads))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tasks = [_task(batch, i) for i in range(len(batch["key"]))]
        rows: list[dict] = []
        try:
            self.worker.explain(tasks, rows)
        except OnnxsalError as exc:  # the run stops: the driver raises it
            rows.append({STOP: type(exc).__name__, "message": str(exc)})
        return {"row": np.array([json.dumps(strict(r)) for r in rows], dtype=object)}


def _task_record(task: workers.Task) -> dict:
    source = task.source
    return {
        "path": str(source.path),
        "rel": str(source.rel),
        "url": source.url or "",
        "sample": -1 if task.sample is None else task.sample,
        "key": task.key,
        "name": str(task.name),
        "settings_id": task.settings_id,
        "target": -1 if task.target is None else task.target,
    }


def _task(batch: dict[str, np.ndarray], i: int) -> workers.Task:
    sample, target = int(batch["sample"][i]), int(batch["target"][i])
    return workers.Task(
        Source(Path(batch["path"][i]), Path(batch["rel"][i]), str(batch["url"][i]) or None),
        None if sample < 0 else sample,
        str(batch["key"][i]),
        Path(batch["name"][i]),
        str(batch["settings_id"][i]),
        None if target < 0 else target,
    )


def _first_line(exc: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()  # Ray colours its messages
    return text.splitlines()[0] if text else type(exc).__name__


def _run_error(stop: dict) -> OnnxsalError:
    """The run error an actor stopped on, as its own class where it is one of them."""
    kinds = {kind.__name__: kind for kind in workers.RUN_ERRORS}
    return kinds.get(stop[STOP], OnnxsalError)(stop["message"])


def _ray() -> Any:
    """Ray and Ray Data, the latter quiet on the console below errors (RAY_DATA_LOG_LEVEL
    set by the user wins; Ray keeps its full logs under /tmp/ray)."""
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "ERROR")
    try:
        import ray
        import ray.data
    except ImportError:
        raise OptionError(
            "--engine ray needs Ray Data: pip install 'onnxsal[ray]' (or 'ray[data]')."
        ) from None
    return ray


def _start(ray: Any, address: str | None) -> None:
    """Connect to the cluster at `address`, or start one on this machine."""
    try:
        ray.init(
            address=address or "local",  # never a cluster the user did not name
            include_dashboard=False,
            logging_level=logging.ERROR,
            log_to_driver=False,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at '{address}'" if address else "a local Ray instance"
        raise OptionError(
            f"cannot connect to {where} ({str(exc).splitlines()[0]}); check --address "
            "('ray status' on the head node shows it)."
        ) from None
