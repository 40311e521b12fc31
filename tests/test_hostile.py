"""The Proof of issue 9: hostile and unlucky uses of `onnxsal`, each ending in a clear state.

Every CLI call here goes through `invoke` (in-process) or `spawn` (a real process), which
assert the exit code, no traceback, no stderr but `error:`/`warning:`/interrupt lines, and
never the catch-all "unexpected" (a bug by definition). Every output folder goes through
`audit`: strict JSON, each (input, settings) once, every listed file there and readable,
CSV cells neutral, nothing temporary left.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import html.parser
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import onnxsal
from onnxsal import metadata
from onnxsal.cli import main as cli
from onnxsal.cli.files import HOST
from onnxsal.models import locate
from tests.support import external_data_model, make_model

ROOT = Path(__file__).resolve().parent.parent
EXE = ROOT / ".venv" / "bin" / "onnxsal"
if not EXE.exists():  # another checkout layout: the script beside this interpreter
    EXE = Path(shutil.which("onnxsal", path=str(Path(sys.executable).parent)) or "onnxsal")

# What a command may print on stderr: one-line errors and warnings, and the interrupt notes.
STDERR_LINES = ("error:", "warning:", "interrupted:", "terminated:")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
OUTPUTS: list[str] = []  # every CLI call's output in this file, for the catch-all check
SLOW = ("-m", "smoothgrad", "--samples", "400", "--batch-size", "2")  # ~0.25 s a batch


# -- helpers ----------------------------------------------------------------------------------


def _show_on_stderr(message, category, filename, lineno, file=None, line=None):
    """Python's own showwarning: a warning reaches stderr as a user would see it (pytest
    would otherwise record it and hide a leak)."""
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def invoke(*args, code: int | None = 0):
    """Run the CLI in-process; assert the exit code and that nothing leaks."""
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = _show_on_stderr
        result = CliRunner().invoke(cli, [str(a) for a in args])
    OUTPUTS.append(result.output)
    shown = f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    if code is not None:
        assert result.exit_code == code, shown
    assert result.exception is None or isinstance(result.exception, SystemExit), shown
    clean(result.output, result.stderr)
    return result


def clean(output: str, stderr: str) -> None:
    """No traceback, no catch-all, no raw escape byte, no stray stderr."""
    assert "Traceback" not in output, output
    assert "unexpected" not in output, output
    assert "\x1b" not in output, repr(output)
    stray = [line for line in stderr.splitlines() if not line.startswith(STDERR_LINES)]
    assert not stray, stderr


def one_error(result, *fragments: str, code: int = 1) -> str:
    """Exactly one `error:` line, naming every fragment; usage errors point at --help."""
    assert result.exit_code == code, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    line = errors[0]
    for fragment in fragments:
        assert fragment.lower() in line.lower(), line
    if code == 2:
        assert line.endswith("--help')"), line
    return line


def strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def opens(path: Path) -> None:
    """The file is whole: a picture decodes, an array loads."""
    if path.suffix == ".png":
        with Image.open(path) as img:
            img.load()
    elif path.suffix == ".npy":
        np.load(path, allow_pickle=False)
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            z["attribution"]
    else:
        raise AssertionError(f"unknown output kind {path}")


def partials(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if "partial" in p.name]


def journal_lines(folder: Path) -> list[str]:
    """The journal's row lines (settings lines, one per settings id, left out)."""
    path = folder / ".onnxsal" / "journal.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [line for line in lines if not line.startswith('{"settings_id"')]


def journal_keys(folder: Path) -> list[str]:
    """The input key of every journal line that parses (a torn last line does not)."""
    keys = []
    for line in journal_lines(folder):
        try:
            keys.append(strict_json(line)["input"])
        except ValueError:
            continue
    return keys


def audit(folder: Path, torn: int = 0) -> list[dict]:
    """Check an output folder as a user would rely on it; return summary.json's rows.

    `torn`: journal lines a kill or a full disk may have cut (readers skip them)."""
    assert not partials(folder), partials(folder)
    rows = strict_json((folder / "summary.json").read_text())
    keys = [(r["input"], r["settings_id"]) for r in rows]
    assert len(keys) == len(set(keys)), "an input listed twice for one settings"
    for row in rows:
        outputs = row.get("outputs") or {}
        if row["status"] == "ok":
            assert outputs, row
            for rel in outputs.values():
                opens(folder / rel)
        else:
            assert not outputs and row["message"], row
    lines = journal_lines(folder)
    readable = [line for line in lines if _parses(line)]
    assert len(lines) - len(readable) <= torn, "journal lines that do not parse"
    for line in readable:
        strict_json(line)  # NaN or Infinity would be invalid JSON
    with open(folder / "summary.csv", newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows)
    for record in table:
        for cell in record.values():
            assert not cell.startswith(FORMULA_STARTS) or _number(cell), repr(cell)
    assert table_rows(folder) == {
        (escaped(r["input"]), r["settings_id"]): (r["status"], r.get("score")) for r in rows
    }, "the Parquet table is not the summary"
    return rows


def escaped(name: str) -> str:
    """A name as Parquet's UTF-8 text holds it: undecodable bytes as backslash escapes."""
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def table_rows(folder: Path) -> dict:
    """The results table's rows, each read once: (input, settings) -> (status, score)."""
    import pyarrow.parquet as pq

    found = {}
    for part in sorted((folder / "table").glob("part-*.parquet")):
        for row in pq.read_table(
            part, columns=["input", "settings_id", "status", "score"]
        ).to_pylist():
            key = (row["input"], row["settings_id"])
            assert key not in found, f"{key} in the table twice"
            found[key] = (row["status"], row["score"])
    return found


def _parses(line: str) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def _number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def by_name(rows: list[dict], method: str | None = None) -> dict[str, dict]:
    return {r["name"]: r for r in rows if method is None or r["method"] == method}


# Exec the console script with SIGINT and SIGTERM at their defaults: a runner may start the
# tests with SIGINT ignored, and an ignored signal stays ignored across exec (no preexec_fn:
# it is unsafe in a process with threads, as onnxruntime's).
DEFAULT_SIGNALS = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "signal.signal(signal.SIGTERM, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
)


def spawn(*args, log: Path, **kw) -> subprocess.Popen:
    """The installed console script in its own process (same pid), stdout/stderr to files."""
    command = [sys.executable, "-c", DEFAULT_SIGNALS, str(EXE), *map(str, args)]
    with open(log.with_suffix(".out"), "w") as out, open(log.with_suffix(".err"), "w") as err:
        return subprocess.Popen(command, stdout=out, stderr=err, **kw)


def finished(proc: subprocess.Popen, log: Path, timeout: float = 120) -> tuple[int, str, str]:
    rc = proc.wait(timeout)
    out, err = log.with_suffix(".out").read_text(), log.with_suffix(".err").read_text()
    OUTPUTS.append(out + err)
    clean(out + err, err)
    return rc, out, err


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"no {what} in {timeout} s"
        time.sleep(0.01)


def save_digits(folder: Path, indices, names=None) -> list[Path]:
    from onnxsal.models.digits_recipe import dataset

    _, _, x, _ = dataset()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, i in enumerate(indices):
        path = folder / (names[k] if names else f"d{i:02d}.png")
        Image.fromarray((x[i] * 255).astype(np.uint8), "L").save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def ex():
    return onnxsal.Explainer("digits-cnn")


@pytest.fixture(scope="module")
def three(tmp_path_factory) -> Path:
    """Three digit pictures (read-only: tests copy before changing)."""
    folder = tmp_path_factory.mktemp("three")
    save_digits(folder, range(3))
    return folder


@pytest.fixture(scope="module")
def ten(tmp_path_factory) -> Path:
    """Ten digit pictures for runs that are killed mid-way."""
    folder = tmp_path_factory.mktemp("ten")
    save_digits(folder, range(10))
    return folder


