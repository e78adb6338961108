"""What every btxrd command shares: one-line errors, exit codes, ``--debug``."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable

import click

from btxrd.runtime.errors import BtxrdError, ConfigError, InputError

EXIT_OK, EXIT_INPUT, EXIT_USAGE, EXIT_MODEL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

debug_option = click.option(
    "--debug", is_flag=True, help="Show full tracebacks instead of one-line errors."
)


def exit_code_for(error: BtxrdError) -> int:
    if isinstance(error, ConfigError):
        return EXIT_USAGE
    if isinstance(error, InputError):
        return EXIT_INPUT
    return EXIT_MODEL  # ModelError, OutputError: nothing could be processed


def run_cli(action: Callable[[], int], debug: bool) -> None:
    """Run a command body; turn our errors into one line on stderr and the documented exit code."""
    from btxrd.runtime.imageio import quiet_decoder_warnings

    program = click.get_current_context().command_path
    quiet_decoder_warnings()
    try:
        code = action()
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


def _silence_stdout() -> None:
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass
