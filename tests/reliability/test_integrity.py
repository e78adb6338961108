"""Reliability matrix, integrity: one run owns its output, ``--resume`` keeps only what it can
prove, every name given is its own input, and no stream fault costs a result.

Ordered by the means that put the processes in order: locks (a run stopped at a breakpoint
while it holds its output's lock), then tampering between a run and its resume, then pipes and
streams. No sleep decides an outcome.
"""

from __future__ import annotations

import csv
import io
import json
import os
import resource
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from reliability_support import (
    StoppedRun,
    assert_one_clear_line,
    records_of,
    run_cli,
    run_process,
    write_radiograph,
    write_scans,
)

from btxrd.runtime.output.outlock import lock_path
from btxrd.runtime.text import name_bytes

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

SHARD = 3


@pytest.fixture
def scans(tmp_path) -> Path:
    return write_scans(tmp_path / "scans", 8)


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"scale:\n  shard_size: {SHARD}\n", encoding="utf-8")
    return path


def _key(record: dict) -> tuple:
    return record["path"], record.get("path_escaped", False), record["display_name"]


def _by_input(records: list[dict]) -> dict[tuple, dict]:
    """Records by input; fails on a second record of one input."""
    keyed = {}
    for record in records:
        assert _key(record) not in keyed, f"two records of {_key(record)}"
        keyed[_key(record)] = record
    return keyed


def assert_same_records(ours: list[dict], fresh: list[dict]) -> None:
    """Every input once, with the fresh run's prediction, error and scores (to 1e-6)."""
    mine, theirs = _by_input(ours), _by_input(fresh)
    assert mine.keys() == theirs.keys()
    for key, record in mine.items():
        assert record["prediction"] == theirs[key]["prediction"], key
        assert (record["error"] is None) == (theirs[key]["error"] is None), key
        assert record["scores"] == pytest.approx(theirs[key]["scores"], abs=1e-6), key


def _parquet_rows(folder: Path) -> list[dict]:
    return pq.read_table(folder).sort_by("input_index").to_pylist()


def assert_same_rows(ours: list[dict], fresh: list[dict]) -> None:
    assert [r["input_index"] for r in ours] == list(range(len(fresh)))
    for mine, theirs in zip(ours, fresh, strict=True):
        for column in ("path", "path_escaped", "prediction", "error", "file_sha256"):
            assert mine[column] == theirs[column], (column, mine["path"])
        for column in (c for c in mine if c.startswith("prob_")):
            assert mine[column] == pytest.approx(theirs[column], abs=1e-6), column


# --- locks: one writer per output --------------------------------------------------------------

FORMATS = {"json": "results.json", "jsonl": "results.jsonl", "csv": "results.csv"}


def _run_args(tiny_onnx, scans, out: Path, config: Path, *more) -> list:
    return ["--model", tiny_onnx, "--dir", scans, "--config", config, "-o", out, "-q", *more]


