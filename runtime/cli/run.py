"""``btxrd-run``: classify radiographs on the CPU with an exported btxrd ONNX model."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click

from btxrd.runtime.cli.common import (
    CONTEXT_SETTINGS,
    common_options,
    documents_exit_codes,
    model_option,
    no_ood_gate_option,
    run_cli,
    setting_range,
    threads_option,
    version_lines,
)
from btxrd.runtime.errors import (
    EXIT_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    ConfigError,
    InputError,
    ModelError,
)
from btxrd.runtime.output.folders import check_output_file, prepare_output_dir, require_stdout
from btxrd.runtime.output.progress import progress
from btxrd.runtime.output.report import HUMAN, WRITERS, format_for_suffix
from btxrd.runtime.text import plural


@dataclass(frozen=True)
class RunOptions:
    """Everything ``btxrd-run`` was asked to do, as parsed from the command line."""

    images: tuple[Path, ...] = ()
    folder: Path | None = None
    recursive: bool = False
    model_path: Path | None = None
    config_path: Path | None = None
    output_format: str | None = None  # a key of report.WRITERS; None: from --output, or a table
    output: Path | None = None
    resume: bool = False
    engine: str | None = None  # None: config scale.engine
    ray_address: str | None = None  # None: config scale.ray_address
    threads: int | None = None
    batch_size: int | None = None
    fast_decode: bool = False
    cam: bool = False
    cam_dir: Path | None = None
    cam_class: str | None = None
    cam_with_original: bool = False
    quiet: bool = False
    labels: Path | None = None
    metrics_out: Path | None = None
    no_ood_gate: bool = False
    force: bool = False
    info: bool = False
    selftest: bool = False
    version: bool = False
    debug: bool = False


def _format_options(function):
    """``--json``, ``--jsonl``, ``--csv``: one flag per writer in ``report.WRITERS``."""
    for name, writer in reversed(WRITERS.items()):
        function = click.option(f"--{name}", f"format_{name}", is_flag=True, help=writer.help)(
            function
        )
    return function


def _parse(options: dict) -> RunOptions:
    chosen = [name for name in WRITERS if options.pop(f"format_{name}")]
    if len(chosen) > 1:
        raise click.UsageError(f"choose one of {', '.join(f'--{name}' for name in WRITERS)}")
    return RunOptions(**options, output_format=chosen[0] if chosen else None)


@click.command(name="btxrd-run", context_settings=CONTEXT_SETTINGS)
# readable=False: an unreadable file gets its own error record; the batch goes on.
@click.argument("images", nargs=-1, type=click.Path(path_type=Path, readable=False))
@click.option(
    "--dir", "folder", type=click.Path(path_type=Path), help="Classify every image in FOLDER."
)
@click.option("--recursive", "-r", is_flag=True, help="With --dir: include sub-folders.")
@model_option
@_format_options
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path),
    help="Write results to this file (format from the flag, or from its suffix: "
    ".json, .jsonl, .csv; .parquet is a folder).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="With --jsonl or --parquet --output: finish an earlier run; inputs already classified "
    "are kept, failed ones are tried again.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Write the output even on a file system that cannot lock files (some network mounts), "
    "where btxrd cannot make sure no other run writes it at the same time.",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    help="With --parquet: classify in this process (local) or on a Ray cluster (ray, extra "
    "[ray]) (default: config scale.engine, local).",
)
@click.option(
    "--ray-address",
    help="With --engine ray: the cluster to join, 'auto' or HOST:PORT (default: config "
    "scale.ray_address; empty: start Ray on this machine).",
)
@threads_option
@click.option(
    "--batch-size", type=setting_range("inference", "batch_size"), help="Images per inference call."
)
@click.option(
    "--fast-decode",
    is_flag=True,
    help="Decode JPEGs at 1/2, 1/4 or 1/8 scale (never below twice the model's input size): "
    "faster, pixels slightly different; each record's 'decode' says which (config "
    "inference.fast_decode).",
)
@click.option("--cam", is_flag=True, help="Write a heatmap overlay per image ({stem}_cam.png).")
@click.option(
    "--cam-dir",
    type=click.Path(path_type=Path),
    help="Folder for --cam overlays (default: config cam.out, results/cam).",
)
@click.option("--cam-class", help="Class to explain (default: the predicted class).")
@click.option(
    "--cam-with-original", is_flag=True, help="Put the radiograph beside its overlay in each file."
)
@click.option(
    "--labels",
    type=click.Path(path_type=Path),
    help="CSV of image,label, or a BTXRD-layout folder (its dataset.csv or dataset.xlsx): "
    "also report accuracy, per-class recall/precision, macro AUC (95 % bootstrap intervals), "
    "ECE and the confusion matrix.",
)
@click.option(
    "--metrics-out",
    type=click.Path(path_type=Path),
    help="With --labels: write those figures to this JSON file.",
)
@no_ood_gate_option
@click.option(
    "--info",
    is_flag=True,
    help="Print what the model file says about itself (inputs and outputs, classes, "
    "calibration, gate, provenance) and exit; with --json, all of it as JSON.",
)
@click.option(
    "--selftest", is_flag=True, help="Check this machine reproduces the model's reference scores."
)
@click.option(
    "--version",
    is_flag=True,
    help="Show btxrd's and onnxruntime's versions and the model file with its sha256, then exit.",
)
@common_options
@documents_exit_codes
def main(**options) -> None:
    """Classify bone radiographs as the model's classes (e.g. Normal / Benign / Malignant).

    Research tool, not for clinical use: the shipped model is a demo trained on synthetic
    phantoms. Results go to stdout (or --output); notices and progress go to stderr.

    Examples:

        btxrd-run models/samples/IMG000001.jpeg

        btxrd-run --dir radiographs/ --recursive --json --output results.json

        btxrd-run --dir archive/ --recursive --engine ray --parquet --output results.parquet

        btxrd-run scan.png --cam --cam-dir overlays/
    """
    debug = options["debug"]
    run_cli(lambda: _run(_parse(options)), debug)


def _run(options: RunOptions) -> int:
    """``btxrd-run``, step by step: check the request, open the model, gather the inputs, then
    classify them into one output held by this run alone."""
    from btxrd.runtime.config import load_config

    if options.output is None:
        require_stdout("the results")
    if options.version:
        return _print_version(options)
    fmt = _check_usage(options)
    config = load_config(options.config_path)
    model_file = _model_file(options, config)
    if options.output is not None:
        check_output_file(options.output)
    cam_folder = _cam_folder(options, config)
    classifier = _open_classifier(model_file, options, config)
    if options.info:
        return _print_info(classifier, as_json=options.output_format == "json")
    if options.selftest:
        return _selftest(classifier)
    cam = _cam_plan(cam_folder, classifier, model_file, options, config)
    labels = _read_labels(options, classifier)
    if options.metrics_out is not None:
        check_output_file(options.metrics_out)
    paths, problems = _inputs(
        options.images, options.folder, options.recursive, exclude=(cam.out,) if cam else ()
    )
    _protect_inputs(paths, model_file)
    # One writer per output: the lock is taken before the output is touched and held to the end.
    with _one_writer(options.output, fmt, force=options.force):
        if fmt == "parquet":
            _say_what_the_model_is(classifier, options)
            return _run_sharded(classifier, paths, problems, options, config)
        batch, sink = _open_output(classifier, fmt, paths, problems, options)
        _say_what_the_model_is(classifier, options)
        if not options.quiet and sink.resumed is not None:
            done = len(paths) - len(batch.paths)
            _say_what_was_resumed(sink.resumed, done, len(paths), options.output)
        return _classify(classifier, batch, sink, options, fmt=fmt, cam=cam, labels=labels)


@dataclass(frozen=True)
class _CamPlan:
    """Where and how ``--cam`` draws its overlays."""

    out: Path
    class_name: str | None  # None: the predicted class
    alpha: float
    with_original: bool


@dataclass(frozen=True)
class _Batch:
    """What is left to classify (the inputs and the names they are shown under), and the records
    of what could not even be looked at (folders and files refused while gathering)."""

    paths: list[Path]
    shown: list[str]
    failures: list


def _print_version(options: RunOptions) -> int:
    from btxrd.runtime.config import load_config

    model = _model_file(options, load_config(options.config_path))
    for line in version_lines(("onnxruntime",), model):
        click.echo(line)
    return EXIT_OK


def _model_file(options: RunOptions, config: dict) -> Path:
    from btxrd.runtime.paths import default_model_path

    return options.model_path or default_model_path(config["paths"]["model"])


def _cam_folder(options: RunOptions, config: dict) -> Path | None:
    """``--cam``'s folder, created and checked before the model is opened."""
    from btxrd.runtime.settings import CamSettings

    if not options.cam:
        return None
    return prepare_output_dir(options.cam_dir or Path(CamSettings(**config["cam"]).out))