def own_map(ex, path: Path, method: str = "vanilla", **kw) -> np.ndarray:
    return ex.explain(ex.preprocess(Image.open(path)), method, **kw)[0]


# -- kills mid-run, then --resume -------------------------------------------------------------


def children(pid: int) -> set[int]:
    """The processes whose parent is `pid` (Linux's /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(stat.parent.name))
    return found


def gone(pids: set[int], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{pid}").exists() for pid in pids):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("workers", ["1", "2"], ids=["one-process", "two-workers"])
@pytest.mark.parametrize(
    "sig, code",
    [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGKILL, -signal.SIGKILL)],
    ids=["SIGINT", "SIGTERM", "SIGKILL"],
)
def test_a_signal_mid_run_then_resume_finishes_without_redoing(ten, tmp_path, sig, code, workers):
    out = tmp_path / "o"
    args = ("explain", "digits-cnn", ten, "-o", out, *SLOW, "--workers", workers)
    proc = spawn(*args, log=tmp_path / "killed")
    wait_for(lambda: len(journal_lines(out)) >= 1, proc, "journal line")
    helpers = children(proc.pid)
    assert (len(helpers) >= 2) == (workers == "2"), helpers  # workers (and spawn's tracker)
    proc.send_signal(sig)
    rc, _, err = finished(proc, tmp_path / "killed")
    assert rc == code, err
    assert gone(helpers), "a worker process outlived the command"
    done = journal_keys(out)
    assert 0 < len(done) < 10, "the signal did not land mid-run"
    assert len(done) == len(set(done))
    if sig != signal.SIGKILL:
        note = "interrupted:" if sig == signal.SIGINT else "terminated:"
        assert len(err.splitlines()) == 1 and err.startswith(note), err
        assert "--resume" in err
        assert sorted(r["input"] for r in audit(out)) == sorted(done)
    kept = {
        p: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file() and ".saliency." in p.name
    }
    rc, _, err = finished(spawn(*args, "--resume", log=tmp_path / "resumed"), tmp_path / "resumed")
    assert rc == 0, err
    rows = audit(out)
    assert sorted(r["name"] for r in rows) == sorted(p.name for p in ten.iterdir())
    assert all(r["status"] == "ok" for r in rows)
    again = journal_keys(out)
    assert all(again.count(key) == 1 for key in done), "a finished input was explained again"
    assert {p: p.stat().st_mtime_ns for p in kept} == kept


def test_two_concurrent_runs_into_one_folder(ten, tmp_path):
    out = tmp_path / "o"
    first = spawn("explain", "digits-cnn", ten, "-o", out, *SLOW, log=tmp_path / "first")
    lock = out / ".onnxsal" / "lock"
    wait_for(lambda: lock.exists() and lock.read_text().endswith(f":{first.pid}"), first, "lock")
    second = invoke("explain", "digits-cnn", ten, "-o", out, code=1)
    one_error(second, f"another onnxsal run (pid {first.pid})", str(out), "-o")
    rc, _, err = finished(first, tmp_path / "first")
    assert rc == 0, err
    rows = audit(out)
    assert len(rows) == 10 and all(r["status"] == "ok" for r in rows)
    assert len(journal_lines(out)) == 10  # the second run wrote nothing


# -- a full disk ------------------------------------------------------------------------------


class FillingDisk:
    """`os` for onnxsal.cli.files, whose rename fails with ENOSPC after `room` files."""

    def __init__(self, room: int):
        self.room = room

    def __getattr__(self, name):
        return getattr(os, name)

    def replace(self, src, dst):
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        self.room -= 1
        os.replace(src, dst)


def test_a_full_disk_stops_the_run_in_one_line_and_resume_finishes(ten, tmp_path, monkeypatch):
    import onnxsal.cli.files

    out = tmp_path / "o"
    # two batches (4 pictures and a table part each), then half of the third
    monkeypatch.setattr(onnxsal.cli.files, "os", FillingDisk(room=12))
    full = invoke("explain", "digits-cnn", ten, "-o", out, "--batch-size", "2", code=1)
    one_error(full, "disk is full", "--resume")
    assert not partials(out)
    done = journal_keys(out)
    assert len(done) == 4 and len(set(done)) == 4
    for row in map(strict_json, journal_lines(out)):
        assert all((out / rel).is_file() for rel in row["outputs"].values())
        assert (out / row["part"]).is_file()
    monkeypatch.undo()
    invoke("explain", "digits-cnn", ten, "-o", out, "--batch-size", "2", "--resume")
    rows = audit(out)
    assert len(rows) == 10 and all(r["status"] == "ok" for r in rows)
    again = journal_keys(out)
    assert all(again.count(key) == 1 for key in done)


def _tmpfs_permitted(where: Path) -> bool:
    probe = where / "probe"
    probe.mkdir()
    try:
        done = subprocess.run(
            ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs '{probe}'"],
            capture_output=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def test_a_real_full_disk_on_a_small_tmpfs(ten, tmp_path):
    """The same on a real 48 KB filesystem (where user namespaces may mount one)."""
    if not _tmpfs_permitted(tmp_path):
        pytest.skip("no tmpfs: unshare/mount not permitted here (the injected test runs)")
    disk, snap, logs = tmp_path / "disk", tmp_path / "snap", tmp_path / "logs"
    for d in (disk, snap, logs):
        d.mkdir()
    explain = f"'{EXE}' explain digits-cnn '{ten}' -o '{disk}/o' --batch-size 2"
    script = (
        f"mount -t tmpfs -o size=48k tmpfs '{disk}' || exit 99\n"
        f"{explain} >'{logs}/1.out' 2>'{logs}/1.err'; echo $? >'{logs}/1.rc'\n"
        f"cp -a '{disk}/o' '{snap}/full'\n"
        f"mount -o remount,size=8m '{disk}'\n"
        f"{explain} --resume >'{logs}/2.out' 2>'{logs}/2.err'; echo $? >'{logs}/2.rc'\n"
        f"cp -a '{disk}/o' '{snap}/done'\n"
    )
    subprocess.run(["unshare", "-rm", "sh", "-c", script], timeout=120, check=True)
    first = [(logs / f"1.{k}").read_text() for k in ("rc", "out", "err")]
    OUTPUTS.append(first[1] + first[2])
    clean(first[1] + first[2], first[2])
    assert first[0].strip() == "1", first
    errors = [line for line in first[2].splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "disk is full" in errors[0] and "--resume" in errors[0], first
    full = snap / "full"
    assert not partials(full)
    lines = journal_lines(full)
    for line in lines[:-1]:
        strict_json(line)  # only the last line may be torn by the full disk
    done = journal_keys(full)
    assert done and len(done) == len(set(done)) and len(done) < 10
    second = [(logs / f"2.{k}").read_text() for k in ("rc", "out", "err")]
    OUTPUTS.append(second[1] + second[2])
    clean(second[1] + second[2], second[2])
    assert second[0].strip() == "0", second
    rows = audit(snap / "done", torn=1)
    assert len(rows) == 10 and all(r["status"] == "ok" for r in rows)
    assert all(journal_keys(snap / "done").count(key) == 1 for key in done)


# -- the folder's own state: stale temporaries, torn journal lines, a left lock ----------------


def test_leftovers_of_a_killed_run_are_cleaned_and_a_torn_line_skipped(three, tmp_path):
    out = tmp_path / "o"
    invoke("explain", "digits-cnn", three, "-o", out)
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid stands for a killed run's
    stale = out / f".d0.png.vanilla.0badc0de.saliency.png.{HOST}-{dead.pid}-deadbeef.partial"
    stale.write_bytes(b"half a png")
    (out / ".onnxsal" / "lock").write_text(f"host:{dead.pid}")  # its flock went with it
    with open(out / ".onnxsal" / "journal.jsonl", "a") as f:
        f.write('{"input": "/x.png", "settings_id": "abc", "sta')  # a kill mid-write
    invoke("explain", "digits-cnn", three, "-o", out, "--resume")
    rows = audit(out, torn=1)  # the torn line is skipped, and closed: the next line parses
    assert len(rows) == 3 and not stale.exists()


def test_an_output_folder_is_never_read_as_input(three, tmp_path):
    out = tmp_path / "o"
    invoke("explain", "digits-cnn", three, "-o", out)
    one_error(invoke("explain", "digits-cnn", out, "-o", tmp_path / "p", code=1), "output folder")


@pytest.mark.parametrize(
    "broken", ["journal-is-a-folder", "state-is-a-file", "summary-is-a-folder"]
)
def test_an_output_folder_whose_own_files_are_in_the_way(three, tmp_path, broken):
    out = tmp_path / "o"
    out.mkdir()
    if broken == "journal-is-a-folder":
        (out / ".onnxsal" / "journal.jsonl").mkdir(parents=True)
    elif broken == "state-is-a-file":
        (out / ".onnxsal").write_text("")
    else:
        (out / "summary.json").mkdir()
    named = {"journal-is-a-folder": "journal", "state-is-a-file": "-o"}.get(broken, "summary.json")
    code = 2 if broken == "summary-is-a-folder" else 1  # a file no onnxsal run wrote: usage
    one_error(invoke("explain", "digits-cnn", three, "-o", out, code=code), named, code=code)
    assert not partials(out)


def test_odd_sample_files_fail_one_by_one(three, tmp_path):
    folder = tmp_path / "in"
    shutil.copytree(three, folder)
    one = (1, 1, 32, 32)
    for name, value in {
        "int.npy": np.ones(one, np.int64),
        "half.npy": np.ones(one, np.float16),
        "nan.npy": np.full(one, np.nan, np.float32),
        "scalar.npy": np.float32(3),
        "wrong.npy": np.zeros((1, 1, 28, 28), np.float32),
    }.items():
        np.save(folder / name, value)
    np.save(folder / "pickled.npy", np.array([1, "a"], dtype=object), allow_pickle=True)
    np.savez(folder / "two.npz", a=np.ones(one, np.float32), b=np.zeros(one, np.float32))
    (folder / "rows.csv").write_text("1,2,3\n4,5,6\n")
    (folder / "empty.png").write_bytes(b"")
    result = invoke("explain", "digits-cnn", folder, "-o", tmp_path / "o", code=1)
    failing = ["nan.npy", "scalar.npy", "wrong.npy", "pickled.npy", "two.npz", "rows.csv"]
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == len(failing) + 1, result.output
    for name in [*failing, "empty.png"]:
        assert sum(name in line for line in errors) == 1, name
    rows = by_name(audit(tmp_path / "o"))
    ok = {n for n, r in rows.items() if r["status"] == "ok"}
    assert ok == {"d00.png", "d01.png", "d02.png", "int.npy", "half.npy"}


def test_a_symlink_loop_among_the_inputs(three, tmp_path):
    folder = tmp_path / "in"
    shutil.copytree(three, folder)
    (folder / "loop.png").symlink_to("loop.png")
    result = invoke("explain", "digits-cnn", folder, "-o", tmp_path / "o", code=None)
    if result.exit_code:
        one_error(result, "loop.png")
    rows = by_name(audit(tmp_path / "o"))
    assert {n for n, r in rows.items() if r["status"] == "ok"} == {"d00.png", "d01.png", "d02.png"}


def test_a_fifo_among_the_inputs_never_hangs_the_run(three, tmp_path):
    """A named pipe called pipe.png: reading it would wait forever for a writer."""
    folder = tmp_path / "in"
    shutil.copytree(three, folder)
    os.mkfifo(folder / "pipe.png")
    log = tmp_path / "fifo"
    proc = spawn("explain", "digits-cnn", folder, "-o", tmp_path / "o", log=log)
    try:
        proc.wait(10)  # it takes 2 s
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("the run hangs on a FIFO named like a picture")
    rc, _, err = finished(proc, log)
    assert rc == 0 or (rc == 1 and err.count("error:") == 1 and "pipe.png" in err), err
    rows = by_name(audit(tmp_path / "o"))
    assert {n for n, r in rows.items() if r["status"] == "ok"} == {"d00.png", "d01.png", "d02.png"}


# -- names that collide -----------------------------------------------------------------------


def test_same_stem_different_extension_in_one_folder(tmp_path, ex):
    folder = tmp_path / "in"
    png, jpg = save_digits(folder, [0, 1], ["x.png", "x.jpg"])
    out = tmp_path / "o"
    invoke("explain", "digits-cnn", folder, "-o", out, "--format", "npy")
    rows = by_name(audit(out))
    assert sorted(rows) == ["x.jpg", "x.png"]
    assert not set(rows["x.png"]["outputs"].values()) & set(rows["x.jpg"]["outputs"].values())
    for name, path in (("x.png", png), ("x.jpg", jpg)):
        saved = np.load(out / rows[name]["outputs"]["raw"])
        np.testing.assert_allclose(saved, own_map(ex, path), rtol=1e-5, atol=1e-7)


def test_names_differing_only_in_case_never_share_a_file(tmp_path):
    """On a case-insensitive disk X.png's outputs would overwrite x.png's."""
    folder = tmp_path / "in"
    save_digits(folder, [0, 1], ["x.png", "X.png"])
    out = tmp_path / "o"
    invoke("explain", "digits-cnn", folder, "-o", out)
    files = [f.casefold() for r in audit(out) for f in r["outputs"].values()]
    assert len(files) == 4 and len(set(files)) == 4


@pytest.mark.parametrize("given", ["files", "folders"])
def test_same_name_in_two_folders(tmp_path, ex, given):
    a, b = tmp_path / "a", tmp_path / "b"
    (pa,) = save_digits(a, [0], ["x.png"])
    (pb,) = save_digits(b, [1], ["x.png"])
    out = tmp_path / "o"
    args = (pa, pb) if given == "files" else (a, b)
    invoke("explain", "digits-cnn", *args, "-o", out, "--format", "npy")
    rows = {Path(r["input"]): r for r in audit(out)}
    assert sorted(rows) == sorted([pa.resolve(), pb.resolve()])
    assert rows[pa.resolve()]["name"] != rows[pb.resolve()]["name"]
    for path in (pa, pb):
        saved = np.load(out / rows[path.resolve()]["outputs"]["raw"])
        np.testing.assert_allclose(saved, own_map(ex, path), rtol=1e-5, atol=1e-7)


def test_a_later_run_of_a_namesake_keeps_the_first_ones_outputs(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    (pa,) = save_digits(a, [0], ["x.png"])
    (pb,) = save_digits(b, [1], ["x.png"])
    out = tmp_path / "o"
    invoke("explain", "digits-cnn", pa, "-o", out)
    first = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob("x.png.*")}
    invoke("explain", "digits-cnn", pb, "-o", out)
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in first} == first
    rows = {Path(r["input"]): r for r in audit(out)}
    assert sorted(rows) == sorted([pa.resolve(), pb.resolve()])
    assert all(out / f in first for f in rows[pa.resolve()]["outputs"].values())
    assert not any(out / f in first for f in rows[pb.resolve()]["outputs"].values())


def test_a_multi_sample_npy_between_others_shifts_nothing(tmp_path, ex):
    from onnxsal.models.digits_recipe import dataset

    x = dataset()[2][:5, None].astype(np.float32)  # already scaled to [0, 1]
    folder = tmp_path / "in"
    folder.mkdir()
    np.save(folder / "a.npy", x[0:1])
    np.save(folder / "b.npy", x[1:4])
    np.save(folder / "c.npy", x[4:5])
    out = tmp_path / "o"
    invoke("explain", "digits-cnn", folder, "-o", out, "--batch-size", "2")
    rows = by_name(audit(out))
    expected = {"a.npy": 0, "b.npy.0": 1, "b.npy.1": 2, "b.npy.2": 3, "c.npy": 4}
    assert sorted(rows) == sorted(expected)
    for name, k in expected.items():
        saved = np.load(out / rows[name]["outputs"]["raw"])
        np.testing.assert_allclose(saved, ex.explain(x[k : k + 1])[0], rtol=1e-5, atol=1e-7)
        assert rows[name]["target"] == int(ex.predict(x[k : k + 1]).argmax())


def test_default_output_inside_the_input_folder_twice(three, tmp_path, monkeypatch):
    folder = tmp_path / "cwd"
    shutil.copytree(three, folder)
    monkeypatch.chdir(folder)
    invoke("explain", "digits-cnn", ".")
    invoke("explain", "digits-cnn", ".")
    invoke("explain", "digits-cnn", "**/*.png")  # a glob through the output folder as well
    rows = audit(folder / "onnxsal-out")
    inputs = {Path(r["input"]).relative_to(folder.resolve()) for r in rows}
    assert inputs == {Path("d00.png"), Path("d01.png"), Path("d02.png")}


def test_output_folder_equal_to_the_input_folder_is_refused(three, tmp_path):
    folder = tmp_path / "in"
    shutil.copytree(three, folder)
    before = sorted(p.name for p in folder.iterdir())
    result = invoke("explain", "digits-cnn", folder, "-o", folder, code=2)
    one_error(result, "output folder", "-o", code=2)
    assert sorted(p.name for p in folder.iterdir()) == before


def test_an_input_named_like_an_output_is_never_replaced(tmp_path):
    """-o is the folder of a file input, which is named as its own output would be."""
    folder = tmp_path / "in"
    (first,) = save_digits(folder, [0], ["d.png"])
    invoke("explain", "digits-cnn", first, "-o", tmp_path / "probe")
    (row,) = audit(tmp_path / "probe")
    victim = folder / Path(row["outputs"]["saliency"]).name  # d.png's own saliency name
    save_digits(folder, [1], [victim.name])
    content = victim.read_bytes()
    result = invoke("explain", "digits-cnn", first, victim, "-o", folder, code=None)
    assert victim.read_bytes() == content
    if result.exit_code:
        one_error(result, victim.name)


def test_resume_with_another_method_explains_again(three, tmp_path, ex):
    out = tmp_path / "o"
    invoke("explain", "digits-cnn", three, "-o", out, "--format", "npy")
    vanilla = {p: p.read_bytes() for p in out.glob("*.npy")}
    invoke("explain", "digits-cnn", three, "-o", out, "--format", "npy", "-m", "guided", "--resume")
    rows = audit(out)
    assert sorted(r["method"] for r in rows) == ["guided"] * 3 + ["vanilla"] * 3
    assert {p: p.read_bytes() for p in vanilla} == vanilla
    for row in rows:
        saved = np.load(out / row["outputs"]["raw"])
        want = own_map(ex, three / row["name"], row["method"])
        np.testing.assert_allclose(saved, want, rtol=1e-5, atol=1e-7)


def test_resume_explains_again_a_changed_input_and_a_deleted_output(three, tmp_path, ex):
    folder, out = tmp_path / "in", tmp_path / "o"
    shutil.copytree(three, folder)
    invoke("explain", "digits-cnn", folder, "-o", out, "--format", "npy")
    rows = by_name(audit(out))
    (out / rows["d01.png"]["outputs"]["overlay"]).unlink()
    save_digits(folder, [7], ["d02.png"])  # new content under an old name
    os.utime(folder / "d02.png", ns=(1, 1))
    invoke("explain", "digits-cnn", folder, "-o", out, "--format", "npy", "--resume")
    rows = by_name(audit(out))
    assert len(rows) == 3 and len(journal_lines(out)) == 5  # d01 and d02 redone, d00 not
    saved = np.load(out / rows["d02.png"]["outputs"]["raw"])
    np.testing.assert_allclose(saved, own_map(ex, folder / "d02.png"), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("spelling", ["same", "dot", "symlink"])
def test_export_never_replaces_its_model(tmp_path, spelling, monkeypatch):
    model = tmp_path / "model.onnx"
    shutil.copy(locate("digits-cnn"), model)
    content = model.read_bytes()
    monkeypatch.chdir(tmp_path)
    target = {"same": model, "dot": "./sub/../model.onnx", "symlink": tmp_path / "link.onnx"}
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.onnx").symlink_to(model)
    one_error(
        invoke("export", model, "-o", target[spelling], code=2),
        "also what this command reads",
        code=2,
    )
    assert model.read_bytes() == content


# -- injection: labels and file names ---------------------------------------------------------

HTML_LABELS = [
    "<script>document.title='pwned'</script>",
    '"><img src=x onerror=alert(1)>',
    "</figcaption><script>alert(2)</script>",
    "<svg onload=alert(3)>",
    "' onmouseover='alert(4)",
    "<iframe src=javascript:alert(5)></iframe>",
    "{{ 7*7 }}",
    "<b>bold</b>\x1b[31m",
    "<!--",
    "<style>body{display:none}</style>",
]
CSV_LABELS = [
    '=HYPERLINK("http://x","y")',
    "+1",
    "-2",
    "@SUM(A1)",
    "\tx",
    "\rx",
    "\x1b[31mred\x1b[0m",
    "=1+1",
    "+cmd|' /C calc'!A0",
    "-@x",
]


def labelled(tmp_path: Path, labels: list[str], name: str = "labelled.onnx") -> Path:
    model = onnx.load(locate("digits-cnn"))
    metadata.write(model, labels=labels)
    path = tmp_path / name
    onnx.save(model, path)
    return path


class Page(html.parser.HTMLParser):
    """What a browser would build: elements, event handlers, images, captions' text."""

    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.handlers: list[tuple[str, str]] = []
        self.images: list[str] = []
        self.captions: list[str] = []
        self.text = ""
        self._in_caption = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.handlers += [(tag, k) for k, _ in attrs if k.startswith("on")]
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag == "figcaption":
            self._in_caption = True
            self.captions.append("")

    def handle_endtag(self, tag):
        if tag == "figcaption":
            self._in_caption = False

    def handle_data(self, data):
        self.text += data
        if self._in_caption:
            self.captions[-1] += data


