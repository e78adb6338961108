"""Faults while ``btxrd-run`` is running, each in its own process: Ctrl-C, a full disk, a reader
that goes away, a model that returns NaN. Nothing written is ever half a result."""

from __future__ import annotations

import fcntl
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from reliability_support import CLEAN_ENV, assert_one_clear_line, records_of, run_cli, run_process


@pytest.fixture
def many_images(tmp_path) -> Path:
    """400 small distinct radiograph-like PNGs: enough that a run lasts a few seconds."""
    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(0)
    base = rng.integers(40, 200, (96, 80), dtype=np.uint8)
    for i in range(400):
        pixels = np.roll(base, i, axis=1)
        Image.fromarray(pixels).save(folder / f"scan{i:03d}.png", compress_level=1)
    return folder


def _command(*args: object) -> list[str]:
    return [sys.executable, "-m", "btxrd.runtime.cli.run", *map(str, args)]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(*args: object, code: str | None = None) -> subprocess.Popen:
    """``btxrd-run`` (or ``code`` with its arguments) as its own process, stdout and stderr piped.

    stdout is unbuffered on this side, so reading one line takes exactly one line off the pipe.
    """
    start = ["-c", code] if code else ["-m", "btxrd.runtime.cli.run"]
    return subprocess.Popen(
        [sys.executable, *start, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
        env=_env(),
        # A shell starts background jobs with SIGINT ignored, and Python keeps an ignored SIGINT
        # ignored; a user's Ctrl-C reaches a foreground process, so give the child that.
        preexec_fn=_default_sigint,
    )


def _interrupt_after_first_line(process: subprocess.Popen) -> tuple[bytes, bytes]:
    """Wait (blocking read, no clock) until the first line is on stdout, send Ctrl-C, collect.

    Nothing more is read until the signal is sent, so the child can get at most a pipe's worth
    of lines ahead of it before its next write blocks: how far it gets does not depend on speed.
    """
    assert process.stdout is not None
    first = process.stdout.readline()
    assert first.endswith(b"\n"), (first, process.stderr.read() if process.stderr else b"")
    process.send_signal(signal.SIGINT)
    rest, stderr = process.communicate(timeout=120)
    return first + rest, stderr


def _pipe_capacity(process: subprocess.Popen) -> int:
    assert process.stdout is not None
    return fcntl.fcntl(process.stdout.fileno(), fcntl.F_GETPIPE_SZ)


def _assert_interrupted(process: subprocess.Popen, stderr: bytes) -> None:
    assert process.returncode == 130, stderr
    assert b"Traceback" not in stderr
    assert b"btxrd-run: interrupted after" in stderr, stderr


def test_ctrl_c_mid_stream_keeps_complete_lines_and_resume_finishes(
    tiny_onnx, many_images, tmp_path
):
    """``btxrd-run --dir x --jsonl > results.jsonl``, Ctrl-C, then ``--resume`` finishes it."""
    args = ("--model", tiny_onnx, "--jsonl", "--dir", many_images, "--batch-size", 1)
    process = _start(*args, "--threads", 1)
    capacity = _pipe_capacity(process)
    stdout, stderr = _interrupt_after_first_line(process)
    _assert_interrupted(process, stderr)
    lines = stdout.decode().splitlines()
    # 400 records are more than the pipe holds, so the run cannot have finished unread.
    assert len(lines[0]) * 400 > capacity
    first = [json.loads(line) for line in lines]  # every line a complete record
    assert 0 < len(first) < 400
    out = tmp_path / "results.jsonl"
    out.write_bytes(stdout)  # what the shell's `>` would have saved
    resumed = run_cli(*args, "--output", out, "--resume", "--quiet")
    assert resumed.exit_code == 0, resumed.stderr
    paths = [r["path"] for r in records_of(out)]
    assert len(paths) == 400 and len(set(paths)) == 400
    assert paths[: len(first)] == [r["path"] for r in first]


# btxrd-run itself, with one line on stdout after each record reaches the sink: with --output
# nothing else shows how far a run is. The lines are a page long, so an unread pipe stops the run
# a pipe's worth of images later (16 with Linux's 64 KiB) whatever the machine's speed.
_OBSERVED_RUN = """
import sys
from btxrd.runtime.model.classifier import Classifier
from btxrd.runtime.cli.run import main

predict_many = Classifier.predict_many

def observed(self, *args, **kwargs):
    for n, prediction in enumerate(predict_many(self, *args, **kwargs), 1):
        yield prediction
        sys.stdout.write(f"{n} in the sink".ljust(4095) + "\\n")
        sys.stdout.flush()

Classifier.predict_many = observed
main(sys.argv[1:], prog_name="btxrd-run")
"""


@pytest.mark.parametrize("fmt", ["--jsonl", "--json"])
def test_ctrl_c_mid_batch_commits_what_is_finished_to_the_output(
    tiny_onnx, many_images, tmp_path, fmt
):
    out = tmp_path / f"results.{fmt.lstrip('-')}"
    args = ("--model", tiny_onnx, fmt, "--output", out, "--dir", many_images, "--batch-size", 1)
    process = _start(*args, "--threads", 1, code=_OBSERVED_RUN)
    assert _pipe_capacity(process) < 400 * 4096  # the run cannot finish unread
    progress, stderr = _interrupt_after_first_line(process)
    _assert_interrupted(process, stderr)
    in_sink = len(progress.splitlines())
    assert 0 < in_sink < 400
    if fmt == "--json":
        document = json.loads(out.read_text())  # a complete document of the finished part
        assert document["summary"]["interrupted"] is True
        results = document["results"]
    else:
        results = records_of(out)  # every line a complete record
    # Every record that reached the sink is in the file; the signal may land after one more.
    assert in_sink <= len(results) <= in_sink + 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["many", out.name]  # no temp files


def _limit_file_size(limit: int):
    def apply() -> None:
        # A full disk, as the process sees it: writes past `limit` bytes fail with EFBIG.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize("fmt", ["--json", "--jsonl", "--csv"])
def test_disk_full_while_writing_keeps_the_previous_output(tiny_onnx, many_images, tmp_path, fmt):
    out = tmp_path / "results.out"
    previous = "the results of yesterday's run\n"
    out.write_text(previous, encoding="utf-8")
    done = run_process(
        *("--model", tiny_onnx, fmt, "--output", out, "--dir", many_images, "--quiet"),
        preexec_fn=_limit_file_size(20_000),
    )
    assert done.returncode == 3, done.stderr
    assert_one_clear_line(done.stderr.decode(), str(out), "cannot write the results")
    assert out.read_text(encoding="utf-8") == previous
    if fmt != "--jsonl":
        assert sorted(p.name for p in tmp_path.iterdir()) == ["many", "results.out"]  # no temp
        return
    # Streamed records are results already: they wait in the journal, which --resume continues.
    journal = tmp_path / "results.out.partial"
    assert str(journal) in done.stderr.decode() and "--resume" in done.stderr.decode()
    lines = journal.read_text(encoding="utf-8").split("\n")
    finished = [json.loads(line) for line in lines[:-1]]  # the last one may be cut by the limit
    assert 0 < len(finished) < len(list(many_images.iterdir()))
    resumed = run_process(
        *("--model", tiny_onnx, fmt, "--output", out, "--dir", many_images, "--quiet", "--resume")
    )
    assert resumed.returncode == 0, resumed.stderr
    paths = [r["path"] for r in records_of(out)]
    assert sorted(paths) == sorted(str(p) for p in many_images.iterdir())  # each input once
    assert not journal.exists()


def test_reader_going_away_is_a_quiet_exit(tiny_onnx, many_images):
    """``btxrd-run --dir x --jsonl | head -c 100``: more than a pipe buffer of output."""
    process = subprocess.Popen(
        _command("--model", tiny_onnx, "--jsonl", "--quiet", "--dir", many_images),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    assert process.stdout is not None and process.stderr is not None
    head = process.stdout.read(100)
    process.stdout.close()
    stderr = process.stderr.read()
    process.wait(timeout=60)
    assert len(head) == 100
    assert stderr == b""
    assert process.returncode == 0


def _nan_model(proto, path: Path) -> Path:
    """The tiny model with its logits multiplied by infinity: +-inf, and NaN where a logit is 0."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    for node in copy.graph.node:
        node.output[:] = ["logits_raw" if o == "logits" else o for o in node.output]
    infinity = helper.make_tensor("infinity", TensorProto.FLOAT, [], [float("inf")])
    copy.graph.initializer.append(infinity)
    copy.graph.node.append(helper.make_node("Mul", ["logits_raw", "infinity"], ["logits"]))
    path.write_bytes(copy.SerializeToString())
    return path


def test_nan_or_infinite_logits_give_an_error_record_never_an_argmax(
    tiny_model_proto, good_images, tmp_path
):
    model = _nan_model(tiny_model_proto, tmp_path / "nan.onnx")
    result = run_cli("--model", model, "--jsonl", good_images[0])
    assert result.exit_code == 1
    assert_one_clear_line(result.stderr, str(good_images[0]), "NaN or infinite")
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert record["prediction"] is None and record["confidence"] is None
    assert record["scores"] == {}


@pytest.mark.parametrize("fmt", ["--jsonl", "--json"])
def test_sigterm_is_handled_like_ctrl_c(tiny_onnx, many_images, tmp_path, fmt):
    out = tmp_path / f"results.{fmt.lstrip('-')}"
    args = ("--model", tiny_onnx, fmt, "--output", out, "--dir", many_images, "--batch-size", 1)
    process = _start(*args, "--threads", 1, code=_OBSERVED_RUN)
    assert process.stdout is not None
    assert process.stdout.readline().endswith(b"\n")  # a record reached the sink
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    _assert_interrupted(process, stderr)
    results = json.loads(out.read_text())["results"] if fmt == "--json" else records_of(out)
    assert 0 < len(results) < 400


def test_a_killed_first_run_keeps_its_records_for_resume(tiny_onnx, many_images, tmp_path):
    """SIGKILL (or a power cut) on a first ``--jsonl --output`` run: nothing can be committed at
    the end, so every finished record must already be on disk where --resume finds it."""
    out = tmp_path / "results.jsonl"
    args = ("--model", tiny_onnx, "--jsonl", "--output", out, "--dir", many_images)
    process = _start(*args, "--batch-size", 1, "--threads", 1, code=_OBSERVED_RUN)
    assert process.stdout is not None
    in_sink = 0
    while in_sink < 3:  # three records have been written and flushed
        assert process.stdout.readline().endswith(b"\n")
        in_sink += 1
    process.kill()
    process.communicate(timeout=60)
    journal = tmp_path / "results.jsonl.partial"
    saved = [json.loads(line) for line in journal.read_text().splitlines()]
    assert len(saved) >= in_sink
    resumed = run_cli(*args, "--resume", "--quiet")
    assert resumed.exit_code == 0, resumed.stderr
    paths = [r["path"] for r in records_of(out)]
    assert sorted(paths) == sorted(str(p) for p in many_images.iterdir())  # each input once
    assert paths[: len(saved)] == [r["path"] for r in saved]  # nothing finished was redone
    assert not journal.exists()