@pytest.mark.parametrize(
    ("fmt", "first", "second"),
    [
        ("json", (), ()),
        ("csv", (), ()),
        ("jsonl", (), ("--resume",)),
        ("jsonl", ("--resume",), ()),
        ("parquet", (), ("--resume",)),
        ("parquet", ("--resume",), ()),
    ],
    ids=[
        "json",
        "csv",
        "jsonl-then-resume",
        "jsonl-resume-then-fresh",
        "parquet-then-resume",
        "parquet-resume-then-fresh",
    ],
)
def test_a_second_run_into_a_running_runs_output_is_refused(
    tiny_onnx, scans, config, tmp_path, fmt, first, second
):
    out = tmp_path / FORMATS.get(fmt, "results.parquet")
    flag = f"--{fmt}"
    if "--resume" in first:  # the first run finishes an earlier, interrupted one
        partial = run_cli(*_run_args(tiny_onnx, scans, out, config, flag), "--no-ood-gate")
        assert partial.exit_code in (0, 1), partial.stderr
    holder = StoppedRun(
        "btxrd.runtime.output.outlock",
        "_acquire",
        *_run_args(tiny_onnx, scans, out, config, flag, *first),
    )
    before = sorted(p.name for p in tmp_path.iterdir())
    second_run = run_process(*_run_args(tiny_onnx, scans, out, config, flag, *second))
    assert second_run.returncode == 3
    line = assert_one_clear_line(
        second_run.stderr.decode(), str(out), "another btxrd run is writing it"
    )
    assert f"pid {holder.pid}" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # the second touched nothing
    done = holder.resume()
    assert done.returncode == 0, done.stderr.decode()
    assert not lock_path(out).exists()
    fresh = tmp_path / ("fresh-" + out.name)
    assert run_cli(*_run_args(tiny_onnx, scans, fresh, config, flag)).exit_code == 0
    if fmt == "parquet":
        assert_same_rows(_parquet_rows(out), _parquet_rows(fresh))
    else:
        assert_same_records(_records(out, fmt), _records(fresh, fmt))


def _records(path: Path, fmt: str) -> list[dict]:
    if fmt == "jsonl":
        return records_of(path)
    if fmt == "json":
        return json.loads(path.read_text(encoding="utf-8"))["results"]
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    names = ["Normal", "Benign", "Malignant"]
    return [
        {
            "path": r["path"],
            "path_escaped": r["path_escaped"] == "true",
            "display_name": r["image_name"],
            "prediction": r["prediction"] or None,
            "error": r["error"] or None,
            "scores": {n: float(r[n]) for n in names if r.get(n)},
        }
        for r in rows
    ]


def test_two_spellings_of_one_output_share_its_lock(tiny_onnx, scans, config, tmp_path):
    out = tmp_path / "results.jsonl"
    link = tmp_path / "link.jsonl"
    out.touch()
    link.symlink_to(out)
    holder = StoppedRun(
        "btxrd.runtime.output.outlock", "_acquire", *_run_args(tiny_onnx, scans, out, config)
    )
    second_run = run_process(*_run_args(tiny_onnx, scans, link, config))
    assert second_run.returncode == 3
    assert_one_clear_line(second_run.stderr.decode(), "another btxrd run is writing it")
    assert holder.resume().returncode == 0
    assert len(records_of(out)) == 8


def test_the_lock_of_a_killed_run_is_taken_over_silently(tiny_onnx, scans, config, tmp_path):
    out = tmp_path / "results.jsonl"
    holder = StoppedRun(
        "btxrd.runtime.output.jsonl",
        "JsonlJournal.write",
        *_run_args(tiny_onnx, scans, out, config, "--jsonl"),
    )
    holder.kill()
    assert lock_path(out).exists()  # left behind, naming a process that is gone
    done = run_process(*_run_args(tiny_onnx, scans, out, config, "--jsonl", "--resume"))
    assert done.returncode == 0, done.stderr.decode()
    assert "another" not in done.stderr.decode()
    assert not lock_path(out).exists()
    assert len(_by_input(records_of(out))) == 8


# The file system cannot lock (an NFS mount without lockd answers flock with ENOLCK): the one
# thing replaced in the process is flock's answer.
_NO_LOCKS = """
import errno, fcntl, sys
def flock(fd, operation):
    raise OSError(errno.ENOLCK, "No locks available")
fcntl.flock = flock
from btxrd.runtime.cli.run import main
main(sys.argv[1:])
"""


def test_without_working_locks_the_run_refuses_unless_forced(tiny_onnx, scans, config, tmp_path):
    out = tmp_path / "results.jsonl"
    refused = run_process(*_run_args(tiny_onnx, scans, out, config), code=_NO_LOCKS)
    assert refused.returncode == 3
    assert_one_clear_line(refused.stderr.decode(), str(out), "cannot lock files", "--force")
    assert not out.exists()
    forced = run_process(*_run_args(tiny_onnx, scans, out, config, "--force"), code=_NO_LOCKS)
    assert forced.returncode == 0, forced.stderr.decode()
    assert len(records_of(out)) == 8


