"""Helpers of the reliability matrix: every case runs
through the real ``btxrd-run`` command, beside good images that must still be classified."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner, Result
from stopped_run import StoppedRun  # noqa: F401  (the tests import it from here)

from btxrd.runtime.cli.run import main

# Keep the caller's environment out of the commands under test.
CLEAN_ENV = {"BTXRD_MODEL": None, "BTXRD_CONFIG": None}


def run_cli(*args: object, env: dict | None = None) -> Result:
    """``btxrd-run`` in this process through click, with stdout and stderr kept apart."""
    return CliRunner().invoke(main, [str(a) for a in args], env={**CLEAN_ENV, **(env or {})})


def run_process(
    *args: object, code: str | None = None, wrap: list[str] = (), **kwargs
) -> subprocess.CompletedProcess:
    """``btxrd-run`` as its own process (signals, pipes, resource limits, namespaces), or
    ``code`` run with the same arguments; ``wrap`` is a command to run it under."""
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    start = ["-c", code] if code else ["-m", "btxrd.runtime.cli.run"]
    command = [*wrap, sys.executable, *start, *map(str, args)]
    return subprocess.run(command, capture_output=True, env=env, timeout=120, **kwargs)


def assert_one_clear_line(stderr: str, *needles: str) -> str:
    """Exactly one stderr line is an error; it contains every needle; no traceback anywhere."""
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def records_of(jsonl: Path) -> list[dict]:
    """Every line of a JSONL output must be a complete record."""
    return [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]


def peak_rss_kib(*args: object) -> int:
    """Peak resident memory (KiB) of a fresh ``btxrd-run`` process given ``args``.

    ``VmHWM`` counts this process image only; ``ru_maxrss`` would also count the test runner's
    memory at the fork that started it (Linux carries it across exec), which can hide the case.
    """
    code = (
        "import resource, sys; from btxrd.runtime.cli.run import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "try:\n"
        "    lines = open('/proc/self/status').read().splitlines()\n"
        "    peak = next(int(l.split()[1]) for l in lines if l.startswith('VmHWM:'))\n"
        "except (OSError, StopIteration):\n"
        "    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(peak, file=sys.stderr)"
    )
    done = run_process(*args, code=code)
    return int(done.stderr.decode().strip().splitlines()[-1])


def assert_scores_like_reference(
    model: Path, case: Path, pixels, tmp_path: Path, note: str | None = None
) -> dict:
    """``case`` is classified beside a PNG of ``pixels`` (what an independent decoder or the
    standard's formula gives), without a word on stderr, and both score alike to 1e-6; ``note``
    must be among the case's record notes. Returns the case's record."""
    import numpy as np
    import pytest
    from PIL import Image

    reference = tmp_path / "reference.png"
    Image.fromarray(np.ascontiguousarray(pixels)).save(reference)
    out = tmp_path / "results.jsonl"
    result = run_cli("--model", model, "--jsonl", "--output", out, case, reference)
    assert result.exit_code == 0, result.stderr
    assert "error" not in result.stderr and "Warning" not in result.stderr
    ours, theirs = records_of(out)
    assert ours["error"] is None and ours["prediction"] is not None
    assert ours["scores"] == pytest.approx(theirs["scores"], abs=1e-6)
    if note:
        assert any(note in n for n in ours["notes"]), ours["notes"]
    return ours


def write_radiograph(path: Path, seed: int = 0) -> Path:
    """A small 8-bit grey film-like image (96 x 80) the tiny model classifies."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(30, 220, (96, 80), dtype=np.uint8)).save(path)
    return path


def write_scans(folder: Path, count: int) -> Path:
    """``folder`` holding ``scan0.png`` ... ``scan{count-1}.png``, each of its own seed."""
    folder.mkdir()
    for i in range(count):
        write_radiograph(folder / f"scan{i}.png", seed=i)
    return folder
