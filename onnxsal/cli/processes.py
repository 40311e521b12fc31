"""`--workers N`: the local engine on N processes of one machine.

One process explaining and drawing leaves cores idle while it decodes, draws
and compresses pictures (Python work onnxruntime's threads do not share);
N processes of one N-th of the cores each keep them busy (measured in
benchmarks/bench_scale.py). The command's process plans, holds the folder's
lock and records rows; each worker process builds its own Explainer once and
runs the same `Worker` as every engine. Workers ignore Ctrl-C (the command
answers it, recording what came back) and die with the command, however it
dies, so that no orphan writes into a folder another run may hold.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import signal
from dataclasses import dataclass
from typing import Any

from onnxsal.cli import worker as workers
from onnxsal.errors import OnnxsalError

_here: workers.Worker | None = None  # the worker of this process (in a worker process)


@dataclass
class InProcesses:
    """The local engine on `count` worker processes; called like `job.run_here`."""

    explainer: workers.ExplainerRecipe
    count: int

    def __call__(self, run: Any, todo: list, record: Any) -> None:
        if not todo:
            return
        size = run.request.batch_size
        threads = max(1, (os.cpu_count() or 1) // self.count)
        batches = [todo[i : i + size] for i in range(0, len(todo), size)]
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=min(self.count, len(batches)),
            mp_context=multiprocessing.get_context("spawn"),  # no fork of runtime threads
            initializer=_start,
            initargs=(run.work(), self.explainer, threads),
        )
        pending: set[concurrent.futures.Future] = set()
        finished = False
        try:
            queued = iter(batches)
            for batch in queued:  # at most two batches a worker in flight: memory bounded
                pending.add(pool.submit(_explain, batch))
                if len(pending) >= 2 * self.count:
                    pending = _collect(pending, record)
            while pending:
                pending = _collect(pending, record)
            finished = True
        except concurrent.futures.process.BrokenProcessPool:
            raise OnnxsalError(
                "a worker process died (killed, or out of memory?); what was done is kept: "
                "rerun with --resume (fewer --workers, or a smaller --batch-size, if memory "
                "ran out)."
            ) from None
        finally:
            # the pool's processes (Python 3.14 has kill_workers(); before it, this field)
            processes = list((getattr(pool, "_processes", None) or {}).values())
            pool.shutdown(wait=finished, cancel_futures=True)
            if not finished:  # interrupted or failed: the batches in flight are given up
                for process in processes:
                    with contextlib.suppress(OSError, ValueError):
                        process.kill()


def _collect(pending: set, record: Any) -> set:
    """Record the rows of the batches done; the others stay pending."""
    done, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
    for future in done:
        record(future.result())
    return pending


def _start(work: workers.Work, explainer: workers.ExplainerRecipe, threads: int) -> None:
    """A worker process: dies with the command, leaves Ctrl-C to it, builds its Explainer."""
    global _here
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
    _here = workers.Worker(work, explainer.build(threads))


def _explain(batch: list) -> list[dict]:
    rows: list[dict] = []
    _here.explain(batch, rows)
    return rows
