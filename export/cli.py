"""``btxrd-export``: checkpoint -> one self-describing ONNX file, with parity proven on images."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from btxrd.export.trust.defaults import (
    DEFAULT_METHOD,
    DEFAULT_RETENTION,
    MIN_VAL_PER_CLASS,
    RETENTION_RANGE,
)
from btxrd.runtime.cli.common import (
    CONTEXT_SETTINGS,
    debug_option,
    documents_exit_codes,
    run_cli,
    version_option,
)
from btxrd.runtime.decode.inputs import collect_folder
from btxrd.runtime.errors import ConfigError, ModelError
from btxrd.runtime.labels.validation import describe
from btxrd.runtime.model.contract import OOD_METHODS
from btxrd.runtime.output.atomic import destination, protect, write_bytes, write_text
from btxrd.runtime.output.folders import prepare_output_dir
from btxrd.runtime.paths import default_samples_dir

if TYPE_CHECKING:
    from btxrd.export.trust.fit import DataSource, TrustFit
from btxrd.runtime.decode.formats import not_parity_sources
from btxrd.runtime.model.selftest import SELFTEST_TOLERANCE, selftest_images


@click.command(name="btxrd-export", context_settings=CONTEXT_SETTINGS)
@click.argument("checkpoint", required=False, type=click.Path(path_type=Path))
@click.option(
    "--checkpoint",
    "checkpoint_path",
    type=click.Path(path_type=Path),
    help="PyTorch checkpoint (.pt) in the btxrd or predecessor layout (or give it as CHECKPOINT).",
)
@click.option(
    "--out",
    "-o",
    "out_path",
    type=click.Path(path_type=Path),
    help="ONNX file to write (default: the checkpoint's name with .onnx); the parity report "
    "goes beside it.",
)
@click.option(
    "--parity-images",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of radiographs to derive the parity set from (default: shipped samples).",
)
@click.option(
    "--intended-use", help="Intended-use text stored in the model (default: research only)."
)
@click.option(
    "--model-name",
    help="Name stored in the model (default: the checkpoint's model_name, else its file name).",
)
@click.option(
    "--model-version",
    help="Version stored in the model (default: the checkpoint's model_version, else none).",
)
@click.option(
    "--target-layer",
    help="Grad-CAM layer, a module name of the network such as layer4 (default: found from the "
    "network: its last feature map before the classifier; a token model's last block's first "
    "norm). btxrd-run --info names the layer used.",
)
@click.option(
    "--calibration-data",
    type=click.Path(exists=True, path_type=Path),
    help="Labelled images to fit calibration and the out-of-distribution gate on (without it "
    "the model has neither): an ImageFolder (one sub-folder per class), a CSV of image,label "
    "or a BTXRD-layout folder (docs/own-model.md).",
)
@click.option(
    "--split",
    "split_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Split file (train/val/test image ids) of --calibration-data; default: a stratified "
    "seed-0 split, written beside the model as OUT.split.json.",
)
@click.option(
    "--min-val-per-class",
    type=click.IntRange(1),
    default=MIN_VAL_PER_CLASS,
    show_default=True,
    help="Fewest validation images of any class the fit accepts; below it export refuses.",
)
@click.option(
    "--ood-method",
    type=click.Choice(OOD_METHODS),
    default=DEFAULT_METHOD,
    show_default=True,
    help="Out-of-distribution score put into the model (models/README.md says why the default).",
)
@click.option(
    "--ood-retention",
    type=click.FloatRange(*RETENTION_RANGE),
    default=DEFAULT_RETENTION,
    show_default=True,
    help="Share of the validation images the gate's threshold keeps.",
)
@click.option("--opset", default=18, show_default=True, type=click.IntRange(17, 23))
@version_option(("torch", "onnx", "onnxruntime"))
@debug_option
@documents_exit_codes
def main(
    checkpoint: Path | None,
    checkpoint_path: Path | None,
    out_path: Path | None,
    parity_images: Path | None,
    intended_use: str | None,
    model_name: str | None,
    model_version: str | None,
    target_layer: str | None,
    calibration_data: Path | None,
    split_file: Path | None,
    ood_method: str,
    ood_retention: float,
    min_val_per_class: int,
    opset: int,
    debug: bool,
) -> None:
    """Export CHECKPOINT to one ONNX file that carries its class names, preprocessing contract
    and provenance, then prove on real image files that its scores match PyTorch.

    With --calibration-data the file also carries trust, fitted on those labelled images:
    temperature scaling (output `probabilities`, fitted on the val split) and an
    out-of-distribution score (output `ood_score`, statistics from the train split, threshold
    set on the val split). Without --split the split is made here and written beside the
    model (OUT.split.json). Export then prints the figures `btxrd-run --labels` gives for the
    same images, and writes them into the parity report.

    Here exit code 1 means no model is written because parity failed (ONNX and PyTorch
    disagree) or a --parity-images or --calibration-data file cannot be read.

    \b
    Example:
        btxrd-export --checkpoint models/btxrd-demo.pt --out models/btxrd-demo.onnx \\
            --calibration-data data/synthetic --split models/btxrd-demo.split.json

        btxrd-export my-model.pt -o my-model.onnx --calibration-data my-data/
    """
    if checkpoint is not None and checkpoint_path is not None:
        raise click.UsageError("give the checkpoint as CHECKPOINT or --checkpoint, not both")
    checkpoint_path = checkpoint_path or checkpoint
    if checkpoint_path is None:
        raise click.UsageError("which checkpoint? give CHECKPOINT (or --checkpoint PATH)")
    out_path = out_path or checkpoint_path.with_suffix(".onnx")
    options = _TrustOptions(
        calibration_data, split_file, ood_method, ood_retention, min_val_per_class
    )
    identity = _Identity(intended_use, model_name, model_version, target_layer)
    run_cli(
        lambda: _export(checkpoint_path, out_path, parity_images, identity, opset, options),
        debug,
    )


@dataclass(frozen=True)
class _Identity:
    """What the file says it is and where its heatmaps look, where the command line says it
    (None: from the checkpoint, or found from the network)."""

    intended_use: str | None
    name: str | None
    version: str | None
    target_layer: str | None = None


@dataclass(frozen=True)
class _TrustOptions:
    data: Path | None
    split_file: Path | None
    method: str
    retention: float
    min_val_per_class: int = MIN_VAL_PER_CLASS


def _export(
    checkpoint_path: Path,
    out_path: Path,
    parity_dir: Path | None,
    identity: _Identity,
    opset: int,
    trust_options: _TrustOptions,
) -> int:
    # Heavy imports here, so `--help` stays fast.
    from btxrd.export.checkpoint import build_model, load_checkpoint
    from btxrd.export.onnx_export import (
        TrustHead,
        build_metadata,
        export_with_cam,
        finalise,
    )
    from btxrd.export.parity import (
        TrustReference,
        check_parity,
        reference_probabilities,
        write_parity_images,
    )

    started = time.perf_counter()
    if trust_options.split_file is not None and trust_options.data is None:
        raise ConfigError("--split names the split of --calibration-data; pass that folder too")
    prepare_output_dir(out_path.parent)
    # The ONNX file and its parity report must never replace the checkpoint they come from.
    protect([checkpoint_path], "checkpoint")
    split_out = out_path.with_suffix(".split.json")
    for written in (out_path, out_path.with_suffix(".parity.json"), split_out):
        destination(written)
    checkpoint = load_checkpoint(checkpoint_path)
    sources = _parity_sources(parity_dir or default_samples_dir())
    model, arch = build_model(checkpoint, identity.target_layer)
    prep = checkpoint.preprocessing
    fitted = _fit_trust(model, arch, checkpoint, opset, trust_options)
    selftest = selftest_images()
    selftest_rgb = [im.convert("RGB") for im in selftest.values()]
    probs = reference_probabilities(model, selftest_rgb, prep)
    reference = {
        "tolerance": SELFTEST_TOLERANCE,
        "images": {
            name: [float(v) for v in row] for name, row in zip(selftest, probs, strict=True)
        },
    }
    head = reference_trust = None
    if fitted is not None:
        head = TrustHead(fitted.fit.temperature, fitted.fit.scorer)
        reference_trust = TrustReference(arch, fitted.fit.temperature, fitted.fit.scorer)
        reference.update(
            _trust_reference_scores(model, selftest, selftest_rgb, prep, reference_trust)
        )
    trust = fitted.fit.trust if fitted is not None else None
    proto, cam = export_with_cam(model, arch, prep.image_size, opset, trust=head)
    if cam.kind == "none":
        _note(f"note: this model has no cam output: {cam.reason}; btxrd-explain draws Grad-CAM")
    metadata = build_metadata(
        checkpoint,
        arch,
        reference,
        identity.intended_use,
        trust,
        name=identity.name,
        version=identity.version,
        cam=cam,
    )
    data = finalise(proto, metadata)
    report_path = out_path.with_suffix(".parity.json")
    with tempfile.TemporaryDirectory(prefix="btxrd-parity-") as tmp:
        candidate = Path(tmp) / out_path.name
        candidate.write_bytes(data)
        cases = write_parity_images(sources, Path(tmp) / "images")
        report = check_parity(model, candidate, cases, prep, reference_trust)
        figures = _labelled_figures(candidate, fitted) if fitted and report["passed"] else None
    report.update(
        model=out_path.name,
        checkpoint=str(checkpoint_path),
        checkpoint_sha256=checkpoint.sha256,
        export_seconds=round(time.perf_counter() - started, 1),
    )
    if fitted is not None and figures is not None:
        report["labelled_data"] = fitted.labelled_data(figures)
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
    if fitted is not None:
        if fitted.source.split_text is not None:
            write_text(split_out, fitted.source.split_text)
            _note(f"wrote the split it made, {split_out} (pass it as --split to refit the same)")
        _note(
            f"the model on all {len(fitted.images)} labelled images of {fitted.data} (what "
            "btxrd-run --labels reports for them):"
        )
        for line in describe(report["labelled_data"]["figures"]):
            _note("  " + line)
    click.echo(
        f"wrote {out_path} ({len(data) / 1e6:.1f} MB, {metadata.name}"
        f"{f' version {metadata.version}' if metadata.version else ''}, {arch.name}, classes "
        f"{', '.join(checkpoint.class_names)}); parity on {report['num_images']} images: "
        f"max |dp| {report['max_abs_diff']:.2e}, top-1 agreement {report['top1_agreement']:.0%}"
        f"{_trust_summary(trust, report)}; report {report_path} ({report['export_seconds']} s)"
    )
    return 0


@dataclass(frozen=True)
class _Fitted:
    """Trust fitted on --calibration-data, where it came from, and its labelled images (path,
    label), in the order ``btxrd-run --dir`` lists them."""

    fit: TrustFit
    source: DataSource
    data: Path
    images: list[tuple[Path, str]]

    def labelled_data(self, figures: dict) -> dict:
        return {
            "data": self.source.data,
            "layout": self.source.layout,
            "num_images": len(self.images),
            "figures": figures,
        }


def _fit_trust(model, arch, checkpoint, opset: int, options: _TrustOptions) -> _Fitted | None:
    """Fit calibration and the gate on --calibration-data, or say (once) that there are none."""
    if options.data is None:
        click.echo(
            "btxrd-export: note: no --calibration-data, so this model has no calibration and no "
            "out-of-distribution gate (outputs logits and cam only; probabilities are raw "
            "softmax). Pass --calibration-data DIR [--split FILE] to fit them.",
            err=True,
        )
        return None
    from btxrd.export.onnx_export import probe_bytes
    from btxrd.export.trust.calibration import TEMPERATURE_BOUNDS
    from btxrd.export.trust.fit import Probe, fit_trust, score_parts, split_parts
    from btxrd.export.trust.taps import tap_widths

    names = checkpoint.class_names
    parts, source = split_parts(
        options.data, options.split_file, names, min_val_per_class=options.min_val_per_class
    )
    count = sum(map(len, parts.values()))
    _note(f"fitting trust on {options.data} ({source.layout}, {count} images)")
    probe = Probe(
        probe_bytes(model, arch, checkpoint.preprocessing.image_size, opset),
        checkpoint.preprocessing,
    )
    scored = score_parts(probe, parts, names, _note)
    widths = tap_widths(model, arch, checkpoint.preprocessing.image_size)
    fitted = fit_trust(
        scored, source, len(names), widths, method=options.method, retention=options.retention
    )
    low, high = TEMPERATURE_BOUNDS
    if not low * 1.001 < fitted.temperature < high / 1.001:
        _note(
            f"note: the fitted temperature {fitted.temperature:.3g} lies at the end of the "
            "search range: the model's scores say little about these labels"
        )
    images = sorted(
        ((s.image_path, s.label) for part in parts.values() for s in part),
        key=lambda item: item[0].as_posix(),
    )
    return _Fitted(fitted, source, options.data, images)


def _labelled_figures(model_file: Path, fitted: _Fitted) -> dict:
    """What ``btxrd-run --labels`` reports for every image of the fitting data with the
    exported file: the same classifier and the same figures, so the two agree exactly (the
    gate decides in the graph's float32, which numpy's fit cannot promise to the last bit)."""
    from btxrd.runtime.labels.validation import validate
    from btxrd.runtime.model.classifier import Classifier
    from btxrd.runtime.output.progress import progress

    classifier = Classifier(model_file)
    paths = [path for path, _ in fitted.images]
    labels = {os.path.abspath(path): label for path, label in fitted.images}
    _note(f"classifying the {len(paths)} labelled images with the exported file")
    predictions = progress(classifier.predict_many(paths), len(paths), "checking", "image")
    return validate((p.to_record() for p in predictions), labels, classifier.class_names)


def _note(message: str) -> None:
    click.echo(f"btxrd-export: {message}", err=True)


def _trust_reference_scores(model, selftest, images, prep, trust) -> dict:
    """The trust outputs on the self-test images, computed by PyTorch and numpy, so a runtime
    can check them as it checks the probabilities."""
    from btxrd.export.parity import OOD_RELATIVE_TOLERANCE, reference_outputs
    from btxrd.export.trust.calibration import softmax

    logits, features = reference_outputs(model, trust.arch, images, prep)
    calibrated = softmax(logits, trust.temperature)
    ood = trust.scorer.score(features, logits)
    return {
        "calibrated_probabilities": {
            name: [float(v) for v in row] for name, row in zip(selftest, calibrated, strict=True)
        },
        "ood_scores": {name: float(v) for name, v in zip(selftest, ood, strict=True)},
        "ood_relative_tolerance": OOD_RELATIVE_TOLERANCE,
    }


def _trust_summary(trust, report: dict) -> str:
    if trust is None:
        return ""
    before = trust.calibration.metrics["before"]["ece"]
    after = trust.calibration.metrics["after"]["ece"]
    return (
        f"; temperature {trust.calibration.temperature:.3f} (test ECE {before:.3f} -> "
        f"{after:.3f}), gate {trust.ood.method} at {trust.ood.threshold:.4g} keeping "
        f"{trust.ood.retention:.0%} of val; trust outputs: max |dp| "
        f"{report['calibrated_max_abs_diff']:.2e}, ood_score max relative difference "
        f"{report['ood_max_relative_diff']:.2e}"
    )


def _parity_sources(folder: Path) -> list[Path]:
    found = [
        p
        for p in collect_folder(folder, recursive=False)
        if p.suffix.lower() not in not_parity_sources()
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
