"""Timers for side-by-side figures: interleaved rounds, min and median, repetitions counted.

Absolute times on a shared machine drift with whatever else runs, so every comparison here is
measured interleaved: round r runs each case once, in an order rotated by r, and the figures
compared are ratios of the same run. ``paired`` ratios (the median of per-round ratios) are the
most robust to slow drift.
"""

from __future__ import annotations

import gc
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Stats:
    """Repeated measurements of one quantity (seconds unless ``unit`` says otherwise)."""

    samples: tuple[float, ...]
    unit: str = "s"

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def reps(self) -> int:
        return len(self.samples)

    def scaled(self, factor: float, unit: str) -> Stats:
        return Stats(tuple(s * factor for s in self.samples), unit)

    def to_json(self, digits: int = 4) -> dict[str, Any]:
        return {
            "min": _round(self.min, digits),
            "median": _round(self.median, digits),
            "reps": self.reps,
            "unit": self.unit,
        }

    def rate(self, count: float, unit: str = "images/s") -> dict[str, Any]:
        """``count`` items per sample as a rate: best (from the min) and median."""
        return {
            "best": _round(count / self.min, 2),
            "median": _round(count / self.median, 2),
            "reps": self.reps,
            "unit": unit,
        }


@dataclass(frozen=True)
class CommandRun:
    seconds: float
    max_rss_bytes: int
    returncode: int
    stderr_tail: str
    cpu_seconds: float = 0.0  # user + system, the process and the children it waited for


@dataclass(frozen=True)
class CommandStats:
    """One command's interleaved runs: wall times, and each run's peak RSS and CPU seconds."""

    stats: Stats
    max_rss_bytes: tuple[int, ...]
    cpu_seconds: tuple[float, ...]

    def cores_busy(self) -> tuple[float, ...]:
        """Each run's CPU seconds over its wall seconds: how many cores it kept busy."""
        return tuple(c / t for c, t in zip(self.cpu_seconds, self.stats.samples, strict=True))


def ratio(slow: Stats, fast: Stats) -> dict[str, Any]:
    """How many times ``fast`` beats ``slow``: of medians, of mins, and the median paired ratio."""
    paired = [s / f for s, f in zip(slow.samples, fast.samples, strict=False) if f > 0]
    return {
        "median": _round(slow.median / fast.median, 3),
        "min": _round(slow.min / fast.min, 3),
        "paired_median": _round(statistics.median(paired), 3) if paired else None,
    }


def interleave(
    cases: Mapping[str, Callable[[], object]],
    reps: int,
    *,
    warmup: int = 1,
    inner: int = 1,
    between: Callable[[], object] | None = None,
) -> dict[str, Stats]:
    """Seconds per call of each case, rounds interleaved; ``inner`` calls per sample."""
    names = list(cases)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(warmup):
        for name in names:
            cases[name]()
    for r in range(reps):
        gc.collect()
        for name in _rotated(names, r):
            if between is not None:
                between()
            started = time.perf_counter()
            for _ in range(inner):
                cases[name]()
            samples[name].append((time.perf_counter() - started) / inner)
    return {name: Stats(tuple(values)) for name, values in samples.items()}


# Linux carries a process's peak RSS across fork and exec: a child started straight from this
# (large) process reports at least this process's size as its ru_maxrss. So every command is
# started by a small launcher that forks, execs it, and reports its wall time and wait4 usage.
_LAUNCHER = """
import json, os, sys, time
report, command = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        sys.stderr.write(f"cannot run {command[0]}: {exc}\\n")
    os._exit(127)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - started
with open(report, "w") as handle:
    json.dump({"seconds": seconds, "max_rss_kb": usage.ru_maxrss,
               "cpu_seconds": usage.ru_utime + usage.ru_stime,
               "returncode": os.waitstatus_to_exitcode(status)}, handle)
"""


