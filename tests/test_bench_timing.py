"""``bench/timing.py``: a timed command's CPU seconds count the process and the children it
waited for (the torch pipeline's DataLoader workers), and cores busy is CPU over wall."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

from timing import CommandStats, Stats, interleave_commands, run_command  # noqa: E402

# Burns this much CPU time, however busy the machine is (process_time, not the wall clock).
SPIN = "import time\nstart = time.process_time()\nwhile time.process_time() - start < {s}: pass\n"
PARENT = (
    "import subprocess, sys\n"
    "child = subprocess.Popen([sys.executable, '-c', {spin!r}])\n"
    + SPIN.format(s=0.3)
    + "child.wait()\n"
)


def test_cpu_seconds_are_those_the_command_spent() -> None:
    run = run_command([sys.executable, "-c", SPIN.format(s=0.4)])
    assert run.returncode == 0
    assert 0.4 <= run.cpu_seconds <= run.seconds + 0.05


def test_cpu_seconds_include_the_children_it_waited_for() -> None:
    run = run_command([sys.executable, "-c", PARENT.format(spin=SPIN.format(s=0.3))])
    assert run.returncode == 0
    assert run.cpu_seconds >= 0.6  # 0.3 s in the parent and 0.3 s in its child


def test_interleaved_commands_keep_each_runs_cpu_seconds() -> None:
    measured = interleave_commands(
        {"spin": [sys.executable, "-c", SPIN.format(s=0.2)], "idle": [sys.executable, "-c", ""]},
        reps=2,
        warmup=0,
    )
    assert [c >= 0.2 for c in measured["spin"].cpu_seconds] == [True, True]
    assert measured["spin"].cpu_seconds[0] > measured["idle"].cpu_seconds[0]
    assert len(measured["idle"].max_rss_bytes) == 2


def test_cores_busy_is_cpu_over_wall() -> None:
    stats = CommandStats(Stats((2.0, 4.0)), (1, 1), (3.0, 4.0))
    assert stats.cores_busy() == (1.5, 1.0)
