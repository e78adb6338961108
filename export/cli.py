"""``btxrd-export``: checkpoint -> one self-describing ONNX file, with parity proven on images."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import click

from btxrd.runtime.atomic import destination, protect, write_bytes, write_text
from btxrd.runtime.cliutil import (
    CONTEXT_SETTINGS,
    debug_option,
    documents_exit_codes,
    prepare_output_dir,
    run_cli,
)
from btxrd.runtime.errors import ConfigError, ModelError
from btxrd.runtime.inputs import collect_folder
from btxrd.runtime.paths import default_samples_dir
from btxrd.runtime.selftest import SELFTEST_TOLERANCE, selftest_images

# The parity set is derived with Pillow (the reference decode); DICOM sources would need pydicom.
_NOT_PARITY_SOURCES = (".dcm", ".dicom")


@click.command(name="btxrd-export", context_settings=CONTEXT_SETTINGS)
@click.option(
    "--checkpoint",
    "checkpoint_path",
    required=True,
    type=click.Path(path_type=Path),
    help="PyTorch checkpoint (.pt) in the btxrd or predecessor layout.",
)
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(path_type=Path),
    help="ONNX file to write; the parity report goes beside it.",
)
@click.option(
    "--parity-images",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of radiographs to derive the parity set from (default: shipped samples).",
)
@click.option(
    "--intended-use", help="Intended-use text stored in the model (default: research only)."
)
@click.option("--opset", default=18, show_default=True, type=click.IntRange(17, 23))
@debug_option
@documents_exit_codes
def main(
    checkpoint_path: Path,
    out_path: Path,
    parity_images: Path | None,
    intended_use: str | None,
    opset: int,
    debug: bool,
) -> None:
    """Export CHECKPOINT to one ONNX file that carries its class names, preprocessing contract
    and provenance, then prove on real image files that its scores match PyTorch.

    Here exit code 1 means no model is written because parity failed (ONNX and PyTorch
    disagree) or a --parity-images file cannot be read.

    \b
    Example:
        btxrd-export --checkpoint models/btxrd-demo.pt --out models/btxrd-demo.onnx
    """
    run_cli(lambda: _export(checkpoint_path, out_path, parity_images, intended_use, opset), debug)


def _export(
    checkpoint_path: Path,
    out_path: Path,
    parity_dir: Path | None,
    intended_use: str | None,
    opset: int,
) -> int:
    # Heavy imports here, so `--help` stays fast.
    from btxrd.export.checkpoint import build_model, load_checkpoint
    from btxrd.export.onnx_export import build_metadata, export_model_proto, finalise
    from btxrd.export.parity import check_parity, reference_probabilities, write_parity_images

    started = time.perf_counter()
    prepare_output_dir(out_path.parent)
    # The ONNX file and its parity report must never replace the checkpoint they come from.
    protect([checkpoint_path], "checkpoint")
    for written in (out_path, out_path.with_suffix(".parity.json")):
        destination(written)
    checkpoint = load_checkpoint(checkpoint_path)
    sources = _parity_sources(parity_dir or default_samples_dir())
    model, arch = build_model(checkpoint)
    prep = checkpoint.preprocessing
    selftest = selftest_images()
    probs = reference_probabilities(model, [im.convert("RGB") for im in selftest.values()], prep)
    reference = {
        "tolerance": SELFTEST_TOLERANCE,
        "images": {
            name: [float(v) for v in row] for name, row in zip(selftest, probs, strict=True)
        },
    }
    metadata = build_metadata(checkpoint, arch, reference, intended_use)
    data = finalise(export_model_proto(model, arch, prep.image_size, opset), metadata)
    report_path = out_path.with_suffix(".parity.json")
    with tempfile.TemporaryDirectory(prefix="btxrd-parity-") as tmp:
        candidate = Path(tmp) / out_path.name
        candidate.write_bytes(data)
        cases = write_parity_images(sources, Path(tmp) / "images")
        report = check_parity(model, candidate, cases, prep)
    report.update(
        model=out_path.name,
        checkpoint=str(checkpoint_path),
        checkpoint_sha256=checkpoint.sha256,
        export_seconds=round(time.perf_counter() - started, 1),
    )
    write_text(report_path, json.dumps(report, indent=2) + "\n")
    if not report["passed"]:
        click.echo(
            f"btxrd-export: {out_path}: not written: ONNX and PyTorch disagree on "
            f"{', '.join(report['failures'])} (max difference {report['max_abs_diff']}); "
            f"see {report_path}",
            err=True,
        )
        return 1
    write_bytes(out_path, data)
    click.echo(
        f"wrote {out_path} ({len(data) / 1e6:.1f} MB, {arch.name}, classes "
        f"{', '.join(checkpoint.class_names)}); parity on {report['num_images']} images: "
        f"max |dp| {report['max_abs_diff']:.2e}, top-1 agreement {report['top1_agreement']:.0%}; "
        f"report {report_path} ({report['export_seconds']} s)"
    )
    return 0


def _parity_sources(folder: Path) -> list[Path]:
    found = [
        p
        for p in collect_folder(folder, recursive=False)
        if p.suffix.lower() not in _NOT_PARITY_SOURCES
    ]
    if not found:
        raise ModelError(f"{folder}: no radiographs to check parity on; pass --parity-images DIR")
    # Two radiographs per class name prefix is plenty: each is derived into nine file kinds.
    return found[: _parity_source_count()]


def _parity_source_count() -> int:
    value = os.environ.get("BTXRD_PARITY_SOURCES", "3")
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise ConfigError(f"BTXRD_PARITY_SOURCES is {value!r}; set it to a whole number above 0")
    return count


if __name__ == "__main__":
    sys.exit(main())