def _open_classifier(model_file: Path, options: RunOptions, config: dict):
    from btxrd.runtime.model.classifier import Classifier
    from btxrd.runtime.settings import InferenceSettings

    return Classifier.from_settings(
        model_file,
        InferenceSettings(**config["inference"]),
        ood_gate=not options.no_ood_gate,
        threads=options.threads,
        batch_size=options.batch_size,
        fast_decode=options.fast_decode or None,
    )


def _cam_plan(
    folder: Path | None, classifier, model_file: Path, options: RunOptions, config: dict
) -> _CamPlan | None:
    """``--cam``'s plan, once the model is known to draw maps and to have ``--cam-class``."""
    from btxrd.runtime.settings import CamSettings

    if folder is None:
        return None
    if not classifier.info.has_cam:
        raise ModelError(
            f"{model_file}: this model has no CAM output; use btxrd-explain for heatmaps"
        )
    cam_class = options.cam_class
    if cam_class is not None and cam_class not in classifier.class_names:
        raise ConfigError(f"--cam-class {cam_class!r} is not one of {list(classifier.class_names)}")
    alpha = CamSettings(**config["cam"]).alpha
    return _CamPlan(folder, cam_class, alpha, options.cam_with_original)


def _read_labels(options: RunOptions, classifier) -> dict[str, str] | None:
    if options.labels is None:
        return None
    from btxrd.runtime.labels.validation import read_labels

    return read_labels(options.labels, classifier.class_names)