def test_hostile_labels_stay_text_in_the_demo_page(tmp_path):
    model = labelled(tmp_path, HTML_LABELS, 'm"><svg onload=alert(0)>.onnx')
    out = tmp_path / "demo"
    result = invoke("demo", "--model", model, "-o", out)
    page = Page()
    page.feed((out / "index.html").read_text(encoding="utf-8"))
    assert page.tags.count("script") == 1 and page.tags.count("style") == 1
    assert not {"svg", "iframe", "b"} & set(page.tags) and not page.handlers
    assert sorted(page.images) == ["astronaut.png", "chelsea.png", "coffee.png"]
    assert len(page.captions) == 3
    for caption in page.captions:  # each top-1 label verbatim, as text
        assert any(caption.endswith(f"'{label}'") for label in HTML_LABELS), caption
    assert 'm"><svg onload=alert(0)>.onnx' in page.text
    assert "\x1b" not in result.output


def test_hostile_labels_are_neutral_in_the_summary_csv(tmp_path):
    from onnxsal.models.digits_recipe import dataset

    _, _, _, y = dataset()
    one_of_each = [int(np.flatnonzero(y == k)[0]) for k in range(10)]
    folder = tmp_path / "in"
    save_digits(folder, one_of_each)
    out = tmp_path / "o"
    invoke("explain", labelled(tmp_path, CSV_LABELS), folder, "-o", out)
    rows = {r["input"]: r for r in audit(out)}
    assert len({r["label"] for r in rows.values()}) >= 8  # most classes predicted right
    with open(out / "summary.csv", newline="", encoding="utf-8") as f:
        for record in csv.DictReader(f):
            want = rows[record["input"]]["label"]
            got = record["label"]
            assert got[1:] == want if got.startswith("'") else got == want
            assert want in CSV_LABELS
            for entry in json.loads(record["top5"]):
                assert entry["label"] in CSV_LABELS


