"""Faults while ``btxrd-run`` is running, each in its own process: Ctrl-C, a full disk, a reader
that goes away, a model that returns NaN. Nothing written is ever half a result."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
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
    return [sys.executable, "-m", "btxrd.runtime.cli", *map(str, args)]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _lines_so_far(folder: Path) -> int:
    """Lines in the JSONL being streamed (it lives under a temporary name until the end)."""
    return sum(p.read_bytes().count(b"\n") for p in folder.glob(".results.jsonl.*.tmp"))


@pytest.mark.parametrize("fmt", ["--jsonl", "--json"])
def test_ctrl_c_mid_batch_saves_complete_results_and_resume_finishes(
    tiny_onnx, many_images, tmp_path, fmt
):
    suffix = "jsonl" if fmt == "--jsonl" else "json"
    out = tmp_path / f"results.{suffix}"
    args = ("--model", tiny_onnx, fmt, "--output", out, "--dir", many_images, "--batch-size", 1)
    process = subprocess.Popen(
        _command(*args, "--threads", 1),
        stderr=subprocess.PIPE,
        env=_env(),
        # A shell starts background jobs with SIGINT ignored, and Python keeps an ignored SIGINT
        # ignored; a user's Ctrl-C reaches a foreground process, so give the child that.
        preexec_fn=_default_sigint,
    )
    assert process.stderr is not None
    # The intended-use notice comes just before the first image is read.
    notice = process.stderr.readline()
    assert b"clinical" in notice.lower(), notice
    deadline = time.monotonic() + 60
    if fmt == "--jsonl":
        while _lines_so_far(tmp_path) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
    else:
        time.sleep(0.2)  # the JSON document is written once, at the end
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert b"Traceback" not in stderr and b"interrupted after" in stderr
    if fmt == "--json":
        document = json.loads(out.read_text())  # a complete document of the finished part
        assert document["summary"]["interrupted"] is True
        assert 0 < len(document["results"]) < 400
        return
    first = records_of(out)  # every line a complete record
    assert 0 < len(first) < 400
    resumed = run_cli(*args, "--resume", "--quiet")
    assert resumed.exit_code == 0, resumed.stderr
    paths = [r["path"] for r in records_of(out)]
    assert len(paths) == 400 and len(set(paths)) == 400
    assert paths[: len(first)] == [r["path"] for r in first]


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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["many", "results.out"]  # no temp files


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