# --- tampering between a run and its resume: JSON lines -------------------------------------


def _jsonl(tiny_onnx, inputs: list, out: Path, *more) -> object:
    return run_cli("--model", tiny_onnx, "--jsonl", "-q", "-o", out, *more, *inputs)


def _fresh_jsonl(tiny_onnx, inputs: list, tmp_path: Path, *more) -> list[dict]:
    fresh = tmp_path / "fresh.jsonl"
    assert _jsonl(tiny_onnx, inputs, fresh, *more).exit_code in (0, 1)
    return records_of(fresh)


def _duplicate_a_line(out: Path, scans: Path) -> None:
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    out.write_text("".join([*lines, lines[0]]), encoding="utf-8")


def _record_of_a_non_input(out: Path, scans: Path) -> None:
    record = records_of(out)[0]
    record["path"] = record["display_name"] = str(scans / "gone.png")
    with out.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def _change_an_input(out: Path, scans: Path) -> None:
    write_radiograph(scans / "scan0.png", seed=99)


def _touch_without_change(out: Path, scans: Path) -> None:
    os.utime(scans / "scan1.png", ns=(1, 1))


def _records_of_other_settings(out: Path, scans: Path) -> None:
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    for record in lines[:3]:
        record["settings"]["ood_gate"] = not record["settings"]["ood_gate"]
    out.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")


JSONL_TAMPERING = {
    "duplicated-line": _duplicate_a_line,
    "record-of-a-non-input": _record_of_a_non_input,
    "input-changed-since": _change_an_input,
    "input-touched-not-changed": _touch_without_change,
    "records-of-other-settings": _records_of_other_settings,
}


@pytest.mark.parametrize("tamper", JSONL_TAMPERING, ids=list(JSONL_TAMPERING))
def test_jsonl_resume_after_tampering_equals_a_fresh_run(tiny_onnx, scans, tmp_path, tamper):
    inputs = sorted(scans.iterdir())
    out = tmp_path / "results.jsonl"
    assert _jsonl(tiny_onnx, inputs, out).exit_code == 0
    JSONL_TAMPERING[tamper](out, scans)
    resumed = run_cli("--model", tiny_onnx, "--jsonl", "-o", out, "--resume", *inputs)
    assert resumed.exit_code == 0, resumed.stderr
    assert_same_records(records_of(out), _fresh_jsonl(tiny_onnx, inputs, tmp_path))
    if tamper == "input-changed-since":
        assert "scan0.png changed since it was classified; classified again" in resumed.stderr
    if tamper == "input-touched-not-changed":  # a line holds no sha256: the mtime decides
        assert "scan1.png changed since it was classified; classified again" in resumed.stderr


# What lines of older releases lack: the input's identity (before 2026-12), or the record layout
# of results schema 3 (identifiers; before it, lines had no schema_version).
OLDER_LINES = {
    "no-input-identity": ("input", "settings", "path_escaped", "schema_version"),
    "schema-2-layout": ("identifiers", "schema_version"),
}


@pytest.mark.parametrize("older", OLDER_LINES)
def test_jsonl_records_of_an_older_btxrd_are_redone(tiny_onnx, scans, tmp_path, older):
    inputs = sorted(scans.iterdir())[:3]
    out = tmp_path / "results.jsonl"
    assert _jsonl(tiny_onnx, inputs, out).exit_code == 0
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    for record in lines:
        for key in OLDER_LINES[older]:
            del record[key]
    out.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    resumed = run_cli("--model", tiny_onnx, "--jsonl", "-o", out, "--resume", *inputs)
    assert resumed.exit_code == 0, resumed.stderr
    assert "3 records written by an older btxrd" in resumed.stderr
    assert_same_records(records_of(out), _fresh_jsonl(tiny_onnx, inputs, tmp_path))


