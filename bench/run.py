"""``make bench``: btxrd against the torch pipeline and the machine's limit, side by side.

Sections: cold (one image, whole process), folder (200 large JPEGs end to end, decode vs model,
draft mode), model (FLOP ceiling, batch sizes, onnxruntime settings), int8 (static QDQ), cam
(edge CAM, explain Grad-CAM), memory (peak RSS, environment size), ray (the Ray engine on a
two-node cluster on this machine vs the local engine, 2,000 images). Each prints its table on
stdout as it finishes and is saved at once to ``results.json`` and ``RESULTS.md``; progress
goes to stderr. Generated inputs and the stand-in model are cached in ``bench/.cache``.
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import click
import machine
from context import BENCH, FULL, QUICK, Context
from inputs import Inputs
from model_files import find_or_make
from report import Report

REPO = BENCH.parent
SECTIONS = ("cold", "folder", "model", "int8", "cam", "memory", "ray")
BUSY_LOAD_PER_CPU = 0.25  # a 1-minute load average above this share of the CPUs: "busy"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quick", is_flag=True, help="Smoke run: tiny counts, results under bench/.cache.")
@click.option(
    "--only",
    default=",".join(SECTIONS),
    show_default=True,
    help="Comma-separated sections to run.",
)
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where results.json and RESULTS.md go [default: bench/, or bench/.cache/quick].",
)
@click.option(
    "--run-venv",
    type=click.Path(file_okay=False, path_type=Path),
    help="Environment whose btxrd-run is timed [default: .venv-run if built, else .venv].",
)
@click.option(
    "--update",
    is_flag=True,
    help="Keep the other sections of the results.json in --out-dir; those run now replace theirs.",
)
@click.option("--debug", is_flag=True, help="Print tracebacks of failed sections.")
def main(
    quick: bool, only: str, out_dir: Path | None, run_venv: Path | None, update: bool, debug: bool
) -> None:
    """Run the benchmarks and record their figures.

    Absolute times on a shared machine are noisy; compare the ratios, which come from pairs
    measured interleaved in the same run. Exit codes: 0 every section ran; 1 a section failed
    (its error is recorded, the others' figures are kept); 2 usage error; 130 interrupted.

    Examples:

        python bench/run.py

        python bench/run.py --quick --only cold,model

        python bench/run.py --only memory --update
    """
    chosen = [s.strip() for s in only.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        raise click.UsageError(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    cache = BENCH / ".cache"
    out_dir = out_dir or (cache / "quick" if quick else BENCH)
    venv = Path(sys.prefix)
    run_venv = run_venv or (REPO / ".venv-run" if (REPO / ".venv-run").is_dir() else venv)
    inputs = Inputs(cache, venv / "bin" / "btxrd-synth")
    description = machine.describe()
    # A stand-in model (when there is no demo model) takes its batch-norm statistics and
    # btxrd-export its parity images from 32 of the 600 px radiographs.
    model = find_or_make(REPO, cache, venv / "bin", lambda: inputs.memory_folder(32, 32))
    ctx = Context(
        REPO, cache, QUICK if quick else FULL, quick, venv / "bin", run_venv, inputs, model
    )
    report = Report(
        out_dir,
        {
            "date": dt.datetime.now().isoformat(timespec="seconds"),
            "quick": quick,
            "command": " ".join(["python bench/run.py", *sys.argv[1:]]),
            "machine": description,
            "model": model.to_json(),
            "run_venv": str(run_venv),
            "counts": asdict(ctx.counts),
            "warning": _warning(description["load_average_at_start"][0], quick),
        },
        previous=Report.previous(out_dir) if update else None,
        order=SECTIONS,
    )
    failed = []
    try:
        for name in chosen:
            if not _run_section(name, ctx, report, debug):
                failed.append(name)
    except KeyboardInterrupt:
        click.echo("bench: interrupted; the sections that finished are saved", err=True)
        failed.append("interrupted")
    end_load = machine.load_average()
    report.header["load_average_at_end"] = end_load
    peak_load = max(description["load_average_at_start"][0], end_load[0])
    report.header["warning"] = _warning(peak_load, quick)
    report.save()
    click.echo(f"\nbench: wrote {out_dir / 'results.json'} and {out_dir / 'RESULTS.md'}", err=True)
    sys.exit(130 if "interrupted" in failed else 1 if failed else 0)


def _run_section(name: str, ctx: Context, report: Report, debug: bool) -> bool:
    started = time.perf_counter()
    click.echo(f"bench: {name} ...", err=True)
    try:
        figures, rows = importlib.import_module(_MODULES[name]).run(ctx)
    except Exception as exc:  # one broken section must not lose the others' figures
        if debug:
            traceback.print_exc()
        report.fail(name, f"{type(exc).__name__}: {exc}")
        return False
    figures["section_seconds"] = round(time.perf_counter() - started, 1)
    # Each section says when and where it ran: --update puts sections of several runs together.
    figures["measured_at"] = dt.datetime.now().isoformat(timespec="seconds")
    figures["machine"] = _machine_name(report)
    figures["load_average_at_end"] = machine.load_average()[0]
    report.add(name, figures, rows)
    return True


def _machine_name(report: Report) -> str:
    described = report.header["machine"]
    return f"{described['cpu_model']}, {described['usable_cpus']} CPUs"


_MODULES = {
    "cold": "cold_start",
    "folder": "folder",
    "model": "model_speed",
    "int8": "int8",
    "cam": "cam",
    "memory": "memory",
    "ray": "ray_engine",
}


def _warning(load: float, quick: bool) -> str:
    parts = []
    if quick:
        parts.append("SMOKE RUN (--quick): tiny counts, figures are not meaningful")
    if load > BUSY_LOAD_PER_CPU * (os.cpu_count() or 1):
        parts.append(
            f"machine busy (1-minute load average up to {load:.2f} on {os.cpu_count()} CPUs): "
            "absolute figures are inflated; only ratios of interleaved pairs are indicative"
        )
    return "; ".join(parts)


if __name__ == "__main__":
    main()
