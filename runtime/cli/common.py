"""What every btxrd command shares: option bundles, the version line, and the runner that turns
a fault into one line and its exit code (the codes themselves: ``btxrd.runtime.errors``).
"""

from __future__ import annotations

import inspect
import io
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from btxrd.runtime.errors import (
    EXIT_CODES_HELP,
    EXIT_INTERRUPTED,
    EXIT_MODEL,
    EXIT_OK,
    BtxrdError,
    exit_code_for,
)
from btxrd.runtime.settings import field_of, range_of

CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}

F = TypeVar("F", bound=Callable[..., Any])

debug_option = click.option(
    "--debug", is_flag=True, help="Show full tracebacks instead of one-line errors."
)
config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    help="YAML config (default: built-in defaults; env BTXRD_CONFIG).",
)
quiet_option = click.option(
    "--quiet", "-q", is_flag=True, help="No progress bar or notices on stderr."
)


def version_lines(
    packages: tuple[str, ...], model: Path | None = None, model_kind: str = "model"
) -> list[str]:
    """What ``--version`` prints: btxrd's version, the libraries that compute the scores, and
    the model file with its sha256 (the same identity every result records)."""
    import hashlib
    from importlib.metadata import PackageNotFoundError, version

    lines = []
    for package in ("btxrd", *packages):
        try:
            lines.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            lines.append(f"{package} (not installed)")
    if model is not None:
        try:
            digest = hashlib.sha256(model.read_bytes()).hexdigest()
            lines.append(f"{model_kind} {model} (sha256 {digest})")
        except OSError as exc:
            lines.append(f"{model_kind} {model} ({exc.strerror or exc})")
    return lines


def version_option(
    packages: tuple[str, ...],
    default_model: Callable[[], Path | None] = lambda: None,
    model_kind: str = "model",
):
    """``--version`` for commands whose model is not a flag of the same parse (it reports the
    default one: config, then built-in)."""

    def show(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value and not ctx.resilient_parsing:
            for line in version_lines(packages, default_model(), model_kind):
                click.echo(line)
            ctx.exit(EXIT_OK)

    return click.option(
        "--version",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=show,
        help=f"Show btxrd's and its libraries' versions and the default {model_kind}, then exit.",
    )


def documents_exit_codes(function: F) -> F:
    """Append the exit-code table to a command's help (apply below ``@click.command``)."""
    function.__doc__ = f"{inspect.cleandoc(function.__doc__ or '')}\n\n{EXIT_CODES_HELP}"
    return function


# The ONNX model a runtime command loads (btxrd-run, btxrd-serve): one spelling of the option.
# The gate's override, the same words in every runtime command.
no_ood_gate_option = click.option(
    "--no-ood-gate",
    is_flag=True,
    help="Classify images the model's out-of-distribution gate would refuse (each record says so).",
)
model_option = click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path),
    envvar="BTXRD_MODEL",
    help="Exported ONNX model (default: the shipped demo model; env BTXRD_MODEL).",
)


def common_options(function: F) -> F:
    """``--config``, ``--quiet`` and ``--debug``, the options every command with a config has."""
    for option in (debug_option, quiet_option, config_option):
        function = option(function)
    return function


def setting_range(section: str, key: str) -> click.ParamType:
    """A click type with the config's own range for ``section.key`` (one range, two front ends)."""
    limits = range_of(section, key)
    if not isinstance(field_of(section, key).default, float):
        return click.IntRange(
            int(limits.low), int(limits.high), min_open=limits.open_low, max_open=limits.open_high
        )
    return click.FloatRange(
        limits.low, limits.high, min_open=limits.open_low, max_open=limits.open_high
    )


# onnxruntime's threads, the same option in every runtime command.
threads_option = click.option(
    "--threads",
    type=setting_range("inference", "threads"),
    help="onnxruntime threads (default: all cores).",
)


