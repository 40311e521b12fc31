"""The record of a folder's explanations: a journal, and the summaries derived from it.

Each finished input is one JSON line (a row), appended and flushed to disk (fsync)
before the next batch, so a kill of any kind loses at most the batch in flight.
A row is keyed by the input and the settings it was explained with
(`settings_id`, a digest of the model, method, target, options, preprocessing,
drawing and onnxsal's version); the settings themselves are a line of their
own, once per id. Runs into one folder merge, later rows replacing earlier
ones of the same key, nothing else dropped; a `retired` row takes an input
out (its name went to another input). `summary.json`, `summary.csv` and
`settings.json` are views of the journal, written whole. The journal is read
as a stream: memory grows with the number of keys, never with the lines.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxsal.cli.files import STATE, atomic_write, written_error
from onnxsal.errors import OnnxsalError

JOURNAL = "journal.jsonl"
SUMMARY_JSON, SUMMARY_CSV, SETTINGS_JSON = "summary.json", "summary.csv", "settings.json"
SUMMARIES = (SUMMARY_JSON, SUMMARY_CSV, SETTINGS_JSON)  # the journal's views in the folder
RETIRED = "retired"  # the status of a row that takes its input out of the summaries
SUMMARY_FIELDS = [
    "input",
    "name",
    "settings_id",
    "status",
    "message",
    "model",
    "method",
    "kind",
    "target",
    "label",
    "score",
    "top5",
    "outputs",
    "seconds",
]
# OWASP's rule for CSV injection: a cell starting with one of these is a formula
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def settings_id(settings: dict[str, Any]) -> str:
    """A short, stable digest of everything that shapes an explanation and its pictures."""
    text = json.dumps(strict(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def strict(value: Any) -> Any:
    """`value` with every NaN or infinity made null, so that the JSON is valid JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    return value


def line(record: dict) -> str:
    return json.dumps(strict(record), allow_nan=False) + "\n"


@dataclass(frozen=True)
class Done:
    """The latest row of an (input, settings) pair, as far as a rerun needs to know it."""

    status: str | None
    stamp: Any
    outputs: tuple[str, ...]
    part: str | None  # the results table's part holding the row
    target: Any  # the target explained


@dataclass
class Index:
    """What a run needs to know of a folder's past: per (input, settings) the latest
    row's facts; per input its name; per name its input."""

    done: dict[tuple[str, str], Done] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # input -> name
    settings: set[str] = field(default_factory=set)  # settings ids already recorded


