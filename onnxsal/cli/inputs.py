"""Finding the inputs a command names: files, folders, glob patterns and manifests.

A folder is walked for pictures and sample files, skipping hidden entries,
onnxsal's temporary files and every folder that holds onnxsal results (a run
never explains the outputs of an earlier one), and skipping the folder a run
writes to. A manifest is a table (CSV or Parquet) of paths, with a target per
path if it has a `target` column.
"""

from __future__ import annotations

import glob
import hashlib
import os
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click

from onnxsal.cli.files import holds_results
from onnxsal.errors import InputError
from onnxsal.images import IMAGE_SUFFIXES
from onnxsal.samples import ARRAY_SUFFIXES

WANTED = IMAGE_SUFFIXES | ARRAY_SUFFIXES


@dataclass(frozen=True)
class Source:
    """One input file, and its name relative to where it was found."""

    path: Path
    rel: Path

    @property
    def is_picture(self) -> bool:
        return self.path.suffix.lower() not in ARRAY_SUFFIXES

    def key(self, sample: int | None = None) -> str:
        """The input as records know it: the file's absolute path (and sample)."""
        path = str(self.path.resolve())
        return path if sample is None else f"{path}#{sample}"

    def name(self, sample: int | None = None) -> Path:
        """Its output name: the relative path, extension kept (`NAME.ROW` for a sample)."""
        return self.rel if sample is None else self.rel.with_name(f"{self.rel.name}.{sample}")


def name_key(name: Path | str) -> str:
    """How file systems compare names: case-blind, and one Unicode form (NFC) for all."""
    return unicodedata.normalize("NFC", str(name)).casefold()


def claim(name: Path, key: str, owners: dict[str, str], free: Callable[[str], bool]) -> Path:
    """`name` for input `key`, or `NAME~DIGEST` when another input holds it in `owners`
    (name_key -> input key); a holder that `free` says is gone gives the name up.
    The claim is recorded in `owners`."""
    digest = hashlib.sha256(os.fsencode(key)).hexdigest()
    chosen = name
    for width in (6, 12, 64):
        holder = owners.get(name_key(chosen))
        if holder is None or holder == key or free(holder):
            owners[name_key(chosen)] = key
            return chosen
        chosen = name.with_name(f"{name.name}~{digest[:width]}")
    raise InputError(f"{key}: no free output name; choose another -o.")


def find_inputs(specs: list[str], skip: Path | None = None) -> tuple[list[Source], list[str]]:
    """Input files from paths, folders (recursively, by extension) and glob patterns,
    in a stable order without repeats; and the specs that matched nothing.

    `skip`: a folder never read (the output folder of the run).
    """
    skipped = skip.resolve() if skip is not None else None
    found: list[Source] = []
    missing: list[str] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            if skipped is not None and path.resolve() == skipped:
                raise click.BadParameter(
                    f"'{spec}' is both the input folder and the output folder; choose another.",
                    param_hint="-o",
                )
            if holds_results(path):
                raise InputError(
                    f"'{spec}' is an onnxsal output folder; its pictures are not read as "
                    "inputs. Name the folder of the inputs."
                )
            found += [Source(p, p.relative_to(path)) for p in _walk(path, skipped)]
        elif path.is_file():
            found.append(Source(path, Path(path.name)))
        else:
            matches = sorted(Path(m) for m in glob.glob(spec, recursive=True))
            base = _static_prefix(spec)
            files = [m for m in matches if m.is_file() and not _walked_results(m, base, skipped)]
            if not files:
                missing.append(spec)
            found += [Source(m, Path(m.name)) for m in files]
    seen: set[Path] = set()
    unique = []
    for source in found:
        key = source.path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(source)
    return unique, missing


