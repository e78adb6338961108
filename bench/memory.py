"""6. Peak memory of long folder runs, and the size of the runtime-only environment.

- ``btxrd-run --dir`` on a small and a large folder of 600 px JPEGs (small so the inputs are
  quick to make; the 2000 x 2500 runs' peaks are in the folder section), peak RSS of the process
  from ``wait4``. Targets: under 400 MB and not growing with the count.
- Peak RSS of a bare onnxruntime session running the runtime's batch size with the runtime's
  settings and with the memory arena or memory pattern off (what onnxruntime itself holds).
- What ``pip install btxrd`` (no extras) puts on disk: btxrd and its requirements, the files
  their installed metadata lists, measured in the runtime-only environment (``.venv-run``,
  ``make .venv-run/.stamp``): under 250 MB. The whole of ``.venv-run`` is reported beside it;
  it also holds pip and the test tools ``make test-runtime`` adds.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import sessions
from context import BENCH, Context
from report import row
from timing import run_command

TARGET_MB = 400
TARGET_VENV_MB = 250
# Run by the environment's own Python: the bytes of every file btxrd's base install brought.
_INSTALLED_BYTES = """
from importlib import metadata
from pathlib import Path
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
seen, todo, total = set(), ["btxrd"], 0
while todo:
    name = canonicalize_name(todo.pop())
    if name in seen:
        continue
    seen.add(name)
    dist = metadata.distribution(name)
    # Sizes on disk, not RECORD's: it gives none for the bytecode pip compiles at install.
    paths = [Path(f.locate()) for f in dist.files or ()]
    total += sum(p.stat().st_size for p in paths if p.is_file())
    for text in dist.requires or ():
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            todo.append(requirement.name)
print(total, " ".join(sorted(seen)))
"""
_SESSION_ONLY = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import numpy as np, sessions
variant = sessions.Variant(**json.loads(sys.argv[3]))
session = sessions.open_session(Path(sys.argv[2]), variant)
batch = np.zeros((int(sys.argv[4]), 3, 224, 224), np.float32)
for _ in range(3):
    sessions.logits(session, batch)
"""


def run(ctx: Context) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    small, large = ctx.counts.memory_counts
    figures: dict[str, Any] = {"image_side_px": 600, "runs": {}}
    rows: list[dict[str, Any]] = []
    for count in (small, large):
        folder = ctx.inputs.memory_folder(count, ctx.counts.memory_distinct)
        out = ctx.work / f"memory_{count}.jsonl"
        command = [ctx.btxrd_run, "--model", str(ctx.model.onnx), "--dir", str(folder)]
        # --no-ood-gate, as in the folder section: the demo model's gate refuses a few synthetic
        # plates (exit 1); the gate is computed either way, so the memory measured is the same.
        command += ["--jsonl", "-q", "--no-ood-gate", "--output", str(out)]
        done = run_command(command, env=ctx.env(), cwd=ctx.repo)
        if done.returncode != 0:
            raise RuntimeError(f"btxrd-run --dir exit {done.returncode}:\n{done.stderr_tail}")
        records = sum(1 for line in out.read_text().splitlines() if line.strip())
        mb = done.max_rss_bytes / 2**20
        figures["runs"][count] = {
            "max_rss_mb": round(mb, 1),
            "seconds": round(done.seconds, 2),
            "records": records,
            "distinct_images": min(count, ctx.counts.memory_distinct),
        }
        rows.append(
            row(
                f"peak RSS, btxrd-run --dir, {count} x 600 px JPEGs",
                round(mb, 1),
                unit="MB",
                target=f"< {TARGET_MB} MB",
                met=mb < TARGET_MB,
                note=f"{records} records, {done.seconds:.1f} s, 1 run",
            )
        )
    a, b = figures["runs"][small]["max_rss_mb"], figures["runs"][large]["max_rss_mb"]
    growth = round(b - a, 1)
    figures["growth_mb"] = growth
    rows.append(
        row(
            f"growth from {small} to {large} images",
            growth,
            unit="MB",
            target="flat (< 10 % of peak)",
            met=abs(growth) < 0.1 * max(a, b),
        )
    )
    _session_only(ctx, figures, rows)
    venv = ctx.run_venv
    if venv.resolve() != ctx.venv_bin.parent.resolve():
        _environment_size(venv, figures, rows)
    else:
        figures["venv_run_mb"] = None
        rows.append(row(".venv-run size", "not built", note="make .venv-run/.stamp"))
    return figures, rows


def _environment_size(venv: Path, figures: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", _INSTALLED_BYTES],
        capture_output=True,
        text=True,
        check=True,
    )
    installed, packages = done.stdout.split(maxsplit=1)
    base_mb = int(installed) / 1e6
    du = subprocess.run(["du", "-sb", str(venv)], capture_output=True, text=True, check=True)
    whole_mb = int(du.stdout.split()[0]) / 1e6
    figures["base_install_mb"] = round(base_mb, 1)
    figures["base_install_packages"] = packages.split()
    figures["venv_run_mb"] = round(whole_mb, 1)
    rows.append(
        row(
            "pip install btxrd (no extras): files on disk",
            round(base_mb, 1),
            unit="MB",
            target=f"< {TARGET_VENV_MB} MB",
            met=base_mb < TARGET_VENV_MB,
            note=f"{packages.strip()}; the demo model is {_demo_model_mb(venv):.1f} MB of it",
        )
    )
    rows.append(
        row(
            ".venv-run size",
            round(whole_mb, 1),
            unit="MB",
            note="with python, pip, setuptools and make test-runtime's test tools",
        )
    )


def _demo_model_mb(venv: Path) -> float:
    models = list(venv.glob("lib/python*/site-packages/btxrd/models/*.onnx"))
    return sum(m.stat().st_size for m in models) / 1e6


def _session_only(ctx: Context, figures: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    batch = 8
    figures["session_only_batch"] = batch
    figures["session_only_max_rss_mb"] = {}
    for variant in (
        sessions.RUNTIME,
        # The runtime turns the memory pattern off; this row is what that saves.
        replace(sessions.RUNTIME, name="mem pattern on (onnxruntime default)", mem_pattern=True),
        replace(sessions.RUNTIME, name="cpu mem arena off", mem_arena=False),
    ):
        settings = {k: v for k, v in asdict(variant).items() if k != "model"}
        command = [ctx.python, "-c", _SESSION_ONLY, str(BENCH), str(ctx.model.onnx)]
        command += [json.dumps(settings), str(batch)]
        done = run_command(command, env=ctx.env(), cwd=ctx.repo)
        if done.returncode != 0:
            raise RuntimeError(f"session-only run failed:\n{done.stderr_tail}")
        mb = round(done.max_rss_bytes / 2**20, 1)
        figures["session_only_max_rss_mb"][variant.name] = mb
        rows.append(row(f"peak RSS, bare session batch {batch}: {variant.name}", mb, unit="MB"))