def run_command(
    command: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> CommandRun:
    """Run one process to completion: its wall seconds, its own peak RSS and its CPU seconds.

    Timed inside the launcher, from fork to ``wait4``, so the launcher's start is not counted.
    """
    with tempfile.TemporaryDirectory(prefix="btxrd-bench-run-") as tmp:
        report = Path(tmp) / "report.json"
        err_path = Path(tmp) / "stderr"
        launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(report), *command]
        with err_path.open("wb") as err:
            subprocess.run(launcher, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=cwd)
        tail = err_path.read_bytes()[-2000:].decode("utf-8", "replace")
        if not report.is_file():
            return CommandRun(0.0, 0, -1, f"launcher failed: {tail}")
        result = json.loads(report.read_text())
    # ru_maxrss is in kilobytes on Linux.
    return CommandRun(
        result["seconds"],
        result["max_rss_kb"] * 1024,
        result["returncode"],
        tail,
        result["cpu_seconds"],
    )


def interleave_commands(
    commands: Mapping[str, Sequence[str]],
    reps: int,
    *,
    warmup: int = 1,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> dict[str, CommandStats]:
    """Whole-process wall time of each command, interleaved; also each run's peak RSS and CPU."""
    names = list(commands)
    runs: dict[str, list[CommandRun]] = {n: [] for n in names}
    for _ in range(warmup):
        for name in names:
            _checked(name, run_command(commands[name], env=env, cwd=cwd))
    for r in range(reps):
        for name in _rotated(names, r):
            runs[name].append(_checked(name, run_command(commands[name], env=env, cwd=cwd)))
    return {
        n: CommandStats(
            Stats(tuple(r.seconds for r in runs[n])),
            tuple(r.max_rss_bytes for r in runs[n]),
            tuple(r.cpu_seconds for r in runs[n]),
        )
        for n in names
    }


def hyperfine_path() -> str | None:
    return shutil.which("hyperfine")


def hyperfine_commands(
    commands: Mapping[str, Sequence[str]],
    reps: int,
    *,
    warmup: int = 1,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    round_size: int = 2,
) -> dict[str, Stats]:
    """The same figures through hyperfine, in rounds of ``round_size`` runs per command.

    hyperfine runs one command's repetitions back to back; calling it in short rounds with the
    command order rotated keeps the pair interleaved at the round level.
    """
    exe = hyperfine_path()
    if exe is None:
        raise RuntimeError("hyperfine is not installed")
    names = list(commands)
    times: dict[str, list[float]] = {n: [] for n in names}
    rounds = max(1, -(-reps // round_size))
    for r in range(rounds):
        runs = min(round_size, reps - r * round_size)
        order = _rotated(names, r)
        with tempfile.TemporaryDirectory(prefix="btxrd-bench-hf-") as tmp:
            out = Path(tmp) / "hyperfine.json"
            argv = [exe, "--shell=none", "--style", "none", "--runs", str(max(runs, 2))]
            argv += ["--warmup", str(warmup if r == 0 else 0), "--export-json", str(out)]
            argv += [shlex.join(commands[n]) for n in order]
            subprocess.run(argv, check=True, env=env, cwd=cwd, stdout=subprocess.DEVNULL)
            results = json.loads(out.read_text())["results"]
        for name, result in zip(order, results, strict=True):
            times[name].extend(result["times"][:runs])
    return {n: Stats(tuple(times[n])) for n in names}


def cpu_seconds_during(wait: float) -> float:
    """Process CPU seconds (all threads) used while this thread sleeps ``wait`` seconds."""
    started = time.process_time()
    time.sleep(wait)
    return time.process_time() - started


def _checked(name: str, run: CommandRun) -> CommandRun:
    if run.returncode != 0:
        raise RuntimeError(
            f"{name}: exit code {run.returncode}; stderr ends with:\n{run.stderr_tail}"
        )
    return run


def _rotated(names: list[str], r: int) -> list[str]:
    k = r % len(names) if names else 0
    return names[k:] + names[:k]


def _round(value: float, digits: int) -> float:
    return float(f"{value:.{digits}g}") if abs(value) < 1 else round(value, digits)