def test_hostile_labels_never_reach_the_terminal_raw(tmp_path, three):
    model = labelled(tmp_path, CSV_LABELS)
    for args in (
        ("inspect", model),
        ("explain", model, three, "-o", tmp_path / "o", "-t", "\x1b[31mred\x1b[0m"),
        ("explain", model, three, "-o", tmp_path / "o", "-t", "\x1b[2Jnot-a-label"),
    ):
        invoke(*args, code=None)  # `invoke` refuses an ESC byte in the output
    one_error(
        invoke("explain", model, three, "-o", tmp_path / "o", "-t", "\x1b[2Jx", code=1),
        "\\x1b[2Jx",
    )


HOSTILE_NAMES = [
    "=cmd.png",
    "-rf.png",
    "+sum.png",
    "@at.png",
    "\tlead.png",
    "with space.png",
    "quote'\"s.png",
    "ünïcødé 数字.png",
    "semi;colon,comma.png",
    "new\nline.png",
    "carriage\rreturn.png",
]


def test_hostile_file_names_are_explained_and_neutral_in_csv(tmp_path):
    folder = tmp_path / "in"
    save_digits(folder, range(len(HOSTILE_NAMES)), HOSTILE_NAMES)
    (folder / "bad\x1b[2J.png").write_text("not a picture")
    out = tmp_path / "o"
    result = invoke("explain", "digits-cnn", folder, "-o", out, code=1)
    one_error(result, "bad\\x1b[2J.png", "not a readable image")
    rows = audit(out)
    ok = sorted(r["name"] for r in rows if r["status"] == "ok")
    assert ok == sorted(HOSTILE_NAMES)
    with open(out / "summary.csv", newline="", encoding="utf-8") as f:
        names = [r["name"] for r in csv.DictReader(f)]
    recovered = [
        n[1:] if n.startswith("'") and n[1:].startswith(FORMULA_STARTS) else n for n in names
    ]
    assert sorted(recovered) == sorted([*HOSTILE_NAMES, "bad\x1b[2J.png"])


