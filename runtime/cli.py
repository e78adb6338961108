"""``btxrd-run``: classify radiographs on the CPU with an exported btxrd ONNX model."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click

from btxrd.runtime.cliutil import EXIT_INPUT, EXIT_INTERRUPTED, EXIT_OK, debug_option, run_cli
from btxrd.runtime.errors import ConfigError, InputError, ModelError, OutputError

_FORMATS = ("json", "jsonl", "csv")


@click.command(name="btxrd-run", context_settings={"help_option_names": ["-h", "--help"]})
# readable=False: an unreadable file gets its own error record; the batch goes on.
@click.argument("images", nargs=-1, type=click.Path(path_type=Path, readable=False))
@click.option(
    "--dir", "folder", type=click.Path(path_type=Path), help="Classify every image in FOLDER."
)
@click.option("--recursive", "-r", is_flag=True, help="With --dir: include sub-folders.")
@click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path),
    envvar="BTXRD_MODEL",
    help="Exported ONNX model (default: the shipped demo model; env BTXRD_MODEL).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    help="YAML config (default: built-in defaults; env BTXRD_CONFIG).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout or --output.")
@click.option(
    "--jsonl", "as_jsonl", is_flag=True, help="One JSON record per line as results arrive."
)
@click.option("--csv", "as_csv", is_flag=True, help="A CSV table.")
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Write results to this file.")
@click.option("--resume", is_flag=True, help="With --jsonl --output: skip inputs already recorded.")
@click.option(
    "--threads", type=click.IntRange(1, 256), help="onnxruntime threads (default: all cores)."
)
@click.option("--batch-size", type=click.IntRange(1, 1024), help="Images per inference call.")
@click.option("--cam", is_flag=True, help="Write a heatmap overlay per image ({stem}_cam.png).")
@click.option("--cam-dir", type=click.Path(path_type=Path), help="Folder for --cam overlays.")
@click.option("--cam-class", help="Class to explain (default: the predicted class).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or notices on stderr.")
@click.option("--info", is_flag=True, help="Print what the model file says about itself and exit.")
@click.option(
    "--selftest", is_flag=True, help="Check this machine reproduces the model's reference scores."
)
@debug_option
def main(**options) -> None:
    """Classify bone radiographs as the model's classes (e.g. Normal / Benign / Malignant).

    Research tool, not for clinical use: the shipped model is a demo trained on synthetic
    phantoms. Results go to stdout (or --output); notices and progress go to stderr.

    Exit codes: 0 all inputs classified; 1 some input failed (each has its error record);
    2 usage or config error; 3 model unusable or output not writable, nothing processed;
    130 interrupted.

    Examples:

        btxrd-run models/samples/IMG000001.jpeg

        btxrd-run --dir radiographs/ --recursive --json --output results.json

        btxrd-run scan.png --cam --cam-dir overlays/
    """
    run_cli(lambda: _run(**options), options["debug"])


def _run(
    images: tuple[Path, ...],
    folder: Path | None,
    recursive: bool,
    model_path: Path | None,
    config_path: Path | None,
    as_json: bool,
    as_jsonl: bool,
    as_csv: bool,
    output: Path | None,
    resume: bool,
    threads: int | None,
    batch_size: int | None,
    cam: bool,
    cam_dir: Path | None,
    cam_class: str | None,
    quiet: bool,
    info: bool,
    selftest: bool,
    debug: bool,
) -> int:
    from btxrd.runtime.classifier import Classifier
    from btxrd.runtime.config import load_config
    from btxrd.runtime.imageio import DecodeLimits
    from btxrd.runtime.paths import default_model_path

    formats = [f for f, on in zip(_FORMATS, (as_json, as_jsonl, as_csv), strict=True) if on]
    _check_usage(images, folder, formats, output, resume, info, selftest, cam_class, cam)
    config = load_config(config_path)
    inference = config["inference"]
    model_file = model_path or default_model_path(config["paths"]["model"])
    if output is not None:
        _check_writable(output.parent if str(output.parent) else Path("."), output)
    cam_out = (cam_dir or Path(config["cam"]["out"])) if cam else None
    if cam_out is not None:
        _prepare_dir(cam_out)
    classifier = Classifier(
        model_file,
        threads=threads or inference["threads"],
        batch_size=batch_size or inference["batch_size"],
        limits=DecodeLimits(
            inference["max_pixels"], inference["min_side"], inference["max_aspect"]
        ),
    )
    if info:
        return _print_info(classifier)
    if selftest:
        return _selftest(classifier)
    if cam and not classifier.info.has_cam:
        raise ModelError(
            f"{model_file}: this model has no CAM output; use btxrd-explain for heatmaps"
        )
    if cam_class is not None and cam_class not in classifier.class_names:
        raise ConfigError(f"--cam-class {cam_class!r} is not one of {list(classifier.class_names)}")

    paths = _inputs(images, folder, recursive, exclude=tuple(p for p in (cam_out,) if p))
    fmt = formats[0] if formats else "human"
    done: set[str] = _already_recorded(output) if resume and output else set()
    todo = [p for p in paths if str(p) not in done]
    if not quiet:
        _notice(classifier.info.metadata.intended_use)
        if done:
            _notice(
                f"resuming: {len(paths) - len(todo)} of {len(paths)} inputs already in {output}"
            )
    return _classify(
        classifier,
        todo,
        fmt,
        output,
        append=bool(done),
        cam_out=cam_out,
        cam_class=cam_class,
        folder=folder,
        quiet=quiet,
        alpha=config["cam"]["alpha"],
    )


def _classify(
    classifier,
    paths: list[Path],
    fmt: str,
    output: Path | None,
    *,
    append: bool,
    cam_out: Path | None,
    cam_class: str | None,
    folder: Path | None,
    quiet: bool,
    alpha: float,
) -> int:
    from btxrd.runtime.inputs import output_names
    from btxrd.runtime.report import make_sink, summarise

    sink = make_sink(fmt, classifier.info, output, append=append)
    cam_names = output_names(paths, folder, "_cam.png") if cam_out else []
    predictions = []
    started = time.perf_counter()
    interrupted = False
    try:
        stream = classifier.predict_many(paths, with_cam=cam_out is not None)
        for i, prediction in enumerate(_progress(stream, len(paths), quiet)):
            if cam_out is not None and prediction.ok:
                prediction = _write_cam(
                    classifier, prediction, cam_out / cam_names[i], cam_class, alpha
                )
            predictions.append(prediction)
            sink.add(prediction)
    except KeyboardInterrupt:
        interrupted = True
    summary = summarise(predictions, time.perf_counter() - started)
    summary["interrupted"] = interrupted
    sink.close(summary)
    if interrupted:
        click.echo(
            f"btxrd-run: interrupted after {len(predictions)} of {len(paths)} inputs; "
            "results so far are saved",
            err=True,
        )
        return EXIT_INTERRUPTED
    for p in predictions:
        if p.error:
            click.echo(f"btxrd-run: error: {p.error}", err=True)
    if not quiet and summary["classified"]:
        _notice(
            f"speed: {summary['mean_decode_preprocess_ms']:.1f} ms decode+preprocess, "
            f"{summary['mean_inference_ms']:.1f} ms inference per image "
            f"({len(predictions)} images in {summary['wall_seconds']:.2f} s)"
        )
    return EXIT_INPUT if summary["failed"] else EXIT_OK


def _write_cam(classifier, prediction, path: Path, cam_class: str | None, alpha: float):
    from dataclasses import replace

    from btxrd.runtime.atomic import atomic_open
    from btxrd.runtime.overlay import normalise_cam, overlay

    target = cam_class or prediction.prediction
    index = classifier.class_names.index(target)
    cam01 = normalise_cam(prediction.cam[index])
    if cam01 is None:
        note = f"CAM for {target} is flat (no positive evidence); no overlay written"
        return replace(prediction, notes=(*prediction.notes, note), cam=None, image=None)
    with atomic_open(path, "wb") as handle:
        overlay(prediction.image, cam01, alpha).save(handle, format="PNG")
    return replace(
        prediction, notes=(*prediction.notes, f"cam: {path} ({target})"), cam=None, image=None
    )


def _check_usage(images, folder, formats, output, resume, info, selftest, cam_class, cam) -> None:
    if images and folder:
        raise click.UsageError("give image files or --dir FOLDER, not both")
    if not (images or folder or info or selftest):
        raise click.UsageError("nothing to classify: give image files or --dir FOLDER")
    if len(formats) > 1:
        raise click.UsageError("choose one of --json, --jsonl, --csv")
    if output is not None and not formats:
        raise click.UsageError("--output needs a format: --json, --jsonl or --csv")
    if resume and not (output and formats == ["jsonl"]):
        raise click.UsageError("--resume works with --jsonl --output FILE")
    if cam_class and not cam:
        raise click.UsageError("--cam-class needs --cam")


def _check_writable(folder: Path, output: Path) -> None:
    if not folder.is_dir():
        raise OutputError(f"{output}: output folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise OutputError(
            f"{output}: output folder {folder} is not writable; choose another --output"
        )


def _prepare_dir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{folder}: cannot create the output folder ({exc.strerror})") from None
    if not os.access(folder, os.W_OK):
        raise OutputError(f"{folder}: output folder is not writable; choose another one")


def _inputs(images, folder: Path | None, recursive: bool, exclude: tuple[Path, ...]) -> list[Path]:
    from btxrd.runtime.inputs import collect_folder

    if folder is None:
        return list(images)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    paths = collect_folder(folder, recursive=recursive, exclude=exclude)
    if not paths:
        hint = "" if recursive else " (add --recursive to look in sub-folders)"
        raise InputError(f"{folder}: no image files found{hint}")
    return paths


def _already_recorded(output: Path) -> set[str]:
    """Inputs a previous run classified, keeping only their complete records in ``output``.

    A line cut by an interruption, and records of inputs that failed, are dropped (the file is
    rewritten atomically), so those inputs run again and every input ends with one record.
    """
    from btxrd.runtime.atomic import write_text

    if not output.exists():
        return set()
    kept, done = [], set()
    for line in output.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("path") and record.get("error") is None:
            kept.append(line)
            done.add(record["path"])
    write_text(output, "".join(f"{line}\n" for line in kept))
    return done


def _progress(stream: Iterator, total: int, quiet: bool) -> Iterator:
    if quiet or total < 2 or not sys.stderr.isatty():
        yield from stream
        return
    with click.progressbar(stream, length=total, label="classifying", file=sys.stderr) as bar:
        yield from bar


def _print_info(classifier) -> int:
    info = classifier.info
    meta = info.metadata
    document = {
        **info.identity(),
        "path": str(info.path),
        "has_cam": info.has_cam,
        "preprocessing": meta.preprocessing.to_json(),
        "provenance": dict(meta.provenance),
        "intended_use": meta.intended_use,
    }
    click.echo(json.dumps(document, indent=2))
    return EXIT_OK


def _selftest(classifier) -> int:
    from btxrd.runtime.selftest import check_reference_scores

    report = check_reference_scores(classifier)
    for line in report.lines:
        click.echo(line)
    return EXIT_OK if report.passed else EXIT_INPUT


def _notice(text: str) -> None:
    click.echo(text, err=True)


if __name__ == "__main__":
    sys.exit(main())