# --- names: every name given is an input --------------------------------------------------


def _aliases_and_look_alike_names(folder: Path) -> list[Path]:
    """A symlink beside its target, and a name with the byte 0xff beside one with the text
    ``\\xff``: four names, four inputs."""
    folder.mkdir()
    target = write_radiograph(folder / "a.png", seed=1)
    (folder / "b-link.png").symlink_to(target.name)
    byte = Path(os.fsdecode(bytes(folder) + b"/c-\xff.png"))
    write_radiograph(byte, seed=2)
    write_radiograph(folder / "c-\\xff.png", seed=3)
    return sorted(folder.iterdir())


def test_aliases_and_look_alike_names_get_a_record_each_also_on_resume(tiny_onnx, tmp_path):
    inputs = _aliases_and_look_alike_names(tmp_path / "names")
    out = tmp_path / "results.jsonl"
    assert _jsonl(tiny_onnx, inputs, out).exit_code == 0
    fresh = records_of(out)
    assert len(_by_input(fresh)) == 4
    for kept in range(4):  # resume from every point: none, one, ... all records kept
        lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
        out.write_text("".join(lines[:kept]), encoding="utf-8")
        assert _jsonl(tiny_onnx, inputs, out, "--resume").exit_code == 0
        assert_same_records(records_of(out), fresh)
    written = {name_bytes(r["path"], r["path_escaped"]) for r in records_of(out)}
    assert written == {os.fsencode(p) for p in inputs}


@pytest.mark.parametrize("fmt", ["json", "csv", "parquet"])
def test_names_round_trip_through_every_format(tiny_onnx, tmp_path, fmt):
    inputs = _aliases_and_look_alike_names(tmp_path / "names")
    out = tmp_path / f"results.{fmt}"
    assert run_cli("--model", tiny_onnx, f"--{fmt}", "-q", "-o", out, *inputs).exit_code == 0
    if fmt == "parquet":
        rows = _parquet_rows(out)
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
        for row in rows:
            row["path_escaped"] = {"true": True, "false": False}[row["path_escaped"]]
    else:
        rows = json.loads(out.read_text(encoding="utf-8"))["results"]
    written = [name_bytes(r["path"], r["path_escaped"]) for r in rows]
    assert sorted(written) == sorted(os.fsencode(p) for p in inputs)


# --- tampering between a run and its resume: Parquet -----------------------------------------


def _parquet(tiny_onnx, folder: Path, out: Path, config: Path, *more):
    return run_cli(
        "--model", tiny_onnx, "--dir", folder, "--config", config, "-o", out, "-q", *more
    )


def _other_runs_part(out: Path, ctx) -> None:
    other = ctx["tmp_path"] / "other.parquet"
    assert _parquet(ctx["model"], ctx["scans"], other, ctx["config"]).exit_code == 0
    shutil.copy(other / "part-000001.parquet", out / "part-000001.parquet")


def _stale_extra_part(out: Path, ctx) -> None:
    shutil.copy(out / "part-000000.parquet", out / "part-000009.parquet")


def _part_copied_to_another_index(out: Path, ctx) -> None:
    shutil.copy(out / "part-000000.parquet", out / "part-000001.parquet")


def _edited_shard_size(out: Path, ctx) -> None:
    run_file = out / "_btxrd_run.json"
    run = json.loads(run_file.read_text(encoding="utf-8"))
    run["shard_size"] = 2
    run_file.write_text(json.dumps(run), encoding="utf-8")


def _rows_of_another_model(out: Path, ctx) -> None:
    part = out / "part-000001.parquet"
    table = pq.read_table(part)
    index = table.schema.get_field_index("model_sha256")
    table = table.set_column(index, "model_sha256", pa.array(["0" * 64] * table.num_rows))
    pq.write_table(table, part)  # the run's own metadata kept


def _input_changed_mid_run(out: Path, ctx) -> None:
    write_radiograph(ctx["scans"] / "scan0.png", seed=99)


def _input_touched(out: Path, ctx) -> None:
    os.utime(ctx["scans"] / "scan4.png", ns=(1, 1))


PARQUET_TAMPERING = {
    "part-of-another-run": _other_runs_part,
    "stale-extra-part": _stale_extra_part,
    "part-copied-to-another-index": _part_copied_to_another_index,
    "edited-shard-size": _edited_shard_size,
    "rows-of-another-model": _rows_of_another_model,
    "input-changed-mid-run": _input_changed_mid_run,
    "input-touched-not-changed": _input_touched,
}


@pytest.mark.parametrize("tamper", PARQUET_TAMPERING, ids=list(PARQUET_TAMPERING))
def test_parquet_resume_after_tampering_equals_a_fresh_run_or_refuses(
    tiny_onnx, scans, config, tmp_path, tamper
):
    out = tmp_path / "results.parquet"
    assert _parquet(tiny_onnx, scans, out, config).exit_code == 0
    ctx = {"tmp_path": tmp_path, "model": tiny_onnx, "scans": scans, "config": config}
    PARQUET_TAMPERING[tamper](out, ctx)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    resumed = run_cli(
        "--model", tiny_onnx, "--dir", scans, "--config", config, "-o", out, "--resume"
    )
    if tamper == "part-of-another-run":  # cannot be matched at all: refused, nothing touched
        assert resumed.exit_code == 3, resumed.stderr
        assert_one_clear_line(resumed.stderr, "part-000001.parquet", "not a part of the run")
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
        return
    assert resumed.exit_code == 0, resumed.stderr
    fresh = tmp_path / "fresh.parquet"
    assert _parquet(tiny_onnx, scans, fresh, config).exit_code == 0
    assert_same_rows(_parquet_rows(out), _parquet_rows(fresh))
    if tamper == "input-changed-mid-run":
        assert "scan0.png changed since it was classified; classified again" in resumed.stderr
    if tamper == "input-touched-not-changed":
        assert "changed" not in resumed.stderr
        assert (out / "part-000001.parquet").read_bytes() == before["part-000001.parquet"]


def test_parquet_resume_on_another_input_set_names_the_first_difference(
    tiny_onnx, scans, config, tmp_path
):
    out = tmp_path / "results.parquet"
    assert _parquet(tiny_onnx, scans, out, config).exit_code == 0
    (scans / "scan3.png").rename(scans / "scan3-renamed.png")
    resumed = _parquet(tiny_onnx, scans, out, config, "--resume")
    assert resumed.exit_code == 3
    assert_one_clear_line(
        resumed.stderr, "another input set", "scan3.png then", "scan3-renamed.png now"
    )


# --- pipes, streams and the causes of a failed write ------------------------------------------


def _close_stderr() -> None:
    os.close(2)


def _stderr_on_a_full_device() -> None:
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, 2)


@pytest.mark.parametrize(
    "fault", [_close_stderr, _stderr_on_a_full_device], ids=["stderr-closed", "stderr-full"]
)
def test_stderr_closed_or_full_loses_no_record(tiny_onnx, scans, tmp_path, fault):
    out = tmp_path / "results.jsonl"
    inputs = sorted(scans.iterdir())
    done = run_process("--model", tiny_onnx, "--jsonl", "-o", out, *inputs, preexec_fn=fault)
    assert done.returncode == 0
    assert len(_by_input(records_of(out))) == 8