def test_hostile_file_names_given_as_arguments(tmp_path, monkeypatch):
    save_digits(tmp_path, [0, 1], ["=cmd.png", "-rf.png"])
    monkeypatch.chdir(tmp_path)
    invoke("explain", "digits-cnn", "-o", "o", "--", "=cmd.png", "-rf.png")
    assert sorted(r["name"] for r in audit(tmp_path / "o")) == ["-rf.png", "=cmd.png"]


# -- exhaustion: bombs and huge sizes ---------------------------------------------------------


def bomb(path: Path, width: int = 40000, height: int = 40000) -> Path:
    """A tiny PNG whose header declares width x height (CRC fixed, so it opens)."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    start = data.index(b"IHDR")
    data[start + 4 : start + 12] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    crc = zlib.crc32(bytes(data[start : start + 17]))
    data[start + 17 : start + 21] = crc.to_bytes(4, "big")
    path.write_bytes(bytes(data))
    return path


def test_a_bomb_png_among_good_pictures_is_one_failed_input(three, tmp_path):
    folder = tmp_path / "in"
    shutil.copytree(three, folder)
    bomb(folder / "b.png")
    out = tmp_path / "o"
    one_error(invoke("explain", "digits-cnn", folder, "-o", out, code=1), "b.png", "--max-pixels")
    rows = by_name(audit(out))
    assert rows["b.png"]["status"] == "failed"
    assert sorted(n for n, r in rows.items() if r["status"] == "ok") == [
        "d00.png",
        "d01.png",
        "d02.png",
    ]


def test_a_lowered_max_pixels_refuses_ordinary_pictures_one_by_one(three, tmp_path):
    result = invoke(
        "explain", "digits-cnn", three, "-o", tmp_path / "o", "--max-pixels", "100", code=1
    )
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 3 and all("--max-pixels" in e for e in errors)
    assert all(r["status"] == "failed" for r in audit(tmp_path / "o"))


def test_odd_pictures_leak_no_python_warning_on_real_stderr(three, tmp_path):
    """In a real process: Pillow's warnings (huge, corrupt EXIF, odd modes) stay one line."""
    folder = tmp_path / "in"
    shutil.copytree(three, folder)
    bomb(folder / "huge.png", 9500, 9500)  # over Pillow's warning size, under --max-pixels
    tags = [(0x0112, 3, 1, struct.pack("<HH", 6, 0)), (0x010E, 2, 1000, struct.pack("<L", 5000))]
    ifd = b"".join(struct.pack("<HHL", *tag[:3]) + tag[3] for tag in tags)
    exif = b"Exif\0\0II*\0" + struct.pack("<LH", 8, len(tags)) + ifd + b"\0" * 4
    Image.new("RGB", (40, 20), (200, 10, 10)).save(folder / "exif.jpg", exif=exif)  # tag past end
    pal = Image.new("P", (40, 40))
    pal.save(folder / "palette.png", transparency=b"\x00" * 16)
    Image.fromarray(np.full((40, 40), 40000, np.uint16)).save(folder / "sixteen.png")
    log = tmp_path / "odd"
    args = ("explain", "digits-cnn", folder, "-o", tmp_path / "o", "--max-pixels", "100000000")
    rc, _, err = finished(spawn(*args, log=log), log)
    assert rc == 1 and err.count("error:") == 1 and "huge.png: not a readable image" in err, err
    rows = by_name(audit(tmp_path / "o"))
    ok = {"d00.png", "d01.png", "d02.png", "exif.jpg", "palette.png", "sixteen.png"}
    assert {n for n, r in rows.items() if r["status"] == "ok"} == ok


# -- NaN and infinity -------------------------------------------------------------------------


def test_nan_and_infinite_outputs_never_make_invalid_json(tmp_path):
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    model = make_model(
        [helper.make_node("Log", ["x"], ["l"]), helper.make_node("MatMul", ["l", "w"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [w],
    )
    path = tmp_path / "log.onnx"
    onnx.save(model, path)
    folder = tmp_path / "in"
    folder.mkdir()
    np.save(folder / "good.npy", np.full((1, 4), 2.0, np.float32))
    np.save(folder / "nan.npy", np.full((1, 4), -1.0, np.float32))
    np.save(folder / "inf.npy", np.zeros((1, 4), np.float32))  # log 0 = -inf
    out = tmp_path / "o"
    result = invoke("explain", path, folder, "-o", out, code=1)
    assert result.output.count("error:") == 2 and "NaN/Inf" in result.output
    rows = by_name(audit(out))
    assert rows["good.npy"]["status"] == "ok"
    assert rows["nan.npy"]["status"] == rows["inf.npy"]["status"] == "failed"


# -- every argument mistake: one line, exit 2 (1 where only the model can tell) -----------------

USAGE_ERRORS = [
    (["--size", "96"], "--size"),
    (["--size", "0,0"], "--size"),
    (["--size", "100000,100000"], "--size"),
    (["--size", "32,abc"], "--size"),
    (["--size", "32,32,3"], "--size"),
    (["--crop", "-1"], "--crop"),
    (["--crop", "2"], "--crop"),
    (["--crop", "0"], "--crop"),
    (["--layer", ""], "--layer"),
    (["--layer", "   "], "--layer"),
    (["--std", "0"], "--std"),
    (["--std", "1,0"], "--std"),
    (["--mean", "nan"], "--mean"),
    (["--scale", "inf"], "--scale"),
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "100000"], "--batch-size"),
    (["-m", "smoothgrad", "--samples", "0"], "--samples"),
    (["-m", "smoothgrad", "--samples", "99999999"], "--samples"),
    (["-m", "smoothgrad", "--samples", "2.5"], "--samples"),
    (["-m", "integrated_gradients", "--steps", "-3"], "--steps"),
    (["-m", "vanilla", "--steps", "5"], "steps"),
    (["--colormap", "nope"], "--colormap"),
    (["--alpha", "3"], "--alpha"),
    (["--max-pixels", "0"], "--max-pixels"),
    (["--unit", "-1"], "--unit"),
    (["-m", "nope"], "--method"),
    (["--format", "gif"], "--format"),
    (["--feed", "x"], "--feed"),
    (["--bogus"], "--bogus"),
    (["-o"], "-o"),
]


@pytest.mark.parametrize(
    "args, named", USAGE_ERRORS, ids=[" ".join(a) or "empty" for a, _ in USAGE_ERRORS]
)
def test_argument_mistakes_are_one_usage_line(three, tmp_path, args, named):
    result = invoke("explain", "digits-cnn", three, "-o", tmp_path / "o", *args, code=2)
    one_error(result, named, code=2)
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("*.png"))


