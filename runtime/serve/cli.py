"""``btxrd-serve``: a local web page to classify radiographs with an exported btxrd model.

This module imports no web library at the top: without the ``[serve]`` extra the command still
runs, to say how to install it.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
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
    version_lines,
)
from btxrd.runtime.errors import EXIT_OK, BtxrdError, ConfigError
from btxrd.runtime.install import install_hint
from btxrd.runtime.node.cli import dicom
from btxrd.runtime.settings import ServeSettings

WEB_PACKAGES = ("starlette", "uvicorn", "multipart")
_DEFAULTS = ServeSettings()  # the help texts quote the defaults from their one home
# After Ctrl-C, requests still being answered get this long before the server stops anyway.
GRACEFUL_SECONDS = 5


class MissingExtra(BtxrdError):
    """The ``[serve]`` extra is not installed (exit 3, like any unusable dependency)."""


@click.group(name="btxrd-serve", invoke_without_command=True, context_settings=CONTEXT_SETTINGS)
@click.option("--host", help=f"Address to listen on (default: serve.host, {_DEFAULTS.host}).")
@click.option(
    "--port",
    type=setting_range("serve", "port"),
    help=f"Port (default: serve.port, {_DEFAULTS.port}; 0 picks a free one).",
)
@model_option
@threads_option
@no_ood_gate_option
@click.option(
    "--version",
    is_flag=True,
    help="Show btxrd's, onnxruntime's and the web stack's versions and the model, then exit.",
)
@common_options
@documents_exit_codes
@click.pass_context
def main(ctx: click.Context, **options: Any) -> None:
    """Serve a page on this machine where radiographs are dropped and classified; with
    ``dicom``, be a DICOM node a PACS sends radiographs to (btxrd-serve dicom --help).

    The page shows each image's class, calibrated probabilities, the out-of-distribution
    verdict and the heatmap; its API (/api/classify, /api/model, /api/health) returns the
    records btxrd-run --json writes. Research tool, not for clinical use. There is no
    authentication: keep the default loopback address unless the network is trusted.

    Example:

        btxrd-serve            # then open http://127.0.0.1:8000/

        btxrd-serve --port 8080 --model my-model.onnx

        btxrd-serve dicom --destination PACS@127.0.0.1:4242
    """
    if ctx.invoked_subcommand is None:  # the web page; ``dicom`` runs on its own
        run_cli(lambda: _serve(options), options["debug"])


def _serve(options: dict[str, Any]) -> int:
    from btxrd.runtime.config import load_config
    from btxrd.runtime.paths import default_model_path
    from btxrd.runtime.settings import CamSettings, InferenceSettings, ServeSettings

    config = load_config(options["config_path"])
    model_file = options["model_path"] or default_model_path(config["paths"]["model"])
    if options["version"]:
        for line in version_lines(("onnxruntime", "starlette", "uvicorn"), model_file):
            click.echo(line)
        return EXIT_OK
    _require_extra()
    settings = ServeSettings(**config["serve"])
    host = options["host"] or settings.host
    port = settings.port if options["port"] is None else options["port"]
    inference = InferenceSettings(**config["inference"])
    listener = _listen(host, port)  # before the model loads: a busy port fails at once

    from btxrd.runtime.model.classifier import Classifier
    from btxrd.runtime.serve.service import Service

    # One upload decoded at a time: a request's memory is one image at inference.max_pixels
    # plus the previews and the batch, whatever the number of files (README, "The page").
    classifier = Classifier.from_settings(
        model_file,
        inference,
        ood_gate=not options["no_ood_gate"],
        threads=options["threads"],
        decode_workers=1,
    )
    service = Service(
        classifier, kept_results=settings.kept_results, alpha=CamSettings(**config["cam"]).alpha
    )
    return _run_server(
        service, settings, listener, host, quiet=options["quiet"], debug=options["debug"]
    )


def _require_extra() -> None:
    import importlib.util

    missing = [name for name in WEB_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtra(
            f"the web page needs the [serve] extra ({', '.join(missing)} missing); install it "
            f"with {install_hint('serve')}"
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a busy port or a bad address is one clear line."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(
            f"--host {host}: not an address of this machine ({exc.strerror})"
        ) from None
    family, kind, proto, _, address = infos[0]
    listener = socket.socket(family, kind, proto)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(address)
    except OSError as exc:
        listener.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port"
        ) from None
    listener.listen(2048)
    listener.setblocking(False)
    return listener


def _run_server(
    service: Any,
    settings: Any,
    listener: socket.socket,
    host: str,
    *,
    quiet: bool,
    debug: bool,
) -> int:
    import logging

    import uvicorn

    from btxrd.runtime.serve.app import LOOPBACK_NAMES, create_app

    loopback = is_loopback(host)
    # Bound elsewhere, the page is reached under names this machine cannot list: any Host.
    allowed = LOOPBACK_NAMES if loopback else ["*"]
    app = create_app(
        service, settings, info_document=service.classifier.info.document(), allowed_hosts=allowed
    )
    port = listener.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/"
    logging.getLogger("btxrd.serve").addHandler(_stderr_handler())
    logging.getLogger("btxrd.serve").setLevel(logging.DEBUG if debug else logging.INFO)
    if not loopback:
        click.echo(
            f"btxrd-serve: warning: listening on {host}, reachable from other machines; the page "
            "has no authentication and no encryption. Use 127.0.0.1 unless the network is trusted",
            err=True,
        )
    if not quiet:
        info = service.classifier.info
        click.echo(info.metadata.intended_use, err=True)
        click.echo(f"btxrd-serve: model {info.path} (sha256 {info.sha256[:12]}…)", err=True)
    # Always said, even with --quiet: it is how a script finds a port chosen with --port 0.
    click.echo(f"btxrd-serve: serving {url} (Ctrl-C to stop)", err=True)
    config = uvicorn.Config(
        app,
        log_level="info" if debug else "warning",
        access_log=debug,
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
        server_header=False,
    )
    server = uvicorn.Server(config)
    # uvicorn handles SIGINT and SIGTERM itself (graceful stop), then raises the signal again:
    # run_cli turns that into "interrupted" and exit 130, as for every btxrd command.
    server.run(sockets=[listener])
    sys.stdout.flush()
    if server.should_exit:
        # Stopped by a signal whose re-raise did nothing: a shell starts background jobs with
        # SIGINT ignored, and uvicorn stops on it all the same. Still an interruption.
        raise KeyboardInterrupt
    return EXIT_OK


def _stderr_handler():
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("btxrd-serve: %(message)s"))
    return handler


main.add_command(dicom)

if __name__ == "__main__":
    sys.exit(main(prog_name="btxrd-serve"))
