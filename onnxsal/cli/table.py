"""The job's results as one Parquet data set: `table/part-*.parquet` in the folder.

Every batch a worker finishes becomes one part (written whole, by the worker,
before its rows reach the journal; each row names its part). A row per input:
its path, settings (id and text), status and error, target, label, score,
top-5, output files, time; with `--format parquet` also the raw attribution
as a fixed-shape tensor column (then no pictures are drawn). At the end of a
run `prune` keeps the data set a view of the journal: parts no latest row
names (a batch killed before it was recorded, a rerun's older rows) go, and
parts holding some stale rows are rewritten without them; so every input is
in the table once, whichever engine ran and however often.

pyarrow (a dependency of onnxsal) reads and writes it; pandas, DuckDB, Spark
and Ray read the folder as one table.
"""

from __future__ import annotations

import io
import json
import secrets
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from onnxsal.cli.files import atomic_write, written_error
from onnxsal.cli.render import OUTPUT_KINDS

TABLE = "table"  # the data set's folder, in the output folder


def write_part(
    folder: Path, rows: list[dict], settings: dict[str, str], maps: dict[str, np.ndarray]
) -> None:
    """Write `rows` (and the attributions in `maps`, by input) as parts of the table,
    one per attribution shape, and name each row's part in the row."""
    by_shape: dict[tuple, list[dict]] = {}
    for row in rows:
        found = maps.get(row["input"])
        by_shape.setdefault(found.shape if found is not None else (), []).append(row)
    if len(by_shape) > 1 and () in by_shape:  # rows without a map join the first shape's
        loose = by_shape.pop(())
        next(iter(by_shape.values())).extend(loose)
    for group in by_shape.values():
        name = f"{TABLE}/part-{secrets.token_hex(8)}.parquet"
        for row in group:
            row["part"] = name
        _write(folder / name, _arrow_table(group, settings, maps))


def prune(folder: Path, latest: Iterable[dict]) -> None:
    """Make the table hold exactly the `latest` rows (the journal's): remove parts no
    row names, rewrite those that also hold stale rows."""
    import pyarrow.parquet as pq

    directory = folder / TABLE
    if not directory.is_dir():
        return
    wanted: dict[str, set[str]] = {}
    for row in latest:
        if row.get("part"):
            wanted.setdefault(row["part"], set()).add(_row_key(row))
    for path in sorted(directory.glob("part-*.parquet")):
        keys = wanted.get(f"{TABLE}/{path.name}")
        try:
            if keys is None:
                path.unlink()
                continue
            if pq.read_metadata(path).num_rows == len(keys):
                continue
            part = pq.read_table(path)
            pairs = zip(
                part.column("input").to_pylist(),
                part.column("settings_id").to_pylist(),
                strict=True,
            )
            mask = [f"{i}\0{s}" in keys for i, s in pairs]
            _write(path, part.filter(mask))
        except OSError as exc:
            raise written_error(path, exc) from exc


def _row_key(row: dict) -> str:
    return f"{_text(row['input'])}\0{row['settings_id']}"


def _write(path: Path, table) -> None:
    """Serialised in memory, then written whole (so a full disk is told as such)."""
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))


def _arrow_table(rows: list[dict], settings: dict[str, str], maps: dict[str, np.ndarray]):
    import pyarrow as pa

    def strings(key: str) -> pa.Array:
        return pa.array([_text(r.get(key)) for r in rows], pa.string())

    top5 = pa.list_(
        pa.struct(
            [
                ("index", pa.int64()),
                ("label", pa.string()),
                ("score", pa.float64()),
                ("probability", pa.float64()),
            ]
        )
    )
    columns = {
        "input": strings("input"),
        "name": strings("name"),
        "settings_id": strings("settings_id"),
        "settings": pa.array([_text(settings.get(r["settings_id"])) for r in rows], pa.string()),
        "status": strings("status"),
        "message": strings("message"),
        "model": strings("model"),
        "method": strings("method"),
        "kind": strings("kind"),
        "target": pa.array(
            [json.dumps(r["target"]) if "target" in r else None for r in rows], pa.string()
        ),
        "label": strings("label"),
        "score": pa.array([r.get("score") for r in rows], pa.float64()),
        "top5": pa.array(
            [[{**t, "label": _text(t["label"])} for t in r.get("top5", [])] for r in rows], top5
        ),
        "outputs": pa.array(
            [
                {k: _text(v) for k, v in r["outputs"].items()} if r.get("outputs") else None
                for r in rows
            ],
            pa.struct([(kind, pa.string()) for kind in OUTPUT_KINDS]),
        ),
        "seconds": pa.array([r.get("seconds") for r in rows], pa.float64()),
    }
    found = [maps.get(r["input"]) for r in rows]
    if any(a is not None for a in found):
        columns["attribution"] = _tensors(found)
    return pa.table(columns)


def _tensors(found: list[np.ndarray | None]):
    """A fixed-shape tensor column (null where an input failed)."""
    import pyarrow as pa

    first = next(a for a in found if a is not None)
    blank = np.zeros_like(first)
    values = np.stack([a if a is not None else blank for a in found]).reshape(-1)
    storage = pa.FixedSizeListArray.from_arrays(
        pa.array(values), first.size, mask=pa.array([a is None for a in found])
    )
    kind = pa.fixed_shape_tensor(pa.from_numpy_dtype(first.dtype), list(first.shape))
    return pa.ExtensionArray.from_storage(kind, storage)


def _text(value) -> str | None:
    """Text for a Parquet string (UTF-8): a file name's undecodable bytes (kept by Python
    as lone surrogates) written as backslash escapes, as in summary.csv."""
    if value is None:
        return None
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")