@pytest.mark.parametrize(
    "args",
    [["explain", "digits-cnn"], ["explain"], ["export", "digits-cnn"], ["inspect"], ["nope"]],
    ids=["no-inputs", "no-model", "export-no-o", "inspect-nothing", "no-command"],
)
def test_missing_arguments_and_unknown_commands(args):
    one_error(invoke(*args, code=2), code=2)


TARGET_ERRORS = [
    ("99999999999999999999", "too large"),
    ("9223372036854775808", "9223372036854775808"),  # 2**63: int64 wraps it negative
    ("10", "out of range"),
    ("-1", ">= 0"),
    ("3.5", "3.5"),
    ("nolabel", "nolabel"),
    ("", "empty"),
    ("class=", "class"),
    ("box=1,2", "dense output"),
    ("index=0,0,0,0,0", "index"),
]


@pytest.mark.parametrize("text, named", TARGET_ERRORS, ids=[t or "empty" for t, _ in TARGET_ERRORS])
def test_target_mistakes_are_one_line(three, tmp_path, text, named):
    """-t is read against the model (its labels, its outputs): exit 1, as the existing
    `-t 12` (out of range) has it, not a usage error."""
    result = invoke("explain", "digits-cnn", three, "-o", tmp_path / "o", "-t", text, code=1)
    line = one_error(result, named)
    assert "np.int64" not in line and "np.float" not in line, line  # numbers, not reprs
    assert "-9223372036854775808" not in line, line  # the number given, not a wrapped one


WRAPS_TO_MINUS_ONE = str(2**64 - 1)  # as int64: -1, which means "each input's top-1"


@pytest.mark.parametrize(
    "args",
    [
        ("-t", WRAPS_TO_MINUS_ONE),
        ("-t", f"class={WRAPS_TO_MINUS_ONE}"),
        ("--layer", "5", "-t", WRAPS_TO_MINUS_ONE),
        ("--layer", "5", "--unit", WRAPS_TO_MINUS_ONE),
    ],
    ids=["t", "class=", "layer-t", "layer-unit"],
)
def test_an_index_past_int64_is_refused_not_read_as_top1(three, tmp_path, args):
    out = tmp_path / "o"
    result = invoke("explain", "digits-cnn", three / "d00.png", "-o", out, *args, code=None)
    assert result.exit_code in (1, 2), "2**64-1 was explained as some other target"
    one_error(result, WRAPS_TO_MINUS_ONE, code=result.exit_code)
    assert not list(out.glob("*.png"))


def test_export_refuses_an_index_past_int64(tmp_path):
    out = tmp_path / "e.onnx"
    result = invoke("export", "digits-cnn", "-t", WRAPS_TO_MINUS_ONE, "-o", out, code=None)
    assert result.exit_code in (1, 2) and not out.exists(), "a wrapped target was baked in"
    one_error(result, WRAPS_TO_MINUS_ONE, code=result.exit_code)


def test_layer_and_target_together_use_the_target_or_refuse(three, tmp_path, ex):
    out = tmp_path / "o"
    args = ("explain", "digits-cnn", three / "d00.png", "-o", out, "--format", "npy")
    result = invoke(*args, "--layer", "5", "-t", "3", code=None)
    if result.exit_code:
        one_error(result, "-t", code=result.exit_code)
        return
    (row,) = audit(out)
    saved = np.load(out / row["outputs"]["raw"])
    x = ex.preprocess(Image.open(three / "d00.png"))
    np.testing.assert_allclose(saved, ex.explain(x, layer="5", unit=3)[0], rtol=1e-5, atol=1e-7)
    assert not np.allclose(saved, ex.explain(x, layer="5", unit=0)[0])
    one_error(
        invoke(*args, "--layer", "5", "-t", "3", "--unit", "4", code=None), "-t", code=2
    )  # two different units


def test_unknown_layer_is_one_line(three, tmp_path):
    one_error(
        invoke("explain", "digits-cnn", three, "-o", tmp_path / "o", "--layer", "nope", code=1),
        "no layer named",
    )


# -- models that are odd ----------------------------------------------------------------------


def _with_preprocess(tmp_path: Path, text: str) -> Path:
    model = onnx.load(locate("digits-cnn"))
    metadata.write(model, preprocess=text)
    path = tmp_path / "odd.onnx"
    onnx.save(model, path)
    return path


@pytest.mark.parametrize(
    "recipe",
    ['{"size": [32, 32', '{"size": [32, 32], "std": [0]}', '{"size": [0, 32]}', "[]"],
    ids=["not-json", "std-0", "size-0", "a-list"],
)
def test_metadata_preprocessing_that_cannot_work(three, tmp_path, recipe):
    path = _with_preprocess(tmp_path, recipe)
    result = invoke("explain", path, three, "-o", tmp_path / "o", code=1)
    warned = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "onnxsal.preprocess" in warned[0], result.output
    line = one_error(result, "--size")
    assert "d00.png" not in line  # the model's recipe is at fault, not an input
    invoke("explain", path, three, "-o", tmp_path / "o2", "--size", "32,32", "--scale", "0.004")


def _npy(tmp_path: Path, shape, value: float = 1.0) -> Path:
    path = tmp_path / "x.npy"
    np.save(path, np.full(shape, value, np.float32))
    return path


