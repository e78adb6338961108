"""``btxrd-explain``: Grad-CAM with the PyTorch checkpoint: overlays, galleries, attention vs
annotation, and one HTML report. torch and pytorch-grad-cam are imported only when needed, so
``--help`` is instant."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from btxrd.explain.methods import METHODS, check_method
from btxrd.explain.selection import DEFAULT_PANELS
from btxrd.runtime.cli.common import (
    CONTEXT_SETTINGS,
    common_options,
    documents_exit_codes,
    run_cli,
    setting_range,
    version_option,
)
from btxrd.runtime.errors import EXIT_INPUT, EXIT_OK, ConfigError, ModelError
from btxrd.runtime.install import install_hint
from btxrd.runtime.model.verdict import is_refusal
from btxrd.runtime.output.folders import prepare_output_dir
from btxrd.runtime.output.report import results_document
from btxrd.runtime.settings import GradcamSettings
from btxrd.runtime.text import for_terminal, plural

PROGRAM = "btxrd-explain"
DEFAULT_COMMAND = "images"


class _DefaultGroup(click.Group):
    """Routes ``btxrd-explain IMAGE ...`` to the ``images`` command: any first argument that is
    not a subcommand name (or --help) starts the default command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        known = {*self.commands, *ctx.help_option_names, "--version"}
        if args and args[0] not in known:
            args = [DEFAULT_COMMAND, *args]
        return super().parse_args(ctx, args)


def _default_checkpoint() -> Path:
    from btxrd.runtime.config import load_config
    from btxrd.runtime.paths import shipped

    return shipped(load_config()["paths"]["checkpoint"])


@click.group(name=PROGRAM, cls=_DefaultGroup, context_settings=CONTEXT_SETTINGS)
@version_option(("torch", "grad-cam"), _default_checkpoint, "checkpoint")
@documents_exit_codes
def main() -> None:
    """Explain a bone-radiograph classifier with Grad-CAM, using its PyTorch checkpoint.

    `btxrd-explain IMAGE...` is short for `btxrd-explain images IMAGE...` (use the long form
    for an image file called like a command). Research tool, not for clinical use. Results go
    to stdout; notices and warnings to stderr.

    \b
    Example:
        btxrd-explain models/samples/IMG000001.jpeg
        btxrd-explain report --data data/synthetic --split models/btxrd-demo.split.json
    """


