"""Copy a few held-out radiographs of each class, with their annotations, into models/samples.

They are what `make run` classifies and what export's parity check derives its image set from.
Chosen deterministically from the test split (first by image id), never from training data.
"""

from __future__ import annotations

from pathlib import Path

import click

from btxrd.export.data.dataset import BTXRD_CLASSES, DatasetError, load_dataset, read_split
from btxrd.runtime.cli.common import (
    CONTEXT_SETTINGS,
    debug_option,
    documents_exit_codes,
    run_cli,
    version_option,
)
from btxrd.runtime.output.atomic import write_bytes, write_text
from btxrd.runtime.output.folders import prepare_output_dir


def copy_samples(data: Path, split_file: Path, out: Path, per_class: int = 2) -> list[Path]:
    """Copy ``per_class`` test images of each class (and their annotations) into ``out``, with a
    labels.csv; the copied image paths. ``OutputError`` if ``out`` cannot be made, before any
    file is read; ``DatasetError`` if the data or the split cannot be used."""
    prepare_output_dir(out)
    prepare_output_dir(out / "Annotations")
    samples = {s.image_id: s for s in load_dataset(data)}
    test_ids = read_split(split_file)["test"]
    unknown = [i for i in test_ids if i not in samples]
    if unknown:
        raise DatasetError(
            f"{split_file}: {len(unknown)} test image(s) are not in {data} (e.g. {unknown[0]}); "
            "pass the data the split was made from"
        )
    chosen = []
    for label in BTXRD_CLASSES:
        of_class = sorted(i for i in test_ids if samples[i].label == label)
        chosen += [samples[i] for i in of_class[:per_class]]
    written = []
    for sample in chosen:
        target = out / sample.image_path.name
        write_bytes(target, sample.image_path.read_bytes())
        written.append(target)
        if sample.annotation_path is not None:
            annotation = out / "Annotations" / sample.annotation_path.name
            write_bytes(annotation, sample.annotation_path.read_bytes())
    lines = ["image_id,label"] + [f"{s.image_path.name},{s.label}" for s in chosen]
    write_text(out / "labels.csv", "\n".join(lines) + "\n")
    return written


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=Path("data/synthetic"),
    show_default=True,
    help="Dataset folder in the BTXRD layout (as `btxrd-synth` writes it).",
)
@click.option(
    "--split",
    type=click.Path(path_type=Path),
    default=Path("models/btxrd-demo.split.json"),
    show_default=True,
    help="Split file the model was trained with; samples come from its test part.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("models/samples"),
    show_default=True,
    help="Folder to copy the samples, Annotations/ and labels.csv into.",
)
@click.option(
    "--per-class",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Images of each class.",
)
@version_option(())
@debug_option
@documents_exit_codes
def main(data: Path, split: Path, out: Path, per_class: int, debug: bool) -> None:
    """Copy a few held-out test radiographs of each class, with their annotations, into OUT;
    prints the copied image paths.

    Here exit code 1 means the dataset or the split file cannot be used.

    \b
    Example:
        python -m btxrd.export.samples --data data/synthetic --out models/samples
    """

    def action() -> int:
        for path in copy_samples(data, split, out, per_class):
            click.echo(path)
        return 0

    run_cli(action, debug)


if __name__ == "__main__":
    main()