class Journal:
    """The journal of one output folder (appended to under the folder's lock). A kind of
    record (explain's, evaluate's) names its files and its CSV rows."""

    file = JOURNAL
    summary_json, summary_csv, settings_json = SUMMARY_JSON, SUMMARY_CSV, SETTINGS_JSON
    csv_fields = SUMMARY_FIELDS

    def __init__(self, folder: Path, check: Any = None):
        self.folder = folder
        self.path = folder / STATE / self.file
        self.check = check or (lambda: None)  # raises if the folder's lock was lost

    # -- reading ---------------------------------------------------------------------------
    def _records(self) -> Iterator[tuple[int, dict]]:
        """(offset, record) of each whole line; a line a kill tore is skipped."""
        try:
            f = open(self.path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            return
        except OSError as exc:
            raise OnnxsalError(
                f"cannot read the journal '{self.path}' ({exc.strerror}); choose another -o."
            ) from exc
        with f:
            offset = 0
            for raw in f:
                try:
                    record = json.loads(raw)
                except ValueError:
                    record = None
                if _well_formed(record):
                    yield offset, record
                offset += len(raw)

    def index(self) -> Index:
        found = Index()
        for _, record in self._records():
            if "input" not in record:
                found.settings.add(record["settings_id"])
                continue
            key = (record["input"], record["settings_id"])
            if record.get("status") == RETIRED:
                found.done.pop(key, None)
                found.names.pop(record["input"], None)
                continue
            outputs = tuple((record.get("outputs") or {}).values())
            found.done[key] = Done(
                record.get("status"),
                record.get("stamp"),
                outputs,
                record.get("part"),
                record.get("target"),
            )
            found.names[record["input"]] = record.get("name", "")
        return found

    def _latest(self) -> tuple[dict[tuple[str, str], int], dict[str, int], int]:
        """Offsets of the latest line of each row key and of each settings line, and how
        many lines there are."""
        rows: dict[tuple[str, str], int] = {}
        settings: dict[str, int] = {}
        count = 0
        for offset, record in self._records():
            count += 1
            if "input" not in record:
                settings.setdefault(record["settings_id"], offset)
            elif record.get("status") == RETIRED:
                rows.pop((record["input"], record["settings_id"]), None)
            else:
                rows[record["input"], record["settings_id"]] = offset
        return rows, settings, count

    def _read_at(self, f: Any, offset: int) -> dict:
        f.seek(offset)
        return json.loads(f.readline())

    # -- writing ---------------------------------------------------------------------------
    def append(self, records: Iterable[dict]) -> None:
        """Add records, on disk (fsync) when this returns; a line a kill tore is closed
        first."""
        text = "".join(line(r) for r in records)
        if not text:
            return
        self.check()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            try:
                end = os.fstat(fd).st_size
                if end and os.pread(fd, 1, end - 1) != b"\n":
                    text = "\n" + text
                os.write(fd, text.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise written_error(self.path, exc) from exc

    def compact(self) -> None:
        """Rewrite the journal with the latest line of each key once most lines are stale
        (reruns into one folder), so that it grows with the inputs, not with the runs."""
        rows, settings, count = self._latest()
        kept = sorted([*rows.values(), *settings.values()])
        if count <= 2 * len(kept) + 64:
            return

        def write(tmp: str) -> None:
            with open(self.path, "rb") as src, open(tmp, "wb") as dst:
                for offset in kept:
                    src.seek(offset)
                    dst.write(src.readline())

        self.check()
        atomic_write(self.path, write)

    def write_summaries(self) -> None:
        """summary.json, summary.csv and settings.json from the journal, each written whole
        and streamed (one row in memory at a time)."""
        self.check()
        self.compact()
        rows, settings, _ = self._latest()
        if not rows:
            return
        order = sorted(rows)
        with open(self.path, "rb") as src:

            def write_json(tmp: str) -> None:
                with open(tmp, "w", encoding="utf-8") as out:
                    out.write("[")
                    for k, key in enumerate(order):
                        out.write(",\n  " if k else "\n  ")
                        row = self._read_at(src, rows[key])
                        row.pop("part", None)  # bookkeeping: which table part holds it
                        out.write(json.dumps(strict(row)))
                    out.write("\n]\n")

            def write_csv(tmp: str) -> None:
                with open(tmp, "w", encoding="utf-8", errors="backslashreplace", newline="") as out:
                    writer = csv.DictWriter(out, fieldnames=self.csv_fields, extrasaction="ignore")
                    writer.writeheader()
                    for key in order:
                        writer.writerows(self.csv_rows(self._read_at(src, rows[key])))

            def write_settings(tmp: str) -> None:
                found = {
                    sid: self._read_at(src, offset)["settings"] for sid, offset in settings.items()
                }
                Path(tmp).write_text(json.dumps(strict(found), indent=2) + "\n", encoding="utf-8")

            atomic_write(self.folder / self.summary_json, write_json)
            atomic_write(self.folder / self.summary_csv, write_csv)
            atomic_write(self.folder / self.settings_json, write_settings)

    def csv_rows(self, row: dict) -> Iterator[dict]:
        """The CSV line(s) of one row, every cell safe for a spreadsheet."""
        yield _csv_cells(row)

    def rows(self, settings: str | None = None) -> Iterator[dict]:
        """The latest row of each input (of one settings id), one at a time."""
        latest, _, _ = self._latest()
        if not latest:
            return
        with open(self.path, "rb") as src:
            for key in sorted(latest):
                if settings is None or key[1] == settings:
                    yield self._read_at(src, latest[key])

    def adopt_summary(self) -> None:
        """A folder whose journal is gone but whose summary.json is ours: its rows seed a new
        journal, so that no earlier row vanishes."""
        if self.path.exists():
            return
        try:
            rows = json.loads((self.folder / self.summary_json).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if isinstance(rows, list):
            self.append(
                r for r in rows if isinstance(r, dict) and {"input", "settings_id"} <= set(r)
            )


def _well_formed(record: Any) -> bool:
    """A row (input and settings id) or a settings line (settings id and settings)."""
    if not isinstance(record, dict) or not isinstance(record.get("settings_id"), str):
        return False
    if "input" in record:
        return isinstance(record["input"], str)
    return isinstance(record.get("settings"), dict)


def _csv_cells(row: dict) -> dict:
    cells = {
        **row,
        "target": json.dumps(strict(row.get("target"))),
        "top5": json.dumps(strict(row.get("top5", []))),
        "outputs": json.dumps(row.get("outputs", {})),
    }
    return {k: neutral(v) for k, v in cells.items()}


def neutral(cell: Any) -> Any:
    """A text cell a spreadsheet would run as a formula, made plain text."""
    if isinstance(cell, str) and cell.startswith(FORMULA_STARTS):
        return "'" + cell
    return cell
