"""``btxrd-synth``: write a synthetic dataset laid out exactly like the BTXRD archive."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click

from btxrd.export.synthetic.cases import DEFAULT_PROPORTIONS
from btxrd.export.synthetic.generate import SynthOptions, generate_dataset
from btxrd.runtime.cli.common import (
    CONTEXT_SETTINGS,
    debug_option,
    documents_exit_codes,
    quiet_option,
    run_cli,
    version_option,
)
from btxrd.runtime.errors import OutputError
from btxrd.runtime.output.folders import prepare_output_dir
from btxrd.runtime.output.progress import progress_callback


def _parse_proportions(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[float, float, float]:
    if value is None:
        return DEFAULT_PROPORTIONS
    try:
        parts = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter("expected three numbers such as 0.50,0.41,0.09") from None
    if len(parts) != 3 or min(parts) < 0 or sum(parts) <= 0:
        raise click.BadParameter("expected three non-negative numbers (Normal,Benign,Malignant)")
    return parts[0], parts[1], parts[2]


@click.command(name="btxrd-synth", context_settings=CONTEXT_SETTINGS)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write images/, Annotations/, dataset.xlsx, dataset.csv into.",
)
@click.option(
    "--n", "n", default=300, show_default=True, type=click.IntRange(min=1), help="Number of images."
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed; same seed, same bytes.")
@click.option(
    "--min-size",
    default=300,
    show_default=True,
    type=click.IntRange(min=64),
    help="Smallest long side in pixels.",
)
@click.option(
    "--max-size",
    default=3000,
    show_default=True,
    type=click.IntRange(min=64),
    help="Largest long side in pixels.",
)
@click.option(
    "--proportions",
    callback=_parse_proportions,
    default=None,
    help="Normal,Benign,Malignant shares [default: BTXRD's 1879:1525:342].",
)
@click.option(
    "--workers",
    default=None,
    type=click.IntRange(min=1),
    help="Worker processes [default: number of CPU cores]. Does not change the output.",
)
@click.option("--overwrite", is_flag=True, help="Replace a previous run's files in --out.")
@quiet_option
@version_option(("numpy", "pillow"))
@debug_option
@documents_exit_codes
def main(
    out: Path,
    n: int,
    seed: int,
    min_size: int,
    max_size: int,
    proportions: tuple[float, float, float],
    workers: int | None,
    overwrite: bool,
    quiet: bool,
    debug: bool,
) -> None:
    """Generate synthetic radiographs with BTXRD's folder layout, sheet and LabelMe annotations.

    The data are drawn, not collected: for tests, demos and pipeline checks only. Prints a JSON
    summary on stdout; a progress bar goes to stderr on a terminal.

    Here exit code 3 means the output folder cannot be made or written, or already holds a
    previous run (pass --overwrite to replace it).

    \b
    Example:
        btxrd-synth --out data/synthetic --n 3000 --seed 0 --max-size 1200
    """
    if min_size > max_size:
        raise click.BadParameter(f"--min-size {min_size} exceeds --max-size {max_size}")
    options = SynthOptions(
        n=n, seed=seed, min_size=min_size, max_size=max_size, proportions=proportions
    )
    run_cli(
        lambda: _generate(out, options, workers or os.cpu_count() or 1, overwrite, quiet), debug
    )


def _generate(out: Path, options: SynthOptions, workers: int, overwrite: bool, quiet: bool) -> int:
    started = time.perf_counter()
    prepare_output_dir(out)
    try:
        with progress_callback(options.n, "generating", enabled=not quiet) as done:
            provenance = generate_dataset(
                out,
                options,
                workers=workers,
                overwrite=overwrite,
                progress=lambda count, _total: done(count),
            )
    except OSError as exc:
        raise OutputError(f"{out}: cannot write the dataset ({exc.strerror or exc})") from None
    except KeyboardInterrupt:
        click.echo(f"btxrd-synth: {out} is incomplete; rerun with --overwrite", err=True)
        raise
    summary = {
        "out": str(out),
        "seconds": round(time.perf_counter() - started, 1),
        "workers": workers,
        **provenance,
    }
    click.echo(json.dumps(summary, indent=2))
    return 0