def _protect_inputs(paths: list[Path], model_file: Path) -> None:
    """No output may replace an input or the model, however the paths are spelled."""
    from btxrd.runtime.output.atomic import protect

    protect(paths, "input image")
    protect([model_file], "model")


def _open_output(classifier, fmt: str, paths: list[Path], problems, options: RunOptions):
    """The writer of ``fmt`` (resuming an earlier file with ``--resume``), and the batch of
    inputs it does not hold yet."""
    from btxrd.runtime.decode.inputs import display_names
    from btxrd.runtime.output.jsonl import identity, input_key
    from btxrd.runtime.output.report import make_sink
    from btxrd.runtime.text import text_of

    shown = display_names(paths, options.folder)
    keys = [(input_key(p), text_of(name)) for p, name in zip(paths, shown, strict=True)]
    expected = {}
    if fmt == "jsonl" and options.output is not None:  # identities go into each line
        expected = {key: identity(p) for key, p in zip(keys, paths, strict=True)}
    sink = make_sink(
        fmt,
        classifier.info,
        options.output,
        resume=options.resume,
        expected=expected,
        settings=classifier.result_settings(),
    )
    todo = [i for i, key in enumerate(keys) if not sink.already_recorded(key)]
    failures = [classifier.failure(path, message) for path, message in problems]
    batch = _Batch([paths[i] for i in todo], [shown[i] for i in todo], failures)
    return batch, sink


def _say_what_the_model_is(classifier, options: RunOptions) -> None:
    if options.quiet:
        return
    _notice(classifier.info.metadata.intended_use)
    if classifier.info.trust is None:
        _notice(
            "note: this model has no out-of-distribution gate; it gives a class to any "
            "image, radiograph or not (btxrd-run --info)"
        )
    elif options.no_ood_gate:
        _notice("note: --no-ood-gate: images unlike the training data are classified anyway")


