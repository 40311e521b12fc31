"""One job, two engines: `onnxsal explain` in this process and on a pool of Ray actors.

The same folder of digits (and one broken picture) explained on each engine
gives the same summary, the same maps and the same results table; a Ray actor
that dies mid-batch costs its batch only; resume works across engines.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from onnxsal.cli import main as cli
from tests.test_hostile import audit, invoke, journal_keys, save_digits, table_rows

ray = pytest.importorskip("ray", reason="the Ray engine's tests need ray[data] (the test extra)")

RAY = ("--engine", "ray")  # its defaults: 2 actors of 1 CPU


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("digits")
    save_digits(folder, range(24))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a picture")
    return folder


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def summary(folder: Path) -> list[dict]:
    return json.loads((folder / "summary.json").read_text())


def maps(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.load(p) for p in sorted(folder.glob("*.attribution.npy"))}


def test_both_engines_give_one_summary_one_set_of_maps_and_one_table(digits, tmp_path):
    here, there = tmp_path / "here", tmp_path / "there"
    args = ("explain", "digits-cnn", digits, "--batch-size", "5", "--format", "npy")
    pool = tmp_path / "pool"
    local = invoke(*args, "-o", here, code=1).output
    remote = invoke(*args, "-o", there, *RAY, code=1).output
    processes = invoke(*args, "-o", pool, "--workers", "2", code=1).output
    for out in (local, remote, processes):
        assert "24 explained, 1 failed" in out and "broken.png" in out
    for other in (there, pool):
        assert without_timing(summary(here)) == without_timing(summary(other))
        assert len(audit(other)) == 25  # the table is the summary, each input once
        ours, theirs = maps(here), maps(other)
        assert len(ours) == 24 and ours.keys() == theirs.keys()
        for name in ours:
            np.testing.assert_array_equal(ours[name], theirs[name])
    again = invoke(
        *args, "-o", here, *RAY, "--resume", code=1
    ).output  # the local run's work stands
    assert "0 explained, 1 failed, 24 done before" in again


def test_a_parquet_table_as_the_primary_output(digits, tmp_path):
    import pandas as pd
    import pyarrow.parquet as pq

    out = tmp_path / "o"
    invoke("explain", "digits-cnn", digits, "-o", out, "--format", "parquet", code=1)
    assert not list(out.glob("*.png")), "--format parquet draws no pictures"
    table = pd.read_parquet(out / "table")
    assert len(table) == 25 and set(table.status) == {"ok", "failed"}
    broken = table[table.status == "failed"].iloc[0]
    assert "broken.png" in broken.message and broken.attribution is None
    import onnxsal
    from onnxsal.images import prepare

    ex = onnxsal.Explainer("digits-cnn")
    kind = pq.read_schema(next((out / "table").glob("*.parquet"))).field("attribution").type
    assert kind.extension_name == "arrow.fixed_shape_tensor"
    assert tuple(kind.shape) == tuple(ex.input_shape[1:])
    row = table[table.name == "d03.png"].iloc[0]
    x = prepare(digits / "d03.png", ex.preprocess).tensor
    expected = ex.explain(x)[0]
    np.testing.assert_allclose(
        np.asarray(row.attribution).reshape(expected.shape), expected, rtol=1e-6
    )
    settings = json.loads(row.settings)
    assert settings["method"] == "vanilla" and row.top5[0]["label"] == row.label
    readme_snippets_read_the_table(out / "table", len(table) - 1, expected.shape)


def readme_snippets_read_the_table(table: Path, ok: int, shape: tuple) -> None:
    """The README's DuckDB one-liner and pyarrow lines, run as written (on this folder)."""
    duckdb = pytest.importorskip("duckdb")
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    query = next(line for line in readme.splitlines() if line.startswith('duckdb -c "'))
    sql = query.removeprefix('duckdb -c "').removesuffix('"').replace("audit/table", str(table))
    counted = duckdb.sql(sql).fetchall()
    assert sum(n for _, n, _ in counted) == ok and all(isinstance(s, float) for *_, s in counted)
    lines = readme.split("import pyarrow.compute as pc, pyarrow.dataset as ds", 1)[1]
    code = "import pyarrow.compute as pc, pyarrow.dataset as ds" + lines.split("```", 1)[0]
    found: dict = {}
    exec(code.replace('"audit/table"', repr(str(table))), found)
    assert found["maps"].shape == (ok, *shape)


