"""``btxrd-synth``: write a synthetic dataset laid out exactly like the BTXRD archive."""

from __future__ import annotations

import json
import os
import sys
import time

import click

from btxrd.export.synthetic.cases import DEFAULT_PROPORTIONS
from btxrd.export.synthetic.generate import SynthOptions, generate_dataset


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


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False),
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
def main(
    out: str,
    n: int,
    seed: int,
    min_size: int,
    max_size: int,
    proportions: tuple[float, float, float],
    workers: int | None,
    overwrite: bool,
) -> None:
    """Generate synthetic radiographs with BTXRD's folder layout, sheet and LabelMe annotations.

    The data are drawn, not collected: for tests, demos and pipeline checks only. Prints a JSON
    summary on stdout; progress goes to stderr.

    \b
    Exit codes: 0 written; 1 the folder could not be written; 2 usage error; 130 interrupted.

    \b
    Example:
        btxrd-synth --out data/synthetic --n 3000 --seed 0 --max-size 1200
    """
    if min_size > max_size:
        raise click.BadParameter(f"--min-size {min_size} exceeds --max-size {max_size}")
    options = SynthOptions(
        n=n, seed=seed, min_size=min_size, max_size=max_size, proportions=proportions
    )
    workers = workers or os.cpu_count() or 1
    started = time.perf_counter()
    step = max(1, n // 20)

    def report(done: int, total: int) -> None:
        if done % step == 0 or done == total:
            click.echo(f"{done}/{total} images", err=True)

    try:
        provenance = generate_dataset(
            out, options, workers=workers, overwrite=overwrite, progress=report
        )
    except OSError as exc:  # includes FileExistsError: a previous run without --overwrite
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("Interrupted; the folder is incomplete.", err=True)
        sys.exit(130)
    summary = {
        "out": str(out),
        "seconds": round(time.perf_counter() - started, 1),
        "workers": workers,
        **provenance,
    }
    click.echo(json.dumps(summary, indent=2))