_NAMED = 5  # changed inputs named one by one on resume; the rest are counted


def _say_what_was_resumed(resumed, kept: int, inputs: int, output: Path | None) -> None:
    from btxrd.runtime.text import for_terminal

    counts = (resumed.other_settings, resumed.unproven, resumed.not_inputs, resumed.duplicates)
    if not (resumed.lines or resumed.changed or any(counts)):
        return  # nothing there to resume from
    _notice(f"resuming: {kept} of {inputs} inputs already in {output}")
    for name in resumed.changed[:_NAMED]:
        _notice(f"resuming: {for_terminal(name)} changed since it was classified; classified again")
    if len(resumed.changed) > _NAMED:
        _notice(f"resuming: ... and {len(resumed.changed) - _NAMED} more changed inputs")
    dropped = {
        "made with other settings (--fast-decode, --no-ood-gate): classified again": (
            resumed.other_settings
        ),
        "written by an older btxrd (no input identity, or an older record layout): classified "
        "again": resumed.unproven,
        "of files that are not inputs of this run: removed": resumed.not_inputs,
        "repeated: removed": resumed.duplicates,
    }
    for what, count in dropped.items():
        if count:
            _notice(f"resuming: {plural(count, 'record')} {what}")


def _classify(
    classifier,
    batch: _Batch,
    sink,
    options: RunOptions,
    *,
    fmt: str,
    cam: _CamPlan | None,
    labels: dict[str, str] | None,
) -> int:
    """Classify ``batch`` into ``sink``, then close it with the run's summary and say what
    happened; Ctrl-C keeps every result so far."""
    started = time.perf_counter()
    predictions: list = []
    interrupted = False
    try:
        _record_all(classifier, batch, sink, predictions, options, cam)
    except KeyboardInterrupt:
        interrupted = True
    summary = _summary(predictions, time.perf_counter() - started, interrupted, cam)
    if labels is not None:
        summary["validation"] = _validation(
            classifier, predictions, labels, options.metrics_out, to_stdout=fmt == HUMAN
        )
    sink.close(summary)
    if interrupted:
        click.echo(
            f"btxrd-run: interrupted after {len(predictions)} of {len(batch.paths)} inputs; "
            "results so far are saved",
            err=True,
        )
        return EXIT_INTERRUPTED
    _say_what_failed(predictions)
    if not options.quiet:
        _say_how_fast(summary)
        _say_what_was_written(sink, summary, cam.out if cam else None, options.metrics_out)
    return EXIT_INPUT if summary["failed"] else EXIT_OK


def _record_all(
    classifier, batch: _Batch, sink, predictions: list, options: RunOptions, cam: _CamPlan | None
) -> None:
    """Every input's record into ``sink`` (and ``predictions``), in input order, failures of
    the gathering first; with ``cam``, each classified input's overlay on the way."""
    from btxrd.runtime.decode.inputs import display_names, output_names

    for failure in batch.failures:
        predictions.append(failure)
        sink.add(failure, display_names([Path(failure.path or "")], options.folder)[0])
    cam_names = output_names(batch.paths, options.folder, "_cam.png") if cam else []
    stream = classifier.predict_many(batch.paths, with_cam=cam is not None)
    shown_stream = progress(stream, len(batch.paths), "classifying", enabled=not options.quiet)
    for i, prediction in enumerate(shown_stream):
        if cam is not None and prediction.ok:
            prediction = _write_cam(classifier, prediction, cam.out / cam_names[i], cam)
        predictions.append(prediction)
        sink.add(prediction, batch.shown[i], batch.paths[i])


def _summary(predictions: list, seconds: float, interrupted: bool, cam: _CamPlan | None) -> dict:
    from btxrd.runtime.output.report import summarise

    summary = summarise(predictions, seconds)
    summary["interrupted"] = interrupted
    if cam is not None:
        summary["overlays"] = sum(
            1 for p in predictions if any(n.startswith("cam: ") for n in p.notes)
        )
    return summary