def _model_options(function: Callable) -> Callable:
    options = [
        click.option(
            "--checkpoint",
            type=click.Path(path_type=Path),
            help="PyTorch checkpoint (default: config paths.checkpoint, the shipped demo "
            "checkpoint models/btxrd-demo.pt).",
        ),
        click.option(
            "--method",
            type=click.Choice(list(METHODS)),
            help="CAM method (default: config gradcam.method, gradcam).",
        ),
        click.option(
            "--target-layer",
            help="CAM layer, a module name of the network (default: the one btxrd-export "
            "finds, as btxrd-run --info names it).",
        ),
        click.option(
            "--model",
            type=click.Path(path_type=Path),
            help="The ONNX file exported from the checkpoint: its out-of-distribution gate and "
            "calibration give each image the verdict and probabilities btxrd-run gives it "
            "(default: config paths.model, used when exported from this checkpoint).",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return common_options(function)


def _data_options(function: Callable) -> Callable:
    options = [
        click.option(
            "--data",
            type=click.Path(path_type=Path),
            help="BTXRD-layout folder (images/, Annotations/, dataset.xlsx); default: config "
            "paths.data.",
        ),
        click.option(
            "--split",
            type=click.Path(path_type=Path),
            help="Split file (btxrd.export.data.dataset.write_split); its test part is used. "
            "Default: every image.",
        ),
        click.option(
            "--out",
            type=click.Path(path_type=Path),
            help="Output folder (default: config gradcam.out, results/explain).",
        ),
        click.option(
            "--iou-threshold",
            type=setting_range("gradcam", "iou_threshold"),
            help="CAM threshold of the headline IoU (default: config gradcam.iou_threshold, 0.5).",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


_k_option = click.option(
    "--k",
    type=setting_range("gradcam", "k"),
    help="Examples per gallery row, 3 to 5 (default: config gradcam.k, 3).",
)
_panels_option = click.option(
    "--panels",
    type=click.IntRange(1, 20),
    default=DEFAULT_PANELS,
    show_default=True,
    help="Best and worst cases shown in annotation_comparison.png.",
)


@main.command(DEFAULT_COMMAND, context_settings=CONTEXT_SETTINGS)
@documents_exit_codes
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Folder for {stem}_gradcam.png (default: config gradcam.out, results/explain).",
)
@click.option("--class", "class_name", help="Class to explain (default: the predicted class).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of lines.")
@_model_options
def images_command(**options: Any) -> None:
    """Predict each IMAGE and write its Grad-CAM overlay, {stem}_gradcam.png (RGB PNG).

    Prints the prediction, every class's probability and the overlay's path. The CAM is for the
    predicted class, or --class. A degenerate (flat or invalid) CAM is reported as an error and
    no overlay is written for it.

    \b
    Example:
        btxrd-explain models/samples/IMG000001.jpeg --method gradcam++ --out overlays/
    """
    run_cli(lambda: _images(ImagesOptions(**options)), options["debug"])


@main.command("gallery", context_settings=CONTEXT_SETTINGS)
@documents_exit_codes
@_data_options
@_k_option
@_model_options
def gallery_command(**options: Any) -> None:
    """Per-class galleries of true positives, false positives and false negatives.

    Writes gallery_{class}.png (rows TP, FP, FN; the k most confident TPs and FPs, the k FNs
    with the lowest probability of the class) and metrics.json (confusion matrix, per-class
    precision, recall and AUC). Prints a JSON summary.

    \b
    Example:
        btxrd-explain gallery --data data/synthetic --split models/btxrd-demo.split.json --k 4
    """
    run_cli(lambda: _dataset_command("gallery", DatasetOptions(**options)), options["debug"])


@main.command("annotations", context_settings=CONTEXT_SETTINGS)
@documents_exit_codes
@_data_options
@_panels_option
@_model_options
def annotations_command(**options: Any) -> None:
    """Score attention against the LabelMe lesion annotations of correctly classified tumours.

    Writes annotation_report.json (IoU at the threshold and at the best of 0.1..0.9, pointing
    game and the best hit rate any CAM on the model's grid could reach, CAM energy inside the
    lesion, per image and summarised) and annotation_comparison.png (original, mask, heatmap,
    overlay for the best and worst cases). Prints a JSON summary.

    \b
    Example:
        btxrd-explain annotations --data data/synthetic --split models/btxrd-demo.split.json
    """
    run_cli(lambda: _dataset_command("annotations", DatasetOptions(**options)), options["debug"])


@main.command("report", context_settings=CONTEXT_SETTINGS)
@documents_exit_codes
@_data_options
@_k_option
@_panels_option
@_model_options
def report_command(**options: Any) -> None:
    """Everything above, and one self-contained report.html (images embedded).

    \b
    Example:
        btxrd-explain report --data data/synthetic --split models/btxrd-demo.split.json \\
            --out results/explain
    """
    run_cli(lambda: _dataset_command("report", DatasetOptions(**options)), options["debug"])


@dataclass(frozen=True)
class ImagesOptions:
    """``btxrd-explain images``, as parsed from the command line."""

    images: tuple[Path, ...]
    out: Path | None
    class_name: str | None
    as_json: bool
    checkpoint: Path | None
    method: str | None
    target_layer: str | None
    model: Path | None
    config_path: Path | None
    quiet: bool
    debug: bool


@dataclass(frozen=True)
class DatasetOptions:
    """``btxrd-explain gallery|annotations|report``, as parsed from the command line."""

    data: Path | None
    split: Path | None
    out: Path | None
    iou_threshold: float | None
    checkpoint: Path | None
    method: str | None
    target_layer: str | None
    model: Path | None
    config_path: Path | None
    quiet: bool
    debug: bool
    k: int | None = None
    panels: int = DEFAULT_PANELS


@dataclass(frozen=True)
class _Settings:
    """Flag, then YAML config, then built-in default, resolved once."""

    checkpoint: Path
    model: Path  # the exported ONNX file whose gate and calibration apply, if it matches
    data: Path
    out: Path
    gradcam: GradcamSettings


def _images(options: ImagesOptions) -> int:
    settings = _settings(options.config_path, options.checkpoint, options.method, options.out)
    explainer = _load_explainer(settings.checkpoint, options.target_layer)
    gate, gate_line = _gate(explainer, options.model, settings)
    class_name = options.class_name
    if class_name is not None and class_name not in explainer.class_names:
        raise ConfigError(f"--class {class_name!r} is not one of {list(explainer.class_names)}")
    say = _notifier(options.quiet)
    say(_intended_use(explainer))
    say(gate_line)
    method = settings.gradcam.method
    if class_name and method == "eigencam":
        say("note: eigencam is class-agnostic; --class does not change its map")
    folder = prepare_output_dir(settings.out)

    from btxrd.explain.overlays import explain_images

    records = []
    for record in explain_images(
        explainer,
        list(options.images),
        folder,
        method=method,
        class_name=class_name,
        alpha=settings.gradcam.alpha,
        gate=gate,
    ):
        records.append(record)
        if not options.as_json:  # lines as results arrive; JSON as one document at the end
            _print_line(record, explainer.class_names)
    if options.as_json:
        model = {**explainer.identity(), "method": method, "gate": gate and gate.identity()}
        document = results_document(model, records)
        click.echo(json.dumps(document, indent=2))
    for record in records:
        if record["error"]:
            click.echo(f"{PROGRAM}: error: {for_terminal(record['error'])}", err=True)
    overlays = sum(1 for r in records if r["overlay"])
    say(f"wrote {plural(overlays, 'overlay')} to {folder}/ ({{stem}}_gradcam.png)")
    return EXIT_INPUT if any(r["error"] for r in records) else EXIT_OK


def _print_line(record: dict[str, Any], class_names: tuple[str, ...]) -> None:
    if record["prediction"] is None:
        refused = is_refusal(record)
        click.echo(f"{for_terminal(record['path'])}  {'not classified' if refused else 'failed'}")
        return
    scores = "  ".join(f"{n} {record['scores'][n]:.3f}" for n in class_names)
    click.echo(
        f"{for_terminal(record['path'])}  {record['prediction']} ({record['confidence']:.3f})  "
        f"[{scores}]  {record['overlay'] or '-'}"
    )


def _dataset_command(command: str, options: DatasetOptions) -> int:
    settings = _settings(
        options.config_path,
        options.checkpoint,
        options.method,
        options.out,
        options.data,
        options.k,
        options.iou_threshold,
    )
    explainer = _load_explainer(settings.checkpoint, options.target_layer)
    gate, gate_line = _gate(explainer, options.model, settings)
    say = _notifier(options.quiet)
    say(_intended_use(explainer))
    say(gate_line)
    split = options.split
    panels = options.panels

    from btxrd.explain.evaluate import evaluate, select_samples
    from btxrd.explain.run import ExplainRun

    samples, subset = select_samples(settings.data, split)
    recorded = explainer.recorded_split()
    if split is None and recorded:
        say(
            f"note: every image is used, training images included; pass --split {recorded} "
            "for the held-out test part"
        )
    folder = prepare_output_dir(settings.out)
    say(f"{len(samples)} images: {subset}")
    # One run for every step: each image decoded once (here), each CAM computed once.
    run = ExplainRun(
        explainer,
        evaluate(explainer, samples, subset, log=say, gate=gate),
        show_progress=not options.quiet,
    )
    evaluation = run.evaluation
    gradcam = settings.gradcam
    summary: dict[str, Any] = {"out": str(folder), "images": len(evaluation.samples)}
    if command == "gallery":
        from btxrd.explain.gallery import run_gallery

        gallery = run_gallery(run, folder, gradcam, log=say)
        summary |= _gallery_summary(gallery)
    elif command == "annotations":
        from btxrd.explain.annotations import run_annotations

        annotations = run_annotations(run, folder, gradcam, panels=panels, log=say)
        summary |= _annotation_summary(annotations)
    else:
        from btxrd.explain.report import run_report

        result = run_report(run, folder, gradcam, panels=panels, log=say)
        gallery_part = _gallery_summary(result.gallery)
        annotation_part = _annotation_summary(result.annotations)
        files = {*gallery_part["files"], *annotation_part["files"], str(result.path)}
        summary |= gallery_part | annotation_part | {"files": sorted(files)}
        summary["report"] = str(result.path)
    summary["unreadable"] = len(evaluation.failed)
    click.echo(json.dumps(summary, indent=2))
    for _, error in evaluation.failed:
        click.echo(f"{PROGRAM}: error: {for_terminal(error)}", err=True)
    say(f"wrote {plural(len(summary['files']), 'file')} to {folder}/")
    if "report" in summary:
        say(f"open {summary['report']} in a browser: one self-contained page, nothing fetched")
    return EXIT_INPUT if evaluation.failed else EXIT_OK


def _gallery_summary(gallery) -> dict[str, Any]:
    return {
        "files": sorted(str(p) for p in gallery.paths.values()),
        "accuracy": gallery.metrics["accuracy"],
        "macro_auc": gallery.metrics["macro_auc"],
        "gallery_warnings": len(gallery.warnings),
    }


def _annotation_summary(annotations) -> dict[str, Any]:
    report = annotations.report
    return {
        "files": sorted(str(p) for p in annotations.paths.values()),
        "annotated_true_positives": report["num_images"],
        "scored": report["num_scored"],
        "mean_iou": report["mean_iou"],
        "median_iou_best": report["medians"]["iou_best"],
        "pointing_hit_rate": report["pointing_hit_rate"],
        "pointing_ceiling": report["pointing_ceiling"],
    }


def _settings(
    config_path: Path | None,
    checkpoint: Path | None,
    method: str | None,
    out: Path | None,
    data: Path | None = None,
    k: int | None = None,
    iou_threshold: float | None = None,
) -> _Settings:
    """Flag, then YAML config, then built-in default (the config was range-checked on load and
    click checks the flags against the same ranges)."""
    from btxrd.runtime.config import load_config
    from btxrd.runtime.output.atomic import protect
    from btxrd.runtime.paths import shipped

    config = load_config(config_path)
    section, paths = GradcamSettings(**config["gradcam"]), config["paths"]
    gradcam = GradcamSettings(
        method=check_method(method or section.method),
        out=section.out,
        k=k if k is not None else section.k,
        iou_threshold=iou_threshold if iou_threshold is not None else section.iou_threshold,
        alpha=section.alpha,
    )
    resolved = _Settings(
        checkpoint=checkpoint or shipped(paths["checkpoint"]),
        model=shipped(paths["model"]),
        data=data or shipped(paths["data"]),
        out=out or Path(section.out),
        gradcam=gradcam,
    )
    protect([resolved.checkpoint], "checkpoint")  # no figure or report may replace it
    return resolved


def _load_explainer(path: Path, target_layer: str | None = None):
    if not path.is_file():
        raise ModelError(
            f"{path}: checkpoint not found; pass --checkpoint, or train the demo model with "
            "`make demo-model`"
        )
    try:
        from btxrd.explain.model import load_explainer
    except ImportError as exc:
        raise ModelError(
            f"{path}: btxrd-explain needs PyTorch and pytorch-grad-cam ({exc.name} is missing); "
            f"install them with {install_hint('explain')}"
        ) from None
    return load_explainer(path, target_layer)


def _gate(explainer, model: Path | None, settings: _Settings):
    """The exported model's gate for this checkpoint (``btxrd.explain.gate.Gate``) or None, and
    the line that says which (or why there is none)."""
    from btxrd.explain.gate import gate_for

    gate, note = gate_for(explainer.checkpoint.sha256, model, settings.model)
    if gate is None:
        return None, str(note)
    return gate, (
        f"out-of-distribution gate and calibration from {gate.path} "
        f"({gate.method}, threshold {gate.threshold:.4g})"
    )


def _intended_use(explainer) -> str:
    from btxrd.runtime.model.contract import intended_use_for

    return intended_use_for(explainer.demo)  # from the checkpoint: no forward pass


def _notifier(quiet: bool) -> Callable[[str], None]:
    def say(message: str) -> None:
        if not quiet:
            click.echo(f"{PROGRAM}: {message}", err=True)

    return say