def test_a_model_with_a_scalar_output(tmp_path):
    model = make_model(
        [helper.make_node("ReduceSum", ["x"], ["y"], keepdims=0)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
    )
    path = tmp_path / "scalar.onnx"
    onnx.save(model, path)
    result = invoke("explain", path, _npy(tmp_path, (1, 4)), "-o", tmp_path / "o", code=None)
    if result.exit_code:
        one_error(result, "no batch axis")
    else:
        (row,) = audit(tmp_path / "o")
        np.testing.assert_allclose(np.load(tmp_path / "o" / row["outputs"]["raw"]), 1.0)


def test_a_model_with_an_if_on_the_path(tmp_path):
    """The branch taken depends on the input: each input's map is its own branch's gradient."""
    w1 = np.arange(12, dtype=np.float32).reshape(4, 3)
    w2 = -np.arange(12, dtype=np.float32).reshape(4, 3)

    def branch(name, w):
        return helper.make_graph(
            [helper.make_node("MatMul", ["x", f"w_{name}"], [f"y_{name}"])],
            name,
            [],
            [helper.make_tensor_value_info(f"y_{name}", TensorProto.FLOAT, ["N", 3])],
            [numpy_helper.from_array(w, f"w_{name}")],
        )

    model = make_model(
        [
            helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
            helper.make_node("Greater", ["s", "zero"], ["c"]),
            helper.make_node(
                "If", ["c"], ["y"], then_branch=branch("then", w1), else_branch=branch("else", w2)
            ),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(np.array(0, np.float32), "zero")],
    )
    path = tmp_path / "if.onnx"
    onnx.save(model, path)
    folder = tmp_path / "in"
    folder.mkdir()
    np.save(folder / "up.npy", np.ones((1, 4), np.float32))
    np.save(folder / "down.npy", -np.ones((1, 4), np.float32))
    out = tmp_path / "o"
    result = invoke("explain", path, folder, "-o", out, "-t", "2", code=None)
    if result.exit_code:
        line = one_error(result, "If")
        assert "does not depend on the input" not in line
        return
    rows = by_name(audit(out))
    np.testing.assert_allclose(np.load(out / rows["up.npy"]["outputs"]["raw"])[0], w1[:, 2])
    np.testing.assert_allclose(np.load(out / rows["down.npy"]["outputs"]["raw"])[0], w2[:, 2])


@pytest.mark.parametrize("offset", [-5, 10**12])
def test_external_data_with_an_offset_outside_the_file(tmp_path, offset):
    model = external_data_model("w.bin", offset=offset, length=32)
    (tmp_path / "w.bin").write_bytes(np.ones(8, np.float32).tobytes())
    path = tmp_path / "ext.onnx"
    path.write_bytes(model.SerializeToString())
    one_error(invoke("inspect", path, code=1), "offset")
    one_error(
        invoke("explain", path, _npy(tmp_path, (1, 4)), "-o", tmp_path / "o", code=1), "offset"
    )


# -- the API: bad arguments raise OnnxsalError subclasses ---------------------------------------

X = np.zeros((2, 1, 32, 32), np.float32)
BIG = 2**63  # one past int64: wraps to a negative number when cast
API_ERRORS = [  # (case, arguments, a fragment the message must hold)
    ("target-huge", dict(target=10**30), "too large"),
    ("target-2**63", dict(target=BIG), str(BIG)),
    ("target-2**63-numpy", dict(target=np.uint64(BIG)), str(BIG)),
    ("target-2**63-per-sample", dict(target=np.array([BIG, 0], np.uint64)), str(BIG)),
    ("target-2**64-1", dict(target=2**64 - 1), str(2**64 - 1)),  # wraps to -1: "top-1"
    ("target-2**64-1-numpy", dict(target=np.uint64(2**64 - 1)), str(2**64 - 1)),
    ("unit-2**64-1", dict(layer="5", unit=2**64 - 1), str(2**64 - 1)),
    ("target-negative", dict(target=-1), ">= 0"),
    ("target-float", dict(target=2.5), "2.5"),
    ("target-nan", dict(target=float("nan")), "nan"),
    ("target-bool", dict(target=True), "True"),
    ("target-no-label", dict(target="no such label"), "no such label"),
    ("target-out-of-range", dict(target=10), "out of range"),
    ("target-count", dict(target=[1, 2, 3]), "3 entries for 2 samples"),
    ("target-object", dict(target=object()), "target"),
    ("batch-size-0", dict(batch_size=0), "batch_size"),
    ("batch-size-negative", dict(batch_size=-1), "batch_size"),
    ("batch-size-text", dict(batch_size="a"), "batch_size"),
    ("batch-size-float", dict(batch_size=2.5), "batch_size"),
    ("layer-unknown", dict(layer="nope", unit=0), "nope"),
    ("layer-empty", dict(layer="", unit=0), "non-empty"),
    ("layer-blank", dict(layer="  ", unit=0), "non-empty"),
    ("layer-int", dict(layer=5, unit=0), "string"),
    ("unit-out-of-range", dict(layer="5", unit=99), "out of range"),
    ("unit-negative", dict(layer="5", unit=-1), ">= 0"),
    ("unit-float", dict(layer="5", unit=1.5), "1.5"),
    ("channel-axis-far", dict(layer="5", unit=0, channel_axis=7), "axis 7"),
    ("channel-axis-negative", dict(layer="5", unit=0, channel_axis=-9), "axis -9"),
    ("channel-axis-text", dict(layer="5", unit=0, channel_axis="a"), "axis"),
    ("method-unknown", dict(method="nope"), "nope"),
    ("option-unknown", dict(bogus=1), "bogus"),
    ("option-out-of-range", dict(method="smoothgrad", n_samples=0), "n_samples"),
    ("x-text", dict(x=np.full((1, 1, 32, 32), "a")), "real numbers"),
    ("x-object", dict(x=np.array([None, 1], dtype=object)), "real numbers"),
    ("x-complex", dict(x=np.zeros((1, 1, 32, 32), np.complex64)), "real numbers"),
    ("x-rank-2", dict(x=np.zeros((32, 32), np.float32)), "4 axes"),
    ("x-rank-5", dict(x=np.zeros((1, 1, 1, 32, 32), np.float32)), "4 axes"),
    ("x-size", dict(x=np.zeros((1, 1, 28, 28), np.float32)), "must be 32"),
    ("x-nan", dict(x=np.full((1, 1, 32, 32), np.nan, np.float32)), "NaN"),
    ("x-empty-batch", dict(x=np.zeros((0, 1, 32, 32), np.float32)), "empty"),
    ("x-none", dict(x=None), "x must"),
]


@pytest.mark.parametrize("call", ["explain", "run"])
@pytest.mark.parametrize(
    "kwargs, fragment", [c[1:] for c in API_ERRORS], ids=[c[0] for c in API_ERRORS]
)
def test_api_argument_errors_are_onnxsal_errors(ex, call, kwargs, fragment):
    kwargs = dict(kwargs)
    x = kwargs.pop("x", X)
    method = kwargs.pop("method", "vanilla")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            getattr(ex, call)(x, method, **kwargs)
        except onnxsal.OnnxsalError as exc:
            assert fragment.lower() in str(exc).lower(), str(exc)
            assert f"-{BIG}" not in str(exc), str(exc)  # the number given, not a wrapped one
            return
        except Exception as exc:  # the point: which class it is
            pytest.fail(f"{type(exc).__name__} (not an OnnxsalError): {exc}")
    pytest.fail(f"{kwargs} was accepted")


# -- real processes: one line on the real stderr ------------------------------------------------


def test_usage_errors_in_a_real_process_are_one_stderr_line(tmp_path, three):
    for k, args in enumerate(
        (
            ["explain", "digits-cnn", three, "--size", "96"],
            ["explain", "digits-cnn", three, "-t", "99999999999999999999", "-o", tmp_path / "o"],
        )
    ):
        log = tmp_path / f"u{k}"
        rc, out, err = finished(spawn(*args, log=log, cwd=tmp_path), log)
        assert rc in (1, 2) and out == "" and len(err.splitlines()) == 1, err
        assert err.startswith("error:")


# -- found by an independent review ------------------------------------------------------------


def test_a_summary_file_given_as_input_is_refused_and_kept(three, tmp_path):
    out = tmp_path / "o"
    invoke("explain", "digits-cnn", three, "-o", out)
    kept = {n: (out / n).read_bytes() for n in ("summary.json", "summary.csv")}
    for name in kept:  # summary.csv reads as a samples file
        one_error(invoke("explain", "digits-cnn", out / name, "-o", out, code=2), "-o", code=2)
    assert {n: (out / n).read_bytes() for n in kept} == kept


def test_summaries_no_run_wrote_are_never_replaced(three, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "summary.csv").write_text("someone's,own,table\n")
    one_error(invoke("explain", "digits-cnn", three, "-o", out, code=2), "summary.csv", code=2)
    assert (out / "summary.csv").read_text() == "someone's,own,table\n"


def test_an_output_name_that_cannot_be_written_fails_only_its_input(three, tmp_path):
    out = tmp_path / "o"
    invoke("explain", "digits-cnn", three / "d01.png", "-o", out)
    (row,) = audit(out)
    saliency = out / row["outputs"]["saliency"]
    saliency.unlink()
    saliency.mkdir()  # a folder where d01's map goes
    result = invoke("explain", "digits-cnn", three, "-o", out, code=1)
    one_error(result, "d01.png")
    rows = by_name(audit(out))
    assert rows["d01.png"]["status"] == "failed" and saliency.is_dir()
    assert rows["d00.png"]["status"] == rows["d02.png"]["status"] == "ok"


def test_an_output_folder_removed_mid_run_stops_it(ten, tmp_path):
    out = tmp_path / "o"
    log = tmp_path / "removed"
    proc = spawn("explain", "digits-cnn", ten, "-o", out, *SLOW, log=log)
    wait_for(lambda: len(journal_lines(out)) >= 1, proc, "journal line")
    shutil.rmtree(out)
    rc, _, err = finished(proc, log)
    assert rc == 1 and err.count("error:") == 1 and "removed or replaced" in err, err
    assert not out.exists() or not list(out.rglob("*.png")), "it went on writing"


def test_live_temporaries_in_a_nested_output_folder_are_left_alone(three, tmp_path):
    """A run into o/ must not remove the files another live run is writing into o/inner/."""
    out = tmp_path / "o"
    inner = out / "inner"
    inner.mkdir(parents=True)
    writer = subprocess.Popen(["sleep", "60"])  # the other run, alive
    try:
        live = inner / f".x.png.vanilla.0badc0de.saliency.png.{HOST}-{writer.pid}-0a0b0c0d.partial"
        live.write_bytes(b"being written")
        elsewhere = out / ".y.png.vanilla.0badc0de.saliency.png.0f0f0f-1-0a0b0c0d.partial"
        elsewhere.write_bytes(b"another host's")  # pid 1 there means nothing here
        invoke("explain", "digits-cnn", three, "-o", out)
        assert live.read_bytes() == b"being written" and elsewhere.exists()
    finally:
        writer.kill()
        writer.wait()


def test_a_file_changed_while_read_is_explained_again_on_resume(three, tmp_path, monkeypatch):
    import onnxsal.cli.worker as job

    folder, out = tmp_path / "in", tmp_path / "o"
    shutil.copytree(three, folder)
    real = job.prepare

    def changed_while_read(path, *args, **kwargs):
        prepared = real(path, *args, **kwargs)
        if path.name == "d01.png":
            save_digits(folder, [7], ["d01.png"])  # a new picture lands after the read
            os.utime(path, ns=(10**18, 10**18))
        return prepared

    monkeypatch.setattr(job, "prepare", changed_while_read)
    invoke("explain", "digits-cnn", folder, "-o", out)
    monkeypatch.setattr(job, "prepare", real)
    invoke("explain", "digits-cnn", folder, "-o", out, "--resume")
    keys = journal_keys(out)
    assert keys.count(str((folder / "d01.png").resolve())) == 2
    assert keys.count(str((folder / "d00.png").resolve())) == 1


def test_an_input_keeps_its_name_however_it_is_reached(three, tmp_path):
    folder, out = tmp_path / "in", tmp_path / "o"
    shutil.copytree(three, folder / "sub")
    invoke("explain", "digits-cnn", folder, "-o", out)  # named sub/d00.png
    (tmp_path / "link.png").symlink_to(folder / "sub" / "d00.png")
    for spelling in (folder / "sub" / "d00.png", tmp_path / "link.png"):
        invoke("explain", "digits-cnn", spelling, "-o", out, "-m", "guided")
    rows = audit(out)
    assert sorted(r["name"] for r in rows if r["method"] == "guided") == ["sub/d00.png"]
    assert not list(out.glob("d00.png*")), "a second set of files under another name"


def test_compare_keeps_namesakes_from_two_folders_apart(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    save_digits(a, [0], ["x.png"])
    save_digits(b, [1], ["x.png"])
    out = tmp_path / "o"
    invoke("compare", "digits-cnn", "digits-cnn", a, b, "-o", out)
    drawn = sorted(p.name for p in out.rglob("*.png"))
    assert len(drawn) == 2 and len(set(drawn)) == 2, drawn


def test_a_symlinked_state_folder_is_refused(three, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "o"
    out.mkdir()
    (out / ".onnxsal").symlink_to(elsewhere)
    one_error(invoke("explain", "digits-cnn", three, "-o", out, code=1), "symbolic link")
    assert not list(elsewhere.iterdir())


def test_file_names_that_are_not_utf8(three, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    raw = os.fsencode(folder) + b"/caf\xe9-\xff.png"  # Latin-1 bytes, as old disks have them
    shutil.copy(three / "d00.png", raw)
    out = tmp_path / "o"
    invoke("explain", "digits-cnn", folder, "-o", out)
    (row,) = audit(out)
    assert row["status"] == "ok"
    names = [os.fsencode(p) for p in out.iterdir() if ".saliency." in p.name]
    assert len(names) == 1 and b"\xe9" in names[0], names


def _linear(tmp_path: Path) -> Path:
    """Four features to three classes, no metadata."""
    w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    model = make_model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(w, "w")],
    )
    path = tmp_path / "tab.onnx"
    onnx.save(model, path)
    return path


def test_a_csv_of_many_samples_is_read_once(tmp_path, monkeypatch):
    import onnxsal.cli.worker as job

    rows = np.random.default_rng(0).random((6, 4)).round(3)
    path = tmp_path / "rows.csv"
    np.savetxt(path, rows, delimiter=",", header="a,b,c,d", comments="")
    model = _linear(tmp_path)
    reads = []
    real = job.read_samples
    monkeypatch.setattr(job, "read_samples", lambda *a, **k: reads.append(a) or real(*a, **k))
    invoke("explain", model, path, "-o", tmp_path / "o", "--batch-size", "2")
    assert len(audit(tmp_path / "o")) == 6 and len(reads) == 1


def test_a_stray_picture_among_samples_of_a_bare_model_fails_alone(tmp_path):
    model = _linear(tmp_path)  # no preprocessing recipe
    np.save(tmp_path / "a.npy", np.ones((1, 4), np.float32))
    Image.new("RGB", (8, 8)).save(tmp_path / "stray.png")
    out = tmp_path / "o"
    result = invoke("explain", model, tmp_path / "a.npy", tmp_path / "stray.png", "-o", out, code=1)
    one_error(result, "stray.png", "--size")
    rows = by_name(audit(out))
    assert rows["a.npy"]["status"] == "ok" and rows["stray.png"]["status"] == "failed"


def test_a_channel_order_that_does_not_fit_is_a_usage_error(three, tmp_path):
    """digits-cnn takes one grey channel: BGR cannot fit, whatever the pictures are."""
    args = ("explain", "digits-cnn", three, "-o", tmp_path / "o", "--channel-order", "BGR")
    one_error(invoke(*args, code=2), "--channel-order", code=2)
    assert not list(tmp_path.rglob("*.png"))


def test_unit_without_layer_is_a_usage_error(three, tmp_path):
    one_error(invoke("explain", "digits-cnn", three, "--unit", "3", code=2), "--layer", code=2)


def test_a_closed_pipe_ends_quietly(tmp_path):
    command = f"'{EXE}' inspect digits-cnn | head -c 1 >/dev/null; echo ${{PIPESTATUS[0]}}"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() in ("0", "141") and done.stderr == "", done


def test_smoothgrad_gives_a_sample_the_same_map_at_any_batch_position(ex):
    from onnxsal.models.digits_recipe import dataset

    x = dataset()[2][:3, None].astype(np.float32)
    kw = dict(n_samples=8, noise=0.2, seed=5)
    alone = ex.explain(x[1:2], "smoothgrad", **kw)[0]
    together = ex.explain(x, "smoothgrad", **kw)
    reversed_ = ex.explain(x[::-1].copy(), "smoothgrad", **kw)
    np.testing.assert_allclose(together[1], alone, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(reversed_[1], alone, rtol=1e-5, atol=1e-7)
    assert not np.allclose(together[0], together[1])


# -- the catch-all, over the whole file ---------------------------------------------------------


def test_no_hostile_call_reached_the_catch_all():
    """Every call above was checked as it ran; this says so once more, over all of them."""
    if len(OUTPUTS) < 40:
        pytest.skip("run the whole file: the calls are collected as the tests run")
    reached = [out for out in OUTPUTS if "unexpected" in out]
    assert not reached, reached