def _say_what_failed(predictions: list) -> None:
    from btxrd.runtime.text import for_terminal

    for p in predictions:
        if p.error:
            kind = "not classified" if p.refused else "error"
            click.echo(f"btxrd-run: {kind}: {for_terminal(p.error)}", err=True)


def _say_how_fast(summary: dict) -> None:
    if summary["classified"]:
        _notice(
            f"speed: {summary['mean_decode_preprocess_ms']:.1f} ms decode+preprocess, "
            f"{summary['mean_inference_ms']:.1f} ms inference per image "
            f"({plural(summary['classified'], 'image')} classified in "
            f"{summary['wall_seconds']:.2f} s)"
        )


def _write_cam(classifier, prediction, path: Path, cam: _CamPlan):
    """Write one overlay. Fenced: whatever fails here (a name too long for the file system, a
    full disk, an overlay that would replace an input) becomes this input's error record."""
    from dataclasses import replace

    from btxrd.runtime.errors import BtxrdError
    from btxrd.runtime.output.atomic import atomic_open
    from btxrd.runtime.output.overlay import cam_overlay, normalise_cam

    target = cam.class_name or prediction.prediction
    index = classifier.class_names.index(target)
    cam01 = normalise_cam(prediction.cam[index])
    if cam01 is None:
        note = f"CAM for {target} is flat (no positive evidence); no overlay written"
        return replace(prediction, notes=(*prediction.notes, note), cam=None, image=None)
    try:
        info = classifier.info
        picture, metadata = cam_overlay(
            prediction.image,
            cam01,
            name=prediction.image_name,
            source=prediction.path or prediction.image_name,
            class_name=target,
            probability=prediction.scores[target],
            prediction=prediction.prediction,
            model_sha256=info.sha256,
            intended_use=info.metadata.intended_use,
            alpha=cam.alpha,
            with_original=cam.with_original,
        )
        with atomic_open(path, "wb") as handle:
            picture.save(handle, format="PNG", pnginfo=metadata)
    except (OSError, BtxrdError, ValueError) as exc:
        cause = getattr(exc, "strerror", None) or str(exc)
        message = (
            f"{prediction.path or prediction.image_name}: classified {prediction.prediction} "
            f"({prediction.confidence:.3f}) but its overlay {path} could not be written "
            f"({cause}); fix that and rerun this image"
        )
        return classifier.failure(prediction.path or prediction.image_name, message)
    return replace(
        prediction, notes=(*prediction.notes, f"cam: {path} ({target})"), cam=None, image=None
    )


def _run_sharded(classifier, paths, problems, options: RunOptions, config) -> int:
    """``--parquet``: shard by shard into a dataset folder, locally or on Ray."""
    from btxrd.runtime.engine.run import ShardedRun, run_sharded

    scale = config["scale"]
    assert options.output is not None  # _check_usage: --parquet needs --output
    run = ShardedRun(
        output=options.output,
        engine=options.engine or scale["engine"],
        resume=options.resume,
        shard_size=scale["shard_size"],
        ray_address=scale["ray_address"] if options.ray_address is None else options.ray_address,
        ray_cpus_per_worker=scale["ray_cpus_per_worker"],
        quiet=options.quiet,
    )
    return run_sharded(classifier, paths, problems, options.folder, run)


def _say_what_was_written(sink, summary, cam_out: Path | None, metrics_out: Path | None) -> None:
    """One stderr line per output file or folder, so nothing is written without a word."""
    if sink.output is not None:
        _notice(f"wrote {plural(summary['inputs'], 'record')} to {sink.output}")
    if cam_out is not None:
        overlays = summary.get("overlays", 0)
        _notice(f"wrote {plural(overlays, 'overlay')} to {cam_out}/ ({{stem}}_cam.png)")
    if metrics_out is not None:
        _notice(f"wrote the validation figures to {metrics_out}")