def write_manifest(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("path,target\n" + "".join(f"{p},{t}\n" for p, t in rows))
    return path


def test_a_manifest_gives_each_input_its_class_and_resume_follows_it(digits, tmp_path):
    import onnxsal
    from onnxsal.images import prepare

    rows = [(f"{digits}/d{i:02d}.png", str((i * 3) % 10)) for i in range(6)]
    manifest = write_manifest(tmp_path / "m.csv", [*rows, ("gone.png", "1")])
    out = tmp_path / "o"
    args = ("explain", "digits-cnn", "--manifest", manifest, "-o", out, "--format", "npy")
    first = invoke(*args, code=1).output
    assert "6 explained, 1 failed" in first and "gone.png: no such file" in first
    found = {Path(r["input"]).name: r["target"] for r in summary(out)}
    assert found == {Path(p).name: int(t) for p, t in rows}
    ex = onnxsal.Explainer("digits-cnn")
    x = prepare(digits / "d01.png", ex.preprocess).tensor
    np.testing.assert_allclose(
        np.load(next(out.glob("d01.png.*.attribution.npy"))), ex.explain(x, target=3)[0]
    )
    again = invoke(*args, "--resume", code=1).output
    assert "0 explained, 1 failed, 6 done before" in again
    rows[2] = (rows[2][0], "9")  # a changed target: that input is explained anew
    write_manifest(manifest, rows)
    changed = invoke(*args, "--resume").output
    assert "1 explained, 0 failed, 5 done before" in changed
    assert {Path(r["input"]).name: r["target"] for r in summary(out)}["d02.png"] == 9
    audit(out)


@pytest.mark.parametrize(
    "content, flags, says",
    [
        ("file,class\n{d}/d00.png,1\n", [], "no 'path' column"),
        ("path,target\n{d}/d00.png,1\n", ["-t", "2"], "drop -t"),
        ("path,target\n{d}/d00.png,box=1;2;3;4\n", [], "not a class index or label"),
        ("path,target\n{d}/d00.png,1\n{d}/d00.png,2\n", [], "twice with different targets"),
    ],
)
def test_a_bad_manifest_is_one_line(digits, tmp_path, content, flags, says):
    manifest = tmp_path / "m.csv"
    manifest.write_text(content.format(d=digits))
    out = invoke(
        "explain", "digits-cnn", "--manifest", manifest, "-o", tmp_path / "o", *flags, code=None
    )
    assert out.exit_code in (1, 2) and says in out.output, out.output
    assert len(out.output.strip().splitlines()) == 1


def test_a_killed_worker_process_stops_the_run_in_one_line_and_resume_finishes(digits, tmp_path):
    import signal

    from tests.test_hostile import SLOW, children, finished, spawn, wait_for

    out = tmp_path / "o"
    args = ("explain", "digits-cnn", digits, "-o", out, *SLOW, "--workers", "2")
    proc = spawn(*args, log=tmp_path / "run")
    wait_for(
        lambda: (out / ".onnxsal" / "journal.jsonl").is_file() and journal_keys(out), proc, "a row"
    )
    helpers = [
        pid
        for pid in children(proc.pid)
        if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    os.kill(helpers[0], signal.SIGKILL)
    rc, _, err = finished(proc, tmp_path / "run")
    *inputs, stopped = err.splitlines()  # the broken picture's line may come first
    assert rc == 1 and all("broken.png" in line for line in inputs), err
    assert "a worker process died" in stopped and "--resume" in stopped
    done = journal_keys(out)
    assert 0 < len(done) < 25 and len(done) == len(set(done))
    audit(out)
    rc, _, err = finished(spawn(*args, "--resume", log=tmp_path / "again"), tmp_path / "again")
    assert rc == 1 and "broken.png" in err  # the broken picture fails again, alone
    again = journal_keys(out)
    assert len(audit(out)) == 25
    assert all(again.count(key) == 1 for key in done if "broken" not in key), "redone"


class DyingActor:
    """An ExplainActor whose process exits on its second batch, once in the whole job."""

    marker: Path

    def __init__(self, *args, **kwargs):
        from onnxsal.cli.ray_engine import ExplainActor

        self.real = ExplainActor(*args, **kwargs)
        self.calls = 0

    def __call__(self, batch):
        self.calls += 1
        if self.calls == 2 and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os._exit(1)
        return self.real(batch)


def test_a_lost_ray_actor_costs_its_batch_only(digits, tmp_path, monkeypatch):
    import onnxsal.cli.ray_engine as engine

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setattr(DyingActor, "marker", tmp_path / "died", raising=False)
    monkeypatch.setattr(engine, "ExplainActor", DyingActor)
    out = tmp_path / "o"
    rows = [(f"{digits}/d{i:02d}.png", str(i % 3)) for i in range(24)]
    manifest = write_manifest(tmp_path / "m.csv", [*rows, (digits / "broken.png", "0")])
    args = ["explain", "digits-cnn", "--manifest", str(manifest), "-o", str(out), *RAY]
    args += ["--batch-size", "4"]
    result = CliRunner().invoke(cli, args)  # Ray tells of the lost worker: not invoke's clean
    done = result.output
    assert result.exit_code == 1 and "Traceback" not in done, done
    assert (tmp_path / "died").exists(), "no actor died: the test tested nothing"
    assert "24 explained, 1 failed" in done
    keys = journal_keys(out)
    assert len(keys) == 25 == len(set(keys)), "an input recorded twice, or lost"
    found = audit(out)  # the died batch's part, if written, is not in the table
    assert len(found) == len(table_rows(out)) == 25
    targets = {r["input"]: r.get("target") for r in found if r["status"] == "ok"}
    assert targets == {str(Path(p).resolve()): int(t) for p, t in rows}  # through Ray


def test_ray_options_need_the_ray_engine_and_ray(digits, tmp_path, monkeypatch):
    args = ("explain", "digits-cnn", digits, "-o", tmp_path / "o")
    out = invoke(*args, "--actors", "4", code=2).output
    assert "--actors" in out and "--engine ray" in out
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    out = invoke(*args, "--engine", "ray", code=2).output
    assert "pip install 'onnxsal[ray]'" in out


@pytest.fixture(scope="module")
def bucket(digits, tmp_path_factory):
    """A local S3 (moto's server) holding the digits under s3://photos/in/."""
    import socket
    import subprocess
    import time

    boto3 = pytest.importorskip("boto3", reason="the object-store test needs moto[server]")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [Path(sys.executable).with_name("moto_server"), "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        s3 = boto3.client("s3")
        for _ in range(100):
            try:
                s3.create_bucket(Bucket="photos")
                break
            except Exception:
                time.sleep(0.1)
        for i in range(6):
            s3.upload_file(str(digits / f"d{i:02d}.png"), "photos", f"in/sub/d{i:02d}.png")
        s3.upload_file(str(digits / "broken.png"), "photos", "in/broken.png")
        s3.upload_file(str(digits / "d07.png"), "photos", "in/.hidden.png")
        s3.put_object(Bucket="photos", Key="in/notes.txt", Body=b"not an input")
        yield "s3://photos/in/"
    finally:
        server.terminate()
        server.wait()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_inputs_in_an_object_store_on_both_engines(bucket, digits, tmp_path):
    args = ("explain", "digits-cnn", bucket, "--format", "npy")
    here = invoke(*args, "-o", tmp_path / "here", code=1).output
    assert "6 explained, 1 failed" in here and f"{bucket}broken.png: not a readable" in here
    there = invoke(*args, "-o", tmp_path / "there", *RAY, code=1).output
    assert "6 explained, 1 failed" in there
    rows = summary(tmp_path / "here")
    assert without_timing(rows) == without_timing(summary(tmp_path / "there"))
    assert {r["input"] for r in rows} == {f"{bucket}sub/d{i:02d}.png" for i in range(6)} | {
        f"{bucket}broken.png"
    }
    local = tmp_path / "files"
    invoke(
        "explain",
        "digits-cnn",
        *(digits / f"d{i:02d}.png" for i in range(6)),
        "-o",
        local,
        "--format",
        "npy",
    )
    fetched = maps(tmp_path / "there" / "sub")
    assert len(fetched) == 6
    for name, found in fetched.items():
        np.testing.assert_array_equal(
            found, np.load(next(local.glob(name.split(".vanilla")[0] + ".*.npy")))
        )
    again = invoke(*args, "-o", tmp_path / "here", "--resume", code=1).output
    assert "0 explained, 1 failed, 6 done before" in again  # stamps from the store
    audit(tmp_path / "there")
    gone = invoke("explain", "digits-cnn", "s3://photos/nothing/", "-o", tmp_path / "x", code=1)
    assert "s3://photos/nothing/: no such file" in gone.output
