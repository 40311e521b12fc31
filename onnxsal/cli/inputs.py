"""Finding the inputs a command names: files, folders, glob patterns and manifests.

A folder is walked for pictures and sample files, skipping hidden entries,
onnxsal's temporary files and every folder that holds onnxsal results (a run
never explains the outputs of an earlier one), and skipping the folder a run
writes to. A manifest is a table (CSV or Parquet) of paths, with a target per
path if it has a `target` column.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import os
import re
import shutil
import tempfile
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import click

from onnxsal.cli.files import holds_results
from onnxsal.errors import InputError, OnnxsalError
from onnxsal.images import IMAGE_SUFFIXES
from onnxsal.samples import ARRAY_SUFFIXES

WANTED = IMAGE_SUFFIXES | ARRAY_SUFFIXES


@dataclass(frozen=True)
class Source:
    """One input file, and its name relative to where it was found. An object in a
    store (`url`: s3://, gs://, abfs://, hdfs://, ...) is read through pyarrow's file
    systems, which take their credentials and endpoint from the usual environment
    (AWS_PROFILE, AWS_ENDPOINT_URL, GOOGLE_APPLICATION_CREDENTIALS, ...)."""

    path: Path  # the file (of an object: its path in the store)
    rel: Path
    url: str | None = None

    @property
    def is_picture(self) -> bool:
        return self.path.suffix.lower() not in ARRAY_SUFFIXES

    @property
    def shown(self) -> str:
        """The input as the user named it."""
        return self.url or str(self.path)

    def key(self, sample: int | None = None) -> str:
        """The input as records know it: the file's absolute path or URL (and sample)."""
        path = self.url or str(self.path.resolve())
        return path if sample is None else f"{path}#{sample}"

    def stamp(self) -> list[int] | None:
        """Its size and modification time: a changed input is explained anew."""
        if self.url is None:
            return file_stamp(self.path)
        try:
            info = _store(self.url).get_file_info(str(self.path))
        except OSError:
            return None
        return [info.size, info.mtime_ns] if info.size is not None else None

    @contextlib.contextmanager
    def local(self) -> Iterator[Path]:
        """A local file holding the input (an object is fetched into a temporary one)."""
        if self.url is None:
            yield self.path
            return
        with tempfile.TemporaryDirectory(prefix="onnxsal-") as folder:
            local = Path(folder) / self.path.name
            try:
                store = _store(self.url)
                with store.open_input_stream(str(self.path)) as src, open(local, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except OSError as exc:
                raise InputError(f"{self.url}: cannot be read ({_reason(exc)}).") from None
            try:
                yield local
            except OnnxsalError as exc:  # its messages name the input, not the copy
                raise type(exc)(str(exc).replace(str(local), self.url)) from None

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


def find_inputs(
    specs: list[str], skip: Path | None = None, stores: bool = False
) -> tuple[list[Source], list[str]]:
    """Input files from paths, folders (recursively, by extension) and glob patterns,
    in a stable order without repeats; and the specs that matched nothing.

    `skip`: a folder never read (the output folder of the run). `stores`: URLs of
    objects or prefixes in object stores are read too (s3://bucket/photos/).
    """
    skipped = skip.resolve() if skip is not None else None
    found: list[Source] = []
    missing: list[str] = []
    for spec in specs:
        path = Path(spec)
        if stores and STORE_URL.match(spec):
            listed = _stored(spec)
            found += listed
            if not listed:
                missing.append(spec)
        elif path.is_dir():
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
    seen: set[str] = set()
    unique = []
    for source in found:
        key = source.key()
        if key not in seen:
            seen.add(key)
            unique.append(source)
    return unique, missing


STORE_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def _stored(url: str) -> list[Source]:
    """The inputs under an object-store URL: the object itself, or those below a prefix
    (by extension, hidden names skipped), in name order."""
    import pyarrow.fs

    try:
        store = _store(url)
        where = _store_path(url)
        info = store.get_file_info(where)
        if info.type == pyarrow.fs.FileType.File:
            return [Source(Path(where), Path(Path(where).name), url)]
        if info.type != pyarrow.fs.FileType.Directory:
            return []
        listed = store.get_file_info(pyarrow.fs.FileSelector(where, recursive=True))
    except (OSError, ValueError) as exc:
        raise InputError(f"{url}: cannot be listed ({_reason(exc)}).") from None
    base, found = url.rstrip("/"), []
    for info in sorted(listed, key=lambda i: i.path):
        rel = Path(info.path).relative_to(where)
        if info.type != pyarrow.fs.FileType.File or rel.suffix.lower() not in WANTED:
            continue
        if any(part.startswith(".") for part in rel.parts):
            continue
        found.append(Source(Path(info.path), rel, f"{base}/{rel.as_posix()}"))
    return found


@functools.lru_cache(maxsize=16)
def _store_of(root: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(root)[0]


GIVE_UP = 30  # seconds a Google Cloud Storage call retries (its own default: 15 minutes)


def _store(url: str):
    """The pyarrow file system of a URL (one per bucket, made once)."""
    scheme, _, rest = url.partition("://")
    root = f"{scheme}://{rest.split('/', 1)[0]}"
    if scheme.lower() in ("gs", "gcs"):
        root += f"?retry_limit_seconds={GIVE_UP}"
    return _store_of(root)


def _store_path(url: str) -> str:
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(url)[1].rstrip("/")


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def input_exists(key: str) -> bool:
    """Whether the input a record's key names is still there (a store that cannot be
    asked counts as there: nothing is given up on a network error)."""
    place = re.sub(r"#\d+$", "", key)
    if not STORE_URL.match(place):
        return Path(place).exists()
    try:
        import pyarrow.fs

        return _store(place).get_file_info(_store_path(place)).type != pyarrow.fs.FileType.NotFound
    except (OSError, ValueError):
        return True


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
