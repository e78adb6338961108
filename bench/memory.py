"""6. Peak memory of long folder runs, and the size of the runtime-only environment.

- ``btxrd-run --dir`` on a small and a large folder of 600 px JPEGs (small so the inputs are
  quick to make; the 2000 x 2500 runs' peaks are in the folder section), peak RSS of the process
  from ``wait4``. Targets: under 400 MB and not growing with the count.
- Peak RSS of a bare onnxruntime session running the runtime's batch size with the runtime's
  settings and with the memory arena or memory pattern off (what onnxruntime itself holds).
- The runtime-only environment (``.venv-run``, ``make .venv-run/.stamp``): under 250 MB.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, replace
from typing import Any

import sessions
from context import BENCH, Context
from report import row
from timing import run_command

TARGET_MB = 400
TARGET_VENV_MB = 250
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
        size = (
            int(
                subprocess.run(
                    ["du", "-sb", str(venv)], capture_output=True, text=True, check=True
                ).stdout.split()[0]
            )
            / 1e6
        )
        figures["venv_run_mb"] = round(size, 1)
        rows.append(
            row(
                ".venv-run size",
                round(size, 1),
                unit="MB",
                target=f"< {TARGET_VENV_MB} MB",
                met=size < TARGET_VENV_MB,
            )
        )
    else:
        figures["venv_run_mb"] = None
        rows.append(row(".venv-run size", "not built", note="make .venv-run/.stamp"))
    return figures, rows


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