def _walk(folder: Path, skipped: Path | None) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(folder):
        here = Path(root)
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".")
            and not holds_results(here / d)
            and (skipped is None or (here / d).resolve() != skipped)
        )
        files += [  # regular files only: a FIFO would block, a symlink loop has no end
            here / n
            for n in sorted(names)
            if not n.startswith(".") and Path(n).suffix.lower() in WANTED and (here / n).is_file()
        ]
    return files


def _static_prefix(spec: str) -> Path:
    """The folder a glob pattern starts from (its leading parts without wildcards)."""
    parts = []
    for part in Path(spec).parts:
        if glob.has_magic(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def _walked_results(path: Path, base: Path, skipped: Path | None) -> bool:
    """Whether a glob reached `path` through an onnxsal output folder below `base` (or
    through the run's own output folder)."""
    root = base.resolve()
    for parent in path.resolve().parents:
        if parent == skipped:
            return True
        if parent == root or root not in parent.parents:
            return False
        if holds_results(parent):
            return True
    return False


MANIFEST_PATH, MANIFEST_TARGET = "path", "target"  # a manifest's columns


def read_manifest(manifest: Path) -> tuple[list[Source], dict[str, str], list[str]]:
    """The inputs a manifest lists (paths relative to the manifest's folder), the target
    text of each that has one (by Source.key), and the paths that name no file."""
    table = _manifest_table(manifest)
    if MANIFEST_PATH not in table.column_names:
        raise InputError(
            f"the manifest '{manifest}' has no '{MANIFEST_PATH}' column (it has: "
            f"{', '.join(table.column_names) or 'none'}); "
            f"name the inputs' column '{MANIFEST_PATH}'."
        )
    paths = table.column(MANIFEST_PATH).to_pylist()
    targets = (
        table.column(MANIFEST_TARGET).to_pylist()
        if MANIFEST_TARGET in table.column_names
        else [None] * len(paths)
    )
    found, wanted, missing = [], {}, []
    for line, (written, target) in enumerate(zip(paths, targets, strict=True), start=2):
        if written is None or not str(written).strip():
            missing.append(f"{manifest}, row {line}: an empty path")
            continue
        path = Path(str(written))
        if not path.is_absolute():
            path = manifest.parent / path
        if not path.is_file():
            missing.append(str(written))
            continue
        source = Source(path, Path(path.name))
        text = None if target is None or str(target).strip() == "" else str(target).strip()
        key = source.key()
        if key in wanted and wanted[key] != text:
            raise InputError(
                f"the manifest '{manifest}' lists '{written}' twice with different targets "
                f"('{wanted[key]}', '{text}'); keep one row."
            )
        if key not in wanted:
            found.append(source)
        wanted[key] = text
    return found, {k: v for k, v in wanted.items() if v is not None}, missing


def _manifest_table(manifest: Path):
    """The manifest as an Arrow table (a CSV's paths and targets read as text)."""
    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.parquet

    try:
        if manifest.suffix.lower() == ".parquet":
            return pyarrow.parquet.read_table(manifest)
        if manifest.suffix.lower() == ".csv":
            columns = (MANIFEST_PATH, MANIFEST_TARGET)
            as_text = pyarrow.csv.ConvertOptions(column_types={c: pa.string() for c in columns})
            return pyarrow.csv.read_csv(manifest, convert_options=as_text)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"cannot read the manifest '{manifest}' ({exc}).") from None
    raise InputError(f"the manifest '{manifest}' is neither .csv nor .parquet.")


def require_inputs(sources: list[Source], missing: list[str], every: bool = False) -> None:
    """Refuse a run with nothing to read (or, with `every`, with any name that matched
    nothing)."""
    if sources and not (every and missing):
        return
    named = "".join(f"{spec}: no such file, folder or matching pattern. " for spec in missing)
    raise InputError(
        named + "Give image files, folders, glob patterns, or samples as .npy/.npz/.csv files."
    )


def file_stamp(path: Path) -> list[int] | None:
    """A file's size and modification time: a changed file is explained anew."""
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]
