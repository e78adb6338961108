"""One exception family for the library, and the exit code each kind of fault gives.

Only the commands turn these into messages and exit codes; the codes live here so that every
command (and the Parquet engine under them) maps the same fault to the same code, as the
README's table lists them.
"""

from __future__ import annotations

import os
from pathlib import Path


class BtxrdError(Exception):
    """Base of every error btxrd raises on purpose.

    The message names the file, the cause and the fix.
    """


class InputError(BtxrdError):
    """An input image (or annotation) cannot be used. A batch records it and goes on."""


class ModelError(BtxrdError):
    """The model or checkpoint file is unusable. Nothing is processed."""


class OutputError(BtxrdError):
    """An output file or folder cannot be written. Checked before any work is done."""


class ConfigError(BtxrdError):
    """A configuration file or option is invalid."""


EXIT_OK, EXIT_INPUT, EXIT_USAGE, EXIT_MODEL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 some input failed (each has its error record, everything else is "
    "written); 2 usage or config error; 3 model, checkpoint or output unusable (nothing "
    "processed); 130 interrupted."
)


def exit_code_for(error: BtxrdError) -> int:
    """The exit code of a run that stopped on ``error``."""
    if isinstance(error, ConfigError):
        return EXIT_USAGE
    if isinstance(error, InputError):
        return EXIT_INPUT
    return EXIT_MODEL  # ModelError, OutputError: nothing could be processed


# The runtime's own folder, installed or not (the folder above may hold a virtual environment
# with Pillow and pydicom in it).
_RUNTIME_CODE = str(Path(__file__).resolve().parent) + os.sep


def raised_by_btxrd(exc: BaseException) -> bool:
    """A programming error (TypeError, AttributeError) raised in btxrd's own code, not in a
    decoder it called.

    The nets around Pillow and pydicom catch these too, because a damaged file makes the
    decoders raise them; one raised in btxrd's own frame is btxrd's bug, which must reach the
    internal-error path ("please report it"), not be called the user's corrupt file.
    """
    if not isinstance(exc, (TypeError, AttributeError)):
        return False
    frame = exc.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    return frame is not None and frame.tb_frame.f_code.co_filename.startswith(_RUNTIME_CODE)