def run_cli(action: Callable[[], int], debug: bool) -> None:
    """Run a command body; turn our errors into one line on stderr and the documented exit code."""
    from btxrd.runtime.decode.quiet import quiet_decoder_warnings
    from btxrd.runtime.output.atomic import unprotect_all

    program = click.get_current_context().command_path
    _hold_closed_standard_descriptors()
    _block_on_full_pipes()
    _never_fail_on_stderr()
    quiet_decoder_warnings()
    _terminate_like_ctrl_c()
    # Files protected from overwriting belong to one command run: a process that runs several
    # (tests, a server) must not carry them over, as a freed inode number can come back.
    unprotect_all()
    try:
        code = action()
        if sys.stdout is not None:  # None: started with stdout closed (cron, `>&-`)
            sys.stdout.flush()  # a full stdout (/dev/full) fails here, inside the error handling
    except click.ClickException:
        raise  # usage errors: click prints them with the usage line and exits 2
    except BtxrdError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"{program}: error: {exc}", err=True)
        sys.exit(exit_code_for(exc))
    except KeyboardInterrupt:
        click.echo(f"{program}: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        # The reader went away (`| head`): nothing more to say, and nowhere to say it.
        _silence_stdout()
        sys.exit(EXIT_OK)
    except OSError as exc:
        if debug:
            raise
        # Raised outside any file btxrd opened: stdout or stderr themselves (a full disk).
        click.echo(f"{program}: error: cannot write the output ({exc.strerror or exc})", err=True)
        _silence_stdout()
        sys.exit(EXIT_MODEL)
    except Exception as exc:  # a bug in btxrd: still one line unless --debug
        if debug:
            raise
        click.echo(
            f"{program}: internal error: {type(exc).__name__}: {exc} (rerun with --debug and "
            "report it)",
            err=True,
        )
        sys.exit(EXIT_MODEL)
    sys.exit(code)


def _hold_closed_standard_descriptors() -> None:
    """Put ``/dev/null`` on standard descriptors the process was started without (``2>&-``).

    Otherwise the next file opened (the output's lock, the journal) would get that number, and
    whatever writes to "stderr" (onnxruntime's own log, Python's last words) would write into
    it. ``sys.stdout`` stays None for a closed stdout, so ``require_stdout`` still refuses.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def _block_on_full_pipes() -> None:
    """Wait, as every Unix filter does, when the reader of stdout or stderr is slower than btxrd.

    A parent may hand over a pipe in non-blocking mode (Node.js does); a full pipe would then
    fail a write with EAGAIN and lose the result that was being written.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None and not os.get_blocking(stream.fileno()):
                os.set_blocking(stream.fileno(), True)
        except (OSError, ValueError, io.UnsupportedOperation):
            continue  # closed, or not a file descriptor (a test runner's buffer)


class _StderrThatCannotFail(io.RawIOBase):
    """File descriptor 2, where a failed write (stderr on ``/dev/full``, a closed terminal, a
    full log disk) loses the message, never the run: results go elsewhere and must be written."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return os.isatty(self._fd)

    def write(self, data) -> int:  # type: ignore[override]
        try:
            return os.write(self._fd, data)
        except OSError:
            return len(data)  # nowhere left to say it


def _never_fail_on_stderr() -> None:
    """Give ``sys.stderr`` a writer that cannot fail, also when the process started without one;
    only for the real fd 2 (a test runner's captured stream is left alone)."""
    try:
        # None: started without stderr, which now holds /dev/null (above).
        if sys.stderr is not None and sys.stderr.fileno() != 2:
            return
    except (OSError, ValueError, io.UnsupportedOperation):
        return
    if isinstance(getattr(sys.stderr, "buffer", None), io.BufferedWriter) and isinstance(
        getattr(sys.stderr.buffer, "raw", None), _StderrThatCannotFail
    ):
        return
    sys.stderr = io.TextIOWrapper(
        io.BufferedWriter(_StderrThatCannotFail(2)),
        encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
        errors="backslashreplace",
        line_buffering=True,
    )


def _terminate_like_ctrl_c() -> None:
    """SIGTERM (``kill``, a scheduler's timeout) ends a run as Ctrl-C does: finished results are
    committed and the exit code is 130. Only the main thread may install handlers."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass
