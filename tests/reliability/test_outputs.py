"""Reliability matrix, outputs: no output path, resumed file, file name or odd input can make
``btxrd-run`` destroy a file, lose a result or write something a reader would misread."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from reliability_support import (
    CLEAN_ENV,
    assert_one_clear_line,
    records_of,
    run_cli,
    run_process,
    write_radiograph,
    write_scans,
)


@pytest.fixture
def scans(tmp_path) -> Path:
    return write_scans(tmp_path / "scans", 3)


# --- outputs that must never be written over ---------------------------------------------


def _same_file_spellings(scans: Path, tmp_path: Path, tiny_onnx: Path) -> dict[str, Path]:
    first = scans / "scan0.png"
    hard = tmp_path / "hard-link.png"
    os.link(first, hard)
    link = tmp_path / "link-to-input.png"
    link.symlink_to(first)
    return {
        "same-spelling": first,
        "other-spelling": scans / ".." / "scans" / "scan0.png",
        "hard-link": hard,
        "symlink-to-input": link,
        "the-model": tiny_onnx,
    }


@pytest.mark.parametrize(
    "case", ["same-spelling", "other-spelling", "hard-link", "symlink-to-input", "the-model"]
)
def test_output_that_is_an_input_or_the_model_is_refused(tiny_onnx, scans, tmp_path, case):
    model_copy = tmp_path / "model.onnx"
    shutil.copyfile(tiny_onnx, model_copy)
    out = _same_file_spellings(scans, tmp_path, model_copy)[case]
    before = {p: p.read_bytes() for p in (scans / "scan0.png", model_copy)}
    result = run_cli("--model", model_copy, "--json", "-o", out, scans / "scan0.png")
    assert result.exit_code == 3, result.stderr
    what = "model" if case == "the-model" else "input image"
    assert_one_clear_line(result.stderr, str(out), what, "destroy")
    assert {p: p.read_bytes() for p in before} == before
    assert not Path(out).is_symlink() or case == "symlink-to-input"


def test_output_through_a_symlink_writes_its_target_and_keeps_the_link(tiny_onnx, scans, tmp_path):
    target = tmp_path / "store" / "results.json"
    target.parent.mkdir()
    target.write_text("old\n", encoding="utf-8")
    link = tmp_path / "latest.json"
    link.symlink_to(target)
    result = run_cli("--model", tiny_onnx, "--quiet", "-o", link, scans / "scan0.png")
    assert result.exit_code == 0, result.stderr
    assert link.is_symlink() and link.resolve() == target
    assert json.loads(target.read_text())["results"][0]["path"] == str(scans / "scan0.png")


def test_output_to_a_fifo_is_written_into_it_not_replaced(tiny_onnx, scans, tmp_path):
    fifo = tmp_path / "results.fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    result = run_cli("--model", tiny_onnx, "--quiet", "--jsonl", "-o", fifo, scans / "scan0.png")
    reader.join(timeout=60)
    assert result.exit_code == 0, result.stderr
    assert stat.S_ISFIFO(fifo.lstat().st_mode)  # still a FIFO, not a regular file in its place
    (record,) = [json.loads(line) for line in received[0].decode().splitlines()]
    assert record["path"] == str(scans / "scan0.png")


@pytest.mark.parametrize("fmt", ["--json", "--jsonl", "--csv"])
def test_a_replaced_output_keeps_its_permission_bits(tiny_onnx, scans, tmp_path, fmt):
    out = tmp_path / "private-results"
    out.write_text("old\n", encoding="utf-8")
    out.chmod(0o600)
    result = run_cli("--model", tiny_onnx, fmt, "--quiet", "-o", out, scans / "scan0.png")
    assert result.exit_code == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_text(encoding="utf-8") != "old\n"


# --- resume trusts only what it wrote --------------------------------------------------------


def _first_run(tiny_onnx, scans, out: Path, *images: Path):
    result = run_cli("--model", tiny_onnx, "--jsonl", "--quiet", "-o", out, *images)
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize(
    ("content", "cause"),
    [
        ('{"id": 1, "label": "cat"}\n{"id": 2, "label": "dog"}\n', "not a btxrd-run record"),
        ("plain notes\nsecond line\n", "line 1 is not JSON"),
        ('[1, 2, 3]\n{"path": "a"}\n', "not a btxrd-run record"),
    ],
    ids=["foreign-jsonl", "text-file", "odd-values"],
)
def test_resume_refuses_a_file_it_did_not_write(tiny_onnx, scans, tmp_path, content, cause):
    out = tmp_path / "results.jsonl"
    out.write_text(content, encoding="utf-8")
    result = run_cli("--model", tiny_onnx, "--jsonl", "-o", out, "--resume", scans / "scan0.png")
    assert result.exit_code == 3, result.stderr
    assert_one_clear_line(result.stderr, str(out), cause)
    assert out.read_text(encoding="utf-8") == content  # not a line lost


def test_resume_refuses_records_of_another_model(tiny_onnx, demo_onnx, scans, tmp_path):
    out = tmp_path / "results.jsonl"
    _first_run(tiny_onnx, scans, out, scans / "scan0.png")
    before = out.read_text(encoding="utf-8")
    result = run_cli("--model", demo_onnx, "--jsonl", "-o", out, "--resume", scans / "scan1.png")
    assert result.exit_code == 3, result.stderr
    assert_one_clear_line(result.stderr, str(out), "another model")
    assert out.read_text(encoding="utf-8") == before


def test_resume_knows_an_input_however_it_is_spelled(tiny_onnx, scans, tmp_path, monkeypatch):
    monkeypatch.chdir(scans.parent)
    out = tmp_path / "results.jsonl"
    _first_run(tiny_onnx, scans, out, Path("scans/scan0.png"))
    result = run_cli(
        *("--model", tiny_onnx, "--jsonl", "--quiet", "-o", out, "--resume"),
        *(scans / "scan0.png", Path("./scans/../scans/scan1.png")),
    )
    assert result.exit_code == 0, result.stderr
    keys = [os.path.realpath(r["path"]) for r in records_of(out)]
    assert sorted(keys) == sorted(os.path.realpath(scans / f"scan{i}.png") for i in (0, 1))


# --- inputs the walk must not hang on or skip silently ---------------------------------------


def test_a_fifo_in_the_folder_is_an_error_record_not_a_hang(tiny_onnx, scans):
    fifo = scans / "pipe.png"
    os.mkfifo(fifo)
    done = run_process("--model", tiny_onnx, "--jsonl", "--dir", scans)
    stderr = done.stderr.decode()
    assert done.returncode == 1, stderr
    assert_one_clear_line(stderr, str(fifo), "FIFO")
    records = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert sum(r["error"] is None for r in records) == 3


def test_a_fifo_given_as_an_input_is_an_error_record_not_a_hang(tiny_onnx, scans):
    fifo = scans / "named-pipe.png"
    os.mkfifo(fifo)
    done = run_process("--model", tiny_onnx, "--jsonl", scans / "scan0.png", fifo)
    stderr = done.stderr.decode()
    assert done.returncode == 1, stderr
    assert_one_clear_line(stderr, str(fifo), "not a regular file")
    good, refused = (json.loads(line) for line in done.stdout.decode().splitlines())
    assert good["error"] is None and refused["prediction"] is None


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_an_unreadable_sub_folder_is_an_error_record(tiny_onnx, scans):
    """Root reads everything, so the command runs in a new user namespace, where mode bits hold."""
    locked = scans / "locked"
    locked.mkdir()
    write_radiograph(locked / "hidden.png")
    locked.chmod(0o000)
    try:
        done = run_process(
            *("--model", tiny_onnx, "--jsonl", "--recursive", "--dir", scans),
            wrap=["unshare", "--user"],
        )
    finally:
        locked.chmod(0o755)
    stderr = done.stderr.decode()
    assert done.returncode == 1, stderr
    assert_one_clear_line(stderr, str(locked), "cannot read this folder")
    records = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert sum(r["error"] is None for r in records) == 3


# --- file names a reader would misread ---------------------------------------------------------


def test_a_formula_file_name_stays_text_in_the_csv(tiny_onnx, tmp_path):
    name = '=HYPERLINK("evil.example","x").png'
    image = write_radiograph(tmp_path / name)
    result = run_cli("--model", tiny_onnx, "--csv", image)
    assert result.exit_code == 0, result.stderr
    row = next(csv.DictReader(io.StringIO(result.stdout)))
    assert row["image_name"] == "'" + name
    assert row["path"].startswith(str(tmp_path))  # an absolute path starts with /, harmless


def test_escape_sequences_in_a_file_name_never_reach_the_terminal(tiny_onnx, tmp_path):
    good = write_radiograph(tmp_path / "a\x1b[31mred\x1b]0;owned\x07.png")
    bad = tmp_path / "b\x1b[2Jclear.png"
    bad.write_bytes(b"not an image")
    result = run_cli("--model", tiny_onnx, good, bad)
    assert result.exit_code == 1
    for stream in (result.stdout, result.stderr):
        assert "\x1b" not in stream and "\x07" not in stream
    assert "owned\\x07.png" in result.stdout and "\\x1b[2Jclear" in result.stderr


@pytest.mark.parametrize("fmt", ["--csv", "--json", "--jsonl"])
def test_a_file_name_that_is_not_utf8_is_written_readably(tiny_onnx, tmp_path, fmt):
    image = write_radiograph(Path(os.fsdecode(bytes(tmp_path) + b"/scan-\xff\xfe.png")))
    out = tmp_path / f"results.{fmt.lstrip('-')}"
    result = run_cli("--model", tiny_onnx, fmt, "--quiet", "-o", out, image)
    assert result.exit_code == 0, result.stderr
    text = out.read_text(encoding="utf-8")  # valid UTF-8
    assert "scan-\\xff\\xfe.png" in text.replace("\\\\", "\\")


# --- faults of one input's own output ------------------------------------------------------


def test_an_overlay_name_too_long_is_that_inputs_error_record(tiny_onnx, scans, tmp_path):
    long_name = write_radiograph(scans / ("x" * 240 + ".png"))  # its overlay's temp name is > 255
    result = run_cli(
        "--model", tiny_onnx, "--jsonl", "--cam", "--cam-dir", tmp_path / "cams", "--dir", scans
    )
    assert result.exit_code == 1, result.stderr
    assert_one_clear_line(result.stderr, str(long_name), "overlay", "could not be written")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 4 and sum(r["error"] is None for r in records) == 3
    assert len(list((tmp_path / "cams").iterdir())) == 3


def test_stdout_on_a_full_device_is_one_clear_line(tiny_onnx, scans):
    command = [sys.executable, "-m", "btxrd.runtime.cli.run", "--model", str(tiny_onnx), "--json"]
    with open("/dev/full", "wb") as full:
        done = subprocess.run(
            [*command, "--quiet", str(scans / "scan0.png")],
            stdout=full,
            stderr=subprocess.PIPE,
            env={k: v for k, v in os.environ.items() if k not in CLEAN_ENV},
            timeout=120,
        )
    stderr = done.stderr.decode()
    assert done.returncode == 3, stderr
    assert "Traceback" not in stderr
    assert "No space left on device" in stderr and len(stderr.strip().splitlines()) == 1


def _with_stdout_closed() -> None:
    os.close(1)  # as cron, a service manager or `>&-` may start a command


@pytest.mark.parametrize("fmt", ["--jsonl", "--json", "--csv"])
def test_closed_stdout_with_an_output_file_writes_every_record(tiny_onnx, scans, tmp_path, fmt):
    out = tmp_path / f"results.{fmt.lstrip('-')}"
    images = [scans / "scan0.png", scans / "scan1.png"]
    done = run_process(
        "--model", tiny_onnx, fmt, "-o", out, *images, preexec_fn=_with_stdout_closed
    )
    stderr = done.stderr.decode()
    assert done.returncode == 0, stderr
    assert "error" not in stderr and "Traceback" not in stderr
    text = out.read_text(encoding="utf-8")
    assert all(str(image) in text for image in images)


def test_closed_stdout_without_an_output_file_is_refused_before_any_work(tiny_onnx, scans):
    done = run_process("--model", tiny_onnx, "--json", scans / "scan0.png",
                       preexec_fn=_with_stdout_closed)  # fmt: skip
    assert done.returncode == 3
    assert_one_clear_line(done.stderr.decode(), "standard output is closed", "--output FILE")


def test_protection_lasts_one_run_not_the_process(tiny_onnx, scans, tmp_path):
    """In one process (a test runner, a server), a file that was an input of an earlier run may
    be the output of a later one: protection belongs to a run."""
    earlier_input = tmp_path / "was-an-input.json"
    earlier_input.write_bytes((scans / "scan0.png").read_bytes())
    first = run_cli("--model", tiny_onnx, "--json", "--quiet", earlier_input)
    assert first.exit_code == 0, first.stderr
    second = run_cli("--model", tiny_onnx, "--quiet", "-o", earlier_input, scans / "scan1.png")
    assert second.exit_code == 0, second.stderr
    assert json.loads(earlier_input.read_text())["results"][0]["path"] == str(scans / "scan1.png")