def test_a_non_blocking_stdout_pipe_that_fills_loses_no_record(tiny_onnx, scans):
    """A parent that hands over a non-blocking pipe (Node.js does) and reads only once it is
    full: btxrd waits for the reader instead of failing with EAGAIN."""
    import fcntl
    import subprocess
    import sys
    import termios
    import time

    many = [str(p) for p in sorted(scans.iterdir())] * 60  # far more than a pipe holds
    if not Path("/proc/self/wchan").exists():
        pytest.skip("needs /proc/PID/wchan to see a process wait on a pipe")
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    capacity = fcntl.fcntl(read_end, fcntl.F_GETPIPE_SZ)
    env = {k: v for k, v in os.environ.items() if k not in ("BTXRD_MODEL", "BTXRD_CONFIG")}
    command = [sys.executable, "-m", "btxrd.runtime.cli.run", "--model", str(tiny_onnx), "--jsonl"]
    process = subprocess.Popen([*command, "-q", *many], stdout=write_end, env=env)
    os.close(write_end)
    waiting = np.zeros(1, dtype=np.int32)
    # Polled, not slept on: the outcome is the same whenever the reading starts, since a run
    # that fails on a full pipe has failed before anything is read.
    # Nothing is read until the run has either ended (having lost what EAGAIN refused) or waits
    # on the full pipe, as it should; polled, so no sleep decides which.
    while process.poll() is None and not _blocked_on_a_pipe(process.pid):
        time.sleep(0.01)
    fcntl.ioctl(read_end, termios.FIONREAD, waiting)
    assert waiting[0] > capacity // 2  # the pipe was full when reading began
    with os.fdopen(read_end, "rb") as reader:
        lines = reader.read().decode().splitlines()
    assert process.wait(timeout=300) == 0
    assert len(lines) == len(many)


def _blocked_on_a_pipe(pid: int) -> bool:
    """The process waits in the kernel to write to a full pipe (``/proc/PID/wchan``)."""
    try:
        with open(f"/proc/{pid}/wchan", encoding="ascii") as handle:
            return "pipe_write" in handle.read()
    except FileNotFoundError:
        return False  # it has ended


def _remove_the_folder(out: Path) -> None:
    shutil.rmtree(out.parent)


def _a_folder_takes_its_place(out: Path) -> None:
    out.mkdir()


@pytest.mark.parametrize(
    ("fault", "cause", "fix"),
    [
        (_remove_the_folder, "No such file or directory", "Its folder was removed"),
        (_a_folder_takes_its_place, "Is a directory", "A folder now stands at that path"),
    ],
    ids=["folder-removed-mid-run", "output-replaced-by-a-folder-mid-run"],
)
def test_a_write_fault_mid_run_names_its_real_cause(tiny_onnx, scans, tmp_path, fault, cause, fix):
    out = tmp_path / "out" / "results.jsonl"
    out.parent.mkdir()
    run = StoppedRun(
        "btxrd.runtime.output.jsonl",
        "JsonlJournal.write",
        *("--model", tiny_onnx, "--jsonl", "-q", "-o", out, *sorted(scans.iterdir())),
    )
    fault(out)
    done = run.resume()
    assert done.returncode == 3
    line = assert_one_clear_line(done.stderr.decode(), str(out), cause, fix)
    assert "Free some space" not in line
    if fault is _remove_the_folder:
        assert "is gone" in line  # never "every finished record is in" a file that is not
    else:
        assert "every finished record is in" in line


def test_a_resume_that_cannot_write_names_the_file(tiny_onnx, scans, tmp_path):
    out = tmp_path / "results.jsonl"
    inputs = sorted(scans.iterdir())
    assert _jsonl(tiny_onnx, inputs, out).exit_code == 0
    size = out.stat().st_size

    def small_files() -> None:  # the kept records cannot all be written back
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, size // 2))

    done = run_process(
        *("--model", tiny_onnx, "--jsonl", "-o", out, "--resume", *inputs), preexec_fn=small_files
    )
    assert done.returncode == 3
    line = assert_one_clear_line(done.stderr.decode(), f"{out}.partial", "File too large")
    assert "is unchanged" in line
    assert len(records_of(out)) == 8
