"""``btxrd-run --parquet`` with the local engine: the dataset's rows, readers, resume, refusals.

The Ray engine's tests (a two-node cluster, a node and the driver killed) are in
``test_engine_ray.py``; these need pyarrow only.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from engine_files import (
    assert_same_rows,
    btxrd_run,
    clean_env,
    enlarge,
    kill_when_parts,
    make_radiographs,
    read_rows,
    readme_scale_commands,
    write_config,
)
from stopped_run import StoppedRun

from btxrd.runtime.cli.run import main
from btxrd.runtime.install import install_hint

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

CLEAN_ENV = {"BTXRD_MODEL": None, "BTXRD_CONFIG": None}
SHARD = 8


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], env=CLEAN_ENV)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("engine-inputs") / "images"
    make_radiographs(folder, 30)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    return folder


@pytest.fixture
def config(tmp_path) -> Path:
    return write_config(tmp_path / "config.yaml", SHARD)


def _parquet(demo_onnx, folder, out, config, *more):
    return run("--model", demo_onnx, "--dir", folder, "--config", config, "-o", out, "-q", *more)


def test_one_row_per_input_with_every_field(demo_onnx, folder, config, tmp_path):
    out = tmp_path / "results.parquet"
    result = _parquet(demo_onnx, folder, out, config)
    assert result.exit_code == 1, result.stderr  # broken.png: an error row, the rest written
    assert result.stdout == ""
    assert "broken.png" in result.stderr and "Traceback" not in result.stderr
    parts = sorted(p.name for p in out.glob("part-*.parquet"))
    assert parts == [f"part-{i:06d}.parquet" for i in range(4)]  # 31 inputs in shards of 8
    rows = read_rows(out)
    jsonl = tmp_path / "results.jsonl"
    assert run("--model", demo_onnx, "--dir", folder, "-o", jsonl, "-q").exit_code == 1
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["path"] for r in rows] == [r["path"] for r in records]
    model_sha = hashlib.sha256(demo_onnx.read_bytes()).hexdigest()
    for row, record in zip(rows, records, strict=True):
        assert row["model_sha256"] == model_sha == record["model_sha256"]
        assert row["prediction"] == record["prediction"]
        assert row["error"] == record["error"]
        for name, p in record["scores"].items():
            assert row[f"prob_{name}"] == pytest.approx(p, abs=1e-6)
        if record["ood"] is not None:
            assert row["in_distribution"] == record["ood"]["in_distribution"]
            assert row["ood_threshold"] == record["ood"]["threshold"]
        data = Path(row["path"]).read_bytes()
        assert row["file_size"] == len(data)
        assert row["file_sha256"] == hashlib.sha256(data).hexdigest()
        assert row["btxrd_version"]
    assert sum(r["error"] is not None for r in rows) >= 1
    run_file = json.loads((out / "_btxrd_run.json").read_text())
    assert run_file["complete"] and run_file["summary"]["inputs"] == 31


def test_every_part_has_the_same_explicit_schema(demo_onnx, folder, config, tmp_path):
    out = tmp_path / "results.parquet"
    _parquet(demo_onnx, folder, out, config)
    schemas = {pq.read_schema(p).remove_metadata() for p in out.glob("part-*.parquet")}
    assert len(schemas) == 1
    schema = schemas.pop()
    assert schema.field("prob_Malignant").type == pa.float64()
    assert schema.field("in_distribution").type == pa.bool_()
    assert schema.field("file_size").type == pa.int64()
    assert schema.field("notes").type == pa.list_(pa.string())


def test_readable_by_duckdb_and_pandas(demo_onnx, folder, config, tmp_path):
    duckdb = pytest.importorskip("duckdb")
    out = tmp_path / "results.parquet"
    _parquet(demo_onnx, folder, out, config)
    rows = read_rows(out)
    counted = duckdb.sql(
        f"SELECT count(*), count(DISTINCT path), sum(prob_Normal) "
        f"FROM read_parquet('{out}/*.parquet')"
    ).fetchall()[0]
    assert counted[0] == counted[1] == len(rows) == 31
    assert counted[2] == pytest.approx(sum(r["prob_Normal"] or 0.0 for r in rows))
    pandas = pytest.importorskip("pandas")
    frame = pandas.read_parquet(out).sort_values("input_index")
    assert list(frame["path"]) == [r["path"] for r in rows]


def test_a_new_record_field_gets_its_own_column(demo_onnx, folder, config, tmp_path, monkeypatch):
    from btxrd.runtime.model.classifier import Prediction

    to_record = Prediction.to_record
    monkeypatch.setattr(Prediction, "to_record", lambda self: {**to_record(self), "decode": "x"})
    out = tmp_path / "results.parquet"
    _parquet(demo_onnx, folder, out, config)
    assert {r["decode"] for r in read_rows(out)} == {"x"}


def test_resume_redoes_only_unfinished_shards(demo_onnx, folder, config, tmp_path):
    out = tmp_path / "results.parquet"
    _parquet(demo_onnx, folder, out, config)
    reference = read_rows(out)
    (out / "part-000001.parquet").unlink()
    (out / ".part-000002.parquet.abc.tmp").write_bytes(b"cut short by a kill")
    # Part 0 holds broken.png's error row, tried again (and rewritten) on every resume.
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    del kept["part-000000.parquet"]
    result = _parquet(demo_onnx, folder, out, config, "--resume")
    assert result.exit_code == 1, result.stderr
    assert {
        p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet") if p.name in kept
    } == kept
    assert not list(out.glob(".*.tmp"))
    assert_same_rows(read_rows(out), reference)


def test_resume_tries_failed_inputs_again(demo_onnx, tmp_path):
    """Two inputs refused under a pixel limit, the limit raised, then --resume: only those two
    are classified again, only their parts are rewritten, and the rows equal a fresh run's."""
    inputs = tmp_path / "images"
    make_radiographs(inputs, 20)
    enlarge(inputs, ["img00003.jpg", "img00017.jpg"])
    strict = write_config(tmp_path / "strict.yaml", SHARD, max_pixels=50_000)
    out = tmp_path / "results.parquet"
    assert _parquet(demo_onnx, inputs, out, strict).exit_code == 1
    failed = [Path(r["path"]).name for r in read_rows(out) if r["error"] is not None]
    assert failed == ["img00003.jpg", "img00017.jpg"]
    untouched = (out / "part-000001.parquet").stat().st_mtime_ns
    relaxed = write_config(tmp_path / "relaxed.yaml", SHARD)
    args = ("--model", demo_onnx, "--dir", inputs, "--config", relaxed, "-o", out, "--resume")
    result = run(*args)
    assert result.exit_code == 0, result.stderr
    assert "resuming: 3 of 3 shards already in" in result.stderr
    assert "trying 2 failed inputs again" in result.stderr
    assert "speed: 2 inputs in" in result.stderr
    assert (out / "part-000001.parquet").stat().st_mtime_ns == untouched
    reference = tmp_path / "reference.parquet"
    _parquet(demo_onnx, inputs, reference, relaxed)
    assert_same_rows(read_rows(out), read_rows(reference))
    again = run(*args)  # nothing failed any more: nothing to redo
    assert again.exit_code == 0 and "speed:" not in again.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("model", "another model"),
        ("inputs", "another input set"),
        ("no-resume", "add --resume"),
    ],
)
def test_refuses_to_mix_runs(demo_onnx, folder, config, tmp_path, change, message):
    out = tmp_path / "results.parquet"
    inputs = tmp_path / "inputs"
    make_radiographs(inputs, 5)
    assert _parquet(demo_onnx, inputs, out, config).exit_code == 0
    args = ["--resume"]
    if change == "model":
        run_file = out / "_btxrd_run.json"
        run_file.write_text(run_file.read_text().replace('"model_sha256": "', '"model_sha256": "0'))
    elif change == "inputs":
        make_radiographs(tmp_path / "more", 6)[5].rename(inputs / "extra.jpg")
    else:
        args = []
    before = sorted(p.name for p in out.iterdir())
    result = _parquet(demo_onnx, inputs, out, config, *args)
    assert result.exit_code == 3
    assert message in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1
    assert sorted(p.name for p in out.iterdir()) == before


