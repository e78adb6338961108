"""1. Cold start: one image, whole process from start to printed result, btxrd-run vs torch.

Also two floors for the same interpreter: ``python -c pass`` and importing numpy, onnxruntime
and Pillow, so the part of a cold start that btxrd controls is visible.
"""

from __future__ import annotations

from typing import Any

from context import BENCH, Context
from report import row
from timing import Stats, hyperfine_commands, hyperfine_path, interleave_commands, ratio

TARGETS_S = {"224 px PNG": 0.3, "2000x2500 JPEG": 0.4}
TARGET_RATIO = 8.0


def run(ctx: Context) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    images = {
        "224 px PNG": ctx.inputs.small_pngs(1)[0],
        "2000x2500 JPEG": ctx.inputs.large_jpegs(1)[0],
    }
    run_python = str(ctx.run_venv / "bin" / "python")
    torch_script = [ctx.python, str(BENCH / "torch_reference.py")]
    torch_script += ["--checkpoint", str(ctx.model.checkpoint)]
    commands: dict[str, list[str]] = {
        "floor: python -c pass": [run_python, "-c", "pass"],
        "floor: import numpy, onnxruntime, PIL": [
            run_python,
            "-c",
            "import numpy, onnxruntime, PIL.Image",
        ],
    }
    for kind, image in images.items():
        commands[f"btxrd-run {kind}"] = [ctx.btxrd_run, "--model", str(ctx.model.onnx), str(image)]
        commands[f"torch {kind}"] = [*torch_script, str(image)]
    reps, warmup = ctx.counts.cold_reps, max(1, ctx.counts.warmup)
    if hyperfine_path():
        tool = "hyperfine"
        stats = hyperfine_commands(commands, reps, warmup=warmup, env=ctx.env(), cwd=ctx.repo)
    else:
        tool = "subprocess (hyperfine not installed)"
        measured = interleave_commands(commands, reps, warmup=warmup, env=ctx.env(), cwd=ctx.repo)
        stats = {name: m.stats for name, m in measured.items()}
    figures: dict[str, Any] = {
        "tool": tool,
        "commands": {name: " ".join(c) for name, c in commands.items()},
        "seconds": {name: s.to_json() for name, s in stats.items()},
        "torch_over_btxrd": {},
    }
    rows = [row(name, stats[name].to_json()) for name in commands if name.startswith("floor")]
    for kind in images:
        ours: Stats = stats[f"btxrd-run {kind}"]
        theirs: Stats = stats[f"torch {kind}"]
        speedup = ratio(theirs, ours)
        figures["torch_over_btxrd"][kind] = speedup
        limit = TARGETS_S[kind]
        rows += [
            row(
                f"btxrd-run, {kind}",
                ours.to_json(),
                target=f"<= {limit} s",
                met=ours.median <= limit,
            ),
            row(f"torch script, {kind}", theirs.to_json()),
            row(
                f"speed-up vs torch, {kind}",
                speedup,
                unit="x",
                target=f">= {TARGET_RATIO:g}x",
                met=speedup["median"] >= TARGET_RATIO,
            ),
        ]
    rows.append(row("timed with", tool))
    return figures, rows
