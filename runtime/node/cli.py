"""``btxrd-serve dicom``: run the DICOM node (extra ``[dicom-node]``).

No DICOM network library is imported at the top: without the extra the command still runs, to
say how to install it.
"""

from __future__ import annotations

import importlib.util
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

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
)
from btxrd.runtime.errors import EXIT_INTERRUPTED, BtxrdError, ConfigError
from btxrd.runtime.install import install_hint
from btxrd.runtime.settings import DicomNodeSettings

NODE_PACKAGES = ("pynetdicom", "highdicom", "pydicom")
_DEFAULTS = DicomNodeSettings()


class MissingNodeExtra(BtxrdError):
    """The ``[dicom-node]`` extra is not installed (exit 3, like any unusable dependency)."""


@click.command(name="dicom", context_settings=CONTEXT_SETTINGS)
@click.option(
    "--ae-title", help=f"This node's AE title (default: dicom_node.ae_title, {_DEFAULTS.ae_title})."
)
@click.option("--host", help=f"Address to listen on (default: dicom_node.host, {_DEFAULTS.host}).")
@click.option(
    "--port",
    type=setting_range("dicom_node", "port"),
    help=f"Port (default: dicom_node.port, {_DEFAULTS.port}; 0 picks a free one).",
)
@click.option(
    "--destination",
    help="AE@HOST:PORT the reports and overlays are sent to, e.g. PACS@10.0.0.5:4242 "
    "(default: dicom_node.destination).",
)
@click.option(
    "--allow",
    multiple=True,
    help="AE@HOST of a caller to accept (repeat for more; default: dicom_node.allow, else the "
    "destination's AE title from its host). Any other caller is rejected at association.",
)
@click.option(
    "--outbox",
    type=click.Path(path_type=Path),
    help=f"Folder for received images, results not yet sent and results.jsonl (default: "
    f"dicom_node.outbox, {_DEFAULTS.outbox}).",
)
@model_option
@threads_option
@no_ood_gate_option
@common_options
@documents_exit_codes
def dicom(**options: Any) -> None:
    """Be a DICOM node: a PACS sends radiographs (C-STORE) and gets back, in the same study, a
    structured report and a heatmap image.

    Accepts CR, DX and Secondary Capture images (Explicit/Implicit VR Little Endian, JPEG
    Baseline, JPEG Lossless, JPEG 2000, RLE) from the allowed callers only. Each image is
    classified as btxrd-run classifies it; a report (and, when classified, an overlay) goes to
    --destination, kept on disk until the PACS confirms it. Research tool, not for clinical use.

    Example:

        btxrd-serve dicom --ae-title BTXRD --port 11112 --destination PACS@127.0.0.1:4242
    """
    run_cli(lambda: _run_node(options), options["debug"])


def _run_node(options: dict[str, Any]) -> int:
    from btxrd.runtime.config import load_config
    from btxrd.runtime.paths import default_model_path
    from btxrd.runtime.settings import InferenceSettings

    config = load_config(options["config_path"])
    settings = _settings(DicomNodeSettings(**config["dicom_node"]), options)
    _require_extra()
    from btxrd.runtime.node.outbox import Peer
    from btxrd.runtime.node.scp import Caller, DicomNode
    from btxrd.runtime.output.folders import prepare_output_dir
    from btxrd.runtime.output.outlock import output_lock

    if not settings.destination:
        raise ConfigError("no --destination: give the PACS the results go to, as AE@HOST:PORT")
    destination = Peer.parse(settings.destination, "--destination")
    allow = [Caller.parse(text) for text in settings.allow] or [
        Caller(destination.ae_title, destination.host)
    ]
    folder = prepare_output_dir(Path(settings.outbox))
    model_file = options["model_path"] or default_model_path(config["paths"]["model"])

    from btxrd.runtime.model.classifier import Classifier

    classifier = Classifier.from_settings(
        model_file,
        InferenceSettings(**config["inference"]),
        ood_gate=not options["no_ood_gate"],
        threads=options["threads"],
        decode_workers=1,
    )
    _log_to_stderr(options["quiet"], options["debug"])
    # One node per folder: its results.jsonl and outbox have one writer.
    with output_lock(folder / "results.jsonl"):
        node = DicomNode(classifier, settings, destination, allow, folder)
        try:
            port = node.start()
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {settings.host}:{settings.port} ({exc.strerror or exc}); "
                "choose another --port"
            ) from None
        pending = len(node.outbox.waiting())
        if not options["quiet"]:
            click.echo(classifier.info.metadata.intended_use, err=True)
        # Always said, even with --quiet: it is how a script finds a port chosen with --port 0.
        click.echo(
            f"btxrd-serve dicom: {settings.ae_title} listening on {settings.host}:{port}; "
            f"results to {destination} ({pending} pending); callers "
            f"{', '.join(f'{c.ae_title}@{c.host}' for c in allow)} (Ctrl-C to stop)",
            err=True,
        )
        try:
            _wait_for_a_signal()
        finally:
            node.stop()
    return EXIT_INTERRUPTED


def _settings(settings: DicomNodeSettings, options: dict[str, Any]) -> DicomNodeSettings:
    """The config's settings with the flags given on the command line on top."""
    import dataclasses

    flags = {
        "ae_title": options["ae_title"],
        "host": options["host"],
        "port": options["port"],
        "destination": options["destination"],
        "allow": list(options["allow"]) or None,
        "outbox": None if options["outbox"] is None else str(options["outbox"]),
    }
    given = {key: value for key, value in flags.items() if value is not None}
    title = given.get("ae_title", settings.ae_title)
    if not 0 < len(title) <= 16 or "\\" in title:
        raise ConfigError(f"AE title {title!r}: 1 to 16 characters, no backslash")
    return dataclasses.replace(settings, **given)


def _require_extra() -> None:
    missing = [name for name in NODE_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingNodeExtra(
            f"the DICOM node needs the [dicom-node] extra ({', '.join(missing)} missing); "
            f"install it with {install_hint('dicom-node')}"
        )


def _wait_for_a_signal() -> None:
    """Block until SIGINT or SIGTERM; a stop is an interruption (exit 130), as for every
    btxrd command."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    click.echo(
        "btxrd-serve dicom: stopping; results not yet confirmed stay in the outbox", err=True
    )


def _log_to_stderr(quiet: bool, debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("btxrd-serve dicom: %(message)s"))
    node_log = logging.getLogger("btxrd.node")
    node_log.addHandler(handler)
    node_log.setLevel(logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO)