def test_a_folder_that_is_not_a_run_is_refused(demo_onnx, folder, config, tmp_path):
    out = tmp_path / "results.parquet"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"not ours")
    result = _parquet(demo_onnx, folder, out, config)
    assert result.exit_code == 3
    assert "holds no btxrd run" in result.stderr


def test_without_pyarrow_one_line_says_what_to_install(demo_onnx, folder, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    result = run("--model", demo_onnx, "--dir", folder, "--parquet", "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert install_hint("parquet") in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_without_ray_one_line_says_what_to_install(demo_onnx, folder, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    out = tmp_path / "out.parquet"
    result = run("--model", demo_onnx, "--dir", folder, "--engine", "ray", "-o", out)
    assert result.exit_code == 2
    assert install_hint("ray") in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--engine", "ray", "--jsonl", "-o", "x.jsonl"], "--parquet --output FOLDER"),
        (["--parquet"], "--parquet needs --output"),
        (["--parquet", "-o", "x.parquet", "--cam"], "without --cam"),
    ],
)
def test_usage_errors(folder, args, message):
    result = run("--dir", folder, *args)
    assert result.exit_code == 2
    assert message in result.stderr


@pytest.mark.slow
def test_readme_local_commands_work_from_another_folder(sample_images, tmp_path):
    """The README's Parquet commands on this machine: a run, then --resume finding it done."""
    local = [c for c in readme_scale_commands() if "ray" not in c]
    assert len(local) == 2 and "--resume" in local[1]
    archive = tmp_path / "archive"
    archive.mkdir()
    for sample in sample_images:
        (archive / sample.name).write_bytes(sample.read_bytes())
    for command in local:
        done = subprocess.run(
            btxrd_run(*command[1:]), cwd=tmp_path, env=clean_env(), capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
    assert "resuming: 1 of 1 shard already in results.parquet" in done.stderr
    assert len(read_rows(tmp_path / "results.parquet")) == len(sample_images)


@pytest.mark.slow
def test_killed_driver_then_resume_gives_every_input_once(demo_onnx, tmp_path):
    inputs = tmp_path / "inputs"
    make_radiographs(inputs, 120)
    config = write_config(tmp_path / "config.yaml", 10)
    reference, out = tmp_path / "reference.parquet", tmp_path / "results.parquet"
    base = ["--model", demo_onnx, "--dir", inputs, "--config", config, "-q"]
    subprocess.run(btxrd_run(*base, "-o", reference), env=clean_env(), check=True)
    process = subprocess.Popen(btxrd_run(*base, "-o", out), env=clean_env())
    kill_when_parts(process, out, 3)
    killed = len(list(out.glob("part-*.parquet")))
    assert 3 <= killed < 12
    resumed = subprocess.run(
        btxrd_run(*base, "-o", out, "--resume"), env=clean_env(), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    rows = read_rows(out)
    assert [r["input_index"] for r in rows] == list(range(120))
    assert_same_rows(rows, read_rows(reference))


@pytest.mark.slow
def test_sigterm_saves_finished_parts_and_exits_130(demo_onnx, tmp_path):
    """SIGTERM arrives right after the first part file is written (the run stopped there at a
    breakpoint, so a fast machine cannot finish first): exit 130, whole parts only."""
    import os
    import signal

    inputs = tmp_path / "inputs"
    make_radiographs(inputs, 60)
    config = write_config(tmp_path / "config.yaml", 5)
    out = tmp_path / "results.parquet"
    args = ["--model", demo_onnx, "--dir", inputs, "--config", config, "-o", out]
    stopped = StoppedRun("btxrd.runtime.engine.manifest", "Dataset.write_part", *args)
    assert len(list(out.glob("part-*.parquet"))) == 1
    os.kill(stopped.pid, signal.SIGTERM)  # pending until the run goes on
    done = stopped.resume()
    stderr = done.stderr.decode()
    assert done.returncode == 130, stderr
    assert "rerun with --resume to finish" in stderr and "Traceback" not in stderr
    assert not list(out.glob(".*.tmp"))
    command = btxrd_run(*args)
    resumed = subprocess.run([*command, "--resume"], env=clean_env(), capture_output=True)
    assert resumed.returncode == 0
    assert [r["input_index"] for r in read_rows(out)] == list(range(60))