def _one_writer(output: Path | None, fmt: str, *, force: bool):
    """The lock of ``output`` (``btxrd.runtime.output.outlock``); none for stdout, a FIFO or a
    device, which no rename replaces and no second run could share unnoticed."""
    import contextlib

    from btxrd.runtime.output.atomic import destination
    from btxrd.runtime.output.outlock import output_lock

    if output is None or (fmt != "parquet" and destination(output).direct):
        return contextlib.nullcontext()
    return output_lock(output, force=force)


def _check_usage(options: RunOptions) -> str:
    """Refuse contradictory flags before anything is loaded; return the output format."""
    if options.images and options.folder:
        raise click.UsageError("give image files or --dir FOLDER, not both")
    if not (options.images or options.folder or options.info or options.selftest):
        raise click.UsageError("nothing to classify: give image files or --dir FOLDER")
    fmt = options.output_format
    if fmt is None and options.output is not None:
        fmt = format_for_suffix(options.output)
        if fmt is None:
            flags = ", ".join(f"--{name}" for name in WRITERS)
            suffixes = ", ".join(str(writer.suffix) for writer in WRITERS.values())
            raise click.UsageError(
                f"--output {options.output}: choose a format ({flags}) or name the file "
                f"with one of {suffixes}"
            )
    if options.resume and not (options.output and fmt in ("jsonl", "parquet")):
        raise click.UsageError(
            "--resume works with --jsonl --output FILE or --parquet --output FOLDER"
        )
    if (options.engine == "ray" or options.ray_address) and fmt != "parquet":
        raise click.UsageError("--engine ray and --ray-address write --parquet --output FOLDER")
    if fmt == "parquet" and (options.output is None or options.cam or options.labels):
        raise click.UsageError(
            "--parquet needs --output FOLDER, and works without --cam and --labels"
        )
    if (options.cam_class or options.cam_with_original) and not options.cam:
        raise click.UsageError("--cam-class and --cam-with-original need --cam")
    if options.metrics_out and not options.labels:
        raise click.UsageError("--metrics-out needs --labels")
    return fmt or HUMAN


def _inputs(
    images, folder: Path | None, recursive: bool, exclude: tuple[Path, ...]
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The input files, and (path, message) for what could not be looked at."""
    from btxrd.runtime.decode.inputs import walk_folder

    if folder is None:
        return list(images), []
    if not folder.is_dir():
        raise click.UsageError(f"--dir {folder}: no such folder")
    listing = walk_folder(folder, recursive=recursive, exclude=exclude)
    if not listing.paths and not listing.problems:
        hint = "" if recursive else " (add --recursive to look in sub-folders)"
        raise InputError(f"{folder}: no image files found{hint}")
    return listing.paths, listing.problems


def _print_info(classifier, as_json: bool) -> int:
    if as_json:
        click.echo(json.dumps(classifier.info.document(), indent=2))
        return EXIT_OK
    from btxrd.runtime.cli.info import describe_model

    for line in describe_model(classifier.info):
        click.echo(line)
    return EXIT_OK


def _validation(classifier, predictions, labels, metrics_out: Path | None, to_stdout: bool):
    """Score this run's records against the labels; print the figures (on stdout with the
    table, else on stderr, so machine-readable stdout stays one format) and write them."""
    from btxrd.runtime.labels.validation import describe, validate
    from btxrd.runtime.output.atomic import write_text

    figures = validate((p.to_record() for p in predictions), labels, classifier.class_names)
    for line in describe(figures):
        click.echo(line, err=not to_stdout)
    if metrics_out is not None:
        write_text(metrics_out, json.dumps(figures, indent=2) + "\n")
    return figures


def _selftest(classifier) -> int:
    from btxrd.runtime.model.selftest import check_reference_scores

    report = check_reference_scores(classifier)
    for line in report.lines:
        click.echo(line)
    return EXIT_OK if report.passed else EXIT_INPUT


def _notice(text: str) -> None:
    click.echo(text, err=True)


if __name__ == "__main__":
    sys.exit(main())
